"""Reminders: invited contacts whose city has not registered for an event still open."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from mailer.contacts import Contact
from mailer.models import DELIVERIES, REGISTRATIONS, DeliveryKind, RegistrationStatus, Status
from mailer.reading.quotes import fold
from mailer.settings import Event
from mailer.store import Store


@dataclass(frozen=True)
class ReminderGroup:
    """Contacts who miss the same events: one reminder each, naming those events."""

    events: tuple[Event, ...]
    contacts: tuple[Contact, ...]

    @property
    def kind(self) -> str:
        """The delivery kind; its event ids make "once per contact per event" checkable."""
        return f"{DeliveryKind.REMINDER}:" + "+".join(e.id for e in self.events)


def city_of(contact: Contact) -> str:
    """The contact's city as compared with registrations (folded; the domain if no column)."""
    return fold(contact.fields.get("miasto", "") or contact.key.rpartition("@")[2]).strip()


def registered_cities(store: Store) -> dict[str, set[str]]:
    """Event id → folded names of cities with a complete, not cancelled registration.

    A registration counts for the city of the invitation it answered (a colleague from the
    same town hall) and for the city the official typed.
    """
    cities: dict[str, set[str]] = {}
    for doc in store.all(REGISTRATIONS):
        if doc.get("status") != RegistrationStatus.COMPLETE:
            continue
        names = {fold(doc.get("city") or "").strip()}
        if doc.get("invitation"):
            names.add(fold(doc["invitation"].get("city", "")).strip())
        for event_id in doc.get("events", {}):
            cities.setdefault(event_id, set()).update(n for n in names if n)
    return cities


def reminded_events(store: Store) -> dict[str, set[str]]:
    """Contact → events already reminded of (sent or refused: never again)."""
    done: dict[str, set[str]] = {}
    for doc in store.all(DELIVERIES):
        kind = str(doc.get("kind", ""))
        reminder = kind.startswith(f"{DeliveryKind.REMINDER}:")
        if reminder and doc.get("status") in (Status.SENT, Status.FAILED):
            done.setdefault(doc["contact"], set()).update(kind.partition(":")[2].split("+"))
    return done


def plan_reminders(contacts: Iterable[Contact], store: Store, events: Sequence[Event],
                   *, now: datetime) -> list[ReminderGroup]:
    """Group the contacts to remind by the open events their city is missing."""
    open_events = [e for e in events if now <= e.deadline]
    registered = registered_cities(store)
    reminded = reminded_events(store)
    invited = {d["contact"] for d in store.all(DELIVERIES)
               if d.get("kind") == DeliveryKind.INVITATION and d.get("status") == Status.SENT
               and not d.get("bounced")}
    groups: dict[tuple[str, ...], list[Contact]] = {}
    for contact in contacts:
        if contact.key not in invited:
            continue
        city, done = city_of(contact), reminded.get(contact.key, set())
        missing = tuple(e.id for e in open_events
                        if city not in registered.get(e.id, set()) and e.id not in done)
        if missing:
            groups.setdefault(missing, []).append(contact)
    by_id = {e.id: e for e in events}
    return [ReminderGroup(tuple(by_id[i] for i in ids), tuple(people))
            for ids, people in groups.items()]
