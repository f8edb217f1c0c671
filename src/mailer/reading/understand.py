"""Pure: one raw message → what the service makes of it (parse, classify, validate, decide)."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

from mailer.reading.classify import Classification, Kind, classify, is_automated
from mailer.reading.decide import Answer, Decision, decide_registration, sender_is_valid
from mailer.reading.headers import dmarc_failure, dmarc_pass, header_text, simple_address
from mailer.reading.invited import CONTACT, Invitee, fill_values
from mailer.reading.parse import FORM, Draft, read_message
from mailer.reading.prose import FIELDS, SENTENCE, stated_intent
from mailer.reading.validate import Registrant, match_events, validate_draft
from mailer.reasons import Code, Reason
from mailer.settings import Event

_MSGID = re.compile(r"<[^<>\s]+>")
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|odp|odp\.|aw|sv)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """What the service reads from one message, before any state is consulted."""

    key: str  # content hash: the same message is the same key after any restart or re-read
    received: datetime
    sender: str  # the From address, as written
    subject: str
    message_id: str
    refs: tuple[str, ...]  # In-Reply-To and References ids, nearest first
    classification: Classification
    automated: Reason | None  # why a machine sent it (never answered), or None
    forged: str | None
    own_text: str
    drafts: tuple[Draft, ...]
    quoted_text: str = ""  # the quoted history, as the reader split it off
    registrants: tuple[Registrant, ...] = ()
    decision: Decision | None = None
    merged_from: tuple[str, ...] = field(default=())
    # "dmarc=pass at <our MX>": the sender is who the From says (its answer needs no review).
    authenticated: str | None = None
    sender_valid: bool | None = None  # decide.sender_is_valid, worked out by the reader

    @property
    def kind(self) -> Kind:
        return self.classification.kind


def message_key(raw: bytes) -> str:
    """The identity of a message: a hash of its bytes (Message-IDs are not unique in practice)."""
    return hashlib.sha256(raw).hexdigest()[:32]


class _ParsedOnce(EmailMessage):
    """EmailMessage (policy.default) that parses a header value once, not on every access.

    The stdlib builds a new header object each time a header is read — get_body(),
    get_content_type(), get_param() and our checks read Content-Type, Subject and their
    kin some 30 times per message — and header objects are immutable and keep no
    reference to their message, so one parse of a (name, value) pair serves every read.
    Finding the header is a dict lookup too: the first of each name, indexed once for the
    headers the parser has added so far (the message is only read after parsing).
    """

    _first: dict[str, tuple[str, Any]] | None = None
    _indexed = -1  # how many headers `_first` covers

    def get(self, name: str, failobj: Any = None) -> Any:
        headers: list[tuple[str, Any]] = self._headers  # type: ignore[attr-defined]  # as Message.get
        if self._indexed != len(headers) or self._first is None:
            self._first = {}
            for key, value in headers:
                self._first.setdefault(key.lower(), (key, value))
            self._indexed = len(headers)
        found = self._first.get(name.lower())
        if found is None:
            return failobj
        return self._fetch(*found)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        headers: list[tuple[str, Any]] = self._headers  # type: ignore[attr-defined]  # as Message.get_all
        found = [self._fetch(key, value) for key, value in headers if key.lower() == name.lower()]
        return found or failobj

    def _fetch(self, key: str, value: Any) -> Any:
        if type(value) is str and self.policy is policy.default:
            return _parsed_header(key, value)
        return self.policy.header_fetch_parse(key, value)


# The stdlib's header parser is superlinear in a value's length (issue 12: a 1 MB Subject of
# encoded words, a From of 60,000 addresses took minutes). No header a person's client writes
# comes near this; a longer value is read only as far as this.
MAX_HEADER_CHARS = 16_384


@functools.lru_cache(maxsize=128)  # a message's own headers and the common values
def _parsed_header(name: str, value: str) -> Any:
    return policy.default.header_fetch_parse(name, value[:MAX_HEADER_CHARS])


class UnreadableMessage(ValueError):
    """A message the reader cannot take apart at all; the caller keeps it for review."""


# Containers (multiparts, attached messages) in one message: a reply with a forwarded thread
# and its attachments holds a few dozen. The stdlib parser passes every line through each
# level of nesting, so 1,000 nested ones took 3 s before it ran out of stack (issue 12);
# past this count the message is not parsed (100 nested, 1 MB: 0.5 s).
MAX_CONTAINERS = 100
_CONTAINER = re.compile(rb"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)


def parse_bytes(raw: bytes) -> EmailMessage:
    """The stdlib parse with the modern policy; it tolerates anything but let us be sure."""
    for count, _ in enumerate(_CONTAINER.finditer(raw), start=1):
        if count > MAX_CONTAINERS:
            raise UnreadableMessage(f"more than {MAX_CONTAINERS} MIME containers to parse")
    try:
        msg = message_from_bytes(raw, _ParsedOnce, policy=policy.default)
    except RecursionError as err:
        # The stdlib parser recurses once per nested multipart: 1,000 of them (58 KB) exhaust
        # the stack (issue 12). No reply is built so; it is kept for a human to look at.
        raise UnreadableMessage("MIME parts nested too deeply to parse") from err
    assert isinstance(msg, EmailMessage)
    return msg


# What separates the words of an address header: its addr-spec is a word with one "@".
_ADDRESS_DELIMITERS = re.compile(r'[\s<>()\[\],;:"\\]+')


def sender_of(msg: EmailMessage) -> str:
    """The From address (lower-cased domain and local part: answers and limits key on it)."""
    simple = simple_address(msg, "From")
    if simple is not None:
        return simple.lower()
    value = header_text(msg, "From")
    try:
        return parseaddr(value)[1].strip().lower()
    except RecursionError:
        # parseaddr recurses once per "(": a From of 500 of them exhausts the stack (issue
        # 12). The raw header is searched for an address instead; none is no sender.
        return _address_in(value)


def _address_in(value: str) -> str:
    """The first word of `value` that looks like an address, lower-cased, or ""."""
    words = _ADDRESS_DELIMITERS.split(value)  # linear: no backtracking on a long word
    found = next((w for w in words if w.count("@") == 1 and w[0] != "@" and w[-1] != "@"), "")
    return found.lower()


_GLIMPSE_BYTES = 65536  # headers beyond this are not looked at
_GLIMPSE_TEXT = 200  # characters kept of each value


def glimpse(raw: bytes) -> tuple[str, str, str]:
    """Sender, Subject and Message-ID as written, of a message the reader failed on.

    No parser is involved (the parser may be what failed): the header block is split into
    lines, unfolded, and the first of each header taken; "" for what is not there.
    """
    head = re.split(rb"\r?\n\r?\n", raw[:_GLIMPSE_BYTES], maxsplit=1)[0]
    text = re.sub(r"\r?\n[ \t]+", " ", head.decode("utf-8", "replace"))
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            found.setdefault(name.strip().lower(), value.strip())
    return (_address_in(found.get("from", "")), found.get("subject", "")[:_GLIMPSE_TEXT],
            found.get("message-id", "")[:_GLIMPSE_TEXT])


def thread_ids(msg: EmailMessage) -> tuple[str, ...]:
    """Message-IDs this message answers: In-Reply-To first, then References newest first."""
    ids = _MSGID.findall(header_text(msg, "In-Reply-To"))
    ids += reversed(_MSGID.findall(header_text(msg, "References")))
    return tuple(dict.fromkeys(ids))


def reply_subject(subject: str) -> str:
    """`Re: ` + the subject without its reply prefixes: never `Re: Re:`."""
    stripped = _REPLY_PREFIX.sub("", subject).strip()
    return f"Re: {stripped}" if stripped else "Re: rejestracja"


def merge_values(previous: Mapping[str, str] | None, new: Mapping[str, str]) -> dict[str, str]:
    """An earlier incomplete form completed by a later reply: new non-empty values win."""
    merged = {k: v for k, v in (previous or {}).items() if v}
    merged.update({k: v for k, v in new.items() if v})
    return merged


PreviousLookup = Callable[[str, tuple[str, ...]], Mapping[str, str] | None]
InviteeLookup = Callable[[str, tuple[str, ...]], Invitee | None]
EARLIER = "earlier"  # Registrant.sources: a value of the earlier form this reply completed


def understand(raw: bytes, *, received: datetime, events: Sequence[Event],
               own_addresses: Collection[str] = (),
               previous: PreviousLookup | None = None, invitee: InviteeLookup | None = None,
               authserv_id: str = "") -> Reading:
    """Read one message.

    `previous(sender, thread_ids)` returns an incomplete form from the same thread or sender
    that this reply may complete; `invitee(sender, thread_ids)` the invited contact it comes
    from (the caller looks both up in its state; this stays pure).
    """
    reading = read(raw, received=received, events=events, own_addresses=own_addresses,
                   authserv_id=authserv_id)
    return complete(complete_from_contact(reading, invitee, events), previous, events)


def read(raw: bytes, *, received: datetime, events: Sequence[Event],
         own_addresses: Collection[str] = (), authserv_id: str = "") -> Reading:
    """Everything `understand` does that needs no state: a form is validated as written.

    This is the costly part (parsing, HTML, quoted history, classification); it may run in
    another process (mailer.reading.workers), and `complete` then adds what the state knows.
    """
    msg = parse_bytes(raw)
    sender = sender_of(msg)
    automated = is_automated(msg)
    # Machine-made mail is never a registration (classify): its prose is not worth reading.
    reply, drafts = read_message(msg, prose=automated is None)
    # A signature alone is no written form: an out-of-office signed by its owner stays automatic.
    written = any(d.source(k) != "signature" for d in drafts for k in d.values)
    classification = classify(msg, reply.own, has_form=bool(drafts),
                              own_addresses=own_addresses, automated=automated,
                              written_form=written, events=events,
                              chosen_events=any(d.values.get("event") for d in drafts
                                                if not d.from_quoted))
    base = Reading(
        key=message_key(raw), received=received, sender=sender,
        subject=header_text(msg, "Subject"), message_id=header_text(msg, "Message-ID").strip(),
        refs=thread_ids(msg), classification=classification, automated=automated,
        forged=dmarc_failure(msg, authserv_id), own_text=reply.own, drafts=tuple(drafts),
        quoted_text=reply.quoted,
        authenticated=dmarc_pass(msg, authserv_id), sender_valid=sender_is_valid(sender),
    )
    if classification.kind is not Kind.REGISTRATION:
        return base
    return _registration(base, [dict(d.values) for d in drafts], events,
                         [d.sources for d in drafts])


def complete(reading: Reading, previous: PreviousLookup | None,
             events: Sequence[Event]) -> Reading:
    """A reply with one form completes the incomplete form `previous` finds for it: the
    merged values are validated and decided again."""
    if reading.kind is not Kind.REGISTRATION or previous is None or len(reading.drafts) != 1:
        return reading
    earlier = previous(reading.sender, reading.refs)
    if not earlier:
        return reading
    draft = reading.drafts[0]
    # What the writer wrote wins over the earlier form, the earlier form over the contact list.
    listed = {k: v for k, v in draft.values.items() if draft.source(k) == CONTACT}
    written = {k: v for k, v in draft.values.items() if draft.source(k) != CONTACT}
    merged = merge_values(merge_values(listed, earlier), written)
    sources = {k: draft.source(k) if draft.values.get(k) == v else EARLIER
               for k, v in merged.items()}
    return replace(_registration(reading, [merged], events, [sources]),
                   merged_from=tuple(earlier))


def complete_from_contact(reading: Reading, invitee: InviteeLookup | None,
                          events: Sequence[Event]) -> Reading:
    """A reply from an invited contact completed from the contact list, as a clerk would
    (issue 13): what the reader found is kept, the name, position and city missing come from
    the contact's row, the e-mail from the sender. A reply that only says it registers
    ("Zgłaszam się na warsztat"), read as `other` for want of anyone named, becomes a
    registration of the contact. Machine-made or forged mail is never completed."""
    if invitee is None or reading.automated or reading.forged:
        return reading
    drafts = reading.drafts
    if reading.kind is Kind.OTHER and reading.classification.reason.code is Code.NO_FORM:
        said = stated_intent(reading.own_text)
        if said is None:
            return reading
        drafts = (Draft(values={"event": said}, sources={"event": SENTENCE}),)
    elif reading.kind is not Kind.REGISTRATION or not drafts:
        return reading
    contact = invitee(reading.sender, reading.refs)
    if contact is None:
        return reading
    if len(drafts) == 1 and not drafts[0].values.get("event", "").strip() and (
            said := stated_intent(reading.own_text)) and match_events(said, events)[0]:
        # The form's event left out, the sentence names it: "Zgłaszam udział … w PIM."
        drafts = (replace(drafts[0], values={**drafts[0].values, "event": said},
                          sources={**drafts[0].sources, "event": SENTENCE}),)
    filled = [fill_values(d.values, d.sources, contact, sender=reading.sender,
                          identity=len(drafts) == 1) for d in drafts]
    new = tuple(replace(d, values=v, sources=s)
                for d, (v, s) in zip(drafts, filled, strict=True))
    if new == reading.drafts:
        return reading
    if reading.kind is not Kind.REGISTRATION:
        reading = replace(reading, classification=Classification(
            Kind.REGISTRATION, Reason.of(Code.CONTACT_INTENT, by=contact.by)))
    return _registration(replace(reading, drafts=new), [v for v, _ in filled], events,
                         [s for _, s in filled])


def _registration(reading: Reading, values: Sequence[Mapping[str, str]],
                  events: Sequence[Event], sources: Sequence[Mapping[str, str]]) -> Reading:
    registrants = tuple(
        replace(validate_draft(v, sender=reading.sender, events=events),
                sources=tuple((k, s.get(k, FORM)) for k in FIELDS if v.get(k, "").strip()))
        for v, s in zip(values, sources, strict=True))
    decision = decide_registration(registrants, reading.received, events)
    return replace(reading, registrants=registrants, decision=decision)


def answer_template(reading: Reading) -> Answer | None:
    """The answer this kind of message calls for, before limits and loops are considered."""
    if reading.kind is Kind.REGISTRATION and reading.decision is not None:
        return reading.decision.answer
    if reading.kind is Kind.UNSUBSCRIBE:
        return Answer.UNSUBSCRIBED
    if reading.kind is Kind.CANCELLATION:
        return Answer.CANCELLED
    return None


def registrant_json(registrant: Registrant, statuses: Mapping[str, Any]) -> dict[str, Any]:
    """A registrant as JSON: name, position, city, email, phone, events: id → status."""
    return {
        "name": registrant.name, "position": registrant.position, "city": registrant.city,
        "email": registrant.email, "phone": registrant.phone,
        "events": {event_id: str(statuses.get(event_id, "incomplete"))
                   for event_id in registrant.events},
        "sources": dict(registrant.sources),  # field → where its value came from (issue 13)
    }


def reading_json(reading: Reading, answer: Answer | None) -> dict[str, Any]:
    """`mailer inspect --json`: what was read of one message and the answer it gets."""
    statuses: Sequence[Mapping[str, Any]] = (
        reading.decision.statuses if reading.decision else [{} for _ in reading.registrants])
    errors = [{"field": p.field, "message": p.message}
              for r in reading.registrants for p in (*r.problems, *r.warnings)]
    return {
        "kind": str(reading.kind),
        "sender": reading.sender,
        "received": reading.received.isoformat(),
        "registrants": [registrant_json(r, s) for r, s in zip(reading.registrants, statuses,
                                                               strict=True)],
        "errors": errors,
        "bounced": list(reading.classification.bounced),
        # The events a cancellation withdraws from (issue 13: one of two, or all).
        "cancelled": list(reading.classification.cancelled),
        "answer": str(answer) if answer else None,
    }


STORED_TEXT = 100_000  # characters of own text and of quoted history kept for staff
STORED_DRAFTS = 50  # forms kept for staff (the reader reads up to parse.MAX_FORMS)


def stored_reading(reading: Reading) -> bytes:
    """What staff see of a message (the web view), kept beside its .eml when it is read: the
    page shows it and never reads the raw message again (issue 12). JSON, UTF-8."""
    return json.dumps({
        "own": reading.own_text[:STORED_TEXT], "quoted": reading.quoted_text[:STORED_TEXT],
        "drafts": [dict(d.values) for d in reading.drafts[:STORED_DRAFTS]],
        "sources": [{k: d.source(k) for k in d.values} for d in reading.drafts[:STORED_DRAFTS]],
        "forms": len(reading.drafts), "from_quoted": any(d.from_quoted for d in reading.drafts),
    }, ensure_ascii=False).encode()
