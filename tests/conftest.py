"""Shared fixtures: a real aiosmtpd server that records (and can misbehave), campaign workspaces."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.dovecot import Dovecot

REPO = Path(__file__).resolve().parent.parent
REHEARSAL = "2020-10-19T09:00:00+02:00"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any = None  # the client's (host, port): one per SMTP session

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpSink:
    """An aiosmtpd handler that records what it accepts and replays scripted faults.

    `rcpt_replies[address]` and `data_replies` are queues of replies ("451 4.3.0 try later")
    used before falling back to success; `drop_data` closes the connection after DATA
    without replying that many times; `delay` slows every DATA down.
    """

    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    drop_data: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        with self.lock:
            queue = self.rcpt_replies.get(address.lower())
            reply = queue.pop(0) if queue else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            if self.drop_data:
                self.drop_data -= 1
                server.transport.close()
                return "421 4.4.2 dropped"
            reply = self.data_replies.pop(0) if self.data_replies else None
            if reply:
                return reply
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          bytes(envelope.original_content), session.peer))
        return "250 2.0.0 queued"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for m in self.messages for r in m.rcpt_tos]


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[int]:
    """A real aiosmtpd server on 127.0.0.1 with `handler`, for the block; yields its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink() -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server on 127.0.0.1 recording every message: (handler, port)."""
    sink = SmtpSink()
    with serving(sink) as port:
        yield sink, port


CAMPAIGN = """\
[campaign]
name = "Test campaign"
sender = "Departament Strategii MFiPR <strategia@example.com>"
reply_to = "rejestracja@example.com"
subject = "{subject}"
template = "newsletter"
recipients = ["recipients/list.csv"]
timezone = "Europe/Warsaw"
unsubscribe = {unsubscribe}

[[event]]
id = "smart-city"
title = "Warsztat „Smart City – doświadczenia i wyzwania”"
starts = 2020-10-26T10:00:00
place = "online (ZOOM)"
deadline = 2020-10-26T10:00:00
aliases = ["warsztat", "smart city"]

[[event]]
id = "pim"
title = "Partnerska Inicjatywa Miast 2021–2023 – nabór miast"
deadline = 2020-11-02T23:59:59
aliases = ["pim", "partnerska inicjatywa miast", "nabór"]

[smtp]
host = "127.0.0.1"
port = {port}
connections = {connections}
max_attempts = {max_attempts}
timeout = 5
quota_pause = {quota_pause}

[imap]
host = "127.0.0.1"
port = {imap_port}
username = "{imap_user}"
password_env = "MAILER_IMAP_PASSWORD"
poll_seconds = {poll_seconds}

[answers]
max_per_sender_per_day = {max_answers}
trusted_authserv_id = "mx.example.com"

[storage]
path = "state"
"""

CONTACT_COLUMNS = ["email", "imie", "nazwisko", "stanowisko", "miasto"]


@dataclass
class Workspace:
    """A campaign folder in tmp_path: campaign.toml, templates, one contact list, state/."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "campaign.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_contacts(self, rows: list[list[str]], *, encoding: str = "cp1250",
                       delimiter: str = ";", header: list[str] | None = None) -> Path:
        path = self.root / "recipients" / "list.csv"
        with open(path, "w", encoding=encoding, newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter, lineterminator="\r\n")
            writer.writerow(header or CONTACT_COLUMNS)
            writer.writerows(rows)
        return path

    def run(self, *args: str, now: str | None = REHEARSAL, check: bool = False,
            timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the real `mailer` command in this workspace."""
        environ = {**os.environ, "MAILER_IMAP_PASSWORD": "sekret", **env,
                   "MAILER_CONFIG": str(self.config)}
        environ.pop("MAILER_NOW", None)
        if now:
            environ["MAILER_NOW"] = now
        result = subprocess.run([sys.executable, "-m", "mailer", *args], cwd=self.root,
                                env=environ, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False)
        if check:
            assert result.returncode == 0, result.stderr
        return result


def contact_rows(n: int, *, domain: str = "example.com") -> list[list[str]]:
    """n fictional contacts with Polish names."""
    cities = ["Łódź", "Gdańsk", "Kraków", "Wrocław", "Poznań", "Białystok", "Zielona Góra"]
    return [[f"osoba{i}@miasto{i % 50}.{domain}", f"Łucja{i}", f"Żółkiewska{i}",
             "Naczelnik Wydziału", cities[i % len(cities)]] for i in range(n)]


@pytest.fixture
def make_workspace(tmp_path: Path) -> Any:
    """Factory: make_workspace(port=…, contacts=[[…]], **campaign values) → Workspace."""

    def make(*, port: int = 2525, contacts: list[list[str]] | None = None,
             connections: int = 2, max_attempts: int = 3, quota_pause: float = 0.5,
             imap_port: int = 1143, imap_user: str = "rejestracja", poll_seconds: float = 60,
             max_answers: int = 5,
             subject: str = "Zaproszenie – {{ recipient.miasto }}: warsztat Smart City i PIM",
             unsubscribe: str = '"mailto:rejestracja@example.com?subject=wypisz"',
             name: str = "ws") -> Workspace:
        root = tmp_path / name
        (root / "recipients").mkdir(parents=True)
        shutil.copytree(REPO / "templates", root / "templates")
        (root / "campaign.toml").write_text(CAMPAIGN.format(
            port=port, connections=connections, max_attempts=max_attempts,
            quota_pause=quota_pause, subject=subject, unsubscribe=unsubscribe,
            imap_port=imap_port, imap_user=imap_user, poll_seconds=poll_seconds,
            max_answers=max_answers,
        ), encoding="utf-8")
        workspace = Workspace(root)
        workspace.write_contacts(contacts if contacts is not None else contact_rows(5))
        return workspace

    return make


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    """One private Dovecot for the session; tests take a user (mailbox) each."""
    root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    server = Dovecot(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mailbox(dovecot_server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> tuple[Dovecot, str]:
    """A fresh IMAP user on the shared Dovecot; its password is in $MAILER_IMAP_PASSWORD."""
    user = f"u{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MAILER_IMAP_PASSWORD", dovecot_server.password)
    return dovecot_server, user


@pytest.fixture
def inbox_ws(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
             mailbox: tuple[Dovecot, str]) -> tuple[Workspace, SmtpSink, Dovecot, str]:
    """A workspace reading a fresh Dovecot mailbox and answering through a recording SMTP."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user, poll_seconds=1)
    return ws, sink, server, user
