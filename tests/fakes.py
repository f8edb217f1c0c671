"""Servers that misbehave on purpose, on real sockets: faults Dovecot and aiosmtpd won't make.

- `FaultySink`: the recording aiosmtpd handler of conftest, plus scripted MAIL replies, a
  message accepted and stored whose connection then drops before the 250 (RFC 1047's
  duplicate window), and a DATA that stalls past the client's timeout.
- `HungServer`: accepts TCP connections and never says a word (a wedged SMTP server).
- `FakeImap`: enough IMAP4rev1 for aioimaplib (greeting, CAPABILITY, LOGIN, SELECT with
  UIDVALIDITY, UID SEARCH, UID FETCH, IDLE/DONE, NOOP, LOGOUT) that can send BYE to a client
  in IDLE or stop answering on an open socket (a silent TCP drop: NAT or firewall state lost).
- `bulk_append`: fills a real server's folder quickly (pipelined APPEND).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.conftest import Received, SmtpSink


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until `condition()` holds, at most `timeout` seconds; the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - started


# -- SMTP -------------------------------------------------------------------------------------


@dataclass
class FaultySink(SmtpSink):
    """SmtpSink with faults at MAIL, after an accepted DATA, and a stalling DATA.

    `mail_replies` is a queue of replies to MAIL FROM; `accept_then_drop` stores that many
    messages and closes the connection instead of saying 250; `stall_data` holds that many
    DATA replies back for `stall_seconds` (storing nothing) and then answers 451.
    """

    mail_replies: list[str] = field(default_factory=list)
    accept_then_drop: int = 0
    stall_data: int = 0
    stall_seconds: float = 0.0
    stalls_started: int = 0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        with self.lock:
            reply = self.mail_replies.pop(0) if self.mail_replies else None
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            drop = self.accept_then_drop > 0
            stall = not drop and self.stall_data > 0
            if drop:
                self.accept_then_drop -= 1
                self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              bytes(envelope.original_content)))
            elif stall:
                self.stall_data -= 1
                self.stalls_started += 1
        if drop:
            server.transport.close()  # the message is ours; the client never hears so
            return "250 2.0.0 queued (never sent: the connection is gone)"
        if stall:
            await asyncio.sleep(self.stall_seconds)
            return "451 4.4.2 too slow"
        return await super().handle_DATA(server, session, envelope)


class HungServer:
    """A TCP server on 127.0.0.1 that accepts and reads but never answers."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HungServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers),
                             return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass


# -- IMAP -------------------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")


@dataclass
class _Stored:
    uid: int
    received: datetime
    data: bytes


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    idle_tag: bytes | None = None
    silent: bool = False
    out: list[bytes] = field(default_factory=list)

    def send(self, *lines: bytes) -> None:
        self.out += (line + b"\r\n" for line in lines)

    def flush(self) -> None:
        """One write per response, as a fast server (or TLS records) hands the client big
        reads: aioimaplib then parses thousands of lines in one go (#118)."""
        out, self.out = b"".join(self.out), []
        if out and not self.silent and not self.writer.is_closing():
            self.writer.write(out)


class FakeImap:
    """An IMAP4rev1 server on 127.0.0.1 with one folder, INBOX, and faults on demand."""

    def __init__(self, *, password: str = "sekret", uidvalidity: int = 1) -> None:
        self.password = password
        self.uidvalidity = uidvalidity
        self.messages: list[_Stored] = []
        self.sessions: list[_Session] = []
        self.logins = 0
        self.silence_at: bytes | None = None  # the next such command goes unanswered, for good
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeImap:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for session in self.sessions:
            session.writer.close()
        await asyncio.gather(*(s.writer.wait_closed() for s in self.sessions),
                             return_exceptions=True)
        await self.server.wait_closed()

    # -- what a test does ---------------------------------------------------------------------

    def append(self, data: bytes, received: datetime) -> int:
        """Deliver a message; clients in IDLE hear `* n EXISTS` (RFC 2177)."""
        uid = (self.messages[-1].uid if self.messages else 0) + 1
        self.messages.append(_Stored(uid, received, data))
        for session in self.sessions:
            if session.idle_tag is not None:
                session.send(f"* {len(self.messages)} EXISTS".encode())
                session.flush()
        return uid

    @property
    def idling(self) -> list[_Session]:
        return [s for s in self.sessions if s.idle_tag is not None and not s.silent
                and not s.writer.is_closing()]

    def bye_idlers(self) -> int:
        """Send `* BYE` to every client in IDLE and close its connection (RFC 3501 §7.1.5)."""
        idlers = self.idling
        for session in idlers:
            session.send(b"* BYE server shutting down")
            session.flush()
            session.writer.close()
        return len(idlers)

    def go_silent(self) -> int:
        """Every open connection stays open but is never answered again (a black hole)."""
        live = [s for s in self.sessions if not s.silent and not s.writer.is_closing()]
        for session in live:
            session.silent = True
        return len(live)

    # -- the protocol -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self.sessions.append(session)
        session.send(b"* OK [CAPABILITY IMAP4rev1 IDLE] fake ready")
        session.flush()
        try:
            while line := await reader.readline():
                if not session.silent:
                    self._command(session, line.rstrip(b"\r\n"))
                    session.flush()
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _command(self, session: _Session, line: bytes) -> None:
        if session.idle_tag is not None:
            if line.upper() == b"DONE":
                session.send(session.idle_tag + b" OK IDLE terminated")
                session.idle_tag = None
            return
        tag, _, rest = line.partition(b" ")
        name, _, args = rest.partition(b" ")
        name = name.upper()
        if name == b"UID":
            name, _, args = args.partition(b" ")
            name = b"UID " + name.upper()
        if self.silence_at is not None and name == self.silence_at:
            self.silence_at = None
            session.silent = True  # the command went out; nothing ever comes back
            return
        handler = {
            b"CAPABILITY": self._capability, b"LOGIN": self._login, b"SELECT": self._select,
            b"UID SEARCH": self._search, b"UID FETCH": self._fetch, b"IDLE": self._idle,
            b"NOOP": self._noop, b"LOGOUT": self._logout,
        }.get(name)
        if handler is None:
            session.send(tag + b" BAD unknown command")
            return
        handler(session, tag, args.decode())

    def _capability(self, session: _Session, tag: bytes, args: str) -> None:
        session.send(b"* CAPABILITY IMAP4rev1 IDLE", tag + b" OK CAPABILITY completed")

    def _login(self, session: _Session, tag: bytes, args: str) -> None:
        _user, _, quoted = args.partition(" ")
        password = quoted[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if password != self.password:
            session.send(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.")
            return
        self.logins += 1
        session.send(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] Logged in")

    def _select(self, session: _Session, tag: bytes, args: str) -> None:
        next_uid = (self.messages[-1].uid if self.messages else 0) + 1
        session.send(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
                     f"* {len(self.messages)} EXISTS".encode(), b"* 0 RECENT",
                     f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid".encode(),
                     f"* OK [UIDNEXT {next_uid}] Predicted next UID".encode(),
                     tag + b" OK [READ-WRITE] Select completed")

    def _uids(self, spec: str) -> list[int]:
        """The UIDs of a sequence set (`1,3:5,7:*`); `n:*` includes the highest (§6.4.8)."""
        highest = self.messages[-1].uid if self.messages else 0
        wanted: set[int] = set()
        for part in spec.split(","):
            match = _RANGE.match(part)
            if match is None:
                continue
            low, high = (highest if v == "*" else int(v) for v in
                         (match.group(1), match.group(2) or match.group(1)))
            low, high = min(low, high), max(low, high)
            wanted |= {m.uid for m in self.messages if low <= m.uid <= high}
        return sorted(wanted)

    def _search(self, session: _Session, tag: bytes, args: str) -> None:
        spec = args.rsplit(maxsplit=1)[-1]  # "UID n:*"
        uids = " ".join(str(u) for u in self._uids(spec))
        session.send(f"* SEARCH {uids}".rstrip().encode(), tag + b" OK Search completed")

    def _fetch(self, session: _Session, tag: bytes, args: str) -> None:
        spec, _, items = args.partition(" ")
        seqs = {m.uid: n for n, m in enumerate(self.messages, start=1)}
        for uid in self._uids(spec):
            message = self.messages[seqs[uid] - 1]
            meta = f"UID {uid} RFC822.SIZE {len(message.data)}"
            if "INTERNALDATE" in items:
                meta += f' INTERNALDATE "{message.received.strftime("%d-%b-%Y %H:%M:%S %z")}"'
            if "BODY.PEEK[" not in items:
                session.send(f"* {seqs[uid]} FETCH ({meta})".encode())
                continue
            body = message.data
            section = "BODY[]"
            if "BODY.PEEK[HEADER]" in items:
                body = body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                section = "BODY[HEADER]"
            session.send(f"* {seqs[uid]} FETCH ({meta} {section} {{{len(body)}}}".encode()
                         + b"\r\n" + body + b")")
        session.send(tag + b" OK Fetch completed")

    def _idle(self, session: _Session, tag: bytes, args: str) -> None:
        session.idle_tag = tag
        session.send(b"+ idling")

    def _noop(self, session: _Session, tag: bytes, args: str) -> None:
        session.send(tag + b" OK NOOP completed")

    def _logout(self, session: _Session, tag: bytes, args: str) -> None:
        session.send(b"* BYE Logging out", tag + b" OK Logout completed")
        session.flush()
        session.writer.close()


def bulk_append(port: int, user: str, password: str, messages: list[tuple[bytes, datetime]],
                folder: str = "INBOX") -> None:
    """APPEND many messages at once to a real server: LITERAL+ (RFC 7888), pipelined.

    imaplib waits for a continuation and a tagged reply per message (~300/s on Dovecot);
    with non-synchronising literals every APPEND goes out at once and the replies are read
    afterwards.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"* OK")
        stream.write(f'L LOGIN "{user}" "{password}"\r\n'.encode())
        stream.flush()
        while not (line := stream.readline()).startswith(b"L "):
            pass
        assert line.startswith(b"L OK"), line
        for n, (data, received) in enumerate(messages):
            date = imaplib.Time2Internaldate(received)
            stream.write(f"A{n} APPEND {folder} () {date} {{{len(data)}+}}\r\n".encode()
                         + data + b"\r\n")
        stream.flush()
        done = 0
        while done < len(messages):
            line = stream.readline()
            assert line, "the server closed the connection"
            if line.startswith(b"A"):
                assert b" OK " in line, line
                done += 1
        stream.write(b"Z LOGOUT\r\n")
        stream.flush()
