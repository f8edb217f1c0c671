"""CSV contact lists → Contacts: encodings, delimiters, file:line in every problem."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from mailer.errors import ConfigError
from mailer.reading.textfold import strip_marks

if TYPE_CHECKING:
    from _csv import Reader

__all__ = ["Contact", "ContactList", "Problem", "normalize_key", "read_contacts",
           "template_fields"]

logger = logging.getLogger(__name__)

# Header names (lower-cased, whitespace → "_") that hold the address.
EMAIL_HEADERS = frozenset({"email", "e-mail", "adres_e-mail"})
_EXPECTED = 'expected a header with "email" (or "e-mail", "adres e-mail")'
_DELIMITERS = (";", ",")


@dataclass(frozen=True)
class Contact:
    """One recipient: normalised address, identity key, every column, and where it came from."""

    email: str
    key: str
    # hash=False: a dict is unhashable; identity is `key` anyway.
    fields: Mapping[str, str] = field(hash=False)
    source: str


@dataclass(frozen=True)
class Problem:
    """A row that was skipped or merged, with its "path:line" and a message for the user."""

    source: str
    message: str


@dataclass(frozen=True)
class ContactList:
    """The contacts to send to (unique by key, file order) and what was left out and why."""

    contacts: tuple[Contact, ...]
    invalid: tuple[Problem, ...]
    duplicates: tuple[Problem, ...]
    encoding: dict[str, str]


@dataclass
class _Table:
    """A parsed header positioned before the first data row."""

    reader: Reader
    columns: tuple[str, ...]  # normalised names; "" for a column without a name (ignored)
    email_index: int
    delimiter: str


@dataclass
class _Collector:
    """Accumulates contacts across files; first occurrence of a key wins."""

    by_key: dict[str, Contact] = field(default_factory=dict)
    invalid: list[Problem] = field(default_factory=list)
    duplicates: list[Problem] = field(default_factory=list)

    def add(self, item: Contact | Problem) -> None:
        if isinstance(item, Problem):
            self.invalid.append(item)
            return
        first = self.by_key.get(item.key)
        if first is None:
            self.by_key[item.key] = item
            return
        message = f"duplicate of {first.source} ({first.email}); sent once"
        self.duplicates.append(Problem(item.source, message))


def normalize_key(address: str) -> str:
    """Return the case-insensitive identity of an address, used for duplicates and suppressions.

    A valid address is first normalised by email-validator (domain lower-cased, IDNA decoded, so
    `x@xn--d-uga0v4h.pl` and `X@ŁÓDŹ.pl` meet); an invalid one is only stripped. Then casefolded:
    every mail system in practice treats the local part case-insensitively.
    """
    address = address.strip()
    with contextlib.suppress(EmailNotValidError):
        address = validate_email(address, check_deliverability=False).normalized
    return address.casefold()


def read_contacts(paths: Sequence[Path]) -> ContactList:
    """Read CSV contact lists into one list, unique by `normalize_key`, in file order.

    Each file needs a header row with an e-mail column (`email`, `e-mail` or `adres e-mail`, any
    case); it is stored in `fields` as "email", other columns lower-cased with whitespace → "_"
    (columns without a name are ignored). Encoding is UTF-8 (BOM or not) or else Windows-1250;
    the delimiter `;` or `,` is the one whose header has an e-mail column. Blank rows are ignored.
    A row with fewer cells than the header gets "" for the missing ones; a row with more non-blank
    cells is skipped into `invalid` (its values would be shifted: an unquoted delimiter in a
    value), as are rows with an empty or invalid address. Later rows with a known key go to
    `duplicates`. Values keep their content; only surrounding spaces and tabs are stripped.

    Raises ConfigError for a file that cannot be read or decoded, has no header, no e-mail
    column, duplicate column names or broken quoting.
    """
    collector = _Collector()
    encodings: dict[str, str] = {}
    for path in paths:
        text, encoding = _read_text(path)
        encodings[str(path)] = encoding
        table = _open_table(path, text)
        for source, row in _records(path, table):
            collector.add(_parse_row(table, source, row))
        logger.debug("%s: encoding %s, delimiter %r", path, encoding, table.delimiter)
    return ContactList(
        contacts=tuple(collector.by_key.values()),
        invalid=tuple(collector.invalid),
        duplicates=tuple(collector.duplicates),
        encoding=encodings,
    )


def _read_text(path: Path) -> tuple[str, str]:
    """Read the file once and decode it: UTF-8 (with or without BOM), else Windows-1250."""
    try:
        data = path.read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"{path}: cannot read the contact list: {reason}") from err
    try:
        # Strict UTF-8 first: cp1250 decodes almost any bytes, so it can only be the fallback.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    else:
        return text, "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    try:
        return data.decode("cp1250"), "cp1250"
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 nor Windows-1250 (byte 0x{data[err.start]:02x} at offset"
            f" {err.start}); save the list as CSV UTF-8"
        ) from err


def _open_table(path: Path, text: str) -> _Table:
    """Parse the header with each delimiter and keep the one that finds the e-mail column."""
    candidates = [c for d in _DELIMITERS if (c := _try_header(path, text, d)) is not None]
    if not candidates:
        raise ConfigError(f"{path}: broken quoting in the header row; {_EXPECTED}")
    # Prefer a header with an e-mail column, then the one split into more columns.
    reader, names, delimiter = max(
        candidates, key=lambda c: (not EMAIL_HEADERS.isdisjoint(c[1]), len(c[1]))
    )
    found = [i for i, name in enumerate(names) if name in EMAIL_HEADERS]
    if not found:
        shown = ", ".join(name for name in names if name) or "no column names"
        raise ConfigError(f"{path}: no e-mail column; {_EXPECTED}, found: {shown}")
    if len(found) > 1:
        shown = ", ".join(names[i] for i in found)
        raise ConfigError(f"{path}: several e-mail columns ({shown}); keep one")
    columns = tuple("email" if i == found[0] else name for i, name in enumerate(names))
    repeated = sorted({name for name in columns if name and columns.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}: repeated column names: {', '.join(repeated)}; rename them")
    return _Table(reader, columns, found[0], delimiter)


def _try_header(path: Path, text: str, delimiter: str) -> tuple[Reader, list[str], str] | None:
    """Return a reader past the first non-blank row and its normalised column names.

    None if the header cannot be parsed with this delimiter (strict quoting: `"a";"b"` read
    with "," fails), so the other delimiter can be tried.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            if not _is_blank(row):
                return reader, ["_".join(cell.lower().split()) for cell in row], delimiter
    except csv.Error:
        return None
    raise ConfigError(f"{path}: empty file; {_EXPECTED} in the first row")


def _records(path: Path, table: _Table) -> Iterator[tuple[str, list[str]]]:
    """Yield ("path:line", cells) for each non-blank row; line is where the row starts."""
    reader = table.reader
    end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            # strict=True: an unclosed quote would otherwise swallow the rest of the file
            # into one cell, silently dropping every later contact.
            raise ConfigError(
                f'{path}:{end + 1}: broken quoting ({err}); a value with a quote (") must be'
                ' quoted and its quotes doubled: "Jan ""Janek"" Kowalski"'
            ) from err
        # A quoted cell may span lines, so the row starts after the previous row's last line.
        start, end = end + 1, reader.line_num
        if not _is_blank(row):
            yield f"{path}:{start}", row


def _parse_row(table: _Table, source: str, row: list[str]) -> Contact | Problem:
    """Turn one data row into a Contact, or a Problem saying why it is skipped."""
    width = len(table.columns)
    if len(row) > width and not _is_blank(row[width:]):
        return Problem(
            source,
            f"row has {len(row)} cells but the header has {width} columns (a value with an"
            f" unquoted {table.delimiter!r}?); row skipped",
        )
    address = row[table.email_index].strip() if table.email_index < len(row) else ""
    if not address:
        return Problem(source, "no e-mail address; row skipped")
    try:
        email = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as err:
        reason = str(err).rstrip(".")
        return Problem(source, f'invalid e-mail address "{address}": {reason}; row skipped')
    fields = {
        name: row[i].strip(" \t") if i < len(row) else ""
        for i, name in enumerate(table.columns)
        if name
    }
    fields["email"] = email
    return Contact(email=email, key=email.casefold(), fields=fields, source=source)


def template_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """A contact's columns as the templates see them: each also under its name without
    diacritics, so a list headed "Imię" (as Polish Excel writes it) fills `recipient.imie`
    (issue 16); the name as written stays, for templates written with it."""
    seen = dict(fields)
    for name, value in fields.items():
        seen.setdefault("".join(strip_marks(char) for char in name), value)
    return seen


def _is_blank(cells: Sequence[str]) -> bool:
    """True for a row with no cells or only whitespace (Excel writes `;;;;` for empty rows)."""
    return all(not cell.strip() for cell in cells)
