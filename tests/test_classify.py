"""Tests for mailer.reading.classify over real-looking messages in tests/data/classify."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from typing import NamedTuple

import pytest

from mailer.reading.classify import (
    Classification,
    Kind,
    bounce_recipients,
    classify,
    is_automated,
)

DATA = Path(__file__).parent / "data" / "classify"
OWN = ("rejestracja@example.com", "strategia@example.com")
# Where a reply's quoted history starts (a stand-in for parse's quote stripping).
QUOTE_START = re.compile(r"^(?:>|Od: |From: |W dniu .*|-----)")


class Case(NamedTuple):
    """One message file and what classify must say about it."""

    file: str
    kind: Kind
    reason: str  # a fragment of the reason
    bounced: tuple[str, ...] = ()
    temporary: tuple[str, ...] = ()
    has_form: bool = False


CASES = [
    Case("postfix_dsn_511.eml", Kind.BOUNCE, "RFC 3464", ("m.nowak@um.przykladowo.pl",)),
    Case("exchange_ndr.eml", Kind.BOUNCE, "RFC 3464", ("sekretariat.wpr@gdansk.example.pl",)),
    Case("gmail_dsn_failure.eml", Kind.BOUNCE, "RFC 3464", ("biuro.rozwoju@urzad.przykladowo.pl",)),
    Case(
        "postfix_delayed_441.eml",
        Kind.BOUNCE,
        "delayed",
        temporary=("promocja@miasto.przykladowo.pl",),
    ),
    Case("qmail_bounce.eml", Kind.BOUNCE, "non-standard bounce", ("wojt@gmina-przykladowo.pl",)),
    Case("exchange_ooo_pl.eml", Kind.AUTO_REPLY, "Auto-Submitted: auto-generated"),
    Case("exchange2010_ooo_subject_only.eml", Kind.AUTO_REPLY, "Automatyczna odpowiedź"),
    Case("gmail_vacation.eml", Kind.AUTO_REPLY, "Auto-Submitted: auto-replied"),
    Case("ezd_potwierdzenie_wplywu.eml", Kind.AUTO_REPLY, "Potwierdzenie wpływu"),
    Case("outlook_read_receipt.eml", Kind.AUTO_REPLY, "MDN"),
    Case("noreply_notification.eml", Kind.AUTO_REPLY, "no-reply@"),
    Case("thunderbird_wypisz.eml", Kind.UNSUBSCRIBE, "wypisz"),
    Case("gmail_list_unsubscribe_mailto.eml", Kind.UNSUBSCRIBE, "wypisz"),
    Case("outlook_rezygnuje_z_udzialu.eml", Kind.CANCELLATION, "rezygnuje z udzialu"),
    Case("gmail_registration.eml", Kind.REGISTRATION, "form", has_form=True),
    Case("applemail_question.eml", Kind.OTHER, "no form"),
]


def load(name: str) -> EmailMessage:
    """Parse a file of tests/data/classify as the watcher does."""
    raw = (DATA / name).read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parse(raw: bytes) -> EmailMessage:
    """Parse raw bytes as the watcher does."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def own_text(msg: EmailMessage) -> str:
    """Return the plain-text body up to the quoted history."""
    body = msg.get_body(preferencelist=("plain",))
    if not isinstance(body, EmailMessage):
        return ""
    lines: list[str] = []
    for line in str(body.get_content()).splitlines():
        if QUOTE_START.match(line):
            break
        lines.append(line)
    return "\n".join(lines)


def run(msg: EmailMessage, *, has_form: bool = False) -> Classification:
    """Classify a message with our own addresses configured."""
    return classify(msg, own_text(msg), has_form=has_form, own_addresses=OWN)


@pytest.mark.parametrize("case", CASES, ids=[case.file for case in CASES])
def test_classify_sample(case: Case) -> None:
    """Each sample gets its kind, a telling reason and exactly the failed addresses."""
    result = run(load(case.file), has_form=case.has_form)
    assert result.kind is case.kind
    assert case.reason in str(result.reason)
    assert result.bounced == case.bounced
    assert result.temporary == case.temporary


def test_every_sample_is_in_the_table() -> None:
    """No .eml file in the data folder is left untested."""
    assert {path.name for path in DATA.glob("*.eml")} == {case.file for case in CASES}


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.kind in {Kind.BOUNCE, Kind.AUTO_REPLY}],
    ids=lambda case: str(case.file),
)
def test_machine_mail_is_never_answered(case: Case) -> None:
    """is_automated flags every bounce and auto-reply sample."""
    assert is_automated(load(case.file)) is not None


@pytest.mark.parametrize(
    "name",
    ["thunderbird_wypisz.eml", "outlook_rezygnuje_z_udzialu.eml", "gmail_registration.eml"],
)
def test_people_are_not_automated(name: str) -> None:
    """Replies written by people carry no automation marker."""
    assert is_automated(load(name)) is None


def test_bounce_recipients_of_non_standard_bounce() -> None:
    """flufl.bounce finds the qmail recipient, lower-cased."""
    assert bounce_recipients(load("qmail_bounce.eml")) == (("wojt@gmina-przykladowo.pl",), ())


def test_ordinary_reply_has_no_bounce_recipients() -> None:
    """A person's reply yields no failed addresses."""
    assert bounce_recipients(load("gmail_registration.eml")) == ((), ())


def test_unsubscribe_outranks_form() -> None:
    """ "Wypisz" with a filled form is an unsubscribe."""
    msg = load("thunderbird_wypisz.eml")
    assert run(msg, has_form=True).kind is Kind.UNSUBSCRIBE


def test_cancellation_outranks_form() -> None:
    """A cancellation phrase wins over a filled form."""
    msg = load("outlook_rezygnuje_z_udzialu.eml")
    assert run(msg, has_form=True).kind is Kind.CANCELLATION


def reply(body: str, *, subject: str = "Re: Zaproszenie", headers: str = "") -> EmailMessage:
    """Build a plain reply from a person, with extra raw header lines."""
    raw = (
        "From: Jan Nowak <j.nowak@um.przykladowo.pl>\n"
        "To: rejestracja@example.com\n"
        f"Subject: {subject}\n{headers}"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        f"{body}\n"
    )
    return parse(raw.encode())


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("Nie rezygnuję z udziału, zmieniam tylko telefon.", Kind.REGISTRATION),
        ("ODWOŁUJĘ moje zgłoszenie.", Kind.CANCELLATION),
        ("Niestety nie wezmę udziału.", Kind.CANCELLATION),
        ("Please cancel my registration.", Kind.CANCELLATION),
        ("Rezygnuje z newslettera", Kind.UNSUBSCRIBE),
        ("Proszę o usunięcie mojego adresu z listy.", Kind.UNSUBSCRIBE),
        ("Nie chcę otrzymywać tych wiadomości.", Kind.UNSUBSCRIBE),
        ("Proszę wypisać zaświadczenie o udziale.", Kind.REGISTRATION),
    ],
)
def test_phrases_fold_case_and_diacritics(body: str, kind: Kind) -> None:
    """Phrases match in any case, with or without diacritics, and not when negated."""
    msg = reply(body)
    assert classify(msg, body, has_form=True).kind is kind


def test_phrase_in_subject_counts() -> None:
    """A cancellation stated only in the subject is read."""
    msg = reply("Pozdrawiam", subject="Rezygnacja z udziału")
    assert classify(msg, "Pozdrawiam", has_form=False).kind is Kind.CANCELLATION


def test_own_address_is_a_loop() -> None:
    """A message from one of our own addresses is never taken for a person."""
    raw = b"From: Rejestracja <Rejestracja@Example.com>\nSubject: Re: Zaproszenie\n\nwypisz\n"
    result = classify(parse(raw), "wypisz", has_form=False, own_addresses=OWN)
    assert result.kind is Kind.AUTO_REPLY
    assert "loop" in str(result.reason)


def test_unsubscribe_subject_wins_over_auto_submitted() -> None:
    """A List-Unsubscribe mailto: message is an unsubscribe even if marked automatic."""
    msg = reply("", subject="Wypisz", headers="Auto-Submitted: auto-generated\n")
    assert classify(msg, "", has_form=False).kind is Kind.UNSUBSCRIBE


@pytest.mark.parametrize(
    ("header", "automated"),
    [
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: auto-notified; owner-email=x@example.org", True),
        ("X-Auto-Response-Suppress: All", False),
        ("X-Autoreply: yes", True),
        ("X-Autorespond: Out of office", True),
        ("Precedence: list", True),
        ("Precedence: first-class", False),
        ("List-Id: Lista miast <miasta.lists.example.org>", True),
        ("List-Unsubscribe: <mailto:leave@lists.example.org>", True),
        ("Return-Path: <>", True),
        ("X-MS-Exchange-Inbox-Rules-Loop: j.nowak@um.przykladowo.pl", True),
    ],
)
def test_automation_headers(header: str, automated: bool) -> None:
    """Each RFC 3834-style marker counts; X-Auto-Response-Suppress and Auto-Submitted: no don't."""
    msg = reply("Czy będzie nagranie?", headers=header + "\n")
    assert (is_automated(msg) is not None) is automated
    expected = Kind.AUTO_REPLY if automated else Kind.OTHER
    assert classify(msg, "Czy będzie nagranie?", has_form=False).kind is expected


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Zaproszenie",
        "ODPOWIEDZ AUTOMATYCZNA: Zaproszenie",
        "[ZEWN] Poza biurem",
        "Read: Zaproszenie",
        "Urzędowe poświadczenie odbioru",
        "Nieobecność",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    """Out-of-office and receipt subjects count at the start, in any case and spelling."""
    assert is_automated(reply("x", subject=subject)) is not None


def test_reply_to_an_auto_reply_subject_is_a_person() -> None:
    """ "Re: Automatyczna odpowiedź" is a person answering, not a machine."""
    assert is_automated(reply("x", subject="Re: Automatyczna odpowiedź: Zaproszenie")) is None


def test_null_return_path_alone_is_no_bounce() -> None:
    """An auto-reply sent with a null reverse-path (RFC 3834 §3.3) is not a bounce."""
    msg = reply("Jestem na urlopie.", subject="Urlop", headers="Return-Path: <>\n")
    result = classify(msg, "Jestem na urlopie.", has_form=False)
    assert result.kind is Kind.AUTO_REPLY


def test_an_out_of_office_naming_addresses_is_no_bounce() -> None:
    """An out-of-office that names where mail goes meanwhile, in the words bounces use, is an
    auto-reply: its subject says so, and its body is not searched for a bounce format."""
    body = ("Przebywam na urlopie do 2.11.2020. Wiadomość do jan.nowak@gdynia.example.com nie "
            "zostanie dostarczona adresatowi przed tym dniem; w pilnych sprawach proszę pisać "
            "na sekretariat@gdynia.example.com.")
    msg = reply(body, subject="Odpowiedź automatyczna: Zaproszenie",
                headers="Auto-Submitted: auto-replied\nReturn-Path: <>\n")
    result = classify(msg, body, has_form=False)
    assert result.kind is Kind.AUTO_REPLY and result.bounced == ()


def dsn(blocks: str, *, encoding: str = "7bit") -> EmailMessage:
    """Build a minimal RFC 3464 report around the given per-recipient blocks."""
    raw = (
        "From: MAILER-DAEMON@mail.example.com\n"
        "Subject: Delivery report\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee below.\n\n"
        f"--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: {encoding}\n\n"
        f"Reporting-MTA: dns; mail.example.com\n\n{blocks}\n"
        "--b--\n"
    )
    return parse(raw.encode())


def test_final_recipient_is_the_failed_one() -> None:
    """A forwarded address: the failed one is the final one the notice reports (issue 14); the
    address we sent to (Original-Recipient) is kept beside it, to match our delivery."""
    msg = dsn(
        "Original-Recipient: rfc822;Sekretariat@um.example.pl\n"
        "Final-Recipient: rfc822; jan.kowalski@um.example.pl\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    assert bounce_recipients(msg) == (("jan.kowalski@um.example.pl",), ())
    result = classify(msg, "", has_form=False)
    assert result.forwarded == (("jan.kowalski@um.example.pl", "sekretariat@um.example.pl"),)


def test_expired_transient_failure_is_temporary() -> None:
    """Action: failed with a 4.x.x Status (gave up retrying) does not suppress the address."""
    msg = dsn("Final-Recipient: rfc822; a@um.example.pl\nAction: failed\nStatus: 4.4.7\n")
    result = classify(msg, "", has_form=False)
    assert (result.kind, result.bounced, result.temporary) == (
        Kind.BOUNCE,
        (),
        ("a@um.example.pl",),
    )


def test_mixed_report_splits_permanent_and_temporary() -> None:
    """Per-recipient blocks are read one by one; a success block is ignored."""
    msg = dsn(
        "Final-Recipient: rfc822; a@um.example.pl\nAction: failed\nStatus: 5.2.1\n\n"
        "Final-Recipient: rfc822; b@um.example.pl\nAction: delayed\nStatus: 4.2.2\n\n"
        "Final-Recipient: rfc822; c@um.example.pl\nAction: delivered\nStatus: 2.0.0\n"
    )
    assert bounce_recipients(msg) == (("a@um.example.pl",), ("b@um.example.pl",))


def test_delivery_receipt_is_no_bounce() -> None:
    """A DSN that only reports success is an automatic message, not a bounce."""
    msg = dsn("Final-Recipient: rfc822; c@um.example.pl\nAction: relayed\nStatus: 2.0.0\n")
    assert classify(msg, "", has_form=False).kind is Kind.AUTO_REPLY


def test_bounce_without_recipients_is_still_a_bounce() -> None:
    """A MAILER-DAEMON message nobody can parse is a bounce with no addresses."""
    raw = b"From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\n\nSomething failed.\n"
    result = classify(parse(raw), "Something failed.", has_form=False)
    assert (result.kind, result.bounced, result.temporary) == (Kind.BOUNCE, (), ())


@pytest.mark.parametrize(
    "headers",
    [
        b'From: "a" <b@c>, , <\nSubject: Re: x\n',
        b"From: =?utf-8?b?????=\nSubject: =?x-unknown?q?abc?=\n",
        b"From: \xff\xfe <x@y>\nAuto-Submitted: \xff\nSubject: \xc5\x82\n",
        b'Content-Type: multipart/report; report-type="\nFrom: <>\n',
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=q\n\n--q\n"
        b"Content-Type: message/delivery-status\n\nAction: failed\nFinal-Recipient: ;\n",
    ],
)
def test_malformed_headers_never_raise(headers: bytes) -> None:
    """Broken headers and reports are classified without an exception."""
    msg = parse(headers + b"\nbody\n")
    assert isinstance(classify(msg, "body", has_form=False), Classification)
    is_automated(msg)
    bounce_recipients(msg)
