"""Quoted history in the shapes clients write it, our own answers quoted back, corrections above
an earlier form, and charsets labelled wrong (issue 13): short examples of our own."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

import pytest

from mailer.reading.body import decode_text
from mailer.reading.parse import read_message
from mailer.reading.quotes import split_reply
from mailer.reading.thread import apply_corrections, read_corrections
from mailer.report import CityRow, CityStatus, _status
from mailer.watcher import WatchReport

OWN = "Zgłaszam się na warsztat.\nJan Nowak"
INVITATION = "> Sz. P.\n> Jan Nowak\n>\n> Rezygnacja: prosimy odpowiedzieć, wpisując „wypisz”.\n"

ATTRIBUTIONS = [
    "2016-10-24 15:36 GMT+02:00 Departament Strategii <strategia@example.com>:",
    '23 mar 2017 21:25 "Departament Strategii" <strategia@example.com> napisał(a):',
    "pon., 19 paź 2020 o 09:00 Departament Strategii <strategia@example.com> napisał(a):",
    "Dnia 19.10.2020 o godz. 09:00 Departament Strategii napisał(a):",
    "Dnia 19 października 2020 09:00 Departament <strategia@example.com> pisze:",
    "Użytkownik Departament Strategii <strategia@example.com> napisał:",
    "19 paź 2020 09:00 \"Departament Strategii\" <strategia@example.com>\nnapisał(a):",
]


@pytest.mark.parametrize("attribution", ATTRIBUTIONS)
def test_attributions_without_a_known_first_word(attribution: str) -> None:
    """Gmail's dated, Android's, webmail's and old Thunderbird's attributions start history."""
    reply = split_reply(f"{OWN}\n\n{attribution}\n{INVITATION}")
    assert reply.own == OWN
    assert "wypisz" in reply.quoted and reply.quoted.startswith(attribution.split("\n", 1)[0])


@pytest.mark.parametrize("attribution", [
    "---- On pon., 19 paź 2020 09:00:00 +0200 Departament <strategia@example.com> wrote ----",
    "---- W dniu pon., 19 paź 2020 09:00 Departament <strategia@example.com> napisał ----",
])
def test_zoho_framed_attribution_quotes_the_rest(attribution: str) -> None:
    """Zoho quotes unprefixed under `---- On … wrote ----`: our "wypisz" footer is history."""
    reply = split_reply(f"{OWN}\n\n{attribution}\n\nSz. P.\nRezygnacja: wpisując „wypisz”.")
    assert reply.own == OWN and "wypisz" not in reply.own


@pytest.mark.parametrize("block", [
    "* * *\n\nDate: poniedziałek, 19 października 2020 09:00\nFrom: Dep <s@example.com>\n"
    "To: jan@um.example.pl\nSubject: Zaproszenie",
    "* * *\n\nData: poniedziałek, 19 października 2020 09:00\nOd: Dep <s@example.com>\n"
    "Do: jan@um.example.pl\nTemat: Zaproszenie",
])
def test_outlook_com_header_block_led_by_date(block: str) -> None:
    """Outlook.com's HTML header block starts with Date:/Data: after a rule; the rule goes."""
    reply = split_reply(f"{OWN}\n\n{block}\n\nSz. P.\nwypisz")
    assert reply.own == OWN


def test_schedule_lines_are_no_header_block_or_attribution() -> None:
    """"Data: / Od: / Do:" of a schedule and lines opening with a date stay own text."""
    text = ("Data: 26.10\nOd: 10:00\nDo: 12:00\n"
            "26.10 o 10:00 będę na warsztacie z kolegami:\n19 osób z urzędu <wydzial@um.pl>:")
    assert split_reply(text).own == text


def test_attribution_as_first_line_keeps_bottom_posted_text() -> None:
    """A dated attribution first, the quote, then the reply below it: the reply is own text."""
    text = ('19 paź 2020 09:00 "Departament" <s@example.com> napisał(a):\n'
            "> Sz. P.\n> wypisz\n\nImię i nazwisko: Jan Nowak\nMiasto: Sopot")
    reply = split_reply(text)
    assert reply.own == "Imię i nazwisko: Jan Nowak\nMiasto: Sopot"


# --- threads: our answers quoted back, corrections ----------------------------------------------

CONFIRMATION = """\
> Szanowna Pani / Szanowny Panie,
>
> dziękujemy za przesłanie zgłoszenia. Uprzejmie potwierdzamy rejestrację.
> ------------------------------------------------------------------------
> Imię i nazwisko: Jan Nowak
> Stanowisko:      Inspektor
> Miasto / urząd:  Sopot
> E-mail:          jan@um.sopot.pl
>
> Potwierdzony udział:
> - Warsztat „Smart City”
> ------------------------------------------------------------------------
"""


def mail(body: str, *, in_reply_to: str = "") -> EmailMessage:
    msg = EmailMessage(policy=email.policy.default)
    msg["From"] = "jan@um.sopot.pl"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    return msg


def test_thanks_above_our_confirmation_is_no_form() -> None:
    """Our confirmation quoted back (known by its wording) is never read as a form again."""
    body = f"Dziękuję!\n\nW dniu 20.10.2020 o 10:00 Dep <s@example.com> napisał(a):\n{CONFIRMATION}"
    assert read_message(mail(body))[1] == []


def test_reply_to_our_answer_id_refuses_its_data() -> None:
    """In-Reply-To naming our answer's Message-ID refuses the data it shows, worded any way."""
    body = "Dziękuję.\n\n> Dane:\n> Imię i nazwisko: Jan Nowak\n> Miasto / urząd: Sopot\n"
    assert read_message(mail(body))[1] != []  # not ours: typed into a quoted original
    assert read_message(mail(body, in_reply_to="<0a1b2c.answer@example.com>"))[1] == []


def test_form_typed_into_our_incomplete_answer_is_read() -> None:
    """The blank form an `incomplete` answer carries, filled in the quote, is a registration."""
    body = ("W dniu 20.10.2020 o 10:00 Dep <s@example.com> napisał(a):\n"
            "> Do uzupełnienia lub poprawienia:\n> Imię i nazwisko: Jan Nowak\n>\n"
            "> Wydarzenie (warsztat Smart City / PIM / oba): oba\n> Imię i nazwisko: Jan Nowak\n"
            "> Stanowisko: Inspektor\n> Miasto / urząd: Sopot\n")
    drafts = read_message(mail(body, in_reply_to="<0a1b2c.answer@example.com>"))[1]
    assert [d.values.get("event") for d in drafts] == ["oba"]


def test_correction_above_the_quoted_earlier_form_is_applied() -> None:
    """"Proszę zmienić telefon na …" above the sender's own quoted form: values corrected."""
    body = ("Proszę zmienić telefon na 600 100 200, dziękuję.\n\n"
            "W dniu 20.10.2020 o 10:00 Jan Nowak <jan@um.sopot.pl> napisał(a):\n"
            "> Wydarzenie: PIM\n> Imię i nazwisko: Jan Nowak\n> Miasto / urząd: Sopot\n"
            "> Telefon: 58 111 22 33\n")
    (draft,) = read_message(mail(body))[1]
    assert draft.values["phone"] == "600 100 200" and draft.values["name"] == "Jan Nowak"


@pytest.mark.parametrize(("text", "field", "value"), [
    ("Poprawka – nazwisko to Kowalski (nie Kowalsky).", "name", "Jan Kowalski"),
    ("Przepraszam, literówka: nazwisko to Kowalski.", "name", "Jan Kowalski"),
    ("Pomyłka w adresie – prawidłowy e-mail to jan.k@um.sopot.pl.", "email", "jan.k@um.sopot.pl"),
    ("Proszę o zmianę stanowiska na Kierownik Referatu, dziękuję.", "position",
     "Kierownik Referatu"),
    ("Proszę jednak zmienić zgłoszenie na oba wydarzenia – będę też na PIM.", "event",
     "oba wydarzenia"),
    ("Nowy numer telefonu: 601 202 303 wew. 12", "phone", "601 202 303 wew. 12"),
])
def test_corrections_in_sentences(text: str, field: str, value: str) -> None:
    """A sentence naming a field and its new value, with a word saying it corrects."""
    earlier = {"event": "PIM", "name": "Jan Kowalsky", "email": "j@x.pl", "phone": "1"}
    assert apply_corrections(earlier, read_corrections(text))[field] == value


def test_no_correction_without_a_correcting_word() -> None:
    """"Mój telefon to …" in a thank-you corrects nothing."""
    assert read_corrections("Dziękuję, wszystko się zgadza. Mój telefon to 600 100 200.") == []


# --- charsets -----------------------------------------------------------------------------------

POLISH = "Urząd Miasta Świnoujście, współpraca z zagranicą, źródło"


def test_iso_8859_2_labelled_windows_1250_is_repaired() -> None:
    """Webmail's ISO-8859-2 under a Windows-1250 label reads as Polish (ą, ś, ź not ±, ¶, Ľ)."""
    assert decode_text(POLISH.encode("iso-8859-2"), "windows-1250") == POLISH


@pytest.mark.parametrize("text", ["🙂🙂🙂🙂 Super", "Дякую “thanks” 🙏🙏 ok", "👍👍👍 ok, dzięki"])
def test_utf8_with_emoji_cyrillic_quotes_stays_utf8(text: str) -> None:
    """Valid UTF-8 under its own label is never re-read as Windows-1250 ("đź™‚")."""
    assert decode_text(text.encode(), "utf-8") == text
    assert decode_text(text.encode(), None) == text


# --- never silent -------------------------------------------------------------------------------

def test_watch_summary_says_what_waits_for_review() -> None:
    """After a pass the summary names the review queue when it is not empty."""
    assert "review" not in WatchReport(new=1).summary()
    assert WatchReport(new=1, review=2).summary().endswith(
        "; 2 waiting for review (mailer review)")


def test_city_with_a_message_for_review_needs_review() -> None:
    """A city's message waiting for a human outranks its other standing."""
    assert _status(CityRow("Sopot", invited=1, review=1)) is CityStatus.REVIEW
    assert _status(CityRow("Sopot", invited=1)) is CityStatus.INVITED
    assert CityRow("Sopot", review=1, bounced=1).notes() == "1 for review, 1 bounced"
