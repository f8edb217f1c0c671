"""Free-word cancellations, unsubscribes and automatic replies (issue 13), table-driven."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailer.reading.classify import Kind, classify
from mailer.reading.understand import read
from mailer.reading.wording import Intent, automatic_wording, cancelled_events, read_wording
from mailer.reasons import Code
from mailer.settings import Event
from mailer.trust import review_reason

SUBJECT = "Re: Zaproszenie: warsztat Smart City i PIM"
EVENTS = (
    Event("smart-city", "Warsztat „Smart City – doświadczenia i wyzwania”",
          datetime(2020, 10, 26, 8, tzinfo=UTC), datetime(2020, 10, 26, 8, tzinfo=UTC),
          aliases=("warsztat", "smart city")),
    Event("pim", "Partnerska Inicjatywa Miast", datetime(2020, 11, 2, 22, tzinfo=UTC),
          aliases=("pim", "nabór")),
)
ALIASES = [n for e in EVENTS for n in (e.id, *e.aliases)]
BOTH = ["smart-city", "pim"]

# (own text, intent or None, events a cancellation withdraws from)
CASES: list[tuple[str, Intent | None, list[str]]] = [
    # cancellations: withdrawing, not coming, striking off the participants
    ("Niestety nie będę mógł wziąć udziału.", Intent.CANCELLATION, BOTH),
    ("Proszę o skreślenie mnie z listy uczestników.", Intent.CANCELLATION, BOTH),
    ("Po namyśle wycofujemy zgłoszenie naszego miasta.", Intent.CANCELLATION, BOTH),
    ("Rezygnuję z udziału.", Intent.CANCELLATION, BOTH),
    ("Niestety nie dam rady.", Intent.CANCELLATION, BOTH),
    ("Odwołuję swoje zgłoszenie, przepraszam.", Intent.CANCELLATION, BOTH),
    ("Moją rejestrację proszę anulować.", Intent.CANCELLATION, BOTH),
    ("Musimy odwołać nasz udział w naborze PIM.", Intent.CANCELLATION, ["pim"]),
    ("Rezygnuję z warsztatu, ale PIM proszę zostawić.", Intent.CANCELLATION, ["smart-city"]),
    ("wypisz mnie z warsztatu pls", Intent.CANCELLATION, ["smart-city"]),
    ("Pan Wójt nie weźmie udziału w spotkaniu 26 października.", Intent.CANCELLATION,
     ["smart-city"]),
    ("Nie będę mogła być 26.10, zgłoszenie do PIM aktualne.", Intent.CANCELLATION,
     ["smart-city"]),
    ("I'm afraid I cannot attend.", Intent.CANCELLATION, BOTH),
    # negations, questions and conditions are no cancellation
    ("Czy mogę zrezygnować z udziału w warsztacie?", None, []),
    ("Nie rezygnuję z udziału, zmieniam tylko numer telefonu.", None, []),
    ("Nie chcę rezygnować z udziału.", None, []),
    ("Jeśli nie będę mogła uczestniczyć, dam znać.", None, []),
    ("Proszę usunąć literówkę w moim zgłoszeniu.", None, []),
    # unsubscribes in free words, RODO included
    ("Proszę usunąć mój adres z Państwa bazy.", Intent.UNSUBSCRIBE, []),
    ("Proszę o wykreślenie tego adresu z listy mailingowej.", Intent.UNSUBSCRIBE, []),
    ("Nie chcę już otrzymywać tych wiadomości.", Intent.UNSUBSCRIBE, []),
    ("Proszę więcej nie przysyłać ani nie wysyłać mi maili.", Intent.UNSUBSCRIBE, []),
    ("Wycofuję zgodę na przetwarzanie danych osobowych (art. 7 ust. 3 RODO).",
     Intent.UNSUBSCRIBE, []),
    ("Wnoszę sprzeciw wobec przetwarzania moich danych.", Intent.UNSUBSCRIBE, []),
    ("Żądam usunięcia moich danych (art. 17 RODO).", Intent.ERASURE, []),
    ("Please take me off your mailing list.", Intent.UNSUBSCRIBE, []),
    ("Proszę nie wysyłać jeszcze potwierdzenia, uzupełnię telefon.", None, []),
    # someone else's footer is never the writer's unsubscribe
    ("Zgłaszam się na PIM.\n\n--\nOtrzymujesz tę wiadomość, ponieważ subskrybujesz grupę.\n"
     "Aby zrezygnować z subskrypcji tej grupy, wyślij e-mail na adres x+unsubscribe@g.com.",
     None, []),
    ("See you there.\n\nTo unsubscribe from this group and stop receiving emails from it, "
     "send an email to x+unsubscribe@g.com.", None, []),
    ("Najlepsza oferta!\n\nJeśli nie chcesz otrzymywać od nas wiadomości, odpowiedz WYPISZ.",
     None, []),
]


@pytest.mark.parametrize(("text", "intent", "events"), CASES)
def test_reads_the_writers_own_request(text: str, intent: Intent | None,
                                       events: list[str]) -> None:
    """Each free-word request reads as its intent and names the events it withdraws from."""
    found = read_wording(SUBJECT, text, aliases=ALIASES)
    assert (found.intent if found else None) == intent, found
    if found and intent is Intent.CANCELLATION:
        assert list(cancelled_events(found, EVENTS)) == events


AUTOMATIC: list[tuple[str, bool]] = [
    ("Potwierdzenie wpływu. Pismo zarejestrowano w systemie EZD RP, nadano znak sprawy "
     "OR.0152.1.2020.", True),
    ("Zarejestrowano przesyłkę nr 123/2020. Wiadomość wygenerowana automatycznie.", True),
    ("Jestem nieobecna do 30.10.2020. W sprawach pilnych proszę kontaktować się z "
     "sekretariatem, tel. 22 111 22 33.", True),
    ("Przebywam na urlopie, wracam 2 listopada.", True),
    ("Dziękujemy za wiadomość. Odpowiedź zostanie udzielona w terminie wynikającym z KPA.",
     True),
    ("Nadano numer kancelaryjny KO.0152.1.2020. Prosimy nie odpowiadać na tę wiadomość.", True),
    # people mentioning a holiday, a case number or thanking stay human
    ("Proszę podać znak sprawy, pod którym zarejestrowano nasze pismo.", False),
    ("Proszę nie odpowiadać na poprzednią wiadomość, była wysłana przez pomyłkę.", False),
    ("Przebywam na urlopie do piątku, zgłoszenie wyślę po powrocie.", False),
    ("Dziękuję za wiadomość, do zobaczenia na warsztacie!", False),
    ("Jestem nieobecny w przyszłym tygodniu, dlatego zgłaszam kolegę: Jan Nowak.", False),
    ("Dziękuję, pozdrawiam serdecznie.", False),
]


@pytest.mark.parametrize(("text", "automatic"), AUTOMATIC)
def test_automatic_by_wording(text: str, automatic: bool) -> None:
    """Receipts, out-of-office and canned replies by their words; people who mention them not."""
    assert (automatic_wording(text) is not None) == automatic


def test_long_hostile_text_is_read_in_linear_time() -> None:
    """The phrases scan once: 200 KB of near-misses read well under a second."""
    text = ("nie nie bede prosze usunac z z listy rezygnuje " * 5000) + "x" * 100_000
    start = time.perf_counter()
    read_wording(SUBJECT, text, aliases=ALIASES)
    automatic_wording(text)
    assert time.perf_counter() - start < 2


def _message(subject: str = SUBJECT) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@um.example.pl"
    msg["Subject"] = subject
    msg.set_content("-")
    return msg


@pytest.mark.parametrize(("text", "has_form", "chosen", "kind", "cancelled"), [
    # declining one event while registering for the other registers
    ("Zgłaszam miasto do PIM. W warsztacie nie weźmiemy udziału.", True, True,
     Kind.REGISTRATION, ()),
    # withdrawing outranks a form riding along
    ("Rezygnuję z warsztatu.", True, True, Kind.CANCELLATION, ("smart-city",)),
    ("Niestety nie dam rady.", True, False, Kind.CANCELLATION, ("smart-city", "pim")),
    ("Jestem nieobecny do 30.10. W sprawach pilnych proszę dzwonić do sekretariatu.", False,
     False, Kind.AUTO_REPLY, ()),
])
def test_classify_reads_the_wording(text: str, has_form: bool, chosen: bool, kind: Kind,
                                    cancelled: tuple[str, ...]) -> None:
    """classify puts the wording's intents in order beside the form and names the events."""
    found = classify(_message(), text, has_form=has_form, written_form=has_form,
                     chosen_events=chosen, automated=None, events=EVENTS)
    assert found.kind is kind and found.cancelled == cancelled


def test_out_of_office_with_a_form_stays_human() -> None:
    """Automatic wording never outweighs a form or a sentence registering someone."""
    text = "Jestem nieobecny do 30.10, w sprawach pilnych proszę o kontakt z p. Nowak."
    found = classify(_message(), text, has_form=True, automated=None, events=EVENTS)
    assert found.kind is Kind.REGISTRATION


def test_erasure_request_unsubscribes_and_goes_to_review() -> None:
    """RODO art. 17: an unsubscribe, and staff are asked to run `mailer forget`."""
    msg = _message()
    msg.set_content("Żądam usunięcia moich danych osobowych z Państwa bazy (art. 17 RODO).\n")
    reading = read(msg.as_bytes(), received=datetime(2020, 10, 20, tzinfo=UTC), events=EVENTS)
    assert reading.kind is Kind.UNSUBSCRIBE
    assert reading.classification.reason.code is Code.ERASURE_PHRASE
    review = review_reason(reading, headers_only=False, backlog=False, effects={}, held=None)
    assert review is not None and review.code is Code.ERASURE_REQUEST


def test_a_question_saying_why_is_no_cancellation() -> None:
    """Not coming, said beside a question, is the reason for asking, not a withdrawal; an
    explicit withdrawal beside a question still is one."""
    asking = "Czy warsztat będzie nagrywany? Nie mogę być obecny na żywo."
    assert read_wording("Re: Zaproszenie", asking) is None
    withdrawing = "Rezygnuję z udziału w warsztacie. Czy prezentacja będzie dostępna?"
    found = read_wording("Re: Zaproszenie", withdrawing)
    assert found is not None and found.intent is Intent.CANCELLATION
