"""Pure: the registration forms in a reply — labels (`vocabulary`), values, several forms,
forms typed into the quoted original."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

from mailer.reading import vocabulary as vocab
from mailer.reading.body import body_text
from mailer.reading.prose import read_prose
from mailer.reading.quotes import ReplyText, fold, split_reply
from mailer.reading.thread import answers_our_answer, refuse_and_correct

FIELDS = ("event", "name", "position", "city", "email", "phone")
FORM = "form"  # a value read from a label of the form

# A draft needs one of these: e-mail/phone lines alone are a signature ("Tel.: …"), not a form.
_IDENTITY_FIELDS = ("event", "name", "position", "city")


@dataclass(frozen=True)
class Draft:
    """One filled form as written: field -> raw value (stripped); only fields that were present."""

    values: Mapping[str, str]  # in FIELDS order; "" for a label left empty
    from_quoted: bool = False  # read from the quoted history: typed into the quoted original
    # field -> the rule that found it: "form" (the default for a field not listed), or
    # reading.prose's "sentence", "list", "line", "signature" (issue 13: shown to staff).
    sources: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        """Where the value of field `name` came from."""
        return self.sources.get(name, FORM)


# --- form labels ----------------------------------------------------------------------------------

# The labels are data (vocabulary.LABELS, issue 13). A label may carry a qualifier ("Telefon
# kontaktowy"), a second name after "/" ("Stanowisko / funkcja") and a hint in brackets that
# holds a letter ("(warsztat / PIM / oba)", not the area code of "tel. (56) 451 02 75").
_LABEL_KEYS = tuple(vocab.LABELS)
_LABEL = (
    "(?:" + "|".join(f"(?P<{key}>{vocab.any_phrase(vocab.LABELS[key])})" for key in _LABEL_KEYS)
    + r")(?:[ \t]+(?:" + vocab.any_phrase(vocab.LABEL_QUALIFIERS) + r"))?"
    r"(?:[ \t]*/[ \t]*[\w.-]+(?:[ \t]+[\w.-]+)?)?"
    r"(?:[ \t]*\((?=[^)\n]*[a-z])[^)\n]*\))?"
)
# A separator is required ( : | - – tab, two spaces, or a space after the "(…)" hint) so prose
# such as "Miasto zielone." is not read as a label. A blank alone ("loose") only before a
# number or an address, and only for contact labels inside a form: "Nr tel. 41 273 82 11".
_SEPARATOR_AFTER_LABEL = (
    r"(?:[ \t]*[:|][ \t]*|[ \t]+[-–—][ \t]*|[-–—][ \t]+|\t[ \t]*|[ \t]{2,}|(?<=\))[ \t]+|[ \t]*$"
    r"|(?P<loose>[ \t]+(?=[+(]?\d|[^\s@]+@)))"
)
_LABEL_LINE = re.compile("^" + _LABEL + _SEPARATOR_AFTER_LABEL + r"(?P<value>.*)$")
_LOOSE_KEYS = frozenset({"phone", "email", "mailbox", "contact"})
_QUOTE_MARKERS = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_BULLET = re.compile(r"^(?:[-*•·]|\d{1,2}[.)])[ \t]+")
_BULLET_MARKS = frozenset("-*•·")  # or a decimal digit (\d)
# Outlook plain text: addr<mailto:addr>, app footers: text<https://…>. Linear on any input: the
# white space before it is taken only from the start of its run, and the target holds no
# bracket (an unclosed "<mailto:" scans no further than the next one).
_MAILTO = re.compile(r"(?:(?<!\s)\s+)?[<\[](?:mailto:|https?://)[^<>\[\]]*[>\]]")
_CLOSING = re.compile(r"^(?:" + vocab.any_phrase(vocab.CLOSINGS) + r")(?!\w)")
_FOOTER = re.compile(vocab.any_phrase(vocab.FOOTERS))
_ADDRESS = re.compile(r"[^\s,;:<>()\[\]]+@[^\s,;:<>()\[\]]+")
_EXTENSION_START = re.compile(r"^(?:" + vocab.any_phrase(vocab.EXTENSION_WORDS) + r")[ \t]*\d")
_OTHER_LABEL = re.compile(r"^[^\W\d][^:\n]{0,30}:(?:\s|$)")  # "Adres do faktury: …"
_MAX_VALUE_LENGTH = 80  # the next line as a value: longer lines are prose (the RODO clause)
_MAX_VALUE_WORDS = 10
_MAX_BLANKS_BEFORE_VALUE = 2  # html2text puts one blank line between paragraphs
# Values that run on: a position or an office wrapped by the mail client, or a second paragraph
# in an Outlook table cell (issue 13). Names, addresses and numbers are never wrapped.
_CONTINUED_KEYS = frozenset({"event", "position", "city"})
_MAX_CONTINUATION = 3  # lines
_WRAP_WIDTH = 72  # the narrowest client wrap (Thunderbird); Outlook 76, Gmail 78


def _clean_line(raw: str) -> str:
    """A line without quote markers, bullets, zero-width characters or markdown bold."""
    line = raw.replace("\xa0", " ").replace("\u200b", "").replace("\ufeff", "")
    if ">" in line:  # (cheap checks first: without one the pattern cannot match)
        line = _QUOTE_MARKERS.sub("", line)
    line = line.replace("**", "").strip(" \t|")
    if line[:1] in _BULLET_MARKS or line[:1].isdecimal():
        line = _BULLET.sub("", line)
    return line.strip()


def _clean_value(raw: str) -> str:
    value = _MAILTO.sub("", raw).strip(" \t*_|;,")
    if _FOOTER.search(fold(value)):  # "Wysłane z iPhone'a" under an empty last field
        return ""
    return value if any(c.isalnum() for c in value) else ""  # "____", "…", "-" mean empty


def _match_label(line: str, folded: str) -> tuple[str, str, bool] | None:
    """(key, value as written, loose) when the line (`folded`: the line folded) starts with a
    known label; loose: only blanks between label and value."""
    match = _LABEL_LINE.match(folded)
    if match is None:
        return None
    key = next(k for k in _LABEL_KEYS if match.group(k) is not None)
    loose = match.group("loose") is not None
    if loose and key not in _LOOSE_KEYS:
        return None
    return key, _clean_value(line[match.start("value") :]), loose


def _ends_value(line: str, folded: str) -> bool:
    """Is this line a label, a closing, an app footer or a heading: never part of a value?"""
    return (bool(_CLOSING.match(folded) or _FOOTER.search(folded) or _OTHER_LABEL.match(line))
            or line.endswith(":") or _match_label(line, folded) is not None)


def _looks_like_value(line: str, folded: str, key: str) -> bool:
    """May this line (after an empty label) be the label's value rather than prose?"""
    if _ends_value(line, folded):
        return False
    if len(line) > _MAX_VALUE_LENGTH or len(line.split()) > _MAX_VALUE_WORDS:
        return False
    if key in ("email", "mailbox"):
        return "@" in line
    if key == "phone":
        return any(c.isdigit() for c in line)
    return True


def _label_follows(lines: Sequence[str], folded: Sequence[str], i: int) -> bool:
    """Is the next non-empty line after i (within a blank line or two) a label?"""
    for j in range(i + 1, min(i + 2 + _MAX_BLANKS_BEFORE_VALUE, len(lines))):
        if lines[j]:
            return _match_label(lines[j], folded[j]) is not None
    return False


def _value_below(lines: Sequence[str], folded: Sequence[str], i: int, key: str,
                 *, under: bool) -> tuple[str, int]:
    """(value, its line) written under the empty label at i, or ("", i). After a blank line
    only in a form laid out that way (`under`) or above the next label: a signature under an
    empty last field is no value."""
    for j in range(i + 1, min(i + 2 + _MAX_BLANKS_BEFORE_VALUE, len(lines))):
        if not lines[j]:
            continue
        if not _looks_like_value(lines[j], folded[j], key):
            break
        if j > i + 1 and not (under or _label_follows(lines, folded, j)):
            break
        return _clean_value(lines[j]), j
    return "", i


def _continues(lines: Sequence[str], folded: Sequence[str], end: int, key: str,
               *, under: bool) -> int:
    """The line continuing the value that ends at line `end`, or -1: a line wrapped by the
    client (the next word did not fit), or one between the value and the next label; after
    a blank line only in a form written under its labels (an Outlook cell's paragraphs)."""
    k = end + 1
    gap = k < len(lines) and not lines[k]
    k += gap
    if k >= len(lines) or (gap and not under):
        return -1
    line = lines[k]
    if key == "phone":
        return k if not gap and _EXTENSION_START.match(folded[k]) else -1
    if key not in _CONTINUED_KEYS or not line or _ends_value(line, folded[k]):
        return -1
    if len(line) > _MAX_VALUE_LENGTH or len(line.split()) > _MAX_VALUE_WORDS:
        return -1
    wrapped = not gap and len(lines[end]) + 1 + len(line.split()[0]) > _WRAP_WIDTH
    return k if wrapped or _label_follows(lines, folded, k) else -1


def _split_contact(value: str) -> list[tuple[str, str]]:
    """"jan@x.pl, tel. 600 100 200" → [("email", …), ("phone", …)]."""
    address = _ADDRESS.search(value)
    rest = value if address is None else value[:address.start()] + value[address.end():]
    rest = rest.strip(" \t,;/|")
    label = _match_label(rest, fold(rest))
    if label is not None and label[0] == "phone":
        rest = label[1]
    pairs = [("email", address.group().rstrip("."))] if address else []
    return pairs + ([("phone", rest)] if any(c.isdigit() for c in rest) else [])


def _split_identity(value: str) -> list[tuple[str, str]]:
    """"Jan Nowak, Kierownik Referatu, UM Sopot, tel. 58 …" under a name label → name,
    position, office, and the address and number wherever they stand; "Nowak, Jan" (one word
    before the comma) stays a name."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) < 2 or len(parts[0].split()) < 2:
        return [("name", value)]
    pairs: list[tuple[str, str]] = []
    texts = iter(("name", "position", "city"))
    for part in parts:
        if "@" in part or sum(c.isdigit() for c in part) >= 6:
            pairs += _split_contact(part)
        elif (key := next(texts, None)) is not None and part:
            pairs.append((key, part))
    return pairs


@dataclass
class _FormReader:
    """Collects label values into drafts; a label seen again starts the next draft."""

    drafts: list[Draft] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    name_part: str | None = None  # "given"/"family" while the name is half written
    after_form: bool = False  # a form (even a blank template) was read before the current one
    under: bool = False  # this form's values stand under their labels, blank lines between
    implied: set[str] = field(default_factory=set)  # fields taken from another label's value

    def add(self, key: str, value: str) -> None:
        if key == "contact" or (key == "name" and "," in value):
            parts = _split_contact(value) if key == "contact" else _split_identity(value)
            for part_key, part in parts:
                if part_key == key or part_key not in self.values:
                    self._put(part_key, part)
                    self.implied.add(part_key)
            self.implied.discard(key)
            return
        self._put(key, value)

    def _put(self, key: str, value: str) -> None:
        if key in ("given", "family") and self._completes_name(key):
            given, family = (value, self.values["name"]) if key == "given" else (
                self.values["name"], value)
            self.values["name"] = f"{given} {family}".strip()
            self.name_part = None
            return
        name = "name" if key in ("given", "family") else key
        if name in self.values and name not in self.implied:
            self.finish()
        self.implied.discard(name)  # a label of its own beats a part of another's value
        self.values[name] = value
        self.name_part = key if key in ("given", "family") else None

    def _completes_name(self, key: str) -> bool:
        return self.name_part is not None and self.name_part != key

    @property
    def open(self) -> bool:
        """Is a form being read (a name, position, city or event seen)?"""
        return any(f in self.values for f in _IDENTITY_FIELDS)

    def finish(self) -> None:
        # A blank template is no draft; e-mail/phone lines after a form are a signature
        # ("Tel.: …" under the filled form, or under the ministry's quoted template).
        has_identity = any(self.values.get(f) for f in _IDENTITY_FIELDS)
        if has_identity or (not self.after_form and any(self.values.values())):
            ordered = {f: self.values[f] for f in FIELDS if f in self.values}
            self.drafts.append(Draft(values=ordered))
        self.after_form = self.after_form or self.open
        self.values, self.name_part, self.under, self.implied = {}, None, False, set()


# More forms than any town hall sends in one reply (the answers' limit per sender is at most
# this too): the rest of a message holding thousands is not read, and the one form past the
# limit that is read puts the message up for review (issue 12: 15,000 forms took 5 s).
MAX_FORMS = 1_000


def _read_value(lines: Sequence[str], folded: Sequence[str], i: int, key: str,
                reader: _FormReader, value: str) -> tuple[str, int]:
    """The label's whole value (below it when empty; continued lines joined) and its last line."""
    end = i
    if not value:
        value, end = _value_below(lines, folded, i, key, under=reader.under)
        reader.under = reader.under or end > i + 1
    if not value:
        return "", i
    joiner = "\n" if key == "event" else " "  # a newline separates events
    for _ in range(_MAX_CONTINUATION):
        k = _continues(lines, folded, end, key, under=reader.under)
        if k < 0:
            break
        value, end = f"{value}{joiner}{_clean_value(lines[k])}", k
    return value, end


def read_forms(text: str) -> list[Draft]:
    """Every filled registration form in text, in order, at most `MAX_FORMS` + 1; blank
    templates are skipped."""
    lines = [_clean_line(raw) for raw in text.replace("\r\n", "\n").split("\n")]
    folded = [fold(line) for line in lines]
    reader = _FormReader()
    i = 0
    while i < len(lines) and len(reader.drafts) <= MAX_FORMS:
        hit = _match_label(lines[i], folded[i]) if lines[i] else None
        if hit is None or (hit[2] and not reader.open):  # "Tel. 58 …" of a bare signature
            i += 1
            continue
        key, value, _loose = hit
        value, end = _read_value(lines, folded, i, key, reader, value)
        if key == "mailbox":  # "Adres: ul. …" is no e-mail
            key = "email" if "@" in value else ""
        if key:
            reader.add(key, value)
        i = max(end, i) + 1
    reader.finish()
    return reader.drafts[:MAX_FORMS + 1]


def _has_identity(drafts: Sequence[Draft]) -> bool:
    return any(d.values.get(f) for d in drafts for f in _IDENTITY_FIELDS)


# More lines than any reply, its quoted history included, holds (a long thread is a few
# thousand): the rest is not read (issue 12: 500,000 lines of quote markers took 3 s).
MAX_LINES = 20_000


def first_lines(text: str, count: int = MAX_LINES) -> str:
    """`text` up to its `count`th line end."""
    lines = text.split("\n", count)
    return text if len(lines) <= count else "\n".join(lines[:count])


def read_message(msg: EmailMessage, *, prose: bool = True) -> tuple[ReplyText, list[Draft]]:
    """Body → own/quoted text → drafts from the own text, else from the quoted history.

    `prose`: also read the people named in sentences, lists and the signature (the costliest
    part; not for mail a machine sent, which is never a registration)."""
    reply = split_reply(first_lines(body_text(msg)))
    drafts = read_forms(reply.own)
    if _has_identity(drafts):
        return reply, drafts
    # Without a form: the people named in the own text's sentences and lists (issue 13).
    if prose and (found := _prose_drafts(reply.own, signature=False)):
        return reply, found
    if not reply.quoted:
        return reply, (prose and _prose_drafts(reply.own, signature=True)) or drafts
    # People type into the quoted original; e-mail/phone alone in the own text
    # (a signature) does not outweigh a form found there.
    quoted = [replace(d, from_quoted=True) for d in read_forms(reply.quoted)]
    # Our own answer quoted back is no form (an answer loop), unless typed into; a correction
    # above the earlier form is written over it (issue 13).
    if quoted:
        quoted = refuse_and_correct(quoted, ours=answers_our_answer(msg, reply.quoted),
                                    own=reply.own)
    if _has_identity(quoted):
        return reply, quoted
    # The writer's signature is the data only when no form was typed into the quoted
    # original either: it never overrides a filled form.
    return reply, (prose and _prose_drafts(reply.own, signature=True)) or drafts


def _prose_drafts(own: str, *, signature: bool) -> list[Draft]:
    """Drafts of the people reading.prose finds in the own text (the quoted history is never
    read as prose: our own invitation would register its addressee)."""
    people = read_prose(own, signature_as_data=signature)
    return [Draft(values=p.values, sources=p.sources) for p in people]
