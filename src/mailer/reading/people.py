"""Pure: a person's name, position, office, e-mail and phone in a piece of Polish prose, read
word by word with `vocabulary`'s words (the parts reading.prose puts together; issue 13)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cached_property

from mailer.reading import vocabulary as vocab
from mailer.reading.quotes import fold

_PUNCTUATION = "()[]{}„”\"'“‘’«».,;:!?*"
# An address: one attempt per run of its characters (the lookbehind), each part bounded.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
# A number: 9+ digits among blanks, dashes and brackets, with its extension ("wew. 21").
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d \t()-]{7,18}\d"
                    r"(?:[ \t]*,?[ \t]*(?:wewn?\.?|w\.|ext\.?)[ \t]*\d{1,6})?")
_MIN_PHONE_DIGITS = 9
_MAX_POSITION_WORDS = 8
_NAME_WORDS = (2, 3)
_ADDRESS_FORMS = frozenset((*vocab.ADDRESS_FORMS, *vocab.ADDRESS_FORM_CASES))
_MASCULINE_CASES = frozenset({"pana"})  # "Pana Piotra Nowaka": genitive/accusative
_FEMININE_CASES = frozenset({"pania"})  # "Panią Sylwię Lewicką": accusative
_NOT_AFTER = frozenset(vocab.NAME_NOT_AFTER)
_STOP = frozenset(vocab.NAME_STOPWORDS) | frozenset(vocab.OFFICE_WORDS)
_TOWN_WORDS = frozenset(w for w in vocab.TOWN_WORDS if " " not in w)
_INTENT_WORDS = frozenset(p.split()[0] for p in vocab.INTENTS)
_TRAILING = frozenset({"w", "we", "z", "ze", "i", "oraz", "na", "do", "-", "–", "—"})


class _Stems:
    """Which one-word noun a folded word is a form of: (stem, nominative) or None.

    "zastepca" → ("zastepc", "zastepca"): a word is a form of a noun when it is its stem and
    at most 4 more letters. `cut`: the last letter always goes ("referat" → "refera": "w
    Referacie"). Every word of a reply is asked about, most of them more than once: answers
    are remembered (up to `KEEP` words, so a hostile message cannot grow the table).
    """

    KEEP = 65_536

    def __init__(self, words: tuple[str, ...], *, cut: bool = False) -> None:
        self.stems = tuple((w[:-1] if w.endswith("a") or (cut and len(w) > 4) else w, w)
                           for w in words if " " not in w)
        self.known: dict[str, tuple[str, str] | None] = {}

    def __call__(self, folded: str) -> tuple[str, str] | None:
        try:
            return self.known[folded]
        except KeyError:
            pass
        found = next(((stem, word) for stem, word in self.stems
                      if folded.startswith(stem) and len(folded) - len(stem) <= 4), None)
        if len(self.known) < self.KEEP:
            self.known[folded] = found
        return found


_position_stem = _Stems(vocab.POSITIONS)
_unit_stem = _Stems(vocab.UNIT_WORDS, cut=True)


@dataclass(frozen=True)
class Token:
    """One word: its text without punctuation around it, folded, and whether a separator
    (, ; : brackets, a dash, an address or a number) follows it."""

    core: str
    folded: str
    boundary: bool

    @property
    def capitalised(self) -> bool:
        return self.core[:1].isupper() and any(c.isalpha() for c in self.core)

    @cached_property
    def name_word(self) -> bool:
        """Could this word be part of a person's name ("Nowak", "Nowak-Kowalska")?"""
        parts = self.core.split("-")
        return (len(self.core) >= 2 and all(p[:1].isupper() and p[1:].islower() and p.isalpha()
                                            for p in parts)
                and self.folded not in _STOP and self.folded not in _TOWN_WORDS
                and self.folded not in vocab.OFFICE_HEADS and self.folded not in _ADDRESS_FORMS
                and _position_stem(self.folded) is None
                and _unit_stem(self.folded) is None)

    @property
    def office_abbreviation(self) -> bool:
        """"UM", "UG", "UMiG", "UMT"."""
        core = self.core
        return (core[:2] in ("UM", "UG") and len(core) <= vocab.OFFICE_ABBREVIATION_LETTERS
                and core.isalpha()) or (self.folded in vocab.OFFICE_ABBREVIATIONS
                                        and core.isupper())


@dataclass(frozen=True)
class Name:
    first: int  # its first token (an address form "Pan", "Pani" included)
    last: int
    text: str


@dataclass
class Chunk:
    """A sentence or a line as words; e-mails and numbers taken out (they separate words)."""

    tokens: list[Token]
    contacts: list[tuple[int, str, str]]  # (token index it stands before, field, value)

    @cached_property
    def names(self) -> list[Name]:
        found: list[Name] = []
        i = 0
        while i < len(self.tokens):
            name = _name_at(self, i)
            if name is None:
                i += 1
                continue
            found.append(name)
            i = name.last + 1
        return found

    def name_starts(self) -> list[int]:
        return [n.first for n in self.names]

    @cached_property
    def by_start(self) -> dict[int, Name]:
        return {n.first: n for n in self.names}

    @cached_property
    def contact_at(self) -> frozenset[int]:
        return frozenset(at for at, _key, _value in self.contacts)


@dataclass
class Found:
    """Values of one person, and the tokens they were read from."""

    values: dict[str, str] = field(default_factory=dict)
    name: Name | None = None
    position: tuple[int, int] | None = None
    used: set[int] = field(default_factory=set)

    def take_contacts(self, chunk: Chunk, first: int = 0, end: int | None = None) -> None:
        """The first e-mail and phone standing among tokens first..end."""
        stop = len(chunk.tokens) if end is None else end
        at_or_after = bisect.bisect_left(chunk.contacts, (first,))
        for at, key, value in chunk.contacts[at_or_after:]:
            if at > stop or ("email" in self.values and "phone" in self.values):
                break
            self.values.setdefault(key, value)


def tokenize(text: str) -> Chunk:
    contacts: list[tuple[int, str, str]] = []
    spans: list[tuple[int, int, str]] = [(m.start(), m.end(), "email")
                                         for m in _EMAIL.finditer(text)]
    spans += [(m.start(), m.end(), "phone") for m in _PHONE.finditer(text)
              if sum(c.isdigit() for c in m.group()) >= _MIN_PHONE_DIGITS
              and not any(s <= m.start() < e for s, e, _k in spans)]
    spans.sort()
    tokens: list[Token] = []
    pos = 0
    for start, end, key in [*spans, (len(text), len(text), "")]:
        tokens += _words(text[pos:start])
        if key:
            contacts.append((len(tokens), key, text[start:end].strip(" \t,.")))
            if tokens:
                tokens[-1] = Token(tokens[-1].core, tokens[-1].folded, True)
        pos = max(pos, end)
    return Chunk(tokens, contacts)


def _words(text: str) -> list[Token]:
    tokens: list[Token] = []
    for raw in text.split():
        if raw in ("-", "–", "—", "/", "|", "+", "&"):
            if tokens:
                tokens[-1] = Token(tokens[-1].core, tokens[-1].folded, True)
            continue
        core = raw.strip(_PUNCTUATION)
        lead = len(raw) - len(raw.lstrip(_PUNCTUATION))
        if len(core) <= 3 and raw[lead + len(core):][:1] == ".":
            core += "."  # "ds.", "św.": an abbreviation keeps its dot
        if raw[:1] in "([" and tokens:
            tokens[-1] = Token(tokens[-1].core, tokens[-1].folded, True)
        if not core:
            continue
        end = raw[len(raw.rstrip(_PUNCTUATION)):]
        boundary = any(c in ",;:)]/" for c in end) or (end.startswith(".") and len(core) > 4)
        tokens.append(Token(core, fold(core).rstrip("."), boundary))
    return tokens


# --- names ---------------------------------------------------------------------------------


def _name_at(chunk: Chunk, i: int) -> Name | None:
    tokens = chunk.tokens
    form = tokens[i].folded if tokens[i].folded in _ADDRESS_FORMS else None
    begin = i + 1 if form else i
    j = begin
    while (j < len(tokens) and j - begin < _NAME_WORDS[1] and tokens[j].name_word
           and (j == begin or not tokens[j - 1].boundary)):
        j += 1
    if j - begin < _NAME_WORDS[0]:
        return None
    if form is None and i > 0:
        prev = tokens[i - 1]  # "w Partnerskiej Inicjatywie": no name starts inside a title
        capitalised = (prev.capitalised and not prev.boundary and prev.folded not in _STOP
                       and prev.folded not in _ADDRESS_FORMS)
        if (capitalised and _position_stem(prev.folded) is None) or (
                prev.folded in _NOT_AFTER or prev.folded in _TOWN_WORDS or prev.office_abbreviation
                or prev.folded in vocab.OFFICE_HEADS or _unit_stem(prev.folded)):
            return None
    words = [t.core for t in tokens[begin:j]]
    emails = " ".join(value for _at, key, value in chunk.contacts if key == "email")
    return Name(i, j - 1, " ".join(nominative(words, form, fold(emails))))


def nominative(words: list[str], form: str | None, emails: str = "") -> list[str]:
    """A name in the nominative: "Pana Piotra Nowaka" → Piotr Nowak, "Panią Sylwię Lewicką"
    or "Małgorzatę Zawadę" → Sylwia Lewicka, Małgorzata Zawada. Other cases are left alone."""
    if form in _FEMININE_CASES or any(w[-1:] in "ęą" for w in words):
        return [w[:-1] + "a" if w[-1:] in "ęą" else w for w in words]
    if form not in _MASCULINE_CASES:
        return words
    return [_masculine(w, emails) for w in words]


def _masculine(word: str, emails: str) -> str:
    folded = fold(word)
    if folded.endswith(("skiego", "ckiego", "dzkiego")):
        return word[:-3]
    if folded.endswith("ego"):
        return word[:-3] + "y"
    if folded.endswith("y"):
        return word[:-1] + "a"  # "Pana Jana Dudy"
    if not folded.endswith("a"):
        return word
    stem = word[:-1]
    fleeting = stem[:-1] + "e" + stem[-1]  # "Gronka" → Gronek, "Pawła" → Paweł
    if fold(fleeting) in emails or (fold(stem[-2:-1]) not in "aeiouy" and stem[-1] in "kł"):
        return fleeting
    return stem


def bare_name(line: str) -> str | None:
    """The name when the line is a name alone ("Anna Kowalska", "dr Jan Nowak")."""
    chunk = tokenize(line)
    names = chunk.names
    if names and names[0].first == 0 and names[0].last == len(chunk.tokens) - 1:
        return names[0].text
    return None


# --- positions and offices -----------------------------------------------------------------


def _position_head(tokens: list[Token], i: int) -> bool:
    return _position_stem(tokens[i].folded) is not None


def _stops_position(chunk: Chunk, j: int) -> bool:
    token = chunk.tokens[j]
    return (token.folded in _ADDRESS_FORMS or token.folded in vocab.OFFICE_HEADS
            or token.office_abbreviation or token.folded in _INTENT_WORDS
            or j in chunk.by_start or j in chunk.contact_at)


def find_position(chunk: Chunk, lo: int, hi: int, *, last_only: bool = False,
                  head_within: int | None = None) -> tuple[str, tuple[int, int]] | None:
    """A post ("Zastępcy Prezydenta Miasta" → Zastępca Prezydenta Miasta) among tokens
    lo..hi: its head word, an adjective before it, the words after it up to a separator.
    `last_only`: the one that runs up to `hi` (a post written before the name)."""
    tokens = chunk.tokens
    heads = [i for i in range(lo, min(hi, lo + (head_within or hi))) if _position_head(tokens, i)]
    for i in heads:
        j = i + 1
        while (j < hi and not tokens[j - 1].boundary and not _stops_position(chunk, j)
               and j - i < _MAX_POSITION_WORDS):
            j += 1
        while j > i + 1 and tokens[j - 1].folded in _TRAILING:
            j -= 1
        if last_only and j != hi and not (j < len(tokens) and tokens[j].folded in _ADDRESS_FORMS):
            continue
        first = i - 1 if i > lo and tokens[i - 1].folded in vocab.POSITION_ADJECTIVES else i
        words = [_adjective(tokens[first].core)] if first < i else []
        words += [_head(tokens[i])] + [t.core for t in tokens[i + 1:j]]
        return " ".join(words), (first, j - 1)
    return None


def _head(token: Token) -> str:
    found = _position_stem(token.folded)
    assert found is not None
    stem, word = found
    return token.core[:len(stem)] + word[len(stem):]


def _adjective(word: str) -> str:
    """"głównego" → główny, "starszej" → starsza."""
    folded = fold(word)
    for ending, nominative_ending in (("ego", "y"), ("ym", "y"), ("ej", "a")):
        if folded.endswith(ending):
            return word[:-len(ending)] + nominative_ending
    return word


def find_city(chunk: Chunk, lo: int, hi: int, *, at_start: bool = False) -> str | None:
    """The first office ("w Urzędzie Miejskim w Mielcu" → Urząd Miejski w Mielcu, "UM Łomża")
    or town ("Miasto Gniezno" → Gniezno) among tokens lo..hi, as written."""
    tokens = chunk.tokens
    for i in range(lo, min(hi, lo + 1) if at_start else hi):
        token = tokens[i]
        head = vocab.OFFICE_HEADS.get(token.folded) if token.capitalised else None
        town = (token.folded in _TOWN_WORDS and token.capitalised and not at_start)
        if head is None and not token.office_abbreviation and not town:
            continue
        j = i + 1
        while j < hi and not tokens[j - 1].boundary and _continues_office(tokens, j, hi):
            j += 1
        words = [vocab.OFFICE_WORDS.get(t.folded, t.core) for t in tokens[i + 1:j]]
        if town or (head is not None and not token.office_abbreviation):
            # "Miasto Gniezno" names the town; "ze strony Urzędu", a bare office, names none.
            if town and words:
                return " ".join(words)
            if not words:
                continue
        return " ".join([head or token.core, *words])
    return None


def _continues_office(tokens: list[Token], j: int, hi: int) -> bool:
    token = tokens[j]
    if token.folded in vocab.OFFICE_WORDS or (token.capitalised and token.folded not in _STOP
                                              and token.folded not in _ADDRESS_FORMS):
        return _position_stem(token.folded) is None
    return (token.folded in ("w", "we", "i") and j + 1 < hi and not token.boundary
            and tokens[j + 1].capitalised)


def leftover(chunk: Chunk, found: Found, lo: int, hi: int) -> str:
    """The words of tokens lo..hi that are none of the person's values (their events)."""
    used = set(found.used)
    if found.name:
        used.update(range(found.name.first, found.name.last + 1))
    if found.position:
        used.update(range(found.position[0], found.position[1] + 1))
    return " ".join(t.core for n, t in enumerate(chunk.tokens[lo:hi], start=lo) if n not in used)
