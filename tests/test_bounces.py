"""Bounces from many MTAs (tests/data/bounces): the failed address, permanent or not, and who
may be suppressed (issues 12 and 14)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from mailer.reading.classify import Classification, Kind, classify, is_automated
from mailer.reading.reports import read_bounce
from mailer.reading.understand import parse_bytes, read
from mailer.reasons import Code, Reason
from mailer.settings import load_settings
from mailer.suppress import judge_bounce

DATA = Path(__file__).parent / "data"
BOUNCES = DATA / "bounces"
OWN = ("rejestracja@example.com", "strategia@example.com")


class Case(NamedTuple):
    """One notice and what must be read from it."""

    file: str
    detector: str  # which reader found the address ("" for none)
    bounced: tuple[str, ...] = ()  # failed for good
    temporary: tuple[str, ...] = ()  # delayed or given up on (not suppressed)
    expired: tuple[str, ...] = ()  # of `temporary`: the MTA stopped trying
    kind: Kind = Kind.BOUNCE


CASES = [
    Case("qmail_pl_translated.eml", "address-blocks", ("sekretariat@gmina-a.example.pl",)),
    Case("qmail_remote_550.eml", "address-blocks", ("starosta@powiat-b.example.pl",)),
    Case("qmail_queue_too_long.eml", "address-blocks", (), ("promocja@miasto-c.example.pl",),
         ("promocja@miasto-c.example.pl",)),
    Case("postfix_text_only.eml", "address-blocks", ("biuro.rozwoju@miasto-d.example.pl",)),
    Case("postfix_expanded_from.eml", "address-blocks", ("k.nowak.prywatny@poczta.example.net",)),
    Case("courier_undeliverable.eml", "address-blocks", ("ops@gmina-l.example.pl",)),
    Case("exim_no_failed_recipients.eml", "exim", ("wojt@gmina-e.example.pl",)),
    Case("exim_forwarded.eml", "exim", ("jan.sekretarz@poczta.example.net",)),
    Case("exim_delayed.eml", "exim", (), ("urzad@gmina-g.example.pl",)),
    Case("exim_retry_timeout.eml", "exim", (), ("kancelaria@gmina-h.example.pl",),
         ("kancelaria@gmina-h.example.pl",)),
    Case("wrong_addresses_named.eml", "exim", ("architekt@urzad-dd.example.pl",)),
    Case("sendmail_permanent_fatal.eml", "sendmail", ("prezydent@miasto-i.example.pl",)),
    Case("sendmail_warning_4h.eml", "sendmail", (), ("it@miasto-j.example.pl",)),
    Case("sendmail_gave_up_5_days.eml", "sendmail", (), ("sekretariat@miasto-k.example.pl",),
         ("sekretariat@miasto-k.example.pl",)),
    Case("biglobe_jp.eml", "sendmail", (), ("tanaka@ma.biglobe.example.jp",),
         ("tanaka@ma.biglobe.example.jp",)),
    Case("dragonfly_rcpt.eml", "dragonfly", ("rada@miasto-m.example.pl",)),
    Case("dragonfly_gave_up.eml", "dragonfly", (), ("sport@miasto-n.example.pl",),
         ("sport@miasto-n.example.pl",)),
    Case("lotus_notes_failure_reasons.eml", "notes", ("wydzial.strategii@urzad-o.example.pl",)),
    Case("domino_not_delivered_because.eml", "notes", ("anna.lis@urzad-p.example.pl",)),
    Case("groupwise_undeliverable.eml", "listed", ("kadry@starostwo-q.example.pl",)),
    Case("office365_text_only.eml", "listed", ("m.zielinski@urzad-r.example.pl",)),
    Case("office365_pl_text_only.eml", "listed", ("sekretariat.burmistrza@urzad-s.example.pl",)),
    Case("exchange_delayed_text.eml", "listed", (), ("zamowienia@urzad-t.example.pl",)),
    Case("homepl_niedostarczona.eml", "address-blocks", ("informacja@gmina-u.example.pl",)),
    Case("nazwapl_skrzynka_pelna.eml", "listed", (), ("kultura@gmina-v.example.pl",),
         ("kultura@gmina-v.example.pl",)),
    Case("ovh_polish.eml", "listed", ("ochrona.srodowiska@gmina-w.example.pl",)),
    Case("japanese_provider_template.eml", "listed", ("suzuki@provider.example.jp",)),
    Case("dsn_in_multipart_mixed_null_from.eml", "dsn", ("oswiata@urzad-x.example.pl",)),
    Case("mcafee_gateway.eml", "dsn", ("inwestycje@urzad-aa.example.pl",)),
    Case("mismatched_boundary.eml", "dsn-text", ("zdrowie@urzad-y.example.pl",)),
    Case("cr_only_line_ends.eml", "dsn", ("turystyka@urzad-z.example.pl",)),
    # Final-Recipient a name only the reporting server knows: the Original-Recipient failed.
    Case("sun_messaging_ims_ms_daemon.eml", "dsn", ("planowanie@urzad-ff.example.pl",)),
    Case("pmdf_final_on_reporting_host.eml", "dsn", ("prorektor@uczelnia-gg.example.pl",)),
    # Sendmail lists the alias under the failed address: both are reported.
    Case("sendmail_expanded_alias.eml", "sendmail", ("j.wisniewski@serwer.powiat-hh.example.pl",
                                                     "starosta@powiat-hh.example.pl")),
    Case("vade_original_message_details.eml", "listed", ("gospodarka@isp-ii.example.net",)),
    Case("mdaemon_permanent_failure.eml", "listed", ("skarbnik@gmina-jj.example.pl",)),
    Case("mdaemon_user_unknown.eml", "listed", ("zielen@miasto-kk.example.pl",)),
    Case("dovecot_rejected_mdn.eml", "listed", ("inwestycje@powiat-ll.example.pl",)),
    Case("gateway_non_remis_subject.eml", "listed", ("k.mazur@urzad-mm.example.pl",)),
    Case("arf_feedback_report.eml", "", ("radny.kowal@poczta.example.net",)),
    Case("arf_redacted.eml", "", ()),
    Case("subject_only_undeliverable.eml", "", ()),
    Case("subject_only_auto_generated.eml", "", (), kind=Kind.AUTO_REPLY),
]


def our_id(name: str) -> str:
    """The Message-ID of the invitation each fixture returns (as the fixture was written)."""
    return f"<{hashlib.sha256(name.encode()).hexdigest()[:32]}.invitation@example.com>"


def classified(name: str) -> Classification:
    """Parse a fixture as the watcher does and classify it with our own addresses."""
    msg = parse_bytes((BOUNCES / name).read_bytes())
    return classify(msg, "", has_form=False, own_addresses=OWN)


@pytest.mark.parametrize("case", CASES, ids=[case.file for case in CASES])
def test_failed_addresses(case: Case) -> None:
    """Each notice gives exactly its failed address, permanent or temporary, and never more."""
    result = classified(case.file)
    assert result.kind is case.kind
    assert (result.bounced, result.temporary, result.expired) == (
        case.bounced, case.temporary, case.expired)


@pytest.mark.parametrize("case", [c for c in CASES if c.detector], ids=lambda c: str(c.file))
def test_detector(case: Case) -> None:
    """The reader meant for that MTA is the one that read it (so the README table holds)."""
    msg = parse_bytes((BOUNCES / case.file).read_bytes())
    assert read_bounce(msg, own_addresses=OWN).detector == case.detector


def test_every_fixture_is_in_the_table() -> None:
    """No .eml file in tests/data/bounces is left untested."""
    assert {p.name for p in BOUNCES.glob("*.eml")} == {case.file for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.file for case in CASES])
def test_machine_mail_is_never_answered(case: Case) -> None:
    """Every notice, also one recognised by its subject alone, is marked automatic."""
    assert is_automated(parse_bytes((BOUNCES / case.file).read_bytes())) is not None


# Exim's delay warning returns no copy; the subject-only ones return nothing.
NO_COPY = {"exim_delayed.eml", "subject_only_undeliverable.eml", "subject_only_auto_generated.eml"}


@pytest.mark.parametrize("case", [c for c in CASES if c.file not in NO_COPY],
                         ids=lambda c: str(c.file))
def test_notice_refers_to_our_message(case: Case) -> None:
    """The returned copy's Message-ID is found (how a notice shows it is about our mail)."""
    assert our_id(case.file) in classified(case.file).refs


@pytest.mark.parametrize(("name", "pair"), [
    ("exim_forwarded.eml", ("jan.sekretarz@poczta.example.net", "sekretariat@gmina-f.example.pl")),
    ("postfix_expanded_from.eml", ("k.nowak.prywatny@poczta.example.net",
                                   "kierownik@urzad-ee.example.pl")),
    ("sendmail_expanded_alias.eml", ("j.wisniewski@serwer.powiat-hh.example.pl",
                                     "starosta@powiat-hh.example.pl")),
])
def test_forwarded_address(name: str, pair: tuple[str, str]) -> None:
    """A forwarded address fails as the final one; the one we sent to is kept beside it."""
    assert classified(name).forwarded == (pair,)


def test_complaint_is_suppressed_as_such() -> None:
    """An ARF report is a complaint: its recipient (or, redacted, our message's) is suppressed."""
    result = classified("arf_feedback_report.eml")
    assert result.reason == Reason.of(Code.COMPLAINT)
    redacted = classified("arf_redacted.eml")
    verdict = judge_bounce(redacted, sent_ids=lambda a: {our_id("arf_redacted.eml")}
                           if a == "radny@gmina.example.pl" else set(),
                           recipient_of=lambda i: "radny@gmina.example.pl"
                           if i == our_id("arf_redacted.eml") else None, envelope=OWN)
    assert verdict.suppress == ("radny@gmina.example.pl",) and verdict.review() is None


def human_messages() -> list[Path]:
    """Every reply a person wrote among the fixtures."""
    people = {"applemail_question.eml", "gmail_list_unsubscribe_mailto.eml",
              "gmail_registration.eml", "outlook_rezygnuje_z_udzialu.eml",
              "thunderbird_wypisz.eml"}
    return [*sorted((DATA / "replies").glob("*.eml")),
            *(DATA / "classify" / name for name in sorted(people))]


@pytest.mark.parametrize("path", human_messages(), ids=lambda p: p.name)
def test_no_human_reply_is_a_bounce(path: Path, make_workspace: Any) -> None:
    """No reply a person wrote is read as a bounce, nor yields a failed address."""
    events = load_settings(make_workspace().config).events
    # Also with a null reverse-path, as some forwarders and clients send (RFC 3834 §3.3).
    for raw in (path.read_bytes(), b"Return-Path: <>\r\n" + path.read_bytes()):
        reading = read(raw, received=datetime(2020, 10, 20, tzinfo=UTC), events=events,
                       own_addresses=OWN)
        assert reading.kind is not Kind.BOUNCE
        assert reading.classification.bounced == () == reading.classification.temporary


@pytest.mark.parametrize("path", sorted((DATA / "officials").glob("*.eml")),
                         ids=lambda p: p.name)
def test_no_official_reply_is_a_bounce(path: Path) -> None:
    """None of the officials' replies is a bounce, also marked automatic or with a null
    reverse-path (the weak signs that make a bounce only with a bounce format in the text)."""
    raw = path.read_bytes()
    for marked in (raw, b"Return-Path: <>\r\n" + raw,
                   b"Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\n" + raw):
        result = classify(parse_bytes(marked), "", has_form=False, own_addresses=OWN)
        assert result.kind is not Kind.BOUNCE
        assert result.bounced == () == result.temporary


def test_robots_our_addresses_and_message_ids_are_never_failed() -> None:
    """postmaster@, MAILER-DAEMON@, our envelope and a Message-ID like an address are never
    taken for the failed recipient, even when the notice names nothing else."""
    raw = (b"From: MAILER-DAEMON@mx.gmina.example.pl\nTo: rejestracja@example.com\n"
           b"Subject: Undelivered Mail Returned to Sender\n"
           b"Message-ID: <1603178340.4411@mx.gmina.example.pl>\n\n"
           b"Your message from rejestracja@example.com could not be delivered.\n"
           b"Ask postmaster@mx.gmina.example.pl or mailer-daemon@mx.gmina.example.pl,\n"
           b"quoting 1603178340.4411@mx.gmina.example.pl.\n")
    result = classify(parse_bytes(raw), "", has_form=False, own_addresses=OWN)
    assert result.kind is Kind.BOUNCE and result.bounced == () == result.temporary


def test_only_address_of_a_notice_is_the_last_resort() -> None:
    """A recognised bounce in no known format: its one address (other than robots) fails."""
    raw = (b"From: MAILER-DAEMON@gw.gmina.example.pl\nTo: rejestracja@example.com\n"
           b"Subject: Returned mail\n\nUnable to deliver to <rada@gmina.example.pl>: "
           b"mailbox unavailable (550).\nContact postmaster@gw.gmina.example.pl.\n")
    result = classify(parse_bytes(raw), "", has_form=False, own_addresses=OWN)
    assert result.bounced == ("rada@gmina.example.pl",)


def test_a_long_hostile_notice_reads_fast() -> None:
    """Every detector is linear (issue 12): 1 MB of '@' and '<' in a bounce reads in < 2 s."""
    body = b"<" + b"a@" * 250_000 + b"\n" + b"  x@" * 120_000 + b"\n" + b"\n" * 100_000
    raw = (b"From: MAILER-DAEMON@mx.example.org\nSubject: failure notice\n\n"
           b"Hi. This is the qmail-send program.\nThe following address(es) failed:\n" + body)
    started = time.perf_counter()
    classify(parse_bytes(raw), "", has_form=False, own_addresses=OWN)
    assert time.perf_counter() - started < 2


# --- who may be suppressed (issue 12) -----------------------------------------------------------

SENT = {"a@gmina.example.pl": {"<1.invitation@example.com>"},
        "b@gmina.example.pl": {"<2.invitation@example.com>"}}


def bounce(bounced: tuple[str, ...], refs: tuple[str, ...], *, senders: tuple[str, ...] = (),
           forwarded: tuple[tuple[str, str], ...] = (),
           expired: tuple[str, ...] = ()) -> Classification:
    """A bounce classification as the reader makes it."""
    return Classification(Kind.BOUNCE, Reason.of(Code.DSN), bounced, expired, expired,
                          forwarded, refs, senders)


def judged(found: Classification) -> tuple[tuple[str, ...], tuple[str, ...], Code | None]:
    """What judge_bounce lets a notice suppress and mark, and why it goes to review."""
    verdict = judge_bounce(found, sent_ids=lambda a: SENT.get(a, set()),
                           recipient_of=lambda i: next((a for a, ids in SENT.items()
                                                        if i in ids), None), envelope=OWN)
    review = verdict.review()
    return verdict.suppress, verdict.undelivered, review.code if review else None


@pytest.mark.parametrize(("found", "expected"), [
    (bounce(("a@gmina.example.pl",), ("<1.invitation@example.com>",)),
     (("a@gmina.example.pl",), (), None)),
    (bounce(("a@gmina.example.pl",), ("<2.invitation@example.com>",)),
     ((), (), Code.BOUNCE_NOT_OURS)),  # our message, but to someone else
    (bounce(("a@gmina.example.pl",), ("<x@mx.example.org>",), senders=OWN),
     ((), (), Code.BOUNCE_NOT_OURS)),  # someone else's message, our address or not
    (bounce(("a@gmina.example.pl",), ()), ((), (), Code.BOUNCE_NOT_OURS)),  # nothing returned
    (bounce(("a@gmina.example.pl",), (), senders=("rejestracja@example.com",)),
     (("a@gmina.example.pl",), (), None)),  # no Message-ID returned, our envelope is
    (bounce(("c@gmina.example.pl",), ("<1.invitation@example.com>",)),
     ((), (), Code.BOUNCE_NOT_SENT)),  # never mailed
    (bounce(("final@poczta.example.net",), ("<2.invitation@example.com>",),
            forwarded=(("final@poczta.example.net", "b@gmina.example.pl"),)),
     (("b@gmina.example.pl",), (), None)),  # forwarded: the address we sent to is suppressed
    (bounce((), ("<1.invitation@example.com>",), expired=("a@gmina.example.pl",)),
     ((), ("a@gmina.example.pl",), None)),  # gave up on a 4xx: marked, not suppressed
])
def test_only_our_mail_is_suppressed(found: Classification,
                                     expected: tuple[tuple[str, ...], tuple[str, ...],
                                                     Code | None]) -> None:
    """A notice suppresses an address only if we mailed it and the notice returns that mail."""
    assert judged(found) == expected


def test_benchmark_reads_flufl_table_and_our_fixtures(tmp_path: Path) -> None:
    """bench/bounces.py reads flufl.bounce's kind of table (Stop left out) and scores our
    fixtures by the recipient of the returned copy: every one right."""
    spec = importlib.util.spec_from_file_location("bench_bounces", DATA.parent.parent / "bench"
                                                  / "bounces.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    table = tmp_path / "detectors.py"
    table.write_text("DATA = (\n    ('qmail', 'a.txt', ['X@Example.org']),\n"
                     "    ('dsn', 'b.txt', Stop),\n    ('smtp32', 'c.txt', [b'y@example.org',"
                     " 'z@example.org']),\n)\n", encoding="utf-8")
    assert bench.read_flufl_table(table) == {
        "a.txt": frozenset({"x@example.org"}), "b.txt": None,
        "c.txt": frozenset({"y@example.org", "z@example.org"})}
    right, counted = bench.run(BOUNCES, None, verbose=False)
    assert counted >= 25 and right == counted
