"""Pure: a message → bounce, auto-reply, unsubscribe, cancellation, registration or other."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import default as default_policy
from email.utils import collapse_rfc2231_value
from enum import StrEnum
from types import EllipsisType

from flufl.bounce import all_failures

from mailer.reading.headers import first_address, header_text
from mailer.reading.textfold import FoldTable, strip_marks
from mailer.reasons import Code, Reason


class Kind(StrEnum):
    """What an incoming message is, which decides what the service does with it."""

    REGISTRATION = "registration"
    CANCELLATION = "cancellation"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    OTHER = "other"


@dataclass(frozen=True)
class Classification:
    """A kind, the reason for it, and for bounces the failed addresses."""

    kind: Kind
    reason: Reason
    bounced: tuple[str, ...] = ()
    temporary: tuple[str, ...] = ()


# RFC 3464 reports; RFC 6533 adds the internationalised variant.
_DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_DSN_PART_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})

# Local parts of senders that are never a person. MAILER-DAEMON and postmaster (RFC 5321 §4.5.1)
# send bounces; the no-reply family sends notifications nobody reads answers to.
_BOUNCE_SENDER = re.compile(r"^(?:mailer-daemon|postmaster)$")
_ROBOT_SENDER = re.compile(
    r"^(?:mailer-daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply)(?:[-+._].*)?$"
)

# Subjects are folded (lower case, no diacritics) and matched at the start only, after tags such
# as "[EXTERNAL]": a person answering *about* an auto-reply writes "Re: …", which must not match.
_TAGS = r"^(?:\[[^\]]*\]\s*)*"
_BOUNCE_SUBJECT = re.compile(
    _TAGS + r"(?:undelivered mail|undeliverable|undelivered message|delivery status notification"
    r"|returned mail|mail delivery failed|delivery failure|failure notice|delayed mail"
    r"|warning: could not send|niedostarczona wiadomosc|niedostarczalne|nie mozna dostarczyc"
    r"|wiadomosc nie zostala dostarczona)"
)
_AUTO_SUBJECT = re.compile(
    _TAGS + r"(?:odpowiedz automatyczna|automatyczna odpowiedz|poza biurem|nieobecnosc"
    r"|out of (?:the )?office|automatic reply|auto[- ]?reply|autoresponse"
    r"|potwierdzenie wplywu|potwierdzenie odbioru|potwierdzenie odczytu"
    r"|urzedowe poswiadczenie odbioru"
    r"|read:|not read:|przeczytano:|nie przeczytano:|delivered:|dostarczono:)"
)

# Matched on the folded subject and own text. "wypisać"/"wypisanie" alone is too common ("wypisać
# zaświadczenie"), so it counts only with "mnie" or "z listy/newslettera/…".
_UNSUBSCRIBE = re.compile(
    r"\bwypisz(?:cie)?\b"
    r"|\bmnie wypisac\b|\bwypisac mnie\b"
    r"|\bwypis(?:ac|anie)\b(?: \S+){0,3}? z (?:listy|newslettera|bazy|mailingu|subskrypcji)"
    r"|\b(?:rezygnuje|rezygnacja) z (?:newslettera|subskrypcji|otrzymywania)"
    r"|\busuniecie (?:\S+ ){0,2}z (?:listy|bazy)"
    r"|\bnie chce (?:juz )?otrzymywac"
    r"|\bunsubscribe\b"
)
# "nie rezygnuję z udziału" ("I am not cancelling") must not read as a cancellation.
_CANCELLATION = re.compile(
    r"\b(?<!nie )z?rezygnuj(?:e|emy) z (?:udzialu|uczestnictwa|rejestracji|zgloszenia"
    r"|warsztat|wydarzen|konferencj|spotkani|webinar)"
    r"|\brezygnacja z (?:udzialu|uczestnictwa|rejestracji)"
    r"|\b(?:odwoluje|anuluje|wycofuje) (?:\S+ )?(?:zgloszenie|rejestracje|udzial)"
    r"|\bnie wezme(?: jednak)? udzialu"
    r"|\bcancel my (?:registration|participation)"
)
# A subject that is nothing but an unsubscribe word is what a mail client sends for a
# List-Unsubscribe mailto: URI (RFC 2369 §3.2; our campaign's is "?subject=wypisz").
_UNSUBSCRIBE_SUBJECTS = frozenset(
    {"wypisz", "wypisz mnie", "unsubscribe", "rezygnuje z newslettera", "rezygnacja z newslettera"}
)

# Headers that by their mere presence mark an automatic message. X-Auto-Response-Suppress is left
# out on purpose: it asks *us* not to auto-respond and Outlook puts it on messages people write too
# (osTicket #726, Redmine #19558, sisimai #491); Exchange auto-replies carry one of these instead.
_AUTO_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-AutoReply-From",
    "X-Mail-Autoreply",
    # Exchange: set on messages its inbox rules (out-of-office, auto-forward) or agents generated.
    "X-MS-Exchange-Inbox-Rules-Loop",
    "X-MS-Exchange-Generated-Message-Source",
)
# RFC 2076 §3.9; RFC 3834 §2 tells responders not to answer these.
_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


def classify(
    msg: EmailMessage, own_text: str, *, has_form: bool, own_addresses: Collection[str] = (),
    automated: Reason | EllipsisType | None = ...,
) -> Classification:
    """Classify a message; `own_text` is the reply without quoted history, `has_form` from parse.

    `automated`: `is_automated(msg)` when the caller has it already (it is not cheap).
    """
    bounce = _classify_report(msg)
    if bounce is not None:
        return bounce
    sender = first_address(msg, "From")
    if sender and sender in {address.lower() for address in own_addresses}:
        return Classification(Kind.AUTO_REPLY, Reason.of(Code.OWN_ADDRESS_LOOP, sender=sender))
    subject = header_text(msg, "Subject")
    # Checked before the automation markers: a client answering a List-Unsubscribe mailto: may mark
    # its message as automatic, and losing an unsubscribe is worse than one needless suppression.
    if _strip_punctuation(_fold(subject)) in _UNSUBSCRIBE_SUBJECTS:
        return Classification(Kind.UNSUBSCRIBE,
                              Reason.of(Code.UNSUBSCRIBE_SUBJECT, subject=subject.strip()))
    if isinstance(automated, EllipsisType):
        automated = is_automated(msg)
    if automated is not None:
        return Classification(Kind.AUTO_REPLY, automated)
    return _classify_text(_fold(subject) + "\n" + _fold(own_text), has_form=has_form)


def _classify_text(text: str, *, has_form: bool) -> Classification:
    """Read the person's words: unsubscribe, then cancellation, then the form."""
    # Unsubscribe outranks everything a person writes: "wypisz" with an empty form is not a
    # registration. A cancellation phrase outranks a filled form too (a form filled earlier often
    # rides along with "rezygnuję z udziału"): a wrong cancellation is answered, so the person can
    # correct it, while confirming someone who said they will not come hides their message.
    if found := _UNSUBSCRIBE.search(text):
        return Classification(Kind.UNSUBSCRIBE,
                              Reason.of(Code.UNSUBSCRIBE_PHRASE, phrase=found.group(0)))
    if found := _CANCELLATION.search(text):
        return Classification(Kind.CANCELLATION,
                              Reason.of(Code.CANCELLATION_PHRASE, phrase=found.group(0)))
    if has_form:
        return Classification(Kind.REGISTRATION, Reason.of(Code.FORM))
    return Classification(Kind.OTHER, Reason.of(Code.NO_FORM))


def is_automated(msg: EmailMessage) -> Reason | None:
    """Return why the message was sent by a machine (so must never be answered), or None."""
    for check in _AUTOMATION_CHECKS:
        reason = check(msg)
        if reason is not None:
            return reason
    return None


def bounce_recipients(msg: EmailMessage) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (permanently failed, only temporarily failed) recipients, lower-cased and sorted."""
    permanent, temporary, _delivered = _dsn_outcomes(msg)
    if not permanent and not temporary:
        permanent, temporary = _flufl_failures(msg)
    return tuple(sorted(permanent)), tuple(sorted(temporary - permanent))


# --- bounces -----------------------------------------------------------------------------------


def _classify_report(msg: EmailMessage) -> Classification | None:
    """Return a bounce (or a success-only delivery report) classification, or None."""
    if _report_type(msg) in _DSN_REPORT_TYPES:
        permanent, temporary, delivered = _dsn_outcomes(msg)
        if delivered and not permanent and not temporary:
            # A delivery receipt ("Action: delivered/relayed"): a machine saying all went well.
            return Classification(Kind.AUTO_REPLY, Reason.of(Code.DELIVERY_REPORT))
        bounced, delayed = bounce_recipients(msg)
        reason = Reason.of(Code.DSN if bounced or not delayed else Code.DSN_DELAYED)
        return Classification(Kind.BOUNCE, reason, bounced, delayed)
    hint = _bounce_hint(msg)
    bounced, delayed = bounce_recipients(msg) if hint or _has_null_return_path(msg) else ((), ())
    if hint is not None:
        return Classification(Kind.BOUNCE, hint, bounced, delayed)
    if bounced or delayed:
        # A null reverse-path alone is also what RFC 3834 §3.3 asks auto-replies to use, so it
        # makes a bounce only when a bounce format was actually recognised in the body.
        reason = Reason.of(Code.BOUNCE_NULL_RETURN_PATH)
        return Classification(Kind.BOUNCE, reason, bounced, delayed)
    return None


def _bounce_hint(msg: Message) -> Reason | None:
    """Return why a message that is no RFC 3464 DSN still looks like a bounce, or None."""
    sender = first_address(msg, "From")
    if _BOUNCE_SENDER.match(sender.partition("@")[0]):
        return Reason.of(Code.BOUNCE_SENDER, sender=sender)
    subject = header_text(msg, "Subject")
    if _BOUNCE_SUBJECT.match(_fold(subject)):
        return Reason.of(Code.BOUNCE_SUBJECT, subject=subject.strip()[:80])
    if "X-Failed-Recipients" in msg:  # Exim, Gmail
        return Reason.of(Code.BOUNCE_FAILED_RECIPIENTS)
    return None


def _dsn_outcomes(msg: Message) -> tuple[set[str], set[str], set[str]]:
    """Read every per-recipient block of the DSN parts: (permanent, temporary, delivered)."""
    outcomes: dict[str, set[str]] = {"permanent": set(), "temporary": set(), "delivered": set()}
    try:
        parts = [part for part in msg.walk() if part.get_content_type() in _DSN_PART_TYPES]
        for part in parts:
            for block in _status_blocks(part):
                address, outcome = _recipient_outcome(block)
                if address and outcome:
                    outcomes[outcome].add(address)
    except Exception:  # a mangled report must not stop the inbox; flufl gets a go
        pass
    return outcomes["permanent"], outcomes["temporary"], outcomes["delivered"]


def _status_blocks(part: Message) -> list[Message]:
    """Return the header blocks of a message/delivery-status part (RFC 3464 §2.1)."""
    # The stdlib parser splits message/delivery-status into blocks itself. It parses
    # message/global-delivery-status like message/rfc822: first block as headers, the per-recipient
    # blocks as its body. (A base64-encoded part is not decoded first; flufl.bounce gets a go.)
    payload = part.get_payload()
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
    chunks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [parser.parsestr(chunk.strip("\n")) for chunk in chunks if chunk.strip()]


def _recipient_outcome(block: Message) -> tuple[str, str | None]:
    """Return a per-recipient block's address and "permanent", "temporary", "delivered" or None."""
    # Original-Recipient is the address we gave (before aliasing or forwarding), i.e. the one on
    # our list; Final-Recipient is mandatory but may be a rewritten one (RFC 3464 §2.3.1–2).
    address = _dsn_address(header_text(block, "Original-Recipient")) or _dsn_address(
        header_text(block, "Final-Recipient")
    )
    action = header_text(block, "Action").strip().lower()
    status = header_text(block, "Status").strip()
    if action.startswith(("delivered", "relayed", "expanded")):
        return address, "delivered"
    # A 4.x.x status is a persistent *transient* failure (RFC 3463 §3.2): even when the MTA gave
    # up ("failed", 4.4.7 expired) the address may work next time, so it is not suppressed.
    if action.startswith("delayed") or status.startswith("4."):
        return address, "temporary"
    # "error" is OpenSMTPD's non-compliant spelling of "failed"; no Action: trust a 5.x.x Status.
    if action.startswith(("failed", "error")) or status.startswith("5."):
        return address, "permanent"
    return address, None


def _dsn_address(value: str) -> str:
    """Return the address of an "rfc822; user@host" field (or utf-8, RFC 6533), or ""."""
    address_type, separator, address = value.partition(";")
    if not separator:  # seen in the wild: a bare "<user@host>" without an address type
        address_type, address = "rfc822", value
    if address_type.strip().lower() not in {"rfc822", "utf-8"}:
        return ""
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else ""


def _flufl_failures(msg: Message) -> tuple[set[str], set[str]]:
    """Ask flufl.bounce's detectors for (permanent, temporary) failures of a non-standard bounce."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # its heuristics re-raise whatever a detector hits
        return set(), set()
    return _decode_addresses(permanent), _decode_addresses(temporary)


def _decode_addresses(addresses: Iterable[bytes]) -> set[str]:
    """Turn flufl.bounce's byte addresses into lower-cased strings, dropping non-addresses."""
    decoded = (raw.decode("ascii", "replace").strip().strip("<>").lower() for raw in addresses)
    return {address for address in decoded if "@" in address}


# --- automation markers ------------------------------------------------------------------------


def _auto_submitted(msg: Message) -> Reason | None:
    """RFC 3834 §5: any Auto-Submitted value but "no" marks an automatic message."""
    value = header_text(msg, "Auto-Submitted").partition(";")[0].strip().lower()
    return Reason.of(Code.AUTO_SUBMITTED, value=value) if value and value != "no" else None


def _report(msg: Message) -> Reason | None:
    """Every multipart/report (RFC 6522) is machine-made; MDNs are read receipts (RFC 8098)."""
    report_type = _report_type(msg)
    if report_type == "disposition-notification":
        return Reason.of(Code.READ_RECEIPT)
    return Reason.of(Code.REPORT, report_type=report_type) if report_type else None


def _auto_header(msg: Message) -> Reason | None:
    """X-Autoreply and kin, and Exchange's markers of rule-generated messages."""
    for name in _AUTO_HEADERS:
        if name in msg and header_text(msg, name).strip().lower() not in {"no", "false", "0"}:
            return Reason.of(Code.AUTO_HEADER, header=name)
    return None


def _precedence(msg: Message) -> Reason | None:
    """Precedence: bulk, junk, list or auto_reply (RFC 2076 §3.9, RFC 3834 §2)."""
    value = header_text(msg, "Precedence").strip().lower()
    return Reason.of(Code.PRECEDENCE, value=value) if value in _AUTO_PRECEDENCE else None


def _list_header(msg: Message) -> Reason | None:
    """Mail from a list (RFC 2919 List-Id) or a newsletter (RFC 2369 List-Unsubscribe)."""
    for name in ("List-Id", "List-Unsubscribe"):
        if name in msg:
            return Reason.of(Code.LIST_HEADER, header=name)
    return None


def _null_return_path(msg: Message) -> Reason | None:
    """A null reverse-path marks a notification (RFC 5321 §4.5.5, RFC 3834 §3.3)."""
    return Reason.of(Code.NULL_RETURN_PATH) if _has_null_return_path(msg) else None


def _robot_sender(msg: Message) -> Reason | None:
    """MAILER-DAEMON, postmaster, noreply, do-not-reply and the like."""
    sender = first_address(msg, "From")
    if _ROBOT_SENDER.match(sender.partition("@")[0]):
        return Reason.of(Code.ROBOT_SENDER, sender=sender)
    return None


def _auto_subject(msg: Message) -> Reason | None:
    """Out-of-office, receipt and read-receipt subjects, in Polish and English."""
    subject = header_text(msg, "Subject")
    if _AUTO_SUBJECT.match(_fold(subject)):
        return Reason.of(Code.AUTO_SUBJECT, subject=subject.strip()[:80])
    return None


# Strongest evidence first, so the reason shown to staff is the most telling one.
_AUTOMATION_CHECKS: tuple[Callable[[Message], Reason | None], ...] = (
    _auto_submitted,
    _report,
    _auto_header,
    _precedence,
    _list_header,
    _null_return_path,
    _robot_sender,
    _auto_subject,
)


# --- text folding ------------------------------------------------------------------------------


def _has_null_return_path(msg: Message) -> bool:
    """Whether the delivering MTA recorded a null reverse-path ("Return-Path: <>")."""
    return "".join(header_text(msg, "Return-Path").split()) == "<>"


def _report_type(msg: Message) -> str:
    """Return the report-type of a multipart/report (RFC 6522), lower-cased, or ""."""
    try:
        if msg.get_content_type() != "multipart/report":
            return ""
        value = msg.get_param("report-type")
    except Exception:  # a malformed Content-Type is simply not a report
        return ""
    return collapse_rfc2231_value(value).strip().lower() if value else ""


_FOLDED = FoldTable(lambda char: strip_marks(char).casefold())


def _fold(text: str) -> str:
    """Lower-case, strip diacritics (ł has no decomposition) and collapse whitespace."""
    return " ".join(text.translate(_FOLDED).split())


def _strip_punctuation(text: str) -> str:
    """Drop punctuation around words ("Wypisz!" → "wypisz")."""
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())
