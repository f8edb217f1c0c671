"""Pure decisions: per-event status from the received time, the answer, and whether to send it."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from enum import StrEnum

from mailer.reading.validate import Registrant, normal_address
from mailer.reasons import Code, Reason
from mailer.settings import Event


class EventStatus(StrEnum):
    """A registrant's standing for one event."""

    CONFIRMED = "confirmed"
    LATE = "late"


class Answer(StrEnum):
    """The answer template to send (`answer` in `mailer inspect --json`)."""

    CONFIRMATION = "confirmation"
    LATE_NOTICE = "late_notice"
    INCOMPLETE = "incomplete"
    UNSUBSCRIBED = "unsubscribed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Decision:
    """What one incoming message amounts to and which answer (if any) it gets."""

    statuses: tuple[Mapping[str, EventStatus], ...]  # per registrant; {} for an incomplete one
    answer: Answer | None
    reason: Reason


def _require_aware(moment: datetime, what: str) -> datetime:
    """`moment` in UTC. Naive times are a caller's bug: the zone is unknowable here."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def event_statuses(events: Sequence[str], received: datetime,
                   catalogue: Sequence[Event]) -> dict[str, EventStatus]:
    """Event id -> confirmed (received ≤ deadline) or late, for the ids in `events`."""
    # Compared in UTC: Python compares two datetimes sharing one tzinfo by wall time, ignoring
    # `fold`, so 02:45 CEST would count as later than 02:30 CET on 25 Oct 2020.
    at = _require_aware(received, "received")
    by_id = {event.id: event for event in catalogue}
    statuses: dict[str, EventStatus] = {}
    for event_id in events:
        if event_id not in by_id:
            raise ValueError(f"unknown event id {event_id!r}; the catalogue has: "
                             + ", ".join(by_id))
        deadline = _require_aware(by_id[event_id].deadline, f"deadline of {event_id}")
        statuses[event_id] = EventStatus.CONFIRMED if at <= deadline else EventStatus.LATE
    return statuses


def _outcome(statuses: Sequence[Mapping[str, EventStatus]]) -> tuple[Answer, Reason]:
    """The answer for complete registrants: confirmation if anything was confirmed."""
    confirmed = list(dict.fromkeys(e for s in statuses for e, v in s.items()
                                   if v is EventStatus.CONFIRMED))
    late = list(dict.fromkeys(e for s in statuses for e, v in s.items() if v is EventStatus.LATE))
    if confirmed and late:
        return Answer.CONFIRMATION, Reason.of(Code.CONFIRMED_SOME_LATE,
                                              confirmed=", ".join(confirmed), late=", ".join(late))
    if confirmed:
        return Answer.CONFIRMATION, Reason.of(Code.CONFIRMED, confirmed=", ".join(confirmed))
    if late:
        return Answer.LATE_NOTICE, Reason.of(Code.ALL_LATE, late=", ".join(late))
    return Answer.INCOMPLETE, Reason.of(Code.NO_EVENT)


def decide_registration(registrants: Sequence[Registrant], received: datetime,
                        catalogue: Sequence[Event]) -> Decision:
    """Statuses per registrant and the one answer the message gets.

    Complete registrants get their statuses even when another registrant in the same message is
    incomplete; the answer is then `incomplete` (it lists what to correct), and the corrected
    reply decides again. A registration message with no form at all is `incomplete` too: the
    answer asks for the form.
    """
    _require_aware(received, "received")
    statuses = tuple(
        event_statuses(r.events, received, catalogue) if r.complete else {} for r in registrants
    )
    if not registrants:
        return Decision(statuses, Answer.INCOMPLETE, Reason.of(Code.NO_FORM_FOUND))
    incomplete = sum(not r.complete for r in registrants)
    if incomplete:
        return Decision(statuses, Answer.INCOMPLETE,
                        Reason.of(Code.SOME_INCOMPLETE, incomplete=incomplete,
                                  total=len(registrants)))
    answer, reason = _outcome(statuses)
    return Decision(statuses, answer, reason)


_DISPLAY_FORM = frozenset(' \t<>()",;:[]\\')  # what only "Name <addr>" and its kin contain


@functools.lru_cache(maxsize=1024)  # our own addresses, asked for every message
def _bare(address: str) -> str:
    """The addr-spec of "Name <addr>" or of a bare address, case-folded for comparison."""
    address = address.strip()
    if address.count("@") == 1 and _DISPLAY_FORM.isdisjoint(address):
        return address.casefold()  # already an addr-spec (a reply's sender): parseaddr is slow
    return parseaddr(address)[1].strip().casefold()


def sender_is_valid(sender: str) -> bool:
    """Whether a reply's sender is an address an answer could be sent to (email-validator;
    the reader works it out in its worker, where the form's e-mail warmed the same cache)."""
    address = _bare(sender)
    return bool(address) and normal_address(address) is not None


def _address_refusal(sender: str, own_addresses: Collection[str],
                     valid: bool | None) -> Reason | None:
    address = _bare(sender)
    if not address:
        return Reason.of(Code.NO_SENDER)
    if address in {_bare(own) for own in own_addresses}:
        return Reason.of(Code.OWN_ADDRESS)  # answering ourselves would loop
    if not (sender_is_valid(sender) if valid is None else valid):
        return Reason.of(Code.SENDER_INVALID)
    return None


def answer_allowed(*, sender: str, own_addresses: Collection[str], automated: bool,
                   received: datetime, watermark: datetime | None, answers_today: int,
                   max_per_day: int, forged: str | None = None,
                   sender_valid: bool | None = None) -> Reason | None:
    """None when an answer may be sent to `sender`, else the reason why not (`sender_valid`:
    what `sender_is_valid` already said of it, if anyone asked)."""
    at = _require_aware(received, "received")
    since = None if watermark is None else _require_aware(watermark, "watermark")
    refusal = _address_refusal(sender, own_addresses, sender_valid)
    if refusal is not None:
        return refusal
    if automated:
        return Reason.of(Code.AUTOMATED)  # RFC 3834 §2: never answer auto-replies or bounces
    if forged:
        # Answering would mail the victim of a forged sender.
        return Reason.of(Code.NOT_AUTHENTICATED, verdict=forged)
    if since is not None and at < since:
        return Reason.of(Code.BACKLOG)
    if answers_today >= max_per_day:
        return Reason.of(Code.DAILY_LIMIT, count=answers_today, limit=max_per_day)
    return None
