"""Local SMTP + IMAP for trying it out: every accepted message lands in its recipients' mailboxes.

One process, bound to 127.0.0.1 only. SMTP is aiosmtpd; IMAP (with IDLE) is pymap's maildir
backend started in-process, over the same mailboxes, so `mailer watch` reads them exactly as it
reads a real server. pymap's `main.run()` is not used: it installs signal handlers and never
returns; here its backend and IMAP service are started inside our own `AsyncExitStack`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from weakref import WeakSet

from aiosmtpd.smtp import SMTP
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.maildir import Config as MaildirConfig
from pymap.backend.maildir import Identity, MaildirBackend
from pymap.imap import IMAPServer, IMAPService
from pymap.parsing.message import AppendMessage
from pysasl.hashing import BuiltinHash

from mailer.clock import Clock
from mailer.errors import MailerError
from mailer.settings import load_settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # never another interface: this server has one shared password and no TLS
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
HOSTNAME = "devserver.localhost"
DEFAULT_PASSWORD = "devserver"
USERS_FILE = "pymap-etc-passwd"  # passwd(5): 7 fields
SHADOW_FILE = "pymap-etc-shadow"  # shadow(5): 9 fields
# A dev server's password is printed on start: a cheap hash keeps every login fast.
HASH_ROUNDS = 1000
SHOWN_LOGINS = 8  # printed on start; the rest follow the same rule
# Plain addresses only: the address is a folder name and a field of the users file.
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+=?^_`{|}~-][A-Za-z0-9.!#$%&'*+=?^_`{|}~-]*"
                      r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$")


class DevServerError(MailerError):
    """The dev server cannot start (a port in use, an unwritable folder)."""


@dataclass(frozen=True)
class DevServerOptions:
    """Where the mailboxes live, the two ports, the one password, and who bounces."""

    root: Path
    smtp_port: int = 2525
    imap_port: int = 1143
    password: str = DEFAULT_PASSWORD
    # Accepted, then answered with a DSN to the envelope sender, as a relay does when the
    # next server says "user unknown" (so bounces arrive in the inbox the watcher reads).
    bounce: frozenset[str] = frozenset()
    # Mailboxes to create at start: login name → address (e.g. "rejestracja" → the reply_to).
    mailboxes: tuple[tuple[str, str], ...] = ()
    # What stamps arrivals (INTERNALDATE): under $MAILER_NOW the rehearsal clock, so a reply
    # sent by SMTP during a rehearsal arrives in the rehearsal's time, not today (issue 16).
    clock: Clock = field(default_factory=Clock)


def plain_address(address: str) -> str | None:
    """The address lower-cased, or None when it cannot name a mailbox."""
    address = address.strip().lower()
    return address if _ADDRESS.match(address) and ".." not in address else None


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class Mailboxes:
    """One Maildir per address under `root`, and the users files pymap reads at each login.

    Each address logs in under its own name and, while nobody else took it, under its local
    part too (`rejestracja` for rejestracja@example.com), like a one-domain mail server.
    """

    def __init__(self, root: Path, password: str) -> None:
        self.root = root
        self.logins: dict[str, str] = {}  # login name → address (= the Maildir folder)
        self._hash = BuiltinHash(rounds=HASH_ROUNDS).hash(password)
        self._read()

    def _read(self) -> None:
        """The mailboxes of an earlier run (they keep their mail and their logins)."""
        try:
            lines = (self.root / USERS_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            fields = line.split(":")
            if len(fields) == 7 and fields[0] and fields[5]:
                self.logins[fields[0]] = fields[5]
        if self.logins:
            self._write()  # with today's password

    def ensure(self, address: str, *, login: str | None = None) -> str:
        """Create the mailbox of `address` (idempotent); returns its login name."""
        names = list(dict.fromkeys(n for n in (login, address, address.partition("@")[0]) if n))
        added = [n for n in names if n not in self.logins]
        for name in added:
            self.logins[name] = address
        if added:
            self._write()
            log.info("mailbox %s (login %s)", address, " or ".join(
                n for n in names if self.logins.get(n) == address))
        return address

    def _write(self) -> None:
        # Written whole and renamed into place: pymap re-reads both files at every login.
        users = "".join(f"{name}:x::::{home}:\n" for name, home in self.logins.items())
        shadow = "".join(f"{name}:{self._hash}:::::::\n" for name in self.logins)
        _atomic_text(self.root / SHADOW_FILE, shadow)
        _atomic_text(self.root / USERS_FILE, users)


def _pymap_args(options: DevServerOptions) -> argparse.Namespace:
    """pymap's own argument parsers, so its config gets exactly what its CLI would give it."""
    parser = argparse.ArgumentParser(prog="pymap")
    backends = parser.add_subparsers(dest="backend", required=True)
    MaildirBackend.add_subparser("maildir", backends)
    IMAPService.add_arguments(parser)
    parser.set_defaults(debug=False, passlib_cfg=None, skip_services=[])
    # Without --host pymap listens on every interface.
    return parser.parse_args(["--host", HOST, "--port", str(options.imap_port), "--no-tls",
                              "maildir", str(options.root)])


def _port_free(port: int) -> None:
    with socket.socket() as probe:
        # As asyncio binds (SO_REUSEADDR): connections of a previous run in TIME_WAIT are fine.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise DevServerError(f"{HOST}:{port} is in use: {err.strerror}",
                                 hint="stop what listens there, or choose other ports "
                                      "(--smtp-port, --imap-port)") from err


@dataclass
class DevServer:
    """The running server: `deliver` files a message; SMTP and IMAP share the mailboxes."""

    options: DevServerOptions
    mailboxes: Mailboxes
    config: MaildirConfig | None = None
    backend: MaildirBackend | None = None
    delivered: int = 0
    clients: set[asyncio.BaseTransport] = field(default_factory=set)  # IMAP connections
    smtp_sessions: WeakSet[SMTP] = field(default_factory=WeakSet)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def hang_up(self) -> None:
        """Close every client connection (the listeners are closed separately)."""
        for transport in [*self.clients, *(s.transport for s in self.smtp_sessions)]:
            if transport is not None:
                transport.close()

    async def deliver(self, address: str, data: bytes, *, when: datetime | None = None) -> None:
        """Append `data` to the INBOX of `address`, with INTERNALDATE `when` (default: now)."""
        assert self.config is not None and self.backend is not None
        async with self._lock:  # one writer per Maildir and users file at a time
            name = self.mailboxes.ensure(address)
            identity = Identity(self.config, self.backend.login.tokens, name, None, frozenset())
            async with identity.new_session() as session:
                message = AppendMessage(data, when or self.options.clock.now())
                await session.append_messages("INBOX", [message])
            self.delivered += 1

    # -- SMTP (aiosmtpd handler hooks) -------------------------------------------------------

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                         rcpt_options: list[str]) -> str:
        if plain_address(address) is None:
            return "553 5.1.3 the dev server keeps mail only for plain addresses (user@domain)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content)
        now = self.options.clock.now()
        peer = session.host_name or "unknown"
        for rcpt in envelope.rcpt_tos:
            address = plain_address(rcpt) or rcpt
            if address in self.options.bounce:
                await self._bounce(envelope.mail_from or "", address, data, now)
                continue
            trace = _trace_headers(envelope.mail_from or "", address, peer, now)
            try:
                await self.deliver(address, trace + data, when=now)
            except Exception:  # a broken mailbox must not kill the session: say "try later"
                log.exception("cannot deliver %s to %s", _message_id(data), address)
                return "451 4.3.0 the dev server could not store the message"
            log.info("delivered %s → %s", _message_id(data), address)
        return "250 2.0.0 delivered"

    async def _bounce(self, sender: str, address: str, data: bytes, now: datetime) -> None:
        target = plain_address(sender)
        if target is None:  # never bounce a bounce (RFC 5321 §4.5.5: null reverse-path)
            log.info("dropped %s → %s (user unknown, no one to tell)", _message_id(data), address)
            return
        report = delivery_failure(target, address, data, now)
        await self.deliver(target, b"Return-Path: <>\r\n" + report, when=now)
        log.info("bounced %s → %s: DSN to %s", _message_id(data), address, target)


def _message_id(data: bytes) -> str:
    match = re.search(rb"^Message-ID:\s*(<[^>\r\n]*>)", data, re.IGNORECASE | re.MULTILINE)
    return match.group(1).decode(errors="replace") if match else "(no Message-ID)"


def _trace_headers(sender: str, address: str, peer: str, now: datetime) -> bytes:
    """What a delivering server prepends (RFC 5321 §4.4): Return-Path, Delivered-To, Received."""
    return (f"Return-Path: <{sender}>\r\nDelivered-To: {address}\r\n"
            f"Received: from {peer} ({HOST}) by {HOSTNAME} (mailer devserver)\r\n"
            f"\twith ESMTP for <{address}>; {format_datetime(now)}\r\n").encode()


def delivery_failure(to: str, failed: str, original: bytes, now: datetime) -> bytes:
    """An RFC 3464 delivery status notification, as Postfix writes one for "user unknown"."""
    headers = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    boundary = f"devserver-{int(time.time() * 1000)}"
    text = (
        f"This is the mail system at host {HOSTNAME}.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{failed}>: host mx.{failed.partition('@')[2]} said: 550 5.1.1 <{failed}>:\r\n"
        "    Recipient address rejected: User unknown in virtual mailbox table\r\n"
    )
    status = (
        f"Reporting-MTA: dns; {HOSTNAME}\r\nArrival-Date: {format_datetime(now)}\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nOriginal-Recipient: rfc822; {failed}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{failed}>: Recipient address rejected: "
        "User unknown\r\n"
    )
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>\r\nTo: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {format_datetime(now)}\r\nMessage-ID: {make_msgid(domain=HOSTNAME)}\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
        "\r\n\r\n"
    )
    return (head.encode()
            + f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
              f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}\r\n"
              f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode()
            + headers + f"\r\n\r\n--{boundary}--\r\n".encode())


@asynccontextmanager
async def running(options: DevServerOptions) -> AsyncIterator[DevServer]:
    """Start IMAP and SMTP on 127.0.0.1; both are closed when the block exits."""
    for port in (options.smtp_port, options.imap_port):
        _port_free(port)
    try:
        options.root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DevServerError(f"{options.root}: cannot create the mail folder: {err}") from err
    mailboxes = Mailboxes(options.root, options.password)
    for login, address in options.mailboxes:
        mailboxes.ensure(address, login=login)
    server = DevServer(options, mailboxes)
    async with AsyncExitStack() as stack:
        backend, config = await MaildirBackend.init(_pymap_args(options))
        config.apply_context()
        server.backend, server.config = backend, config
        await backend.start(stack)
        await _start_imap(stack, server, backend, config)
        await _start_smtp(stack, server)
        # Python ≥ 3.12 waits for every client before a server counts as closed, so a
        # `mailer watch` in IDLE would hold Ctrl-C forever: hang up on clients first.
        stack.callback(server.hang_up)
        yield server


async def _start_imap(stack: AsyncExitStack, server: DevServer, backend: MaildirBackend,
                      config: MaildirConfig) -> None:
    """What pymap's IMAPService.start does, on 127.0.0.1 only and keeping hold of clients."""
    imap = ProxyProtocolReader(config.proxy_protocol).get_callback(
        IMAPServer(backend.login, config))

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The PROXY-protocol wrapper runs the connection as a task of its own and returns at
        # once, so closed connections are forgotten here, when the next one arrives.
        server.clients.difference_update([t for t in server.clients if t.is_closing()])
        server.clients.add(writer.transport)
        await imap(reader, writer)

    listener = await asyncio.start_server(connected, host=HOST, port=server.options.imap_port)
    await stack.enter_async_context(listener)


async def _start_smtp(stack: AsyncExitStack, server: DevServer) -> None:
    def session() -> SMTP:
        protocol = SMTP(server, hostname=HOSTNAME, ident="mailer devserver",
                        enable_SMTPUTF8=True)
        server.smtp_sessions.add(protocol)
        return protocol

    listener = await asyncio.get_running_loop().create_server(
        session, host=HOST, port=server.options.smtp_port)
    await stack.enter_async_context(listener)


async def serve(options: DevServerOptions, stop: asyncio.Event,
                on_ready: Callable[[DevServer], None]) -> DevServer:
    """Run until `stop` is set; `on_ready` is called once both servers listen."""
    async with running(options) as server:
        on_ready(server)
        await stop.wait()
    return server


def run_until_stopped(options: DevServerOptions, echo: Callable[[str], None]) -> DevServer:
    """This process as the dev server, until SIGINT (Ctrl-C) or SIGTERM; then all is closed."""
    # pymap reads INTERNALDATE back from a file's mtime as naive local time and labels it with
    # today's UTC offset, so a summer date read in winter comes out an hour off. In UTC the
    # round trip is exact; this process does nothing else with local time.
    os.environ["TZ"] = "UTC"
    time.tzset()

    def ready(server: DevServer) -> None:
        for line in describe(server):
            echo(line)
        echo("ready; Ctrl-C stops it")

    async def main() -> DevServer:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await serve(options, stop, ready)

    return asyncio.run(main())


def options_for(config: Path, *, root: Path | None, smtp_port: int | None,
                imap_port: int | None, password: str, bounce: Iterable[str],
                clock: Clock | None = None) -> DevServerOptions:
    """Options from the command line, else from the campaign file (its local ports, its inbox)."""
    settings = None
    if config.is_file():
        try:
            settings = load_settings(config)
        except MailerError as err:
            log.warning("%s: %s; the dev server starts with its own defaults", config, err)
    mailboxes: tuple[tuple[str, str], ...] = ()
    smtp_default, imap_default = 2525, 1143
    if settings is not None:
        inbox = plain_address(settings.campaign.reply_to)
        mailboxes = ((settings.imap.username, inbox),) if inbox else ()
        if settings.smtp.host in LOCAL_NAMES:
            smtp_default = settings.smtp.port
        if settings.imap.host in LOCAL_NAMES:
            imap_default = settings.imap.port
    addresses = frozenset(a for a in (plain_address(b) for b in bounce) if a)
    return DevServerOptions(root=(root or config.parent / "devmail").absolute(),
                            smtp_port=smtp_port or smtp_default,
                            imap_port=imap_port or imap_default, password=password,
                            bounce=addresses, mailboxes=mailboxes, clock=clock or Clock())


def describe(server: DevServer) -> Iterable[str]:
    """The lines printed on start: where to connect, how to log in, where the mail is."""
    o = server.options
    yield f"SMTP  {HOST}:{o.smtp_port}  (no TLS, no AUTH; accepts mail for any address)"
    yield f"IMAP  {HOST}:{o.imap_port}  (no TLS, IDLE; log in as a recipient's address)"
    yield f"password for every mailbox: {o.password}"
    yield f"mailboxes (Maildir, one folder per address): {o.root}"
    aliases = sorted((a, n) for n, a in server.mailboxes.logins.items() if n != a)
    for address, login in aliases[:SHOWN_LOGINS]:
        yield f"  login {login!r} or {address!r}"
    if len(aliases) > SHOWN_LOGINS:
        yield f"  … and {len(aliases) - SHOWN_LOGINS} more (every address, or its local part)"
    for address in sorted(o.bounce):
        yield f"  {address}: accepted, then bounced back to the sender (user unknown)"
    if o.clock.rehearsal:
        yield (f"arrivals stamped on the rehearsal clock ($MAILER_NOW), from "
               f"{o.clock.now().isoformat(timespec='seconds')}")
