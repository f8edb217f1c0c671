"""Pure: what a person's words ask for (withdraw, unsubscribe); automatic replies by wording.

Issue 13: people cancel, unsubscribe and go on holiday in free words, and gateways strip the
headers that would mark an automatic reply. Every phrase lives in reading.vocabulary; this
module turns them into patterns and reads them in context: a question, a "nie" right before,
or a condition in the same clause ("jeśli nie będę mogła…") makes a phrase no request, and
someone else's footer ("Aby anulować subskrypcję tej grupy…") is never the writer's request.
Each pattern is one pass over the text (bench/hostile.py): no nested repetition.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from mailer.reading import vocabulary as vocab
from mailer.reading.textfold import FoldTable, strip_marks
from mailer.reading.validate import named_events
from mailer.settings import Event


class Intent(StrEnum):
    """What the writer's words ask for (or that a machine wrote them)."""

    UNSUBSCRIBE = "unsubscribe"
    ERASURE = "erasure"  # an unsubscribe asking for the data to be erased (RODO art. 17)
    CANCELLATION = "cancellation"
    AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Found:
    """An intent, the phrase that shows it (as folded) and, for a cancellation, its clause."""

    intent: Intent
    phrase: str
    clauses: tuple[str, ...] = ()  # folded clauses holding a cancellation: which events
    declined: bool = False  # a cancellation by not coming ("nie dam rady"), not a withdrawal


# --- folding: one character in, one out; punctuation kept (clauses and questions need it) ------


def _fold_char(char: str) -> str:
    base = strip_marks(char).casefold()
    if len(base) != 1:
        return char.casefold()[:1] or " "
    return base


_FOLDED = FoldTable(_fold_char)
_WORDISH = re.compile(r"[^\w\s.,;:!?()\-–—]")  # quotes, slashes, apostrophes: a space


def fold_text(text: str) -> str:
    """Lower case, no diacritics, odd punctuation as spaces; same length as `text`."""
    return _WORDISH.sub(" ", text.translate(_FOLDED))


# --- phrases → patterns -----------------------------------------------------------------------

_GAP = r"(?:[\w.\-]+[\s,]+){0,3}?"  # "~": up to three words between
_SPACE = r"[\s.\-]+"  # "art. 17", "e-mail": punctuation inside a phrase is a blank


def _word(token: str, *, last: bool) -> str:
    if token.endswith("*"):
        return re.escape(token[:-1]) + r"\w*"
    # Inside a phrase the blank that follows ends the word; only the last needs a boundary.
    return re.escape(token) + (r"(?!\w)" if last else "")


def _phrase(phrase: str) -> str:
    """A folded phrase's pattern: words apart by blanks, "~" up to three words, "w*" a stem."""
    out: list[str] = []
    after_gap = False
    tokens = phrase.split()
    for n, token in enumerate(tokens):
        if token == "~":
            out.append(r"[\s,.]+" + _GAP)
            after_gap = True
            continue
        if out and not after_gap:
            out.append(_SPACE)
        out.append(_word(token, last=n == len(tokens) - 1))
        after_gap = False
    return "".join(out)


def _alternation(phrases: Iterable[str]) -> str:
    # Longest first, so "nie chce" does not stop at "nie".
    return "|".join(_phrase(p) for p in sorted(set(phrases), key=len, reverse=True))


@dataclass(frozen=True)
class _Scanner:
    """Phrases tried only where a word that starts one stands: the words are found by plain
    substring search, then one anchored match each (an alternation of hundreds of phrases tried
    at every character cost 5 ms a message; bench/ingest.py)."""

    pattern: re.Pattern[str]
    heads: tuple[str, ...]  # the words (or stems) a phrase starts with

    def finditer(self, text: str) -> Iterable[re.Match[str]]:
        starts: set[int] = set()
        for head in self.heads:
            at = text.find(head)
            while at >= 0:
                if at == 0 or not (text[at - 1].isalnum() or text[at - 1] == "_"):
                    starts.add(at)
                at = text.find(head, at + 1)
        end = 0
        for at in sorted(starts):
            if at >= end and (found := self.pattern.match(text, at)):
                end = found.end()
                yield found

    def search(self, text: str) -> re.Match[str] | None:
        return next(iter(self.finditer(text)), None)


def _scanner(firsts: Iterable[str], *parts: str) -> _Scanner:
    """`parts` joined into one pattern; `firsts`: the phrases (or words) it may start with."""
    heads = {phrase.split()[0].rstrip("*") for phrase in firsts}
    # A head that another starts with adds nothing ("wypis" finds every "wypisz").
    kept = tuple(sorted(h for h in heads if not any(h != o and h.startswith(o) for o in heads)))
    return _Scanner(re.compile("(?:" + "".join(parts) + ")"), kept)


def _phrases(*lists: Iterable[str]) -> _Scanner:
    phrases = [p for group in lists for p in group]
    return _scanner(phrases, _alternation(phrases))


_NO_PREPOSITION_GAP = r"(?:(?!(?:z|ze|w|we|do|na|o|od|dla|przy|po)\b)[^\W\d_]+[\s,]+){0,3}?"
_PARTICIPANTS = r"(?!\s+(?:uczestnik|zgloszon|obecnosc|osob|zapisan|zarejestrowan))"
_OWNER = r"(?:(?:panstwa|waszej|wasza|tej|swojej|naszej|pani|pana|your|the|this)\s+)?"


@dataclass(frozen=True)
class _Patterns:
    """One campaign's patterns (its event names are words for an event)."""

    erasure: _Scanner
    unsubscribe: _Scanner
    cancellation: _Scanner
    footer: _Scanner
    receipt: _Scanner
    receipt_hints: _Scanner
    asks: _Scanner
    absent: _Scanner
    absent_details: _Scanner
    canned: _Scanner
    canned_details: _Scanner
    human: _Scanner
    stop_mail: re.Pattern[str]  # searched in one sentence
    event_after: re.Pattern[str]  # matched right after an unsubscribe phrase
    condition: re.Pattern[str]  # searched in the clause before a phrase
    negation: re.Pattern[str]  # the words right before a phrase


@dataclass(frozen=True)
class _Named:
    cancellation: _Scanner
    event_after: re.Pattern[str]


def _build_named(aliases: tuple[str, ...]) -> _Named:
    """The patterns that name events: the campaign's names are words for an event too."""
    events = _alternation([*vocab.EVENT_NOUNS, *(a for a in aliases if len(a) >= 3)])
    objects = _alternation(vocab.CANCEL_OBJECTS) + r"|ze?\s+(?:" + events + r")"
    single_objects = [o for o in vocab.CANCEL_OBJECTS if " " not in o]
    cannot = r"nie\s+(?:(?:" + _alternation(vocab.CANNOT_FILLERS) + r")\s+)*(?:" \
        + _alternation(vocab.CANNOT) + r")[\s,]+" + _GAP + r"(?:" + _alternation(vocab.ATTEND) \
        + r")|nie\s+(?:(?:jednak|niestety)\s+)?dam(?:y)?\s+rady\s*(?=[.,;!–—\-\n]|$)"
    return _Named(
        cancellation=_scanner(
            [*vocab.CANCEL_VERBS, *single_objects, *vocab.NOT_ATTENDING, "nie"],
            r"(?:", _alternation(vocab.CANCEL_VERBS), r")[\s,]+", _NO_PREPOSITION_GAP,
            r"(?:", objects, r")|(?:", _alternation(single_objects), r")\s+",
            r"(?:prosze|prosimy)\s+(?:", _alternation(vocab.CANCEL_VERBS), r")|", cannot,
            r"|", _alternation(vocab.NOT_ATTENDING)),
        event_after=re.compile(r"[\s,]*(?:ze?\s+(?:" + events + r")|z\s+listy\s+"
                               r"(?:uczestnik|zgloszon|obecnosc|osob|zapisan|zarejestrowan))"),
    )


def _build(aliases: tuple[str, ...]) -> _Patterns:
    named = _build_named(aliases)
    lists = _alternation(vocab.MAILING_LISTS) + r"|listy" + _PARTICIPANTS + r"(?!\w)"
    return _Patterns(
        erasure=_phrases(vocab.RODO_ERASURE),
        unsubscribe=_scanner(
            [*vocab.RODO_UNSUBSCRIBE, *vocab.UNSUBSCRIBE_PHRASES, *vocab.REMOVE_VERBS],
            _alternation(vocab.RODO_UNSUBSCRIBE), "|", _alternation(vocab.UNSUBSCRIBE_PHRASES),
            r"|(?:", _alternation(vocab.REMOVE_VERBS), r")[\s,]+", _GAP,
            r"(?:ze?|from|off)\s+", _OWNER, r"(?:", lists, r")"),
        cancellation=named.cancellation,
        footer=_phrases(vocab.THIRD_PARTY_FOOTERS),
        receipt=_phrases(vocab.AUTO_RECEIPTS),
        receipt_hints=_phrases(vocab.AUTO_RECEIPT_HINTS),
        asks=_phrases(vocab.HUMAN_ASKS),
        absent=_phrases(vocab.AUTO_ABSENT),
        absent_details=_phrases(vocab.AUTO_ABSENT_DETAILS),
        canned=_phrases(vocab.AUTO_CANNED),
        canned_details=_phrases(vocab.AUTO_CANNED_DETAILS),
        human=_phrases(vocab.HUMAN_MARKERS),
        stop_mail=re.compile(r"(?<!\w)(?:" + _alternation(vocab.MAIL_NOUNS) + r")"),
        event_after=named.event_after,
        condition=re.compile(r"(?<!\w)(?:" + _alternation(vocab.CONDITIONS) + r")(?!\w)"),
        negation=re.compile(r"(?<!\w)(?:" + _alternation(vocab.NEGATIONS) + r")\s*$"),
    )


_PATTERNS: dict[tuple[str, ...], _Patterns] = {}


def _patterns(aliases: tuple[str, ...]) -> _Patterns:
    """Built once per process (0.1 s); a campaign's aliases rebuild only what names events."""
    if aliases not in _PATTERNS:
        if len(_PATTERNS) > 16:  # one campaign's aliases: a handful of keys at most
            _PATTERNS.clear()
        common = _PATTERNS.get(())
        if common is None:
            common = _PATTERNS[()] = _build(())
        if aliases:
            named = _build_named(aliases)
            _PATTERNS[aliases] = replace(common, cancellation=named.cancellation,
                                         event_after=named.event_after)
    return _PATTERNS[aliases]


# --- context: clauses, questions, negations ---------------------------------------------------

# A dot between digits is a date ("26.10"), not a clause's end.
_CLAUSE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[,;:!?()–—]|\n\s*\n|\s-\s")
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[!?]|\n\s*\n")


class _Text:
    """Folded text with its clause and sentence ends, found only when a phrase needs them."""

    def __init__(self, folded: str) -> None:
        self.folded = folded

    @functools.cached_property
    def clause_ends(self) -> list[int]:
        return [m.start() for m in _CLAUSE_END.finditer(self.folded)]

    @functools.cached_property
    def sentence_ends(self) -> list[tuple[int, str]]:
        return [(m.start(), m.group()) for m in _SENTENCE_END.finditer(self.folded)]

    def clause(self, start: int, end: int) -> tuple[int, int]:
        """The clause around [start, end): from the last clause end before to the next after."""
        at = bisect.bisect_left(self.clause_ends, start)
        begin = self.clause_ends[at - 1] + 1 if at else 0
        after = bisect.bisect_left(self.clause_ends, end)
        return begin, self.clause_ends[after] if after < len(self.clause_ends) else len(
            self.folded)

    def is_question(self, end: int) -> bool:
        at = bisect.bisect_left(self.sentence_ends, (end, ""))
        return at < len(self.sentence_ends) and self.sentence_ends[at][1] == "?"

    def sentence(self, start: int, end: int) -> str:
        at = bisect.bisect_left(self.sentence_ends, (start, ""))
        begin = self.sentence_ends[at - 1][0] + 1 if at else 0
        after = bisect.bisect_left(self.sentence_ends, (end, ""))
        stop = self.sentence_ends[after][0] if after < len(self.sentence_ends) else len(
            self.folded)
        return self.folded[begin:stop]


def _requests(text: _Text, pattern: _Scanner, patterns: _Patterns,
              *, negatable: bool = True) -> Iterable[re.Match[str]]:
    """Matches that are requests: no question, no condition or "nie" before them in the clause."""
    for found in pattern.finditer(text.folded):
        if text.is_question(found.end()):
            continue
        begin, _ = text.clause(found.start(), found.end())
        before = text.folded[begin:found.start()]
        if patterns.condition.search(before):
            continue
        if negatable and patterns.negation.search(before[-24:]):
            continue
        yield found


# --- reading ---------------------------------------------------------------------------------

# A person's request stands near the top of what they wrote; past this the own text is a pasted
# document or a hostile one (bench/hostile.py: 15,000 forms), and is not searched for one.
MAX_REQUEST_CHARS = 20_000


def own_request_text(own_text: str) -> str:
    """The own text folded, without someone else's footer (from its phrase to the end of its
    paragraph): a newsletter's "Jeśli nie chcesz otrzymywać…" is not the writer asking."""
    folded = fold_text(own_text[:MAX_REQUEST_CHARS])
    footer = _patterns(()).footer
    out: list[str] = []
    for paragraph in re.split(r"(\n[ \t]*\n)", folded):
        found = footer.search(paragraph)
        out.append(paragraph[:found.start()] + " " * (len(paragraph) - found.start())
                   if found else paragraph)
    return "".join(out)


def event_aliases(events: Sequence[Event]) -> tuple[str, ...]:
    """The campaign's names for its events, as `read_wording` takes them."""
    return tuple(sorted({name for e in events for name in (e.id, *e.aliases)}))


def prepare(events: Sequence[Event]) -> None:
    """Build the patterns now (0.2 s), not in the first message's reading budget: a reader
    process calls this at its start (reading.workers)."""
    _patterns(event_aliases(events))


def read_wording(subject: str, own_text: str, *, aliases: Iterable[str] = ()) -> Found | None:
    """The writer's request (unsubscribe, erasure, cancellation) in the subject or own text."""
    patterns = _patterns(tuple(sorted(set(aliases))))
    text = _Text(fold_text(subject[:MAX_REQUEST_CHARS]) + "\n\n" + own_request_text(own_text))
    for found in _requests(text, patterns.erasure, patterns):
        return Found(Intent.ERASURE, _tidy(found.group()))
    for found in _requests(text, patterns.unsubscribe, patterns, negatable=False):
        phrase = " ".join(found.group().split())
        # "proszę nie przesyłać…" is ours only when it names mail ("korespondencji", "więcej").
        if (" nie " in f" {phrase} " and phrase.startswith(("prosze", "prosimy"))
                and not patterns.stop_mail.search(text.sentence(found.start(), found.end()))):
            continue
        # "wypisz mnie z warsztatu" leaves the event, not the mailing list.
        if patterns.event_after.match(text.folded, found.end()):
            continue
        return Found(Intent.UNSUBSCRIBE, _tidy(found.group()))
    cancels = list(_requests(text, patterns.cancellation, patterns))
    if cancels:
        clauses = tuple(text.folded[slice(*text.clause(m.start(), m.end()))] for m in cancels)
        declined = all(m.group().startswith(_DECLINING) for m in cancels)
        if declined and "?" in text.folded:
            # "Czy warsztat będzie nagrywany? Nie mogę być obecny na żywo.": a question, with
            # why it is asked; no one withdrew anything. A human answers it (review).
            return None
        return Found(Intent.CANCELLATION, _tidy(cancels[0].group()), clauses, declined)
    return None


_DECLINING = ("nie", "cannot", "can t", "won t", "will not", "unable")


def automatic_wording(own_text: str) -> Found | None:
    """A machine's reply known by its words: a receipt, an out-of-office, a canned answer.

    A person's reply that mentions a holiday stays human: the text must be short, ask nothing,
    hold none of the invitation's business (forms, events, participation) for an out-of-office
    or a canned reply, and the machine's phrases."""
    if len(own_text) > vocab.AUTO_MAX_WORDS * 20:  # no word is 20 letters on average
        return None
    folded = fold_text(own_text)
    patterns = _patterns(())
    if len(folded.split()) > vocab.AUTO_MAX_WORDS or "?" in folded \
            or patterns.asks.search(folded):
        return None
    phrase = _receipt(folded, patterns)
    if phrase is None and not patterns.human.search(folded):
        for head, details in ((patterns.absent, patterns.absent_details),
                              (patterns.canned, patterns.canned_details)):
            found = head.search(folded)
            if found and details.search(folded):
                phrase = _tidy(found.group())
                break
    return Found(Intent.AUTOMATIC, phrase) if phrase else None


def _receipt(folded: str, patterns: _Patterns) -> str | None:
    """A document system's receipt: one of its own phrases, or two of its hints."""
    if found := patterns.receipt.search(folded):
        return _tidy(found.group())
    hints = {_tidy(m.group()) for m in patterns.receipt_hints.finditer(folded)}
    # "nadano numer kancelaryjny" and "prosimy nie odpowiadać": one alone may be a person's.
    return " / ".join(sorted(hints))[:80] if len(hints) > 1 else None


def cancelled_events(found: Found, events: Sequence[Event]) -> tuple[str, ...]:
    """The events a cancellation withdraws from: those its clauses name (by name, alias or the
    date they start: "26.10", "26 października"); every event when they name none.

    Only the cancelling clause counts: "Rezygnuję z warsztatu, ale PIM proszę zostawić"."""
    named: set[str] = set()
    for clause in found.clauses:
        named.update(named_events(clause, events))
        named.update(e.id for e in events if e.starts and _date_pattern(e).search(clause))
    return tuple(e.id for e in events if e.id in named) or tuple(e.id for e in events)


def _date_pattern(event: Event) -> re.Pattern[str]:
    assert event.starts is not None
    day, month = event.starts.day, event.starts.month
    return re.compile(rf"(?<![\d.])0?{day}(?:\s*\.\s*0?{month}(?!\d)"
                      rf"|\s+{vocab.MONTHS_GENITIVE[month - 1]}(?!\w))")


def _tidy(phrase: str) -> str:
    return " ".join(phrase.split())[:80]
