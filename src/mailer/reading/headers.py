"""Pure: header access that never raises on a malformed header, and the sender's addresses."""

from __future__ import annotations

import functools
import re
from email.message import Message
from email.utils import getaddresses


def header_text(msg: Message, name: str) -> str:
    """Return a header's decoded value ("" when absent), never raising on a malformed one."""
    plain_ids = _PLAIN_IDS.get(name.lower())
    if plain_ids is not None:
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        text = "".join(_LINESEP.split(raw)) if isinstance(raw, str) else None
        if text is not None and plain_ids.fullmatch(text):
            return text  # what the parser would make of it, without its cost
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception:  # the stdlib header parser raises e.g. IndexError
        return _raw_header(msg, name)


# Message-IDs written plainly (`<dot-atom@dot-atom>`, lists of them separated by one space
# once unfolded) read the same parsed or not; Message-ID keeps only its first id when parsed.
_ID_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ID = rf"<{_ID_ATOM}(?:\.{_ID_ATOM})*@{_ID_ATOM}(?:\.{_ID_ATOM})*>"
_PLAIN_IDS = {"message-id": re.compile(_ID), "in-reply-to": re.compile(rf"{_ID}(?: {_ID})*"),
              "references": re.compile(rf"{_ID}(?: {_ID})*")}
_LINESEP = re.compile(r"\n|\r\n?")  # what the policy removes when it unfolds a header


def _raw_header(msg: Message, name: str) -> str:
    """Return a header's value as received (unfolded, not decoded), or ""."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            text = str(value)
            return re.sub(r"\r?\n[ \t]+", " ", text) if "\n" in text else text
    return ""


def first_address(msg: Message, name: str) -> str:
    """Return the first address of an address header, lower-cased, or ""."""
    simple = simple_address(msg, name)
    if simple is not None:
        return simple.lower()
    return _first_address(header_text(msg, name))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 atext; encoded-words are atoms too
_WORD = rf'(?:{_ATOM}|"[^"\\\r\n]*")'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+"
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?:{_WORD}(?:[ \t]+{_WORD})*)?[ \t]*<({_ADDR_SPEC})>|({_ADDR_SPEC}))[ \t]*")


def simple_address(msg: Message, name: str) -> str | None:
    """The address of a header holding one plain mailbox (`Name <a@b.c>`, `a@b.c`), else None.

    Such a header has one reading, so its address is taken as written: the stdlib's header
    parser, needed for anything less plain, costs more than the rest of reading a reply.
    """
    match = _SIMPLE_MAILBOX.fullmatch(_raw_header(msg, name))
    return None if match is None else match.group(1) or match.group(2)


@functools.lru_cache(maxsize=1024)  # asked for From three times per message
def _first_address(value: str) -> str:
    try:
        pairs = getaddresses([value])
        addresses = [address for _name, address in pairs if address]
    except Exception:  # getaddresses trips over some malformed lists
        return ""
    return addresses[0].lower() if addresses else ""


_AUTH_RESULT = re.compile(r"\bdmarc\s*=\s*(\w+)", re.IGNORECASE)


def dmarc_failure(msg: Message, authserv_id: str = "") -> str | None:
    """`dmarc=fail` in the Authentication-Results our own MX added (RFC 8601), or None.

    Only our MX's verdict counts: anyone can put such a header in a message. Our MX adds its
    header on top, so without a configured authserv-id the topmost one is taken; with one,
    the first header carrying that id.
    """
    found = _our_verdict(msg, authserv_id)
    if found and found[1] in ("fail", "reject", "quarantine"):
        return f"dmarc={found[1]} at {found[0]}"
    return None


def dmarc_pass(msg: Message, authserv_id: str) -> str | None:
    """`dmarc=pass` from our MX, named by its configured authserv-id, or None.

    Unlike a failure, a pass is never taken from the topmost header alone: where our MX adds
    none, the topmost is the sender's own, and a pass lets its answer go out unreviewed.
    """
    found = _our_verdict(msg, authserv_id) if authserv_id else None
    return f"dmarc=pass at {found[0]}" if found and found[1] == "pass" else None


def _our_verdict(msg: Message, authserv_id: str) -> tuple[str, str] | None:
    """(server, dmarc verdict) of our MX's Authentication-Results, or None."""
    try:
        headers = [str(h) for h in msg.get_all("Authentication-Results") or []]
    except Exception:  # a malformed header must not stop the reading
        return None
    for header in headers:
        server = header.split(";", 1)[0].strip().lower()
        if authserv_id and server != authserv_id.lower():
            continue
        verdict = _AUTH_RESULT.search(header)
        return (server, verdict.group(1).lower()) if verdict else None
    return None
