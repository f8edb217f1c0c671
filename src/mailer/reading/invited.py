"""Pure: who an invited contact is, as the contact list says, and a reply's values completed
from their row — as a clerk would (issue 13: "Zgłaszam się" from an invited official)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mailer.reading.parse import FORM
from mailer.reading.textfold import strip_marks

CONTACT = "contact"  # Draft.sources: the value comes from the invited contact's row

# The columns a contact list names a person's values with (header lower-cased, spaces "_",
# diacritics ignored); the default list's are imie;nazwisko;stanowisko;miasto (SPEC §4).
_NAME_COLUMNS = ("imie_i_nazwisko", "imie_nazwisko", "name", "full_name", "osoba")
_FIRST_COLUMNS = ("imie", "first_name", "firstname")
_LAST_COLUMNS = ("nazwisko", "last_name", "lastname", "surname")
_POSITION_COLUMNS = ("stanowisko", "funkcja", "position", "title")
_CITY_COLUMNS = ("miasto", "miasto_/_urzad", "urzad", "city", "jednostka", "instytucja")
# Every column the service itself reads from a contact's row (`mailer check` counts them used).
COLUMNS_READ = frozenset((*_NAME_COLUMNS, *_FIRST_COLUMNS, *_LAST_COLUMNS, *_POSITION_COLUMNS,
                          *_CITY_COLUMNS, "nazwa", "email"))


class ContactRow(Protocol):
    """What the list says of one contact (mailer.contacts.Contact)."""

    @property
    def key(self) -> str: ...  # the normalised address

    @property
    def fields(self) -> Mapping[str, str]: ...  # every column by its normalised header


@dataclass(frozen=True)
class Invitee:
    """An invited contact a reply comes from, and how the reply was matched to them."""

    email: str
    name: str
    position: str
    city: str
    by: str  # "message-id" | "address" | "domain"


def _column(fields: Mapping[str, str], names: Iterable[str]) -> str:
    folded = {strip_marks(k).casefold(): v for k, v in fields.items()}
    return next((folded[n].strip() for n in names if folded.get(n, "").strip()), "")


def invitee_of(row: ContactRow, by: str) -> Invitee:
    """The person a contact row describes."""
    fields = row.fields
    name = _column(fields, _NAME_COLUMNS) or " ".join(
        part for part in (_column(fields, _FIRST_COLUMNS), _column(fields, _LAST_COLUMNS))
        if part)
    return Invitee(email=row.key, name=name, position=_column(fields, _POSITION_COLUMNS),
                   city=_column(fields, _CITY_COLUMNS), by=by)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


class ContactBook:
    """The invited contacts, found by our Message-ID, the sender's address or office domain.

    `by_message_id` (our invitation's Message-ID → the contact's key) may grow while the book
    is used; `free_mail`: webmail domains, whose users share no office (trust.FREE_MAIL).
    """

    def __init__(self, contacts: Iterable[ContactRow], by_message_id: Mapping[str, str],
                 *, free_mail: frozenset[str] = frozenset()) -> None:
        self.by_key = {c.key: c for c in contacts}
        self.by_message_id = by_message_id
        domains = Counter(_domain(key) for key in self.by_key)
        # A domain names one contact only when exactly one contact has it (a colleague in
        # the same town hall); a webmail domain names nobody.
        self.by_domain = {_domain(k): c for k, c in self.by_key.items()
                          if domains[_domain(k)] == 1 and _domain(k) not in free_mail}

    def match(self, sender: str, refs: Iterable[str]) -> Invitee | None:
        """The contact a reply from `sender` answering `refs` comes from, or None."""
        for ref in refs:
            row = self.by_key.get(self.by_message_id.get(ref, ""))
            if row is not None:
                return invitee_of(row, "message-id")
        sender = sender.strip().casefold()
        if sender in self.by_key:
            return invitee_of(self.by_key[sender], "address")
        row = self.by_domain.get(_domain(sender)) if "@" in sender else None
        return invitee_of(row, "domain") if row is not None else None


def _words(name: str) -> frozenset[str]:
    return frozenset(strip_marks(name).casefold().replace(".", " ").replace(",", " ").split())


def same_person(written: str, invitee: Invitee) -> bool:
    """Does the name written (any order, case, diacritics) name the invited contact?"""
    return bool(invitee.name) and _words(written) == _words(invitee.name)


def fill_values(values: Mapping[str, str], sources: Mapping[str, str], invitee: Invitee, *,
                sender: str, identity: bool) -> tuple[dict[str, str], dict[str, str]]:
    """A draft's values with what is missing taken from the invited contact's row.

    What the reader found always wins. The city (the office, required) is the contact's
    whoever is named; the name, position and e-mail only when the draft names nobody (and
    `identity`: this draft may be the contact) or names the contact themself outside a form
    — never someone else's position, and a form's writer who gave no position chose so. The
    e-mail is the sender's, who wrote. Filled values get the source "contact".
    """
    values, sources = dict(values), dict(sources)
    named = values.get("name", "").strip()
    fill: dict[str, str] = {"city": invitee.city}
    in_prose = sources.get("name", FORM) != FORM
    if (not named and identity) or (in_prose and same_person(named, invitee)):
        fill.update(name=invitee.name, position=invitee.position, email=sender)
    for key, value in fill.items():
        if value and not values.get(key, "").strip():
            values[key], sources[key] = value, CONTACT
    return values, sources
