"""A hostile world, measured: server faults on real sockets, a full disk, huge input, secrets."""

from __future__ import annotations

import asyncio
import base64
import email.base64mime
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailer import reasons
from mailer.clock import Clock
from mailer.errors import DeliveryError
from mailer.imap_client import ImapInbox
from mailer.models import ANSWERS, INBOUND, MAILBOX, REGISTRATIONS, Status
from mailer.settings import load_settings
from mailer.smtp_client import Outcome, SmtpSession, sort_reply
from mailer.store import open_state
from mailer.watcher import Watcher, WatchReport
from tests.conftest import Workspace, contact_rows, free_port, serving
from tests.dovecot import Dovecot
from tests.fakes import FakeImap, FaultySink, HungServer, bulk_append, until
from tests.test_inbox import ON_TIME, START, form, reply, table, watch_once
from tests.test_send import deliveries, send_all

IMAP_TIMEOUT = 2.0  # seconds an IMAP command may go unanswered in these tests


@pytest.fixture
def faulty_sink() -> Iterator[tuple[FaultySink, int]]:
    """A real SMTP server (aiosmtpd) recording what it accepts, with scripted faults."""
    sink = FaultySink()
    with serving(sink) as port:
        yield sink, port


@pytest.fixture(autouse=True)
def imap_password(monkeypatch: pytest.MonkeyPatch) -> str:
    """The IMAP password every watcher here logs in with (FakeImap's and Dovecot's)."""
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", "sekret")
    return "sekret"


# -- IMAP: the watcher recovers by itself ----------------------------------------------------


@asynccontextmanager
async def running_watcher(ws: Workspace) -> AsyncIterator[Watcher]:
    """`mailer watch` in-process (IDLE loop until stopped), with short IMAP timeouts."""
    settings = load_settings(ws.config)
    stop = asyncio.Event()
    with open_state(settings.storage, writer=True) as store:
        watcher = Watcher(settings, store, clock=Clock(START), imap_timeout=IMAP_TIMEOUT)
        task = asyncio.create_task(watcher.run(stop))
        try:
            yield watcher
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 10)
            finally:
                await watcher.close()
    assert task.done() and task.exception() is None


async def _answered_then_fault(make_workspace: Any, sink: FaultySink, port: int,
                               fake: FakeImap, fault: str, *, poll: float) -> float:
    """One reply answered, then `fault` while idling, then a second reply: seconds to answer."""
    ws = make_workspace(port=port, imap_port=fake.port, poll_seconds=poll)
    fake.append(reply("a@gdynia.example.com", form()), ON_TIME)
    async with running_watcher(ws):
        await until(lambda: len(sink.messages) == 1, 10, "the first reply answered")
        await until(lambda: bool(fake.idling), 5, "the watcher idling")
        hit = fake.bye_idlers() if fault == "bye" else fake.go_silent()
        assert hit == 1
        fake.append(reply("b@gdansk.example.com", form(city="Gdańsk")),
                    ON_TIME + timedelta(minutes=1))
        took = await until(lambda: len(sink.messages) == 2, 20, "the second reply answered")
    # The figures hold: each reply stored once, answered once, nothing left pending.
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["a@gdynia.example.com",
                                                            "b@gdansk.example.com"]
    assert len(table(ws, INBOUND)) == 2
    assert [a["status"] for a in table(ws, ANSWERS)] == ["sent", "sent"]
    return took


async def test_imap_bye_during_idle(make_workspace: Any,
                                   faulty_sink: tuple[FaultySink, int]) -> None:
    """BYE while the watcher idles: it reconnects by itself and answers the next reply in < 5 s."""
    sink, port = faulty_sink
    async with FakeImap() as fake:
        took = await _answered_then_fault(make_workspace, sink, port, fake, "bye", poll=30)
        assert fake.logins == 2
    assert took < 5


async def test_imap_silent_drop_during_idle(make_workspace: Any,
                                           faulty_sink: tuple[FaultySink, int]) -> None:
    """The link goes silent (no FIN, no answer) in IDLE: given up, reconnected in bounded time."""
    sink, port = faulty_sink
    poll = 1.0
    async with FakeImap() as fake:
        took = await _answered_then_fault(make_workspace, sink, port, fake, "silent",
                                          poll=poll)
        assert fake.logins == 2
    # IDLE renewal (poll) + DONE unanswered (timeout) + logout skipped or timed out (timeout)
    # + the first reconnect backoff (≤ 1.2 s) + the pass itself.
    assert took < poll + 3 * IMAP_TIMEOUT + 2


async def test_imap_silent_drop_mid_fetch(make_workspace: Any,
                                         faulty_sink: tuple[FaultySink, int]) -> None:
    """The link goes silent while a FETCH is answered: timed out, reconnected, read once."""
    sink, port = faulty_sink
    async with FakeImap() as fake:
        ws = make_workspace(port=port, imap_port=fake.port, poll_seconds=30)
        fake.append(reply("a@gdynia.example.com", form()), ON_TIME)
        fake.silence_at = b"UID FETCH"
        async with running_watcher(ws):
            took = await until(lambda: len(sink.messages) == 1, 20, "the reply answered")
            assert fake.logins == 2 and fake.silence_at is None
    assert took < 3 * IMAP_TIMEOUT + 3
    assert len(table(ws, INBOUND)) == 1 and len(sink.messages) == 1


# -- SMTP: every refusal at every step, drops, stalls ----------------------------------------






def with_smtp_timeout(ws: Workspace, seconds: float) -> None:
    """Set `[smtp] timeout` of the workspace's campaign file."""
    text = ws.config.read_text(encoding="utf-8")
    assert "timeout = 5\n" in text
    ws.config.write_text(text.replace("timeout = 5\n", f"timeout = {seconds}\n"),
                         encoding="utf-8")


# README "What send guarantees": 4xx is retried with backoff; 5xx is a permanent refusal,
# recorded with its code, never retried; a quota reply (421, 5.4.5, 4.7.x naming a rate or
# limit) pauses all sending for quota_pause and does not count as an attempt.
REPLIES = {
    421: ("421 4.3.2 Service shutting down, closing channel", Outcome.QUOTA),
    451: ("451 4.3.0 Temporary local problem, try again", Outcome.TEMPORARY),
    452: ("452 4.3.1 Insufficient system storage", Outcome.TEMPORARY),
    550: ("550 5.1.1 User unknown; rejecting", Outcome.PERMANENT),
    554: ("554 5.7.1 Transaction failed: policy rejection", Outcome.PERMANENT),
}
QUOTA_REPLIES = ["550 5.4.5 Daily user sending quota exceeded",
                 "451 4.7.1 Sending rate limit exceeded, slow down"]


def test_reply_table_follows_the_documented_rules() -> None:
    """sort_reply puts each reply of the fault matrix where the README says it belongs."""
    for code, (text, outcome) in REPLIES.items():
        assert sort_reply(code, text.split(" ", 1)[1]) is outcome, text
    for text in QUOTA_REPLIES:
        assert sort_reply(int(text[:3]), text[4:]) is Outcome.QUOTA, text
    assert sort_reply(452, "4.5.3 Too many recipients") is Outcome.TEMPORARY  # not 4.7.x


def inject(sink: FaultySink, step: str, reply_text: str, address: str) -> None:
    """Make the server answer `reply_text` once at MAIL, RCPT (for `address`) or DATA."""
    if step == "MAIL":
        sink.mail_replies.append(reply_text)
    elif step == "RCPT":
        sink.rcpt_replies[address] = [reply_text]
    else:
        sink.data_replies.append(reply_text)


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("reply_text", [text for text, _ in REPLIES.values()] + QUOTA_REPLIES)
async def test_smtp_fault_matrix(make_workspace: Any, faulty_sink: tuple[FaultySink, int],
                                 step: str, reply_text: str) -> None:
    """Each refusal at each step: 4xx retried then sent, 5xx recorded with code, quota pauses."""
    sink, port = faulty_sink
    rows = contact_rows(3)
    first = rows[0][0]
    ws = make_workspace(port=port, contacts=rows, connections=1, quota_pause=0.3)
    inject(sink, step, reply_text, first)
    code = int(reply_text[:3])
    outcome = sort_reply(code, reply_text[4:])
    if step == "MAIL" and outcome is Outcome.PERMANENT:
        # A 5xx to MAIL FROM refuses our sender, not a recipient: the run stops and nobody is
        # marked failed; once the server takes the sender again, everyone gets the invitation.
        with pytest.raises(DeliveryError, match=r"refused the envelope sender <[^>]+>: 55"):
            await send_all(ws)
        assert not sink.recipients() and not deliveries(ws)
        report = await send_all(ws)
        assert report.sent == 3 and not report.failed
        assert sorted(sink.recipients()) == sorted(r[0] for r in rows)
        return
    started = time.monotonic()
    report = await send_all(ws)
    elapsed = time.monotonic() - started
    record = deliveries(ws)[first]
    others = [r[0] for r in rows[1:]]
    assert sorted(sink.recipients()) == sorted(others + ([] if outcome is Outcome.PERMANENT
                                                          else [first]))
    assert not report.deferred and not report.stopped
    if outcome is Outcome.PERMANENT:
        assert report.failed == [first] and report.sent == 2
        assert record["status"] == Status.FAILED and record["code"] == code
        assert record["reply"] == reply_text[4:] and record["attempts"] == 1
        assert (await send_all(ws)).planned == 0  # a rerun does not try it again
    elif outcome is Outcome.QUOTA:
        assert report.quota_pauses == 1 and report.sent == 3
        assert record["status"] == Status.SENT and record["attempts"] == 1
        assert elapsed >= 0.3  # everyone waited out the pause
    else:
        assert report.sent == 3 and not report.failed and report.quota_pauses == 0
        assert record["status"] == Status.SENT and record["attempts"] == 2
    assert sink.recipients().count(first) <= 1


async def test_smtp_drop_after_data_before_reply(make_workspace: Any,
                                                faulty_sink: tuple[FaultySink, int]) -> None:
    """RFC 1047: stored by the server, connection lost before its 250: retried, so the
    recipient gets it twice at most and never zero times, both with one Message-ID."""
    sink, port = faulty_sink
    rows = contact_rows(3)
    sink.accept_then_drop = 1
    ws = make_workspace(port=port, contacts=rows, connections=1)
    report = await send_all(ws)
    assert report.sent == 3 and not report.deferred and not report.failed
    received = sink.recipients()
    for address in (r[0] for r in rows):
        assert 1 <= received.count(address) <= 2
    assert len(received) == len(rows) + 1  # exactly the one in flight went twice
    [twice] = {a for a in received if received.count(a) == 2}
    ids = {str(m.message["Message-ID"]) for m in sink.messages if m.rcpt_tos == [twice]}
    assert len(ids) == 1
    assert deliveries(ws)[twice]["attempts"] == 2


async def test_smtp_stall_after_data_is_given_up(make_workspace: Any,
                                                 faulty_sink: tuple[FaultySink, int]) -> None:
    """A server that never answers the end of DATA is given up after [smtp] timeout; retried."""
    sink, port = faulty_sink
    rows = contact_rows(2)
    sink.stall_data, sink.stall_seconds = 1, 4.0
    ws = make_workspace(port=port, contacts=rows, connections=1)
    with_smtp_timeout(ws, 1)
    started = time.monotonic()
    report = await send_all(ws)
    elapsed = time.monotonic() - started
    assert sink.stalls_started == 1
    assert report.sent == 2 and not report.deferred
    assert sorted(sink.recipients()) == sorted(r[0] for r in rows)
    assert 1 <= elapsed < 3  # one timeout, not the stall's 4 s
    assert max(d["attempts"] for d in deliveries(ws).values()) == 2


async def test_smtp_hung_server_defers_in_bounded_time(make_workspace: Any) -> None:
    """A server that accepts and never greets: every message deferred after max_attempts
    timeouts each, in bounded time; a later run with a working server would resume."""
    async with HungServer() as hung:
        rows = contact_rows(3)
        ws = make_workspace(port=hung.port, contacts=rows, connections=2, max_attempts=2)
        with_smtp_timeout(ws, 0.5)
        started = time.monotonic()
        report = await send_all(ws)
        elapsed = time.monotonic() - started
        assert hung.connections >= 2 * len(rows)  # every attempt tried a fresh connection
    assert sorted(report.deferred) == sorted(r[0] for r in rows)
    assert report.sent == 0 and not report.failed
    assert all(d["status"] == Status.DEFERRED for d in deliveries(ws).values())
    # 3 messages x 2 attempts x 0.5 s over 2 connections, plus backoff: well under 5 s.
    assert elapsed < 5


async def test_imap_fetch_of_thousands_of_lines(make_workspace: Any,
                                                faulty_sink: tuple[FaultySink, int],
                                                mailbox: tuple[Dovecot, str]) -> None:
    """1,200 new messages on Dovecot (a 1,200-line size listing overflowed aioimaplib's
    recursion, #118): one pass reads every one, in bounded time."""
    sink, port = faulty_sink
    server, user = mailbox
    count = 1200
    messages = [(reply(f"ooo{n}@miasto{n}.example.com", f"Jestem poza biurem ({n}).\n",
                       subject="Automatyczna odpowiedź", headers={"Auto-Submitted":
                                                                  "auto-replied"}),
                 ON_TIME + timedelta(seconds=n)) for n in range(count)]
    await asyncio.to_thread(bulk_append, server.port, user, server.password, messages)
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    started = time.monotonic()
    report = await asyncio.wait_for(watch_once(ws), 60)
    elapsed = time.monotonic() - started
    assert report.new == count and report.kinds == {"auto_reply": count}
    assert len(table(ws, INBOUND)) == count and sink.messages == []
    [pointer] = table(ws, MAILBOX)
    assert pointer["last_uid"] == count
    assert elapsed < 30


async def test_imap_thousands_of_lines_in_one_read(make_workspace: Any,
                                                   faulty_sink: tuple[FaultySink, int]) -> None:
    """A server whose 1,500-line answer arrives in one read (aioimaplib recursed once per
    line and dropped the connection, #118): every message is still read, in one pass."""
    sink, port = faulty_sink
    count = 1500
    async with FakeImap() as fake:
        for n in range(count):
            fake.append(reply(f"ooo{n}@miasto{n}.example.com", "Jestem poza biurem.\n",
                              headers={"Auto-Submitted": "auto-replied"}),
                        ON_TIME + timedelta(seconds=n))
        ws = make_workspace(port=port, imap_port=fake.port)
        report = await asyncio.wait_for(watch_once(ws), 60)
        assert fake.logins == 1
    assert report.new == count and report.kinds == {"auto_reply": count}
    assert len(table(ws, INBOUND)) == count and sink.messages == []


# -- a full disk -------------------------------------------------------------------------------

PAGE = 4096  # tmpfs allocates whole pages


@contextmanager
def small_disk(folder: Path, size: str = "512k") -> Iterator[Path]:
    """`folder` on a tmpfs of `size` (needs root, as here and in CI: a refusal fails the test)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs",
                              str(folder)], capture_output=True, text=True, check=False)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr}"
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, *, leave_pages: int) -> Path:
    """Fill the file system of `folder` with a ballast file, leaving `leave_pages` pages."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
        pages = -(-os.fstat(fd).st_size // PAGE)
        os.ftruncate(fd, (pages - leave_pages) * PAGE)
    finally:
        os.close(fd)
    return ballast


def journal_is_whole(state: Path) -> bool:
    """The journal holds only complete records: no torn line was left behind."""
    raw = (state / "journal.jsonl").read_bytes()
    if raw and not raw.endswith(b"\n"):
        return False
    for line in raw.splitlines():
        json.loads(line)  # raises on a broken record
    return True


def test_full_disk_while_sending(make_workspace: Any, faulty_sink: tuple[FaultySink, int]) -> None:
    """The disk fills up mid-send: a clear error (exit 1), the old state intact and truthful,
    and after space is freed a rerun sends the rest (≤ connections twice)."""
    sink, port = faulty_sink
    rows = contact_rows(200)
    ws = make_workspace(port=port, contacts=rows, connections=2)
    with small_disk(ws.state):
        ws.run("send", "--yes", "--limit", "20", check=True)
        folded = (ws.state / "mailer.json").read_bytes()
        ballast = fill(ws.state, leave_pages=2)
        result = ws.run("send", "--yes")
        assert result.returncode == 1, result.stderr
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
        assert "the previous file is intact" in result.stderr
        # Old state intact: TinyDB's file untouched, no temporary file, no torn record ...
        assert (ws.state / "mailer.json").read_bytes() == folded
        assert not list(ws.state.glob(".*.tmp"))
        assert journal_is_whole(ws.state)
        # ... and truthful: every delivery recorded as sent reached the server.
        recorded = {d["email"] for d in deliveries(ws).values() if d["status"] == Status.SENT}
        assert 20 < len(recorded) < len(rows) and recorded <= set(sink.recipients())
        ballast.unlink()
        ws.run("send", "--yes", check=True)
    received = sink.recipients()
    assert set(received) == {r[0] for r in rows}
    assert len(received) - len(rows) <= 2  # at most the messages in flight at the failure


def test_full_disk_at_start_is_a_clear_error(make_workspace: Any,
                                             faulty_sink: tuple[FaultySink, int]) -> None:
    """A state folder with no byte free: exit 1 naming the problem, no traceback, nothing sent."""
    sink, port = faulty_sink
    ws = make_workspace(port=port)
    with small_disk(ws.state):
        ws.run("send", "--yes", "--limit", "1", check=True)
        fill(ws.state, leave_pages=0)
        result = ws.run("send", "--yes")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr
    assert len(sink.messages) == 1


async def test_full_disk_while_reading_the_inbox(make_workspace: Any,
                                                 faulty_sink: tuple[FaultySink, int],
                                                 mailbox: tuple[Dovecot, str]) -> None:
    """The disk fills while raw messages are saved: a clear StateError, nothing half-stored
    (no file, no record, the UID pointer unmoved); with space back each reply is read and
    answered once."""
    sink, port = faulty_sink
    server, user = mailbox
    senders = [f"r{n}@miasto{n}.example.com" for n in range(30)]
    messages = [(reply(s, form(name=f"Osoba Numer{n}")), ON_TIME + timedelta(minutes=n))
                for n, s in enumerate(senders)]
    await asyncio.to_thread(bulk_append, server.port, user, server.password, messages[:1])
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    with small_disk(ws.state):
        assert (await watch_once(ws)).new == 1
        before = (ws.state / "journal.jsonl").read_bytes()
        await asyncio.to_thread(bulk_append, server.port, user, server.password, messages[1:])
        ballast = fill(ws.state, leave_pages=4)  # each raw message takes a page of its own
        result = await asyncio.to_thread(ws.run, "watch", "--once")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "No space left on device" in result.stderr
        assert (ws.state / "journal.jsonl").read_bytes() == before
        first = table(ws, INBOUND)[0]["path"].rsplit("/", 1)[1]  # and what was read of it
        assert sorted(p.name for p in (ws.state / "messages").iterdir()) == \
            [first, first.replace(".eml", ".json")]
        [pointer] = table(ws, MAILBOX)
        assert pointer["last_uid"] == 1
        ballast.unlink()
        report = await watch_once(ws)
    assert report.new == 29 and report.answers_sent == 29
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(senders)


# -- huge and odd messages: bounded memory and time ---------------------------------------------

MIXED_HEAD = (b"From: Jan Kowalski <jan@gdynia.example.com>\r\nTo: rejestracja@example.com\r\n"
              b"Subject: Re: Zaproszenie\r\nMessage-ID: <%d.big@gdynia.example.com>\r\n"
              b"Date: Tue, 20 Oct 2020 12:00:00 +0200\r\nMIME-Version: 1.0\r\n"
              b"Authentication-Results: mx.example.com; dmarc=pass "
              b"header.from=gdynia.example.com\r\n"
              b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
              b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Transfer-Encoding: 8bit\r\n\r\n")


def mixed(n: int, form_text: str, *parts: bytes) -> bytes:
    """A multipart/mixed reply: the form as its first part, then `parts` (each with headers)."""
    body = MIXED_HEAD % n + form_text.replace("\n", "\r\n").encode("utf-8")
    return body + b"".join(b"--B\r\n" + part + b"\r\n" for part in parts) + b"--B--\r\n"


async def measured_pass(make: Callable[[str], Workspace]
                        ) -> tuple[Workspace, WatchReport, float, int]:
    """One watcher pass timed, then the same mail read by a second workspace with the peak of
    Python's allocations traced (tracemalloc slows it down several times): the timed
    workspace, its report, its seconds, and the traced peak in bytes."""
    ws = make("timed")
    started = time.monotonic()
    report = await watch_once(ws)
    elapsed = time.monotonic() - started
    traced = make("traced")
    tracemalloc.start()
    try:
        await watch_once(traced)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return ws, report, elapsed, peak


def with_imap_limit(ws: Workspace, limit: int) -> Workspace:
    """Set `[imap] max_message_bytes` of the workspace's campaign file."""
    text = ws.config.read_text(encoding="utf-8")
    assert "[answers]\n" in text
    ws.config.write_text(text.replace("[answers]\n", f"max_message_bytes = {limit}\n\n"
                                                     "[answers]\n"), encoding="utf-8")
    return ws


async def test_25_mb_message_is_never_fetched(make_workspace: Any,
                                              faulty_sink: tuple[FaultySink, int],
                                              mailbox: tuple[Dovecot, str]) -> None:
    """A 25 MB message (over max_message_bytes) is stored from its headers, put up for review,
    in < 5 s and < 8 MB of memory: its body never crosses the wire."""
    sink, port = faulty_sink
    server, user = mailbox
    video = (b"Content-Type: video/mp4\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + b"QUJDRA==\r\n" * (25 * 1024 * 1024 // 10))
    raw = mixed(1, form(), video)
    assert len(raw) > 25 * 1024 * 1024
    await asyncio.to_thread(server.append, user, raw, ON_TIME)
    del raw, video
    ws, report, elapsed, peak = await measured_pass(lambda name: make_workspace(
        port=port, imap_port=server.port, imap_user=user, name=name))
    [inbound] = table(ws, INBOUND)
    assert report.new == 1 and inbound["headers_only"]
    assert "over-size" in reasons.english(inbound["review"])
    assert inbound["sender"] == "jan@gdynia.example.com" and sink.messages == []
    assert (ws.state / inbound["path"]).stat().st_size < 4096
    assert elapsed < 5 and peak < 8 * 1024 * 1024, (elapsed, peak)


async def test_10_000_part_message(make_workspace: Any, faulty_sink: tuple[FaultySink, int],
                                   mailbox: tuple[Dovecot, str]) -> None:
    """A reply of 10,000 MIME parts is read (the form in its first part registers and is
    answered) in < 10 s and < 64 MB of memory."""
    sink, port = faulty_sink
    server, user = mailbox
    parts = [b"Content-Type: text/plain\r\n\r\nczesc %d" % n for n in range(10_000)]
    await asyncio.to_thread(server.append, user, mixed(2, form(), *parts), ON_TIME)
    ws, report, elapsed, peak = await measured_pass(lambda name: make_workspace(
        port=port, imap_port=server.port, imap_user=user, name=name))
    assert report.kinds == {"registration": 1} and report.answers_sent == 1
    # Each of the two workspaces (timed, traced) answered the sender once.
    assert [m.rcpt_tos for m in sink.messages] == [["jan@gdynia.example.com"]] * 2
    assert table(ws, REGISTRATIONS)[0]["events"] == {"smart-city": "confirmed",
                                                     "pim": "confirmed"}
    assert elapsed < 10 and peak < 64 * 1024 * 1024, (elapsed, peak)


async def test_10_mb_zip_attachment_is_never_decoded(make_workspace: Any,
                                                     faulty_sink: tuple[FaultySink, int],
                                                     mailbox: tuple[Dovecot, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A form with a 10 MB base64 zip attached (under a raised size limit): registered and
    answered in < 10 s, the zip never decoded, memory within the stdlib parser's own ~10x."""
    sink, port = faulty_sink
    server, user = mailbox
    blob = base64.encodebytes(os.urandom(10 * 1024 * 1024)).replace(b"\n", b"\r\n")
    zipped = (b'Content-Type: application/zip; name="formularze.zip"\r\n'
              b"Content-Transfer-Encoding: base64\r\n"
              b'Content-Disposition: attachment; filename="formularze.zip"\r\n\r\n' + blob)
    raw = mixed(3, form(), zipped)
    size = len(raw)
    await asyncio.to_thread(server.append, user, raw, ON_TIME)
    del raw, blob, zipped
    decoded: list[int] = []  # the size of every base64 input decoded

    def spy(decode: Any) -> Any:
        def wrapper(data: Any, *args: Any, **kwargs: Any) -> Any:
            decoded.append(len(data))
            return decode(data, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(base64, "b64decode", spy(base64.b64decode))
    monkeypatch.setattr(email.base64mime, "a2b_base64", spy(email.base64mime.a2b_base64))
    ws, report, elapsed, peak = await measured_pass(lambda name: with_imap_limit(
        make_workspace(port=port, imap_port=server.port, imap_user=user, name=name),
        16 * 1024 * 1024))
    assert report.kinds == {"registration": 1} and report.answers_sent == 1
    assert [m.rcpt_tos for m in sink.messages] == [["jan@gdynia.example.com"]] * 2
    [inbound] = table(ws, INBOUND)
    assert not inbound["headers_only"] and (ws.state / inbound["path"]).stat().st_size == size
    assert max(decoded, default=0) < 64 * 1024  # headers' encoded words at most
    assert elapsed < 10 and peak < 15 * size, (elapsed, peak, size)


# -- secrets -----------------------------------------------------------------------------------

# Quotes and backslashes are escaped on the wire (IMAP quoted strings), so a redaction that
# looks for the password as typed misses it; the tests look for its distinctive pieces.
IMAP_SECRET = 'Qx7Tajne"Zq9Haslo\\W3'
SMTP_SECRET = 'Jk4Smtp"Vb8Sekret\\R5'
PIECES = ("Qx7Tajne", "Zq9Haslo", "Jk4Smtp", "Vb8Sekret")


def leaked(text: str) -> list[str]:
    """The pieces of either password (or of its SASL PLAIN form) found in `text`."""
    sasl = base64.b64encode(f"\0organizer\0{SMTP_SECRET}".encode()).decode()
    return [piece for piece in (*PIECES, sasl[8:24]) if piece in text]


class _Authenticator:
    """aiosmtpd AUTH PLAIN/LOGIN: one user, `organizer`, with SMTP_SECRET."""

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"organizer" \
            and auth_data.password == SMTP_SECRET.encode()
        return AuthResult(success=ok)


def test_passwords_never_in_logs_repr_or_errors(make_workspace: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailer -vv` send and watch with passwords holding quotes and backslashes, then with
    wrong ones: neither password shows in any output, log line, error, state file or repr."""
    sink = FaultySink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port,
                            authenticator=_Authenticator(), auth_require_tls=False)
    root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    server = Dovecot(root, password=IMAP_SECRET)
    controller.start()
    server.start()
    try:
        ws = make_workspace(port=smtp_port, imap_port=server.port, imap_user="rejestracja")
        text = ws.config.read_text(encoding="utf-8")
        ws.config.write_text(text.replace("[smtp]\n", '[smtp]\nusername = "organizer"\n'),
                             encoding="utf-8")
        server.append("rejestracja", reply("a@gdynia.example.com", form()), ON_TIME)
        secrets = {"MAILER_SMTP_PASSWORD": SMTP_SECRET, "MAILER_IMAP_PASSWORD": IMAP_SECRET}
        runs = [ws.run("-vv", "send", "--yes", **secrets),
                ws.run("-vv", "watch", "--once", **secrets)]
        assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr
        assert len(sink.messages) == 6  # five invitations and one answer: logins worked
        assert "LOGIN" in runs[1].stderr  # -vv really shows the IMAP conversation
        wrong = {"MAILER_SMTP_PASSWORD": SMTP_SECRET[::-1],
                 "MAILER_IMAP_PASSWORD": IMAP_SECRET[::-1]}
        refused = [ws.run("-vv", "send", "--to", "me@example.com", **wrong),
                   ws.run("-vv", "watch", "--once", **wrong)]
        assert [r.returncode for r in refused] == [1, 1]
        assert "refused the login" in refused[0].stderr + refused[1].stderr
        for result in runs + refused:
            assert not leaked(result.stdout + result.stderr), leaked(result.stderr)
        for path in ws.state.rglob("*"):
            if path.is_file():
                assert not leaked(path.read_text(encoding="utf-8", errors="replace")), path
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", SMTP_SECRET)
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", IMAP_SECRET)
        settings = load_settings(ws.config)
        session = SmtpSession(settings.smtp, envelope_from="x@example.com",
                              password=settings.smtp.password())
        inbox = ImapInbox(settings.imap, settings.imap.password())
        assert not leaked(repr(settings) + repr(session) + repr(inbox))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        controller.stop()


async def test_sender_refused_while_answering_keeps_the_answer(
        make_workspace: Any, faulty_sink: tuple[FaultySink, int],
        mailbox: tuple[Dovecot, str]) -> None:
    """A 5xx to MAIL FROM while answering stops the pass naming our sender; the answer stays
    pending, not failed, and goes out once the server takes the sender again."""
    sink, port = faulty_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    server.append(user, reply("jan@gdynia.example.com", form()), ON_TIME)
    sink.mail_replies.append("553 5.7.1 Sender address rejected: not owned by user")
    with pytest.raises(DeliveryError, match="refused the envelope sender"):
        await watch_once(ws)
    [answer] = table(ws, ANSWERS)
    assert answer["status"] == "pending" and not sink.messages
    report = await watch_once(ws)
    assert report.new == 0 and report.answers_sent == 1
    assert [m.rcpt_tos for m in sink.messages] == [["jan@gdynia.example.com"]]
