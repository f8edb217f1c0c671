"""Pure: a reply's own text split from the quoted history (quote markers, attributions,
Outlook's header blocks, separators), and the folding every reading stage matches on."""

# Quote splitting is written here rather than with mail-parser-reply 1.36, tried on our samples:
# - its Polish `from_header` accepts ONE line ({1,}), so a reply line "Data: 26.10 pasuje" cuts
#   the reply there, and it knows "Wysłano:" but not desktop Outlook's "Wysłane:";
# - when a reply starts with a quote header the empty first fragment is skipped, so
#   `latest_reply` returns the quoted header instead of "" (our "typed into the original" case);
# - patterns live in a module-global dict (MAIL_LANGUAGES): extending it mutates library state
#   for the whole process, and Gmail "W dniu … napisał(a):" / Thunderbird "pisze:" are missing;
# - it strips every line and leaves "> " lines alone unless a header precedes them.
# The rules below cover the same clients in ~60 lines and keep bottom-posted text as own text.

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

from mailer.reading.textfold import FoldTable, strip_marks


@dataclass(frozen=True)
class ReplyText:
    """A reply body split into the sender's own text and the quoted history."""

    own: str  # the reply's own text, quoted history removed
    quoted: str  # the rest, as written (may be "")


def _fold_char(char: str) -> str:
    base = strip_marks(char)
    return base if len(base) == 1 else char  # one char in, one out: match offsets stay valid


_FOLDED = FoldTable(_fold_char)


def fold(text: str) -> str:
    """Lower case without diacritics ("Imię" → "imie", "Łódź" → "lodz"), same length as text."""
    if text.isascii():
        return text.lower()  # the same, and much faster than a translate with a Python table
    if len(text) <= _FOLD_CACHED_LENGTH:
        return _fold_line(text)
    return text.translate(_FOLDED)


_FOLD_CACHED_LENGTH = 200  # lines up to this long are remembered (at most 4096 of them)


@functools.lru_cache(maxsize=4096)  # replies quote the same invitation: its lines recur
def _fold_line(text: str) -> str:
    return text.translate(_FOLDED)


_QUOTE_LINE = re.compile(r"^[ \t]*>")
_SEPARATOR = re.compile(
    r"^-{2,}\s*(?:wiadomosc oryginalna|oryginalna wiadomosc|original message"
    r"|wiadomosc przekazana dalej|forwarded message)\s*-{2,}$|^_{20,}$"
)
_HEADER_START = re.compile(r"^(?:od|from|nadawca)\s*:")
_HEADER_FIELD = re.compile(
    r"^(?:od|from|nadawca|wyslane|wyslano|data|sent|date|do|to|dw|cc|kopia|temat|subject)\s*:")
_SUBJECT_FIELD = re.compile(r"^(?:temat|subject)\s*:")
_HEADER_BLOCK_LINES = 8
# Attributions led by a known word ("W dniu … napisał(a):", "On … wrote:", "Dnia … o godz. …
# pisze:", Thunderbird's old "Użytkownik … napisał:"), and those led by a date, a weekday or a
# quoted name with no such word: Android's `23 mar 2017 21:25 "Name" <addr> napisał(a):`,
# old Gmail's `2016-10-24 15:36 GMT+02:00 Name <addr>:` (issue 13).
_ATTRIBUTION_START = re.compile(r"^(?:w dniu|dnia|on|uzytkownik|wiadomosc napisana przez)\b")
_ATTRIBUTION = re.compile(
    r"^(?:(?:w dniu|dnia|on|uzytkownik)\b.*\b(?:napisal\(a\)|napisala?|nadeslal|pisze|wrote)"
    r"|wiadomosc napisana przez\b.*)\s*:$"
)
_DATED_START = re.compile(
    r"^(?:\d|[\"'(]|(?:pon|wt|sr|czw|pt|sob|nie|niedz|nd|mon|tue|wed|thu|fri|sat|sun)\w*\.?,?\s)")
_VERB_END = re.compile(r"\b(?:napisal\(a\)|napisala?|nadeslal|pisze|wrote)\s*:$")
_ADDRESS_END = re.compile(r"(?:>|@[\w.-]+)\s*:$")  # "… Name <addr>:"
_DATE_OR_TIME = re.compile(r"\d{1,2}:\d{2}|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
# Zoho's `---- On … wrote ----` (and its Polish "napisał"): a separator of its own.
_FRAMED_ATTRIBUTION = re.compile(r"^-{2,}.*\b(?:napisal\(a\)|napisala?|pisze|wrote)\s*-{2,}$")
_ATTRIBUTION_MAX_LINES = 3  # Gmail hard-wraps its attribution at 78 columns


class _Plains(Sequence[str]):
    """Each line folded, without markdown stars and outer blanks: what the patterns see.

    Folded when first looked at, once: "> " lines and everything after a separator are
    never looked at, and they are most of a reply.
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = lines
        self.folded: list[str | None] = [None] * len(lines)

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.lines)))]
        plain = self.folded[index]
        if plain is None:
            plain = self.folded[index] = fold(self.lines[index].replace("*", "")).strip()
        return plain


def _is_header_block(plains: Sequence[str], i: int) -> bool:
    """Outlook's "Od: … Wysłane: … Do: … Temat:" (or From/Sent/To/Subject) block starts at i;
    Outlook.com's starts with "Date:"/"Data:" above the sender (issue 13)."""
    if not _HEADER_FIELD.match(plains[i]):
        return False
    block = [line for line in plains[i : i + _HEADER_BLOCK_LINES] if line]
    fields = [line for line in block if _HEADER_FIELD.match(line)]
    if _HEADER_START.match(plains[i]):
        return len(fields) >= 3  # the sender and two more
    # Led by another field: a sender and a subject too, so "Data: 26.10 / Od: 10:00 / Do:
    # 12:00" in a reply is no header block.
    return (len(fields) >= 4
            and any(_HEADER_START.match(line) for line in fields)
            and any(_SUBJECT_FIELD.match(line) for line in fields))


def _is_attribution(joined: str, *, known_start: bool) -> bool:
    if known_start:
        return bool(_ATTRIBUTION.match(joined))
    if _VERB_END.search(joined):
        return "@" in joined or bool(_DATE_OR_TIME.search(joined))
    return bool(_ADDRESS_END.search(joined) and _DATE_OR_TIME.search(joined))


def _attribution_span(lines: Sequence[str], plains: Sequence[str], i: int) -> int:
    """Lines taken by an attribution ("W dniu … napisał(a):", "On … wrote:", "2020-10-19
    9:00 GMT+02:00 Name <addr>:") at i; 0 if none."""
    known_start = bool(_ATTRIBUTION_START.match(plains[i]))
    if not known_start and not _DATED_START.match(plains[i]):
        return 0
    joined = ""
    for n in range(1, min(_ATTRIBUTION_MAX_LINES, len(lines) - i) + 1):
        if not lines[i + n - 1].strip() or joined.endswith(":"):  # a wrapped line runs on
            break
        joined = f"{joined} {plains[i + n - 1]}".strip()
        if joined.endswith(":") and _is_attribution(joined, known_start=known_start):
            return n
    return 0


def _quote_follows(lines: Sequence[str], j: int) -> bool:
    next_line = next((line for line in lines[j:] if line.strip()), "")
    return bool(_QUOTE_LINE.match(next_line))


# What a separator, a header block or an attribution can start with (their patterns' first
# characters): any other line is own text without trying them.
_HISTORY_INITIALS = frozenset("-_ofwdnsctuhp\"'(0123456789")


def _history_span(lines: Sequence[str], plains: Sequence[str], i: int) -> int:
    """How many lines from i are quoted history (0: line i is own text)."""
    if _QUOTE_LINE.match(lines[i]):
        return 1
    plain = plains[i]
    if plain[:1] not in _HISTORY_INITIALS:
        return 0
    if _SEPARATOR.match(plain) or _FRAMED_ATTRIBUTION.match(plain) or _is_header_block(plains, i):
        return len(lines) - i  # Outlook quotes the original unprefixed: the rest is history
    span = _attribution_span(lines, plains, i)
    if span and not _quote_follows(lines, i + span):
        return len(lines) - i
    return span  # an attribution over "> " lines: bottom-posted text after them is own text


def split_reply(text: str) -> ReplyText:
    """Separate the reply's own text from quoted history (> lines, quote headers, separators)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    plains = _Plains(lines)  # each line folded once, not again by each look-ahead
    own: list[str] = []
    quoted: list[str] = []
    i = 0
    while i < len(lines):
        end = i
        while end < len(lines) and _QUOTE_LINE.match(lines[end]):  # a run of "> " lines
            end += 1
        span = end - i or _history_span(lines, plains, i)
        if span:
            quoted.extend(lines[i : i + span])
            i += span
        else:
            own.append(lines[i])
            i += 1
    while own and not own[-1].strip(" \t*-_=~"):  # the rule above a cut header ("* * *")
        own.pop()
    return ReplyText(own="\n".join(own).strip(), quoted="\n".join(quoted).strip())
