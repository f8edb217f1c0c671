"""What a message read from the inbox changes in the state: registrations, suppressions.

Everything here only stages documents in the store (the watcher commits them with the batch);
`mailer review` uses the same code to register a message by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.clock import Clock
from mailer.contacts import Contact, normalize_key
from mailer.models import (
    ANSWERS,
    DELIVERIES,
    REGISTRATIONS,
    SUPPRESSIONS,
    AnswerStatus,
    DeliveryKind,
    InvitationMatch,
    RegistrationStatus,
    Suppression,
    SuppressionReason,
)
from mailer.reading.classify import Kind
from mailer.reading.understand import Reading
from mailer.reasons import Code, Reason
from mailer.settings import Settings
from mailer.store import Doc, Store
from mailer.suppress import judge_bounce
from mailer.trust import office_domain, registration_key, same_office

log = logging.getLogger(__name__)


@dataclass
class _Index:
    """Per-message look-ups kept in memory, so their cost does not grow with the state."""

    incomplete_by_sender: dict[str, str] = field(default_factory=dict)
    incomplete_by_message: dict[str, str] = field(default_factory=dict)
    # Tuples, not sets or lists: one per sender, most hold a single key (a set is 216 bytes).
    registrations_by_sender: dict[str, tuple[str, ...]] = field(default_factory=dict)
    answer_inbound: dict[str, str] = field(default_factory=dict)  # answer Message-ID → inbound
    answers_by_sender: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, store: Store) -> _Index:
        index = cls()
        for doc in store.iter(REGISTRATIONS):
            index.add_registration(doc)
        for doc in store.iter(ANSWERS):
            index.add_answer(doc)
        return index

    def add_registration(self, doc: Doc) -> None:
        sender, key = doc.get("sender", ""), doc["key"]
        known = self.registrations_by_sender.get(sender, ())
        if key not in known:
            self.registrations_by_sender[sender] = (*known, key)
        if doc.get("status") == RegistrationStatus.INCOMPLETE:
            self.incomplete_by_sender[sender] = key
            for message in doc.get("messages", []):
                self.incomplete_by_message[message] = key
        elif self.incomplete_by_sender.get(sender) == key:
            del self.incomplete_by_sender[sender]

    def add_answer(self, doc: Doc) -> None:
        self.answer_inbound[doc["message_id"]] = doc["inbound"]
        mailbox = untagged(doc["to"])
        self.answers_by_sender[mailbox] = (*self.answers_by_sender.get(mailbox, ()), doc["key"])


def untagged(address: str) -> str:
    """The mailbox an address delivers to: lower case, without a `+tag` (RFC 5233 subaddress).

    The daily answer limit counts mailboxes: `victim+1@…` to `victim+7@…` all reach one
    person, who must not get seven answers a day a stranger asked for (issue 12).
    """
    local, at, domain = address.lower().rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}" if at else address.lower()


class Ledger:
    """Applies readings to the state, with the in-memory indexes that keep that cheap."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock,
                 contacts: Sequence[Contact]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.contacts = _index_contacts(contacts)
        # Our Message-ID → the contact it went to (the whole delivery is not needed).
        self.by_message_id = {d["message_id"]: d["contact"] for d in store.iter(DELIVERIES)}
        # Whom we mailed, and their office domains: invited even if the list changed since.
        self.delivered = {*self.by_message_id.values(),
                          *(f"@{d}" for d in map(office_domain, self.by_message_id.values())
                            if d)}
        self.index = _Index.build(store)

    def previous_values(self, sender: str, refs: tuple[str, ...]) -> dict[str, str] | None:
        """The incomplete form this reply may complete: same thread, else same sender."""
        index = self.index
        key = next((index.incomplete_by_message[index.answer_inbound[r]] for r in refs
                    if index.answer_inbound.get(r) in index.incomplete_by_message), None)
        key = key or index.incomplete_by_sender.get(sender)
        doc = self.store.get(REGISTRATIONS, key) if key else None
        if doc is None or doc.get("status") != RegistrationStatus.INCOMPLETE:
            return None
        return dict(doc.get("values", {}))

    def answers_today(self, sender: str) -> int:
        zone = self.settings.campaign.timezone
        today = self.clock.now().astimezone(zone).date()
        keys = self.index.answers_by_sender.get(untagged(sender), ())
        answers = (self.store.get(ANSWERS, k) for k in keys)
        return sum(1 for a in answers
                   if a and a["status"] != AnswerStatus.FAILED
                   and datetime.fromisoformat(a["created"]).astimezone(zone).date() == today)

    def apply(self, reading: Reading, *, by_hand: bool = False) -> dict[str, Any]:
        """The message's effect on registrations and suppressions (staged, not yet committed).

        Other people's registrations it would change are `withheld` for review, unless staff
        entered the values (`by_hand`).
        """
        if reading.kind is Kind.REGISTRATION:
            keys, withheld = self._register(reading, by_hand=by_hand)
            return {"registrations": keys, **({"withheld": withheld} if withheld else {})}
        if reading.kind is Kind.UNSUBSCRIBE:
            self._suppress(reading.sender, SuppressionReason.UNSUBSCRIBED, reading.key)
            return {"suppressed": [reading.sender]}
        if reading.kind is Kind.CANCELLATION:
            return self._cancel(reading)
        if reading.kind is Kind.BOUNCE:
            return self._bounce(reading)
        return {}

    def _bounce(self, reading: Reading) -> dict[str, Any]:
        """Suppress what a notice about our mail reports failed for good (issue 12, 14)."""
        found = reading.classification
        verdict = judge_bounce(found, sent_ids=self.sent_ids, recipient_of=self.recipient_of,
                               envelope=self.settings.own_addresses)
        complaint = found.reason.code is Code.COMPLAINT
        for address in verdict.suppress:
            reason = SuppressionReason.COMPLAINED if complaint else SuppressionReason.BOUNCED
            self._suppress(address, reason, reading.key)
            if not complaint:
                self._mark_bounced(address, reading.key)
        for address in verdict.undelivered:
            self._mark_bounced(address, reading.key, field="undelivered")
        effects: dict[str, Any] = {"suppressed": list(verdict.suppress)}
        if verdict.undelivered:
            effects["undelivered"] = list(verdict.undelivered)
        review = verdict.review()
        if review is not None:
            log.warning("message %s: %s", reading.key[:12], review)
            effects["not_suppressed"] = [*verdict.not_sent, *verdict.not_ours]
            effects["bounce_review"] = review.to_doc()
        return effects

    def sent_ids(self, address: str) -> set[str]:
        """The Message-IDs of what we sent to `address`: invitation, reminders, answers."""
        key = normalize_key(address)
        ids = {i for i, contact in self.by_message_id.items() if contact == key}
        invitation = self.store.get(DELIVERIES, f"{DeliveryKind.INVITATION}:{key}")
        if invitation and invitation.get("message_id"):  # sent since this ledger was built
            ids.add(invitation["message_id"])
        for answer_key in self.index.answers_by_sender.get(untagged(key), ()):
            answer = self.store.get(ANSWERS, answer_key)
            if answer and answer.get("status") == AnswerStatus.SENT \
                    and normalize_key(answer.get("to", "")) == key:
                ids.add(answer["message_id"])
        return ids

    def recipient_of(self, message_id: str) -> str | None:
        """Whom our invitation or reminder with that Message-ID went to, or None."""
        return self.by_message_id.get(message_id)

    def _register(self, reading: Reading, *, by_hand: bool) -> tuple[list[str], list[str]]:
        keys, withheld = [], []
        assert reading.decision is not None
        for registrant, statuses in zip(reading.registrants, reading.decision.statuses,
                                        strict=True):
            key = registration_key(registrant, reading.sender)
            if self._over_registrant_limit(reading.sender, key):
                continue
            old = self.store.get(REGISTRATIONS, key)
            if old and not by_hand and self._foreign(reading, key, old):
                log.warning("message %s would change another person's registration: held "
                            "for review", reading.key[:12])
                withheld.append(key)
                continue
            was_cancelled = old and old.get("status") == RegistrationStatus.CANCELLED
            events = dict(old["events"]) if old and not was_cancelled else {}
            events.update({e: str(s) for e, s in statuses.items()})
            doc: Doc = {
                "email": registrant.email, "name": registrant.name,
                "position": registrant.position, "city": registrant.city,
                "phone": registrant.phone, "events": events,
                "requested": list(registrant.events),
                "status": RegistrationStatus.COMPLETE if registrant.complete
                else RegistrationStatus.INCOMPLETE,
                "problems": [{"field": p.field, "message": p.message}
                             for p in registrant.problems],
                "warnings": [p.message for p in registrant.warnings],
                "values": _values_of(registrant), "sources": dict(registrant.sources),
                "sender": reading.sender,
                "received": reading.received.isoformat(),
                "messages": [*(old or {}).get("messages", []), reading.key],
                "invitation": self.match_invitation(reading),
                "history": _history(old), "updated": self.clock.now().isoformat(),
            }
            self._stage_registration(key, doc)
            self._supersede(reading.sender, key)
            keys.append(key)
        return keys, withheld

    def _foreign(self, reading: Reading, key: str, old: Doc) -> bool:
        """`old` is someone else's registration that this sender may not change (issue 12):
        they are neither its person nor who registered it, of neither one's office domain,
        and do not reply in our thread. Otherwise anyone could overwrite it, then cancel it."""
        owners = (key, str(old.get("sender") or key))
        sender = reading.sender
        if any(untagged(sender) == untagged(owner) or same_office(sender, owner)
               for owner in owners):
            return False
        return not self.in_our_thread(reading)

    def unverified(self, reading: Reading) -> Reason | None:
        """None when the sender is plausibly who the From says — authenticated by our MX, an
        invited contact, or replying in our thread — else why their answer waits for review."""
        if reading.authenticated or self.invited(reading.sender) or self.in_our_thread(reading):
            return None
        return Reason.of(Code.ANSWER_HELD)

    def invited(self, sender: str) -> bool:
        """`sender` (with or without its +tag) or its office's domain was invited."""
        known = (self.contacts, self.delivered)
        if any(a in k for a in (sender.lower(), untagged(sender)) for k in known):
            return True
        domain = office_domain(sender)
        return bool(domain) and any(f"@{domain}" in k for k in known)

    def in_our_thread(self, reading: Reading) -> bool:
        """The reply names a message we sent: an invitation or reminder, or an answer that
        went out (a held answer's id is computable by whoever wrote the message it answers)."""
        for ref in reading.refs:
            if ref in self.by_message_id:
                return True
            inbound = self.index.answer_inbound.get(ref)
            answer = self.store.get(ANSWERS, inbound) if inbound else None
            if answer and answer.get("status") == AnswerStatus.SENT:
                return True
        return False

    def _over_registrant_limit(self, sender: str, key: str) -> bool:
        """A flood of registrations from one address stops at a limit (for a human to see)."""
        known = self.index.registrations_by_sender.get(sender, ())
        limit = self.settings.answers.max_registrants_per_sender
        if key in known or len(known) < limit:
            return False
        log.warning("%s has registered %d people already: %s not registered", sender,
                    len(known), key)
        return True

    def _supersede(self, sender: str, key: str) -> None:
        """An incomplete form kept under the sender's address, now completed under another."""
        old = self.store.get(REGISTRATIONS, sender)
        if sender != key and old and old.get("status") == RegistrationStatus.INCOMPLETE:
            self._stage_registration(sender, {**old, "status": RegistrationStatus.SUPERSEDED,
                                              "superseded_by": key})

    def _stage_registration(self, key: str, doc: Doc) -> None:
        self.store.stage(REGISTRATIONS, key, doc)
        self.index.add_registration(doc)

    def _cancel(self, reading: Reading) -> dict[str, Any]:
        cancelled: list[str] = []
        keys = []
        # The events the message withdraws from (issue 13: "rezygnuję z warsztatu, PIM
        # zostawiam" keeps PIM); none named means every one.
        only = set(reading.classification.cancelled)
        candidates = {reading.sender, *self.index.registrations_by_sender.get(reading.sender, ())}
        for key in sorted(candidates):
            doc = self.store.get(REGISTRATIONS, key)
            # Only the sender's own, or one they made and nobody has changed since: the
            # answer names the events cancelled (issue 12).
            if doc and reading.sender in (key, doc.get("sender")) and doc.get("status") in (
                    RegistrationStatus.COMPLETE, RegistrationStatus.INCOMPLETE):
                gone = [e for e in doc["events"] if not only or e in only]
                if not gone and doc["events"]:
                    continue  # none of the events withdrawn is in this registration
                cancelled += [e for e in gone if e not in cancelled]
                kept = {e: v for e, v in doc["events"].items() if e not in gone}
                self._stage_registration(doc["key"], {
                    **doc, "history": _history(doc), "updated": self.clock.now().isoformat(),
                    **({"events": kept} if kept else {"status": RegistrationStatus.CANCELLED}),
                    "messages": [*doc.get("messages", []), reading.key]})
                keys.append(doc["key"])
        return {"cancelled": cancelled, "registrations": keys}

    def _suppress(self, address: str, reason: SuppressionReason, message_key: str) -> None:
        doc: Suppression = {"reason": reason, "message": message_key,
                            "at": self.clock.now().isoformat()}
        self.store.stage(SUPPRESSIONS, address.lower(), dict(doc))  # the store takes plain dicts

    def _mark_bounced(self, address: str, message_key: str, *, field: str = "bounced") -> None:
        key = normalize_key(address)
        delivery = self.store.get(DELIVERIES, f"{DeliveryKind.INVITATION}:{key}")
        if delivery:
            self.store.stage(DELIVERIES, delivery["key"], {**delivery, field: message_key})

    def match_invitation(self, reading: Reading) -> InvitationMatch | None:
        """The contact invited: by our Message-ID in the thread, else the address, else domain."""
        for ref in reading.refs:
            if ref in self.by_message_id:
                return _invited(self.contacts.get(self.by_message_id[ref]),
                                "message-id")
        if reading.sender in self.contacts:
            return _invited(self.contacts[reading.sender], "address")
        domain = reading.sender.rpartition("@")[2]
        return _invited(self.contacts.get(f"@{domain}"), "domain") if domain else None


def _values_of(registrant: Any) -> dict[str, str]:
    fields = ("name", "position", "city", "email", "phone")
    values = {f: getattr(registrant, f) or "" for f in fields}
    values["event"] = ", ".join(registrant.events)
    return values


def _history(old: Doc | None) -> list[Doc]:
    """Earlier versions of a registration, newest last (history is kept)."""
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


def _invited(contact: Contact | None, by: str) -> InvitationMatch | None:
    if contact is None:
        return None
    return {"contact": contact.key, "city": contact.fields.get("miasto", ""), "by": by}
