"""Pure reply reader: body text, quoted-history split (own rules), registration-form drafts."""

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

import codecs
import email.errors
import functools
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, MIMEPart

import html2text

from mailer.reading.textfold import FoldTable, strip_marks

FIELDS = ("event", "name", "position", "city", "email", "phone")

# A draft needs one of these: e-mail/phone lines alone are a signature ("Tel.: …"), not a form.
_IDENTITY_FIELDS = ("event", "name", "position", "city")

# Every exception the stdlib email package was seen to raise on malformed input (LookupError
# covers KeyError; ValueError covers UnicodeError; MessageError covers HeaderParseError).
_EMAIL_ERRORS = (LookupError, AttributeError, IndexError, ValueError, TypeError,
                 email.errors.MessageError)


@dataclass(frozen=True)
class Draft:
    """One filled form as written: field -> raw value (stripped); only fields that were present."""

    values: Mapping[str, str]  # in FIELDS order; "" for a label left empty
    from_quoted: bool = False  # read from the quoted history: typed into the quoted original


@dataclass(frozen=True)
class ReplyText:
    """A reply body split into the sender's own text and the quoted history."""

    own: str  # the reply's own text, quoted history removed
    quoted: str  # the rest, as written (may be "")


# --- body text and charsets -------------------------------------------------------------------

_C1_CONTROLS = re.compile("[\x80-\x9f]")
_POLISH_LETTERS = frozenset("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
# Letters that appear when Polish is read in the wrong one of ISO-8859-2 / Windows-1250
# (0xB9 ą→š, 0xA5 Ą→Ľ; 0xB1 ą→±, 0xB6 ś→¶, 0xBC ź→Ľ, 0xA1 Ą→ˇ, 0xA6 Ś→¦, 0xAC Ź→¬) or when
# UTF-8 lead bytes 0xC3–0xC5 are read as a single-byte charset (Ă Ä Ĺ).
_MISREAD_LETTERS = frozenset("šĽ±¶ˇ¦¬ĂÄĹ")
_FALLBACK_CHARSETS = ("utf-8", "cp1250")


def _codec_name(charset: str | None) -> str | None:
    """The codec's canonical name, or None for a missing or unknown charset label."""
    if not charset:
        return None
    try:
        return codecs.lookup(charset).name
    except (LookupError, TypeError, ValueError):  # "x-unknown-charset", embedded NUL, …
        return None


def _try_decode(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):  # LookupError: rot13/base64 are not text codecs
        return None


def _polish_score(text: str) -> int:
    return sum(map(text.count, _POLISH_LETTERS)) - 2 * sum(map(text.count, _MISREAD_LETTERS))


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes of a text part → str: the declared charset unless UTF-8 or cp1250 reads better."""
    # Outlook sends Windows-1250 labelled ISO-8859-2; both decode any byte, so a strict decode
    # proves nothing. C1 controls (U+0080–U+009F) never occur in mail text and the misread
    # letters above rarely occur in Polish: the reading with most Polish letters wins, and max()
    # keeps the first of equals, so a correct label (tried first) wins every tie.
    names = (_codec_name(charset), *(_codec_name(c) for c in _FALLBACK_CHARSETS))
    readings = [text for name in dict.fromkeys(n for n in names if n)
                if (text := _try_decode(data, name)) is not None]
    plausible = list(dict.fromkeys(text for text in readings if not _C1_CONTROLS.search(text)))
    if len(plausible) == 1:  # every label reads the same (ASCII): nothing to weigh
        return plausible[0]
    if plausible:
        return max(plausible, key=_polish_score)
    if readings:
        return readings[0]
    return data.decode("utf-8", errors="replace")


def _quote_depth(line: str) -> tuple[int, str]:
    depth = len(line) - len(line.lstrip(">"))
    content = line[depth:]
    return depth, content[1:] if content.startswith(" ") else content  # RFC 3676 §4.4 stuffing


def _requote(depth: int, line: str) -> str:
    return f"{'>' * depth} {line}" if depth else line


def _unflow(text: str, *, delsp: bool) -> str:
    """Join format=flowed soft line breaks (RFC 3676 §4.2) so wrapped values stay on one line."""
    out: list[str] = []
    pending: str | None = None
    pending_depth = 0
    for raw in text.split("\n"):
        depth, line = _quote_depth(raw)
        flowed = line.endswith(" ") and line != "-- "  # "-- " is the signature separator
        if flowed and delsp:
            line = line[:-1]
        if pending is not None and depth == pending_depth:
            line = pending + line
        elif pending is not None:
            out.append(_requote(pending_depth, pending))
        pending = None
        if flowed:
            pending, pending_depth = line, depth
        else:
            out.append(_requote(depth, line))
    if pending is not None:
        out.append(_requote(pending_depth, pending))
    return "\n".join(out)


def _param(part: MIMEPart, name: str) -> str:
    try:
        value = part.get_param(name)
    except _EMAIL_ERRORS:
        return ""
    return value.lower() if isinstance(value, str) else ""


def _part_text(part: MIMEPart) -> str:
    try:
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except _EMAIL_ERRORS:
        return ""
    if not isinstance(payload, bytes):
        return ""
    text = decode_text(payload, charset if isinstance(charset, str) else None)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _param(part, "format") == "flowed":
        text = _unflow(text, delsp=_param(part, "delsp") == "yes")
    return text


_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>|])")
_TABLE_RULE = re.compile(r"^(?=.*\|)(?=.*---)[\s|:-]+$")


def _table_row(line: str) -> str:
    """html2text's `label:| value` table row → `label: value`."""
    cells = [cell.strip() for cell in line.split("|") if cell.strip()]
    if len(cells) < 2:  # a label and at least one value cell
        return cells[0] if cells else ""
    label, value = cells[0], " ".join(cells[1:])
    return f"{label} {value}" if label.endswith((":", "-", "–")) else f"{label}: {value}"


# What the reader hands to html2text (issue 12: crafted HTML cost html.parser quadratic time):
# no reply's HTML is longer, lists and quotes nest a few levels (html2text indents each line
# by its depth, so 10,000 levels made 455 MB), and a "<" that opens no tag is text.
_MAX_HTML = 2_000_000  # characters
_MAX_NESTING = 16
_NESTING = re.compile(r"<(/?)(?:ul|ol|dl|blockquote)\b[^<>]*>", re.IGNORECASE)
_STRAY_ANGLE = re.compile(r"<(?![A-Za-z/!?])")


def _tame_html(markup: str) -> str:
    """The HTML cut to `_MAX_HTML`, lists and quotes nested at most `_MAX_NESTING` deep (the
    deeper tags dropped, their text kept), stray "<" escaped; linear in the input."""
    markup = _STRAY_ANGLE.sub("&lt;", markup[:_MAX_HTML])
    kept, depth, last = [], 0, 0
    for tag in _NESTING.finditer(markup):
        if tag.group(1):  # closing
            depth = max(0, depth - 1)
            keep = depth < _MAX_NESTING
        else:
            keep = depth < _MAX_NESTING
            depth += 1
        if not keep:
            kept.append(markup[last:tag.start()])
            last = tag.end()
    kept.append(markup[last:])
    return "".join(kept)


def html_to_text(markup: str) -> str:
    """HTML → plain text with one `label: value` line per table row; never raises."""
    markup = _tame_html(markup)
    # A fresh converter per call: after an exception html2text keeps the unparsed rest.
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no wrapping: a wrapped line would cut a value in two
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True  # else &oacute; becomes "o" (html2text config.UNIFIABLE)
    try:
        text = str(converter.handle(markup))
    except (AssertionError, ValueError, IndexError, KeyError, TypeError, AttributeError):
        # _markupbase raises AssertionError on an unknown "<![…" marked section.
        text = html.unescape(re.sub(r"<[^<>]*>", " ", markup))  # [^<>]: linear on "<<<…"
    text = _MARKDOWN_ESCAPE.sub(r"\1", text).replace("\xa0", " ")
    rows = (_table_row(line) if "|" in line else line.rstrip()
            for line in text.split("\n") if not _TABLE_RULE.match(line))
    return "\n".join(rows)


def _find_body(msg: EmailMessage, kind: str) -> MIMEPart | None:
    try:
        return msg.get_body(preferencelist=(kind,))
    except _EMAIL_ERRORS:
        return None


def body_text(msg: EmailMessage) -> str:
    """The message's text: text/plain if it has any, else its text/html as text; "" if neither."""
    # get_body, not get_content: get_content on a multipart raises KeyError, and get_body skips
    # attachments (RFC 2183 Content-Disposition). Decoding is ours: get_content raises
    # LookupError on an unknown charset.
    for kind in ("plain", "html"):
        part = _find_body(msg, kind)
        if part is None:
            continue
        text = _part_text(part)
        if kind == "html":
            text = html_to_text(text)
        if text.strip():
            return text
    return ""


# --- quoted history -------------------------------------------------------------------------------

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
_HEADER_START = re.compile(r"^(?:od|from)\s*:")
_HEADER_FIELD = re.compile(r"^(?:wyslane|wyslano|data|sent|date|do|to|dw|cc|temat|subject)\s*:")
_ATTRIBUTION_START = re.compile(r"^(?:w dniu|dnia|on|wiadomosc napisana przez)\b")
_ATTRIBUTION = re.compile(
    r"^(?:(?:w dniu|dnia|on)\b.*\b(?:napisal\(a\)|napisala?|nadeslal|pisze|wrote)"
    r"|wiadomosc napisana przez\b.*)\s*:$"
)
_ATTRIBUTION_MAX_LINES = 3  # Gmail hard-wraps its attribution at 78 columns


def _plains(lines: Sequence[str]) -> list[str]:
    """Each line folded, without markdown stars and outer blanks: what the patterns see."""
    return [fold(line.replace("*", "")).strip() for line in lines]


def _is_header_block(plains: Sequence[str], i: int) -> bool:
    """Outlook's "Od: … Wysłane: … Do: … Temat:" (or From/Sent/To/Subject) block starts at i."""
    if not _HEADER_START.match(plains[i]):
        return False
    return sum(bool(_HEADER_FIELD.match(line)) for line in plains[i + 1 : i + 8]) >= 2


def _attribution_span(lines: Sequence[str], plains: Sequence[str], i: int) -> int:
    """Lines taken by a "W dniu … napisał(a):" / "On … wrote:" attribution at i; 0 if none."""
    if not _ATTRIBUTION_START.match(plains[i]):
        return 0
    joined = ""
    for n in range(1, min(_ATTRIBUTION_MAX_LINES, len(lines) - i) + 1):
        if not lines[i + n - 1].strip():
            break
        joined = f"{joined} {plains[i + n - 1]}".strip()
        if _ATTRIBUTION.match(joined):
            return n
    return 0


def _quote_follows(lines: Sequence[str], j: int) -> bool:
    next_line = next((line for line in lines[j:] if line.strip()), "")
    return bool(_QUOTE_LINE.match(next_line))


# What a separator, a header block or an attribution can start with (their patterns' first
# characters): any other line is own text without trying them.
_HISTORY_INITIALS = frozenset("-_ofwd")


def _history_span(lines: Sequence[str], plains: Sequence[str], i: int) -> int:
    """How many lines from i are quoted history (0: line i is own text)."""
    if _QUOTE_LINE.match(lines[i]):
        return 1
    plain = plains[i]
    if plain[:1] not in _HISTORY_INITIALS:
        return 0
    if _SEPARATOR.match(plain) or _is_header_block(plains, i):
        return len(lines) - i  # Outlook quotes the original unprefixed: the rest is history
    span = _attribution_span(lines, plains, i)
    if span and not _quote_follows(lines, i + span):
        return len(lines) - i
    return span  # an attribution over "> " lines: bottom-posted text after them is own text


def split_reply(text: str) -> ReplyText:
    """Separate the reply's own text from quoted history (> lines, quote headers, separators)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    plains = _plains(lines)  # each line folded once, not again by each look-ahead
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
    return ReplyText(own="\n".join(own).strip(), quoted="\n".join(quoted).strip())


# --- form labels ----------------------------------------------------------------------------------

# (key, label regex on folded text), longer labels first. "given"/"family" are "Imię:" and
# "Nazwisko:" written on separate lines: they make one name.
_LABELS = (
    ("event", r"zglaszam\s+udzial\s+w|udzial\s+w|wydarzenie|event"),
    ("name", r"imie\s+i\s+nazwisko|nazwisko\s+i\s+imie|uczestnik|full\s+name|name"),
    ("given", r"imie"),
    ("family", r"nazwisko"),
    ("position", r"stanowisko|funkcja|position"),
    ("city", r"miasto\s*/\s*urzad|urzad\s+miasta|miasto|urzad|instytucja|jednostka|organizacja"
             r"|city"),
    ("email", r"adres\s+e-?mail|e-?mail\s+kontaktowy|e-?mail|mail"),
    ("phone", r"(?:nr|numer)\s+tel(?:efonu|\.)?|telefon(?:\s+kontaktowy)?|tel\.?\s*kom\.?|tel\.?"
              r"|komorka|phone"),
)
# A separator is required ( : | - – tab, two spaces, or a space after the "(…)" hint) so prose
# such as "Miasto zielone." or "Tel. 58 123" in a signature is not read as a label.
_SEPARATOR_AFTER_LABEL = (
    r"(?:[ \t]*[:|][ \t]*|[ \t]+[-–—][ \t]*|[-–—][ \t]+|\t[ \t]*|[ \t]{2,}|(?<=\))[ \t]+|[ \t]*$)"
)
_LABEL_LINE = re.compile(
    "^(?:" + "|".join(f"(?P<{key}>{pattern})" for key, pattern in _LABELS) + r")"
    r"(?:[ \t]*\([^)]*\))?" + _SEPARATOR_AFTER_LABEL + r"(?P<value>.*)$"
)
_QUOTE_MARKERS = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_BULLET = re.compile(r"^(?:[-*•·]|\d{1,2}[.)])[ \t]+")
_BULLET_MARKS = frozenset("-*•·")  # or a decimal digit (\d)
# Outlook plain text: addr<mailto:addr>. Linear on any input: the white space before it is taken
# only from the start of its run, and the address holds no bracket (an unclosed "<mailto:"
# scans no further than the next one).
_MAILTO = re.compile(r"(?:(?<!\s)\s+)?[<\[]mailto:[^<>\[\]]*[>\]]")
_CLOSING = re.compile(
    r"^(?:pozdrawiam|pozdrowienia|z powazaniem|z wyrazami|serdecznie|dziekuje|dziekujemy"
    r"|dzieki|regards|best|thanks|thank you|kind regards|sent from|wyslano z)\b"
)
_MAX_VALUE_LENGTH = 80  # the next line as a value: longer lines are prose (the RODO clause)
_MAX_VALUE_WORDS = 10
_MAX_BLANKS_BEFORE_VALUE = 2  # html2text puts one blank line between paragraphs


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
    return value if any(c.isalnum() for c in value) else ""  # "____", "…", "-" mean empty


def _match_label(line: str, folded: str) -> tuple[str, str] | None:
    """(key, value as written) when the line (`folded`: the line folded) starts with a known
    label."""
    match = _LABEL_LINE.match(folded)
    if match is None:
        return None
    key = next(k for k, _ in _LABELS if match.group(k) is not None)
    return key, _clean_value(line[match.start("value") :])


def _looks_like_value(line: str, folded: str, key: str) -> bool:
    """May this line (after an empty label) be the label's value rather than prose?"""
    if _CLOSING.match(folded) or line.endswith(":") or _match_label(line, folded) is not None:
        return False
    if len(line) > _MAX_VALUE_LENGTH or len(line.split()) > _MAX_VALUE_WORDS:
        return False
    if key == "email":
        return "@" in line
    if key == "phone":
        return any(c.isdigit() for c in line)
    return True


def _next_line_value(lines: Sequence[str], folded: Sequence[str], i: int, key: str) -> str:
    """The value written on the next non-empty line under an empty label, or ""."""
    for j in range(i + 1, min(i + 2 + _MAX_BLANKS_BEFORE_VALUE, len(lines))):
        if lines[j]:
            return _clean_value(lines[j]) if _looks_like_value(lines[j], folded[j], key) else ""
    return ""


@dataclass
class _FormReader:
    """Collects label values into drafts; a label seen again starts the next draft."""

    drafts: list[Draft] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    name_part: str | None = None  # "given"/"family" while the name is half written
    after_form: bool = False  # a form (even a blank template) was read before the current one

    def add(self, key: str, value: str) -> None:
        if key in ("given", "family") and self._completes_name(key):
            given, family = (value, self.values["name"]) if key == "given" else (
                self.values["name"], value)
            self.values["name"] = f"{given} {family}".strip()
            self.name_part = None
            return
        name = "name" if key in ("given", "family") else key
        if name in self.values:
            self.finish()
        self.values[name] = value
        self.name_part = key if key in ("given", "family") else None

    def _completes_name(self, key: str) -> bool:
        return self.name_part is not None and self.name_part != key

    def finish(self) -> None:
        # A blank template is no draft; e-mail/phone lines after a form are a signature
        # ("Tel.: …" under the filled form, or under the ministry's quoted template).
        has_identity = any(self.values.get(f) for f in _IDENTITY_FIELDS)
        if has_identity or (not self.after_form and any(self.values.values())):
            ordered = {f: self.values[f] for f in FIELDS if f in self.values}
            self.drafts.append(Draft(values=ordered))
        self.after_form = self.after_form or any(f in self.values for f in _IDENTITY_FIELDS)
        self.values, self.name_part = {}, None


# More forms than any town hall sends in one reply (the answers' limit per sender is at most
# this too): the rest of a message holding thousands is not read, and the one form past the
# limit that is read puts the message up for review (issue 12: 15,000 forms took 5 s).
MAX_FORMS = 1_000


def read_forms(text: str) -> list[Draft]:
    """Every filled registration form in text, in order, at most `MAX_FORMS` + 1; blank
    templates are skipped."""
    lines = [_clean_line(raw) for raw in text.replace("\r\n", "\n").split("\n")]
    folded = [fold(line) for line in lines]
    reader = _FormReader()
    for i, line in enumerate(lines):
        if len(reader.drafts) > MAX_FORMS:
            break
        hit = _match_label(line, folded[i]) if line else None
        if hit is None:
            continue
        key, value = hit
        reader.add(key, value or _next_line_value(lines, folded, i, key))
    reader.finish()
    return reader.drafts[:MAX_FORMS + 1]


def _has_identity(drafts: Sequence[Draft]) -> bool:
    return any(d.values.get(f) for d in drafts for f in _IDENTITY_FIELDS)


def read_message(msg: EmailMessage) -> tuple[ReplyText, list[Draft]]:
    """Body → own/quoted text → drafts from the own text, else from the quoted history."""
    reply = split_reply(body_text(msg))
    drafts = read_forms(reply.own)
    if _has_identity(drafts) or not reply.quoted:
        return reply, drafts
    # People type into the quoted original; e-mail/phone alone in the own text
    # (a signature) does not outweigh a form found there.
    quoted = [replace(d, from_quoted=True) for d in read_forms(reply.quoted)]
    return reply, quoted if _has_identity(quoted) else drafts
