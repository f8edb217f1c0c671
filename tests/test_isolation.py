"""One hostile message or answer never stops the service (issue 12): real IMAP, real SMTP."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mailer.cli.main import EXIT_SOFTWARE, main
from mailer.clock import Clock
from mailer.models import ANSWERS, INBOUND, MAILBOX, REGISTRATIONS
from mailer.reading.workers import Readers
from mailer.settings import load_settings
from mailer.store import open_state
from mailer.watcher import Watcher, WatchReport
from tests.conftest import Workspace
from tests.test_inbox import ON_TIME, START, answers_to, form, reply, table, watch_once
from tests.test_web import signed_in

# Each of these raised RecursionError in the reader before issue 12.
PARENS_FROM = (b"From: " + b"(" * 500 + b"\r\nTo: rejestracja@example.com\r\n"
               b"Subject: Re: Zaproszenie\r\nMessage-ID: <parens@um.example.com>\r\n\r\n"
               b"Zgloszenie\r\n")


def nested_multiparts(depth: int = 1000, body: bytes = b"hi") -> bytes:
    """A message of `depth` multiparts, each inside the one before (~58 KB for 1,000), `body`
    in a text part at the bottom."""
    head = (b"From: Ewa <ewa@sopot.example.com>\r\nTo: rejestracja@example.com\r\n"
            b"Subject: Re: Zaproszenie\r\nMessage-ID: <deep@sopot.example.com>\r\n"
            b"MIME-Version: 1.0\r\n")
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\n" + body + closing


def utf8_reply(sender: str, body: str) -> bytes:
    """A reply whose From is raw UTF-8 (RFC 6532), as a client writes an address with it."""
    raw = reply("placeholder@example.com", body)
    return raw.replace(b"From: placeholder@example.com", b"From: " + sender.encode(), 1)


def by_sender(ws: Workspace, table_name: str, field: str = "sender") -> dict[str, Any]:
    return {d[field]: d for d in table(ws, table_name)}


def append_hostile_batch(server: Any, user: str) -> None:
    """An ordinary reply, the two messages that stopped the service, another ordinary one."""
    server.append(user, reply("anna@gdynia.example.com", form(name="Anna Nowak")), ON_TIME)
    server.append(user, PARENS_FROM, ON_TIME)
    server.append(user, nested_multiparts(), ON_TIME)
    server.append(user, reply("piotr@gdansk.example.com", form(name="Piotr Lis")), ON_TIME)


def check_hostile_batch(ws: Workspace, sink: Any, report: WatchReport) -> None:
    """Every message recorded, both ordinary ones answered, the unreadable one up for review."""
    assert report.new == 4 and report.answers_sent == 2
    assert len(answers_to(sink, "anna@gdynia.example.com")) == 1
    assert len(answers_to(sink, "piotr@gdansk.example.com")) == 1
    inbound = table(ws, INBOUND)
    [deep] = [d for d in inbound if d["message_id"] == "<deep@sopot.example.com>"]
    assert deep["review"]["code"] == "read_failed"
    assert "more than 100 MIME containers" in deep["review"]["error"]
    assert deep["sender"] == "ewa@sopot.example.com" and deep["answer"] is None
    assert (ws.state / deep["path"]).read_bytes() == nested_multiparts()
    [parens] = [d for d in inbound if d["sender"] == ""]  # read: no address, so no answer
    assert parens["answer"] is None and parens["review"]["code"] == "not_understood"
    [pointer] = table(ws, MAILBOX)
    assert pointer["last_uid"] == 4


async def test_unreadable_message_is_kept_for_review_and_the_batch_goes_on(
        inbox_ws: Any) -> None:
    """Read in-process: the two stack-exhausting messages stop nothing; a rerun adds nothing."""
    ws, sink, server, user = inbox_ws
    append_hostile_batch(server, user)
    check_hostile_batch(ws, sink, await watch_once(ws))
    again = await watch_once(ws)
    assert again.new == 0 and again.answers_sent == 0 and len(sink.messages) == 2


async def test_worker_processes_isolate_an_unreadable_message(inbox_ws: Any) -> None:
    """Read by a worker process: the same messages give the same records and answers."""
    ws, sink, server, user = inbox_ws
    append_hostile_batch(server, user)
    settings = load_settings(ws.config)
    readers = Readers(events=settings.events, own_addresses=settings.own_addresses,
                      authserv_id=settings.answers.trusted_authserv_id, workers=1)
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(START), readers=readers)
        try:
            report = await watcher.process_once()
            assert readers._pool is not None  # the batch really went to a worker
        finally:
            await watcher.close()
    check_hostile_batch(ws, sink, report)


async def test_unsendable_answer_is_failed_and_the_outbox_goes_on(inbox_ws: Any) -> None:
    """An answer to a non-ASCII local part fails with its reason, once; the next is sent."""
    ws, sink, server, user = inbox_ws
    server.append(user, utf8_reply("łukasz@gdynia.example.com", form(name="Łukasz Kot")),
                  ON_TIME)
    server.append(user, reply("ola@gdynia.example.com", form(name="Ola Kot")), ON_TIME)
    report = await watch_once(ws)
    assert report.answers_sent == 1 and len(answers_to(sink, "ola@gdynia.example.com")) == 1
    failed = by_sender(ws, ANSWERS, "to")["łukasz@gdynia.example.com"]
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["code"] == "answer_failed" and "SMTPUTF8" in failed["error"]["error"]
    await watch_once(ws)  # failed for good: not tried again
    assert by_sender(ws, ANSWERS, "to")["łukasz@gdynia.example.com"]["attempts"] == 1
    assert len(sink.messages) == 1


async def test_idn_sender_is_answered_in_idna(inbox_ws: Any) -> None:
    """A sender on łódź.example.com is answered at its punycode domain, envelope and To."""
    ws, sink, server, user = inbox_ws
    server.append(user, utf8_reply("Jan <jan@łódź.example.com>", form(city="Łódź")), ON_TIME)
    assert (await watch_once(ws)).answers_sent == 1
    [answer] = answers_to(sink, "jan@xn--d-uga0v4h.example.com")
    assert str(answer["To"]) == "jan@xn--d-uga0v4h.example.com"


async def test_non_ascii_message_ids_are_left_out_of_the_thread(inbox_ws: Any) -> None:
    """A reply whose Message-ID and References hold non-ASCII is answered without them."""
    ws, sink, server, user = inbox_ws
    raw = reply("kasia@gdynia.example.com", form(name="Kasia Wróbel"))
    raw = raw.replace(b"Message-ID: <", "Message-ID: <zażółć.".encode(), 1)
    raw = raw.replace(b"\nTo:", "\nReferences: <gęś@um.example.com> <ok@um.example.com>\nTo:"
                      .encode(), 1)
    server.append(user, raw, ON_TIME)
    assert (await watch_once(ws)).answers_sent == 1
    [answer] = answers_to(sink, "kasia@gdynia.example.com")
    assert answer["In-Reply-To"] is None
    assert str(answer["References"]) == "<ok@um.example.com>"


async def test_pages_never_answer_500_for_such_data(inbox_ws: Any) -> None:
    """The person page of an unsendable answer and the review page of an unreadable message."""
    ws, _sink, server, user = inbox_ws
    server.append(user, utf8_reply("łukasz@gdynia.example.com", form(name="Łukasz Kot")),
                  ON_TIME)
    server.append(user, nested_multiparts(), ON_TIME)
    await watch_once(ws)
    client = signed_in(ws)
    person = client.get("/person?address=łukasz@gdynia.example.com")
    assert person.status_code == 200 and "odpowiedzi nie wysłano" in person.text
    deep = by_sender(ws, INBOUND)["ewa@sopot.example.com"]
    page = client.get(f"/review/{deep['key']}")
    assert page.status_code == 200 and "nie udało się odczytać" in page.text


def test_unexpected_crash_exits_with_a_code_that_restarts(
        inbox_ws: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (not a configuration mistake) exits 70 with its traceback logged, never 1."""
    ws = inbox_ws[0]

    async def crash(self: Watcher) -> WatchReport:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Watcher, "process_once", crash)
    monkeypatch.setenv("MAILER_NOW", START.isoformat())
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exited:
        main(["-c", str(ws.config), "watch", "--once"])
    assert exited.value.code == EXIT_SOFTWARE == 70
    assert "RuntimeError: a bug" in caplog.text


async def test_unreadable_message_can_be_registered_by_hand(inbox_ws: Any) -> None:
    """`mailer review` lists the unreadable message with its error; --register resolves it."""
    ws, _sink, server, user = inbox_ws
    server.append(user, nested_multiparts(), ON_TIME)
    await watch_once(ws)
    queue = ws.run("review", check=True).stdout
    assert "ewa@sopot.example.com" in queue and "could not be read" in queue
    item = queue.splitlines()[2].split()[0]
    registered = ws.run("review", "--register", item, "--name", "Ewa Lis", "--city", "Sopot",
                        "--email", "ewa@sopot.example.com", "--event", "pim")
    assert registered.returncode == 0, registered.stderr
    assert "0 messages wait" in ws.run("review", check=True).stderr


async def test_a_message_that_fails_half_recorded_leaves_no_answer(inbox_ws: Any) -> None:
    """Recording a reply fails after its answer and registration were staged: the message
    goes to review and nothing it staged stays (no answer goes out for a message in review);
    the reply after it is registered and answered as usual."""
    ws, sink, server, user = inbox_ws  # invited contacts (conftest's list): answered at once
    server.append(user, reply("osoba0@miasto0.example.com", form(name="Piotr Lis")), ON_TIME)
    server.append(user, reply("osoba1@miasto1.example.com", form(name="Anna Nowak")), ON_TIME)

    class Failing(Watcher):
        def _inbound_doc(self, reading: Any, *args: Any, **kwargs: Any) -> Any:
            if reading.sender == "osoba0@miasto0.example.com":  # after the answer is staged
                raise RuntimeError("a bug met half-way")
            return super()._inbound_doc(reading, *args, **kwargs)

    settings = load_settings(ws.config)
    with open_state(settings.storage, writer=True) as store:
        watcher = Failing(settings, store, clock=Clock(START))
        try:
            report = await watcher.process_once()
        finally:
            await watcher.close()
    assert report.new == 2 and report.answers_sent == 1
    broken = by_sender(ws, INBOUND)["osoba0@miasto0.example.com"]
    assert broken["review"]["code"] == "read_failed" and broken["answer"] is None
    assert [a["to"] for a in table(ws, ANSWERS)] == ["osoba1@miasto1.example.com"]
    assert sorted(by_sender(ws, REGISTRATIONS)) == ["osoba1@miasto1.example.com"]
    assert answers_to(sink, "osoba0@miasto0.example.com") == []
    assert len(answers_to(sink, "osoba1@miasto1.example.com")) == 1


async def test_a_message_over_its_reading_budget_waits_for_review(inbox_ws: Any) -> None:
    """Read by a worker with a small budget: a reply of 1,000 forms takes longer, is kept raw
    for review with why, gets no answer; the ordinary reply behind it is answered."""
    ws, sink, server, user = inbox_ws
    heavy = reply("ola@gdynia.example.com", "".join(
        form(name=f"Ola Nowak{chr(97 + n % 26)}", email=f"o{n}@gdynia.example.com")
        for n in range(1000)))
    server.append(user, heavy, ON_TIME)
    server.append(user, reply("piotr@gdansk.example.com", form(name="Piotr Lis")), ON_TIME)
    settings = load_settings(ws.config)
    readers = Readers(events=settings.events, own_addresses=settings.own_addresses,
                      authserv_id=settings.answers.trusted_authserv_id, workers=1,
                      budget=0.05)
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(START), readers=readers)
        try:
            report = await watcher.process_once()
        finally:
            await watcher.close()
    assert report.new == 2 and report.answers_sent == 1
    assert len(answers_to(sink, "piotr@gdansk.example.com")) == 1
    slow = by_sender(ws, INBOUND)["ola@gdynia.example.com"]
    assert slow["review"] == {"code": "read_timeout", "seconds": "0.05"}
    stored = (ws.state / slow["path"]).read_bytes()
    assert slow["answer"] is None
    assert stored.replace(b"\r\n", b"\n") == heavy.replace(b"\r\n", b"\n")
    assert [r["key"] for r in table(ws, REGISTRATIONS)] == ["piotr@gdansk.example.com"]
