"""Why a message was classified so, not answered or put up for review: codes, and their texts.

The reader and the watcher record a `Reason` (a `Code` with parameters), never a sentence. The
English text (logs, the command line) and the Polish one (the clerk's web view) are two tables
keyed by the code, so a reworded sentence can never leave a clerk with English, and a new code
without both texts fails the tests. Parameters are what the message itself showed (a phrase,
a header's value, an address) and are shown as written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any


class Code(StrEnum):
    """Every reason the service records; the value is what the state stores."""

    # Classification: what the person wrote.
    FORM = "form"
    NO_FORM = "no_form"
    CONTACT_INTENT = "contact_intent"  # "Zgłaszam się" from an invited contact (issue 13)
    UNSUBSCRIBE_SUBJECT = "unsubscribe_subject"
    UNSUBSCRIBE_PHRASE = "unsubscribe_phrase"
    CANCELLATION_PHRASE = "cancellation_phrase"
    ERASURE_PHRASE = "erasure_phrase"  # an unsubscribe asking for erasure (RODO art. 17)
    OWN_ADDRESS_LOOP = "own_address_loop"
    # Classification: delivery reports and bounces.
    DELIVERY_REPORT = "delivery_report"
    DSN = "dsn"
    DSN_DELAYED = "dsn_delayed"
    BOUNCE_NULL_RETURN_PATH = "bounce_null_return_path"
    BOUNCE_SENDER = "bounce_sender"
    BOUNCE_SUBJECT = "bounce_subject"
    BOUNCE_FAILED_RECIPIENTS = "bounce_failed_recipients"
    BOUNCE_FORMAT = "bounce_format"  # an automatic message whose text is a known bounce format
    COMPLAINT = "complaint"  # an ARF feedback report (RFC 5965): suppressed like a bounce
    # Automation markers: the message was sent by a machine.
    AUTO_SUBMITTED = "auto_submitted"
    READ_RECEIPT = "read_receipt"
    REPORT = "report"
    AUTO_HEADER = "auto_header"
    PRECEDENCE = "precedence"
    LIST_HEADER = "list_header"
    NULL_RETURN_PATH = "null_return_path"
    ROBOT_SENDER = "robot_sender"
    AUTO_SUBJECT = "auto_subject"
    AUTO_WORDING = "auto_wording"  # known by its words only: a receipt, out-of-office (issue 13)
    # The decision on a registration.
    NO_FORM_FOUND = "no_form_found"
    SOME_INCOMPLETE = "some_incomplete"
    CONFIRMED = "confirmed"
    CONFIRMED_SOME_LATE = "confirmed_some_late"
    ALL_LATE = "all_late"
    NO_EVENT = "no_event"
    # Why no answer is sent.
    NO_SENDER = "no_sender"
    OWN_ADDRESS = "own_address"
    SENDER_INVALID = "sender_invalid"
    AUTOMATED = "automated"
    NOT_AUTHENTICATED = "not_authenticated"
    BACKLOG = "backlog"
    DAILY_LIMIT = "daily_limit"
    NOTHING_STORED = "nothing_stored"  # every form was held back or over a limit (issue 12)
    # Why a human should look at a message.
    OVERSIZE = "oversize"
    BACKLOG_REVIEW = "backlog_review"
    FORGED = "forged"
    TOO_MANY_REGISTRANTS = "too_many_registrants"
    NOT_UNDERSTOOD = "not_understood"
    ERASURE_REQUEST = "erasure_request"  # RODO art. 17: staff run `mailer forget`
    BY_HAND = "by_hand"
    READ_FAILED = "read_failed"  # the reader raised on it (issue 12): kept raw
    # A bounce anyone could have written (issue 12): suppressed only for an address we sent
    # to, when it refers to our message to it.
    BOUNCE_NOT_SENT = "bounce_not_sent"
    BOUNCE_NOT_OURS = "bounce_not_ours"
    ANSWER_HELD = "answer_held"  # a sender not shown to be who they claim (issue 12)
    FOREIGN_CHANGE = "foreign_change"  # a form changing another person's registration
    READ_TIMEOUT = "read_timeout"  # reading it took longer than its budget (issue 12): kept raw
    # Why an answer was not sent.
    ANSWER_FAILED = "answer_failed"  # it could not be built or handed over (issue 12)
    # A sentence an earlier release stored that no code's text matches: shown as it was.
    LEGACY = "legacy"


# For the logs, the command line and the state's readers who read English.
ENGLISH: Mapping[Code, str] = {
    Code.FORM: "filled registration form",
    Code.NO_FORM: "no form and no known phrase",
    Code.CONTACT_INTENT: "says it registers; the invited contact's data from the contact list",
    Code.UNSUBSCRIBE_SUBJECT: 'unsubscribe subject "{subject}"',
    Code.UNSUBSCRIBE_PHRASE: 'unsubscribe phrase "{phrase}"',
    Code.CANCELLATION_PHRASE: 'cancellation phrase "{phrase}"',
    Code.ERASURE_PHRASE: 'erasure request "{phrase}"',
    Code.OWN_ADDRESS_LOOP: "sent from our own address {sender} (loop)",
    Code.DELIVERY_REPORT: "delivery report (RFC 3464) without failures",
    Code.DSN: "DSN (RFC 3464)",
    Code.DSN_DELAYED: "DSN (RFC 3464): delayed",
    Code.BOUNCE_NULL_RETURN_PATH: "non-standard bounce with null Return-Path",
    Code.BOUNCE_SENDER: "non-standard bounce from {sender}",
    Code.BOUNCE_SUBJECT: 'non-standard bounce, subject "{subject}"',
    Code.BOUNCE_FAILED_RECIPIENTS: "non-standard bounce with X-Failed-Recipients",
    Code.BOUNCE_FORMAT: "automatic message in a bounce format ({detector})",
    Code.COMPLAINT: "spam complaint (ARF feedback report, RFC 5965)",
    Code.AUTO_SUBMITTED: "Auto-Submitted: {value}",
    Code.READ_RECEIPT: "read receipt (MDN, RFC 8098)",
    Code.REPORT: "report (RFC 6522): {report_type}",
    Code.AUTO_HEADER: "{header} header",
    Code.PRECEDENCE: "Precedence: {value}",
    Code.LIST_HEADER: "{header} header (mailing list)",
    Code.NULL_RETURN_PATH: "null Return-Path <>",
    Code.ROBOT_SENDER: "sender {sender}",
    Code.AUTO_SUBJECT: 'subject "{subject}"',
    Code.AUTO_WORDING: 'automatic wording "{phrase}"',
    Code.NO_FORM_FOUND: "no filled form found",
    Code.SOME_INCOMPLETE: "{incomplete} of {total} registrants incomplete",
    Code.CONFIRMED: "confirmed: {confirmed}",
    Code.CONFIRMED_SOME_LATE: "confirmed: {confirmed}; late: {late}",
    Code.ALL_LATE: "all late: {late}",
    Code.NO_EVENT: "no event chosen",
    Code.NO_SENDER: "no sender address",
    Code.OWN_ADDRESS: "own address",
    Code.SENDER_INVALID: "sender address not valid",
    Code.AUTOMATED: "automated message",
    Code.NOT_AUTHENTICATED: "sender not authenticated: {verdict}",
    Code.BACKLOG: "received before the watermark (backlog: for review only)",
    Code.DAILY_LIMIT: "over daily limit ({count} of {limit} answers to this sender today)",
    Code.NOTHING_STORED: "nothing from this message was registered: no answer",
    Code.OVERSIZE: "over-size: kept as headers only",
    Code.BACKLOG_REVIEW: "received before the campaign started: not answered",
    Code.FORGED: "sender not authenticated ({verdict}): nothing applied",
    Code.TOO_MANY_REGISTRANTS: "over the limit of registrants per sender: not all registered",
    Code.NOT_UNDERSTOOD: "not understood",
    Code.ERASURE_REQUEST: "asks for erasure of personal data (RODO art. 17): run `mailer forget`",
    Code.BY_HAND: "registered by hand",
    Code.READ_FAILED: "could not be read ({error}): kept as received",
    Code.BOUNCE_NOT_SENT: "bounce for {addresses}, to which we sent nothing: not suppressed",
    Code.BOUNCE_NOT_OURS: "bounce for {addresses} does not refer to our message to them: "
                          "not suppressed",
    Code.ANSWER_HELD: "answer held: sender not verified",
    Code.FOREIGN_CHANGE: "would change another person's registration ({registrations}): "
                         "not applied",
    Code.READ_TIMEOUT: "reading took longer than {seconds} s: kept as received",
    Code.ANSWER_FAILED: "answer not sent: {error}",
    Code.LEGACY: "{text}",
}

# For the clerk (the web view).
POLISH: Mapping[Code, str] = {
    Code.FORM: "wypełniony formularz zgłoszenia",
    Code.NO_FORM: "bez formularza i bez znanego zwrotu",
    Code.CONTACT_INTENT: "zgłoszenie bez formularza; dane zaproszonej osoby z listy kontaktów",
    Code.UNSUBSCRIBE_SUBJECT: 'temat z prośbą o wypisanie: "{subject}"',
    Code.UNSUBSCRIBE_PHRASE: 'prośba o wypisanie: "{phrase}"',
    Code.CANCELLATION_PHRASE: 'rezygnacja: "{phrase}"',
    Code.ERASURE_PHRASE: 'żądanie usunięcia danych: "{phrase}"',
    Code.OWN_ADDRESS_LOOP: "wysłane z naszego adresu {sender} (pętla)",
    Code.DELIVERY_REPORT: "raport doręczenia (RFC 3464) bez błędów",
    Code.DSN: "raport o niedoręczeniu (DSN, RFC 3464)",
    Code.DSN_DELAYED: "raport DSN (RFC 3464): doręczenie opóźnione",
    Code.BOUNCE_NULL_RETURN_PATH: "niestandardowy zwrot z pustym Return-Path",
    Code.BOUNCE_SENDER: "niestandardowy zwrot od {sender}",
    Code.BOUNCE_SUBJECT: 'niestandardowy zwrot, temat "{subject}"',
    Code.BOUNCE_FAILED_RECIPIENTS: "niestandardowy zwrot z nagłówkiem X-Failed-Recipients",
    Code.BOUNCE_FORMAT: "wiadomość automatyczna w formacie zwrotu ({detector})",
    Code.COMPLAINT: "zgłoszenie spamu (raport ARF, RFC 5965)",
    Code.AUTO_SUBMITTED: "nagłówek Auto-Submitted: {value}",
    Code.READ_RECEIPT: "potwierdzenie przeczytania (MDN, RFC 8098)",
    Code.REPORT: "raport (RFC 6522): {report_type}",
    Code.AUTO_HEADER: "nagłówek {header}",
    Code.PRECEDENCE: "nagłówek Precedence: {value}",
    Code.LIST_HEADER: "nagłówek {header} (lista mailingowa)",
    Code.NULL_RETURN_PATH: "pusty Return-Path <>",
    Code.ROBOT_SENDER: "nadawca automatyczny {sender}",
    Code.AUTO_SUBJECT: 'temat automatycznej odpowiedzi "{subject}"',
    Code.AUTO_WORDING: 'treść automatycznej odpowiedzi: "{phrase}"',
    Code.NO_FORM_FOUND: "nie znaleziono wypełnionego formularza",
    Code.SOME_INCOMPLETE: "niekompletne zgłoszenia: {incomplete} z {total}",
    Code.CONFIRMED: "potwierdzone: {confirmed}",
    Code.CONFIRMED_SOME_LATE: "potwierdzone: {confirmed}; po terminie: {late}",
    Code.ALL_LATE: "wszystkie po terminie: {late}",
    Code.NO_EVENT: "nie wybrano wydarzenia",
    Code.NO_SENDER: "brak adresu nadawcy",
    Code.OWN_ADDRESS: "nasz własny adres (pętla)",
    Code.SENDER_INVALID: "niepoprawny adres nadawcy",
    Code.AUTOMATED: "wiadomość automatyczna",
    Code.NOT_AUTHENTICATED: "nadawca nieuwierzytelniony: {verdict}",
    Code.BACKLOG: "sprzed rozpoczęcia kampanii – tylko do przejrzenia",
    Code.DAILY_LIMIT: "dzienny limit odpowiedzi do tego nadawcy wyczerpany ({count} z {limit})",
    Code.NOTHING_STORED: "z tej wiadomości niczego nie zapisano – bez odpowiedzi",
    Code.OVERSIZE: "zbyt duża – zachowano tylko nagłówki",
    Code.BACKLOG_REVIEW: "sprzed rozpoczęcia kampanii – bez odpowiedzi",
    Code.FORGED: "nadawca nieuwierzytelniony ({verdict}) – nic nie zmieniono",
    Code.TOO_MANY_REGISTRANTS: "ponad limit osób od jednego nadawcy – nie wszystkie zapisano",
    Code.NOT_UNDERSTOOD: "nie zrozumiano treści",
    Code.ERASURE_REQUEST: "żądanie usunięcia danych (art. 17 RODO): wykonaj `mailer forget`",
    Code.BY_HAND: "zarejestrowane ręcznie",
    Code.READ_FAILED: "nie udało się odczytać ({error}) – zachowano w oryginale",
    Code.BOUNCE_NOT_SENT: "zwrot dla {addresses}, do których niczego nie wysłaliśmy – "
                          "nie wstrzymano wysyłki",
    Code.BOUNCE_NOT_OURS: "zwrot dla {addresses} nie dotyczy naszej wiadomości do nich – "
                          "nie wstrzymano wysyłki",
    Code.ANSWER_HELD: "odpowiedź wstrzymana: nadawca niezweryfikowany",
    Code.FOREIGN_CHANGE: "zmieniałaby zgłoszenie innej osoby ({registrations}) – nie zapisano",
    Code.READ_TIMEOUT: "odczyt trwał dłużej niż {seconds} s – zachowano w oryginale",
    Code.ANSWER_FAILED: "odpowiedzi nie wysłano: {error}",
    Code.LEGACY: "{text}",
}


@cache  # asked at every Reason.of, for one of a few dozen texts
def fields(template: str) -> frozenset[str]:
    """The parameter names a text uses (`{name}`)."""
    return frozenset(name for _lit, name, _spec, _conv in string.Formatter().parse(template)
                     if name)


@dataclass(frozen=True)
class Reason:
    """A code and its parameters (each a string, in name order): hashable, picklable, stored."""

    code: Code
    args: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, code: Code, **params: object) -> Reason:
        """`Reason.of(Code.DAILY_LIMIT, count=5, limit=5)`; every parameter its text names."""
        missing = fields(ENGLISH[code]) - params.keys()
        if missing:
            raise ValueError(f"reason {code} needs {', '.join(sorted(missing))}")
        return cls(code, tuple(sorted((name, str(value)) for name, value in params.items())))

    @property
    def params(self) -> dict[str, str]:
        return dict(self.args)

    def english(self) -> str:
        """The text for logs and the command line."""
        return ENGLISH[self.code].format_map(self.params)

    def polish(self) -> str:
        """The text for the clerk."""
        return POLISH[self.code].format_map(self.params)

    def __str__(self) -> str:
        return self.english()

    def to_doc(self) -> dict[str, str]:
        """What the state stores: `{"code": …, and each parameter}`."""
        return {"code": str(self.code), **self.params}

    @classmethod
    def from_doc(cls, value: object) -> Reason | None:
        """A stored reason back; a sentence (as releases before codes stored) is recognised."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return from_english(value)
        if isinstance(value, Mapping) and value.get("code") in Code.__members__.values():
            params = {str(k): str(v) for k, v in value.items() if k != "code"}
            code = Code(value["code"])
            if fields(ENGLISH[code]) <= params.keys():
                return cls(code, tuple(sorted(params.items())))
        return cls.of(Code.LEGACY, text=str(value))


def from_english(text: str) -> Reason:
    """The reason whose English text `text` is (inverse of `english()`); else a legacy one."""
    for code, pattern in _english_patterns():
        match = pattern.fullmatch(text)
        if match is not None:
            return Reason.of(code, **match.groupdict())
    return Reason.of(Code.LEGACY, text=text)


@cache
def _english_patterns() -> tuple[tuple[Code, re.Pattern[str]], ...]:
    """Each English text as a pattern, parameters as named groups; fixed texts first."""
    patterns = []
    for code, template in ENGLISH.items():
        if code is Code.LEGACY:
            continue
        parts = [re.escape(literal) + (f"(?P<{name}>.*)" if name else "")
                 for literal, name, _spec, _conv in string.Formatter().parse(template)]
        patterns.append((code, re.compile("".join(parts), re.DOTALL)))
    # The text with more fixed words is the more specific one: "sender not authenticated: …"
    # before "sender …", "confirmed: …; late: …" before "confirmed: …".
    patterns.sort(key=lambda pair: -len(_literal(ENGLISH[pair[0]])))
    return tuple(patterns)


def _literal(template: str) -> str:
    return "".join(literal for literal, *_rest in string.Formatter().parse(template))


def english(value: Any) -> str:
    """A stored reason (code or sentence) in English; "" for none."""
    reason = Reason.from_doc(value)
    return "" if reason is None else reason.english()


def polish(value: Any) -> str:
    """A stored reason (code or sentence) in Polish; "" for none."""
    reason = Reason.from_doc(value)
    return "" if reason is None else reason.polish()
