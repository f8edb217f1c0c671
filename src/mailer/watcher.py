"""The long-running loop: fetch new replies, understand them, record the outcome, answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
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
from mailer.i18n import _
from mailer.imap_client import Fetched, ImapAuthError, ImapError, ImapInbox
from mailer.models import (
    ANSWERS,
    DELIVERIES,
    INBOUND,
    MAILBOX,
    MESSAGES,
    META,
    DeliveryKind,
    Status,
    message_record,
    reading_file,
)
from mailer.rawfiles import RawFiles
from mailer.reading.classify import Kind
from mailer.reading.decide import answer_allowed
from mailer.reading.invited import ContactBook
from mailer.reading.understand import (
    Reading,
    answer_template,
    complete,
    complete_from_contact,
    glimpse,
    message_key,
    reading_json,
    stored_reading,
)
from mailer.reading.workers import Read, Readers, ReadFailure, failure_of
from mailer.reasons import Code, Reason
from mailer.render import Renderer
from mailer.report import plural
from mailer.respond import answer_doc, flush_outbox
from mailer.settings import Settings
from mailer.smtp_client import SmtpSession
from mailer.staff import review_queue
from mailer.store import Doc, Store
from mailer.trust import FREE_MAIL, review_reason, stored_part

log = logging.getLogger(__name__)

BATCH = 100  # messages recorded per journal line


@dataclass
class WatchReport:
    """What one pass over the inbox did."""

    new: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    answers_sent: int = 0
    answers_pending: int = 0
    review: int = 0  # messages waiting for a human after the pass (all of them, not only new)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        # Never silent (issue 13): a message the reader could not settle is said out loud.
        review = _("; {count} waiting for review (mailer review)").format(
            count=self.review) if self.review else ""
        return _("{messages} ({kinds}); answers sent {sent}, waiting {waiting}{review}").format(
            messages=plural(self.new, "new message", "new messages"), kinds=kinds,
            sent=self.answers_sent, waiting=self.answers_pending, review=review)


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
        self.renderer = Renderer(settings, now=clock.now())
        self.inbox: ImapInbox | None = None  # the current connection
        self.smtp = smtp or SmtpSession.from_settings(settings)
        self._new_inbox = inbox or partial(ImapInbox, settings.imap, settings.imap.password(),
                                           timeout=imap_timeout)
        self.batch = batch
        self.own = settings.own_addresses
        self.messages_dir = settings.storage / MESSAGES
        self.raw_files = RawFiles(self.messages_dir)
        contacts = read_contacts(settings.campaign.recipients).contacts
        self.ledger = Ledger(settings, store, clock=clock, contacts=contacts)
        self.invited = ContactBook(contacts, self.ledger.by_message_id, free_mail=FREE_MAIL)
        self.watermark = self._watermark()
        # Messages waiting for review, counted over every inbound record: once, then again
        # only after a pass that recorded something (while this watcher holds the state lock,
        # staff cannot resolve an item, so nothing else changes the count).
        self._review: int | None = None
        self.readers = readers or Readers(events=settings.events, own_addresses=self.own,
                                          authserv_id=settings.answers.trusted_authserv_id)

    def _watermark(self) -> datetime:
        """Nothing received before the first send (or the first start) is answered. At the
        server's precision: INTERNALDATE has whole seconds, so a reply in the same second as
        the first send is not taken for backlog (issue 16)."""
        sent = [d["at"] for d in self.store.iter(DELIVERIES)
                if d.get("kind") == DeliveryKind.INVITATION and d.get("status") == Status.SENT]
        if sent:
            return datetime.fromisoformat(min(sent)).replace(microsecond=0)
        first = self.store.get(META, "watcher_first_start")
        if first is None:
            first = {"at": self.clock.now().isoformat()}
            self.store.put_now(META, "watcher_first_start", first)
        return datetime.fromisoformat(first["at"]).replace(microsecond=0)

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
        await asyncio.to_thread(self.raw_files.abandon)  # written ahead, never claimed
        await self._flush_answers(report)
        if report.new or self._review is None:
            self._review = len(review_queue(self.store))
        report.review = self._review
        await self.store.fold_if_large()
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
        """Start reading `fetched` (in worker processes when there are many), and writing
        the new ones to disk meanwhile (they are renamed into place when their batch is kept)."""
        self.raw_files.write_ahead(
            (self._raw_path(key), f.data) for f in fetched
            if not self.store.has(INBOUND, key := message_key(f.data)))
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
            await asyncio.to_thread(self.raw_files.abandon)
            raise
        finally:
            self.raw_files.discard()
        self.store.stage(MAILBOX, self.settings.imap.folder,
                         {"uidvalidity": inbox.uidvalidity, "last_uid": batch[-1][0]})
        await self.store.commit()  # and the batch's receipts, logged once it is on disk
        await self.store.fold_if_large()  # a service that runs for weeks folds as it goes
        for item in fetched:
            await self._file_away(inbox, item)
        return upcoming, upcoming_reading

    def _stage_receipt(self, **details: Any) -> None:
        """A "receive" audit entry, committed with the batch and logged after. Logged while
        reading, a batch read again after a crash before its commit was logged as received
        twice (bench/chaos.py); logged after the commit, a kill in between lost it (issue 12)."""
        if self.audit:
            self.store.stage_audit(self.audit.entry("receive", at=self.clock.now(), **details))

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
            # What `_ingest` staged before it failed (an answer, a registration) is dropped:
            # the message goes to review with nothing of it half-recorded.
            with self.store.savepoint():
                return self._ingest(item, read, uidvalidity)
        except StateError:
            raise  # the state, not this message, is at fault
        except Exception as err:  # a bug met by this message alone
            return self._ingest_failure(item, failure_of(read.key, read.received, err),
                                        uidvalidity)

    def _ingest_failure(self, item: Fetched, failure: ReadFailure,
                        uidvalidity: int) -> str | None:
        """Stage a message the reader failed on: raw, not answered, up for review."""
        if self.store.has(INBOUND, failure.key):
            return None
        self.raw_files.add(self._raw_path(failure.key), item.data)
        sender, subject, message_id = glimpse(item.data)
        reason = failure.reason.to_doc()
        self.store.stage(INBOUND, failure.key, {
            "uid": item.uid, "uidvalidity": uidvalidity, "size": item.size,
            "headers_only": item.headers_only, "received": failure.received.isoformat(),
            "sender": sender, "subject": subject, "message_id": message_id,
            "kind": str(Kind.OTHER), "reason": reason, "automated": None,
            "path": message_record(failure.key),
            "invitation": None, "read": {"registrants": [], "errors": [], "bounced": []},
            "review": reason, "processed": self.clock.now().isoformat(), "answer": None,
            "refusal": None, "backlog": failure.received < self.watermark, "effects": {},
        })
        self._stage_receipt(message=failure.key, uid=item.uid, sender=sender,
                            kind=str(Kind.OTHER), answer=None, refusal=None)
        log.warning("uid %d %s (message %s): %s, for review%s", item.uid,
                    message_id or "(no id)", failure.key[:12], failure.reason,
                    f"\n{failure.detail}" if failure.detail else "")
        return str(Kind.OTHER)

    def _raw_path(self, key: str) -> Path:
        """Where a message is kept raw: the file written ahead is the one its batch keeps."""
        return self.settings.storage / message_record(key)

    def _ingest(self, item: Fetched, read: Reading, uidvalidity: int) -> str | None:
        """Stage one message (`read`: what it says); None when it was processed before."""
        if self.store.has(INBOUND, read.key):
            return None
        # What needs the state is done here: the contact list completes an invited contact's
        # reply (issue 13), a later reply an incomplete form.
        reading = complete(complete_from_contact(read, self.invited.match, self.settings.events),
                           self.ledger.previous_values, self.settings.events)
        raw = self._raw_path(reading.key)
        self.raw_files.add(raw, item.data)
        self.raw_files.add(reading_file(raw), stored_reading(reading), durable=False)
        backlog = reading.received < self.watermark
        # A forged sender could cancel or unsubscribe someone else: a human decides.
        effects = {} if backlog or reading.forged else self.ledger.apply(reading)
        answer, refusal, held = self._stage_answer(reading, effects, backlog=backlog)
        review = review_reason(reading, headers_only=item.headers_only, backlog=backlog,
                               effects=effects, held=held)
        self.store.stage(INBOUND, reading.key, self._inbound_doc(
            reading, item, uidvalidity, answer=str(answer) if answer else None,
            refusal=_doc(refusal), backlog=backlog, effects=effects, review=_doc(review)))
        self._stage_receipt(message=reading.key, uid=item.uid, sender=reading.sender,
                            kind=str(reading.kind), answer=str(answer) if answer else None,
                            refusal=_doc(refusal))
        # The message's key, not the sender: logs outlive `forget` (issue 12).
        log.info("uid %d %s (message %s): %s%s", item.uid, reading.message_id or "(no id)",
                 reading.key[:12], reading.kind,
                 f", answer {answer}{' (held for review)' if held else ''}" if answer else "")
        return str(reading.kind)

    def _stage_answer(self, reading: Reading, effects: dict[str, Any], *,
                      backlog: bool) -> tuple[Any, Reason | None, Reason | None]:
        """Stage the answer due, covering what was stored; returns it (or None and why not)
        and, for an unverified sender, why it is held for review (issue 12)."""
        answered = stored_part(reading, effects, self.settings.events)
        template = answer_template(answered)
        if template is None:
            return None, None, None
        refusal = answer_allowed(
            sender=reading.sender, own_addresses=self.own, automated=bool(reading.automated),
            received=reading.received, watermark=self.watermark,
            answers_today=self.ledger.answers_today(reading.sender),
            max_per_day=self.settings.answers.max_per_sender_per_day, forged=reading.forged,
            sender_valid=reading.sender_valid,
        ) or (Reason.of(Code.NOTHING_STORED) if reading.registrants and not answered.registrants
              else None)
        if refusal:
            log.info("no answer to message %s: %s", reading.key[:12], refusal)
            return None, refusal, None
        held = self.ledger.unverified(reading)
        doc = answer_doc(answered, template, now=self.clock.now(), domain=self.renderer.domain,
                         cancelled=effects.get("cancelled", ()), held=held,
                         nothing_cancelled=(reading.kind is Kind.CANCELLATION
                                            and not effects.get("registrations")))
        self.store.stage(ANSWERS, reading.key, doc)
        self.ledger.index.add_answer(doc)
        return template, None, held

    def _inbound_doc(self, reading: Reading, item: Fetched, uidvalidity: int,
                     **extra: Any) -> Doc:
        return {
            "uid": item.uid, "uidvalidity": uidvalidity, "size": item.size,
            "headers_only": item.headers_only, "received": reading.received.isoformat(),
            "sender": reading.sender, "subject": reading.subject,
            "message_id": reading.message_id, "kind": str(reading.kind),
            "reason": reading.classification.reason.to_doc(), "automated": _doc(reading.automated),
            "path": message_record(reading.key),
            "invitation": self.ledger.match_invitation(reading),
            "read": _what_was_read(reading),
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
        delay, review = 1.0, 0
        while not stop.is_set():
            try:
                report = await self.process_once()
                if report.new or report.answers_sent or report.review != review:
                    log.info("%s", report.summary())
                review = report.review
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
        await asyncio.to_thread(self.raw_files.close)
        await self.drop_connection()
        await self.smtp.close()


def _what_was_read(reading: Reading) -> dict[str, Any]:
    """What the reader understood, kept with the message for staff (`show`, the web view)."""
    data = reading_json(reading, None)
    return {"registrants": data["registrants"], "errors": data["errors"],
            "bounced": data["bounced"]}


def _doc(reason: Reason | None) -> dict[str, str] | None:
    """A reason as the state stores it."""
    return None if reason is None else reason.to_doc()
