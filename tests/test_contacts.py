"""Tests for reading CSV contact lists: encodings, delimiters, line numbers, problems."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailer.contacts import Contact, ContactList, normalize_key, read_contacts, template_fields
from mailer.errors import ConfigError

POLISH = "email;imie;nazwisko;stanowisko;miasto\r\n"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to tmp_path/name in `encoding` without newline translation."""
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def emails(result: ContactList) -> list[str]:
    """The contacts' addresses in order."""
    return [contact.email for contact in result.contacts]


def test_cp1250_semicolon_polish_names(tmp_path: Path) -> None:
    """A Windows-1250 file from Polish Excel with ';' keeps every Polish letter."""
    text = (
        POLISH
        + "a.nowak@gdynia.pl;Łucja;Ążęśćńóźż;Sekretarz;Gdańsk\r\n"
        + "zofia@lodz.pl;Źdźisław;Łękośćń;Wójt;Łódź\r\n"
    )
    path = write(tmp_path, "miasta.csv", text, "cp1250")
    result = read_contacts([path])
    assert result.encoding == {str(path): "cp1250"}
    assert emails(result) == ["a.nowak@gdynia.pl", "zofia@lodz.pl"]
    first = result.contacts[0]
    assert dict(first.fields) == {
        "email": "a.nowak@gdynia.pl",
        "imie": "Łucja",
        "nazwisko": "Ążęśćńóźż",
        "stanowisko": "Sekretarz",
        "miasto": "Gdańsk",
    }
    assert first.source == f"{path}:2"
    assert result.contacts[1].fields["miasto"] == "Łódź"
    assert result.contacts[1].source == f"{path}:3"
    assert result.invalid == result.duplicates == ()


def test_utf8_bom_comma(tmp_path: Path) -> None:
    """A UTF-8 file with BOM and ',' is read; the BOM does not leak into the first header."""
    path = write(tmp_path, "bom.csv", "\ufeffEmail,Imię\nola@sopot.pl,Ola\n")
    result = read_contacts([path])
    assert result.encoding == {str(path): "utf-8-sig"}
    assert result.contacts[0].fields == {"email": "ola@sopot.pl", "imię": "Ola"}


def test_utf8_without_bom(tmp_path: Path) -> None:
    """A UTF-8 file without BOM is detected as UTF-8 and keeps Polish letters."""
    path = write(tmp_path, "plain.csv", "email;miasto\nx@gdansk.pl;Gdańsk\n")
    result = read_contacts([path])
    assert result.encoding == {str(path): "utf-8"}
    assert result.contacts[0].fields["miasto"] == "Gdańsk"


@pytest.mark.parametrize(
    "header",
    [
        "email",
        "E-mail",
        " EMAIL ",
        "adres e-mail",
        "Adres E-mail",
        "adres_e-mail",
        '"Adres  e-mail"',
    ],
)
def test_alternative_email_headers(tmp_path: Path, header: str) -> None:
    """Every accepted spelling of the e-mail column is stored under "email"."""
    path = write(tmp_path, "alt.csv", f"{header};Nazwa Urzędu\na@b.pl;UM Gdynia\n")
    result = read_contacts([path])
    assert result.contacts[0].fields == {"email": "a@b.pl", "nazwa_urzędu": "UM Gdynia"}


def test_invalid_address_reported_with_line_and_skipped(tmp_path: Path) -> None:
    """An invalid or empty address is a Problem at its line; the row is skipped, others kept."""
    text = "email,imie\nok@gdynia.pl,Jan\n\njan.kowalski@@gdynia,Jan\n,Ewa\nok2@gdynia.pl,Ola\n"
    path = write(tmp_path, "bad.csv", text)
    result = read_contacts([path])
    assert emails(result) == ["ok@gdynia.pl", "ok2@gdynia.pl"]
    assert [p.source for p in result.invalid] == [f"{path}:4", f"{path}:5"]
    message = result.invalid[0].message
    assert message.startswith('invalid e-mail address "jan.kowalski@@gdynia": ')
    assert message.endswith("; row skipped")
    assert "@" in message.removeprefix('invalid e-mail address "jan.kowalski@@gdynia": ')
    assert result.invalid[1].message == "no e-mail address; row skipped"


def test_duplicates_case_insensitive_across_files(tmp_path: Path) -> None:
    """A repeated address in another case, in another file, is reported and sent once."""
    first = write(tmp_path, "a.csv", "email;imie\nJan.Kowalski@Gdynia.PL;Jan\n")
    second = write(tmp_path, "b.csv", "e-mail,imie\nx@y.pl,X\njan.kowalski@gdynia.pl,Janek\n")
    result = read_contacts([first, second])
    assert emails(result) == ["Jan.Kowalski@gdynia.pl", "x@y.pl"]
    assert result.contacts[0].fields["imie"] == "Jan"
    assert result.contacts[0].key == "jan.kowalski@gdynia.pl"
    assert [p.source for p in result.duplicates] == [f"{second}:3"]
    assert result.duplicates[0].message == (
        f"duplicate of {first}:2 (Jan.Kowalski@gdynia.pl); sent once"
    )
    assert result.encoding == {str(first): "utf-8", str(second): "utf-8"}


def test_quoted_newline_keeps_line_numbers(tmp_path: Path) -> None:
    """A quoted cell with CR/LF stays intact and later rows keep their real line numbers."""
    text = 'email;uwagi\r\na@b.pl;"pierwsza\r\ndruga\r\ntrzecia"\r\nc@d.pl;x\r\nzly;y\r\n'
    path = write(tmp_path, "nl.csv", text)
    result = read_contacts([path])
    assert result.contacts[0].fields["uwagi"] == "pierwsza\r\ndruga\r\ntrzecia"
    assert result.contacts[0].source == f"{path}:2"
    assert result.contacts[1].source == f"{path}:5"
    assert [p.source for p in result.invalid] == [f"{path}:6"]


def test_values_kept_exactly(tmp_path: Path) -> None:
    """Template syntax and unusual line separators in values are kept as written."""
    text = 'email,imie,nazwisko\na@b.pl,  {{7*7}} ,"Nowak\u2028Kowalska"\n'
    path = write(tmp_path, "raw.csv", text)
    fields = read_contacts([path]).contacts[0].fields
    assert fields["imie"] == "{{7*7}}"
    assert fields["nazwisko"] == "Nowak\u2028Kowalska"


def test_missing_file_names_path(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "recipients" / "nie-ma.csv"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read the contact list")):
        read_contacts([path])


def test_no_email_column(tmp_path: Path) -> None:
    """A header without an e-mail column is a ConfigError listing what was found."""
    path = write(tmp_path, "miasta.csv", "Imie;Nazwisko\nJan;Kowalski\n")
    with pytest.raises(ConfigError) as info:
        read_contacts([path])
    assert str(info.value) == (
        f'{path}: no e-mail column; expected a header with "email" (or "e-mail",'
        ' "adres e-mail"), found: imie, nazwisko'
    )


def test_empty_file_is_config_error(tmp_path: Path) -> None:
    """A file with no header row at all is a ConfigError."""
    path = write(tmp_path, "empty.csv", "\n \n")
    with pytest.raises(ConfigError, match="empty file"):
        read_contacts([path])


def test_header_only_gives_empty_list(tmp_path: Path) -> None:
    """A list with only its header yields no contacts and no problems."""
    path = write(tmp_path, "head.csv", POLISH)
    result = read_contacts([path])
    assert result == ContactList((), (), (), {str(path): "utf-8"})


def test_idn_domain_accepted(tmp_path: Path) -> None:
    """An internationalised domain is accepted and keyed like its punycode form."""
    path = write(tmp_path, "idn.csv", "email\nuser@ŁÓDŹ.pl\n")
    result = read_contacts([path])
    assert emails(result) == ["user@łódź.pl"]
    assert result.contacts[0].key == normalize_key("USER@xn--d-uga0v4h.pl")


def test_blank_and_excel_empty_rows_ignored(tmp_path: Path) -> None:
    """Blank lines and Excel's ';;' rows are ignored without a problem."""
    path = write(tmp_path, "blank.csv", "email;imie\n\n;;\n a@b.pl ;Jan\n ; \n")
    result = read_contacts([path])
    assert emails(result) == ["a@b.pl"]
    assert result.contacts[0].source == f"{path}:4"
    assert result.invalid == ()


def test_short_rows_padded_long_rows_skipped(tmp_path: Path) -> None:
    """Missing cells become ""; extra non-blank cells skip the row as invalid."""
    text = "email,imie,miasto\na@b.pl,Jan\nc@d.pl,Kowalski, Jan,Gdynia\ne@f.pl,Ewa,Sopot,,\n"
    path = write(tmp_path, "width.csv", text)
    result = read_contacts([path])
    assert [dict(c.fields) for c in result.contacts] == [
        {"email": "a@b.pl", "imie": "Jan", "miasto": ""},
        {"email": "e@f.pl", "imie": "Ewa", "miasto": "Sopot"},
    ]
    assert [p.source for p in result.invalid] == [f"{path}:3"]
    assert "4 cells but the header has 3 columns" in result.invalid[0].message


def test_broken_quoting_is_config_error(tmp_path: Path) -> None:
    """An unclosed quote fails with file:line instead of swallowing the rest of the file."""
    path = write(tmp_path, "quote.csv", 'email;imie\na@b.pl;Jan\nc@d.pl;"Ewa\ne@f.pl;Ola\n')
    with pytest.raises(ConfigError, match=r"quote\.csv:3: broken quoting"):
        read_contacts([path])


def test_quoted_header_with_semicolons(tmp_path: Path) -> None:
    """A fully quoted ';' header is detected even though ',' cannot parse it."""
    path = write(tmp_path, "q.csv", '"adres e-mail";"imię, nazwisko"\n"a@b.pl";"Jan, K"\n')
    assert read_contacts([path]).contacts[0].fields == {
        "email": "a@b.pl",
        "imię,_nazwisko": "Jan, K",
    }


def test_repeated_column_is_config_error(tmp_path: Path) -> None:
    """Two columns with the same name (or two e-mail columns) are a ConfigError."""
    path = write(tmp_path, "rep.csv", "email;imie;Imie\n")
    with pytest.raises(ConfigError, match="repeated column names: imie"):
        read_contacts([path])
    path = write(tmp_path, "two.csv", "email;e-mail\n")
    with pytest.raises(ConfigError, match="several e-mail columns"):
        read_contacts([path])


def test_undecodable_file_is_config_error(tmp_path: Path) -> None:
    """Bytes that are neither UTF-8 nor Windows-1250 are a ConfigError naming the file."""
    path = tmp_path / "bin.csv"
    path.write_bytes(b"email\n\x81\x98@b.pl\n")
    with pytest.raises(ConfigError, match=r"bin\.csv: not UTF-8 nor Windows-1250"):
        read_contacts([path])


def test_normalize_key() -> None:
    """Keys ignore case and surrounding space; invalid input is only stripped and casefolded."""
    assert normalize_key(" Jan.Kowalski@GDYNIA.pl ") == "jan.kowalski@gdynia.pl"
    assert normalize_key("Not An Address") == "not an address"


def test_contact_is_hashable() -> None:
    """Contacts can go into sets despite their fields mapping."""
    contact = Contact("a@b.pl", "a@b.pl", {"email": "a@b.pl"}, "x.csv:2")
    assert contact in {contact}


def test_many_contacts_with_duplicates(tmp_path: Path) -> None:
    """50,000 rows: every duplicate is found and reported with its own line number."""
    rows = "".join(f"U{i % 40_000}@Miasto{i % 40_000 % 97}.pl;Imię {i}\n" for i in range(50_000))
    path = write(tmp_path, "big.csv", "email;imie\n" + rows, "cp1250")
    result = read_contacts([path])
    assert len(result.contacts) == 40_000
    assert len(result.duplicates) == 10_000
    assert result.duplicates[-1].source == f"{path}:50001"


def test_headers_as_polish_excel_writes_them_fill_the_templates(tmp_path: Path) -> None:
    """A list headed `Imię;Nazwisko;E-mail` gives the templates what `imie;nazwisko;email` does
    (issue 16): each column also under its name without diacritics; the name as written stays."""
    typed = write(tmp_path, "typed.csv", "Imię;Nazwisko;E-mail;Województwo\r\n"
                  "Anna;Wiśniewska;anna@gmina.example.pl;pomorskie\r\n", "cp1250")
    plain = write(tmp_path, "plain.csv", "imie;nazwisko;email;wojewodztwo\r\n"
                  "Anna;Wiśniewska;anna@gmina.example.pl;pomorskie\r\n", "cp1250")
    [from_typed] = read_contacts([typed]).contacts
    [from_plain] = read_contacts([plain]).contacts
    shown = template_fields(from_typed.fields)
    assert {k: shown[k] for k in ("imie", "nazwisko", "email", "wojewodztwo")} == \
        dict(from_plain.fields)
    assert shown["imię"] == "Anna" and shown["województwo"] == "pomorskie"
