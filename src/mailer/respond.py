"""Decisions → answers: an outbox recorded before sending and marked after the server accepts."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from mailer.audit import AuditLog
from mailer.contacts import Contact
from mailer.errors import MailerError
from mailer.models import ANSWERS, SUPPRESSIONS, AnswerRegistrant, AnswerStatus
from mailer.reading.decide import Answer, EventStatus
from mailer.reading.understand import Reading, reply_subject
from mailer.reasons import Code, Reason
from mailer.render import OutgoingMessage, Renderer, display_name
from mailer.report import plural
from mailer.settings import Event, Settings
from mailer.smtp_client import Outcome, RateLimiter, SmtpSession
from mailer.store import Doc, Store

log = logging.getLogger(__name__)


def answer_message_id(inbound_key: str, domain: str) -> str:
    """The same answer always gets the same id, so a resend after a crash is recognisable."""
    digest = hashlib.sha256(f"answer\0{inbound_key}".encode()).hexdigest()[:32]
    return f"<{digest}.answer@{domain}>"


def registrant_context(reading: Reading) -> list[AnswerRegistrant]:
    """What the answer templates show of each registrant (event ids, resolved at render)."""
    people: list[AnswerRegistrant] = []
    statuses: Sequence[Mapping[str, EventStatus]] = (
        reading.decision.statuses if reading.decision else [])
    for index, person in enumerate(reading.registrants):
        status = statuses[index] if index < len(statuses) else {}
        people.append({
            "name": person.name, "position": person.position, "city": person.city,
            "email": person.email, "phone": person.phone,
            "confirmed": [e for e, s in status.items() if s == EventStatus.CONFIRMED],
            "late": [e for e, s in status.items() if s == EventStatus.LATE],
            "problems": [p.message for p in person.problems],
            "warnings": [p.message for p in person.warnings],
        })
    return people


def answer_doc(reading: Reading, template: Answer, *, now: datetime, domain: str,
               cancelled: Sequence[str] = (), nothing_cancelled: bool = False,
               held: Reason | None = None) -> Doc:
    """The outbox record: everything needed to build the answer again after a restart.

    A `held` answer waits for staff to release it (`mailer review --release`); the outbox
    sends only pending ones. `nothing_cancelled`: a cancellation from a sender who had no
    registration to cancel (an invited official declining): the answer says so instead of
    confirming a cancellation.
    """
    refs = [r for r in (*reversed(reading.refs), reading.message_id) if r]
    return {
        "inbound": reading.key, "to": reading.sender, "template": str(template),
        "status": AnswerStatus.HELD if held else AnswerStatus.PENDING, "attempts": 0,
        "created": now.isoformat(), **({"held": held.to_doc()} if held else {}),
        "message_id": answer_message_id(reading.key, domain),
        "in_reply_to": reading.message_id, "references": refs[-20:],
        "subject": reply_subject(reading.subject),
        "registrants": registrant_context(reading),
        "cancelled_events": list(cancelled),
        **({"nothing_cancelled": True} if nothing_cancelled else {}),
        "received": reading.received.isoformat(),
    }


def sample_answer(template: Answer, contact: Contact, events: Sequence[Event], *,
                  now: datetime, domain: str) -> Doc:
    """An outbox record of `template` to `contact`, with one registrant of theirs confirmed
    for the first event, late for the others and with a problem and a warning: what `mailer
    check` renders so that a broken answer template stops the check, not the service."""
    ids = [e.id for e in events]
    return {
        "inbound": "check", "to": contact.email, "template": str(template),
        "status": AnswerStatus.PENDING, "attempts": 0, "created": now.isoformat(),
        "message_id": answer_message_id(f"check-{template}", domain), "in_reply_to": "",
        "references": [], "subject": reply_subject("Zaproszenie"),
        "registrants": [{
            "name": display_name(contact.fields) or "Jan Kowalski", "position": "Naczelnik",
            "city": contact.fields.get("miasto", ""), "email": contact.email,
            "phone": "+48581234567", "confirmed": ids[:1], "late": ids[1:],
            "problems": ["Pole „Miasto / urząd” jest puste."],
            "warnings": ["Numer telefonu zapisano tak, jak go podano."],
        }],
        "cancelled_events": ids, "received": now.isoformat(),
    }


class UnsendableAnswer(ValueError):
    """An answer that cannot go out as recorded (its address cannot be written in ASCII)."""


# A Message-ID that can go into In-Reply-To and References as it is: ASCII, no spaces, one
# "@", of a sane length. Anything else a sender wrote is left out (issue 12), never fatal.
_USABLE_ID = re.compile(r"<[!-;=?-~]{1,200}>")
_REFERENCES_MAX = 900  # characters: the header line stays under RFC 5322's 998


def usable_ids(ids: Sequence[str]) -> list[str]:
    """The ids of `ids` that can be written in a header, newest kept when they are many."""
    kept: list[str] = []
    length = 0
    for message_id in reversed(ids):
        if _USABLE_ID.fullmatch(message_id) and message_id.count("@") == 1:
            length += len(message_id) + 1
            if length > _REFERENCES_MAX:
                break
            kept.append(message_id)
    return kept[::-1]


def wire_address(address: str) -> str:
    """`address` as SMTP and the To header carry it without SMTPUTF8: an IDN domain in IDNA
    (`jan@łódź.example.com` → `jan@xn--d-uga0v4h.example.com`); UnsendableAnswer when the
    local part is not ASCII."""
    if address.isascii():
        return address
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as err:
        raise UnsendableAnswer(f"address not valid: {err}") from err
    if valid.ascii_email is None:
        raise UnsendableAnswer("the address's local part is not ASCII (needs SMTPUTF8)")
    return valid.ascii_email


def build_answer(renderer: Renderer, settings: Settings, doc: Doc) -> OutgoingMessage:
    """Render an outbox record into the message: Re: subject, threading, Auto-Submitted.

    Raises UnsendableAnswer for an address that cannot be sent to; ids that cannot be
    written in a header are left out.
    """
    events = {e.id: e for e in settings.events}

    def resolve(ids: Sequence[str]) -> list[Event]:
        return [events[i] for i in ids if i in events]

    registrants = [{**r, "confirmed": resolve(r["confirmed"]), "late": resolve(r["late"])}
                   for r in doc["registrants"]]
    context = {
        **renderer.base_context, "sender": doc["to"], "registrants": registrants,
        "confirmed_any": any(r["confirmed"] for r in registrants),
        "late_any": any(r["late"] for r in registrants),
        "cancelled_events": resolve(doc["cancelled_events"]),
        "nothing_cancelled": bool(doc.get("nothing_cancelled")),
        "received": datetime.fromisoformat(doc["received"]),
        "now": datetime.fromisoformat(doc["created"]),  # "still open" as of the decision
    }
    headers = [("Auto-Submitted", "auto-replied")]  # RFC 3834 §5
    if usable_ids([doc["in_reply_to"]]):
        headers.append(("In-Reply-To", doc["in_reply_to"]))
    references = usable_ids(doc["references"])
    if references:
        headers.append(("References", " ".join(references)))
    return renderer.compose(
        renderer.templates(doc["template"]), to_addr=wire_address(doc["to"]), to_name="",
        context=context,
        message_id=doc["message_id"], where=f"answer {doc['template']} to {doc['to']}",
        headers=headers, subject=doc["subject"],
    )


async def flush_outbox(store: Store, renderer: Renderer, settings: Settings,
                       session: SmtpSession, *, now: Callable[[], datetime],
                       audit: AuditLog | None = None,
                       connect: Callable[[], SmtpSession] | None = None) -> tuple[int, int]:
    """Send the pending answers the hourly cap allows; returns (sent, still pending).

    As the campaign sends (issue 17): over up to `[smtp] connections` sessions in parallel,
    `session` (kept by the caller, reused from pass to pass) and more made by `connect` (by
    default from the settings) for this pass only, when there are enough answers to share;
    each mark is journalled by `store.put`, so the marks of the sessions share an fsync.

    Never raises for SMTP trouble. What the cap holds back stays pending for a later pass.
    """
    waiting, allowance = _due(store, settings, now())
    due = waiting[:allowance]
    capped = len(waiting) - len(due)
    if capped:
        log.warning("hourly cap of %s reached (answers.max_per_hour): %s for a later hour",
                    plural(settings.answers.max_per_hour, "answer", "answers"),
                    plural(capped, "answer waits", "answers wait"))
    if not due:
        return 0, capped
    flush = _Flush(store, renderer, settings, due, now=now, audit=audit)
    width = min(settings.smtp.connections, -(-len(due) // ANSWERS_PER_SESSION))
    make = connect or (lambda: SmtpSession.from_settings(settings))
    extra = [make() for _ in range(width - 1)]
    try:
        await flush.run([session, *extra])
    finally:
        await asyncio.gather(*(s.close() for s in extra), return_exceptions=True)
    return flush.sent, capped + flush.pending


# An extra session is opened for every so many answers due: one answer is not worth a
# connection, a backlog after an outage is (issue 17).
ANSWERS_PER_SESSION = 8


class _Flush:
    """One pass over the due answers, shared by the sessions: each takes the oldest not yet
    taken. A temporary refusal stops every session from taking more (the server is unwell:
    the rest waits for the next pass, in order); a MailerError (the configuration or the
    state) stops them too and is raised once the answers in flight are recorded."""

    def __init__(self, store: Store, renderer: Renderer, settings: Settings, due: list[Doc],
                 *, now: Callable[[], datetime], audit: AuditLog | None) -> None:
        self.store = store
        self.renderer = renderer
        self.settings = settings
        self.due = due
        self.now = now
        self.audit = audit
        self.taken = 0
        self.sent = 0
        self.deferred = 0  # temporarily refused in this pass
        self.stopped = False
        self.error: BaseException | None = None
        self._limiter = RateLimiter(settings.smtp.rate_per_minute)

    @property
    def pending(self) -> int:
        """The temporarily refused and every one not tried."""
        return self.deferred + len(self.due) - self.taken

    async def run(self, sessions: Sequence[SmtpSession]) -> None:
        await asyncio.gather(*(self._work(s) for s in sessions))
        if self.error is not None:
            raise self.error

    async def _work(self, session: SmtpSession) -> None:
        while not self.stopped and self.taken < len(self.due):
            doc = self.due[self.taken]
            self.taken += 1
            try:
                await self._send(session, doc)
            except MailerError as err:  # the configuration or the state, not this answer
                self.stopped = True
                self.deferred += 1  # it stays pending: nothing was recorded of it
                self.error = self.error or err
                return

    async def _send(self, session: SmtpSession, doc: Doc) -> None:
        try:
            message = build_answer(self.renderer, self.settings, doc)
            await self._limiter.wait()
            attempt = await session.send(message.to, message.data)
        except MailerError:
            raise
        except Exception as err:  # this answer alone: marked failed, the outbox goes on
            await _give_up(self.store, doc, err, now=self.now, audit=self.audit)
            return
        update = {**doc, "attempts": doc["attempts"] + 1, "code": attempt.code,
                  "reply": attempt.text}
        if attempt.outcome is Outcome.SENT:
            update.update(status=AnswerStatus.SENT, sent=self.now().isoformat())
            self.sent += 1
        elif attempt.outcome is Outcome.PERMANENT:
            update["status"] = AnswerStatus.FAILED
        else:  # temporary or quota: the server is unwell, try again on the next pass
            self.stopped = True
            self.deferred += 1
            log.info("answer to message %s waits (%s %s); %s", doc["key"][:12],
                     attempt.code or "", attempt.text,
                     plural(self.pending, "answer waits", "answers wait"))
            await self.store.put(ANSWERS, doc["key"], update)
            return
        # Journalled with the answer's new status, then logged (issue 12).
        await self.store.put(ANSWERS, doc["key"], update, audit=_entry(
            self.audit, self.now(), doc, status=update["status"], code=attempt.code))
        log.info("answer %s to message %s: %s", doc["template"], doc["key"][:12],
                 update["status"])


def _due(store: Store, settings: Settings, now: datetime) -> tuple[list[Doc], int]:
    """The pending answers, oldest first, and how many may go out now under the hourly cap
    (a stranger's flood must not make the ministry's server a spam source, issue 12)."""
    since = now - timedelta(hours=1)
    waiting: list[Doc] = []
    recent = 0
    for doc in store.iter(ANSWERS):
        if doc["status"] == AnswerStatus.SENT:
            recent += bool(doc.get("sent")) and datetime.fromisoformat(doc["sent"]) > since
        # An answer to an address that bounced since would bounce too (an unsubscribe's goes).
        elif doc["status"] == AnswerStatus.PENDING and (
                doc["template"] == Answer.UNSUBSCRIBED or not store.has(SUPPRESSIONS, doc["to"])):
            waiting.append(doc)
    waiting.sort(key=lambda d: d["created"])
    return waiting, max(0, settings.answers.max_per_hour - recent)


async def _give_up(store: Store, doc: Doc, err: Exception, *, now: Callable[[], datetime],
                   audit: AuditLog | None) -> None:
    """An answer that could not be built or sent: failed for good, with why (issue 12).

    Such a failure comes from what the answer holds (an address, a header) and would come
    again on every pass; a temporary one is an SMTP reply and is retried.
    """
    error = f"{type(err).__name__}: {str(err)[:200]}".strip()
    log_error = log.warning if isinstance(err, UnsendableAnswer) else log.exception
    log_error("answer %s to message %s cannot be sent: %s", doc["message_id"], doc["key"][:12],
              error)
    reason = Reason.of(Code.ANSWER_FAILED, error=error)
    update = {**doc, "attempts": doc["attempts"] + 1, "status": AnswerStatus.FAILED,
              "code": None, "reply": error, "error": reason.to_doc()}
    await store.put(ANSWERS, doc["key"], update, audit=_entry(
        audit, now(), doc, status=AnswerStatus.FAILED, code=None))


def _entry(audit: AuditLog | None, at: datetime, doc: Doc, *, status: str,
           code: int | None) -> Doc | None:
    """The audit entry of an answer's outcome, recorded with it."""
    if audit is None:
        return None
    return audit.entry("answer", at=at, to=doc["to"], template=doc["template"], status=status,
                       message_id=doc["message_id"], inbound=doc["inbound"], code=code)
