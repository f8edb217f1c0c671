"""The long-running loop: fetch new replies, understand them, record the outcome, answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.audit import AuditLog
from mailer.campaign import DELIVERIES, META, SUPPRESSIONS
from mailer.classify import Kind
from mailer.clock import Clock
from mailer.contacts import Contact, read_contacts
from mailer.decide import answer_allowed
from mailer.imap_client import Fetched, ImapAuthError, ImapError, ImapInbox
from mailer.render import Renderer
from mailer.respond import ANSWERS, AnswerStatus, answer_doc, flush_outbox
from mailer.settings import Settings
from mailer.smtp_client import SmtpSession
from mailer.store import Doc, Store, atomic_write, fsync_dir
from mailer.understand import Reading, answer_template, understand

log = logging.getLogger(__name__)

INBOUND = "inbound"
REGISTRATIONS = "registrations"
MAILBOX = "mailbox"
BATCH = 100


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


@dataclass
class _Index:
    """Per-message look-ups kept in memory, so their cost does not grow with the state."""

    incomplete_by_sender: dict[str, str] = field(default_factory=dict)
    incomplete_by_message: dict[str, str] = field(default_factory=dict)
    registrations_by_sender: dict[str, set[str]] = field(default_factory=dict)
    answer_inbound: dict[str, str] = field(default_factory=dict)  # answer Message-ID → inbound
    answers_by_sender: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, store: Store) -> _Index:
        index = cls()
        for doc in store.all(REGISTRATIONS):
            index.add_registration(doc)
        for doc in store.all(ANSWERS):
            index.add_answer(doc)
        return index

    def add_registration(self, doc: Doc) -> None:
        sender, key = doc.get("sender", ""), doc["key"]
        self.registrations_by_sender.setdefault(sender, set()).add(key)
        if doc.get("status") == "incomplete":
            self.incomplete_by_sender[sender] = key
            for message in doc.get("messages", []):
                self.incomplete_by_message[message] = key
        elif self.incomplete_by_sender.get(sender) == key:
            del self.incomplete_by_sender[sender]

    def add_answer(self, doc: Doc) -> None:
        self.answer_inbound[doc["message_id"]] = doc["inbound"]
        self.answers_by_sender.setdefault(doc["to"], []).append(doc["key"])


class Watcher:
    """Reads the inbox into the store and answers; `process_once` is one complete pass."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.audit = audit
        self.renderer = Renderer(settings, now=clock.now())
        self.inbox: ImapInbox | None = None
        self.smtp = SmtpSession(settings.smtp, envelope_from=settings.envelope_from,
                                password=settings.smtp.password())
        self._imap_password = settings.imap.password()
        campaign = settings.campaign
        self.own = {a.lower() for a in (campaign.reply_to, campaign.sender_address,
                                        settings.envelope_from) if a}
        self.messages_dir = settings.storage / "messages"
        self.contacts = _index_contacts(read_contacts(campaign.recipients).contacts)
        self.by_message_id = {d["message_id"]: d for d in store.all(DELIVERIES)}
        self.index = _Index.build(store)
        self.watermark = self._watermark()

    def _watermark(self) -> datetime:
        """SPEC §7: nothing received before the first send (or the first start) is answered."""
        sent = [d["at"] for d in self.store.all(DELIVERIES)
                if d.get("kind") == "invitation" and d.get("status") == "sent"]
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
        for start in range(0, len(listed), BATCH):
            await self._process_batch(inbox, listed[start:start + BATCH], report)
        await self._flush_answers(report)
        if self.audit:
            self.audit.flush()
        return report

    async def _process_batch(self, inbox: ImapInbox, batch: Sequence[tuple[int, int]],
                             report: WatchReport) -> None:
        limit = self.settings.imap.max_message_bytes
        small = [uid for uid, size in batch if size <= limit]
        large = [uid for uid, size in batch if size > limit]
        fetched = await inbox.fetch(small)
        fetched += await inbox.fetch(large, headers_only=True)
        for item in sorted(fetched, key=lambda f: f.uid):
            kind = self._ingest(item, inbox.uidvalidity)
            if kind is not None:
                report.new += 1
                report.kinds[kind] += 1
        fsync_dir(self.messages_dir)
        self.store.stage(MAILBOX, self.settings.imap.folder,
                         {"uidvalidity": inbox.uidvalidity, "last_uid": batch[-1][0]})
        await self.store.commit()
        for item in fetched:
            await self._file_away(inbox, item)

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

    def _ingest(self, item: Fetched, uidvalidity: int) -> str | None:
        """Understand and stage one message; None when it was processed before."""
        reading = understand(item.data, received=item.received, events=self.settings.events,
                             own_addresses=self.own, previous=self._previous_values,
                             authserv_id=self.settings.answers.trusted_authserv_id)
        if self.store.get(INBOUND, reading.key):
            return None
        path = self.messages_dir / f"{reading.key}.eml"
        self.messages_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, item.data, sync_dir=False)
        backlog = reading.received < self.watermark
        answer, refusal = self._answer_for(reading, backlog=backlog)
        # A forged sender could cancel or unsubscribe someone else: a human decides.
        effects = {} if backlog or reading.forged else self._apply(reading)
        if answer is not None:
            doc = answer_doc(reading, answer, now=self.clock.now(), domain=self.renderer.domain,
                             cancelled=effects.get("cancelled", ()))
            self.store.stage(ANSWERS, reading.key, doc)
            self.index.add_answer(doc)
        self.store.stage(INBOUND, reading.key, self._inbound_doc(
            reading, item, uidvalidity, path, answer=str(answer) if answer else None,
            refusal=refusal, backlog=backlog, effects=effects))
        if self.audit:
            self.audit.record("receive", at=self.clock.now(), message=reading.key,
                              uid=item.uid, sender=reading.sender, kind=str(reading.kind),
                              answer=str(answer) if answer else None, refusal=refusal)
        log.info("uid %d %s from %s: %s%s", item.uid, reading.message_id or "(no id)",
                 reading.sender, reading.kind, f", answer {answer}" if answer else "")
        return str(reading.kind)

    def _previous_values(self, sender: str, refs: tuple[str, ...]) -> dict[str, str] | None:
        """The incomplete form this reply may complete: same thread, else same sender."""
        index = self.index
        key = next((index.incomplete_by_message[index.answer_inbound[r]] for r in refs
                    if index.answer_inbound.get(r) in index.incomplete_by_message), None)
        key = key or index.incomplete_by_sender.get(sender)
        doc = self.store.get(REGISTRATIONS, key) if key else None
        if doc is None or doc.get("status") != "incomplete":
            return None
        return dict(doc.get("values", {}))

    def _answer_for(self, reading: Reading, *, backlog: bool) -> tuple[Any, str | None]:
        template = answer_template(reading)
        if template is None:
            return None, None
        refusal = answer_allowed(
            sender=reading.sender, own_addresses=self.own, automated=bool(reading.automated),
            received=reading.received, watermark=self.watermark,
            answers_today=self._answers_today(reading.sender),
            max_per_day=self.settings.answers.max_per_sender_per_day, forged=reading.forged,
        )
        if refusal:
            log.info("no answer to %s: %s", reading.sender, refusal)
            return None, refusal
        return template, None

    def _answers_today(self, sender: str) -> int:
        zone = self.settings.campaign.timezone
        today = self.clock.now().astimezone(zone).date()
        answers = (self.store.get(ANSWERS, k) for k in self.index.answers_by_sender.get(sender, []))
        return sum(1 for a in answers
                   if a and a["status"] != AnswerStatus.FAILED
                   and datetime.fromisoformat(a["created"]).astimezone(zone).date() == today)

    def _apply(self, reading: Reading) -> dict[str, Any]:
        """The message's effect on registrations and suppressions (staged, not yet committed)."""
        if reading.kind is Kind.REGISTRATION:
            return {"registrations": self._register(reading)}
        if reading.kind is Kind.UNSUBSCRIBE:
            self._suppress(reading.sender, "unsubscribed", reading.key)
            return {"suppressed": [reading.sender]}
        if reading.kind is Kind.CANCELLATION:
            return self._cancel(reading)
        if reading.kind is Kind.BOUNCE:
            for address in reading.classification.bounced:
                self._suppress(address, "bounced", reading.key)
                self._mark_bounced(address, reading.key)
            return {"suppressed": list(reading.classification.bounced)}
        return {}

    def _register(self, reading: Reading) -> list[str]:
        keys = []
        assert reading.decision is not None
        for registrant, statuses in zip(reading.registrants, reading.decision.statuses,
                                        strict=True):
            key = (registrant.email or reading.sender).lower()
            if self._over_registrant_limit(reading.sender, key):
                continue
            old = self.store.get(REGISTRATIONS, key)
            events = dict(old["events"]) if old and old.get("status") != "cancelled" else {}
            events.update({e: str(s) for e, s in statuses.items()})
            doc: Doc = {
                "email": registrant.email, "name": registrant.name,
                "position": registrant.position, "city": registrant.city,
                "phone": registrant.phone, "events": events,
                "requested": list(registrant.events),
                "status": "complete" if registrant.complete else "incomplete",
                "problems": [{"field": p.field, "message": p.message}
                             for p in registrant.problems],
                "warnings": [p.message for p in registrant.warnings],
                "values": _values_of(registrant), "sender": reading.sender,
                "received": reading.received.isoformat(),
                "messages": [*(old or {}).get("messages", []), reading.key],
                "invitation": self._match_invitation(reading),
                "history": _history(old), "updated": self.clock.now().isoformat(),
            }
            self._stage_registration(key, doc)
            self._supersede(reading.sender, key)
            keys.append(key)
        return keys

    def _over_registrant_limit(self, sender: str, key: str) -> bool:
        """A flood of registrations from one address stops at a limit (for a human to see)."""
        known = self.index.registrations_by_sender.get(sender, set())
        limit = self.settings.answers.max_registrants_per_sender
        if key in known or len(known) < limit:
            return False
        log.warning("%s has registered %d people already: %s not registered", sender,
                    len(known), key)
        return True

    def _supersede(self, sender: str, key: str) -> None:
        """An incomplete form kept under the sender's address, now completed under another."""
        old = self.store.get(REGISTRATIONS, sender)
        if sender != key and old and old.get("status") == "incomplete":
            self._stage_registration(sender, {**old, "status": "superseded",
                                              "superseded_by": key})

    def _stage_registration(self, key: str, doc: Doc) -> None:
        self.store.stage(REGISTRATIONS, key, doc)
        self.index.add_registration(doc)

    def _cancel(self, reading: Reading) -> dict[str, Any]:
        cancelled: list[str] = []
        keys = []
        candidates = {reading.sender, *self.index.registrations_by_sender.get(reading.sender, ())}
        for key in sorted(candidates):
            doc = self.store.get(REGISTRATIONS, key)
            if doc and doc.get("status") in ("complete", "incomplete"):
                cancelled += [e for e in doc["events"] if e not in cancelled]
                self._stage_registration(doc["key"], {
                    **doc, "status": "cancelled", "history": _history(doc),
                    "messages": [*doc.get("messages", []), reading.key],
                    "updated": self.clock.now().isoformat()})
                keys.append(doc["key"])
        return {"cancelled": cancelled, "registrations": keys}

    def _suppress(self, address: str, reason: str, message_key: str) -> None:
        self.store.stage(SUPPRESSIONS, address.lower(), {
            "reason": reason, "message": message_key, "at": self.clock.now().isoformat()})

    def _mark_bounced(self, address: str, message_key: str) -> None:
        delivery = self.store.get(DELIVERIES, f"invitation:{address.lower()}")
        if delivery:
            self.store.stage(DELIVERIES, delivery["key"], {**delivery, "bounced": message_key})

    def _match_invitation(self, reading: Reading) -> dict[str, Any] | None:
        """SPEC §7: our Message-ID in the thread → that contact; else the address; else domain."""
        for ref in reading.refs:
            if ref in self.by_message_id:
                return _invited(self.contacts.get(self.by_message_id[ref]["contact"]),
                                "message-id")
        if reading.sender in self.contacts:
            return _invited(self.contacts[reading.sender], "address")
        domain = reading.sender.rpartition("@")[2]
        return _invited(self.contacts.get(f"@{domain}"), "domain") if domain else None

    def _inbound_doc(self, reading: Reading, item: Fetched, uidvalidity: int, path: Path,
                     **extra: Any) -> Doc:
        return {
            "uid": item.uid, "uidvalidity": uidvalidity, "size": item.size,
            "headers_only": item.headers_only, "received": reading.received.isoformat(),
            "sender": reading.sender, "subject": reading.subject,
            "message_id": reading.message_id, "kind": str(reading.kind),
            "reason": reading.classification.reason, "automated": reading.automated,
            "path": str(path), "invitation": self._match_invitation(reading),
            "review": _needs_review(reading, item, backlog=extra["backlog"],
                                    registered=_registered_count(extra["effects"])),
            "processed": self.clock.now().isoformat(), **extra,
        }

    # -- connection and loop -----------------------------------------------------------------

    async def _connect(self) -> ImapInbox:
        if self.inbox is None or self.inbox.client is None:
            inbox = ImapInbox(self.settings.imap, self._imap_password)
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
        await self.drop_connection()
        await self.smtp.close()


def _registered_count(effects: dict[str, Any]) -> int | None:
    keys = effects.get("registrations")
    return None if keys is None else len(keys)


def _values_of(registrant: Any) -> dict[str, str]:
    fields = ("name", "position", "city", "email", "phone")
    values = {f: getattr(registrant, f) or "" for f in fields}
    values["event"] = ", ".join(registrant.events)
    return values


def _history(old: Doc | None) -> list[Doc]:
    """Earlier versions of a registration, newest last (SPEC §7: history kept)."""
    if not old:
        return []
    return [*old.get("history", []), {k: v for k, v in old.items() if k != "history"}]


def _index_contacts(contacts: Sequence[Contact]) -> dict[str, Contact]:
    """Contacts by address, and the first contact of each domain under '@domain'."""
    index: dict[str, Contact] = {}
    for contact in contacts:
        index.setdefault(contact.key, contact)
        index.setdefault("@" + contact.key.rpartition("@")[2], contact)
    return index


def _invited(contact: Contact | None, by: str) -> dict[str, Any] | None:
    if contact is None:
        return None
    return {"contact": contact.key, "city": contact.fields.get("miasto", ""), "by": by}


def _needs_review(reading: Reading, item: Fetched, *, backlog: bool,
                  registered: int | None = None) -> str | None:
    """Why a human should look at this message, or None (an incomplete form is not such a
    case: the official is asked to correct it)."""
    reasons = [
        (item.headers_only, "over-size: kept as headers only"),
        (backlog, "received before the campaign started: not answered"),
        (bool(reading.forged), f"sender not authenticated ({reading.forged}): nothing applied"),
        (registered is not None and registered < len(reading.registrants),
         "over the limit of registrants per sender: not all registered"),
        (reading.kind is Kind.OTHER, "not understood"),
    ]
    return next((text for applies, text in reasons if applies), None)
