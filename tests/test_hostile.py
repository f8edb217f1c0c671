"""Hostile input and transports: fuzzed messages, stripped STARTTLS, secrets kept out of sight."""

from __future__ import annotations

import email.policy
import random
import shutil
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.errors import DeliveryError
from mailer.reading.body import html_to_text
from mailer.reading.headers import dmarc_failure
from mailer.reading.parse import MAX_FORMS, MAX_LINES, first_lines, read_forms
from mailer.reading.understand import (
    MAX_CONTAINERS,
    MAX_HEADER_CHARS,
    UnreadableMessage,
    parse_bytes,
    reading_json,
    understand,
)
from mailer.reading.validate import match_events
from mailer.settings import Event, SmtpSettings
from mailer.smtp_client import SmtpSession
from tests.conftest import SmtpSink, free_port
from tests.system import missing
from tests.test_isolation import nested_multiparts

EVENTS = (
    Event(id="smart-city", title="Warsztat „Smart City”",
          deadline=datetime(2020, 10, 26, 8, 0, tzinfo=UTC), aliases=("warsztat",)),
    Event(id="pim", title="PIM", deadline=datetime(2020, 11, 2, 22, 59, tzinfo=UTC),
          aliases=("pim",)),
)
RECEIVED = datetime(2020, 10, 20, 10, 0, tzinfo=UTC)
SAMPLES = sorted((Path(__file__).parent / "data").rglob("*.eml"))

HEADER_NAMES = st.sampled_from(["From", "To", "Subject", "Content-Type", "Message-ID",
                                "In-Reply-To", "References", "Auto-Submitted", "Return-Path",
                                "Content-Transfer-Encoding", "MIME-Version", "Precedence"])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@st.composite
def raw_messages(draw: Any) -> bytes:
    """A message built from random headers and bodies, including broken MIME."""
    lines = [f"{draw(HEADER_NAMES)}: {draw(TEXT)}" for _ in range(draw(st.integers(0, 8)))]
    boundary = draw(st.sampled_from(["B", "", '"', "=_x"]))
    if draw(st.booleans()):
        subtype = draw(st.sampled_from(["mixed", "report", "alternative"]))
        charset = draw(st.sampled_from(["x-bad", "utf-8", "iso-8859-2", "cp1250"]))
        lines.append(f'Content-Type: multipart/{subtype}; boundary="{boundary}"; '
                     f"charset={charset}")
    body = draw(TEXT) + f"\n--{boundary}\nContent-Type: text/html\n\n" + draw(TEXT)
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + body.encode("utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_messages())
def test_reading_never_raises_on_generated_messages(raw: bytes) -> None:
    """The whole reading pipeline survives random headers, charsets and broken MIME."""
    reading = understand(raw, received=RECEIVED, events=EVENTS)
    assert reading_json(reading, None)["kind"] in {
        "registration", "cancellation", "unsubscribe", "bounce", "auto_reply", "other"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.randoms(use_true_random=False))
def test_reading_never_raises_on_mutated_samples(path: Path, rnd: random.Random) -> None:
    """Real replies and bounces with bytes flipped, cut or duplicated still read without error."""
    data = bytearray(path.read_bytes())
    for _ in range(rnd.randint(1, 12)):
        at = rnd.randrange(len(data))
        action = rnd.choice(["flip", "cut", "dup", "nl"])
        if action == "flip":
            data[at] = rnd.randrange(256)
        elif action == "cut":
            del data[at:at + rnd.randint(1, 200)]
        elif action == "dup":
            data[at:at] = data[at:at + rnd.randint(1, 200)]
        else:
            data[at:at] = b"\r\n"
        if not data:
            data = bytearray(b"\r\n")
    understand(bytes(data), received=RECEIVED, events=EVENTS)


async def test_stripped_starttls_sends_no_credentials(smtp_sink: tuple[SmtpSink, int]) -> None:
    """security=starttls against a server offering no STARTTLS: clear error, no AUTH, no mail."""
    sink, port = smtp_sink
    settings_ = SmtpSettings(port=port, security="starttls", username="organizer",
                             timeout=5)
    session = SmtpSession(settings_, envelope_from="rejestracja@example.com",
                          password="tajne-haslo")
    try:
        await session.send("a@example.com", b"Subject: x\r\n\r\nbody\r\n")
    except DeliveryError as err:
        assert "STARTTLS" in str(err) and "tajne-haslo" not in str(err)
    else:
        raise AssertionError("a stripped STARTTLS must stop the run")
    finally:
        await session.close()
    assert sink.messages == []
    assert "tajne-haslo" not in repr(session) and "tajne-haslo" not in repr(settings_)


def test_policy_default_is_what_we_parse_with() -> None:
    """The fuzzed pipeline uses the modern email policy (the one that raises on bad headers)."""
    assert parse_bytes(b"Subject: x\r\n\r\n").policy == email.policy.default


def test_dmarc_failure_at_our_mx_is_not_answered_or_applied() -> None:
    """Our MX's dmarc=fail marks the sender forged; a header added by the sender is ignored."""
    forged = parse_bytes(
        b"Authentication-Results: mx.example.com; spf=fail; dmarc=fail (p=reject)"
        b" header.from=gdynia.pl\r\nAuthentication-Results: evil.example; dmarc=pass\r\n"
        b"From: prezydent@gdynia.pl\r\nSubject: wypisz\r\n\r\nwypisz\r\n")
    assert dmarc_failure(forged) == "dmarc=fail at mx.example.com"
    assert dmarc_failure(forged, "mx.example.com") == "dmarc=fail at mx.example.com"
    planted = parse_bytes(b"Authentication-Results: mx.example.com; dmarc=pass\r\n"
                          b"Authentication-Results: mx.example.com; dmarc=fail\r\n\r\nx")
    assert dmarc_failure(planted) is None  # the topmost, our MX's, says pass
    reading = understand(forged.as_bytes(), received=RECEIVED, events=EVENTS)
    assert reading.forged and reading.kind == "unsubscribe"


def test_doctor_checks_servers_without_sending(make_workspace: Any,
                                               smtp_sink: tuple[SmtpSink, int],
                                               mailbox: tuple[Any, str]) -> None:
    """doctor: SMTP and IMAP reachable → ok and exit 0; nothing is sent or read."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    result = ws.run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[  ok] smtp connect" in result.stdout and "[  ok] imap login" in result.stdout
    assert "[  ok] imap idle" in result.stdout and "dkim" in result.stdout
    assert sink.messages == []


def test_doctor_names_what_to_fix(make_workspace: Any) -> None:
    """doctor against closed ports fails with exit 1 and says which setting to look at."""
    ws = make_workspace(port=free_port(), imap_port=free_port())
    result = ws.run("doctor")
    assert result.returncode == 1
    assert "[FAIL] smtp connect" in result.stdout and "[smtp] host, port" in result.stdout
    assert "[FAIL] imap" in result.stdout


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no system trusts (made with the openssl tool)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not shutil.which("openssl"):
        pytest.fail(missing("the openssl tool is missing"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_certificates_are_verified_unless_trusted_explicitly(tmp_path: Path) -> None:
    """A self-signed SMTP server is refused by default and accepted once ca_file trusts it."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        untrusted = SmtpSession(SmtpSettings(port=port, security="tls", timeout=5),
                                envelope_from="rejestracja@example.com", password=None)
        with pytest.raises(DeliveryError, match="certificate is not trusted"):
            await untrusted.send("a@example.com", b"Subject: x\r\n\r\nbody\r\n")
        await untrusted.close()
        assert sink.messages == []
        trusted = SmtpSession(SmtpSettings(port=port, security="tls", timeout=5,
                                           ca_file=str(cert)),
                              envelope_from="rejestracja@example.com", password=None)
        attempt = await trusted.send("a@example.com", b"Subject: x\r\n\r\nbody\r\n")
        await trusted.close()
        assert attempt.outcome == "sent" and len(sink.messages) == 1
    finally:
        controller.stop()


def test_long_event_list_reads_every_choice_and_every_stranger() -> None:
    """An event list thousands of items long is read in full (the matching is no longer
    quadratic in the items: bench/hostile.py times it): the events named, the rest reported."""
    value = ", ".join(["pim"] * 3_000 + ["warsztat", "zebranie"] * 1_000)
    ids, unknown = match_events(value, EVENTS)
    assert ids == ("smart-city", "pim")
    assert unknown == ["zebranie"] * 1_000


def test_outlook_mailto_is_cut_and_unclosed_ones_are_no_address() -> None:
    """Outlook's `addr<mailto:addr>` (after any white space) leaves the address; a run of
    unclosed `<mailto:` is no address (the form asks for one) and reads as fast as any value."""

    def email_read(value: str) -> tuple[str, list[str]]:
        raw = ("From: Jan Kowalski <jan@gdynia.example.com>\nSubject: Re: Zaproszenie\n"
               "Content-Type: text/plain; charset=utf-8\n\nWydarzenie: PIM\n"
               "Imię i nazwisko: Jan Kowalski\nMiasto / urząd: Gdynia\n"
               f"E-mail: {value}\n").encode()
        data = reading_json(understand(raw, received=RECEIVED, events=EVENTS), None)
        return data["registrants"][0]["email"], [e["field"] for e in data["errors"]]

    assert email_read("jan.k@gdynia.pl\xa0<mailto:jan.k@gdynia.pl>") == ("jan.k@gdynia.pl", [])
    assert email_read("jan.k@gdynia.pl [mailto:jan.k@gdynia.pl]") == ("jan.k@gdynia.pl", [])
    assert email_read("<mailto:" * 5_000)[1] == ["email"]


def test_html_nested_past_any_reply_still_reads_its_form() -> None:
    """Lists and quotes nested thousands deep are flattened below 16 levels (html2text indents
    every line by its depth): the form inside is read, a stray "<" stays text."""
    deep = "<ul><li>punkt" * 5_000 + "</li></ul>" * 5_000 + "<blockquote>" * 5_000 \
        + "<p>Wydarzenie: PIM<br>Imię i nazwisko: Jan Kowalski<br>Miasto / urząd: Gdynia<br>" \
        "Uwagi: a &lt; b i c < d</p>" + "</blockquote>" * 5_000
    raw = ("From: Jan Kowalski <jan@gdynia.example.com>\nSubject: Re: Zaproszenie\n"
           "Content-Type: text/html; charset=utf-8\n\n<html><body>" + deep
           + "</body></html>\n").encode()
    reading = understand(raw, received=RECEIVED, events=EVENTS)
    data = reading_json(reading, None)
    assert [(r["name"], r["city"], list(r["events"])) for r in data["registrants"]] == [
        ("Jan Kowalski", "Gdynia", ["pim"])]
    assert html_to_text("<p>a &lt; b i c < d<<<</p>").strip() == "a < b i c < d<<<"


def test_thousands_of_forms_are_read_up_to_the_limit() -> None:
    """A reply holding 1,500 forms is read to one past the limit (so it goes to review), not
    to its end: no answer can confirm more people than any sender may register."""
    form = ("Wydarzenie: PIM\nImię i nazwisko: Osoba {n}\nMiasto / urząd: Gdynia\n"
            "E-mail: osoba{n}@gdynia.example.com\n\n")
    drafts = read_forms("".join(form.format(n=n) for n in range(1_500)))
    assert len(drafts) == MAX_FORMS + 1
    assert drafts[-1].values["name"] == f"Osoba {MAX_FORMS}"


def test_huge_headers_are_read_only_so_far() -> None:
    """A From of 60,000 addresses and a 1 MB Subject of encoded words are read up to
    MAX_HEADER_CHARS (the stdlib parser is superlinear): the first sender still counts."""
    senders = ",\r\n ".join(f"a{n}@x.pl" for n in range(60_000))
    subject = "\r\n ".join(["=?utf-8?q?=C5=81=C3=B3d=C5=BA?="] * 30_000)
    raw = (f"From: {senders}\r\nSubject: {subject}\r\nTo: rejestracja@example.com\r\n\r\n"
           "Dzień dobry\r\n").encode()
    reading = understand(raw, received=RECEIVED, events=EVENTS)
    assert reading.sender == "a0@x.pl"
    assert reading.subject.startswith("ŁódźŁódź")  # RFC 2047: no space between words
    assert len(reading.subject) < MAX_HEADER_CHARS


FORM_LINE = b"Wydarzenie: PIM\r\n"


def test_containers_past_the_limit_are_not_parsed() -> None:
    """Up to MAX_CONTAINERS nested multiparts are parsed (the form at the bottom is found);
    one more and the message is unreadable, for review, before the stdlib parser starts."""
    reading = understand(nested_multiparts(MAX_CONTAINERS, FORM_LINE), received=RECEIVED,
                         events=EVENTS)
    assert [dict(d.values) for d in reading.drafts] == [{"event": "PIM"}]
    with pytest.raises(UnreadableMessage, match=f"more than {MAX_CONTAINERS} MIME"):
        parse_bytes(nested_multiparts(MAX_CONTAINERS + 1))


def test_only_the_first_lines_of_a_body_are_read() -> None:
    """Half a million quote markers after an attribution: the reader looks at MAX_LINES
    lines and no more; a form before them is read."""
    body = ("Wydarzenie: PIM\r\nImię i nazwisko: Jan Kowalski\r\nMiasto / urząd: Gdynia\r\n"
            "W dniu 20.10.2020 o 12:00 Anna <anna@example.com> pisze:" + "\r\n>" * 500_000)
    raw = f"From: jan@gdynia.example.com\r\nSubject: Re: x\r\n\r\n{body}\r\n".encode()
    reading = understand(raw, received=RECEIVED, events=EVENTS)
    assert [r.name for r in reading.registrants] == ["Jan Kowalski"]
    read_lines = reading.own_text.count("\n") + reading.quoted_text.count("\n")
    assert MAX_LINES - 10 < read_lines < MAX_LINES + 10
    assert first_lines("a\nb\nc", 2) == "a\nb" and first_lines("a\nb", 2) == "a\nb"
