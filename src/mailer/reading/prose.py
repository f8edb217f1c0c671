"""Pure: people named without the form's labels — in a sentence, a list, a one-line identity,
or the signature the writer points to — each value with the rule that found it (issue 13)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailer.reading import vocabulary as vocab
from mailer.reading.people import (
    Chunk,
    Found,
    bare_name,
    find_city,
    find_position,
    leftover,
    tokenize,
)
from mailer.reading.quotes import fold

# The rules a value may come from (Draft.sources); a filled form is "form".
SENTENCE, LIST, LINE, SIGNATURE = "sentence", "list", "line", "signature"
FIELDS = ("event", "name", "position", "city", "email", "phone")


@dataclass(frozen=True)
class Person:
    """One person read from prose: field -> value as written, field -> the rule that found it."""

    values: Mapping[str, str]
    sources: Mapping[str, str]


# Prose is short: more than this of a message's own text is not read for people (issue 12).
MAX_CHARS = 20_000
MAX_PEOPLE = 50
_SIGNATURE_LINES = 12  # a signature block is never longer
_INTENT_SENTENCES = 5  # the sentences saying what is registered, read for the events
_CLOSING = re.compile(r"^(?:" + vocab.any_phrase(vocab.CLOSINGS) + r")(?!\w)")
_FOOTER = re.compile(vocab.any_phrase(vocab.FOOTERS))
_MAILTO = re.compile(r"[<\[](?:mailto:|https?://)[^<>\[\]\s]*[>\]]")
_INTENT = re.compile(r"(?<!\w)(?:" + vocab.any_phrase(vocab.INTENTS) + r")")
_POINTER = re.compile(r"(?<!\w)(?:" + vocab.any_phrase(vocab.SIGNATURE_POINTERS) + r")(?!\w)")
_NEGATED = re.compile(r"(?<!\w)nie[ \t]+$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+(?=[A-ZĄĆĘŁŃÓŚŹŻ])")
# "- ", "• ", "1. ", "2) ", "1: " at a line's start; "1. … 2. …" inline on one line.
_BULLET = re.compile(r"^(?:[-*•·–]|\d{1,2}[.):])[ \t]+")
_INLINE_NUMBER = re.compile(r"(?:^|(?<=[ \t]))(\d{1,2})[.)][ \t]+")
_EVENT_SEPARATORS = re.compile(r"[/,;+&\n]|(?<!\S)(?:i|oraz|and)(?!\S)")


def _lines(text: str) -> list[str]:
    out = []
    for raw in text[:MAX_CHARS].replace("\r\n", "\n").split("\n"):
        line = _MAILTO.sub("", raw.replace("\xa0", " ").replace("\u200b", "")).strip()
        out.append("" if _FOOTER.search(fold(line)) else line)
    while out and not out[-1]:
        out.pop()
    return out


def _split_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    """(body, signature): what follows the last closing line, else the last paragraph when
    its first line is a bare name."""
    for i in range(len(lines) - 1, max(-1, len(lines) - _SIGNATURE_LINES - 2), -1):
        closing = _CLOSING.match(fold(lines[i]))
        if closing and closing.end() > 1:  # ("--" may match nothing, or a bullet's "-")
            return lines[:i], [line for line in lines[i + 1:] if line]
    for i in range(len(lines) - 1, max(0, len(lines) - _SIGNATURE_LINES) - 1, -1):
        if i > 0 and bare_name(lines[i]):  # the writer's name on a line of its own
            return lines[:i], [line for line in lines[i:] if line]
    return lines, []


def _paragraphs(lines: Sequence[str]) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def has_intent(sentence: str) -> bool:
    """Does the sentence say it registers someone ("zgłaszam", "weźmie udział"), not negated
    and not asked?"""
    if sentence.rstrip().endswith("?"):
        return False
    folded = fold(sentence)
    return any(not _NEGATED.search(folded[:m.start()]) for m in _INTENT.finditer(folded))


def stated_intent(text: str) -> str | None:
    """What an own text says the writer registers for, as an event value ("" when it names
    no event), or None when no sentence of it says it registers anyone ("Zgłaszam się")."""
    sentences = [s for p in _paragraphs(_lines(text)) for s in _sentences(" ".join(p))]
    intents = [s for s in sentences if has_intent(s)]
    return _event_text(*intents[:_INTENT_SENTENCES]) if intents else None


def _event_text(*parts: str) -> str:
    """The parts as one event value: no separators, so words around the events are no
    "unknown event" (validate splits a form's value at them)."""
    return " ".join(_EVENT_SEPARATORS.sub(" ", " ".join(parts)).split())


# --- the signature -----------------------------------------------------------------------------


def _read_signature(lines: Sequence[str]) -> Found:
    """Name (its first line), position, office, phone and e-mail of a signature block."""
    found = Found()
    if lines and (name := bare_name(lines[0])):
        found.values["name"] = name
    for line in lines[1 if found.values else 0:]:
        chunk = tokenize(line)
        found.take_contacts(chunk)
        end = len(chunk.tokens)
        if "position" not in found.values and (
                position := find_position(chunk, 0, end, head_within=2)):
            found.values["position"] = position[0]
        if "city" not in found.values and (city := find_city(chunk, 0, end, at_start=True)):
            found.values["city"] = city
    return found


# --- people in the body ------------------------------------------------------------------------


def _person(chunk: Chunk, start: int, end: int, *, before: int = 0) -> Found | None:
    """The person whose name starts at token `start` of `chunk` (tokens up to `end`); a
    position or office may stand before the name (from token `before`)."""
    name = chunk.by_start.get(start)
    if name is None:
        return None
    found = Found(values={"name": name.text}, name=name)
    found.take_contacts(chunk, name.first, end)
    position = find_position(chunk, name.last + 1, end) or find_position(
        chunk, before, name.first, last_only=True)
    if position:
        found.values["position"], found.position = position
    if city := (find_city(chunk, name.last + 1, end) or find_city(chunk, before, name.first)):
        found.values["city"] = city
    return found


def _people_in(chunk: Chunk, rule: str, context: Sequence[str]) -> list[Person]:
    """Every person named in one sentence or line: each name starts a chunk of its own."""
    starts = chunk.name_starts()
    people = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(chunk.tokens)
        found = _person(chunk, start, end, before=0 if n == 0 else starts[n - 1] + 1)
        if found is None:
            continue
        rest = leftover(chunk, found, 0 if n == 0 else start, end)
        if city := found.values.get("city"):  # (as written: its words are no event)
            rest = rest.replace(city, " ")
        found.values["event"] = _event_text(rest, *context)
        people.append(_finish(found, rule))
    return people


def _finish(found: Found, rule: str, defaults: Found | None = None) -> Person:
    sources = dict.fromkeys(found.values, rule)
    for key, value in (defaults.values if defaults else {}).items():
        if key == "city" and key not in found.values:
            found.values[key], sources[key] = value, SIGNATURE
    values = {k: found.values[k] for k in FIELDS if k in found.values}
    return Person(values, {k: sources[k] for k in values})


def _list_items(paragraph: Sequence[str]) -> tuple[list[str], list[str]]:
    """(items, the text around them): bullets and numbers at line starts, lines under an item
    continuing it; "1. … 2. …" written on one line."""
    items: list[str] = []
    around: list[str] = []
    for line in paragraph:
        numbers = [m for m in _INLINE_NUMBER.finditer(line)]
        if len(numbers) >= 2 and [int(m.group(1)) for m in numbers[:2]] == [1, 2]:
            around.append(line[:numbers[0].start()])
            bounds = [m.end() for m in numbers]
            ends = [m.start() for m in numbers[1:]] + [len(line)]
            parts = [line[b:e] for b, e in zip(bounds, ends, strict=True)]
            last = _sentences(parts[-1])  # "… (tylko warsztat). UM Kutno"
            items += parts[:-1] + last[:1]
            around += last[1:]
        elif bullet := _BULLET.match(line):
            items.append(line[bullet.end():])
        elif items and paragraph[0] != line and not around:
            items[-1] += ", " + line
        else:
            around.append(line)
    return items, around


def _list_people(paragraphs: Sequence[list[str]], signature: Found) -> list[Person]:
    context: list[str] = []  # the lines around the lists: "Zgłaszamy z UM Legnica:"
    people = []
    for paragraph in paragraphs:
        items, around = _list_items(paragraph)
        for item in items:
            chunk = tokenize(item)
            if not chunk.name_starts() or chunk.name_starts()[0] > 1:
                continue  # an item that names nobody: "- warsztat"
            people += _people_in(chunk, LIST, [])
            if len(people) > MAX_PEOPLE:
                break
        context.append(" ".join(around))
    intents = [s for text in context for s in _sentences(text) if has_intent(s)]
    if not people or not intents:
        return []
    text = tokenize(" ".join(context))
    city = find_city(text, 0, len(text.tokens))
    shared = Found(values={"city": city} if city else {})
    return [_with_shared(p, shared, intents, signature) for p in people]


def _with_shared(person: Person, shared: Found, intents: Sequence[str],
                 signature: Found, *, said_in: str = LIST) -> Person:
    """A person's values completed by what the message says once for everyone: the city,
    the events (`said_in`: where the shared city was read, a list's lines or a sentence)."""
    values, sources = dict(person.values), dict(person.sources)
    if not _meaningful(values.get("event", "")):
        values["event"] = _event_text(*intents[:_INTENT_SENTENCES])
    for source, found in ((said_in, shared), (SIGNATURE, signature)):
        if "city" not in values and found.values.get("city"):
            values["city"], sources["city"] = found.values["city"], source
    ordered = {k: values[k] for k in FIELDS if k in values}
    return Person(ordered, {k: sources[k] for k in ordered})


def _meaningful(text: str) -> bool:
    noise = frozenset(vocab.PERSON_NOISE)
    return any(sum(c.isalpha() for c in w) >= 2 and fold(w).strip(".:-") not in noise
               for w in text.split())


def _sentence_people(paragraphs: Sequence[list[str]], intents: Sequence[str],
                     signature: Found) -> list[Person]:
    people = []
    # Sentences that only say what is registered ("Zgłaszam się na PIM."): their events,
    # and the town or office they name for everyone ("Miasto Szczecinek potwierdza udział.
    # … weźmie udział Pani Anna Sowa"), as a list's introduction does.
    pure = [s for s in intents[:_INTENT_SENTENCES] if not tokenize(s).name_starts()]
    towns = (find_city(chunk, 0, len(chunk.tokens)) for chunk in map(tokenize, pure))
    shared = Found(values={"city": city} if (city := next(filter(None, towns), None)) else {})
    for paragraph in paragraphs:
        sentences = _sentences(" ".join(paragraph))
        said = any(has_intent(s) for s in sentences)
        for n, sentence in enumerate(sentences):
            chunk = tokenize(sentence)
            if not chunk.name_starts():
                continue
            found = _people_in(chunk, SENTENCE if said else LINE,
                               [] if sentence in pure else pure)
            if not said:  # "Anna Kowalska, inspektor, UM Łomża, 86 … – oba": a line alone
                found = [p for p in found if _structured(chunk, p)]
            if len(found) == 1:  # "… Pana Jana Nowaka. Kontakt: jan@…, tel. …"
                found = [_with_contacts(found[0], sentences[n + 1:])]
            people += [_with_shared(p, shared, intents, signature, said_in=SENTENCE)
                       for p in found]
            if len(people) > MAX_PEOPLE:
                return people
    return people


def _with_contacts(person: Person, following: Sequence[str]) -> Person:
    """A person's e-mail and phone from the sentences after theirs that name nobody."""
    extra = Found(values=dict(person.values))
    for sentence in following:
        chunk = tokenize(sentence)
        if chunk.names:
            break
        extra.take_contacts(chunk)
    sources = {k: person.sources.get(k, SENTENCE) for k in extra.values}
    return Person({k: extra.values[k] for k in FIELDS if k in extra.values}, sources)


def _structured(chunk: Chunk, person: Person) -> bool:
    """A one-line identity without an intent word: name first, two more values and words
    beside them (the events): a signature on one line has none."""
    fields = sum(1 for k in ("position", "city", "email", "phone") if k in person.values)
    return chunk.name_starts()[:1] == [0] and fields >= 2 and _meaningful(
        person.values.get("event", ""))


def read_prose(text: str, *, signature_as_data: bool = True) -> list[Person]:
    """The people an own text names outside a form: in a list, in sentences or one-line
    identities; else, when it says only that the writer registers (or points to the
    signature), the writer's signature. `signature_as_data`: may the signature be read?"""
    lines = _lines(text)
    body, signature_lines = _split_signature(lines)
    signature = _read_signature(signature_lines)
    paragraphs = _paragraphs(body)
    sentences = [s for p in paragraphs for s in _sentences(" ".join(p))]
    intents = [s for s in sentences if has_intent(s)]
    people = (_list_people(paragraphs, signature)
              or _sentence_people(paragraphs, intents, signature))
    if people:
        return people[:MAX_PEOPLE]
    pointed = any(_POINTER.search(fold(s)) for s in sentences)
    if not signature_as_data or "name" not in signature.values or not (intents or pointed):
        return []
    signature.values["event"] = _event_text(*intents[:_INTENT_SENTENCES])
    return [_finish(signature, SIGNATURE)]
