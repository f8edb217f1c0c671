"""Decisions → answers: an outbox recorded before sending and marked after the server accepts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from mailer.audit import AuditLog
from mailer.models import ANSWERS, SUPPRESSIONS, AnswerRegistrant, AnswerStatus
from mailer.reading.decide import Answer, EventStatus
from mailer.reading.understand import Reading, reply_subject
from mailer.render import OutgoingMessage, Renderer
from mailer.settings import Event, Settings
from mailer.smtp_client import Outcome, SmtpSession
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
               cancelled: Sequence[str] = ()) -> Doc:
    """The outbox record: everything needed to build the answer again after a restart."""
    refs = [r for r in (*reversed(reading.refs), reading.message_id) if r]
    return {
        "inbound": reading.key, "to": reading.sender, "template": str(template),
        "status": AnswerStatus.PENDING, "attempts": 0, "created": now.isoformat(),
        "message_id": answer_message_id(reading.key, domain),
        "in_reply_to": reading.message_id, "references": refs[-20:],
        "subject": reply_subject(reading.subject),
        "registrants": registrant_context(reading),
        "cancelled_events": list(cancelled),
        "received": reading.received.isoformat(),
    }


def build_answer(renderer: Renderer, settings: Settings, doc: Doc) -> OutgoingMessage:
    """Render an outbox record into the message: Re: subject, threading, Auto-Submitted."""
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
        "received": datetime.fromisoformat(doc["received"]),
        "now": datetime.fromisoformat(doc["created"]),  # "still open" as of the decision
    }
    headers = [("Auto-Submitted", "auto-replied")]  # RFC 3834 §5
    if doc["in_reply_to"]:
        headers.append(("In-Reply-To", doc["in_reply_to"]))
    if doc["references"]:
        headers.append(("References", " ".join(doc["references"])))
    return renderer.compose(
        renderer.templates(doc["template"]), to_addr=doc["to"], to_name="", context=context,
        message_id=doc["message_id"], where=f"answer {doc['template']} to {doc['to']}",
        headers=headers, subject=doc["subject"],
    )


async def flush_outbox(store: Store, renderer: Renderer, settings: Settings,
                       session: SmtpSession, *, now: Callable[[], datetime],
                       audit: AuditLog | None = None) -> tuple[int, int]:
    """Send every pending answer; returns (sent, still pending). Never raises for SMTP trouble."""
    sent = pending = 0
    # An answer to an address that bounced since would bounce too (an unsubscribe's goes out).
    waiting = sorted((d for d in store.iter(ANSWERS) if d["status"] == AnswerStatus.PENDING
                      and (d["template"] == Answer.UNSUBSCRIBED
                           or not store.has(SUPPRESSIONS, d["to"]))),
                     key=lambda d: d["created"])
    for position, doc in enumerate(waiting):
        message = build_answer(renderer, settings, doc)
        attempt = await session.send(doc["to"], message.data)
        update = {**doc, "attempts": doc["attempts"] + 1, "code": attempt.code,
                  "reply": attempt.text}
        if attempt.outcome is Outcome.SENT:
            update.update(status=AnswerStatus.SENT, sent=now().isoformat())
            sent += 1
        elif attempt.outcome is Outcome.PERMANENT:
            update["status"] = AnswerStatus.FAILED
        else:
            pending = len(waiting) - position  # this one and every one not tried yet
            log.info("answer to %s waits (%s %s); %d answers wait", doc["to"],
                     attempt.code or "", attempt.text, pending)
            await store.put(ANSWERS, doc["key"], update)
            break  # the server is unwell: try again on the next round
        await store.put(ANSWERS, doc["key"], update)
        if audit:
            audit.record("answer", at=now(), to=doc["to"], template=doc["template"],
                         status=update["status"], message_id=doc["message_id"],
                         inbound=doc["inbound"], code=attempt.code)
        log.info("answer %s to %s: %s", doc["template"], doc["to"], update["status"])
    return sent, pending
