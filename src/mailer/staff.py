"""What the clerk asks of the state: one person's file, the review queue and its resolution."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from mailer.audit import AuditLog
from mailer.clock import Clock, shown_time
from mailer.contacts import normalize_key, read_contacts
from mailer.effects import Ledger
from mailer.errors import MailerError
from mailer.export import neutralise
from mailer.models import (
    ANSWERS,
    CURRENT_STATUSES,
    DELIVERIES,
    INBOUND,
    REGISTRATIONS,
    SUPPRESSIONS,
    AnswerStatus,
    RegistrationStatus,
    Resolution,
    ReviewResolution,
    Status,
    message_path,
)
from mailer.reading.classify import Classification, Kind
from mailer.reading.decide import EventStatus, decide_registration
from mailer.reading.understand import Reading, understand
from mailer.reading.validate import validate_draft
from mailer.reasons import Code, Reason
from mailer.report import plural
from mailer.settings import Settings
from mailer.store import Doc, Store


@dataclass(frozen=True)
class Person:
    """Everything about one address: registrations (with history), messages in and out."""

    address: str
    registrations: list[Doc]
    inbound: list[Doc]
    answers: list[Doc]
    deliveries: list[Doc]
    folder: Path  # the state folder, where the raw messages are


def person(store: Store, address: str) -> Person:
    """One person's file, each list in time order."""
    key = normalize_key(address)
    registrations = [d for d in store.all(REGISTRATIONS)
                     if key in (d["key"], d.get("sender"), (d.get("email") or "").lower())]
    messages = {m for d in registrations for m in d.get("messages", [])}
    inbound = [d for d in store.all(INBOUND) if d.get("sender") == key or d["key"] in messages]
    answers = [d for d in store.all(ANSWERS)
               if d.get("to") == key or d.get("inbound") in messages]
    deliveries = [d for d in store.all(DELIVERIES) if d.get("contact") == key]
    return Person(
        address=key,
        registrations=sorted(registrations, key=lambda d: d.get("received", "")),
        inbound=sorted(inbound, key=lambda d: d.get("received", "")),
        answers=sorted(answers, key=lambda d: d.get("created", "")),
        deliveries=sorted(deliveries, key=lambda d: d.get("at") or ""),
        folder=store.folder,
    )


def review_queue(store: Store) -> list[Doc]:
    """Messages waiting for a human (not understood, over-size, backlog, forged, over limit)."""
    waiting = [d for d in store.all(INBOUND) if d.get("review") and not d.get("resolved")]
    return sorted(waiting, key=lambda d: d.get("received", ""))


def _waiting(store: Store, key: str) -> Doc:
    matches = [d for d in review_queue(store) if d["key"].startswith(key)]
    if len(matches) != 1:
        raise MailerError(
            f"{key!r} matches {plural(len(matches), 'message', 'messages')} waiting for review",
            hint="use the id (or a unique start of it) that `mailer review` lists")
    return matches[0]


def mark_handled(store: Store, audit: AuditLog, key: str, *, now: datetime,
                 note: str = "") -> Doc:
    """Close a review item without changing anything else; the audit log says who and when."""
    doc = _waiting(store, key)
    resolution: ReviewResolution = {"how": Resolution.HANDLED, "by": audit.actor,
                                    "at": now.isoformat(), "note": note}
    store.stage(INBOUND, doc["key"], {**doc, "resolved": resolution})
    store.stage_audit(audit.entry("review", at=now, message=doc["key"],
                                  how=Resolution.HANDLED, note=note))
    store.commit_now()
    return doc


def _reading_of(doc: Doc, raw: bytes, received: datetime, settings: Settings) -> Reading:
    """The message read again, or for one the reader fails on (issue 12) what its record
    says: the clerk, who read the original, gives every field anyway."""
    try:
        return understand(raw, received=received, events=settings.events)
    except Exception:
        return Reading(key=doc["key"], received=received, sender=doc.get("sender", ""),
                       subject=doc.get("subject", ""), message_id=doc.get("message_id", ""),
                       refs=(), classification=Classification(Kind.OTHER,
                                                              Reason.of(Code.BY_HAND)),
                       automated=None, forged=None, own_text="", drafts=())


def _raw_message(store: Store, doc: Doc) -> bytes:
    file = message_path(store.folder, doc.get("path"))
    try:
        if file is not None:
            return file.read_bytes()
    except OSError as err:
        raise MailerError(f"message {doc['key']}: cannot read {file}: {err.strerror}",
                          hint="was it erased, or the state folder copied without it?") from err
    raise MailerError(f"message {doc['key']}: its raw .eml is not in "
                      f"{store.folder / 'messages'} (recorded: {doc.get('path')!r})")


def register_by_hand(store: Store, audit: AuditLog, settings: Settings, key: str,
                     values: dict[str, str], *, clock: Clock) -> Doc:
    """Register the person a reviewed message is about, with fields a human read from it.

    The same validation and deadline rules apply as for a form read by the service (received
    time = the message's INTERNALDATE); no answer is sent: the clerk is the one in contact.
    """
    doc = _waiting(store, key)
    raw = _raw_message(store, doc)
    received = datetime.fromisoformat(doc["received"])
    reading = _reading_of(doc, raw, received, settings)
    registrant = validate_draft(values, sender=reading.sender, events=settings.events)
    if not registrant.complete:
        problems = "; ".join(f"{p.field}: {p.message}" for p in registrant.problems)
        raise MailerError(f"the fields given are not complete: {problems}")
    reading = replace(
        reading, classification=Classification(Kind.REGISTRATION, Reason.of(Code.BY_HAND)),
        registrants=(registrant,),
        decision=decide_registration([registrant], received, settings.events))
    ledger = Ledger(settings, store, clock=clock,
                    contacts=read_contacts(settings.campaign.recipients).contacts)
    effects: dict[str, Any] = ledger.apply(reading, by_hand=True)  # a human decided
    now = clock.now()
    resolution: ReviewResolution = {"how": Resolution.REGISTERED, "by": audit.actor,
                                    "at": now.isoformat(),
                                    "registrations": effects.get("registrations", [])}
    store.stage(INBOUND, doc["key"], {**doc, "resolved": resolution})
    store.stage_audit(audit.entry("review", at=now, message=doc["key"],
                                  how=Resolution.REGISTERED,
                                  registrations=resolution["registrations"]))
    store.commit_now()
    return doc


def held_answer(store: Store, key: str) -> Doc | None:
    """The answer to the message `key` when it waits for staff (an unverified sender)."""
    answer = store.get(ANSWERS, key)
    return answer if answer and answer.get("status") == AnswerStatus.HELD else None


def release_answer(store: Store, audit: AuditLog, key: str, *, now: datetime) -> Doc:
    """Approve the held answer of a reviewed message: it goes out with the service's next
    pass (`mailer run`, `mailer watch`), under the same limits as any answer (issue 12)."""
    doc = _waiting(store, key)
    answer = held_answer(store, doc["key"])
    if answer is None:
        raise MailerError(f"no answer to {doc['key'][:12]} waits for approval",
                          hint="resolve it with --handled or --register")
    resolution: ReviewResolution = {"how": Resolution.RELEASED, "by": audit.actor,
                                    "at": now.isoformat()}
    store.stage(ANSWERS, answer["key"], {**answer, "status": AnswerStatus.PENDING,
                                         "released": resolution})
    store.stage(INBOUND, doc["key"], {**doc, "resolved": resolution})
    store.stage_audit(audit.entry("review", at=now, message=doc["key"],
                                  how=Resolution.RELEASED, answer=answer["message_id"]))
    store.commit_now()
    return doc


def campaign_counts(store: Store, settings: Settings) -> dict[str, Any]:
    """`mailer status`: what was sent, what came in, who registered, what waits."""
    deliveries: dict[str, int] = {}
    for doc in store.all(DELIVERIES):
        kind = str(doc.get("kind", "")).partition(":")[0]
        status = Status.BOUNCED if doc.get("bounced") else \
            Status.UNDELIVERED if doc.get("undelivered") else str(doc.get("status"))
        deliveries[f"{kind} {status}"] = deliveries.get(f"{kind} {status}", 0) + 1
    suppressions: dict[str, int] = {}  # by reason: complaints (ARF) show here (issue 14)
    for doc in store.iter(SUPPRESSIONS):
        reason = str(doc.get("reason", ""))
        suppressions[reason] = suppressions.get(reason, 0) + 1
    inbound: dict[str, int] = {}
    for doc in store.all(INBOUND):
        inbound[doc.get("kind", "")] = inbound.get(doc.get("kind", ""), 0) + 1
    events = {e.id: dict.fromkeys(EventStatus, 0) for e in settings.events}
    people = dict.fromkeys(CURRENT_STATUSES, 0)
    for doc in store.all(REGISTRATIONS):
        if doc.get("status") in people:
            people[doc["status"]] += 1
        if doc.get("status") == RegistrationStatus.COMPLETE:
            for event_id, standing in doc.get("events", {}).items():
                events.setdefault(event_id, dict.fromkeys(EventStatus, 0))[standing] += 1
    answers = [d for d in store.all(ANSWERS)]
    return {
        "campaign": settings.campaign.name, "deliveries": deliveries,
        "suppressions": suppressions, "inbound": inbound,
        "registrations": people, "events": events,
        "answers_sent": sum(1 for a in answers if a.get("status") == AnswerStatus.SENT),
        "answers_pending": sum(1 for a in answers if a.get("status") == AnswerStatus.PENDING),
        "answers_held": sum(1 for a in answers if a.get("status") == AnswerStatus.HELD),
        "review": len(review_queue(store)),
    }


def format_counts(counts: dict[str, Any]) -> str:
    """The counts as lines a person reads at a glance."""
    def pairs(mapping: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items())) or "none"

    lines = [
        f"campaign: {counts['campaign']}",
        f"deliveries: {pairs(counts['deliveries'])}",
        f"never mailed again: {pairs(counts.get('suppressions', {}))}",
        f"inbound: {pairs(counts['inbound'])}",
        f"registrations: {pairs(counts['registrations'])}",
        *(f"  {event}: confirmed {c['confirmed']}, late {c['late']}"
          for event, c in counts["events"].items()),
        f"answers: sent {counts['answers_sent']}, pending {counts['answers_pending']}, "
        f"held for review {counts['answers_held']}",
        f"waiting for review: {counts['review']}",
    ]
    return "\n".join(lines) + "\n"


def counts_csv(rows: list[dict[str, Any]]) -> bytes:
    """Flat CSV (UTF-8 BOM, ';') of dictionaries; nested ones become `a.b` columns. A city
    comes from a contact list or a reply: a formula in it stays text, as in every export."""
    flat = [_flatten(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in columns])
    writer.writerows([neutralise(r.get(c, "")) for c in columns] for r in flat)
    return buffer.getvalue().encode("utf-8-sig")


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_person(found: Person, zone: tzinfo) -> list[str]:
    """`mailer show`: the person's file as text, times in the campaign's `zone`."""
    lines = [f"{found.address}"]
    for doc in found.registrations:
        events = ", ".join(f"{k}: {v}" for k, v in doc.get("events", {}).items()) or "none"
        lines += [f"registration [{doc.get('status')}]: {doc.get('name')} | "
                  f"{doc.get('position')} | {doc.get('city')} | {doc.get('phone')} | {events}"]
        lines += _sources_line(doc.get("sources"), "  ")
        lines += [f"  earlier ({shown_time(old.get('updated'), zone)}): {old.get('status')}, "
                  f"{old.get('city')}, {old.get('events')}" for old in doc.get("history", [])]
    for doc in found.deliveries:
        note = " (bounced)" if doc.get("bounced") else \
            " (not delivered: temporary reason, the server gave up)" \
            if doc.get("undelivered") else ""
        lines.append(f"out {shown_time(doc.get('at'), zone)}  {doc.get('kind')}: "
                     f"{doc.get('status')}"
                     f"{note}")
    for doc in found.inbound:
        lines.append(f"in  {shown_time(doc.get('received'), zone)}  {doc.get('kind')}: "
                     f"{doc.get('subject')!r}  answer: {doc.get('answer') or '-'}  "
                     f"raw: {message_path(found.folder, doc.get('path')) or '-'}")
        read = doc.get("read") or {}
        for person in read.get("registrants", []):
            events = ", ".join(f"{k}: {v}" for k, v in person.get("events", {}).items())
            lines.append(f"      read: {person.get('name')} | {person.get('position')} | "
                         f"{person.get('city')} | {person.get('email')} | "
                         f"{person.get('phone')} | {events or 'no event'}")
            lines += _sources_line(person.get("sources"), "        ")
        lines += [f"      problem: {e['field']}: {e['message']}" for e in read.get("errors", [])]
    for doc in found.answers:
        lines.append(f"out {shown_time(doc.get('created'), zone)}  answer {doc.get('template')}: "
                     f"{doc.get('status')}  {doc.get('message_id')}")
    return lines


def _sources_line(sources: dict[str, str] | None, indent: str) -> list[str]:
    """Where each value came from (issue 13): form, sentence, list, line, signature, contact
    (the invited contact's row), earlier (the earlier message it completed)."""
    if not sources:
        return []
    return [f"{indent}from: " + ", ".join(f"{k} {v}" for k, v in sources.items())]
