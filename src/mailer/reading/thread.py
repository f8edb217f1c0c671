"""Pure: a reply read against its thread — our own answers quoted back are not forms, and a
correction written above the quoted earlier form is applied over its values (issue 13)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from email.message import EmailMessage
from typing import TYPE_CHECKING

from mailer.reading.headers import header_text
from mailer.reading.quotes import fold

if TYPE_CHECKING:
    from mailer.reading.parse import Draft

# respond.answer_message_id: "<digest.answer@domain>". A reply whose nearest parent is one of
# these quotes our answer.
_ANSWER_ID = re.compile(r"<[0-9a-f]+\.answer@[^<>\s]+>")
_MSGID = re.compile(r"<[^<>\s]+>")
# The wording of our answers (templates/confirmation, incomplete, late_notice, cancelled),
# folded: any one of these in the quoted history says it is our answer, when the client
# dropped In-Reply-To (a forward, webmail "reply with history").
OUR_ANSWER_PHRASES = (
    "uprzejmie potwierdzamy rejestracje",
    "potwierdzony udzial:",
    "do uzupelnienia lub poprawienia:",
    "nie mozemy go jeszcze przyjac",
    "nie mozemy ich jeszcze przyjac",
    "nie udalo nam sie odczytac z niej wypelnionego formularza",
    "zgloszenie po terminie – nie moglo zostac przyjete",
    "wiadomosc zostala wygenerowana automatycznie w odpowiedzi na wiadomosc",
)


def answers_our_answer(msg: EmailMessage, quoted: str) -> bool:
    """Does this reply quote one of our own answers (its parent's Message-ID, else its
    wording)?"""
    parents = _MSGID.findall(header_text(msg, "In-Reply-To"))
    if not parents:
        parents = _MSGID.findall(header_text(msg, "References"))[-1:]
    if any(_ANSWER_ID.fullmatch(parent.lower()) for parent in parents):
        return True
    folded = fold(quoted)
    return any(phrase in folded for phrase in OUR_ANSWER_PHRASES)


def typed_into(values: Mapping[str, str]) -> bool:
    """Is a form read from our quoted answer one the sender filled? Our answers show the data
    they accepted without an event label ("Potwierdzony udział:" lists the events): a form
    with one is the blank registration form an `incomplete` answer carries, filled in."""
    return "event" in values


# --- corrections ---------------------------------------------------------------------------------

# Words that say a sentence corrects what was sent ("proszę zmienić", "poprawka", "prawidłowy
# numer to", "zamiast", "pomyłka", "literówka").
_CUE = re.compile(
    r"\b(?:zmien|zmian|popraw|korekt|zamiast|prawidlow|wlasciw|pomyl|literowk|blad|bledn"
    r"|zly|zla|zle|aktualn|nowy|nowa|change|correct|update)\w*")
# The field a correction names, the words ending its name, then "na", "to", ":" or a dash.
_FIELD_WORDS = {
    "name": r"imie i nazwisko|imienia i nazwiska|full name",
    "family": r"nazwisk\w*",
    "given": r"imie|imienia",
    "position": r"stanowisk\w*|funkcj\w*|position",
    "city": r"urzad\w*|jednostk\w*|instytucj\w*",
    "email": r"e-?mail\w*|adres\w* (?:e-?mail\w*|mailow\w*|poczty\w*)",
    "phone": r"(?:numer\w* |nr )?(?:telefon\w*|tel\.?|komork\w*)|numer\w*|phone",
    "event": r"zgloszeni[ea]|wydarzeni[ea]|udzial|(?:za|do)pisa\w*(?: mnie| nas)?",
}
_CORRECTION = re.compile(
    r"\b(?:" + "|".join(f"(?P<{key}>{words})" for key, words in _FIELD_WORDS.items()) + r")"
    r"(?:[ \t]+[^\s:–—-]+){0,2}?"  # "moje zgłoszenie", "numer telefonu komórkowego"
    r"(?:[ \t]+(?:na|to|jest|brzmi)[ \t]+|[ \t]*:[ \t]*|[ \t]+[–—-][ \t]+)"
)
_CLAUSE_END = re.compile(r"\s+[(–—-]\s*|[;,!?]\s|\.(?:\s|$)|$")
_WAS = re.compile(r"\s*\(\s*(?:nie|a nie|zamiast)\s+([^)]{1,80})\)")
_PHONE = re.compile(r"\+?\d[\d \t()/-]{5,}\d(?:[ \t]*(?:wewn?|w)\.?[ \t]*\d{1,5})?")
_ADDRESS = re.compile(r"[^\s,;:<>()\[\]]+@[^\s,;:<>()\[\]]+[^\s,;:<>()\[\].]")
_MAX_LINE = 500  # a correction is one sentence; longer lines are not searched
_MAX_LINES = 40


def _value(key: str, line: str, start: int) -> tuple[str, str, int]:
    """(new value, the old one it names "(nie …)", where the value ends) after the marker at
    `start` of `line`."""
    rest = line[start:]
    if key in ("phone", "email"):
        found = (_PHONE if key == "phone" else _ADDRESS).search(rest)
        return (found.group().strip(), "", start + found.end()) if found else ("", "", start)
    end = _CLAUSE_END.search(rest)
    stop = end.start() if end else len(rest)
    was = _WAS.match(rest, stop)
    return rest[:stop].strip(" \t\"'„”“"), (was.group(1).strip() if was else ""), start + stop


def read_corrections(own: str) -> list[tuple[str, str, str]]:
    """(field, new value, old value or "") for each correction written in the own text; none
    without a word saying it corrects something."""
    lines = [line for line in own.split("\n")[:_MAX_LINES] if len(line) <= _MAX_LINE]
    if not any(_CUE.search(fold(line)) for line in lines):
        return []
    found: list[tuple[str, str, str]] = []
    for line in lines:
        folded, position = fold(line), 0  # fold keeps offsets: values are taken as written
        while (match := _CORRECTION.search(folded, position)) is not None:
            key = next(k for k in _FIELD_WORDS if match.group(k) is not None)
            value, was, position = _value(key, line, match.end())
            position = max(position, match.end())  # the value's words name no field
            if value and any(c.isalnum() for c in value):
                found.append((key, value, was))
    return found


def _corrected_name(name: str, key: str, value: str, was: str) -> str:
    """The name with its given or family name replaced: the word written "(nie …)", else the
    word most like the new one (a typo), else the last (family) or first (given) word."""
    words = name.split()
    if key == "name" or len(words) < 2 or len(value.split()) > 1:
        return value
    folded = [fold(w) for w in words]
    if was and fold(was) in folded:
        index = folded.index(fold(was))
    else:
        def common(word: str) -> int:
            new = fold(value)
            return next((n for n, (a, b) in enumerate(zip(word, new, strict=False)) if a != b),
                        min(len(word), len(new)))
        best = max(range(len(words)), key=lambda n: (common(folded[n]), n))
        index = best if common(folded[best]) >= 3 else (0 if key == "given" else -1)
    words[index] = value
    return " ".join(words)


def apply_corrections(values: Mapping[str, str], corrections: Sequence[tuple[str, str, str]],
                      ) -> dict[str, str]:
    """The quoted form's values with the corrections written over them."""
    merged = dict(values)
    for key, value, was in corrections:
        if key in ("family", "given", "name"):
            merged["name"] = _corrected_name(merged.get("name", ""), key, value, was)
        else:
            merged[key] = value
    return merged


def refuse_and_correct(drafts: Sequence[Draft], *, ours: bool, own: str) -> list[Draft]:
    """The forms of the quoted history that stand: our own answer's data refused unless
    typed into; one earlier form with the corrections of the own text over it."""
    kept = [d for d in drafts if not ours or typed_into(d.values)]
    corrections = read_corrections(own) if len(kept) == 1 else []
    if corrections:
        kept = [replace(kept[0], values=apply_corrections(kept[0].values, corrections))]
    return kept
