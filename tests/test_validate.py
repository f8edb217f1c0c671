"""Tests for validate: event matching, required fields, e-mail and phone normalisation."""

from __future__ import annotations

import pytest

from mailer.reading.validate import INVALID, Problem, Registrant, match_events, validate_draft
from mailer.settings import Event
from tests.events import EVENTS, PIM, SMART_CITY

BOTH = ("smart-city", "pim")
SENDER = "jan.kowalski@gdynia.pl"
GOOD = {
    "event": "oba",
    "name": "Jan Kowalski",
    "position": "Naczelnik Wydziału",
    "city": "Urząd Miasta Gdyni",
    "email": "jan.kowalski@gdynia.pl",
    "phone": "58 668 80 00",
}


def draft(**changes: str | None) -> dict[str, str]:
    """GOOD with some fields changed (None: the field is absent)."""
    values = {**GOOD, **changes}
    return {k: v for k, v in values.items() if v is not None}


def codes(registrant: Registrant) -> dict[str, str]:
    """field -> code of every error."""
    return {p.field: p.code for p in registrant.problems}


@pytest.mark.parametrize(("text", "ids"), [
    ("warsztat Smart City", ("smart-city",)),
    ("Smart City", ("smart-city",)),
    ("SMART CITY", ("smart-city",)),
    ("warsztat", ("smart-city",)),
    ("smart-city", ("smart-city",)),
    ("Smart–City", ("smart-city",)),
    ("Warsztat „Smart City – doświadczenia i wyzwania”", ("smart-city",)),
    ('warsztat "Smart City - doswiadczenia i wyzwania"', ("smart-city",)),
    ("udział w warsztacie", ("smart-city",)),
    ("PIM", ("pim",)),
    ("pim", ("pim",)),
    ("Partnerska Inicjatywa Miast", ("pim",)),
    ("PARTNERSKA INICJATYWA MIAST", ("pim",)),
    ("Partnerskiej Inicjatywy Miast", ("pim",)),
    ("nabór", ("pim",)),
    ("NABOR", ("pim",)),
    ("nabór do PIM", ("pim",)),
    ("Partnerska Inicjatywa Miast 2021–2023 – nabór miast", ("pim",)),
    ("warsztat Smart City / PIM / oba", BOTH),
    ("(warsztat Smart City / PIM / oba)", BOTH),
    ("oba", BOTH),
    ("Oba", BOTH),
    ("obydwa", BOTH),
    ("obie", BOTH),
    ("wszystkie", BOTH),
    ("both", BOTH),
    ("all", BOTH),
    ("oba wydarzenia", BOTH),
    ("PIM, warsztat", BOTH),
    ("warsztat i PIM", BOTH),
    ("warsztat oraz nabór", BOTH),
    ("Smart City + PIM", BOTH),
    ("Smart City & PIM", BOTH),
    ("Smart City; PIM", BOTH),
    ("Smart City\nPIM", BOTH),
    ("Warsztat „Smart City – doświadczenia i wyzwania” oraz PIM", BOTH),
])
def test_match_events_recognises(text: str, ids: tuple[str, ...]) -> None:
    """Ids, aliases, titles, separators and 'both' words match, diacritics and case ignored."""
    assert match_events(text, EVENTS) == (ids, [])


@pytest.mark.parametrize(("text", "ids", "unknown"), [
    ("konferencja", (), ["konferencja"]),
    ("PIM, konferencja", ("pim",), ["konferencja"]),
    ("warsztat / Kongres Miast  Polskich", ("smart-city",), ["Kongres Miast Polskich"]),
    ("pimple", (), ["pimple"]),
    ("smartfon", (), ["smartfon"]),
])
def test_match_events_reports_unknown_parts(
    text: str, ids: tuple[str, ...], unknown: list[str]
) -> None:
    """A part that names no event comes back as written; aliases match only on word boundaries."""
    assert match_events(text, EVENTS) == (ids, unknown)


def test_match_events_short_alias_only_as_whole_part() -> None:
    """An alias shorter than 3 characters matches a whole part, never inside one."""
    events = (Event(id="w1", title="Warsztat pierwszy", deadline=SMART_CITY.deadline,
                    aliases=("w1x", "sc")),)
    assert match_events("SC", events) == (("w1",), [])
    assert match_events("sc plus", events) == ((), ["sc plus"])


def test_complete_registrant_is_normalised() -> None:
    """A fully filled form gives a complete registrant with E.164 phone and tidy values."""
    result = validate_draft(draft(name="  Jan   Kowalski ", email="Jan.Kowalski@Gdynia.PL"),
                            sender=SENDER, events=EVENTS)
    assert result == Registrant(
        name="Jan Kowalski", position="Naczelnik Wydziału", city="Urząd Miasta Gdyni",
        email="Jan.Kowalski@gdynia.pl", phone="+48586688000", events=BOTH,
    )
    assert result.complete


@pytest.mark.parametrize("email", [None, "", "brak", "-"])
def test_missing_email_is_the_senders(email: str | None) -> None:
    """No address in the form (absent, empty, placeholder) means the sender's address."""
    result = validate_draft(draft(email=email), sender="Anna.Nowak@GDANSK.gda.pl",
                            events=EVENTS)
    assert result.email == "Anna.Nowak@gdansk.gda.pl"
    assert result.complete


def test_missing_email_without_usable_sender_is_missing() -> None:
    """No address in the form and no valid sender: the e-mail is reported missing."""
    result = validate_draft(draft(email=None), sender="", events=EVENTS)
    assert codes(result) == {"email": "missing"}
    assert not result.complete


@pytest.mark.parametrize("email", ["jan.kowalski@gdynia", "jan kowalski@gdynia.pl",
                                   "jan.kowalski", "jan@@gdynia.pl"])
def test_invalid_email(email: str) -> None:
    """An invalid address is an error quoting what was written; the sender is not substituted."""
    result = validate_draft(draft(email=email), sender=SENDER, events=EVENTS)
    assert result.problems == (Problem(
        "email", f"Adres e-mail „{email}” jest niepoprawny – prosimy sprawdzić jego pisownię "
        "i podać adres w postaci nazwa@domena.pl.", "invalid"),)
    assert result.email is None
    assert not result.complete


def test_email_with_display_name_is_reduced_to_address() -> None:
    """"Name <address>" typed into the field keeps only the address."""
    result = validate_draft(draft(email="Jan Kowalski <jan@Gdynia.pl>"), sender=SENDER,
                            events=EVENTS)
    assert result.email == "jan@gdynia.pl"


@pytest.mark.parametrize(("phone", "e164"), [
    ("58 123 45 67", "+48581234567"),
    ("+48 58 123 45 67", "+48581234567"),
    ("(58) 123-45-67", "+48581234567"),
    ("601 234 567", "+48601234567"),
    ("0048 601234567", "+48601234567"),
    ("+44 20 7946 0958", "+442079460958"),
])
def test_phone_normalised_to_e164(phone: str, e164: str) -> None:
    """Polish numbers in the usual written forms (and foreign ones with a prefix) become E.164."""
    result = validate_draft(draft(phone=phone), sender=SENDER, events=EVENTS)
    assert (result.phone, result.warnings, result.complete) == (e164, (), True)


@pytest.mark.parametrize(("phone", "kept"), [
    ("123", "123"),
    ("nie mam", "nie mam"),
    ("58 123 wew. 12", "58 123 wew. 12"),
])
def test_unparsable_phone_is_kept_with_warning(phone: str, kept: str) -> None:
    """A phone that is no valid number is kept as written with a warning, not an error."""
    result = validate_draft(draft(phone=phone), sender=SENDER, events=EVENTS)
    assert result.phone == kept
    assert [(w.field, w.code) for w in result.warnings] == [("phone", "warning")]
    assert result.complete


@pytest.mark.parametrize("phone", [None, "", "-", "brak"])
def test_phone_is_optional(phone: str | None) -> None:
    """No phone (absent, empty, placeholder) is neither an error nor a warning."""
    result = validate_draft(draft(phone=phone), sender=SENDER, events=EVENTS)
    assert (result.phone, result.warnings, result.complete) == (None, (), True)


@pytest.mark.parametrize(("name", "code"), [
    (None, "missing"),
    ("", "missing"),
    ("-", "missing"),
    ("brak", "missing"),
    ("BRAK", "missing"),
    ("x", "missing"),
    ("...", "missing"),
    ("nie dotyczy", "missing"),
    ("12345", "invalid"),
    ("J", "invalid"),
    ("jan.kowalski@gdynia.pl", "invalid"),
])
def test_placeholder_or_invalid_name(name: str | None, code: str) -> None:
    """Placeholders count as a missing name; digits, one letter or an address are invalid."""
    result = validate_draft(draft(name=name), sender=SENDER, events=EVENTS)
    assert codes(result) == {"name": code}
    assert result.name is None


def test_placeholder_name_message_quotes_it() -> None:
    """The message for a placeholder says what was written and what to give instead."""
    result = validate_draft(draft(name="brak"), sender=SENDER, events=EVENTS)
    assert result.problems[0].message == (
        "Pole „Imię i nazwisko” nie zostało wypełnione (wpisano „brak”) – prosimy podać "
        "imię i nazwisko osoby zgłaszanej.")


@pytest.mark.parametrize("name", ["Li Na", "Łucja Żółkiewska", "Anna Nowak-Kowalska"])
def test_real_names_accepted(name: str) -> None:
    """Short, Polish and double-barrelled names are accepted as written."""
    assert validate_draft(draft(name=name), sender=SENDER, events=EVENTS).name == name


@pytest.mark.parametrize(("city", "code"), [
    (None, "missing"), ("", "missing"), ("-", "missing"), ("brak", "missing"),
    ("00-950", "invalid"),
])
def test_city_required(city: str | None, code: str) -> None:
    """City / office is required and not a placeholder."""
    result = validate_draft(draft(city=city), sender=SENDER, events=EVENTS)
    assert codes(result) == {"city": code}


def test_empty_city_message() -> None:
    """An empty city gets the message that says exactly what to write."""
    result = validate_draft(draft(city=""), sender=SENDER, events=EVENTS)
    assert result.problems == (Problem(
        "city", "Pole „Miasto / urząd” jest puste – prosimy podać nazwę miasta lub urzędu.",
        "missing"),)


@pytest.mark.parametrize("position", [None, "", "-", "brak"])
def test_position_optional(position: str | None) -> None:
    """Position may be left out; a placeholder is stored as nothing."""
    result = validate_draft(draft(position=position), sender=SENDER, events=EVENTS)
    assert (result.position, result.complete) == (None, True)


@pytest.mark.parametrize("event", [None, "", "-"])
def test_empty_event_with_one_event_means_it(event: str | None) -> None:
    """With a single event in the campaign an empty `Wydarzenie` means that event."""
    result = validate_draft(draft(event=event), sender=SENDER, events=(PIM,))
    assert (result.events, result.complete) == (("pim",), True)


@pytest.mark.parametrize("event", [None, "", "-"])
def test_empty_event_with_several_events_lists_choices(event: str | None) -> None:
    """With several events an empty `Wydarzenie` is missing; the message lists the choices."""
    result = validate_draft(draft(event=event), sender=SENDER, events=EVENTS)
    assert codes(result) == {"event": "missing"}
    message = result.problems[0].message
    assert message.startswith("Pole „Wydarzenie” jest puste")
    for choice in ("„warsztat”", "„PIM”", "„oba”", SMART_CITY.title, PIM.title):
        assert choice in message


def test_unknown_event_quotes_the_part() -> None:
    """A part naming no event is an error quoting it; the recognised events are kept."""
    result = validate_draft(draft(event="PIM, Kongres"), sender=SENDER, events=EVENTS)
    assert result.events == ("pim",)
    assert codes(result) == {"event": "unknown_event"}
    assert result.problems[0].message.startswith(
        "Nie rozpoznaliśmy wydarzenia „Kongres” w polu „Wydarzenie” – prosimy wpisać: „warsztat”")


def test_empty_draft_lists_every_required_field() -> None:
    """An empty form reports event, name, city and e-mail (without a sender), in form order."""
    result = validate_draft({}, sender="", events=EVENTS)
    assert [(p.field, p.code) for p in result.problems] == [
        ("event", "missing"), ("name", "missing"), ("city", "missing"), ("email", "missing")]
    assert all(p.message.endswith(".") for p in result.problems)


@pytest.mark.parametrize("field", ["name", "position", "city"])
def test_a_value_longer_than_any_real_one_is_refused_not_repeated(field: str) -> None:
    """A 10 KB name, position or city makes the form incomplete; the answer asks to shorten
    it and repeats none of it."""
    values = {"event": "pim", "name": "Jan Kowalski", "city": "Gdynia",
              "position": "Naczelnik", field: "Naczelnik " * 1_000}
    registrant = validate_draft(values, sender="jan@gdynia.pl", events=EVENTS)
    assert not registrant.complete
    assert [(p.field, p.code) for p in registrant.problems] == [(field, INVALID)]
    assert "Naczelnik Naczelnik" not in registrant.problems[0].message
    assert getattr(registrant, field) is None


def test_the_longest_real_position_is_kept() -> None:
    """A long but real position (under 200 characters) is taken as written."""
    position = ("Zastępca Dyrektora Wydziału Strategii i Rozwoju Miasta w Urzędzie Miasta "
                "Stołecznego Warszawy, pełnomocnik Prezydenta ds. inteligentnego miasta")
    values = {"event": "pim", "name": "Jan Kowalski", "city": "Warszawa", "position": position}
    registrant = validate_draft(values, sender="jan@um.warszawa.pl", events=EVENTS)
    assert registrant.complete and registrant.position == position


@pytest.mark.parametrize(("phone", "kept"), [
    ("58 123  45 67 wew. 12", "+48581234567 wew. 12"),
    ("58 123 45 67 wewn. 305", "+48581234567 wew. 305"),
    ("58 123 45 67 w. 7", "+48581234567 wew. 7"),
    ("(58) 123-45-67, wew.12", "+48581234567 wew. 12"),
    ("+48 58 123 45 67 (wew. 12)", "+48581234567 wew. 12"),
    ("58 123 45 67 ext. 12", "+48581234567 wew. 12"),
    ("tel. (56) 451 02 75", "+48564510275"),
    ("(56) 451 02 75 wew. 1", "+48564510275 wew. 1"),
    ("600 100 200 (komórka)", "+48600100200"),
    ("58 123 45 67, kom. 600 100 200", "+48581234567"),
])
def test_phone_extension_is_kept_after_the_e164_number(phone: str, kept: str) -> None:
    """The main number becomes E.164, its extension (wew./wewn./w./ext.) follows it, the area
    code in brackets stays; text around one number does not hide it."""
    result = validate_draft(draft(phone=phone), sender=SENDER, events=EVENTS)
    assert (result.phone, result.warnings) == (kept, ())


@pytest.mark.parametrize(("text", "ids"), [
    ("warsztat, PIM – nie", ("smart-city",)),
    ("PIM - nie, warsztat - tak", ("smart-city",)),
    ("PIM: tak; warsztat: nie", ("pim",)),
    ("tylko warsztat, bez PIM", ("smart-city",)),
    ("PIM (bez warsztatu)", ("pim",)),
    ("nie oba, tylko PIM", ("pim",)),
    ("nie obydwa – jedynie warsztat", ("smart-city",)),
    ("warsztat, nie PIM", ("smart-city",)),
    ("rezygnuję z warsztatu, zostaje PIM", ("pim",)),
    ("oba oprócz PIM", ("smart-city",)),
    ("nie bierzemy udziału w warsztacie; PIM", ("pim",)),
    ("nie tylko PIM, także warsztat", BOTH),
    ("PIM\nwarsztat: nie", ("pim",)),
])
def test_match_events_an_event_mentioned_as_not_chosen_is_no_choice(
        text: str, ids: tuple[str, ...]) -> None:
    """A negation before an event (within a few words) or right after it declines it; "nie
    tylko" does not; yes/no words are no unknown event."""
    assert match_events(text, EVENTS) == (ids, [])


@pytest.mark.parametrize("event", ["PIM – nie", "bez warsztatu i bez PIM", "nie oba"])
def test_every_event_declined_is_a_missing_choice(event: str) -> None:
    """Declining every event named leaves no choice: the official is asked to choose."""
    result = validate_draft(draft(event=event), sender=SENDER, events=EVENTS)
    assert (result.events, codes(result)) == ((), {"event": "missing"})


@pytest.mark.parametrize("email", ["jw.", "jw. (nadawca)", "jak wyżej", "j.w.", "nadawca"])
def test_as_above_email_is_the_senders(email: str) -> None:
    """"jw.", "jak wyżej", "(nadawca)" in the e-mail field mean the sender's address."""
    result = validate_draft(draft(email=email), sender=SENDER, events=EVENTS)
    assert (result.email, result.complete) == (SENDER, True)


@pytest.mark.parametrize(("name", "kept"), [
    ("Pani Anna Nowak", "Anna Nowak"),
    ("pan Jan Kowalski", "Jan Kowalski"),
    ("Panek Jan", "Panek Jan"),
])
def test_form_of_address_is_not_part_of_the_name(name: str, kept: str) -> None:
    """"Pan"/"Pani" before a name is dropped; a surname starting with those letters is not."""
    assert validate_draft(draft(name=name), sender=SENDER, events=EVENTS).name == kept
