"""Pure: a bounce notice as text — its own words, and the returned copy of our message.

Notices come as plain text, as multipart/report, as multipart/mixed, with a MIME boundary that
matches nothing, with CR-only line ends; every reader of bounces takes its text from here, so
each of those is handled once. Lines are cut at MAX_LINE and the text at MAX_TEXT, which keeps
every regular expression run over it linear (issue 12).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import Message

MAX_TEXT = 65_536  # a notice's own text is short; a longer one is read only as far as this

_RETURNED_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                             "message/global", "message/global-headers"})
# Where a notice's own text ends and the copy of the returned message begins.
_RETURNED_MARK = re.compile(
    r"^[ \t>|=*_-]*(?:"
    # a heading alone on its line ("----- Original message -----", "Returned message:")
    r"(?:(?:original|returned|unsent|undelivered) message(?: headers| details)?"
    r"|oryginalna wiadomo\w*|元のメッセージ)\W*$"
    # or a sentence that starts the copy, whatever follows it on the line
    r"|(?:below this line is a copy|this is a copy of the message|a copy of the (?:original )?"
    r"message|(?:possibly truncated )?original message follows|message headers follow"
    r"|headers of the original message|the original message headers|unsent message below"
    r"|(?:poni\w+ (?:znajduje si\w |jest )?)?kopia (?:oryginalnej |twojej )?wiadomo"
    r"|nag[lł][oó]wki (?:oryginalnej|pierwotnej) wiadomo)"
    r"[^\n]*$)",
    re.IGNORECASE | re.MULTILINE)

def notice_text(msg: Message) -> str:
    """The notice's own text: its text parts before the returned message, lines split on LF."""
    pieces: list[str] = []
    for part in _notice_parts(msg):
        pieces.append(_decoded(part))
        if sum(map(len, pieces)) > MAX_TEXT:
            break
    text = _lines("\n".join(pieces))[:MAX_TEXT]
    mark = _RETURNED_MARK.search(text)
    return text[:mark.start()] if mark else text


def returned_text(msg: Message) -> str:
    """The returned copy of our message as text (headers at least), wherever it was put."""
    pieces: list[str] = []
    for part in parts_of(msg):
        if part.get_content_type() in _RETURNED_TYPES:
            pieces.append(_part_source(part))
    whole = _lines("\n".join(_decoded(p) for p in _notice_parts(msg)))[:4 * MAX_TEXT]
    mark = _RETURNED_MARK.search(whole)
    if mark:
        pieces.append(whole[mark.end():])
    elif not pieces:  # no part, no heading (a broken MIME boundary): the copy is in the text
        pieces.append(whole)
    return "\n".join(pieces)[:4 * MAX_TEXT]


def parts_of(msg: Message) -> Iterator[Message]:
    """The parts of a message, parts of attached messages included, never raising."""
    try:
        yield from msg.walk()
    except Exception:  # a mangled structure: what was walked is what there is
        return


def _notice_parts(msg: Message) -> Iterator[Message]:
    """Text parts (and a multipart whose boundary was never found) before any returned part."""
    for part in parts_of(msg):
        content_type = part.get_content_type()
        if content_type in _RETURNED_TYPES:
            return
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            continue
        if part.get_content_maintype() in {"text", "multipart"} or isinstance(payload, str):
            yield part


def _decoded(part: Message) -> str:
    """A part's text decoded by its charset; undecodable bytes replaced, never raising."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = str(part.get_content_charset() or "utf-8")
    try:
        text = data.decode(charset, "replace")
    except LookupError:
        text = data.decode("latin-1")
    return _strip_tags(text) if part.get_content_subtype() == "html" else text


def _strip_tags(html: str) -> str:
    text = re.sub(r"<br\s*/?>|</(?:p|div|tr|li|h\d)>", "\n", html, flags=re.IGNORECASE)
    return re.sub(r"<[^<>]{0,2000}>", " ", text).replace("&lt;", "<").replace("&gt;", ">")


MAX_LINE = 500  # no notice writes longer lines; a longer one is cut (keeps every regex linear)


def _lines(text: str) -> str:
    """CRLF and CR-only line ends as LF (some gateways send CR alone); long lines cut."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line[:MAX_LINE] for line in lines)


def _part_source(part: Message) -> str:
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    if isinstance(inner, Message):
        try:
            return "".join(f"{k}: {v}\n" for k, v in inner.raw_items())
        except Exception:
            return ""
    return _lines(payload) if isinstance(payload, str) else _decoded(part)
