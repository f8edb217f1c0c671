"""The service is no megaphone for strangers (issue 12): real IMAP (Dovecot), real SMTP."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

from mailer.models import ANSWERS, INBOUND, REGISTRATIONS
from mailer.reading.headers import dmarc_failure, dmarc_pass
from mailer.store import open_state
from mailer.trust import office_domain, same_office
from tests.conftest import Workspace, contact_rows
from tests.test_inbox import (
    ON_TIME,
    START,
    answers_to,
    form,
    reply,
    table,
    watch_once,
)
from tests.test_web import csrf_of, signed_in

STRANGER = "victim@thirdparty.example"


def by_key(ws: Workspace, name: str) -> dict[str, Any]:
    return {d["key"]: d for d in table(ws, name)}


def inbound_from(ws: Workspace, sender: str) -> list[dict[str, Any]]:
    return sorted((d for d in table(ws, INBOUND) if d["sender"] == sender),
                  key=lambda d: d["received"])


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


# --- pure: whose word counts ----------------------------------------------------------------

def parsed(headers: str) -> EmailMessage:
    msg = email.message_from_bytes(headers.encode() + b"\r\n\r\nx", policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_a_dmarc_pass_counts_only_from_our_configured_mx() -> None:
    """A pass counts under our authserv-id only: not from another id, not the topmost header
    without a configured id (the sender may have written it), not after our own fail."""
    ours = parsed("Authentication-Results: mx.example.com; dmarc=pass header.from=a.pl")
    assert dmarc_pass(ours, "mx.example.com") == "dmarc=pass at mx.example.com"
    assert dmarc_pass(ours, "") is None
    planted = parsed("Authentication-Results: evil.example; dmarc=pass\r\n"
                     "Authentication-Results: mx.example.com; dmarc=fail")
    assert dmarc_pass(planted, "mx.example.com") is None
    assert dmarc_failure(planted, "mx.example.com") == "dmarc=fail at mx.example.com"
    assert dmarc_pass(planted, "evil.example") == "dmarc=pass at evil.example"


def test_webmail_domains_are_nobodys_office() -> None:
    """Colleagues share an office domain; two Gmail or WP users do not."""
    assert same_office("ewa@gdynia.pl", "JAN@Gdynia.pl")
    assert not same_office("ewa@gmail.com", "jan@gmail.com")
    assert not same_office("ewa@wp.pl", "jan@wp.pl")
    assert office_domain("x@interia.pl") == "" and office_domain("x@um.gdynia.pl")


# --- item 1: answers only to a plausible sender ---------------------------------------------

async def test_stranger_is_registered_but_the_answer_waits_for_release(inbox_ws: Any) -> None:
    """A forged-looking From (no authentication, not invited, no thread): registered, its
    answer held for review; `mailer review --release` lets the next pass send it."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply(STRANGER, form(name="Jan Obcy", city="Gdynia"),
                              authenticated=False), ON_TIME)
    report = await watch_once(ws)
    assert report.new == 1 and report.answers_sent == 0 and report.answers_pending == 0
    assert sink.messages == []
    [registration] = table(ws, REGISTRATIONS)
    assert registration["email"] == STRANGER and registration["status"] == "complete"
    [answer] = table(ws, ANSWERS)
    assert answer["status"] == "held" and answer["held"]["code"] == "answer_held"
    [inbound] = table(ws, INBOUND)
    assert inbound["review"]["code"] == "answer_held"
    assert "held for review 1" in ws.run("status", check=True).stdout
    queue = ws.run("review", check=True).stdout
    assert STRANGER in queue and "answer held: sender not verified" in queue
    assert (await watch_once(ws)).answers_sent == 0  # held: no pass sends it by itself
    released = ws.run("review", "--release", inbound["key"][:12])
    assert released.returncode == 0, released.stderr
    assert table(ws, ANSWERS)[0]["status"] == "pending"
    assert (await watch_once(ws)).answers_sent == 1
    [sent] = answers_to(sink, STRANGER)
    assert "Jan Obcy" in text_of(sent)
    assert "0 messages wait" in ws.run("review", check=True).stderr
    again = ws.run("review", "--release", inbound["key"][:12])
    assert again.returncode == 1  # resolved: nothing left to release


async def test_other_authserv_or_webmail_colleague_is_not_enough(inbox_ws: Any) -> None:
    """A pass stamped by another server and a Gmail user next to an invited Gmail contact are
    held; the invited contact's own address and a colleague at its office are answered."""
    ws, sink, server, user = inbox_ws
    ws.write_contacts([*contact_rows(3), ["ewa.kontakt@gmail.com", "Ewa", "Lis", "Naczelnik",
                                          "Sopot"]])
    server.append(user, reply("osoba1@miasto1.example.com", form(name="Osoba Jeden"),
                              authenticated=False), ON_TIME)
    server.append(user, reply("kolega@miasto2.example.com", form(name="Kolega Dwa"),
                              authenticated=False), ON_TIME)
    server.append(user, reply("ewa.kontakt+pim@gmail.com", form(name="Ewa Lis"),
                              authenticated=False), ON_TIME)
    server.append(user, reply("obcy@gmail.com", form(name="Obcy Gmail"),
                              authenticated=False), ON_TIME)
    server.append(user, reply("zly@evil.example", form(name="Zly Pan"), headers={
        "Authentication-Results": "evil.example; dmarc=pass"}), ON_TIME)
    report = await watch_once(ws)
    assert report.answers_sent == 3
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == [
        "ewa.kontakt+pim@gmail.com", "kolega@miasto2.example.com", "osoba1@miasto1.example.com"]
    held = sorted(a["to"] for a in table(ws, ANSWERS) if a["status"] == "held")
    assert held == ["obcy@gmail.com", "zly@evil.example"]
    assert len(table(ws, REGISTRATIONS)) == 5  # everyone is registered all the same


async def test_a_reply_in_our_thread_is_answered(inbox_ws: Any) -> None:
    """A colleague elsewhere replying to a sent invitation is answered at once; a made-up
    thread, and the (computable) id of a held answer, are not our thread."""
    ws, sink, server, user = inbox_ws
    ws.run("send", "--yes", check=True)
    invitation = str(sink.messages[0].message["Message-ID"])
    sink.messages.clear()
    server.append(user, reply("sekretariat@urzad.example.org", form(name="Anna Wątek"),
                              in_reply_to=invitation, authenticated=False), ON_TIME)
    server.append(user, reply("ktos@inny.example.org", form(name="Piotr Obok"),
                              in_reply_to="<made.up@example.com>", authenticated=False),
                  ON_TIME)
    await watch_once(ws)
    assert [m.rcpt_tos for m in sink.messages] == [["sekretariat@urzad.example.org"]]
    [held] = [a for a in table(ws, ANSWERS) if a["status"] == "held"]
    server.append(user, reply("ktos@inny.example.org", form(name="Piotr Obok"),
                              in_reply_to=held["message_id"], authenticated=False),
                  ON_TIME + timedelta(minutes=5))
    await watch_once(ws)
    assert len(sink.messages) == 1
    assert sorted(a["status"] for a in table(ws, ANSWERS)) == ["held", "held", "sent"]


async def test_release_from_the_web_view(inbox_ws: Any) -> None:
    """The review page offers the held answer; approving it there sends it next pass."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply(STRANGER, form(name="Jan Obcy"), authenticated=False), ON_TIME)
    await watch_once(ws)
    [inbound] = table(ws, INBOUND)
    client = signed_in(ws)
    page = client.get(f"/review/{inbound['key']}")
    assert page.status_code == 200 and "Zatwierdź i wyślij odpowiedź" in page.text
    assert "nadawca niezweryfikowany" in page.text
    done = client.post(f"/review/{inbound['key']}/release", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/review?done=released"
    assert "Odpowiedź zatwierdzono" in client.get(done.headers["location"]).text
    [answer] = table(ws, ANSWERS)
    assert answer["status"] == "pending" and answer["released"]["how"] == "released"
    assert (await watch_once(ws)).answers_sent == 1 and answers_to(sink, STRANGER)


# --- item 2: the hourly cap -------------------------------------------------------------------

async def test_hourly_cap_keeps_answers_pending_for_a_later_hour(inbox_ws: Any) -> None:
    """max_per_hour = 2: three answers due, two go, the third waits (pending, not lost) and
    goes once an hour has passed since the first two."""
    ws, sink, server, user = inbox_ws
    ws.config.write_text(ws.config.read_text().replace("[answers]\n",
                                                       "[answers]\nmax_per_hour = 2\n"))
    for n, city in enumerate(("Gdynia", "Sopot", "Gdańsk")):
        server.append(user, reply(f"o{n}@{city.lower()}.example.com", form(city=city)),
                      ON_TIME + timedelta(seconds=n))
    first = await watch_once(ws)
    assert first.answers_sent == 2 and first.answers_pending == 1 and len(sink.messages) == 2
    later = await watch_once(ws, START + timedelta(minutes=30))
    assert later.answers_sent == 0 and later.answers_pending == 1
    [waiting] = [a for a in table(ws, ANSWERS) if a["status"] == "pending"]
    assert waiting["to"] == "o2@gdańsk.example.com"
    hour = await watch_once(ws, START + timedelta(minutes=61))
    assert hour.answers_sent == 1 and hour.answers_pending == 0 and len(sink.messages) == 3


# --- item 3: the answer confirms what was stored -------------------------------------------

async def test_answer_lists_only_the_registrants_stored(inbox_ws: Any) -> None:
    """60 forms in one reply: 50 stored (the per-sender limit), the answer names those 50
    and none of the others, which wait for review."""
    ws, sink, server, user = inbox_ws
    body = "\n".join(form(name=f"Osoba Numer{n:02d}", email=f"o{n:02d}@kielce.example.com",
                          city="Kielce") for n in range(60))
    server.append(user, reply("sekretariat@kielce.example.com", body), ON_TIME)
    await watch_once(ws)
    assert len(table(ws, REGISTRATIONS)) == 50
    [answer] = table(ws, ANSWERS)
    assert len(answer["registrants"]) == 50
    text = text_of(answers_to(sink, "sekretariat@kielce.example.com")[0])
    assert "Osoba Numer49" in text and "Osoba Numer50" not in text
    assert "Osoba Numer59" not in text
    [inbound] = table(ws, INBOUND)
    assert inbound["review"]["code"] == "too_many_registrants"


# --- item 4: someone else's registration ----------------------------------------------------

EWA = "ewa@gdynia.example.com"


async def test_a_stranger_cannot_overwrite_or_cancel_anothers_registration(
        inbox_ws: Any) -> None:
    """A form naming Ewa's address from another domain waits for review and changes nothing;
    the stranger's cancellation cancels nothing of hers and its answer names no event."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply(EWA, form(name="Ewa Lis", event="PIM")), ON_TIME)
    await watch_once(ws)
    sink.messages.clear()
    server.append(user, reply("mallory@evil.example", form(
        name="Ktoś Inny", email=EWA, city="Nigdzie", event="oba")), ON_TIME + timedelta(hours=1))
    server.append(user, reply("mallory@evil.example", "Rezygnuję z udziału.\n"),
                  ON_TIME + timedelta(hours=2))
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["name"] == "Ewa Lis" and registration["status"] == "complete"
    assert registration["events"] == {"pim": "confirmed"} and registration["sender"] == EWA
    change, cancel = inbound_from(ws, "mallory@evil.example")
    assert change["review"]["code"] == "foreign_change" and EWA in change["review"]["registrations"]
    assert change["effects"] == {"registrations": [], "withheld": [EWA]}
    assert change["answer"] is None and change["refusal"]["code"] == "nothing_stored"
    assert cancel["effects"]["cancelled"] == [] and cancel["effects"]["registrations"] == []
    answers = by_key(ws, ANSWERS)
    assert answers[cancel["key"]]["cancelled_events"] == []
    [sent] = answers_to(sink, "mallory@evil.example")  # the cancellation's, nothing else
    assert "Ewa" not in text_of(sent) and EWA not in text_of(sent)


async def test_a_colleague_at_the_same_office_may_change_it(inbox_ws: Any) -> None:
    """Another address of Ewa's town hall updates her registration (the sekretariat case)."""
    ws, _sink, server, user = inbox_ws
    server.append(user, reply(EWA, form(name="Ewa Lis", event="PIM")), ON_TIME)
    server.append(user, reply("sekretariat@gdynia.example.com", form(
        name="Ewa Lis", email=EWA, event="oba")), ON_TIME + timedelta(hours=1))
    await watch_once(ws)
    [registration] = table(ws, REGISTRATIONS)
    assert registration["events"] == {"pim": "confirmed", "smart-city": "confirmed"}
    assert all(d["review"] is None for d in table(ws, INBOUND))


async def test_cancelling_reaches_only_registrations_one_still_owns(inbox_ws: Any) -> None:
    """Mallory registers Zofia (nobody had), Zofia registers herself; Mallory's cancellation
    then leaves Zofia's registration alone and its answer names none of her events."""
    ws, _sink, server, user = inbox_ws
    zofia = "zofia@krakow.example.com"
    server.append(user, reply("mallory@evil.example", form(name="Zofia Nowak", email=zofia,
                                                           city="Kraków", event="PIM")), ON_TIME)
    server.append(user, reply(zofia, form(name="Zofia Nowak", city="Kraków", event="oba")),
                  ON_TIME + timedelta(hours=1))
    server.append(user, reply("mallory@evil.example", "Odwołuję zgłoszenie.\n"),
                  ON_TIME + timedelta(hours=2))
    await watch_once(ws)
    with open_state(ws.state, writer=False) as store:
        registration = store.get(REGISTRATIONS, zofia)
    assert registration["status"] == "complete" and registration["sender"] == zofia
    cancel = inbound_from(ws, "mallory@evil.example")[-1]
    assert cancel["kind"] == "cancellation" and cancel["effects"]["cancelled"] == []
    assert by_key(ws, ANSWERS)[cancel["key"]]["cancelled_events"] == []
