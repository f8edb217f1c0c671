"""Pure: what a bounce or complaint returns of the message it is about: ids, envelope, recipient.

Anyone can write a bounce (issue 12): a notice suppresses an address only when it refers to a
message we sent to that address — its Message-ID in the returned part, or our envelope sender
there. This module finds those references; the state (mailer.effects) judges them.
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.reading.bounces import addresses_in, may_have_failed
from mailer.reading.headers import header_text
from mailer.reading.notice import parts_of, returned_text

_MSGID = re.compile(r"<[^<>\s]{1,250}@[^<>\s]{1,250}>")
# Header lines of the returned copy that name our message or our envelope (RFC 5322, RFC 3464
# §2.2.5 X-Postfix-Sender and kin), as fields of a part or as text pasted into the notice.
_ID_LINE = re.compile(r"^(?:message-id|resent-message-id|x-original-message-id)[ \t]*:[ \t]*"
                      r"([^\n]{0,500})", re.IGNORECASE | re.MULTILINE)
_SENDER_LINE = re.compile(r"^(?:return-path|from|sender|x-postfix-sender|original-envelope-id"
                          r"|x-envelope-from|envelope-from|reverse-path)[ \t]*:[ \t]*"
                          r"([^\n]{0,500})", re.IGNORECASE | re.MULTILINE)
_FEEDBACK = frozenset({"message/feedback-report"})


def returned_ids(msg: Message, returned: str | None = None) -> tuple[str, ...]:
    """Message-IDs the notice refers to: its In-Reply-To/References, the returned copy's ids.
    `returned`: `returned_text(msg)` when the caller has it."""
    own = _ids_in(header_text(msg, "Message-ID"))
    ids = _ids_in(header_text(msg, "In-Reply-To")) + _ids_in(header_text(msg, "References"))
    returned = returned_text(msg) if returned is None else returned
    ids += [i for line in _ID_LINE.findall(returned) for i in _ids_in(line)]
    return tuple(i for i in dict.fromkeys(ids) if i not in own)


def returned_senders(msg: Message, returned: str | None = None) -> tuple[str, ...]:
    """Addresses the returned copy (or the report's envelope fields) gives as its sender."""
    returned = returned_text(msg) if returned is None else returned
    text = returned + "\n" + _status_text(msg)
    found = [a for line in _SENDER_LINE.findall(text) for a in addresses_in(line)]
    return tuple(dict.fromkeys(found))


def id_addresses(msg: Message, refs: tuple[str, ...]) -> frozenset[str]:
    """Every Message-ID of the notice (its own, `refs` it returns) as an address-like string,
    lower-cased: never a failed recipient (`<1234.abc@mx.example.com>` reads like one)."""
    ids = refs + tuple(_ids_in(header_text(msg, "Message-ID")))
    return frozenset(i.strip("<>").lower() for i in ids)


def complaint_recipient(msg: Message, excluded: frozenset[str], returned: str) -> str:
    """The address an ARF report (RFC 5965) complains from: Original-Rcpt-To, else the
    returned copy's To; "" when the provider redacted it."""
    for part in parts_of(msg):
        if part.get_content_type() in _FEEDBACK:
            fields = _fields(part)
            for address in addresses_in(fields.get("original-rcpt-to", "")):
                if may_have_failed(address, excluded):
                    return address
    for line in re.findall(r"^to[ \t]*:[ \t]*([^\n]{0,500})", returned,
                           re.IGNORECASE | re.MULTILINE):
        for address in addresses_in(line):
            if may_have_failed(address, excluded):
                return address
    return ""


def _ids_in(value: str) -> list[str]:
    return _MSGID.findall(value)


def _fields(part: Message) -> dict[str, str]:
    """A report part's fields (message/feedback-report is parsed like a message, or not)."""
    payload = part.get_payload()
    text = ""
    if isinstance(payload, list):
        text = "".join(f"{k}: {v}\n" for block in payload if isinstance(block, Message)
                       for k, v in block.raw_items())
    elif isinstance(payload, str):
        text = payload
    return {m.group(1).lower(): m.group(2).strip() for m in re.finditer(
        r"^([A-Za-z-]+)[ \t]*:[ \t]*([^\n]*)$", text.replace("\r", ""), re.MULTILINE)}


def _status_text(msg: Message) -> str:
    """The per-message fields of delivery-status parts (where X-Postfix-Sender lives)."""
    text = []
    for part in parts_of(msg):
        if part.get_content_type() in {"message/delivery-status",
                                       "message/global-delivery-status"}:
            text.append("".join(f"{k}: {v}\n" for k, v in _fields(part).items()))
    return "\n".join(text)
