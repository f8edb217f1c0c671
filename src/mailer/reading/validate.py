"""Pure check of one filled form: draft values → Registrant, problems worded for the official."""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from mailer.reading import vocabulary as vocab
from mailer.reading.textfold import FoldTable, strip_marks
from mailer.settings import Event

FIELDS = ("event", "name", "position", "city", "email", "phone")

# Problem codes: stable, English, used by respond, store and `inspect --json`.
MISSING = "missing"
INVALID = "invalid"
UNKNOWN_EVENT = "unknown_event"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing the official has to correct (or, with code "warning", should check)."""

    field: str  # one of FIELDS, or "form" for the message as a whole
    message: str  # Polish, addressed to the official, says exactly what to correct
    code: str  # MISSING | INVALID | UNKNOWN_EVENT | WARNING


@dataclass(frozen=True)
class Registrant:
    """One person as understood from one form; complete when no problem blocks registration."""

    name: str | None
    position: str | None
    city: str | None
    email: str | None
    phone: str | None  # E.164 when it parsed, else as written (with a warning)
    events: tuple[str, ...]  # event ids, in campaign order
    problems: tuple[Problem, ...] = ()  # errors: any of them makes the registrant incomplete
    warnings: tuple[Problem, ...] = ()
    # (field, where its value came from): "form", reading.prose's rules, "contact" (the
    # invited contact's row), "earlier" (an earlier message completed); issue 13.
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        """True when nothing has to be corrected (warnings do not count)."""
        return not any(p.code != WARNING for p in self.problems)


# --- folding ------------------------------------------------------------------------------------

_SEPARATOR_CHARS = frozenset("/,;+&\n")
def _fold_char(char: str) -> str:
    if char in _SEPARATOR_CHARS:
        return char
    if char.isspace() or unicodedata.category(char)[0] in "PS":
        return " "  # dashes, quotes, brackets, dots: „Smart City – …” == "smart city"
    base = strip_marks(char)
    return base if len(base) == 1 else char  # one char in, one out: spans index the original


_FOLDED = FoldTable(_fold_char)


def _fold(text: str) -> str:
    """Lower case, no diacritics, punctuation as spaces; same length as `text` (NFC input)."""
    return text.translate(_FOLDED)


def _tidy(value: str) -> str:
    """The value with runs of whitespace (newlines, tabs, NBSP) as one space."""
    return " ".join(value.split())


def _words(value: str) -> str:
    """Folded words of `value` joined by single spaces, separators dropped: for comparisons."""
    return " ".join(re.sub(r"[/,;+&]", " ", _fold(unicodedata.normalize("NFC", value))).split())


# What people write into a field they have nothing for; compared folded, punctuation dropped.
# Values without any letter or digit ("-", "...", "—") are placeholders too.
_PLACEHOLDERS = frozenset({
    "", "brak", "x", "xx", "xxx", "nie dotyczy", "nd", "n d", "n a", "na", "none", "null",
    "nie", "nic", "tbd", "todo", "jw", "j w",
})


# "jw. (nadawca)", "jak wyżej": nothing of its own (for an e-mail: the sender's address).
_SAME_AS_ABOVE = re.compile(r"^(?:" + "|".join(map(re.escape, vocab.SAME_AS_ABOVE)) + r")(?!\w)")


def _is_placeholder(value: str) -> bool:
    words = _words(value)
    return words in _PLACEHOLDERS or bool(_SAME_AS_ABOVE.match(words))


def _quote(value: str, limit: int = 60) -> str:
    """A value as written, on one line and shortened, inside Polish quotes."""
    text = _tidy(value)
    return f"„{text if len(text) <= limit else text[: limit - 1] + '…'}”"


# --- events -------------------------------------------------------------------------------------

_ALL_WORDS = ("oba", "obie", "obu", "obydwa", "obydwie", "obydwu", "wszystkie", "wszystkich",
              "both", "all")
_SEPARATOR = re.compile(r"[/,;+&\n]|(?<!\S)(?:i|oraz|and)(?!\S)")
_MIN_SUBSTRING = 3  # shorter aliases ("sc") only match a whole part, never inside one
_MIN_STEM = 5  # words this long may be inflected: "w warsztacie", "do naboru", "Inicjatywy"


@dataclass(frozen=True)
class _Term:
    words: str  # folded
    event_id: str | None  # None: every event

    def pattern(self) -> re.Pattern[str]:
        return _term_pattern(self.words)


@functools.lru_cache(maxsize=256)
def _term_pattern(words: str) -> re.Pattern[str]:
    parts = [
        re.escape(w[:-1]) + r"\w{0,4}" if w.isalpha() and len(w) >= _MIN_STEM else re.escape(w)
        for w in words.split()
    ]
    # Words of a term may not span a line break: a newline separates events.
    return re.compile(r"(?<!\w)" + r"[^\S\n]+".join(parts) + r"(?!\w)")


def _terms(events: Sequence[Event]) -> tuple[_Term, ...]:
    return _campaign_terms(tuple(events))


@functools.lru_cache(maxsize=16)  # one campaign's events: built once, not per form
def _campaign_terms(events: tuple[Event, ...]) -> tuple[_Term, ...]:
    terms = {_Term(w, None) for w in _ALL_WORDS}
    for event in events:
        names = (event.id, event.title, *event.aliases)
        terms.update(_Term(_words(name), event.id) for name in names)
    return tuple(sorted((t for t in terms if t.words), key=lambda t: (t.words, t.event_id or "")))


def _find_spans(folded: str, terms: Iterable[_Term]) -> list[tuple[int, int, str | None]]:
    """Non-overlapping term matches in text order, the longest winning (the full title beats
    its "warsztat")."""
    found = [(m.start(), m.end(), t.event_id) for t in terms if len(t.words) >= _MIN_SUBSTRING
             for m in t.pattern().finditer(folded)]
    found.sort(key=lambda span: (span[0] - span[1], span[0]))
    taken: list[tuple[int, int, str | None]] = []  # kept in text order: bisect, not a scan
    for span in found:
        at = bisect.bisect_left(taken, span[:2], key=lambda s: s[:2])
        before_ok = at == 0 or taken[at - 1][1] <= span[0]
        after_ok = at == len(taken) or span[1] <= taken[at][0]
        if before_ok and after_ok:
            taken.insert(at, span)
    return taken


def _parts(folded: str, spans: Sequence[tuple[int, int, str | None]]) -> list[tuple[int, int]]:
    """(start, end) of the parts between separators; a separator inside a match (the " i " of
    "doświadczenia i wyzwania") does not split. `spans` are in text order."""
    starts = [start for start, _end, _id in spans]
    cuts = []
    for m in _SEPARATOR.finditer(folded):
        at = bisect.bisect_right(starts, m.start()) - 1  # the last match starting before it
        if at < 0 or spans[at][1] < m.end():
            cuts.append((m.start(), m.end()))
    bounds = [0, *(x for cut in cuts for x in cut), len(folded)]
    return list(zip(bounds[::2], bounds[1::2], strict=True))


# An event mentioned as not chosen (issue 13): a negation among the few words before it ("bez
# PIM", "nie oba – sam warsztat"), unless "nie tylko", or right after it up to the part's end
# ("PIM – nie", "warsztat: nie"). Compared on the folded part, word by word.
def _phrases(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_NEGATED_BEFORE = re.compile(r"(?<!\S)(?:" + _phrases(vocab.NEGATIONS_BEFORE) + r")(?!\S)"
                             r"(?![ ]+(?:" + _phrases(vocab.NEGATION_BREAKERS) + r")(?!\S))")
_NEGATED_AFTER = re.compile(r"^ *(?:" + _phrases(vocab.NEGATIONS_AFTER) + r")(?!\S)")
_FILLERS = frozenset(vocab.EVENT_FILLERS)


def _negated_before(gap: str) -> bool:
    """Is there a negation among the last words of `gap` (the folded text between the part's
    start or the previous event and this event)?"""
    return bool(_NEGATED_BEFORE.search(" ".join(gap.split()[-vocab.NEGATION_REACH:])))


def _choose(folded: str, part: tuple[int, int],
            spans: Sequence[tuple[int, int, str | None]]) -> tuple[set[str | None], set[str]]:
    """The events chosen in one part and those declined ("oba oprócz PIM": all but PIM)."""
    chosen: set[str | None] = set()
    declined: set[str] = set()
    begin, part_end = part
    for n, (start, end, event_id) in enumerate(spans):
        after = n == len(spans) - 1 and _NEGATED_AFTER.match(folded[end:part_end])
        if not (after or _negated_before(folded[begin:start])):
            chosen.add(event_id)
        elif event_id is not None:  # "nie oba" declines no event in particular
            declined.add(event_id)
        begin = end
    return chosen, declined


def match_events(text: str, events: Sequence[Event]) -> tuple[tuple[str, ...], list[str]]:
    """Event ids chosen in a `Wydarzenie` value (campaign order; an event mentioned with a
    negation is not chosen) and the parts that named none."""
    original = unicodedata.normalize("NFC", text)
    folded = _fold(original)
    terms = _terms(events)
    short = {t.words: t.event_id for t in terms if len(t.words) < _MIN_SUBSTRING}
    spans = _find_spans(folded, terms)
    chosen: set[str | None] = set()
    declined: set[str] = set()
    unknown: list[str] = []
    starts = [start for start, _end, _id in spans]
    for start, end in _parts(folded, spans):
        first = bisect.bisect_left(starts, start)
        inside = [s for s in spans[first:bisect.bisect_left(starts, end)] if s[1] <= end]
        whole = " ".join(folded[start:end].split())
        if inside:
            yes, no = _choose(folded, (start, end), inside)
            chosen, declined = chosen | yes, declined | no
        elif whole in short:
            chosen.add(short[whole])
        elif any(c.isalnum() for c in whole) and not set(whole.split()) <= _FILLERS:
            unknown.append(_tidy(original[start:end]))
    ids = tuple(e.id for e in events
                if (None in chosen or e.id in chosen) and e.id not in declined)
    return ids, unknown


def named_events(text: str, events: Sequence[Event]) -> tuple[str, ...]:
    """Event ids `text` names at all, negated or not ("rezygnuję z warsztatu": the workshop);
    "oba"/"both" names every event. For a cancellation's clause (reading.wording)."""
    spans = _find_spans(_fold(unicodedata.normalize("NFC", text)), _terms(events))
    named = {event_id for _start, _end, event_id in spans}
    return tuple(e.id for e in events if None in named or e.id in named)


def _choice_name(event: Event) -> str:
    """What to type for an event: its first alias (acronyms like "pim" in capitals), else id."""
    name = event.aliases[0] if event.aliases else event.id
    return name.upper() if name.isalpha() and len(name) <= 4 else name


def _choices(events: Sequence[Event]) -> str:
    """„warsztat” (Warsztat „Smart City – …”), „PIM” (Partnerska …) lub „oba”."""
    names = []
    for event in events:
        name = _choice_name(event)
        same = _words(name) == _words(event.title)
        names.append(f"„{name}”" if same else f"„{name}” ({event.title})")
    if len(events) == 2:
        names.append("„oba”")
    elif len(events) > 2:
        names.append("„wszystkie”")
    if len(names) < 2:
        return "".join(names) or "–"  # a campaign without events offers no choice
    return ", ".join(names[:-1]) + " lub " + names[-1]


def _check_events(value: str, events: Sequence[Event]) -> tuple[tuple[str, ...], list[Problem]]:
    if _is_placeholder(value):
        if len(events) == 1:  # empty with a single event means that event
            return (events[0].id,), []
        return (), [Problem("event", "Pole „Wydarzenie” jest puste – prosimy wpisać, na które "
                            f"wydarzenie zgłaszają się Państwo: {_choices(events)}.", MISSING)]
    ids, unknown = match_events(value, events)
    if unknown:
        quoted = ", ".join(_quote(part) for part in unknown)
        noun = "wydarzenia" if len(unknown) == 1 else "wydarzeń"
        return ids, [Problem("event", f"Nie rozpoznaliśmy {noun} {quoted} w polu "
                             f"„Wydarzenie” – prosimy wpisać: {_choices(events)}.",
                             UNKNOWN_EVENT)]
    if not ids:  # every event named was declined ("PIM – nie"), or none was named ("???")
        return ids, [Problem("event", f"W polu „Wydarzenie” nie wybrano żadnego wydarzenia "
                             f"({_quote(value)}) – prosimy wpisać: {_choices(events)}.", MISSING)]
    return ids, []


# --- people and addresses -------------------------------------------------------------------------

_MIN_LETTERS = 2


# A name, a position, a city: the longest real ones ("Naczelnik Wydziału … Urzędu Miasta
# Stołecznego Warszawy") stay well under this. Longer is no answer's business to repeat: a
# stranger's 10 KB "position" would go out in a ministry's confirmation (issue 12).
MAX_TEXT = 200


def _too_long(value: str, field_name: str, label: str) -> list[Problem]:
    if len(_tidy(value)) <= MAX_TEXT:
        return []
    return [Problem(field_name, f"Pole „{label}” jest za długie – prosimy wpisać najwyżej "
                    f"{MAX_TEXT} znaków.", INVALID)]


def _check_text(value: str, field_name: str, label: str, wanted: str) -> tuple[str | None,
                                                                              list[Problem]]:
    """A required free-text field (name, city): present, not a placeholder, has letters, not
    longer than MAX_TEXT."""
    if not value.strip():
        return None, [Problem(field_name, f"Pole „{label}” jest puste – prosimy podać {wanted}.",
                              MISSING)]
    if _is_placeholder(value):
        return None, [Problem(field_name, f"Pole „{label}” nie zostało wypełnione (wpisano "
                              f"{_quote(value)}) – prosimy podać {wanted}.", MISSING)]
    letters = sum(c.isalpha() for c in value)
    if letters < _MIN_LETTERS or "@" in value:  # "12345", "J", an address in the wrong field
        return None, [Problem(field_name, f"W polu „{label}” wpisano {_quote(value)} – prosimy "
                              f"podać {wanted}.", INVALID)]
    too_long = _too_long(value, field_name, label)
    return (None, too_long) if too_long else (_tidy(value), [])


@functools.lru_cache(maxsize=4096)  # a reply's sender is checked again before it is answered
def normal_address(address: str) -> str | None:
    """`address` normalised by email-validator (domain lower-cased), or None if invalid."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _normal_email(value: str) -> str | None:
    """A form's e-mail value normalised, or None if it is no valid address."""
    candidate = value.strip()
    if "<" in candidate and ">" in candidate:  # "Jan Kowalski <jan@…>"
        candidate = parseaddr(candidate)[1]
    return normal_address(candidate.rstrip("."))


def _check_email(value: str, sender: str) -> tuple[str | None, list[Problem]]:
    if _is_placeholder(value):
        # No address in the form means the sender's own.
        address = _normal_email(parseaddr(sender)[1]) if sender.strip() else None
        if address is None:
            return None, [Problem("email", "Pole „E-mail” jest puste – prosimy podać adres "
                                  "e-mail osoby zgłaszanej.", MISSING)]
        return address, []
    address = _normal_email(value)
    if address is None:
        return None, [Problem("email", f"Adres e-mail {_quote(value)} jest niepoprawny – prosimy "
                              "sprawdzić jego pisownię i podać adres w postaci nazwa@domena.pl.",
                              INVALID)]
    return address, []


# "87 621 60 00 wewn. 305": phonenumbers reads the extension's digits into the number, so it is
# cut off first and written back after the E.164 number as "wew. 305" (SPEC §6, issue 13).
_EXTENSION = re.compile(r"[,;(]?[ \t]*(?<![^\W\d_])(?:" + "|".join(
    re.escape(w) + ("?" if w.endswith(".") else "") for w in vocab.EXTENSION_WORDS)
    + r")[ \t:]*(\d{1,6})\)?[ \t.]*$", re.IGNORECASE)
_MAX_PHONE = 100  # characters: phonenumbers refuses longer input anyway


@functools.lru_cache(maxsize=1024)  # a thread repeats its signatures' numbers
def _e164(text: str) -> str | None:
    """The first valid number in `text` (Polish unless prefixed) in E.164, or None."""
    try:
        number = phonenumbers.parse(text, "PL")
    except phonenumbers.NumberParseException:
        number = None
    worded = any(c.isalpha() or c in ",;/" for c in text)
    if worded and (number is None or not phonenumbers.is_valid_number(number)):
        # "600 100 200 (komórka)", "56 451 02 75, kom. 609 118 274": the first number in it
        found = next(iter(phonenumbers.PhoneNumberMatcher(text, "PL")), None)
        number = found.number if found is not None else None
    if number is None or not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _check_phone(value: str) -> tuple[str | None, list[Problem]]:
    """Optional: E.164 when it is a valid number (Polish unless prefixed), an extension kept
    after it ("+48876216000 wew. 305"); else as written, with a warning."""
    if _is_placeholder(value):
        return None, []
    text = value[:_MAX_PHONE]
    extension = _EXTENSION.search(text)
    main = _e164(text[:extension.start()] if extension else text)
    if main is not None:
        return (f"{main} wew. {extension.group(1)}" if extension else main), []
    return _tidy(value), [Problem("phone", f"Numer telefonu {_quote(value)} nie wygląda na "
                                  "poprawny – zapisaliśmy go tak, jak został podany; prosimy "
                                  "go sprawdzić.", WARNING)]


_ADDRESS_FORM = re.compile(r"^[ \t]*(?:" + "|".join(vocab.ADDRESS_FORMS) + r")[ \t]+(?=\w)",
                           re.IGNORECASE)


def _without_address_form(name: str) -> str:
    """"Pani Magdalena Sobczak" → "Magdalena Sobczak"."""
    return _ADDRESS_FORM.sub("", name, count=1)


@dataclass
class _Found:
    problems: list[Problem] = field(default_factory=list)

    def take(self, result: tuple[str | None, list[Problem]]) -> str | None:
        self.problems += result[1]
        return result[0]


def validate_draft(values: Mapping[str, str], *, sender: str,
                   events: Sequence[Event]) -> Registrant:
    """Check one form's raw values (keys among FIELDS) as the form's rules say; never raises."""
    found = _Found()
    ids, event_problems = _check_events(values.get("event", ""), events)
    found.problems += event_problems
    name = found.take(_check_text(_without_address_form(values.get("name", "")), "name",
                                  "Imię i nazwisko",
                                  "imię i nazwisko osoby zgłaszanej"))
    position = values.get("position", "")
    if too_long := _too_long(position, "position", "Stanowisko"):
        found.problems += too_long
        position = ""
    city = found.take(_check_text(values.get("city", ""), "city", "Miasto / urząd",
                                  "nazwę miasta lub urzędu"))
    email = found.take(_check_email(values.get("email", ""), sender))
    phone = found.take(_check_phone(values.get("phone", "")))
    return Registrant(
        name=name,
        position=None if _is_placeholder(position) else _tidy(position),
        city=city,
        email=email,
        phone=phone,
        events=ids,
        problems=tuple(p for p in found.problems if p.code != WARNING),
        warnings=tuple(p for p in found.problems if p.code == WARNING),
    )
