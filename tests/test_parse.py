"""Tests for parse: body text, quote splitting and form reading on real client replies."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailer.reading.body import body_text, decode_text, html_to_text
from mailer.reading.parse import FIELDS, Draft, read_forms, read_message
from mailer.reading.quotes import ReplyText, split_reply

REPLIES = Path(__file__).parent / "data" / "replies"


def load(name: str) -> EmailMessage:
    """Parse one stored reply the way the watcher does (bytes, policy.default)."""
    msg = email.message_from_bytes((REPLIES / name).read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def message(raw: bytes) -> EmailMessage:
    """Parse an inline message; raw uses \\n line ends."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def form(*values: str) -> dict[str, str]:
    """The six form values in FIELDS order."""
    return dict(zip(FIELDS, values, strict=True))


EXPECTED: dict[str, list[tuple[bool, dict[str, str]]]] = {
    "outlook_plain_cp1250_qp.eml": [(False, form(
        "oba", "Jan Kowalski", "Naczelnik Wydziału Rozwoju", "Urząd Miasta Gdyni",
        "jan.kowalski@gdynia.pl", "58 668 80 00"))],
    "outlook_html_table.eml": [(False, form(
        "warsztat Smart City", "Anna Nowak", "Kierownik Referatu", "Urząd Miejski w Gdańsku",
        "anna.nowak@gdansk.gda.pl", "+48 58 323 60 00"))],
    "gmail_utf8_base64_alternative.eml": [(False, form(
        "PIM", "Piotr Wiśniewski", "Zastępca Prezydenta", "Łódź", "p.wisniewski@uml.lodz.pl",
        "42 638 40 00"))],
    "thunderbird_iso88592_flowed.eml": [(False, form(
        "oba", "Katarzyna Wójcik",
        "Główny specjalista ds. współpracy z zagranicą w Biurze Prezydenta Miasta", "Poznań",
        "katarzyna_wojcik@um.poznan.pl", "61 878 54 00"))],
    "apple_mail.eml": [(False, form(
        "warsztat Smart City", "Tomasz Zając", "Dyrektor Wydziału Strategii", "Kraków",
        "tomasz.zajac@um.krakow.pl", "12 616 12 00"))],
    "cp1250_labelled_iso88592.eml": [(False, form(
        "warsztat Smart City", "Łukasz Śliwiński",
        "Zastępca Kierownika Wydziału Przedsiębiorczości", "Urząd Miasta Świdnica",
        "lukasz.sliwinski@um.swidnica.pl", "74 856 28 00"))],
    "unknown_charset.eml": [(False, form(
        "PIM", "Grażyna Żółkiewska", "Sekretarz Miasta", "Urząd Miasta Zgierza",
        "g.zolkiewska@umz.zgierz.pl", "42 714 31 00"))],
    "typed_into_quoted_gmail.eml": [(True, form(
        "oba", "Ewa Kamińska", "Inspektor", "Urząd Miasta Torunia", "e.kaminska@um.torun.pl",
        "56 611 88 00"))],
    "typed_into_quoted_outlook.eml": [(True, form(
        "warsztat Smart City", "Maria Zielińska", "Kierownik Biura Rozwoju",
        "Urząd Miasta Rzeszowa", "maria.zielinska@erzeszow.pl", "17 875 40 00"))],
    "two_registrants.eml": [
        (False, form("oba", "Adam Nowicki", "Dyrektor Wydziału Informatyki",
                     "Urząd Miasta Szczecin", "anowicki@um.szczecin.pl", "91 424 50 00")),
        (False, form("warsztat Smart City", "Beata Mazur", "Specjalista",
                     "Urząd Miasta Szczecin", "bmazur@um.szczecin.pl", "")),
    ],
    "value_next_line.eml": [(False, form(
        "oba", "Marek Dąbrowski", "Zastępca Burmistrza", "Urząd Miejski w Sopocie",
        "m.dabrowski@sopot.pl", ""))],
    "caps_no_diacritics.eml": [(False, form(
        "OBA", "ZBIGNIEW KOWALCZYK", "INSPEKTOR", "UM BYDGOSZCZ", "Z.KOWALCZYK@UM.BYDGOSZCZ.PL",
        "52 585 81 00"))],
    "synonyms.eml": [(False, form(
        "PIM", "Anna Lewandowska", "Sekretarz Miasta", "Urząd Miasta Lublin",
        "anna.lewandowska@lublin.eu", "81 466 10 00"))],
    "english_reply.eml": [(False, form(
        "both", "John Smith", "Advisor to the Mayor", "Wrocław", "john.smith@um.wroc.pl",
        "+48 71 777 77 77"))],
    "bottom_post_thunderbird.eml": [(False, form(
        "oba", "Paweł Kaczmarek", "Koordynator ds. Smart City", "Urząd Miasta Kielce",
        "pawel.kaczmarek@um.kielce.pl", "41 367 60 00"))],
    "attachments_mixed.eml": [(False, form(
        "PIM", "Robert Lis", "Dyrektor Biura Zarządzania Projektami", "Urząd Miejski Wrocławia",
        "robert.lis@um.wroc.pl", "71 777 70 00"))],
    "unfilled_template.eml": [],
}


def test_every_stored_reply_has_an_expectation() -> None:
    """The table covers exactly the .eml files on disk (a new sample needs an expectation)."""
    assert sorted(p.name for p in REPLIES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_message_on_real_replies(name: str) -> None:
    """Each stored client reply yields exactly the expected drafts, in order."""
    _, drafts = read_message(load(name))
    assert [(d.from_quoted, dict(d.values)) for d in drafts] == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_own_text_never_contains_the_quoted_newsletter(name: str) -> None:
    """Quote headers and the quoted invitation never leak into the own text."""
    reply, _ = read_message(load(name))
    assert "Szanowni Państwo" not in reply.own
    assert "Administratorem" not in reply.own


def test_body_text_prefers_plain_over_html() -> None:
    """multipart/alternative: the text/plain part is read, not the HTML one."""
    text = body_text(load("gmail_utf8_base64_alternative.eml"))
    assert "<div" not in text
    assert text.startswith("Dzień dobry,\nw imieniu miasta zgłaszam:")


def test_body_text_ignores_attachments() -> None:
    """A text/plain attachment (Content-Disposition: attachment) is not the body."""
    text = body_text(load("attachments_mixed.eml"))
    assert "Robert Lis" in text
    assert "Ktoś Inny" not in text


def test_body_text_html_table_rows_become_label_value_lines() -> None:
    """An HTML-only Outlook reply renders each table row as one `label: value` line."""
    lines = body_text(load("outlook_html_table.eml")).splitlines()
    assert "Imię i nazwisko: Anna Nowak" in lines
    assert "Telefon: +48 58 323 60 00" in lines
    assert "-----Wiadomość oryginalna-----" in lines  # html2text's "\-" escape removed


def test_body_text_repairs_cp1250_labelled_iso_8859_2() -> None:
    """Windows-1250 bytes declared ISO-8859-2 come out as Polish, not C1 controls or š."""
    text = body_text(load("cp1250_labelled_iso88592.eml"))
    assert "Urząd Miasta Świdnica" in text
    assert "października" in text
    assert not any("\x80" <= c <= "\x9f" for c in text)


def test_body_text_unknown_charset_falls_back() -> None:
    """An unknown charset name does not raise (stdlib get_content raises LookupError)."""
    msg = load("unknown_charset.eml")
    with pytest.raises(LookupError):
        msg.get_content()
    assert "Grażyna Żółkiewska" in body_text(msg)


def test_body_text_unknown_charset_utf8_bytes() -> None:
    """UTF-8 bytes under an unknown charset label are read as UTF-8."""
    msg = message("Content-Type: text/plain; charset=x-foo\nContent-Transfer-Encoding: 8bit\n\n"
                  "Imię: Łucja\n".encode())
    assert body_text(msg) == "Imię: Łucja\n"


def test_body_text_without_text_part_is_empty() -> None:
    """A message with only a non-text part gives "" instead of raising."""
    msg = message(b"Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n")
    assert body_text(msg) == ""


def test_body_text_empty_plain_falls_back_to_html() -> None:
    """An empty text/plain alternative does not hide the HTML part's form."""
    msg = message(b'Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
                  b"Content-Type: text/plain; charset=utf-8\n\n\n--b\n"
                  b"Content-Type: text/html; charset=utf-8\n\n<p>Miasto: Gdynia</p>\n--b--\n")
    assert body_text(msg).strip() == "Miasto: Gdynia"


def test_body_text_format_flowed_delsp() -> None:
    """format=flowed; delsp=yes joins soft breaks without the trailing space (RFC 3676)."""
    msg = message(b"Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\n\n"
                  b"Stanowisko: Naczel \nnik\n> cyt \n> at\n-- \nJan\n")
    assert body_text(msg) == "Stanowisko: Naczelnik\n> cytat\n-- \nJan\n"


def test_body_text_broken_html_does_not_raise() -> None:
    """A malformed marked section (html.parser AssertionError) still yields the text."""
    msg = message(b"Content-Type: text/html; charset=utf-8\n\n<p>Miasto: Gdynia</p><![foo bar]>\n")
    assert "Miasto: Gdynia" in body_text(msg)


def test_html_to_text_keeps_entities_and_skips_decoration() -> None:
    """Entities stay Polish letters, links and images leave no markdown."""
    text = html_to_text('<p>Urz&#261;d &oacute; <a href="http://x">link</a><img src="a.png" '
                        'alt="logo"></p><table><tr><td>Tel.</td><td>600</td></tr></table>')
    assert text.splitlines()[0] == "Urząd ó link"
    assert "Tel.: 600" in text.splitlines()


def test_decode_text_keeps_real_iso_8859_2() -> None:
    """Correct ISO-8859-2 (ą = 0xB1) is not 'repaired' into cp1250's ±."""
    data = "Urząd Miasta Świdnica, źródło".encode("iso-8859-2")
    assert decode_text(data, "iso-8859-2") == "Urząd Miasta Świdnica, źródło"


def test_decode_text_utf8_mislabelled_latin2() -> None:
    """UTF-8 bytes declared ISO-8859-2 are read as UTF-8 (C1 controls in the latin2 reading)."""
    assert decode_text("Łódź, Kraków".encode(), "iso-8859-2") == "Łódź, Kraków"


def test_decode_text_undecodable_never_raises() -> None:
    """Bytes no candidate charset decodes strictly come back with replacement characters."""
    assert decode_text(b"ab\x81\xff", "us-ascii") == "ab\ufffd\ufffd"


QUOTE_HEADERS = [
    "-----Wiadomość oryginalna-----\nOd: MFiPR\nWysłane: pon\nDo: Jan\nTemat: Zaproszenie",
    "-----Original Message-----\nFrom: MFiPR\nSent: Monday\nTo: Jan\nSubject: Invitation",
    "Od: MFiPR <a@b.pl>\nWysłane: poniedziałek, 19 października 2020 10:00\nDo: Jan\nTemat: Z",
    "From: MFiPR <a@b.pl>\nSent: Monday, October 19, 2020 10:00 AM\nTo: Jan\nSubject: Inv",
    "________________________________\nOd: MFiPR\nWysłano: 19 października 2020 10:00\nDo: Jan",
    "W dniu pon., 19 paź 2020 o 10:00 Jan Kowalski <jan@x.pl>\nnapisał(a):\n> cytat",
    "W dniu 19.10.2020 o 10:00, Jan Kowalski pisze:\n> cytat",
    "Wiadomość napisana przez Jan Kowalski <jan@x.pl> w dniu 19.10.2020, o godz. 10:00:\n> cytat",
    "Dnia 19.10.2020 o godz. 10:00 Jan Kowalski napisał(a):\n> cytat",
    "On Mon, 19 Oct 2020 at 10:00, Jan Kowalski <jan@x.pl> wrote:\n> cytat",
    "On 19 Oct 2020, at 10:00, Jan Kowalski <jan@x.pl> wrote:\n\n> cytat",
    "> cytat\n> więcej",
]


@pytest.mark.parametrize("header", QUOTE_HEADERS)
def test_split_reply_quote_headers(header: str) -> None:
    """Every supported client's quote header starts the quoted history."""
    reply = split_reply(f"Zgłaszam się.\n\nPozdrawiam\n\n{header}\n> Imię i nazwisko:\n")
    assert reply == ReplyText(own="Zgłaszam się.\n\nPozdrawiam", quoted=reply.quoted)
    assert reply.quoted.startswith(header.split("\n", maxsplit=1)[0])


def test_split_reply_unquoted_attribution_cuts_to_the_end() -> None:
    """An attribution not followed by "> " lines (HTML clients) quotes everything after it."""
    reply = split_reply("Ok\nW dniu 19.10.2020 o 10:00, Jan pisze:\nTreść\n\nImię: x")
    assert reply.own == "Ok"
    assert reply.quoted == "W dniu 19.10.2020 o 10:00, Jan pisze:\nTreść\n\nImię: x"


def test_split_reply_keeps_bottom_posted_text() -> None:
    """Text written below a "> " quote block stays own text."""
    reply = split_reply("Jan pisze:\nW dniu 1.10.2020, Jan pisze:\n> a\n>\n> b\n\nMiasto: Gdynia")
    assert reply.own == "Jan pisze:\n\nMiasto: Gdynia"
    assert reply.quoted == "W dniu 1.10.2020, Jan pisze:\n> a\n>\n> b"


def test_split_reply_single_header_like_line_is_own_text() -> None:
    """A lone "Data:"/"Do:" line is not an Outlook header (mail-parser-reply 1.36 cuts there)."""
    text = "Zgłaszam się.\nData: 26.10 pasuje\nDo: wiadomości\nImię i nazwisko: Jan"
    assert split_reply(text) == ReplyText(own=text, quoted="")


def test_split_reply_keeps_signature_and_handles_crlf() -> None:
    """The "-- " signature stays in own text; CRLF line ends are accepted."""
    reply = split_reply("Miasto: Gdynia\r\n-- \r\nJan\r\n> cytat\r\n")
    assert reply == ReplyText(own="Miasto: Gdynia\n-- \nJan", quoted="> cytat")


def test_split_reply_empty_text() -> None:
    """An empty body splits into two empty strings."""
    assert split_reply("") == ReplyText(own="", quoted="")


def test_read_forms_separators_and_hint() -> None:
    """Labels with : - – tab, two spaces, or the "(…)" hint then a space are read."""
    text = ("Wydarzenie (warsztat Smart City / PIM / oba) oba\nImię i nazwisko - Jan Nowak\n"
            "Stanowisko – Referent\nMiasto\tGdynia\nE-mail  jan@gdynia.pl\nTel: 600\n")
    assert [dict(d.values) for d in read_forms(text)] == [
        form("oba", "Jan Nowak", "Referent", "Gdynia", "jan@gdynia.pl", "600")]


def test_read_forms_does_not_read_prose() -> None:
    """Prose starting with a label word but no separator is not a value."""
    text = "- Miasto cyfrowe,\nMiasto zielone.\nTel. 58 123 45 67\nUdział w warsztacie potwierdzam."
    assert read_forms(text) == []


def test_read_forms_next_line_is_a_label_not_a_value() -> None:
    """An empty label followed by another label stays empty."""
    drafts = read_forms("Imię i nazwisko:\nMiasto / urząd:\nGdynia\n")
    assert drafts == [Draft(values={"name": "", "city": "Gdynia"})]


def test_read_forms_next_line_rejects_closings_and_prose() -> None:
    """A closing formula, a long sentence or a digitless phone is not taken as a value."""
    text = ("Miasto: Gdynia\nStanowisko:\nPozdrawiam\nImię i nazwisko:\n\n" + "bardzo " * 12
            + "długo\nTelefon:\nJan Kowalski\nE-mail:\nbrak\n")
    assert read_forms(text) == [
        Draft(values={"name": "", "position": "", "city": "Gdynia", "email": "", "phone": ""})]


def test_read_forms_unfilled_template_is_no_draft() -> None:
    """The blank template (also with blanks written as ____ or ...) is not a draft."""
    template = ("Wydarzenie (warsztat Smart City / PIM / oba):\nImię i nazwisko: ________\n"
                "Stanowisko: ...\nMiasto / urząd:\nE-mail: -\nTelefon:\n\n"
                "Z poważaniem\nDepartament\ntel.: +48 22 273 70 00\n"
                "e-mail: strategia@example.com\n")
    assert read_forms(template) == []


def test_read_forms_markdown_residue_quotes_and_bullets() -> None:
    """**bold**, |pipes|, _underscores_, "> " markers, bullets and trailing ";" are stripped."""
    text = ("> **Imię i nazwisko:** _Jan Nowak_;\n> | Miasto / urząd | Gdynia |\n"
            "- E-mail: jan@gdynia.pl,\n1. Telefon: 600 100 200\n")
    assert [dict(d.values) for d in read_forms(text)] == [{
        "name": "Jan Nowak", "city": "Gdynia", "email": "jan@gdynia.pl", "phone": "600 100 200"}]


def test_read_forms_given_and_family_name_lines_join() -> None:
    """"Nazwisko:" then "Imię:" on separate lines make one name, given name first."""
    drafts = read_forms("Nazwisko: Nowak\nImię: Jan\nMiasto: Gdynia\nImię: Anna\nMiasto: Sopot")
    assert [dict(d.values) for d in drafts] == [
        {"name": "Jan Nowak", "city": "Gdynia"}, {"name": "Anna", "city": "Sopot"}]


def test_read_forms_repeated_field_starts_a_new_draft() -> None:
    """A second "Imię i nazwisko:" begins the next registrant."""
    drafts = read_forms("Imię i nazwisko: A\nE-mail: a@x.pl\nImię i nazwisko: B\nTelefon: 1")
    assert [dict(d.values) for d in drafts] == [
        {"name": "A", "email": "a@x.pl"}, {"name": "B", "phone": "1"}]


def test_read_forms_signature_contacts_after_form_are_dropped() -> None:
    """E-mail/phone lines repeated in a signature below a form are not a second registrant."""
    drafts = read_forms("Imię i nazwisko: A\nE-mail: a@x.pl\n\nPozdrawiam\nA\ne-mail: a@x.pl\n")
    assert [dict(d.values) for d in drafts] == [{"name": "A", "email": "a@x.pl"}]


def test_read_forms_contact_only_correction_is_kept() -> None:
    """A reply holding only "Telefon: …" (completing a registration) is a draft."""
    assert read_forms("Poprawiam:\nTelefon: 600 100 200") == [
        Draft(values={"phone": "600 100 200"})]


def test_read_forms_synonyms() -> None:
    """Synonym labels map to the six fields."""
    text = ("Udział w: oba\nUczestnik: Jan\nFunkcja: Referent\nInstytucja: UM Gdynia\n"
            "Mail: jan@x.pl\nNr telefonu: 600\n\nZgłaszam udział w: PIM\nImie i nazwisko: Ola\n"
            "Jednostka: UM Sopot\ne-mail kontaktowy: ola@x.pl\nTel. kom.: 601\n\n"
            "Event: both\nName: Tom\nOrganizacja: UM\nNumer telefonu: 602\nKomórka: 603\n")
    assert [dict(d.values) for d in read_forms(text)] == [
        form("oba", "Jan", "Referent", "UM Gdynia", "jan@x.pl", "600"),
        {"event": "PIM", "name": "Ola", "city": "UM Sopot", "email": "ola@x.pl", "phone": "601"},
        {"event": "both", "name": "Tom", "city": "UM", "phone": "602"},
    ]


def test_read_message_prefers_own_text() -> None:
    """A form in the own text wins over a filled form in the quoted history."""
    msg = message(b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
                  b"Miasto: Gdynia\n\n> Miasto: Sopot\n")
    reply, drafts = read_message(msg)
    assert reply == ReplyText(own="Miasto: Gdynia", quoted="> Miasto: Sopot")
    assert drafts == [Draft(values={"city": "Gdynia"})]


def test_read_message_signature_contacts_do_not_hide_quoted_form() -> None:
    """Own text with only a "Tel.:" signature falls back to the form typed into the quote."""
    _, drafts = read_message(load("typed_into_quoted_outlook.eml"))
    assert all(d.from_quoted for d in drafts)
    assert drafts[0].values["name"] == "Maria Zielińska"


@pytest.mark.parametrize(("line", "key", "value"), [
    ("Nazwisko i imię: Nowak Jan", "name", "Nowak Jan"),
    ("Imię, nazwisko – Jan Nowak", "name", "Jan Nowak"),
    ("imie nazwisko - jan nowak", "name", "jan nowak"),
    ("Im. i nazw.: Jan Nowak", "name", "Jan Nowak"),
    ("Dane uczestnika: Jan Nowak", "name", "Jan Nowak"),
    ("Osoba zgłaszana: Jan Nowak", "name", "Jan Nowak"),
    ("Imię i nazwisko uczestnika: Jan Nowak", "name", "Jan Nowak"),
    ("Zajmowane stanowisko: referent", "position", "referent"),
    ("Stan.: referent", "position", "referent"),
    ("Stanowisko / funkcja: referent", "position", "referent"),
    ("Pełniona funkcja: referent", "position", "referent"),
    ("Nazwa urzędu: UM Sopot", "city", "UM Sopot"),
    ("Jedn. org.: UM Sopot", "city", "UM Sopot"),
    ("JST: Gmina Sopot", "city", "Gmina Sopot"),
    ("Gmina: Sopot", "city", "Sopot"),
    ("Instytucja: UM Sopot", "city", "UM Sopot"),
    ("Adres mailowy: jan@sopot.pl", "email", "jan@sopot.pl"),
    ("Adres e-mail służbowy: jan@sopot.pl", "email", "jan@sopot.pl"),
    ("Poczta: jan@sopot.pl", "email", "jan@sopot.pl"),
    ("EMAIL jan@sopot.pl", "email", "jan@sopot.pl"),
    ("Telefon kontaktowy: 58 100 20 30", "phone", "58 100 20 30"),
    ("Tel. służb.: 58 100 20 30", "phone", "58 100 20 30"),
    ("Tel. kom.: 600 100 200", "phone", "600 100 200"),
    ("Kom. 600 100 200", "phone", "600 100 200"),
    ("Nr tel. 58 100 20 30", "phone", "58 100 20 30"),
    ("tel 58 100 20 30", "phone", "58 100 20 30"),
    ("tel. (58) 100 20 30", "phone", "(58) 100 20 30"),
    ("Wybrane wydarzenie: PIM", "event", "PIM"),
    ("Rodzaj wydarzenia: PIM", "event", "PIM"),
    ("Dot.: PIM", "event", "PIM"),
    ("wybieram: PIM", "event", "PIM"),
    ("UDZIAŁ W\tPIM", "event", "PIM"),
])
def test_read_forms_labels_from_the_vocabulary(line: str, key: str, value: str) -> None:
    """Reworded, reordered, abbreviated, lower- or upper-case labels fill their field; a
    contact label may be followed by its value after a blank alone (inside a form)."""
    drafts = read_forms(f"Miasto: Gdynia\n{line}\n" if key != "city" else f"{line}\n")
    assert drafts and drafts[0].values[key] == value


@pytest.mark.parametrize("text", [
    "Adres: ul. Morska 1, 81-300 Gdynia",  # a postal address is no e-mail
    "Poczta: 81-300 Gdynia",
    "Stan konta: 100 zł",  # a label word starting a longer word or phrase
    "Miasto 2020 – raport",  # a blank alone is no separator for a text field
])
def test_read_forms_label_like_lines_that_are_no_field(text: str) -> None:
    """Postal-address words without an "@" and label words in prose fill nothing."""
    assert read_forms(f"Imię i nazwisko: Jan Nowak\n{text}\n") == [
        Draft(values={"name": "Jan Nowak"})]


def test_read_forms_bare_signature_phone_without_separator_is_no_form() -> None:
    """"Tel. 58 …" with no separator is read only inside a form, not from a bare signature."""
    assert read_forms("Pozdrawiam\nJan Nowak\nTel. 58 100 20 30\n") == []


def test_read_forms_contact_label_splits_into_email_and_phone() -> None:
    """"Kontakt: address, number" fills both the e-mail and the phone."""
    drafts = read_forms("Imię i nazwisko: Jan Nowak\nKontakt: jan@sopot.pl, tel. 58 100 20 30")
    assert dict(drafts[0].values) == {
        "name": "Jan Nowak", "email": "jan@sopot.pl", "phone": "58 100 20 30"}


WRAPPED = [
    # a position wrapped by the client: the next word did not fit on the line
    ("Stanowisko: Inspektor ds. zamówień publicznych w Wydziale Inwestycji i Remontów\n"
     "Miejskich\n\nPozdrawiam", "position",
     "Inspektor ds. zamówień publicznych w Wydziale Inwestycji i Remontów Miejskich"),
    # a short line between the value and the next label
    ("Jednostka: Urząd Miasta Sopotu, ul. Kościuszki\n25/27, 81-704 Sopot\nTelefon: 1",
     "city", "Urząd Miasta Sopotu, ul. Kościuszki 25/27, 81-704 Sopot"),
    # the second paragraph of a table cell (values under their labels, blank lines between)
    ("Imię i nazwisko:\n\nJan Nowak\n\nStanowisko:\n\nKierownik Referatu\n\nPlanowania\n\n"
     "Miasto:\n\nSopot", "position", "Kierownik Referatu Planowania"),
    # an event list wrapped over two lines stays two events
    ("Wydarzenie: warsztat\nPIM\nImię i nazwisko: Jan Nowak", "event", "warsztat\nPIM"),
]


@pytest.mark.parametrize(("text", "key", "value"), WRAPPED)
def test_read_forms_wrapped_values_are_joined(text: str, key: str, value: str) -> None:
    """A value wrapped by the client or split into an Outlook cell's paragraphs is whole."""
    assert read_forms(text)[0].values[key] == value


NOT_CONTINUED = [
    # a short last value followed by a signature line
    ("Miasto: Sopot\nStanowisko: Referent\nJan Nowak\nUrząd Miasta Sopotu", "position",
     "Referent"),
    # a paragraph of prose after a blank line (values on the labels' lines)
    ("Stanowisko: Referent\n\nProszę o potwierdzenie.\n\nMiasto: Sopot", "position",
     "Referent"),
    # a name never runs on, even between labels
    ("Imię i nazwisko: Jan Nowak\nKierownik\nMiasto: Sopot", "name", "Jan Nowak"),
    # the next label is not glued on, even on a wrapped line
    ("Stanowisko: Inspektor ds. zamówień publicznych w Wydziale Inwestycji i Remontów\n"
     "Miasto: Sopot", "position",
     "Inspektor ds. zamówień publicznych w Wydziale Inwestycji i Remontów"),
    # a line that looks like some other label
    ("Stanowisko: Referent\nAdres do faktury: ul. Morska 1\nMiasto: Sopot", "position",
     "Referent"),
    # under an empty last field, a signature after a blank line is no value
    ("Miasto: Sopot\nStanowisko:\n\nJan Nowak\nReferent", "position", ""),
]


@pytest.mark.parametrize(("text", "key", "value"), NOT_CONTINUED)
def test_read_forms_does_not_glue_the_next_line_on(text: str, key: str, value: str) -> None:
    """The next label, a paragraph of prose or a signature never becomes part of a value."""
    assert read_forms(text)[0].values[key] == value


@pytest.mark.parametrize("footer", [
    "Wysłane z iPhone'a",
    "Wysłane z mojego iPhone'a",
    "Wysłano z aplikacji Poczta dla Windows",
    "Wysłano z aplikacji Poczta<https://go.microsoft.com/fwlink/?LinkId=1> dla Windows 10",
    "Uzyskaj aplikację Outlook dla systemu Android<https://aka.ms/abc1>",
    "Get Outlook for iOS<https://aka.ms/o0ukef>",
    "Wysłane z mojego smartfona Samsung Galaxy.",
    "Wysłane z mojego telefonu Huawei",
    "Wysłano z aplikacji Onet Poczta na Androida. Pobierz: https://poczta.onet.pl/aplikacja",
    "Sent from my iPhone",
])
@pytest.mark.parametrize("field_label", ["Telefon", "Stanowisko", "E-mail"])
def test_read_forms_app_footer_is_never_a_value(footer: str, field_label: str) -> None:
    """A phone's or mail app's footer under an empty last field leaves the field empty."""
    for gap in ("\n", "\n\n"):
        drafts = read_forms(f"Miasto: Sopot\n{field_label}:{gap}{footer}\n")
        assert drafts == [Draft(values={
            "city": "Sopot", {"Telefon": "phone", "Stanowisko": "position",
                              "E-mail": "email"}[field_label]: ""})]


def test_html_table_cell_paragraphs_keep_a_space() -> None:
    """Two paragraphs in one table cell become one value with a blank between them."""
    text = html_to_text("<table><tr><td><p>Stanowisko</p></td><td><p>Referent</p>"
                        "<p>Biuro Rozwoju</p></td></tr></table>")
    assert read_forms(text)[0].values["position"] == "Referent Biuro Rozwoju"


@pytest.mark.parametrize(("text", "values"), [
    ("Osoba do kontaktu – Jan Nowak, Kierownik Referatu, tel. 58 100 20 30",
     {"name": "Jan Nowak", "position": "Kierownik Referatu", "phone": "58 100 20 30"}),
    ("Uczestnik: Anna Maj, inspektor, UM Sopot, anna@sopot.pl",
     {"name": "Anna Maj", "position": "inspektor", "city": "UM Sopot", "email": "anna@sopot.pl"}),
    ("Nazwisko i imię: Nowak, Jan", {"name": "Nowak, Jan"}),
    ("Imię i nazwisko: Jan Nowak, Referent\nStanowisko: Kierownik",
     {"name": "Jan Nowak", "position": "Kierownik"}),
])
def test_read_forms_identity_in_one_name_value(text: str, values: dict[str, str]) -> None:
    """A name label holding "name, post, office, contact" fills each field once; a label
    written for the field wins; "Surname, Given" stays a name."""
    drafts = read_forms(text)
    assert [dict(d.values) for d in drafts] == [values]
