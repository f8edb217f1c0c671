"""What staff read off the state: the registrations table and one status row per invited city."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailer.campaign import delivery_key
from mailer.contacts import Contact
from mailer.i18n import n_
from mailer.models import (
    CURRENT_STATUSES,
    DELIVERIES,
    INBOUND,
    REGISTRATIONS,
    SUPPRESSIONS,
    DeliveryKind,
    RegistrationStatus,
    Status,
    SuppressionReason,
)
from mailer.reading.classify import Kind
from mailer.reading.decide import EventStatus
from mailer.store import Doc, Store


class CityStatus(StrEnum):
    """A city's standing: the first that applies wins. A message from the city waiting for
    a human comes first: never silent (issue 13), whatever else the city did."""

    REVIEW = "needs review"
    REGISTERED = "registered"  # someone from the city is confirmed for an event
    LATE = "late"  # registered, but for nothing in time
    INCOMPLETE = "incomplete"  # asked to correct a form, no complete one yet
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # the invitation did not reach anyone there
    INVITED = "invited"  # invitation delivered, no registration yet
    NOT_SENT = "not sent"


@dataclass(frozen=True)
class RegistrationRow:
    """One registrant as staff see them."""

    name: str
    position: str
    city: str
    email: str
    phone: str
    events: Mapping[str, str]  # event id → confirmed | late
    status: str  # complete | incomplete | cancelled
    received: str
    invited_city: str  # the invited city this reply was matched to ("" if none)


@dataclass
class CityRow:
    """One invited city: how many contacts, what became of them, the best event statuses."""

    city: str
    contacts: int = 0
    invited: int = 0  # invitations the SMTP server accepted and nobody bounced
    bounced: int = 0  # bounced (DSN) or refused permanently by the SMTP server
    unsubscribed: int = 0
    registered: int = 0  # people with a complete registration
    incomplete: int = 0  # forms waiting for a correction
    cancelled: int = 0
    auto_replies: int = 0
    review: int = 0  # messages from the city waiting for a human (`mailer review`)
    status: CityStatus = CityStatus.NOT_SENT
    events: dict[str, str] = field(default_factory=dict)  # event id → confirmed | late
    people_per_event: dict[str, int] = field(default_factory=dict)  # event id → registrants

    def notes(self) -> str:
        """The counts worth a human's attention, e.g. "1 bounced, 1 auto-reply"."""
        # (count, singular, plural): only "auto-reply" is a noun; the adjectives never change.
        counts = [(self.review, "for review", "for review"), (self.bounced, "bounced", "bounced"),
                  (self.unsubscribed, "unsubscribed", "unsubscribed"),
                  (self.incomplete, "incomplete", "incomplete"),
                  (self.cancelled, "cancelled", "cancelled"),
                  (self.auto_replies, "auto-reply", "auto-replies")]
        return ", ".join(plural(n, one, many) for n, one, many in counts if n)


def registration_rows(store: Store) -> list[RegistrationRow]:
    """Every current registration (not the superseded ones), by city then name."""
    rows = [
        RegistrationRow(
            name=doc.get("name") or "", position=doc.get("position") or "",
            city=doc.get("city") or "", email=doc.get("email") or doc.get("sender") or "",
            phone=doc.get("phone") or "", events=dict(doc.get("events") or {}),
            status=doc.get("status", ""), received=doc.get("received", ""),
            invited_city=(doc.get("invitation") or {}).get("city", ""),
        )
        for doc in store.all(REGISTRATIONS) if doc.get("status") in CURRENT_STATUSES
    ]
    return sorted(rows, key=lambda r: (r.invited_city or r.city, r.name))


def city_of(contact: Contact) -> str:
    """The contact's city column (`miasto`), else its address's domain."""
    return contact.fields.get("miasto", "").strip() or contact.key.rpartition("@")[2]


def city_status(contacts: Sequence[Contact], store: Store) -> list[CityRow]:
    """One row per city of the contact lists, in list order, from the state tables."""
    rows: dict[str, CityRow] = {}
    by_contact: dict[str, CityRow] = {}
    for contact in contacts:
        row = rows.setdefault(city_of(contact), CityRow(city_of(contact)))
        row.contacts += 1
        by_contact[contact.key] = row
        invitation = delivery_key(DeliveryKind.INVITATION, contact.key)
        _count_delivery(row, store.get(DELIVERIES, invitation))
        suppression = store.get(SUPPRESSIONS, contact.key)
        row.unsubscribed += bool(suppression
                                 and suppression.get("reason") == SuppressionReason.UNSUBSCRIBED)
    for doc in store.all(REGISTRATIONS):
        if matched := by_contact.get(_invited_contact(doc)):
            _count_registration(matched, doc)
    for doc in store.all(INBOUND):
        if matched := by_contact.get(_invited_contact(doc)):
            matched.auto_replies += doc.get("kind") == Kind.AUTO_REPLY
            matched.review += bool(doc.get("review") and not doc.get("resolved"))
    for row in rows.values():
        row.status = _status(row)
    return list(rows.values())


def _invited_contact(doc: Doc) -> str:
    """The invited contact the watcher matched a message or registration to."""
    return str((doc.get("invitation") or {}).get("contact", ""))


def _count_delivery(row: CityRow, delivery: Doc | None) -> None:
    if delivery is None:
        return
    if delivery.get("bounced") or delivery.get("status") == Status.FAILED:
        row.bounced += 1
    elif delivery.get("status") == Status.SENT:
        row.invited += 1


def _count_registration(row: CityRow, doc: Doc) -> None:
    status = doc.get("status")
    if status == RegistrationStatus.COMPLETE:
        row.registered += 1
        for event, standing in (doc.get("events") or {}).items():
            row.people_per_event[event] = row.people_per_event.get(event, 0) + 1
            if row.events.get(event) != EventStatus.CONFIRMED:
                row.events[event] = standing
    elif status == RegistrationStatus.INCOMPLETE:
        row.incomplete += 1
    elif status == RegistrationStatus.CANCELLED:
        row.cancelled += 1


def _status(row: CityRow) -> CityStatus:
    if row.review:
        return CityStatus.REVIEW
    return _standing(row)


def _standing(row: CityRow) -> CityStatus:
    if EventStatus.CONFIRMED in row.events.values():
        return CityStatus.REGISTERED
    if row.registered:
        return CityStatus.LATE
    if row.incomplete:
        return CityStatus.INCOMPLETE
    if row.unsubscribed:
        return CityStatus.UNSUBSCRIBED
    if row.bounced and not row.invited:
        return CityStatus.BOUNCED
    return CityStatus.INVITED if row.invited else CityStatus.NOT_SENT


def plural(n: int, one: str, many: str) -> str:
    """The count and its noun, agreeing: "1 new message", "0 new messages", "2 new messages".

    `one` and `many` may carry a verb too ("message waits", "messages wait") so the whole
    phrase agrees (issue 16: "1 new messages" read as a slip).
    """
    return f"{n} {n_(one, many, n)}"  # and in Polish, its three forms (mailer.i18n)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Plain fixed-width columns (a terminal, a log file and a test all read them alike)."""
    cells = [[str(h) for h in headers], *([str(c) for c in r] for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def registrations_table(rows: Sequence[RegistrationRow], event_ids: Sequence[str]) -> list[str]:
    """Name, city, e-mail, one column per event (confirmed | late | -), status."""
    return format_table(["name", "city", "e-mail", *event_ids, "status"],
                        [[r.name, r.city, r.email, *(r.events.get(e, "-") for e in event_ids),
                          r.status] for r in rows])


def cities_table(rows: Sequence[CityRow], event_ids: Sequence[str]) -> list[str]:
    """City, contacts, status, people registered, per event the best status and how many
    people, notes."""
    return format_table(["city", "contacts", "status", "people", *event_ids, "notes"],
                        [[c.city, c.contacts, c.status, c.registered,
                          *(_event_cell(c, e) for e in event_ids), c.notes()] for c in rows])


def _event_cell(row: CityRow, event_id: str) -> str:
    standing = row.events.get(event_id)
    return f"{standing} ({row.people_per_event[event_id]})" if standing else "-"
