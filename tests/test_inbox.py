"""The inbox over real IMAP (Dovecot) with answers over real SMTP (aiosmtpd)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailer import reasons
from mailer.clock import Clock
from mailer.models import ANSWERS, DELIVERIES, INBOUND, REGISTRATIONS, SUPPRESSIONS
from mailer.settings import load_settings
from mailer.store import open_state
from mailer.watcher import Watcher, WatchReport
from tests.conftest import SmtpSink, Workspace
from tests.dovecot import Dovecot

WARSAW_SUMMER = 2  # offset in October before the 25th
ON_TIME = datetime(2020, 10, 20, 10, 0, tzinfo=UTC)
BETWEEN = datetime(2020, 10, 28, 9, 0, tzinfo=UTC)  # after the workshop, before PIM closes
TOO_LATE = datetime(2020, 11, 5, 9, 0, tzinfo=UTC)
START = datetime(2020, 10, 19, 7, 0, tzinfo=UTC)  # the rehearsal clock: before every reply

FORM = """\
Dzień dobry,

zgłaszam udział.

Wydarzenie (warsztat Smart City / PIM / oba): {event}
Imię i nazwisko: {name}
Stanowisko: Naczelnik Wydziału
Miasto / urząd: {city}
E-mail: {email}
Telefon: 58 123 45 67

Z poważaniem
"""


def reply(sender: str, body: str, *, subject: str = "Re: Zaproszenie: warsztat Smart City",
          in_reply_to: str | None = None, headers: dict[str, str] | None = None,
          charset: str = "utf-8", authenticated: bool = True) -> bytes:
    """A reply as a mail client writes it, as our MX passes it on: stamped `dmarc=pass`
    under the test campaign's trusted authserv-id unless `authenticated` is False (or
    `headers` bring their own Authentication-Results)."""
    msg = EmailMessage()
    if authenticated and "Authentication-Results" not in (headers or {}):
        msg["Authentication-Results"] = "mx.example.com; dmarc=pass header.from=" + \
            sender.rpartition("@")[2].rstrip(">")
    msg["From"] = sender
    msg["To"] = "rejestracja@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="um.example.com")
    msg["Date"] = "Tue, 20 Oct 2020 12:00:00 +0200"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body, charset=charset)
    return msg.as_bytes()


def form(*, event: str = "oba", name: str = "Jan Kowalski", city: str = "Gdynia",
         email: str = "") -> str:
    return FORM.format(event=event, name=name, city=city, email=email)


async def watch_once(ws: Workspace, now: datetime = START) -> WatchReport:
    """One pass of the watcher, in-process, with the rehearsal clock at `now`."""
    settings = load_settings(ws.config)
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(now))
        try:
            return await watcher.process_once()
        finally:
            await watcher.close()


def table(ws: Workspace, name: str) -> list[dict[str, Any]]:
    with open_state(ws.state, writer=False) as store:
        return store.all(name)


def answers_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m.message for m in sink.messages if m.rcpt_tos == [address]]


async def test_on_time_registration_is_confirmed_and_answered(inbox_ws: Any) -> None:
    """A filled form received before both deadlines: registered for both, one confirmation."""
    ws, sink, server, user = inbox_ws
    original = reply("Jan Kowalski <jan.kowalski@gdynia.example.com>", form())
    server.append(user, original, ON_TIME)
    report = await watch_once(ws)
    assert report.new == 1 and report.answers_sent == 1
    [registration] = table(ws, REGISTRATIONS)
    assert registration["status"] == "complete"
    assert registration["events"] == {"smart-city": "confirmed", "pim": "confirmed"}
    assert registration["phone"] == "+48581234567"
    assert registration["email"] == "jan.kowalski@gdynia.example.com"
    [answer] = answers_to(sink, "jan.kowalski@gdynia.example.com")
    assert str(answer["Subject"]) == "Re: Zaproszenie: warsztat Smart City"
    assert str(answer["Auto-Submitted"]) == "auto-replied"
    sent_id = str(answer["In-Reply-To"])
    assert sent_id and sent_id in str(answer["References"])
    text = answer.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Jan Kowalski" in text and "26 października 2020" in text
    assert sink.messages[0].mail_from == "rejestracja@example.com"


async def test_reread_changes_nothing(inbox_ws: Any) -> None:
    """A second pass and a UIDVALIDITY change re-read nothing twice and answer nothing twice."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("a@gdansk.example.com", form(city="Gdańsk")), ON_TIME)
    await watch_once(ws)
    assert (await watch_once(ws)).new == 0
    server.reset_uidvalidity(user, 4242)
    again = await watch_once(ws)
    assert again.new == 0 and again.answers_sent == 0
    assert len(sink.messages) == 1 and len(table(ws, INBOUND)) == 1


async def test_late_for_workshop_but_on_time_for_pim(inbox_ws: Any) -> None:
    """After the workshop's deadline: PIM confirmed, workshop late, one confirmation naming it."""
    ws, _sink, server, user = inbox_ws
    server.append(user, reply("b@lodz.example.com", form(city="Łódź")), BETWEEN)
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["events"] == {"smart-city": "late", "pim": "confirmed"}
    [answer] = table(ws, ANSWERS)
    assert answer["template"] == "confirmation" and answer["status"] == "sent"


async def test_all_late_gets_a_late_notice(inbox_ws: Any) -> None:
    """After every deadline the answer is the late notice."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("c@opole.example.com", form(city="Opole")), TOO_LATE)
    await watch_once(ws)
    [answer] = table(ws, ANSWERS)
    assert answer["template"] == "late_notice"
    assert answers_to(sink, "c@opole.example.com")


async def test_incomplete_then_completed_in_the_thread(inbox_ws: Any) -> None:
    """A form without the city asks for it; the reply with the city completes one registration."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("d@torun.example.com", form(city="")), ON_TIME)
    await watch_once(ws)
    [first] = answers_to(sink, "d@torun.example.com")
    body = first.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Miasto" in body
    assert table(ws, REGISTRATIONS)[0]["status"] == "incomplete"
    correction = reply("d@torun.example.com", "Miasto / urząd: Toruń\n",
                       subject=f"Re: {first['Subject']}", in_reply_to=str(first["Message-ID"]))
    server.append(user, correction, ON_TIME + timedelta(hours=2))
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["status"] == "complete" and registration["city"] == "Toruń"
    assert registration["name"] == "Jan Kowalski"
    assert len(registration["history"]) == 1
    templates = sorted(a["template"] for a in table(ws, ANSWERS))
    assert templates == ["confirmation", "incomplete"]
    assert not str(answers_to(sink, "d@torun.example.com")[1]["Subject"]).startswith("Re: Re:")


async def test_two_registrants_in_one_reply(inbox_ws: Any) -> None:
    """Two filled forms in one reply are two registrations and one answer to the sender."""
    ws, sink, server, user = inbox_ws
    body = form(name="Anna Nowak", email="anna@kielce.example.com", city="Kielce") + "\n" + \
        form(name="Piotr Wiśniewski", email="piotr@kielce.example.com", city="Kielce",
             event="PIM")
    server.append(user, reply("sekretariat@kielce.example.com", body), ON_TIME)
    await watch_once(ws)
    people = {r["email"]: r for r in table(ws, REGISTRATIONS)}
    assert set(people) == {"anna@kielce.example.com", "piotr@kielce.example.com"}
    assert people["piotr@kielce.example.com"]["events"] == {"pim": "confirmed"}
    assert len(sink.messages) == 1
    assert sink.messages[0].rcpt_tos == ["sekretariat@kielce.example.com"]  # never a typed one


async def test_unsubscribe_suppresses_and_answers(inbox_ws: Any) -> None:
    """'wypisz' suppresses the address (send skips it) and gets a short answer."""
    ws, _sink, server, user = inbox_ws
    server.append(user, reply("e@rzeszow.example.com", "Proszę mnie wypisać z listy.\n",
                              subject="wypisz"), ON_TIME)
    await watch_once(ws)
    with open_state(ws.state, writer=False) as store:
        assert store.get(SUPPRESSIONS, "e@rzeszow.example.com")["reason"] == "unsubscribed"
    assert table(ws, ANSWERS)[0]["template"] == "unsubscribed"


async def test_cancellation_cancels_the_registration(inbox_ws: Any) -> None:
    """'Rezygnuję z udziału' after a registration cancels it and answers."""
    ws, _sink, server, user = inbox_ws
    server.append(user, reply("f@olsztyn.example.com", form(city="Olsztyn")), ON_TIME)
    server.append(user, reply("f@olsztyn.example.com", "Rezygnuję z udziału.\n"),
                  ON_TIME + timedelta(days=1))
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["status"] == "cancelled"
    assert sorted(a["template"] for a in table(ws, ANSWERS)) == ["cancelled", "confirmation"]


async def test_a_decline_with_nothing_registered_is_not_confirmed_as_a_cancellation(
        inbox_ws: Any) -> None:
    """An official who never registered writes that the office will not take part: the
    answer thanks them and says there was nothing to cancel (it said "we confirm the
    cancellation of every registration sent from your address")."""
    ws, sink, server, user = inbox_ws
    sender = "k@elblag.example.com"
    server.append(user, reply(sender, "Dzień dobry,\nniestety w tym roku nie weźmiemy udziału "
                              "w warsztacie.\n\nZ poważaniem\nKarol Wąs\n"), ON_TIME)
    await watch_once(ws)
    assert table(ws, REGISTRATIONS) == []
    [inbound] = table(ws, INBOUND)
    assert inbound["kind"] == "cancellation" and inbound["answer"] == "cancelled"
    [answer] = answers_to(sink, sender)
    text = answer.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = answer.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "nie było czego odwoływać" in text and "potwierdzamy odwołanie" not in text
    assert "nie było czego odwoływać" in html and "odwołanie wszystkich" not in html
    assert "jednak zgłosić udział" in text


async def test_cancelling_one_event_keeps_the_other(inbox_ws: Any) -> None:
    """'Rezygnuję z warsztatu, ale PIM proszę zostawić' (issue 13): only the workshop is
    cancelled, the registration stays complete for PIM, and the answer names the workshop."""
    ws, sink, server, user = inbox_ws
    sender = "h@torun.example.com"
    server.append(user, reply(sender, form(city="Toruń")), ON_TIME)
    server.append(user, reply(sender, "Dzień dobry,\nrezygnuję z warsztatu, ale PIM proszę "
                              "zostawić.\n\nPozdrawiam\nHanna Nowak\n"),
                  ON_TIME + timedelta(days=1))
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["status"] == "complete"
    assert registration["events"] == {"pim": "confirmed"}
    assert registration["history"][-1]["events"] == {"smart-city": "confirmed",
                                                    "pim": "confirmed"}
    cancelled = next(i for i in table(ws, INBOUND) if i["kind"] == "cancellation")
    assert cancelled["effects"]["cancelled"] == ["smart-city"]
    texts = [m.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
             for m in answers_to(sink, sender)]
    [text] = [t for t in texts if "potwierdzamy odwołanie" in t]
    named = text.split("potwierdzamy odwołanie", 1)[1].split("Jeżeli", 1)[0]
    assert "Smart City" in named and "Partnerska" not in named


async def test_auto_reply_is_stored_not_answered(inbox_ws: Any) -> None:
    """An out-of-office is stored with its kind and gets no answer."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("g@opole.example.com", "Jestem poza biurem do 30.10.\n",
                              subject="Odpowiedź automatyczna: Zaproszenie",
                              headers={"Auto-Submitted": "auto-replied"}), ON_TIME)
    await watch_once(ws)
    [inbound] = table(ws, INBOUND)
    assert inbound["kind"] == "auto_reply"
    assert sink.messages == [] and table(ws, ANSWERS) == []


def bounce_about(address: str, message_id: str) -> bytes:
    """A Postfix-style DSN saying `address` failed (5.1.1), returning the headers of our
    message `message_id` ("" returns none: a notice anyone could have written)."""
    returned = (f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
                f"From: strategia@example.com\r\nTo: {address}\r\n"
                f"Message-ID: {message_id}\r\n\r\n") if message_id else ""
    return (
        "From: MAILER-DAEMON@mx.example.com\r\nTo: rejestracja@example.com\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: {make_msgid()}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
        ' boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\n"
        f"Status: 5.1.1\r\n\r\n{returned}--B--\r\n").encode()


async def test_bounce_suppresses_without_answer(inbox_ws: Any) -> None:
    """A DSN about our invitation marks its address bounced and suppressed; nothing answered."""
    ws, sink, server, user = inbox_ws
    ws.run("send", "--yes", check=True)
    sent = {d["contact"]: d["message_id"] for d in table(ws, DELIVERIES)}
    address = sorted(sent)[0]
    invitations = len(sink.messages)
    server.append(user, bounce_about(address, sent[address]), ON_TIME)
    await watch_once(ws)
    with open_state(ws.state, writer=False) as store:
        assert store.get(SUPPRESSIONS, address)["reason"] == "bounced"
    [inbound] = table(ws, INBOUND)
    assert inbound["review"] is None and inbound["effects"]["suppressed"] == [address]
    assert len(sink.messages) == invitations


async def test_forged_bounces_suppress_nobody(inbox_ws: Any) -> None:
    """Issue 12: a bounce for an address we never mailed, or one not returning our message to
    it (none, or our message to someone else), suppresses nothing and waits for review."""
    ws, _sink, server, user = inbox_ws
    ws.run("send", "--yes", check=True)
    sent = {d["contact"]: d["message_id"] for d in table(ws, DELIVERIES)}
    victim, other = sorted(sent)[:2]
    server.append(user, bounce_about("stranger@elsewhere.example.org", sent[victim]), ON_TIME)
    server.append(user, bounce_about(victim, ""), ON_TIME)
    server.append(user, bounce_about(victim, sent[other]), ON_TIME)
    await watch_once(ws)
    assert table(ws, SUPPRESSIONS) == []
    reviews = sorted(str(d["review"]["code"]) for d in table(ws, INBOUND))
    assert reviews == ["bounce_not_ours", "bounce_not_ours", "bounce_not_sent"]
    assert not any(d.get("bounced") for d in table(ws, DELIVERIES))


async def test_complaint_and_gave_up_are_shown_in_status(inbox_ws: Any) -> None:
    """An ARF complaint (recipient redacted) suppresses the address our returned message went
    to, as "complained"; a notice that the server gave up on a 4xx suppresses nothing and marks
    the invitation undelivered. `status` shows both."""
    ws, _sink, server, user = inbox_ws
    ws.run("send", "--yes", check=True)
    sent = {d["contact"]: d["message_id"] for d in table(ws, DELIVERIES)}
    complainer, gone = sorted(sent)[:2]
    data = Path(__file__).parent / "data" / "bounces"
    arf = (data / "arf_redacted.eml").read_text(encoding="utf-8")
    arf = re.sub(r"Message-ID: <[0-9a-f]{32}\.invitation@example\.com>",
                 f"Message-ID: {sent[complainer]}", arf)
    expired = (data / "exim_retry_timeout.eml").read_text(encoding="utf-8")
    expired = expired.replace("kancelaria@gmina-h.example.pl", gone)
    expired = re.sub(r"Message-ID: <[0-9a-f]{32}\.invitation@example\.com>",
                     f"Message-ID: {sent[gone]}", expired)
    server.append(user, arf.encode(), ON_TIME)
    server.append(user, expired.encode(), ON_TIME)
    await watch_once(ws)
    with open_state(ws.state, writer=False) as store:
        assert store.get(SUPPRESSIONS, complainer)["reason"] == "complained"
        assert store.get(SUPPRESSIONS, gone) is None
    counts = json.loads(ws.run("status", "--format", "json", check=True).stdout)
    assert counts["suppressions"] == {"complained": 1}
    assert counts["deliveries"]["invitation undelivered"] == 1
    assert "never mailed again: complained 1" in ws.run("status", check=True).stdout


async def test_backlog_before_the_first_start_is_not_answered(inbox_ws: Any) -> None:
    """Messages older than the watermark are stored for review and never answered."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("old@gdynia.example.com", form()), START - timedelta(days=30))
    await watch_once(ws)
    [inbound] = table(ws, INBOUND)
    assert inbound["review"] and "before the campaign" in reasons.english(inbound["review"])
    assert sink.messages == [] and table(ws, REGISTRATIONS) == []


async def test_a_reply_in_the_same_second_as_the_start_is_not_backlog(inbox_ws: Any) -> None:
    """The watermark is compared at the server's precision: INTERNALDATE has whole seconds, so
    a reply stamped in the second the watcher first started (at .7 s) is answered (issue 16)."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("s@gdynia.example.com", form()), START)
    await watch_once(ws, now=START + timedelta(microseconds=700_000))
    [inbound] = table(ws, INBOUND)
    assert inbound["backlog"] is False and inbound["review"] is None
    assert len(answers_to(sink, "s@gdynia.example.com")) == 1


async def test_daily_answer_limit(inbox_ws: Any, make_workspace: Any,
                                  smtp_sink: tuple[SmtpSink, int]) -> None:
    """More messages than max_per_sender_per_day from one address get at most that many answers."""
    _ws, sink, server, user = inbox_ws
    limited = make_workspace(port=smtp_sink[1], imap_port=server.port, imap_user=user,
                             max_answers=2, name="limited")
    for n in range(4):
        server.append(user, reply("i@kielce.example.com", f"Pytanie {n}: czy będzie nagranie?\n"
                                  + form(city="Kielce")), ON_TIME + timedelta(minutes=n))
    await watch_once(limited)
    assert len(answers_to(sink, "i@kielce.example.com")) == 2
    assert len(table(limited, INBOUND)) == 4


async def test_daily_answer_limit_counts_the_mailbox_not_its_tags(
        inbox_ws: Any, make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """Replies from victim+1@ … victim+4@ share one daily allowance: they reach one mailbox."""
    _ws, sink, server, user = inbox_ws
    limited = make_workspace(port=smtp_sink[1], imap_port=server.port, imap_user=user,
                             max_answers=2, name="limited")
    senders = [f"Ofiara+{n}@kielce.example.com" for n in range(1, 5)]
    for n, sender in enumerate(senders):
        server.append(user, reply(sender, form(city="Kielce", name=f"Osoba Numer{n}")),
                      ON_TIME + timedelta(minutes=n))
    await watch_once(limited)
    answered = [m for m in sink.messages if m.rcpt_tos[0].lower() in
                {s.lower() for s in senders}]
    assert len(answered) == 2
    assert len(table(limited, INBOUND)) == 4


async def test_smtp_down_while_answering(inbox_ws: Any) -> None:
    """With the SMTP server refusing, the answers wait; once it is back each is sent once."""
    ws, sink, server, user = inbox_ws
    sink.data_replies = ["451 4.3.0 try later"]
    server.append(user, reply("j@gdynia.example.com", form()), ON_TIME)
    server.append(user, reply("j2@gdynia.example.com", form(name="Ala Nowak")), ON_TIME)
    first = await watch_once(ws)
    assert first.answers_pending == 2 and sink.messages == []  # the untried one counts too
    second = await watch_once(ws)
    assert second.answers_sent == 2 and len(sink.messages) == 2
    await watch_once(ws)
    assert len(sink.messages) == 2


async def test_idle_delivers_a_new_reply_quickly(inbox_ws: Any) -> None:
    """With IDLE a reply appended while the watcher waits is answered within 5 s."""
    ws, sink, server, user = inbox_ws
    settings = load_settings(ws.config)
    stop = asyncio.Event()
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(START))
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(0.5)
        appended = asyncio.get_running_loop().time()
        await asyncio.to_thread(server.append, user, reply("k@gdynia.example.com", form()),
                                ON_TIME)
        while not sink.messages:
            assert asyncio.get_running_loop().time() - appended < 5
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        await watcher.close()


def test_inspect_json(make_workspace: Any, tmp_path: Any) -> None:
    """`mailer inspect --json` prints the object of SPEC §9 and stores nothing."""
    ws = make_workspace()
    eml = tmp_path / "reply.eml"
    eml.write_bytes(reply("Jan Kowalski <jan.kowalski@gdynia.example.com>",
                          form(event="PIM i warsztat")))
    result = ws.run("inspect", str(eml), "--received", "2020-10-28T12:00:00+01:00", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "registration"
    assert data["sender"] == "jan.kowalski@gdynia.example.com"
    assert data["received"] == "2020-10-28T12:00:00+01:00"
    assert data["registrants"][0]["events"] == {"smart-city": "late", "pim": "confirmed"}
    assert data["registrants"][0]["phone"] == "+48581234567"
    assert data["answer"] == "confirmation" and data["bounced"] == []
    assert not ws.state.exists()


def test_inspect_text_shows_a_dash_for_what_is_absent(make_workspace: Any,
                                                      tmp_path: Any) -> None:
    """`mailer inspect` (text) shows "-" for a value the message lacks, never the word None
    (issue 16): a message with no sender, a form with no position nor phone."""
    ws = make_workspace()
    anonymous = tmp_path / "anonymous.eml"
    anonymous.write_bytes(b"Subject: pytanie\r\n\r\nCzy warsztat jest nagrywany?\r\n")
    partial = tmp_path / "partial.eml"
    partial.write_bytes(reply("jan.kowalski@gdynia.example.com", "Imię i nazwisko: Jan "
                              "Kowalski\nMiasto: Gdynia\nWydarzenie: pim\n"))
    shown = ws.run("inspect", str(anonymous), check=True).stdout
    assert "sender: -  received:" in shown and "None" not in shown
    shown = ws.run("inspect", str(partial), "--received", "2020-10-28T12:00:00+01:00",
                   check=True).stdout
    assert ("registrant 1: Jan Kowalski | - | Gdynia | jan.kowalski@gdynia.example.com | - | "
            "pim: confirmed") in shown
    assert "None" not in shown


async def test_over_size_message_is_kept_as_headers(inbox_ws: Any, make_workspace: Any,
                                                    smtp_sink: tuple[SmtpSink, int]) -> None:
    """A message over max_message_bytes is stored from its headers only, for review."""
    _ws, sink, server, user = inbox_ws
    small = make_workspace(port=smtp_sink[1], imap_port=server.port, imap_user=user,
                           poll_seconds=1, name="small")
    text = small.config.read_text()
    assert "poll_seconds = 1\n" in text
    small.config.write_text(text.replace("poll_seconds = 1\n",
                                         "poll_seconds = 1\nmax_message_bytes = 2048\n"))
    server.append(user, reply("big@gdynia.example.com", form() + "x" * 5000), ON_TIME)
    await watch_once(small)
    [inbound] = table(small, INBOUND)
    assert inbound["headers_only"] and "over-size" in reasons.english(inbound["review"])
    assert inbound["sender"] == "big@gdynia.example.com"
    assert sink.messages == []


async def test_server_restart_during_idle(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
                                          tmp_path_factory: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot restarted while the watcher idles: it reconnects and catches up by itself."""
    root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    server = Dovecot(root)
    server.start()
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", server.password)
    ws = make_workspace(port=smtp_sink[1], imap_port=server.port, imap_user="rejestracja",
                        poll_seconds=1)
    settings = load_settings(ws.config)
    stop = asyncio.Event()
    try:
        with open_state(settings.storage, writer=True) as store:
            watcher = Watcher(settings, store, clock=Clock(START))
            task = asyncio.create_task(watcher.run(stop))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.restart)
            await asyncio.to_thread(server.append, "rejestracja",
                                    reply("l@gdynia.example.com", form()), ON_TIME)
            started = asyncio.get_running_loop().time()
            while not smtp_sink[0].messages:
                assert asyncio.get_running_loop().time() - started < 30, "did not catch up"
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(task, 10)
            await watcher.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_kill_9_while_processing(inbox_ws: Any) -> None:
    """`mailer watch` killed twice mid-work: each reply is then registered and answered once."""
    ws, sink, server, user = inbox_ws
    senders = [f"p{n}@miasto{n}.example.com" for n in range(60)]
    for n, sender in enumerate(senders):
        server.append(user, reply(sender, form(name=f"Osoba Numer{n}", city=f"Miasto{n}")),
                      ON_TIME + timedelta(minutes=n))
    env = {**os.environ, "MAILER_CONFIG": str(ws.config),
           "MAILER_NOW": "2020-10-19T09:00:00+02:00", "MAILER_IMAP_PASSWORD": server.password}
    sink.delay = 0.02
    for wait_for_answers in (0, 20):
        proc = subprocess.Popen([sys.executable, "-m", "mailer", "watch"], env=env,
                                cwd=ws.root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        if wait_for_answers:
            while len(sink.messages) < wait_for_answers:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)
        else:
            time.sleep(0.9)  # mid-fetch or mid-batch, before the commit
        proc.kill()
        proc.wait()
    result = ws.run("watch", "--once", timeout=60)
    assert result.returncode == 0, result.stderr
    registrations = table(ws, REGISTRATIONS)
    assert sorted(r["sender"] for r in registrations) == sorted(senders)
    answered = [m.rcpt_tos[0] for m in sink.messages]
    assert set(answered) == set(senders)
    assert len(answered) - len(senders) <= 2  # at most the one in flight per kill
    assert all(a["status"] == "sent" for a in table(ws, ANSWERS))


def test_run_sends_watches_and_stops_on_sigterm(inbox_ws: Any) -> None:
    """`mailer run` sends the invitations, answers a reply, and exits 0 on SIGTERM."""
    ws, sink, server, user = inbox_ws
    env = {**os.environ, "MAILER_CONFIG": str(ws.config),
           "MAILER_NOW": "2020-10-19T09:00:00+02:00", "MAILER_IMAP_PASSWORD": server.password}
    proc = subprocess.Popen([sys.executable, "-m", "mailer", "run"], env=env, cwd=ws.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(sink.messages) < 5:  # the five invitations of the workspace
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        server.append(user, reply("osoba1@miasto1.example.com", form()), ON_TIME)
        invitation = next(m.message for m in sink.messages
                          if m.rcpt_tos == ["osoba2@miasto2.example.com"])
        colleague = reply("kolega@urzad.example.org", form(city="UM Kraków"),
                          in_reply_to=str(invitation["Message-ID"]))
        server.append(user, colleague, ON_TIME)
        while len(sink.messages) < 7:
            assert time.monotonic() < deadline and proc.poll() is None, "reply not answered"
            time.sleep(0.05)
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; state saved" in out
    assert [m.rcpt_tos[0] for m in sink.messages].count("osoba1@miasto1.example.com") == 2
    people = {r["sender"]: r for r in table(ws, REGISTRATIONS)}
    assert people["osoba1@miasto1.example.com"]["invitation"]["by"] == "address"
    forwarded = people["kolega@urzad.example.org"]["invitation"]
    assert forwarded == {"contact": "osoba2@miasto2.example.com", "city": "Kraków",
                         "by": "message-id"}


async def test_forged_sender_gets_nothing_applied(inbox_ws: Any) -> None:
    """An unsubscribe that failed DMARC at our MX suppresses nobody and is answered never."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("prezydent@gdynia.example.com", "wypisz\n", subject="wypisz",
                              headers={"Authentication-Results":
                                       "mx.example.com; dmarc=fail (p=reject)"}), ON_TIME)
    await watch_once(ws)
    [inbound] = table(ws, INBOUND)
    assert "not authenticated" in reasons.english(inbound["review"])
    assert table(ws, SUPPRESSIONS) == [] and sink.messages == []


async def test_flood_from_one_address_is_capped(inbox_ws: Any) -> None:
    """60 registrations of different people from one address: 50 registered, 5 answers."""
    ws, sink, server, user = inbox_ws
    for n in range(60):
        server.append(user, reply("bot@spam.example.com",
                                  form(name=f"Osoba Numer{n}", email=f"o{n}@spam.example.com")),
                      ON_TIME + timedelta(seconds=n))
    await watch_once(ws)
    assert len(table(ws, REGISTRATIONS)) == 50
    assert len(sink.messages) == 5
    assert sum(1 for m in table(ws, INBOUND) if m["review"]) == 10


async def test_two_instances_answering_each_other_stop(inbox_ws: Any) -> None:
    """A mail loop with another autoresponder stops: at once on Auto-Submitted, and at the
    daily limit when a relay stripped it."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("robot@other.example.com", form()), ON_TIME)
    for round_ in range(12):
        await watch_once(ws)
        if not sink.messages:
            break
        last = sink.messages[-1].message
        text = last.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        headers = {} if round_ % 2 else {"Auto-Submitted": "auto-replied"}
        echo = reply("robot@other.example.com", text + "\n" + form(),
                     subject=f"Re: {last['Subject']}", in_reply_to=str(last["Message-ID"]),
                     headers=headers)
        server.append(user, echo, ON_TIME + timedelta(minutes=round_ + 1))
    assert 1 <= len(answers_to(sink, "robot@other.example.com")) <= 5


async def test_answers_go_out_over_several_sessions_each_once(inbox_ws: Any) -> None:
    """24 answers due: the outbox opens up to `[smtp] connections` (2) sessions and shares the
    answers between them (issue 17); each person gets exactly one answer, and a second pass
    sends nothing."""
    ws, sink, server, user = inbox_ws
    senders = [f"osoba{n}@gmina{n}.example.com" for n in range(24)]
    for n, sender in enumerate(senders):
        server.append(user, reply(sender, form(name=f"Osoba Numer{chr(97 + n)}", city="Gdynia",
                                               email=sender)), ON_TIME)
    report = await watch_once(ws)
    assert report.answers_sent == 24
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == sorted(senders)
    assert len({m.peer for m in sink.messages}) == 2
    assert (await watch_once(ws)).answers_sent == 0 and len(sink.messages) == 24


async def test_the_review_count_follows_what_each_pass_records(inbox_ws: Any) -> None:
    """One watcher, three passes: the count of messages waiting for review is taken at the
    first, kept when nothing new came, and taken again after a pass that recorded one more."""
    ws, _sink, server, user = inbox_ws
    server.append(user, reply("q1@gdynia.example.com", "Czy będzie nagranie?\n"), ON_TIME)
    settings = load_settings(ws.config)
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(START))
        try:
            first = await watcher.process_once()
            idle = await watcher.process_once()
            server.append(user, reply("q2@sopot.example.com", "Proszę o kontakt.\n"), ON_TIME)
            assert watcher.inbox is not None
            await watcher.inbox.wait_for_change(5)  # as `run` waits between passes
            later = await watcher.process_once()
        finally:
            await watcher.close()
    assert (first.new, first.review) == (1, 1)
    assert (idle.new, idle.review) == (0, 1)
    assert (later.new, later.review) == (1, 2)
