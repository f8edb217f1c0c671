"""Jinja2 templates → complete RFC 5322 messages as bytes, fast enough for 50,000 contacts."""

from __future__ import annotations

import binascii
import hashlib
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel.dates import format_date, format_time

from mailer.contacts import Contact, template_fields
from mailer.errors import ConfigError
from mailer.models import DeliveryKind
from mailer.settings import Settings

# An encoded-word may be 75 characters long (RFC 2047 §2) and a line should stay within 78
# (RFC 5322 §2.1.1): 36 bytes of UTF-8 make 48 characters of base64, 60 with "=?utf-8?b?…?=",
# which leaves room for the longest header name on the first line.
_WORD_BYTES = 36
_PHRASE_BYTES = 45  # a display-name word goes on a line of its own when long: 75 characters
_PLAIN_HEADER_MAX = 900  # under the 998-octet line limit of RFC 5322 §2.1.1 with room to spare


@dataclass(frozen=True)
class OutgoingMessage:
    """A message ready for the wire: envelope recipient, ids and the exact bytes."""

    to: str
    message_id: str
    subject: str
    data: bytes


def clean_header_text(value: str) -> str:
    """One line of text: control, line and paragraph separators become spaces.

    Values from contact lists and replies reach headers (To, Subject); CR, LF, U+2028 or
    U+0085 in them must never start a new header line (header injection).
    """
    if value.isprintable():
        return value.strip()
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c
                   for c in value).strip()


def encode_words(text: str, max_bytes: int = _WORD_BYTES) -> str:
    """RFC 2047 `B` encoded-words of at most 75 characters, folded with CRLF SP."""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > max_bytes:
            words.append(_b_word(chunk))
            chunk = bytearray()
        chunk += raw
    if chunk:
        words.append(_b_word(chunk))
    return "\r\n ".join(words)


def _b_word(raw: bytes | bytearray) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(raw, newline=False).decode("ascii") + "?="


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or len(text) > _PLAIN_HEADER_MAX


@lru_cache(maxsize=4096)
def encode_unstructured(text: str) -> str:
    """A Subject-like header value: as is when plain ASCII, else encoded-words."""
    text = clean_header_text(text)
    return encode_words(text) if _needs_encoding(text) else text


_ATOM_SPECIALS = set('()<>[]:;@\\,."')


def format_address(name: str, addr: str) -> str:
    """`Name <addr>`; only the display name is ever encoded (mailmerge encodes all of it)."""
    name = clean_header_text(name)
    if not name:
        return addr
    if any(c in _ATOM_SPECIALS for c in name) and name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return _fold([f'"{quoted}"', f"<{addr}>"])
    if any(c in _ATOM_SPECIALS for c in name) or "=?" in name:
        return _fold([encode_words(name), f"<{addr}>"])
    return _fold([*encode_phrase(name), f"<{addr}>"])


def encode_phrase(name: str) -> list[str]:
    """A display name: ASCII words stay readable, each run of other words is one encoded-word.

    Decoders differ on the space between two adjacent encoded-words in a phrase (RFC 2047
    drops it, Python's parser keeps one), so a run of non-ASCII words goes into a single
    word whenever it fits, with its inner spaces encoded.
    """
    parts: list[str] = []
    run: list[str] = []
    for word in [*name.split(" "), ""]:  # the empty sentinel flushes the last run
        if word and not word.isascii():
            run.append(word)
            continue
        parts.extend(_phrase_words(run))
        run = []
        if word:
            parts.append(word)
    return parts


def _phrase_words(run: list[str]) -> list[str]:
    """Pack non-ASCII words into as few encoded-words (of ≤ 45 bytes) as will hold them."""
    chunks: list[str] = []
    for word in run:
        joined = f"{chunks[-1]} {word}" if chunks else word
        if chunks and len(joined.encode()) <= _PHRASE_BYTES:
            chunks[-1] = joined
        else:
            if chunks:
                chunks[-1] += " "  # inside the word: RFC 2047 decoders drop the gap between
            chunks.append(word)
    return [encode_words(chunk, _PHRASE_BYTES) for chunk in chunks]


def _fold(parts: list[str], width: int = 66) -> str:
    """Join header tokens with spaces, folding (CRLF SP) before a token that would overflow."""
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + 1 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]} {part}" if lines[-1] else part
    return "\r\n ".join(lines)


def encode_body(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends (RFC 2045 §6.7): readable and 7-bit safe.

    Quoted-printable works line by line (soft breaks and the trailing-space rule end at
    each line end), so the text is encoded in blocks between blank lines, and blocks are
    remembered: every invitation repeats the same template paragraphs, and encoding 14 kB
    afresh cost ~0.2 ms a message; only the blocks with the recipient's data are new.
    """
    lf = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    if not lf.endswith("\n"):
        lf += "\n"
    # Every block but the last was followed by "\n\n" and so never ends with "\n"; the last
    # ends with "\n" (or is empty) and is encoded as it is.
    *blocks, last = lf.split("\n\n")
    if len(_QP_BLOCKS) > _QP_CACHE_BLOCKS:
        _QP_BLOCKS.clear()  # personal blocks pile up; the template's come back at once
    encoded = [_QP_BLOCKS.get(block) or _encode_block(block) for block in blocks]
    encoded.append(_quoted_printable(last))
    return b"".join(encoded)


_QP_BLOCKS: dict[str, bytes] = {}
_QP_CACHE_BLOCKS = 4096


def _encode_block(block: str) -> bytes:
    """A block and the blank line after it, remembered."""
    encoded = _quoted_printable(block + "\n") + b"\r\n"
    _QP_BLOCKS[block] = encoded
    return encoded


def _quoted_printable(lines: str) -> bytes:
    """Complete LF-terminated lines (or nothing) → quoted-printable with CRLF."""
    encoded = binascii.b2a_qp(lines.encode("utf-8"), quotetabs=False, istext=True,
                              header=False)
    return encoded.replace(b"\n", b"\r\n")


class PolishDates:
    """Jinja2 filters that write aware date-times in Polish, in the campaign's time zone."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def local(self, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("date-times given to the Polish date filters must be aware")
        return value.astimezone(self.zone)

    def date(self, value: datetime) -> str:
        return _cached_format(self.local(value), "long")

    def weekday(self, value: datetime) -> str:
        return _cached_format(self.local(value), "EEEE")

    def time(self, value: datetime) -> str:
        return _cached_format(self.local(value), "HH:mm")

    def datetime(self, value: datetime) -> str:
        return f"{self.date(value)}, godz. {self.time(value)}"

    def filters(self) -> dict[str, Any]:
        return {"date_pl": self.date, "weekday_pl": self.weekday, "time_pl": self.time,
                "datetime_pl": self.datetime}


@lru_cache(maxsize=1024)
def _cached_format(value: datetime, pattern: str) -> str:
    # Babel costs tens of microseconds per call; the same event dates recur in every message.
    if pattern == "HH:mm":
        return format_time(value, "HH:mm", locale="pl")
    return format_date(value, pattern, locale="pl")


def _environment(folder: Path, zone: ZoneInfo, *, html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(PolishDates(zone).filters())
    return env


def template_error(err: jinja2.TemplateError, what: str,
                   folder: Path | None = None) -> ConfigError:
    """A Jinja2 error as a ConfigError naming the template file and line."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        where = f"{err.filename or err.name}:{err.lineno}"
        return ConfigError(f"{where}: template syntax error: {err.message}")
    if isinstance(err, jinja2.TemplateNotFound):
        missing = folder / str(err.name) if folder else err.name
        return ConfigError(f"template not found: {missing}",
                           hint="`mailer init DIR` writes every template the service sends")
    line = _template_line(err)
    return ConfigError(
        f"{line + ': ' if line else ''}{what}: {err}",
        hint="check the name's spelling; guard optional columns with "
             "{% if recipient.column is defined %}",
    )


def _template_line(err: BaseException) -> str:
    """The template file and line an error was raised at ("…/confirmation.txt.j2:12"): Jinja2
    rewrites a rendering error's traceback so that its frames are the template's lines."""
    found, frame = "", err.__traceback__
    while frame is not None:
        name = frame.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            found = f"{name}:{frame.tb_lineno}"
        frame = frame.tb_next
    return found


@dataclass(frozen=True)
class Templates:
    """One named template: a subject, a text body and an optional HTML body, all compiled."""

    name: str
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None


class Renderer:
    """Builds personalised messages for one campaign; templates are compiled once."""

    def __init__(self, settings: Settings, *, now: datetime) -> None:
        self.settings = settings
        self.now = now
        self._date: tuple[datetime | None, str] = (None, "")
        zone = settings.campaign.timezone
        self._text_env = _environment(settings.templates_dir, zone, html=False)
        self._html_env = _environment(settings.templates_dir, zone, html=True)
        self._templates: dict[str, Templates] = {}
        campaign = settings.campaign
        self.domain = campaign.sender_address.rpartition("@")[2] or "localhost"
        self._from = self._address_header(campaign.sender)
        self._unsubscribe = ", ".join(f"<{clean_header_text(u)}>" for u in campaign.unsubscribe)
        self._one_click = any(u.startswith("https:") for u in campaign.unsubscribe)
        self.base_context: dict[str, Any] = {
            "campaign": campaign,
            "events": list(settings.events),
            "event": {e.id: e for e in settings.events},
            "unsubscribe": campaign.unsubscribe[0] if campaign.unsubscribe else "",
            "now": now,
        }

    @staticmethod
    def _address_header(value: str) -> str:
        name, addr = parseaddr(value)
        return format_address(name, addr)

    def templates(self, name: str, subject: str | None = None) -> Templates:
        """Compile `name`.txt.j2 (+ `name`.html.j2 when present) once; errors name the file."""
        if name in self._templates:
            return self._templates[name]
        try:
            text = self._text_env.get_template(f"{name}.txt.j2")
            html_path = self.settings.templates_dir / f"{name}.html.j2"
            html = self._html_env.get_template(f"{name}.html.j2") if html_path.is_file() else None
            subject_source = subject if subject is not None else self.settings.campaign.subject
            compiled_subject = self._text_env.from_string(subject_source)
        except jinja2.TemplateError as err:
            raise template_error(err, f"template {name}", self.settings.templates_dir) from err
        result = Templates(name, compiled_subject, text, html)
        self._templates[name] = result
        return result

    def recipient_names(self, name: str) -> set[str]:
        """The contact columns template `name` reads (`recipient.X`, `recipient["X"]`) in its
        text, its HTML, the campaign's subject and every template they include."""
        found: set[str] = set()
        seen: set[str] = set()
        sources = [(self._text_env, f"{name}.txt.j2"), (self._html_env, f"{name}.html.j2")]
        try:
            _recipient_names(self._text_env.parse(self.settings.campaign.subject), found, [])
            while sources:
                env, file = sources.pop()
                if file in seen or not (self.settings.templates_dir / file).is_file():
                    continue
                seen.add(file)
                assert env.loader is not None
                tree = env.parse(env.loader.get_source(env, file)[0], file)
                included: list[str] = []
                _recipient_names(tree, found, included)
                sources += [(env, other) for other in included]
        except jinja2.TemplateError as err:
            raise template_error(err, f"template {name}", self.settings.templates_dir) from err
        return found

    def message_id(self, kind: str, key: str, *, secret: str = "") -> str:
        """A Message-ID that is the same each time the same message is built.

        A copy sent again after a crash (the server accepted it, we died before recording)
        then carries the same id, so replies to either copy match the same delivery. `secret`
        (the state's salt, for what is recorded) keeps anyone who knows the campaign's name
        and a contact's address from computing the id: a reply naming it counts as written
        in our thread (issue 12: answered without review, a bounce taken as ours).
        """
        seed = f"{secret}\0{self.settings.campaign.name}\0{kind}\0{key}".encode()
        digest = hashlib.sha256(seed).hexdigest()[:32]
        label = kind.partition(":")[0]  # "reminder:pim" → "reminder": ':' is no atext
        return f"<{digest}.{label}@{self.domain}>"

    def random_message_id(self, kind: str) -> str:
        """A fresh Message-ID, for test sends that are not recorded."""
        return f"<{secrets.token_hex(16)}.{kind}@{self.domain}>"

    def invitation(self, contact: Contact, *, template: str | None = None,
                   message_id: str | None = None, kind: str = DeliveryKind.INVITATION,
                   extra: Mapping[str, Any] | None = None) -> OutgoingMessage:
        """The personalised invitation (or reminder) for one contact."""
        name = template or self.settings.campaign.template
        fields = template_fields(contact.fields)
        context = {**self.base_context, "recipient": fields, **(extra or {})}
        return self.compose(
            self.templates(name),
            to_addr=contact.email,
            to_name=display_name(fields),
            context=context,
            message_id=message_id or self.message_id(kind, contact.key),
            where=f"{contact.source} ({name})",
        )

    def compose(self, templates: Templates, *, to_addr: str, to_name: str,
                context: Mapping[str, Any], message_id: str, where: str,
                headers: Iterable[tuple[str, str]] = (),
                subject: str | None = None) -> OutgoingMessage:
        """Render the templates and assemble the message bytes; `headers` are extra headers.

        `subject` replaces the template's subject (answers use "Re: " + the original).
        """
        try:
            if subject is None:
                subject = templates.subject.render(context)
            text = templates.text.render(context)
            html = templates.html.render(context) if templates.html else None
        except jinja2.TemplateError as err:
            raise template_error(err, where) from err
        subject = clean_header_text(subject)
        lines = [
            f"From: {self._from}",
            f"To: {format_address(to_name, to_addr)}",
            f"Reply-To: {self.settings.campaign.reply_to}",
            f"Subject: {encode_unstructured(subject)}",
            f"Date: {self._date_header()}",
            f"Message-ID: {message_id}",
        ]
        lines.extend(f"{k}: {clean_header_text(v)}" for k, v in headers)
        if self._unsubscribe:
            lines.append(f"List-Unsubscribe: {self._unsubscribe}")
            if self._one_click:  # RFC 8058: only meaningful for an https target
                lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        lines.append("MIME-Version: 1.0")
        head = "\r\n".join(lines).encode("ascii")
        body = _mime_body(text, html, message_id)
        return OutgoingMessage(to=to_addr, message_id=message_id, subject=subject,
                               data=head + b"\r\n" + body)

    def now_for_header(self) -> datetime:
        """The Date header's time: the (rehearsal) clock, in the campaign's zone."""
        return self.now.astimezone(self.settings.campaign.timezone)

    def _date_header(self) -> str:
        """`now_for_header` formatted, once for as long as `now` stays the same."""
        if self._date[0] is not self.now:
            self._date = (self.now, format_datetime(self.now_for_header()))
        return self._date[1]


_TEXT_HEAD = (b'Content-Type: text/plain; charset="utf-8"\r\n'
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
_HTML_HEAD = (b'Content-Type: text/html; charset="utf-8"\r\n'
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")


def _mime_body(text: str, html: str | None, message_id: str) -> bytes:
    """The MIME part of a message: text/plain alone, or multipart/alternative with HTML."""
    if html is None:
        return _TEXT_HEAD + encode_body(text)
    # QP output never contains "=_", so a boundary made of it cannot occur in the parts.
    boundary = "=_" + hashlib.sha1(message_id.encode()).hexdigest()[:24]
    b = boundary.encode("ascii")
    # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1): without an
    # extra one each part would lose its own last line end.
    return b"".join((
        b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n',
        b"--" + b + b"\r\n", _TEXT_HEAD, encode_body(text),
        b"\r\n--" + b + b"\r\n", _HTML_HEAD, encode_body(html),
        b"\r\n--" + b + b"--\r\n",
    ))


def _recipient_names(tree: jinja2.nodes.Template, found: set[str], included: list[str]) -> None:
    """Add to `found` what `tree` reads of `recipient`, to `included` the templates it names."""
    nodes = jinja2.nodes

    def of_recipient(node: jinja2.nodes.Expr) -> bool:
        return isinstance(node, nodes.Name) and node.name == "recipient"

    found.update(n.attr for n in tree.find_all(nodes.Getattr) if of_recipient(n.node))
    found.update(n.arg.value for n in tree.find_all(nodes.Getitem) if of_recipient(n.node)
                 and isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str))
    names = [*(n.template for n in tree.find_all(nodes.Include)),
             *(n.template for n in tree.find_all(nodes.Import)),
             *(n.template for n in tree.find_all(nodes.FromImport)),
             *(n.template for n in tree.find_all(nodes.Extends))]
    included += [n.value for n in names
                 if isinstance(n, nodes.Const) and isinstance(n.value, str)]


def display_name(fields: Mapping[str, str]) -> str:
    """The contact's name for the To header, from whichever name columns the list has."""
    for key in ("imie_i_nazwisko", "name", "nazwa"):
        if fields.get(key):
            return fields[key]
    return " ".join(fields[k] for k in ("imie", "nazwisko") if fields.get(k))
