"""The dev server: SMTP in, IMAP (with IDLE) out, over the same mailboxes, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import aiosmtplib
import pytest

from mailer.clock import Clock
from mailer.dev.devserver import (
    DEFAULT_PASSWORD,
    DevServer,
    DevServerError,
    DevServerOptions,
    running,
)
from mailer.imap_client import parse_fetch
from mailer.reading.understand import understand
from mailer.settings import load_settings
from tests.conftest import REPO, free_port

INBOX = "rejestracja@example.com"


@pytest.fixture(autouse=True)
def utc_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process servers run in UTC, as `mailer devserver` does (pymap reads INTERNALDATE
    back in local time with today's offset; see devserver.run_until_stopped)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def options(root: Path, **extra: object) -> DevServerOptions:
    return DevServerOptions(root=root, smtp_port=free_port(), imap_port=free_port(),
                            mailboxes=(("rejestracja", INBOX),), **extra)  # type: ignore[arg-type]


def letter(to: str, subject: str = "Zaproszenie") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Departament Strategii <strategia@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<t1@example.com>"
    msg.set_content("Dzień dobry,\nzapraszamy.\n")
    return msg.as_bytes()


@asynccontextmanager
async def imap_client(port: int, login: str) -> AsyncIterator[aioimaplib.IMAP4]:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(login, DEFAULT_PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    try:
        yield client
    finally:
        await client.logout()
        client.protocol.transport.close()  # aioimaplib's logout leaves the socket open


async def fetch_all(client: aioimaplib.IMAP4) -> list[tuple[dict[str, object], bytes | None]]:
    response = await client.uid("fetch", "1:*", "(UID INTERNALDATE BODY.PEEK[])")
    assert response.result == "OK"
    return parse_fetch(response.lines)


async def smtp_send(server: DevServer, to: list[str], data: bytes,
                    sender: str = INBOX) -> None:
    await aiosmtplib.send(data, sender=sender, recipients=to, hostname="127.0.0.1",
                          port=server.options.smtp_port, timeout=10)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.add(address)
    return found


async def test_smtp_in_imap_idle_out(tmp_path: Path) -> None:
    """A message sent over SMTP is pushed to an IDLE client of the recipient within seconds."""
    async with running(options(tmp_path / "mail")) as server:
        server.mailboxes.ensure("prezydent@gdynia.example.com")
        async with imap_client(server.options.imap_port, "prezydent@gdynia.example.com") as c:
            idle = await c.idle_start(timeout=30)
            sent_at = time.monotonic()
            await smtp_send(server, ["prezydent@gdynia.example.com"],
                            letter("prezydent@gdynia.example.com"))
            push = await c.wait_server_push(timeout=10)
            assert time.monotonic() - sent_at < 5
            assert any(b"EXISTS" in line for line in push if isinstance(line, bytes))
            c.idle_done()
            await asyncio.wait_for(idle, 10)
            [(meta, data)] = await fetch_all(c)
    assert data is not None and b"Subject: Zaproszenie" in data
    assert b"Return-Path: <rejestracja@example.com>" in data and b"Received: from" in data
    assert abs(meta["received"] - datetime.now(UTC)) < timedelta(minutes=1)  # type: ignore[operator]


async def test_local_part_logs_in_and_append_keeps_its_date(tmp_path: Path) -> None:
    """The reply inbox answers to its local part; APPEND with a date sets INTERNALDATE."""
    when = datetime(2020, 10, 20, 8, 15, tzinfo=UTC)
    async with running(options(tmp_path / "mail")) as server, \
            imap_client(server.options.imap_port, "rejestracja") as client:
        response = await client.append(letter(INBOX), mailbox="INBOX", date=when)
        assert response.result == "OK"
        [(meta, _)] = await fetch_all(client)
    assert meta["received"] == when


async def test_rehearsal_clock_stamps_smtp_arrivals(tmp_path: Path) -> None:
    """Under $MAILER_NOW a reply sent by SMTP arrives in the rehearsal's time, not today
    (issue 16: every rehearsal reply was late, "received in 2026")."""
    rehearsal = datetime(2020, 10, 21, 9, 30, tzinfo=UTC)
    async with running(options(tmp_path / "mail", clock=Clock(rehearsal))) as server:
        await smtp_send(server, [INBOX], letter(INBOX), sender="jan@gdynia.example.com")
        async with imap_client(server.options.imap_port, "rejestracja") as client:
            [(meta, data)] = await fetch_all(client)
    arrived = meta["received"]
    assert isinstance(arrived, datetime) and rehearsal <= arrived < rehearsal + timedelta(
        minutes=1)
    assert data is not None and b"21 Oct 2020" in data  # the Received: line says so too


def test_deliver_puts_a_reply_in_the_inbox_at_a_chosen_time(tmp_path: Path) -> None:
    """`mailer deliver FILE --at TIME` appends a reply to the campaign's inbox with that
    arrival time; `watch` then decides lateness by it."""
    reply = tmp_path / "odpowiedz.eml"
    reply.write_bytes(letter(INBOX, subject="Re: Zaproszenie"))
    server_root = tmp_path / "mail"
    opts = options(server_root)

    async def deliver_and_read() -> list[tuple[dict[str, object], bytes | None]]:
        async with running(opts) as server:
            config = tmp_path / "campaign.toml"
            text = (REPO / "campaign.toml").read_text(encoding="utf-8")
            text = text.replace("port = 1143", f"port = {server.options.imap_port}")
            config.write_text(text, encoding="utf-8")
            for folder in ("templates", "recipients"):
                (tmp_path / folder).symlink_to(REPO / folder)
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "mailer", "-c", str(config), "deliver",
                                 str(reply), "--at", "2020-10-27T09:30:00+01:00"],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "MAILER_IMAP_PASSWORD": DEFAULT_PASSWORD})
            assert result.returncode == 0, result.stderr
            assert "arriving 2020-10-27T09:30:00+01:00" in result.stdout
            async with imap_client(server.options.imap_port, "rejestracja") as client:
                return await fetch_all(client)

    [(meta, data)] = asyncio.run(deliver_and_read())
    assert meta["received"] == datetime(2020, 10, 27, 8, 30, tzinfo=UTC)
    assert data == reply.read_bytes()  # as written, byte for byte


async def test_bounce_address_returns_a_dsn_to_the_sender(tmp_path: Path) -> None:
    """Mail for a --bounce address comes back as an RFC 3464 DSN the watcher reads as a bounce."""
    gone = "m.slezak@wroclaw.example.com"
    async with running(options(tmp_path / "mail", bounce=frozenset({gone}))) as server:
        await smtp_send(server, [gone, "ok@lodz.example.com"], letter(gone))
        async with imap_client(server.options.imap_port, "rejestracja") as client:
            [(meta, data)] = await fetch_all(client)
    assert data is not None
    settings = load_settings(REPO / "campaign.toml")
    reading = understand(data, received=meta["received"],  # type: ignore[arg-type]
                         events=settings.events, own_addresses={INBOX})
    assert str(reading.kind) == "bounce"
    assert reading.classification.bounced == (gone,)
    assert not (tmp_path / "mail" / gone).exists()
    assert (tmp_path / "mail" / "ok@lodz.example.com").is_dir()


async def test_loopback_only_and_mailboxes_survive_a_restart(tmp_path: Path) -> None:
    """Both servers listen on 127.0.0.1 alone; a restarted server still knows its mailboxes."""
    opts = options(tmp_path / "mail")
    async with running(opts) as server:
        await smtp_send(server, ["sekretariat@torun.example.com"], letter("x"))
        for port in (opts.smtp_port, opts.imap_port):
            assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert not listening_addresses(opts.smtp_port) and not listening_addresses(opts.imap_port)
    async with running(opts) as server, \
            imap_client(server.options.imap_port, "sekretariat") as client:
        assert len(await fetch_all(client)) == 1


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A port already taken fails with the address and a hint, before anything starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevServerError, match=f"127.0.0.1:{port} is in use"):
            async with running(DevServerOptions(root=tmp_path, smtp_port=port,
                                                imap_port=free_port())):
                pass


@pytest.mark.slow
def test_command_prints_logins_keeps_dates_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`mailer devserver` prints ports and logins, keeps a summer INTERNALDATE exact in any
    local time zone, and on SIGINT stops at once, even with clients connected (IDLE, SMTP)."""
    smtp_port, imap_port = free_port(), free_port()
    log = tmp_path / "devserver.log"
    env = {**os.environ, "TZ": "Europe/Warsaw"}
    command = [sys.executable, "-m", "mailer", "-c", str(REPO / "campaign.toml"), "devserver",
               "--smtp-port", str(smtp_port), "--imap-port", str(imap_port),
               "--dir", str(tmp_path / "mail")]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while b"ready" not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        summer = datetime(2020, 7, 20, 8, 15, tzinfo=UTC)
        received, stopped_in = asyncio.run(interrupt_while_connected(process, smtp_port,
                                                                     imap_port, summer))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert received == summer
    assert process.returncode == 0 and stopped_in < 5
    text = log.read_text()
    assert f"SMTP  127.0.0.1:{smtp_port}" in text and f"IMAP  127.0.0.1:{imap_port}" in text
    assert "password for every mailbox: devserver" in text
    assert "login 'rejestracja' or 'rejestracja@example.com'" in text
    assert "stopped;" in text and "Traceback" not in text
    assert not listening_addresses(smtp_port) and not listening_addresses(imap_port)


async def interrupt_while_connected(process: subprocess.Popen[bytes], smtp_port: int,
                                    imap_port: int, when: datetime) -> tuple[object, float]:
    """APPEND with a date and read it back; then SIGINT during IDLE and an SMTP session."""
    async with imap_client(imap_port, "rejestracja") as client:
        assert (await client.append(letter(INBOX), mailbox="INBOX", date=when)).result == "OK"
        [(meta, _)] = await fetch_all(client)
    idler = aioimaplib.IMAP4(host="127.0.0.1", port=imap_port, timeout=10)
    await idler.wait_hello_from_server()
    await idler.login("rejestracja", DEFAULT_PASSWORD)
    await idler.select("INBOX")
    await idler.idle_start(timeout=30)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, timeout=10)
    await smtp.connect()
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    while process.poll() is None and time.monotonic() - started < 10:
        await asyncio.sleep(0.05)
    stopped_in = time.monotonic() - started
    smtp.close()
    idler.protocol.transport.close()
    return meta["received"], stopped_in
