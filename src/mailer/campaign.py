"""Contacts → rendered messages → SMTP, resumable: every acceptance is recorded before the next."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailer.audit import AuditLog
from mailer.contacts import Contact
from mailer.models import DELIVERIES, META, SUPPRESSIONS, Delivery, DeliveryKind, Status
from mailer.render import OutgoingMessage, Renderer
from mailer.settings import Settings
from mailer.smtp_client import Attempt, Outcome, RateLimiter, SmtpSession
from mailer.store import Store

log = logging.getLogger(__name__)


def salt(store: Store) -> str:
    """A random salt kept in the state, so hashes cannot be matched against other lists."""
    doc = store.get(META, "salt")
    if doc is None:
        doc = {"value": secrets.token_hex(16)}
        store.stage(META, "salt", doc)
    return str(doc["value"])


def person_hash(store: Store, key: str) -> str:
    """What stands for an erased person (RODO): a salted hash of their address key."""
    digest = hashlib.sha256(f"{salt(store)}\0{key}".encode()).hexdigest()
    return f"erased:{digest[:32]}"


@dataclass
class SendReport:
    """What one run did; the CLI prints it and derives the exit code from it."""

    planned: int = 0
    sent: int = 0
    already: int = 0
    suppressed: int = 0
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    quota_pauses: int = 0
    stopped: str = ""

    @property
    def done(self) -> int:
        return self.sent + len(self.failed) + len(self.deferred)

    @property
    def pending(self) -> bool:
        return bool(self.deferred)


def delivery_key(kind: str, contact_key: str) -> str:
    """Deliveries are keyed per kind of message and contact: an invitation, a reminder …"""
    return f"{kind}:{contact_key}"


def plan(contacts: Sequence[Contact], store: Store, *, kind: str,
         report: SendReport, limit: int | None = None) -> list[Contact]:
    """The contacts still to mail: not yet sent or refused, not suppressed."""
    suppressed = store.keys(SUPPRESSIONS)
    erased = any(k.startswith("erased:") for k in suppressed)
    todo: list[Contact] = []
    for contact in contacts:
        done = store.get(DELIVERIES, delivery_key(kind, contact.key))
        if contact.key in suppressed or (erased and person_hash(store, contact.key) in suppressed):
            report.suppressed += 1
        elif done and done["status"] in (Status.SENT, Status.FAILED):
            report.already += 1
        else:
            todo.append(contact)
    if limit is not None:
        todo = todo[:limit]
    report.planned = len(todo)
    return todo


@dataclass
class _Job:
    contact: Contact
    message: OutgoingMessage | None = None  # built on the first attempt, kept for retries
    attempts: int = 0


class CampaignSender:
    """Sends one kind of message to many contacts over `connections` reused SMTP sessions."""

    def __init__(self, settings: Settings, renderer: Renderer, store: Store, *,
                 kind: str = DeliveryKind.INVITATION, template: str | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_progress: Callable[[SendReport], None] | None = None,
                 retry_delay: float = 2.0, audit: AuditLog | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.renderer = renderer
        self.store = store
        self.kind = kind
        self.template = template
        self.now = now
        self.on_progress = on_progress or (lambda report: None)
        self.retry_delay = retry_delay
        self.audit = audit
        self.extra = extra  # more template context (a reminder's open events)
        self._secret = salt(store)
        if store.staged:  # a new state's salt: on disk before any id made with it is sent
            store.commit_now()
        self.report = SendReport()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._open = 0  # jobs neither sent, refused nor deferred yet
        self._finished = asyncio.Event()
        self._resume = asyncio.Event()
        self._resume.set()
        self._limiter = RateLimiter(settings.smtp.rate_per_minute)
        self._quota_in_row = 0
        self._stopping = False
        self._timers: set[asyncio.Task[None]] = set()

    async def run(self, contacts: Sequence[Contact]) -> SendReport:
        """Send to every contact; returns when each one is sent, refused or deferred."""
        if not contacts:
            return self.report
        for contact in contacts:
            self._queue.put_nowait(_Job(contact))
        self._open = len(contacts)
        log.info("sending %d %s messages over %d connections", len(contacts), self.kind,
                 min(self.settings.smtp.connections, len(contacts)))
        sessions = [SmtpSession.from_settings(self.settings)
                    for _ in range(min(self.settings.smtp.connections, len(contacts)))]
        workers = [asyncio.create_task(self._work(s)) for s in sessions]
        finished: asyncio.Task[bool] = asyncio.create_task(self._finished.wait())
        try:
            # A worker that dies (a DeliveryError: bad login, no TLS) ends the run.
            await asyncio.wait([finished, *workers], return_when=asyncio.FIRST_COMPLETED)
            for worker in workers:
                if worker.done() and not worker.cancelled():
                    worker.result()  # re-raises what killed it
        finally:
            tasks: list[asyncio.Task[Any]] = [finished, *workers, *self._timers]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        return self.report

    async def _work(self, session: SmtpSession) -> None:
        while True:
            job = await self._queue.get()
            if job.message is None:
                job.message = self.renderer.invitation(
                    job.contact, template=self.template, kind=self.kind, extra=self.extra,
                    message_id=self.renderer.message_id(self.kind, job.contact.key,
                                                        secret=self._secret))
            await self._attempt(session, job)

    async def _attempt(self, session: SmtpSession, job: _Job) -> None:
        if self._stopping:
            await self._record(job, Status.DEFERRED,
                               Attempt(Outcome.TEMPORARY, None, self.report.stopped))
            return
        await self._resume.wait()
        await self._limiter.wait()
        assert job.message is not None
        attempt = await session.send(job.contact.email, job.message.data)
        job.attempts += 1
        if attempt.outcome is Outcome.SENT:
            self._quota_in_row = 0
            await self._record(job, Status.SENT, attempt)
        elif attempt.outcome is Outcome.PERMANENT:
            await self._record(job, Status.FAILED, attempt)
        elif attempt.outcome is Outcome.QUOTA:
            job.attempts -= 1  # the recipient is not at fault
            await self._pause_for_quota(job, attempt)
        elif job.attempts < self.settings.smtp.max_attempts:
            log.info("temporary failure for %s (attempt %d): %s %s", job.contact.email,
                     job.attempts, attempt.code or "", attempt.text)
            self._retry_later(job, self.retry_delay * 2 ** (job.attempts - 1))
        else:
            await self._record(job, Status.DEFERRED, attempt)

    def _retry_later(self, job: _Job, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self._queue.put_nowait(job)

        timer = asyncio.get_running_loop().create_task(later())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _pause_for_quota(self, job: _Job, attempt: Attempt) -> None:
        self.report.quota_pauses += 1
        self._quota_in_row += 1
        if self._quota_in_row >= self.settings.smtp.max_attempts:
            self.report.stopped = (f"the server keeps refusing with a quota reply "
                                   f"({attempt.code} {attempt.text}); stopped, rerun later")
            self._stopping = True
            await self._record(job, Status.DEFERRED, attempt)
            return
        if self._resume.is_set():
            pause = self.settings.smtp.quota_pause
            log.warning("server quota reply %s %s: pausing all sending for %.0f s",
                        attempt.code, attempt.text, pause)
            self._resume.clear()
            asyncio.get_running_loop().call_later(pause, self._resume.set)
        self._retry_later(job, 0)

    async def _record(self, job: _Job, status: Status, attempt: Attempt) -> None:
        assert job.message is not None
        key = delivery_key(self.kind, job.contact.key)
        doc: Delivery = {
            "key": key, "kind": self.kind, "email": job.contact.email,
            "contact": job.contact.key, "status": status,
            "message_id": job.message.message_id, "at": self.now().isoformat(),
            "attempts": job.attempts, "code": attempt.code, "reply": attempt.text,
            "source": job.contact.source,
        }
        # The audit entry is journalled with the delivery (issue 12: logged after it, a
        # kill in between lost the entry for good).
        entry = self.audit.entry(
            "send", kind=self.kind, to=job.contact.email, status=status,
            message_id=job.message.message_id, code=attempt.code) if self.audit else None
        await self.store.put(DELIVERIES, key, dict(doc), audit=entry)  # plain dicts
        if status == Status.SENT:
            self.report.sent += 1
        elif status == Status.FAILED:
            self.report.failed.append(job.contact.email)
            log.warning("%s refused permanently: %s %s", job.contact.email, attempt.code,
                        attempt.text)
        else:
            self.report.deferred.append(job.contact.email)
        await self.store.fold_if_large()
        self.on_progress(self.report)
        self._open -= 1
        if not self._open:
            self._finished.set()
