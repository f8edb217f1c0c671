"""Thin aioimaplib wrapper: login, select, list and fetch by UID, IDLE raced against a lost link.

Known traps of aioimaplib 2.0.3 (#58, #110, #118, recipes/libraries.md): after BYE or a
dropped socket `idle_start`/`wait_server_push` can hang until their own timeout, and
`idle_done` writes to a dead socket; its parser rescans the whole FETCH response on every
line, so large batches get slow. Hence: a timeout on every call, the connection-lost
callback raced against every wait, small fetch batches, and a client that is thrown away
(never repaired) on any trouble.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aioimaplib

from mailer.errors import MailerError, connection_problem
from mailer.settings import ImapSettings

log = logging.getLogger(__name__)


class _HideLoginPassword(logging.Filter):
    """aioimaplib logs every command it sends at DEBUG and masks the password only as typed;
    one holding `"` or `\\` goes out escaped (an RFC 3501 quoted string) and was logged in
    clear by `-vv`. Everything after the user name of a LOGIN is cut from the record."""

    _LOGIN = re.compile(r"^(Sending : b'\S+ LOGIN \S+ ).*", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if " LOGIN " in text:
            record.msg, record.args = self._LOGIN.sub(r"\1***'", text), None
        return True


logging.getLogger("aioimaplib.aioimaplib").addFilter(_HideLoginPassword())

T = TypeVar("T")
# UIDs per FETCH. aioimaplib rescans the whole response on every line it receives, so its
# cost per message grows with the batch: ~2,400 msg/s at 1,000, ~11,000 at 100; with replies
# of ~8 KB here, 25 costs a third less CPU than 100 and no more wall time.
FETCH_BATCH = 25
LIST_BATCH = 100  # UIDs per size listing: aioimaplib's cost per line grows with the response
# RFC 2177: clients should re-issue IDLE at least every 29 minutes; renew well inside it.
IDLE_RENEW_SECONDS = 9 * 60

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_SEARCH_PREFIX = re.compile(rb"^(?:\* )?SEARCH\b")


class ImapError(MailerError):
    """The IMAP server could not be used right now (network, BYE, timeout, NO/BAD reply)."""


class ImapAuthError(ImapError):
    """The server refused our login: waiting will not help."""


@dataclass(frozen=True)
class Fetched:
    """One message as fetched: its UID, the server's arrival time, and the bytes."""

    uid: int
    received: datetime
    size: int
    data: bytes
    headers_only: bool = False


def parse_internaldate(value: bytes) -> datetime:
    """`20-Oct-2020 10:00:00 +0000` (RFC 3501 date-time) → aware datetime."""
    return datetime.strptime(value.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")


def parse_fetch(lines: Sequence[Any]) -> list[tuple[dict[str, Any], bytes | None]]:
    """Pair each `* n FETCH (…)` line with the literal that follows it, if any."""
    items: list[tuple[dict[str, Any], bytes | None]] = []
    for line in lines:
        if isinstance(line, bytearray):
            if items and items[-1][1] is None:
                items[-1] = (items[-1][0], bytes(line))
            continue
        if b" FETCH " not in line:
            continue  # unsolicited EXISTS/EXPUNGE/FLAGS lines may be interleaved
        uid = _UID.search(line)
        if uid is None:
            continue
        meta: dict[str, Any] = {"uid": int(uid.group(1))}
        if size := _SIZE.search(line):
            meta["size"] = int(size.group(1))
        if date := _DATE.search(line):
            meta["received"] = parse_internaldate(date.group(1))
        items.append((meta, None))
    return items


def _search_uids(lines: Sequence[Any]) -> list[int]:
    """The numbers of `* SEARCH n n …` (aioimaplib hands over `n n …`); other lines skipped."""
    found: list[int] = []
    for line in lines:
        if not isinstance(line, bytes):
            continue
        words = _SEARCH_PREFIX.sub(b"", line).split()
        if words and all(word.isdigit() for word in words):  # not "5001 EXISTS", not status
            found += (int(word) for word in words)
    return found


class ImapInbox:
    """One connection to the watched folder. Any failure raises ImapError: make a new one."""

    def __init__(self, settings: ImapSettings, password: str | None, *,
                 timeout: float = 30.0) -> None:
        self.settings = settings
        self._password = password
        # Seconds a command may go unanswered before the connection is given up: a silent
        # TCP drop (lost NAT or firewall state) sends no FIN, only timeouts notice it.
        self.timeout = timeout
        self.client: aioimaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self.lost: asyncio.Future[None] | None = None

    def __repr__(self) -> str:  # never the password
        return f"ImapInbox({self.settings.username}@{self.settings.host}:{self.settings.port})"

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def connect(self) -> None:
        """Connect, log in and select the folder; learns UIDVALIDITY."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()

        def on_lost(exc: Exception | None) -> None:
            if self.lost is not None and not self.lost.done():
                self.lost.set_result(None)

        context = ssl.create_default_context() if s.security == "tls" else None
        try:
            if context is not None:
                self.client = aioimaplib.IMAP4_SSL(host=s.host, port=s.port, timeout=self.timeout,
                                                   conn_lost_cb=on_lost, ssl_context=context)
            else:
                self.client = aioimaplib.IMAP4(host=s.host, port=s.port, timeout=self.timeout,
                                               conn_lost_cb=on_lost)
            await self._guard(self.client.wait_hello_from_server(), "connect")
        except ImapError as err:
            if not isinstance(err.__cause__, OSError):
                raise
            raise self._unreachable(err.__cause__) from err.__cause__
        except OSError as err:  # ssl.SSLError is one
            raise self._unreachable(err) from err
        await self._login()
        await self._select()

    def _unreachable(self, err: OSError) -> ImapError:
        """The server cannot be reached (refused, unknown host, TLS): what, and where to look."""
        s = self.settings
        return ImapError(
            f"cannot connect to IMAP {self.where}: {connection_problem(err)}",
            hint=f"is the IMAP server running, and are [imap] host, port and security right "
                 f"(now {s.host}, {s.port}, {s.security})? `mailer doctor` checks them")

    async def _login(self) -> None:
        assert self.client is not None
        s = self.settings
        response = await self._guard(self.client.login(s.username, self._password or ""),
                                     "login")
        if response.result != "OK":
            raise ImapAuthError(
                f"{self.where} refused the login of {s.username!r}: {_text(response)}",
                hint=f"check [imap] username and the password in ${s.password_env}",
            )

    async def _select(self) -> None:
        assert self.client is not None
        # examine() leaves aioimaplib unable to UID FETCH (recipes): always select().
        response = await self._guard(self.client.select(self.settings.folder), "select")
        if response.result != "OK":
            raise ImapError(f"{self.where}: cannot open folder {self.settings.folder!r}: "
                            f"{_text(response)}")
        for line in response.lines:
            if isinstance(line, bytes) and (match := _UIDVALIDITY.search(line)):
                self.uidvalidity = int(match.group(1))

    @property
    def has_idle(self) -> bool:
        return self.client is not None and self.client.has_capability("IDLE")

    async def _guard(self, call: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Await `call` with a timeout (default twice the command timeout: a FETCH may take
        that long while data keeps coming), failing at once if the connection is lost."""
        timeout = 2 * self.timeout if timeout is None else timeout
        task = asyncio.ensure_future(call)
        lost = self.lost
        waiters: list[asyncio.Future[Any]] = [task] + ([lost] if lost is not None else [])
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            try:
                return task.result()
            except (aioimaplib.Abort, aioimaplib.CommandTimeout, OSError,
                    TimeoutError) as err:
                raise ImapError(f"{self.where}: {what} failed: {err!r}") from err
        task.cancel()
        reason = "connection lost" if lost is not None and lost.done() else "timed out"
        raise ImapError(f"{self.where}: {what}: {reason}")

    async def new_uids(self, after: int) -> list[tuple[int, int]]:
        """(uid, size) of every message with a UID above `after`, in UID order."""
        assert self.client is not None
        # UID SEARCH answers in one line; sizes are then fetched LIST_BATCH UIDs at a time.
        # One `UID FETCH n:* (UID RFC822.SIZE)` would do, but aioimaplib recurses once per
        # response line found in a read: ~1,000 new messages overflow the recursion limit
        # and the connection is dropped, on every retry.
        response = await self._guard(
            self.client.uid_search(f"UID {after + 1}:*", charset=None), "list")
        self._check(response, "list")
        # "n:*" also matches the highest message when n is above it (RFC 3501 §6.4.8).
        uids = sorted({uid for uid in _search_uids(response.lines) if uid > after})
        found: dict[int, int] = {}
        for start in range(0, len(uids), LIST_BATCH):
            batch = ",".join(str(u) for u in uids[start:start + LIST_BATCH])
            response = await self._guard(
                self.client.uid("fetch", batch, "(UID RFC822.SIZE)"), "list")
            self._check(response, "list")
            found.update((m["uid"], m.get("size", 0)) for m, _ in parse_fetch(response.lines))
        return sorted((uid, size) for uid, size in found.items() if uid > after)

    async def fetch(self, uids: Sequence[int], *, headers_only: bool = False) -> list[Fetched]:
        """The messages (or only their headers) with INTERNALDATE, without setting \\Seen."""
        assert self.client is not None
        part = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        result: list[Fetched] = []
        for start in range(0, len(uids), FETCH_BATCH):
            batch = ",".join(str(u) for u in uids[start:start + FETCH_BATCH])
            response = await self._guard(
                self.client.uid("fetch", batch, f"(UID INTERNALDATE RFC822.SIZE {part})"),
                "fetch")
            self._check(response, "fetch")
            for meta, data in parse_fetch(response.lines):
                if data is None or "received" not in meta:
                    continue
                result.append(Fetched(meta["uid"], meta["received"], meta.get("size", 0),
                                      data, headers_only))
        return sorted(result, key=lambda f: f.uid)

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait for new mail: IDLE (renewed) when offered, else sleep. True if pushed."""
        assert self.client is not None
        if not self.has_idle:
            await self._guard(asyncio.sleep(timeout), "poll", timeout=timeout + 5)
            return False
        timeout = min(timeout, IDLE_RENEW_SECONDS)
        idle = await self._guard(self.client.idle_start(timeout=timeout + 30), "idle")
        try:
            push = await self._guard(self.client.wait_server_push(timeout=timeout), "idle",
                                     timeout=timeout + 5)
        except ImapError as err:
            if not isinstance(err.__cause__, TimeoutError):
                raise
            push = None  # no news within the period: renew the IDLE
        self.client.idle_done()
        await self._guard(idle, "idle done", timeout=min(10, self.timeout))
        return bool(push) and any(b"EXISTS" in line for line in push if isinstance(line, bytes))

    async def move(self, uid: int, folder: str) -> None:
        """Move one message to `folder` (UID MOVE, else COPY + \\Deleted + EXPUNGE)."""
        assert self.client is not None
        if self.client.has_capability("MOVE"):
            response = await self._guard(self.client.uid("move", str(uid), folder), "move")
            self._check(response, "move")
            return
        response = await self._guard(self.client.uid("copy", str(uid), folder), "copy")
        self._check(response, "copy")
        await self._guard(self.client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Deleted)"),
                          "store")
        await self._guard(self.client.expunge(), "expunge")

    async def append(self, data: bytes, when: datetime) -> None:
        """APPEND `data` to the watched folder, arriving at `when` (its INTERNALDATE)."""
        assert self.client is not None
        response = await self._guard(self.client.append(data, mailbox=self.settings.folder,
                                                        date=when), "append")
        self._check(response, "append")

    def _check(self, response: Any, what: str) -> None:
        if response.result != "OK":
            raise ImapError(f"{self.where}: {what} refused: {_text(response)}")

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self.lost is None or not self.lost.done():
                await asyncio.wait_for(client.logout(), timeout=min(5, self.timeout))
        except (aioimaplib.Abort, aioimaplib.CommandTimeout, OSError, TimeoutError) as err:
            log.debug("logout from %s failed: %r", self.where, err)
        finally:
            transport = getattr(client.protocol, "transport", None)
            if transport is not None:
                transport.close()


def _text(response: Any) -> str:
    return " ".join(line.decode(errors="replace") if isinstance(line, bytes | bytearray)
                    else str(line) for line in response.lines[-1:])


async def append_message(settings: ImapSettings, password: str | None, data: bytes,
                         when: datetime) -> None:
    """One message put into the folder `settings` watch, arriving at `when` (`mailer
    deliver`: a rehearsal's reply on the rehearsal's clock)."""
    inbox = ImapInbox(settings, password)
    try:
        await inbox.connect()
        await inbox.append(data, when)
    finally:
        await inbox.close()
