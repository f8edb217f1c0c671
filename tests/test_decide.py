"""Tests for decide: deadlines across offsets and DST, the answer, when not to answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailer.reading.decide import (
    Answer,
    EventStatus,
    answer_allowed,
    decide_registration,
    event_statuses,
)
from mailer.reading.understand import read
from mailer.reading.validate import Problem, Registrant
from mailer.settings import Event
from tests.events import EVENTS, PIM, SMART_CITY, WARSAW

CONFIRMED, LATE = EventStatus.CONFIRMED, EventStatus.LATE
SECOND = timedelta(seconds=1)
OWN = ("rejestracja@example.com", "Departament Strategii MFiPR <strategia@example.com>")


def at(text: str) -> datetime:
    """An aware datetime from ISO 8601 with an offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def event(deadline: datetime) -> Event:
    """A one-off event with that deadline."""
    return Event(id="e", title="Wydarzenie", deadline=deadline)


def person(*events: str, complete: bool = True) -> Registrant:
    """A registrant for those events; incomplete ones carry a missing-city problem."""
    problems = () if complete else (Problem("city", "Pole „Miasto / urząd” jest puste.",
                                            "missing"),)
    return Registrant(name="Jan Kowalski", position=None, city="Gdynia" if complete else None,
                      email="jan@gdynia.pl", phone=None, events=events, problems=problems)


@pytest.mark.parametrize(("received", "smart_city", "pim"), [
    (SMART_CITY.deadline, CONFIRMED, CONFIRMED),
    (SMART_CITY.deadline + SECOND, LATE, CONFIRMED),
    (at("2020-10-26T10:00:00+01:00"), CONFIRMED, CONFIRMED),
    (at("2020-10-26T09:00:00+00:00"), CONFIRMED, CONFIRMED),
    (at("2020-10-26T09:00:01+00:00"), LATE, CONFIRMED),
    (at("2020-10-26T11:00:00+02:00"), CONFIRMED, CONFIRMED),
    (PIM.deadline, LATE, CONFIRMED),
    (PIM.deadline + SECOND, LATE, LATE),
    (at("2020-11-02T23:59:59+01:00"), LATE, CONFIRMED),
    (at("2020-11-03T00:00:00+01:00"), LATE, LATE),
])
def test_both_sides_of_each_deadline(received: datetime, smart_city: EventStatus,
                                     pim: EventStatus) -> None:
    """Exactly at the deadline is confirmed, one second later is late, in any offset."""
    statuses = event_statuses(("smart-city", "pim"), received, EVENTS)
    assert statuses == {"smart-city": smart_city, "pim": pim}


@pytest.mark.parametrize(("received", "status"), [
    ("2020-10-20T11:00:00+01:00", CONFIRMED),  # 10:00 UTC: exactly the deadline
    ("2020-10-20T11:00:01+01:00", LATE),  # before 12:00 on the wall clock, yet later
    ("2020-10-20T12:30:00+03:00", CONFIRMED),  # after 12:00 on the wall clock, yet earlier
])
def test_offset_differs_from_deadlines(received: str, status: EventStatus) -> None:
    """A received time in another offset than the CEST deadline is compared as an instant."""
    deadline = datetime(2020, 10, 20, 12, 0, tzinfo=WARSAW)
    assert deadline.utcoffset() == timedelta(hours=2)
    assert event_statuses(("e",), at(received), (event(deadline),)) == {"e": status}


@pytest.mark.parametrize(("fold", "utc"), [(0, "2020-10-25T00:30:00"), (1, "2020-10-25T01:30:00")])
def test_ambiguous_deadline_uses_fold(fold: int, utc: str) -> None:
    """02:30 on 25 Oct 2020 happens twice in Warsaw; `fold` picks which, both sides hold."""
    deadline = datetime(2020, 10, 25, 2, 30, tzinfo=WARSAW, fold=fold)
    assert deadline.astimezone(UTC) == datetime.fromisoformat(utc).replace(tzinfo=UTC)
    catalogue = (event(deadline),)
    assert event_statuses(("e",), deadline.astimezone(UTC), catalogue) == {"e": CONFIRMED}
    assert event_statuses(("e",), deadline.astimezone(UTC) + SECOND, catalogue) == {"e": LATE}


def test_same_zone_wall_clock_does_not_decide() -> None:
    """02:45 CEST (first pass) is before 02:30 CET (second pass) although its wall time is later."""
    deadline = datetime(2020, 10, 25, 2, 30, tzinfo=WARSAW, fold=1)
    received = datetime(2020, 10, 25, 2, 45, tzinfo=WARSAW, fold=0)
    assert event_statuses(("e",), received, (event(deadline),)) == {"e": CONFIRMED}


@pytest.mark.parametrize(("received", "status"), [
    ("2020-10-25T03:00:00+01:00", CONFIRMED),  # the deadline itself, 02:00 UTC
    ("2020-10-25T03:30:00+02:00", CONFIRMED),  # 01:30 UTC: CEST no longer in force, still before
    ("2020-10-25T02:00:01+00:00", LATE),
    ("2020-10-25T03:00:01+01:00", LATE),
])
def test_deadline_right_after_dst_change(received: str, status: EventStatus) -> None:
    """A deadline just after the 25 Oct 2020 change (03:00 CET) is honoured on both sides."""
    deadline = datetime(2020, 10, 25, 3, 0, tzinfo=WARSAW)
    assert deadline.utcoffset() == timedelta(hours=1)
    assert event_statuses(("e",), at(received), (event(deadline),)) == {"e": status}


def test_naive_datetimes_raise() -> None:
    """Naive received, deadline or watermark is a programming error: ValueError."""
    naive = datetime(2020, 10, 20, 12, 0)
    with pytest.raises(ValueError, match="received"):
        event_statuses(("pim",), naive, EVENTS)
    with pytest.raises(ValueError, match="deadline"):
        event_statuses(("e",), at("2020-10-20T12:00:00+02:00"), (event(naive),))
    with pytest.raises(ValueError, match="received"):
        decide_registration([], naive, EVENTS)
    with pytest.raises(ValueError, match="watermark"):
        answer_allowed(sender="jan@gdynia.pl", own_addresses=OWN, automated=False,
                       received=at("2020-10-20T12:00:00+02:00"), watermark=naive,
                       answers_today=0, max_per_day=5)


def test_unknown_event_id_raises() -> None:
    """An id not in the catalogue is a programming error (validate only yields known ids)."""
    with pytest.raises(ValueError, match="unknown event id 'kongres'"):
        event_statuses(("kongres",), at("2020-10-20T12:00:00+02:00"), EVENTS)


EARLY = at("2020-10-20T12:00:00+02:00")  # both events open
BETWEEN = at("2020-10-27T12:00:00+01:00")  # smart-city closed, pim open
AFTER = at("2020-11-10T12:00:00+01:00")  # both closed


@pytest.mark.parametrize(("registrants", "received", "statuses", "answer"), [
    ([person("smart-city", "pim")], EARLY, [{"smart-city": CONFIRMED, "pim": CONFIRMED}],
     Answer.CONFIRMATION),
    ([person("smart-city", "pim")], BETWEEN, [{"smart-city": LATE, "pim": CONFIRMED}],
     Answer.CONFIRMATION),
    ([person("smart-city", "pim")], AFTER, [{"smart-city": LATE, "pim": LATE}],
     Answer.LATE_NOTICE),
    ([person("smart-city"), person("pim")], BETWEEN, [{"smart-city": LATE}, {"pim": CONFIRMED}],
     Answer.CONFIRMATION),
    ([person("smart-city"), person("pim", complete=False)], EARLY,
     [{"smart-city": CONFIRMED}, {}], Answer.INCOMPLETE),
    ([person("pim", complete=False), person("smart-city")], AFTER,
     [{}, {"smart-city": LATE}], Answer.INCOMPLETE),
    ([], EARLY, [], Answer.INCOMPLETE),
])
def test_decide_registration(registrants: list[Registrant], received: datetime,
                             statuses: list[dict[str, EventStatus]], answer: Answer) -> None:
    """Confirmation if anything was confirmed, late notice if all late, incomplete if any is."""
    decision = decide_registration(registrants, received, EVENTS)
    assert (list(decision.statuses), decision.answer) == (statuses, answer)


def test_reasons_name_the_events() -> None:
    """The staff reason says what was confirmed, what was late and how many were incomplete."""
    both = person("smart-city", "pim")
    between = decide_registration([both], BETWEEN, EVENTS)
    assert str(between.reason) == "confirmed: pim; late: smart-city"
    assert str(decide_registration([both], AFTER, EVENTS).reason) == "all late: smart-city, pim"
    mixed = decide_registration([both, person(complete=False)], EARLY, EVENTS)
    assert str(mixed.reason) == "1 of 2 registrants incomplete"


ALLOWED = {
    "sender": "jan.kowalski@gdynia.pl",
    "own_addresses": OWN,
    "automated": False,
    "received": EARLY,
    "watermark": at("2020-10-19T09:00:00+02:00"),
    "answers_today": 0,
    "max_per_day": 5,
}


@pytest.mark.parametrize(("changes", "reason"), [
    ({}, None),
    ({"sender": "Jan Kowalski <jan.kowalski@gdynia.pl>"}, None),
    ({"watermark": None}, None),
    ({"watermark": EARLY}, None),
    ({"watermark": EARLY.astimezone(timezone(timedelta(hours=-5)))}, None),
    ({"answers_today": 4}, None),
    ({"sender": "REJESTRACJA@Example.com"}, "own address"),
    ({"sender": "Strategia@EXAMPLE.com"}, "own address"),
    ({"automated": True}, "automated message"),
    ({"watermark": EARLY + SECOND}, "received before the watermark (backlog: for review only)"),
    ({"answers_today": 5}, "over daily limit (5 of 5 answers to this sender today)"),
    ({"max_per_day": 0}, "over daily limit (0 of 0 answers to this sender today)"),
    ({"sender": ""}, "no sender address"),
    ({"sender": "<>"}, "no sender address"),
    ({"sender": "MAILER-DAEMON"}, "sender address not valid"),
    ({"sender": "jan@gdynia"}, "sender address not valid"),
    # What the reader already worked out of the sender is taken as it is.
    ({"sender_valid": False}, "sender address not valid"),
    ({"sender": "jan@gdynia", "sender_valid": True}, None),
])
def test_answer_allowed(changes: dict[str, object], reason: str | None) -> None:
    """An answer goes out only to a valid, foreign, human sender, after the watermark, in limit."""
    args = {**ALLOWED, **changes}
    refusal = answer_allowed(**args)  # type: ignore[arg-type]
    assert (None if refusal is None else str(refusal)) == reason


@pytest.mark.parametrize(("raw", "valid"), [
    (b"From: Jan Kowalski <jan.kowalski@gdynia.pl>\r\n\r\nZg\xc5\x82aszam si\xc4\x99.\r\n", True),
    (b"From: jan@gdynia\r\n\r\nZgloszenie\r\n", False),
    (b"From: MAILER-DAEMON\r\n\r\nZgloszenie\r\n", False),
])
def test_the_reader_says_whether_the_sender_can_be_answered(raw: bytes, valid: bool) -> None:
    reading = read(raw, received=EARLY, events=EVENTS)
    assert reading.sender_valid is valid
