"""The long-running loop: fetch new replies, understand them, record the outcome, answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from mailer.audit import AuditLog
from mailer.clock import Clock
from mailer.contacts import read_contacts
from mailer.effects import Ledger
from mailer.errors import StateError
from mailer.imap_client import Fetched, ImapAuthError, ImapError, ImapInbox
from mailer.models import ANSWERS, DELIVERIES, INBOUND, MAILBOX, META, DeliveryKind, Status
from mailer.reading.classify import Kind
from mailer.reading.decide import answer_allowed
from mailer.reading.understand import Reading, answer_template, complete, glimpse, reading_json
from mailer.reading.workers import Read, Readers, ReadFailure
from mailer.reasons import Code, Reason
from mailer.render import Renderer
from mailer.respond import answer_doc, flush_outbox
from mailer.settings import Settings
from mailer.smtp_client import SmtpSession
from mailer.store import Doc, Store, fsync_dir, write_all

log = logging.getLogger(__name__)

BATCH = 100  # messages recorded per journal line
SYNC_THREADS = 16  # raw messages fsync'd at once at the end of a batch


@dataclass
class WatchReport:
    """What one pass over the inbox did."""

    new: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    answers_sent: int = 0
    answers_pending: int = 0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        return (f"{self.new} new messages ({kinds}); answers sent {self.answers_sent}, "
                f"waiting {self.answers_pending}")


class Watcher:
    """Reads the inbox into the store and answers; `process_once` is one complete pass."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock,
                 audit: AuditLog | None = None, inbox: Callable[[], ImapInbox] | None = None,
                 smtp: SmtpSession | None = None, readers: Readers | None = None,
                 batch: int = BATCH, imap_timeout: float = 30.0) -> None:
        """Each client defaults to the one `settings` describe; the watcher closes them.

        `inbox` makes a new IMAP connection, called again after one is lost (a lost
        `ImapInbox` is not reused); `imap_timeout` (seconds an IMAP command may go
        unanswered) is the default inbox's. `smtp` sends the answers, `readers` read the
        messages, `batch` messages are recorded per journal line.
        """
        self.settings = settings
        self.store = store
        self.clock = clock
        self.audit = audit
        # "receive" audit entries of the batch being read, written once it is committed.
        self._receipts: list[dict[str, Any]] = []
        self.renderer = Renderer(settings, now=clock.now())
        self.inbox: ImapInbox | None = None  # the current connection
        self.smtp = smtp or SmtpSession.from_settings(settings)
        self._new_inbox = inbox or partial(ImapInbox, settings.imap, settings.imap.password(),
                                           timeout=imap_timeout)
        self.batch = batch
        self.own = settings.own_addresses
        self.messages_dir = settings.storage / "messages"
        self.raw_files = _RawFiles(self.messages_dir)
        self.ledger = Ledger(settings, store, clock=clock,
                             contacts=read_contacts(settings.campaign.recipients).contacts)
        self.watermark = self._watermark()
        self.readers = readers or Readers(events=settings.events, own_addresses=self.own,
                                          authserv_id=settings.answers.trusted_authserv_id)

    def _watermark(self) -> datetime:
        """Nothing received before the first send (or the first start) is answered."""
        sent = [d["at"] for d in self.store.iter(DELIVERIES)
                if d.get("kind") == DeliveryKind.INVITATION and d.get("status") == Status.SENT]
        if sent:
            return datetime.fromisoformat(min(sent))
        first = self.store.get(META, "watcher_first_start")
        if first is None:
            first = {"at": self.clock.now().isoformat()}
            self.store.put_now(META, "watcher_first_start", first)
        return datetime.fromisoformat(first["at"])

    # -- the pass ----------------------------------------------------------------------------

    async def process_once(self) -> WatchReport:
        """Fetch what is new since the last pass, record it, then send the answers due."""
        report = WatchReport()
        inbox = await self._connect()
        pointer = self.store.get(MAILBOX, self.settings.imap.folder) or {}
        last = pointer.get("last_uid", 0) if pointer.get("uidvalidity") == inbox.uidvalidity \
            else 0
        if pointer and last == 0 and pointer.get("uidvalidity") != inbox.uidvalidity:
            log.warning("UIDVALIDITY of %s changed (%s → %s): reading the folder again; "
                        "messages already seen are recognised by content",
                        self.settings.imap.folder, pointer.get("uidvalidity"), inbox.uidvalidity)
        listed = await inbox.new_uids(last)
        size = self.batch
        batches = [listed[start:start + size] for start in range(0, len(listed), size)]
        fetched = await self._fetch(inbox, batches[0]) if batches else []
        reading = self._read(fetched)
        for index, batch in enumerate(batches):
            following = batches[index + 1] if index + 1 < len(batches) else ()
            fetched, reading = await self._process_batch(inbox, batch, fetched, reading,
                                                         following, report)
        await reading  # the last batch's "following" is empty: nothing is left running
        await self._flush_answers(report)
        if self.audit:
            self.audit.flush()
        return report

    async def _fetch(self, inbox: ImapInbox, batch: Sequence[tuple[int, int]]) -> list[Fetched]:
        limit = self.settings.imap.max_message_bytes
        small = [uid for uid, size in batch if size <= limit]
        large = [uid for uid, size in batch if size > limit]
        fetched = await inbox.fetch(small)
        fetched += await inbox.fetch(large, headers_only=True)
        return fetched

    def _read(self, fetched: list[Fetched]) -> asyncio.Future[list[Read]]:
        """Start reading `fetched` (in worker processes when there are many)."""
        return self.readers.start([(f.data, f.received) for f in fetched])

    async def _process_batch(
        self, inbox: ImapInbox, batch: Sequence[tuple[int, int]], fetched: list[Fetched],
        reading: asyncio.Future[list[Read]], following: Sequence[tuple[int, int]],
        report: WatchReport,
    ) -> tuple[list[Fetched], asyncio.Future[list[Read]]]:
        """Record `fetched` (the messages of `batch`, being read by `reading`) in one journal
        line; returns the messages of `following` and their reading, which runs meanwhile."""
        running = [reading]
        try:
            # The next batch is fetched and queued for the workers before this one is kept:
            # a worker never waits for the network or for the journal.
            upcoming = await self._fetch(inbox, following) if following else []
            upcoming_reading = self._read(upcoming)
            running.append(upcoming_reading)
            readings = await reading
            for item, read in sorted(zip(fetched, readings, strict=True),
                                     key=lambda pair: pair[0].uid):
                kind = self._ingest_isolated(item, read, inbox.uidvalidity)
                if kind is not None:
                    report.new += 1
                    report.kinds[kind] += 1
            # The batch's .eml files are on disk before the journal line that names them.
            await asyncio.to_thread(self.raw_files.sync)
        except BaseException:
            for future in running:  # nothing left reading for a pass that is over
                future.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        finally:
            self.raw_files.discard()
        self.store.stage(MAILBOX, self.settings.imap.folder,
                         {"uidvalidity": inbox.uidvalidity, "last_uid": batch[-1][0]})
        await self.store.commit()
        self._audit_receipts()
        for item in fetched:
            await self._file_away(inbox, item)
        return upcoming, upcoming_reading

    def _audit_receipts(self) -> None:
        """Log the receipts of a committed batch. Logged while reading, a batch read again
        after a crash before its commit was logged as received twice (bench/chaos.py)."""
        receipts, self._receipts = self._receipts, []
        if self.audit:
            for receipt in receipts:
                self.audit.record("receive", **receipt)

    async def _file_away(self, inbox: ImapInbox, item: Fetched) -> None:
        folder = self.settings.imap.processed_folder
        if folder:
            await inbox.move(item.uid, folder)

    async def _flush_answers(self, report: WatchReport) -> None:
        sent, pending = await flush_outbox(self.store, self.renderer, self.settings, self.smtp,
                                           now=self.clock.now, audit=self.audit)
        report.answers_sent += sent
        report.answers_pending += pending

    # -- one message -------------------------------------------------------------------------

    def _ingest_isolated(self, item: Fetched, read: Read, uidvalidity: int) -> str | None:
        """`_ingest`, or, when reading or recording one message fails, the message kept raw
        for review with the error: one message never stops the batch (issue 12)."""
        if isinstance(read, ReadFailure):
            return self._ingest_failure(item, read, uidvalidity)
        try:
            return self._ingest(item, read, uidvalidity)
        except StateError:
            raise  # the state, not this message, is at fault
        except Exception as err:  # a bug met by this message alone
            log.exception("uid %d: recording message %s failed; kept for review", item.uid,
                          read.key)
            failure = ReadFailure(read.key, read.received,
                                  f"{type(err).__name__}: {str(err)[:200]}".strip())
            return self._ingest_failure(item, failure, uidvalidity)

    def _ingest_failure(self, item: Fetched, failure: ReadFailure,
                        uidvalidity: int) -> str | None:
        """Stage a message the reader failed on: raw, not answered, up for review."""
        if self.store.has(INBOUND, failure.key):
            return None
        path = self.messages_dir / f"{failure.key}.eml"
        self.raw_files.add(path, item.data)
        sender, subject, message_id = glimpse(item.data)
        reason = Reason.of(Code.READ_FAILED, error=failure.error).to_doc()
        self.store.stage(INBOUND, failure.key, {
            "uid": item.uid, "uidvalidity": uidvalidity, "size": item.size,
            "headers_only": item.headers_only, "received": failure.received.isoformat(),
            "sender": sender, "subject": subject, "message_id": message_id,
            "kind": str(Kind.OTHER), "reason": reason, "automated": None, "path": str(path),
            "invitation": None, "read": {"registrants": [], "errors": [], "bounced": []},
            "review": reason, "processed": self.clock.now().isoformat(), "answer": None,
            "refusal": None, "backlog": failure.received < self.watermark, "effects": {},
        })
        if self.audit:
            self._receipts.append(dict(
                at=self.clock.now(), message=failure.key, uid=item.uid, sender=sender,
                kind=str(Kind.OTHER), answer=None, refusal=None))
        log.warning("uid %d %s from %s: not read (%s); kept for review", item.uid,
                    message_id or "(no id)", sender or "(unknown)", failure.error)
        return str(Kind.OTHER)

    def _ingest(self, item: Fetched, read: Reading, uidvalidity: int) -> str | None:
        """Stage one message (`read`: what it says); None when it was processed before."""
        if self.store.has(INBOUND, read.key):
            return None
        # A later reply may complete an incomplete form: that needs the state, so it is here.
        reading = complete(read, self.ledger.previous_values, self.settings.events)
        path = self.messages_dir / f"{reading.key}.eml"
        self.raw_files.add(path, item.data)
        backlog = reading.received < self.watermark
        answer, refusal = self._answer_for(reading, backlog=backlog)
        # A forged sender could cancel or unsubscribe someone else: a human decides.
        effects = {} if backlog or reading.forged else self.ledger.apply(reading)
        if answer is not None:
            doc = answer_doc(reading, answer, now=self.clock.now(), domain=self.renderer.domain,
                             cancelled=effects.get("cancelled", ()))
            self.store.stage(ANSWERS, reading.key, doc)
            self.ledger.index.add_answer(doc)
        self.store.stage(INBOUND, reading.key, self._inbound_doc(
            reading, item, uidvalidity, path, answer=str(answer) if answer else None,
            refusal=_doc(refusal), backlog=backlog, effects=effects))
        if self.audit:
            self._receipts.append(dict(
                at=self.clock.now(), message=reading.key, uid=item.uid, sender=reading.sender,
                kind=str(reading.kind), answer=str(answer) if answer else None,
                refusal=_doc(refusal)))
        log.info("uid %d %s from %s: %s%s", item.uid, reading.message_id or "(no id)",
                 reading.sender, reading.kind, f", answer {answer}" if answer else "")
        return str(reading.kind)

    def _answer_for(self, reading: Reading, *, backlog: bool) -> tuple[Any, Reason | None]:
        template = answer_template(reading)
        if template is None:
            return None, None
        refusal = answer_allowed(
            sender=reading.sender, own_addresses=self.own, automated=bool(reading.automated),
            received=reading.received, watermark=self.watermark,
            answers_today=self.ledger.answers_today(reading.sender),
            max_per_day=self.settings.answers.max_per_sender_per_day, forged=reading.forged,
        )
        if refusal:
            log.info("no answer to %s: %s", reading.sender, refusal)
            return None, refusal
        return template, None

    def _inbound_doc(self, reading: Reading, item: Fetched, uidvalidity: int, path: Path,
                     **extra: Any) -> Doc:
        return {
            "uid": item.uid, "uidvalidity": uidvalidity, "size": item.size,
            "headers_only": item.headers_only, "received": reading.received.isoformat(),
            "sender": reading.sender, "subject": reading.subject,
            "message_id": reading.message_id, "kind": str(reading.kind),
            "reason": reading.classification.reason.to_doc(), "automated": _doc(reading.automated),
            "path": str(path), "invitation": self.ledger.match_invitation(reading),
            "read": _what_was_read(reading),
            "review": _doc(_needs_review(reading, item, backlog=extra["backlog"],
                                         registered=_registered_count(extra["effects"]))),
            "processed": self.clock.now().isoformat(), **extra,
        }

    # -- connection and loop -----------------------------------------------------------------

    async def _connect(self) -> ImapInbox:
        if self.inbox is None or self.inbox.client is None:
            inbox = self._new_inbox()
            try:
                await inbox.connect()
            except BaseException:
                await inbox.close()
                raise
            self.inbox = inbox
            log.info("connected to %s, folder %s (UIDVALIDITY %d, IDLE %s)", inbox.where,
                     self.settings.imap.folder, inbox.uidvalidity,
                     "yes" if inbox.has_idle else "no")
        return self.inbox

    async def drop_connection(self) -> None:
        inbox, self.inbox = self.inbox, None
        if inbox is not None:
            await inbox.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Process, wait for news (IDLE or poll), repeat until `stop`; reconnect on trouble."""
        delay = 1.0
        while not stop.is_set():
            try:
                report = await self.process_once()
                if report.new or report.answers_sent:
                    log.info("%s", report.summary())
                delay = 1.0
                await self._wait(stop)
            except ImapAuthError:
                raise
            except (ImapError, OSError) as err:
                log.warning("inbox trouble: %s; reconnecting in %.0f s", err, delay)
                await self.drop_connection()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 60) * random.uniform(0.8, 1.2)

    async def _wait(self, stop: asyncio.Event) -> None:
        assert self.inbox is not None
        waiter = asyncio.ensure_future(self.inbox.wait_for_change(self.settings.imap.poll_seconds))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if waiter not in done:  # stopping in the middle of IDLE: drop, don't untangle
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            await self.drop_connection()
            return
        waiter.result()

    async def close(self) -> None:
        self.readers.close()
        await self.drop_connection()
        await self.smtp.close()


class _RawFiles:
    """The raw messages of one batch, made durable together before the batch is recorded.

    An fsync per message cost more than reading the message; here a batch's files are
    written and fsync'd by a pool of threads (concurrent fsyncs reach the disk together and
    share journal commits), renamed into place, and the folder is fsync'd once. A crash
    before that leaves at most temporary files and no journal line naming any of them: the
    batch is read again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending: list[tuple[Path, bytes]] = []

    def add(self, path: Path, data: bytes) -> None:
        if any(known == path for known, _ in self.pending):
            return  # a message whose recording failed half-way is added again (issue 12)
        self.pending.append((path, data))

    def sync(self) -> None:
        """Write and fsync every file (in parallel), rename each into place, fsync the folder."""
        if not self.pending:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with ThreadPoolExecutor(min(SYNC_THREADS, len(self.pending))) as pool:
                list(pool.map(_write_synced, self.pending))
            for path, _ in self.pending:
                os.replace(_temporary(path), path)
        except OSError as err:
            raise StateError(f"{self.folder}: cannot write the raw messages: {err}") from err
        self.pending = []
        fsync_dir(self.folder)

    def discard(self) -> None:
        """Forget what was not synced (the batch failed), temporary files included."""
        pending, self.pending = self.pending, []
        for path, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(_temporary(path))


def _temporary(path: Path) -> Path:
    # Names are content hashes and one process writes (the state lock): no clashes.
    return path.with_name(f".{path.name}.tmp")


def _write_synced(item: tuple[Path, bytes]) -> None:
    path, data = item
    fd = os.open(_temporary(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _registered_count(effects: dict[str, Any]) -> int | None:
    keys = effects.get("registrations")
    return None if keys is None else len(keys)


def _what_was_read(reading: Reading) -> dict[str, Any]:
    """What the reader understood, kept with the message for staff (`show`, the web view)."""
    data = reading_json(reading, None)
    return {"registrants": data["registrants"], "errors": data["errors"],
            "bounced": data["bounced"]}


def _needs_review(reading: Reading, item: Fetched, *, backlog: bool,
                  registered: int | None = None) -> Reason | None:
    """Why a human should look at this message, or None (an incomplete form is not such a
    case: the official is asked to correct it)."""
    if item.headers_only:
        return Reason.of(Code.OVERSIZE)
    if backlog:
        return Reason.of(Code.BACKLOG_REVIEW)
    if reading.forged:
        return Reason.of(Code.FORGED, verdict=reading.forged)
    if registered is not None and registered < len(reading.registrants):
        return Reason.of(Code.TOO_MANY_REGISTRANTS)
    if reading.kind is Kind.OTHER:
        return Reason.of(Code.NOT_UNDERSTOOD)
    return None


def _doc(reason: Reason | None) -> dict[str, str] | None:
    """A reason as the state stores it."""
    return None if reason is None else reason.to_doc()
