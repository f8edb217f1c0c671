"""Pure: a bounce's failed recipients — RFC 3464 status parts first, then each MTA's own text,
then flufl.bounce, then a notice's only address — and a complaint's (RFC 5965).

4xx vs 5xx (issue 14): a delay notice (Action: delayed, "will keep trying") suppresses nothing;
a notice that the MTA gave up after retrying a 4xx ("expired", "in the queue too long") is no
proof the address is dead either: it is listed as not delivered for a temporary reason, and
never suppressed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import default as default_policy

from flufl.bounce import all_failures

from mailer.reading.bounces import (
    Outcome,
    addresses_in,
    forwarded_pairs,
    may_have_failed,
    only_address,
    read_text_bounce,
)
from mailer.reading.headers import first_address, header_text
from mailer.reading.notice import notice_text, parts_of, returned_text
from mailer.reading.returned import (
    complaint_recipient,
    id_addresses,
    returned_ids,
    returned_senders,
)

# RFC 3464 status parts; RFC 6533 adds the internationalised variant.
STATUS_PART_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


@dataclass(frozen=True)
class BounceReading:
    """Each failed address with its outcome, and what the notice says about our message."""

    failures: dict[str, Outcome]
    delivered: frozenset[str] = frozenset()  # "Action: delivered/relayed": a receipt
    detector: str = ""  # "dsn", a text detector's name, "flufl"; "" when nothing was found
    forwarded: tuple[tuple[str, str], ...] = ()  # (final recipient, the address we sent to)
    refs: tuple[str, ...] = ()  # Message-IDs it refers to (the returned copy's)
    senders: tuple[str, ...] = ()  # the returned copy's envelope/From addresses

    def with_outcome(self, outcome: Outcome) -> tuple[str, ...]:
        return tuple(sorted(a for a, o in self.failures.items() if o is outcome))


def has_status_part(msg: Message) -> bool:
    """Whether a message carries an RFC 3464 status part anywhere (also in multipart/mixed)."""
    return any(part.get_content_type() in STATUS_PART_TYPES for part in parts_of(msg))


def read_bounce(msg: Message, *, own_addresses: Collection[str] = (),
                text_too: bool = True) -> BounceReading:
    """Read a notice's failed recipients; `text_too`: also its text when no status part says.

    Never a reporting robot (postmaster@, MAILER-DAEMON@), one of our addresses, the notice's
    sender, or a Message-ID that reads like an address (issue 14).
    """
    returned = returned_text(msg)
    refs = returned_ids(msg, returned)
    excluded = {a.lower() for a in own_addresses} | id_addresses(msg, refs)
    excluded.add(first_address(msg, "From"))
    failures, delivered, forwarded = _status_parts(msg)
    detector = "dsn" if failures or delivered else ""
    if not failures and not delivered and text_too:
        text = notice_text(msg)
        detector, failures = _text_failures(msg, text, excluded)
        forwarded = list(forwarded_pairs(text))
    failures = {a: o for a, o in failures.items() if may_have_failed(a, excluded)}
    return BounceReading(failures, frozenset(delivered), detector if failures else "",
                         tuple(forwarded), refs, returned_senders(msg, returned))


def read_complaint(msg: Message, *, own_addresses: Collection[str] = ()) -> BounceReading:
    """An ARF report: the complaining address (when not redacted) is to be suppressed."""
    returned = returned_text(msg)
    refs = returned_ids(msg, returned)
    excluded = frozenset({a.lower() for a in own_addresses} | id_addresses(msg, refs))
    address = complaint_recipient(msg, excluded, returned)
    failures = {address: Outcome.PERMANENT} if address else {}
    return BounceReading(failures, detector="arf", refs=refs,
                         senders=returned_senders(msg, returned))


def _text_failures(msg: Message, text: str, excluded: set[str]) -> tuple[str, dict[str, Outcome]]:
    """Each MTA's text, then flufl.bounce's detectors, then the notice's only address."""
    found = read_text_bounce(text, excluded=excluded)
    if found is not None:
        return found.detector, found.failures
    flufl = _flufl_failures(msg, excluded)
    if flufl:
        return "flufl", flufl
    found = only_address(text, excluded)
    return (found.detector, found.failures) if found else ("", {})


# --- RFC 3464 status parts ---------------------------------------------------------------------


def _status_parts(msg: Message) -> tuple[dict[str, Outcome], set[str], list[tuple[str, str]]]:
    """Every per-recipient block of the status parts: failures, delivered, forwarded pairs."""
    failures: dict[str, Outcome] = {}
    delivered: set[str] = set()
    forwarded: list[tuple[str, str]] = []
    try:
        for part in parts_of(msg):
            if part.get_content_type() not in STATUS_PART_TYPES:
                continue
            reporter = ""
            for block in _status_blocks(part):
                reporter = _mta_host(header_text(block, "Reporting-MTA")) or reporter
                final, original, outcome = _recipient_outcome(block)
                if not final or outcome is None:
                    continue
                if original and _internal(final, reporter):
                    final = original
                if outcome is _DELIVERED:
                    delivered.add(final)
                    continue
                failures[final] = Outcome(outcome)
                if original and original != final:
                    forwarded.append((final, original))
    except Exception:  # a mangled report must not stop the inbox; the text gets a go
        return {}, set(), []
    return failures, delivered, forwarded


def _status_blocks(part: Message) -> list[Message]:
    """Return the header blocks of a message/delivery-status part (RFC 3464 §2.1)."""
    # The stdlib parser splits message/delivery-status into blocks itself. It parses
    # message/global-delivery-status like message/rfc822: first block as headers, the per-recipient
    # blocks as its body. A part left as text (base64, a broken structure) is split here.
    payload = part.get_payload()
    if isinstance(payload, str):
        return _parse_blocks(notice_text(part))
    blocks: list[Message] = []
    for block in payload if isinstance(payload, list) else ():
        if not isinstance(block, Message):
            continue
        blocks.append(block)
        rest = block.get_payload()
        if isinstance(rest, str) and rest.strip():
            blocks.extend(_parse_blocks(rest))
    return blocks


def _parse_blocks(text: str) -> list[Message]:
    """Split text into blank-line separated header blocks and parse each."""
    parser = HeaderParser(policy=default_policy)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks = re.split(r"\n[ \t]*\n", text)
    return [parser.parsestr(chunk.strip("\n")) for chunk in chunks if chunk.strip()]


_DELIVERED = "delivered"  # "Action: delivered/relayed/expanded": no failure


def _recipient_outcome(block: Message) -> tuple[str, str, str | None]:
    """A per-recipient block: final recipient, original recipient, and what became of it."""
    # Final-Recipient is the address that failed (for a forwarded address, the last one);
    # Original-Recipient the one we gave, kept to match our delivery (RFC 3464 §2.3.1–2).
    original = _dsn_address(header_text(block, "Original-Recipient"))
    final = _dsn_address(header_text(block, "Final-Recipient")) or original
    action = header_text(block, "Action").strip().lower()
    status = header_text(block, "Status").strip()
    if action.startswith(("delivered", "relayed", "expanded")):
        return final, original, _DELIVERED
    if action.startswith("delayed"):
        return final, original, Outcome.DELAYED
    # A 4.x.x status is a persistent *transient* failure (RFC 3463 §3.2): even when the MTA gave
    # up ("failed", 4.4.7 expired) the address may work next time, so it is not suppressed.
    if status.startswith("4."):
        return final, original, Outcome.EXPIRED
    # "error" is OpenSMTPD's non-compliant spelling of "failed"; no Action: trust a 5.x.x Status.
    if action.startswith(("failed", "error")) or status.startswith("5."):
        return final, original, Outcome.PERMANENT
    return final, original, None


def _mta_host(value: str) -> str:
    """The host of a "dns; mx.example.org" field (Reporting-MTA, RFC 3464 §2.2.2), or ""."""
    return value.partition(";")[2].strip().split(" ")[0].strip("[]").lower()


def _internal(final: str, reporter: str) -> bool:
    """Whether a Final-Recipient is a name the reporting server made up for its own mailbox —
    a local form with no dot in its domain (Sun's `user@sims-ms-daemon`) or an address on the
    reporting host itself (PMDF's `user@mx.example.org`): nobody outside can send to it, the
    Original-Recipient is the address that failed (as Mailman and flufl.bounce read it)."""
    domain = final.rpartition("@")[2]
    return "." not in domain or (bool(reporter) and domain == reporter)


def _dsn_address(value: str) -> str:
    """Return the address of an "rfc822; user@host" field (or utf-8, RFC 6533), or ""."""
    address_type, separator, address = value.partition(";")
    if not separator:  # seen in the wild: a bare "<user@host>" without an address type
        address_type, address = "rfc822", value
    if address_type.strip().lower() not in {"rfc822", "utf-8", "x-unknown", "unknown"}:
        return ""
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else ""


# --- flufl.bounce ------------------------------------------------------------------------------


# flufl.bounce tries some 50 patterns on every line of every part: a real bounce has a few
# hundred lines, a hostile one with 100,000 takes it tens of seconds (issue 12).
FLUFL_MAX_LINES = 5_000


def _flufl_failures(msg: Message, excluded: Iterable[str]) -> dict[str, Outcome]:
    """flufl.bounce's detectors, for the formats it knows and ours do not."""
    lines = 0
    for part in parts_of(msg):
        payload = part.get_payload()
        lines += payload.count("\n") if isinstance(payload, str) else 0
    if lines > FLUFL_MAX_LINES:
        return {}
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # its heuristics re-raise whatever a detector hits
        return {}
    excluded = set(excluded)
    failures = {a: Outcome.DELAYED for a in _decoded(temporary)}
    failures.update({a: Outcome.PERMANENT for a in _decoded(permanent)})
    return {a: o for a, o in failures.items() if may_have_failed(a, excluded)}


def _decoded(addresses: Iterable[bytes]) -> list[str]:
    """flufl.bounce's byte strings as addresses, dropping what is none."""
    words = (raw.decode("ascii", "replace") for raw in addresses)
    return [found[0] for word in words if (found := addresses_in(word))]

