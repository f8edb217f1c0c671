"""Pure: a message → bounce, auto-reply, unsubscribe, cancellation, registration or other."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value
from enum import StrEnum
from types import EllipsisType

from mailer.reading.bounces import Outcome
from mailer.reading.headers import first_address, header_text
from mailer.reading.reports import BounceReading, has_status_part, read_bounce, read_complaint
from mailer.reading.textfold import FoldTable, strip_marks
from mailer.reading.wording import (
    Intent,
    automatic_wording,
    cancelled_events,
    event_aliases,
    read_wording,
)
from mailer.reasons import Code, Reason
from mailer.settings import Event


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
    bounced: tuple[str, ...] = ()  # failed for good: suppressed (if the notice is ours)
    temporary: tuple[str, ...] = ()  # delayed, or given up on after retrying (`expired`)
    expired: tuple[str, ...] = ()  # of `temporary`: not delivered, the MTA stopped trying
    forwarded: tuple[tuple[str, str], ...] = ()  # (failed final address, the one we sent to)
    refs: tuple[str, ...] = ()  # Message-IDs the notice refers to (the returned copy's)
    senders: tuple[str, ...] = ()  # the returned copy's envelope sender and From
    cancelled: tuple[str, ...] = ()  # a cancellation's event ids (issue 13: one of two)


# RFC 3464 reports; RFC 6533 adds the internationalised variant.
_DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})

# Local parts of senders that are never a person. MAILER-DAEMON and postmaster (RFC 5321 §4.5.1)
# send bounces; the no-reply family sends notifications nobody reads answers to.
# MDaemon (Alt-N) sends its delivery failures from MDaemon@ its domain.
_BOUNCE_SENDER = re.compile(r"^(?:mailer-daemon|postmaster|mdaemon)$")
_ROBOT_SENDER = re.compile(
    r"^(?:mailer-daemon|postmaster|mdaemon|no[-_.]?reply|do[-_.]?not[-_.]?reply)(?:[-+._].*)?$"
)

# Subjects are folded (lower case, no diacritics) and matched at the start only, after tags such
# as "[EXTERNAL]": a person answering *about* an auto-reply writes "Re: …", which must not match.
_TAGS = r"^(?:\[[^\]]*\]\s*)*"
_BOUNCE_SUBJECT = re.compile(
    _TAGS + r"(?:undelivered mail|undeliverable|undelivered message|delivery status notification"
    r"|returned mail|mail delivery failed|failure notice|delayed mail"
    r"|warning: could not send|niedostarczona wiadomosc|niedostarczalne|nie mozna dostarczyc"
    r"|wiadomosc nie zostala dostarczona|wiadomosc nie mogla zostac dostarczona"
    r"|nie dostarczono|niedostarczon|delivery status$|message delivery has failed"
    r"|nondeliverable|non-delivery|mail could not be delivered|message not delivered"
    r"|mail system error|delivery notification: delivery has failed|unzustellbar|non remis"
    r"|returned to sender|delivery has failed|mail delivery subsystem"
    # MDaemon; many gateways; Dovecot/Pigeonhole's Sieve reject (RFC 5429)
    r"|(?:permanent |mail )?delivery failure|delivery final failure|automatically rejected mail)"
)
# A gateway that answers with the original subject and a verdict appended ("RE: Zaproszenie :
# non remis (delivery failed)"): only a separator or a bracket, then a bounce phrase, then at
# most a bracketed note, at the very end count.
_BOUNCE_SUFFIX = re.compile(r"\s(?:[:-]\s*|\()(?:non remis|undeliverable|undelivered"
                            r"|not delivered|delivery failed|niedostarczon\w*|nie dostarczono"
                            r"|unzustellbar)\W*(?:\([^()]{0,40}\)\W*)?$")
# "[AUTO GENERATED]", "[Auto-Reply]": a tag that says what the message is (the tags above are
# skipped as labels, so these are looked for first). Gateways put it on bounces and notices.
_AUTO_TAG = re.compile(r"^\[(?:auto[- ]?generated|auto[- ]?reply|autoreply|auto[- ]?response"
                       r"|automatic reply|odpowiedz automatyczna)\]")
_AUTO_SUBJECT = re.compile(
    _TAGS + r"(?:odpowiedz automatyczna|automatyczna odpowiedz|poza biurem|nieobecnosc"
    r"|out of (?:the )?office|automatic reply|auto[- ]?reply|autoresponse"
    r"|potwierdzenie wplywu|potwierdzenie odbioru|potwierdzenie odczytu"
    r"|urzedowe poswiadczenie odbioru"
    r"|read:|not read:|przeczytano:|nie przeczytano:|delivered:|dostarczono:)"
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
    automated: Reason | EllipsisType | None = ..., written_form: bool | None = None,
    chosen_events: bool = False, events: Sequence[Event] = (),
) -> Classification:
    """Classify a message; `own_text` is the reply without quoted history, `has_form` from parse.

    `automated`: `is_automated(msg)` when the caller has it already (it is not cheap).
    `written_form`: a form or a sentence registering someone (not only a signature): such a
    message is never automatic by its wording (default: `has_form`). `events`: the campaign's,
    to say which events a cancellation withdraws from. `chosen_events`: the own text chooses
    events (a form's or a sentence's): "zgłaszam X na PIM, w warsztacie nie weźmiemy udziału"
    registers, while "rezygnuję z udziału" withdraws even beside a form.
    """
    if isinstance(automated, EllipsisType):
        automated = is_automated(msg)
    bounce = _classify_report(msg, own_addresses, automated)
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
    if automated is not None:
        return Classification(Kind.AUTO_REPLY, automated)
    written = has_form if written_form is None else written_form
    return _classify_text(subject, own_text, has_form=has_form, written_form=written,
                          chosen_events=chosen_events, events=events)


def _classify_text(subject: str, own_text: str, *, has_form: bool, written_form: bool,
                   chosen_events: bool, events: Sequence[Event]) -> Classification:
    """Read the person's words: unsubscribe, then cancellation, automatic wording, the form."""
    # Unsubscribe outranks everything a person writes: "wypisz" with an empty form is not a
    # registration. A cancellation phrase outranks a filled form too (a form filled earlier often
    # rides along with "rezygnuję z udziału"): a wrong cancellation is answered, so the person can
    # correct it, while confirming someone who said they will not come hides their message.
    found = read_wording(subject, own_text, aliases=event_aliases(events))
    if found is not None and found.intent is Intent.ERASURE:
        return Classification(Kind.UNSUBSCRIBE, Reason.of(Code.ERASURE_PHRASE, phrase=found.phrase))
    if found is not None and found.intent is Intent.UNSUBSCRIBE:
        return Classification(Kind.UNSUBSCRIBE,
                              Reason.of(Code.UNSUBSCRIBE_PHRASE, phrase=found.phrase))
    if found is not None and not (found.declined and has_form and chosen_events):
        return Classification(Kind.CANCELLATION,
                              Reason.of(Code.CANCELLATION_PHRASE, phrase=found.phrase),
                              cancelled=cancelled_events(found, events))
    # Headers stripped by a gateway: a receipt or an out-of-office known by its words alone
    # (never when the message holds a form or names someone to register).
    if not written_form and (auto := automatic_wording(own_text)):
        return Classification(Kind.AUTO_REPLY, Reason.of(Code.AUTO_WORDING, phrase=auto.phrase))
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


def bounce_recipients(msg: EmailMessage, own_addresses: Collection[str] = (),
                      ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (permanently failed, only temporarily failed) recipients, lower-cased and sorted."""
    found = read_bounce(msg, own_addresses=own_addresses)
    return found.with_outcome(Outcome.PERMANENT), tuple(sorted(
        a for a, o in found.failures.items() if o is not Outcome.PERMANENT))


# --- bounces -----------------------------------------------------------------------------------


def _classify_report(msg: EmailMessage, own: Collection[str],
                     automated: Reason | None) -> Classification | None:
    """Return a bounce, complaint (or a success-only delivery report) classification, or None.

    `automated`: why the message is machine-made, if it is (`is_automated`)."""
    report_type = _report_type(msg)
    if report_type == "feedback-report":  # RFC 5965: someone pressed "this is spam"
        return _bounce(Reason.of(Code.COMPLAINT), read_complaint(msg, own_addresses=own))
    # A status part inside multipart/mixed (gateways, some sent "From: <>") is a report too.
    if report_type in _DSN_REPORT_TYPES or has_status_part(msg):
        return _status_report(msg, own)
    hint = _bounce_hint(msg)
    if hint is not None:
        return _bounce(hint, read_bounce(msg, own_addresses=own))
    return _weak_bounce(msg, own, automated)


def _weak_bounce(msg: EmailMessage, own: Collection[str],
                 automated: Reason | None) -> Classification | None:
    """A bounce by weaker signs: machine-made (a null reverse-path, Auto-Submitted, Precedence,
    a robot sender) or a gateway's "RE: <subject> : non remis". Auto-replies carry them too, so
    they make a bounce only when a bounce format is recognised in the body (issue 14: MDaemon,
    Dovecot's rejections, gateways' own templates), never by a lone address."""
    subject = _fold(header_text(msg, "Subject"))
    if automated is None and not _BOUNCE_SUFFIX.search(subject):
        return None
    # "Odpowiedź automatyczna:", "Out of Office:", "Potwierdzenie wpływu": the subject says
    # what it is, and no bounce says that; its body is not searched for a bounce format
    # (flufl.bounce's detectors took ≈ 4 ms of each out-of-office).
    if _AUTO_SUBJECT.match(subject) and not _AUTO_TAG.match(subject):
        return None
    found = read_bounce(msg, own_addresses=own)
    if found.failures and found.detector not in {"single-address", ""}:
        if _has_null_return_path(msg):
            return _bounce(Reason.of(Code.BOUNCE_NULL_RETURN_PATH), found)
        return _bounce(Reason.of(Code.BOUNCE_FORMAT, detector=found.detector), found)
    return None


def _status_report(msg: EmailMessage, own: Collection[str]) -> Classification:
    """An RFC 3464 report: a bounce, a delay, or a delivery receipt."""
    found = read_bounce(msg, own_addresses=own)
    if found.delivered and not found.failures:
        # A delivery receipt ("Action: delivered/relayed"): a machine saying all went well.
        return Classification(Kind.AUTO_REPLY, Reason.of(Code.DELIVERY_REPORT))
    permanent = found.with_outcome(Outcome.PERMANENT)
    code = Code.DSN if permanent or not found.failures else Code.DSN_DELAYED
    return _bounce(Reason.of(code), found)


def _bounce(reason: Reason, found: BounceReading) -> Classification:
    temporary = tuple(sorted(a for a, o in found.failures.items() if o is not Outcome.PERMANENT))
    return Classification(Kind.BOUNCE, reason, found.with_outcome(Outcome.PERMANENT), temporary,
                          found.with_outcome(Outcome.EXPIRED), found.forwarded, found.refs,
                          found.senders)


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
    """Out-of-office, receipt, read-receipt and bounce subjects, in Polish and English."""
    subject = header_text(msg, "Subject")
    folded = _fold(subject)
    if _AUTO_TAG.match(folded) or _AUTO_SUBJECT.match(folded) or _BOUNCE_SUBJECT.match(folded) \
            or _BOUNCE_SUFFIX.search(folded):
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
    """Whether the delivering MTA recorded a null reverse-path ("Return-Path: <>"; Postfix's
    pipe(8) hands a null sender on as MAILER-DAEMON, so Dovecot writes that)."""
    return "".join(header_text(msg, "Return-Path").split()).lower() in {"<>", "<mailer-daemon>"}


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
