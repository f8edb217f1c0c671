"""People named without the form's labels (reading.prose, issue 13): sentences, lists, one-line
identities and signatures, each value with the rule that found it."""

from __future__ import annotations

import time

import pytest

from mailer.reading.prose import has_intent, read_prose

SENTENCE_CASES = [
    # (own text, expected values of the one person read)
    ("Uprzejmie informuję, że w warsztacie weźmie udział Pan Jan Nowak, Zastępca Burmistrza, "
     "tel. 12 345 67 89 wew. 21, e-mail: jan.nowak@um.example.pl<mailto:jan.nowak@um.example.pl>",
     {"name": "Jan Nowak", "position": "Zastępca Burmistrza",
      "email": "jan.nowak@um.example.pl", "phone": "12 345 67 89 wew. 21"}),
    ("Miasto Kórnik zgłasza na warsztat Panią Ewę Malinowską, inspektora w Wydziale Promocji.",
     {"name": "Ewa Malinowska", "position": "inspektor w Wydziale Promocji", "city": "Kórnik"}),
    ("Zgłaszam Pana Marka Zielińskiego – Kierownika Referatu – z Urzędu Gminy Dobra.",
     {"name": "Marek Zieliński", "position": "Kierownik Referatu", "city": "Urząd Gminy Dobra"}),
    ("W obu wydarzeniach uczestniczyć będzie Adam Lis - Sekretarz Gminy, tel. 600 100 200.",
     {"name": "Adam Lis", "position": "Sekretarz Gminy", "phone": "600 100 200"}),
    ("Potwierdzam udział Pana Pawła Gronka w warsztacie. Kontakt: p.gronek@ug.example.pl",
     {"name": "Paweł Gronek", "email": "p.gronek@ug.example.pl"}),
    # The town a sentence of intent names once is everyone's, as a list's introduction is;
    # one that names none gives none.
    ("Gmina Dobra zgłasza udział w warsztacie. Weźmie w nim udział Pan Adam Lis, Sekretarz "
     "Gminy.", {"name": "Adam Lis", "position": "Sekretarz Gminy", "city": "Dobra"}),
    ("Zgłaszamy udział w PIM. Weźmie w nim udział Pan Adam Lis, Sekretarz Gminy.",
     {"name": "Adam Lis", "position": "Sekretarz Gminy", "city": None}),
    # A bare "Urzędu" names no office: the town comes from elsewhere, not "Urząd".
    ("Ze strony Urzędu w warsztacie udział weźmie Pani Joanna Wrona, Sekretarz Miasta.",
     {"name": "Joanna Wrona", "position": "Sekretarz Miasta", "city": None}),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCE_CASES)
def test_a_sentence_names_someone(text: str, expected: dict[str, str]) -> None:
    """One sentence registering someone gives their name (nominative), post, office, contacts."""
    people = read_prose(text)
    assert len(people) == 1
    values = people[0].values
    assert {k: values.get(k) for k in expected} == expected
    assert set(people[0].sources.values()) <= {"sentence", "signature"}


def test_a_list_gives_each_person_their_events_and_the_shared_city() -> None:
    """Bullets and numbers: one person per item, the city said once applies to every item."""
    text = ("Z Urzędu Miejskiego w Redzie zgłaszam:\n"
            "1. Anna Nowak – główny specjalista, a.nowak@um.example.pl – warsztat i PIM\n"
            "2. Jan Kos – inspektor, tel. 58 100 20 30 – tylko PIM\n")
    people = read_prose(text)
    assert [p.values["name"] for p in people] == ["Anna Nowak", "Jan Kos"]
    assert [p.values["city"] for p in people] == ["Urząd Miejski w Redzie"] * 2
    assert people[0].values["position"] == "główny specjalista"
    assert "warsztat" in people[0].values["event"] and "PIM" in people[0].values["event"]
    assert "PIM" in people[1].values["event"] and "warsztat" not in people[1].values["event"]
    assert people[1].sources["city"] == "list" and people[1].sources["name"] == "list"


def test_items_without_events_take_the_intro_events() -> None:
    """An item naming only a person takes the events of the sentence introducing the list."""
    text = "Na warsztat zgłaszamy z UM Sopot:\n- Ewa Kot, referent\n- Olga Lis, podinspektor\n"
    people = read_prose(text)
    assert [p.values["event"] for p in people] == ["Na warsztat zgłaszamy z UM Sopot:"] * 2
    assert [p.values["city"] for p in people] == ["UM Sopot"] * 2


@pytest.mark.parametrize(("text", "expected"), [
    ("Anna Kowalska, inspektor, UM Łomża, 86 215 66 00 – oba",
     {"name": "Anna Kowalska", "position": "inspektor", "city": "UM Łomża",
      "phone": "86 215 66 00"}),
    ("Jan Bąk / Dyrektor Wydziału Rozwoju / UG Wola / 22 100 20 30 - warsztat",
     {"name": "Jan Bąk", "position": "Dyrektor Wydziału Rozwoju", "city": "UG Wola"}),
])
def test_a_one_line_identity(text: str, expected: dict[str, str]) -> None:
    """A comma- or slash-separated identity typed on a phone, with the events after it."""
    people = read_prose(text)
    assert len(people) == 1
    assert {k: people[0].values.get(k) for k in expected} == expected
    assert people[0].sources["name"] == "line"


def test_a_one_line_signature_alone_is_no_registration() -> None:
    """Name, post, office and number with nothing beside them is a signature, not a reply."""
    assert read_prose("Anna Kowalska, inspektor, UM Łomża, 86 215 66 00") == []


@pytest.mark.parametrize("body", [
    "Zgłaszam się na PIM.",
    "Proszę o zapisanie mnie na warsztat. Dane w stopce.",
    "Dzień dobry, wezmę udział w obu wydarzeniach.\n\n--",
])
def test_the_signature_is_the_data_when_the_message_holds_only_intent(body: str) -> None:
    """Intent (or a pointer to the signature) and a signature: the signature's values."""
    text = (f"{body}\n\nZ poważaniem\nMarta Wrona\nKierownik Biura Strategii\n"
            "Urząd Miasta Kalisza\nul. Główna 1, 62-800 Kalisz\ntel. 62 765 43 21\n")
    people = read_prose(text)
    assert len(people) == 1
    assert dict(people[0].values) | {"event": ""} == {
        "event": "", "name": "Marta Wrona", "position": "Kierownik Biura Strategii",
        "city": "Urząd Miasta Kalisza", "phone": "62 765 43 21"}
    assert set(people[0].sources.values()) == {"signature"}
    assert read_prose(text, signature_as_data=False) == []


@pytest.mark.parametrize("text", [
    "Dziękuję za informację.\n\nPozdrawiam\nMarta Wrona\nUrząd Miasta Kalisza",
    "Czy mogę zgłosić Pana Jana Nowaka na warsztat?\n\nMarta Wrona",
    "Niestety nie wezmę udziału.\n\nPozdrawiam\nMarta Wrona",
    "Jestem nieobecna. W sprawach pilnych proszę o kontakt z Panem Janem Nowakiem.",
    "Zgłaszam udział w naborze do Partnerskiej Inicjatywy Miast.",
])
def test_no_person_without_intent_or_a_name(text: str) -> None:
    """No registration from thanks, questions, refusals, absences or a title."""
    assert read_prose(text) == []


@pytest.mark.parametrize(("sentence", "intent"), [
    ("Zgłaszam się na warsztat.", True),
    ("W warsztacie weźmie udział Pan Jan Nowak.", True),
    ("Potwierdzam udział.", True),
    # Words between the verb and what it confirms.
    ("Potwierdzam niniejszym nasz udział w warsztacie 26.10.", True),
    ("Potwierdzamy swoje uczestnictwo w PIM.", True),
    ("Proszę mnie wpisać jako osobę do kontaktu w sprawie PIM.", True),
    ("Nie potwierdzam jeszcze swojego udziału.", False),
    ("Nie wezmę udziału.", False),
    ("Czy mogę zgłosić kolegę?", False),
    ("Do PIM zgłoszenie wyślemy osobno.", False),
])
def test_intent(sentence: str, intent: bool) -> None:
    """Intent words, not negated and not asked."""
    assert has_intent(sentence) is intent


@pytest.mark.parametrize("text", [
    "Pan " * 50_000,
    "Jan Nowak, " * 30_000,
    "zgłaszam Jan Nowak, Zastępca Burmistrza Miasta, tel. 600 100 200, " * 5_000,
    "1. " * 50_000,
    "a" * 200_000 + "@",
    "1 " * 100_000,
    ("- Jan Nowak, inspektor\n" * 5_000) + "zgłaszam",
    "Zgłaszam się na PIM. Pan Jan Nowak weźmie udział. " * 2_000,
])
def test_prose_is_read_in_linear_time(text: str) -> None:
    """Hostile input (issue 12): read well within the per-case budget."""
    start = time.perf_counter()
    read_prose(text)
    assert time.perf_counter() - start < 2.0
