"""Pure: a message's text — the text/plain or text/html body, decoded whatever its charset
says (Windows-1250 and ISO-8859-2 mislabelled as each other, unknown charsets), flowed text
joined, HTML (Outlook's tables included) turned into lines."""

from __future__ import annotations

import codecs
import email.errors
import html
import re
from email.message import EmailMessage, MIMEPart

import html2text

# Every exception the stdlib email package was seen to raise on malformed input (LookupError
# covers KeyError; ValueError covers UnicodeError; MessageError covers HeaderParseError).
_EMAIL_ERRORS = (LookupError, AttributeError, IndexError, ValueError, TypeError,
                 email.errors.MessageError)


_C1_CONTROLS = re.compile("[\x80-\x9f]")
_POLISH_LETTERS = frozenset("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
# Letters that appear when Polish is read in the wrong one of ISO-8859-2 / Windows-1250
# (0xB9 ą→š, 0xA5 Ą→Ľ; 0xB1 ą→±, 0xB6 ś→¶, 0xBC ź→Ľ, 0xA1 Ą→ˇ, 0xA6 Ś→¦, 0xAC Ź→¬) or when
# UTF-8 lead bytes 0xC3–0xC5 are read as a single-byte charset (Ă Ä Ĺ), or those of emoji
# (0xF0 → đ), of Cyrillic (0xD0 → Đ) and of curly quotes (0xE2 0x80 → â€) (issue 13).
_MISREAD_LETTERS = frozenset("šĽ±¶ˇ¦¬ĂÄĹđĐâ€")
# Both Polish single-byte charsets are tried whatever the label says: each is sent labelled
# as the other (Outlook: Windows-1250 as ISO-8859-2; webmail: ISO-8859-2 as Windows-1250).
_FALLBACK_CHARSETS = ("utf-8", "cp1250", "iso-8859-2")
_UTF8 = "utf-8"


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
    declared = _codec_name(charset)
    if declared == _UTF8 and (text := _try_decode(data, _UTF8)) is not None:
        # Valid UTF-8 under its own label is UTF-8: emoji, curly quotes and Cyrillic read
        # as Windows-1250 yield "ź", "Ń" and so outscore a text with few Polish letters.
        return text
    names = (declared, *(_codec_name(c) for c in _FALLBACK_CHARSETS))
    readings = [text for name in dict.fromkeys(n for n in names if n)
                if (text := _try_decode(data, name)) is not None]
    plausible = list(dict.fromkeys(text for text in readings if not _C1_CONTROLS.search(text)))
    if len(plausible) == 1:  # every label reads the same (ASCII): nothing to weigh
        return plausible[0]
    if plausible:
        return max(plausible, key=_polish_score)
    first = _try_decode(data, declared) if declared else None
    if first is not None:  # C1 controls and all: the sender's label read as it says
        return first
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
# html2text glues the paragraphs of one table cell ("UE</p><p>Biuro" → "UEBiuro"): a blank
# between a closing and an opening block tag keeps the words apart.
_BLOCK_GAP = re.compile(r"(</(?:p|div)>)(?=<(?:p|div)\b)", re.IGNORECASE)


def _tame_html(markup: str) -> str:
    """The HTML cut to `_MAX_HTML`, lists and quotes nested at most `_MAX_NESTING` deep (the
    deeper tags dropped, their text kept), stray "<" escaped; linear in the input."""
    markup = _BLOCK_GAP.sub(r"\1 ", _STRAY_ANGLE.sub("&lt;", markup[:_MAX_HTML]))
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
