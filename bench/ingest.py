#!/usr/bin/env python3
"""Benchmark `mailer watch --once` against the least any IMAP reader must do (SPEC §6–§8).

    .venv/bin/python bench/ingest.py [--n 5000] [--stored 1000,20000] [--batch 2000]
                                     [--repeat R] [--sink auto|smtp-sink|aiosmtpd] [--keep]

A private Dovecot (tests/dovecot.py: own config, 127.0.0.1, a free port, a temporary Maildir)
receives N replies by IMAP MULTIAPPEND, each with an INTERNALDATE in October 2020: a mix of
registrations (on time, late, incomplete and completed later, two registrants in one reply,
Outlook plain text in Windows-1250 / ISO-8859-2 — some mislabelled —, HTML-only tables, a few
received before the watermark), unsubscribes, cancellations, auto-replies, DSN and qmail
bounces, and questions, written with email.message.EmailMessage in Polish and quoting the
campaign's real invitation. Then, each in its own child process so that peak RSS is per
measurement:

  baseline  aioimaplib lists the folder as mailer does (UID SEARCH, then RFC822.SIZE), fetches
            the messages with UID FETCH (UID INTERNALDATE RFC822.SIZE BODY.PEEK[]) in the same
            batches as mailer (mailer.imap_client.FETCH_BATCH UIDs) and parses each with the
            stdlib (message_from_bytes(policy=default), get_body, get_content): the least any
            reader must do. Run once unmeasured to warm Dovecot's caches.
  queued    `mailer watch --once` as a subprocess in a temporary campaign (the repository's
            campaign.toml, templates and recipients; [imap] at this Dovecot; MAILER_NOW set),
            with the SMTP port closed: fetch, parse, classify, validate, decide, .eml files,
            journal, answers recorded as pending, the final fold — the first answer attempt is
            refused at once, so the rest waits (exit 3). This is the ingest figure the targets
            apply to.
  sent      the same with an SMTP sink that accepts everything (Postfix smtp-sink, else
            aiosmtpd in a child): the above plus every answer rendered, sent and marked. The
            difference is the answers' flush, reported beside the targets.

Every figure is the child's whole run, from process start to exit (imports, IMAP login, the
fold at the end included); the baseline's fetch-and-parse phase alone is shown too. Each child
is started by a launcher of a few MB (bench/common.py) that reports its wait4() rusage (Linux
charges the spawning process's RSS to a child, so it must not be this benchmark) and adds up
the memory (PSS) of the program and its processes every 50 ms: mailer reads large batches in
worker processes (mailer/readers.py), and the RSS column is the larger of the largest
process's peak RSS and the peak of that sum. CPU seconds (the workers' included) are printed
beside wall time because other work on the machine slows wall time; the 1-minute load average
at the end of each child is printed too.

--stored K,…: for each K, a state holding K registrations (with their inbound message, answer
and raw .eml, written through mailer.store in the shapes watcher.py writes) ingests a fixed
batch of B replies (--batch, default 2,000, a second mailbox) with answers sent, and again
only the last 20 of them; the per-message cost is the difference over the B − 20 messages, so
start-up, loading K and the one fold per run cancel out. Its CPU cost at the largest K must
stay within 1.5 × that at the smallest (the wall figure is shown too).

Exit status: 0 when every target passes, 1 when one fails, 2 when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import imaplib
import importlib
import json
import os
import platform
import random
import re
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aioimaplib
from common import (  # bench/ is the script folder, so its modules import directly
    BenchError,
    ChildResult,
    Sink,
    child_failed,
    choose_sink,
    free_port,
    in_scratch_folder,
    rewrite_toml,
    run_child,
    slug,
    verdict,
)

from mailer.contacts import read_contacts
from mailer.imap_client import FETCH_BATCH, LIST_BATCH
from mailer.reading.understand import message_key
from mailer.render import Renderer
from mailer.respond import answer_message_id
from mailer.settings import load_settings
from mailer.store import open_state

REPO = Path(__file__).resolve().parents[1]
NOW = "2020-10-19T09:00:00+02:00"  # the rehearsal clock: the watcher's first start
WATERMARK = datetime(2020, 10, 19, 7, 0, tzinfo=UTC)  # = NOW: earlier replies are backlog
DEADLINE = datetime(2020, 10, 26, 9, 0, tzinfo=UTC)  # the workshop's: 10:00 CET
END = datetime(2020, 10, 31, 22, 0, tzinfo=UTC)
PASSWORD = "sekret"  # tests/dovecot.py: every user logs in with one password
BATCH = FETCH_BATCH  # UIDs per FETCH: the baseline fetches as mailer does
FIXED_N = 20  # the tiny run subtracted in --stored: start-up, load and fold alone

TARGET_SHARE = 0.40  # mailer ≥ 40 % of the baseline's msg/s
TARGET_RATE = 500.0  # and ≥ 500 msg/s end to end
TARGET_SCALE = 1.5  # per-message cost at the largest --stored ≤ 1.5 × at the smallest
TARGET_RSS_MB = 200.0


# ---------------------------------------------------------------------------------------------
# People and the replies they write


_FEMALE = ("Agnieszka", "Małgorzata", "Łucja", "Anna", "Katarzyna", "Joanna", "Elżbieta",
           "Zofia", "Bożena", "Grażyna", "Jadwiga", "Dorota", "Urszula", "Żaneta", "Teresa")
_MALE = ("Grzegorz", "Łukasz", "Paweł", "Tomasz", "Michał", "Piotr", "Wojciech", "Krzysztof",
         "Jędrzej", "Bartłomiej", "Zbigniew", "Mirosław", "Przemysław", "Sławomir", "Józef")
_SURNAMES = ("Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
             "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Mazur", "Król",
             "Wieczorek", "Jabłoński", "Wróbel", "Nowak", "Żółkiewski", "Ślęzak", "Kołodziej",
             "Gołębiowski", "Łoziński", "Małecki", "Zawadzki", "Kamińska-Źrebiec")
_POSITIONS = ("Kierownik Referatu Rozwoju", "Naczelnik Wydziału Strategii",
              "Zastępca Prezydenta Miasta", "Dyrektor Biura Rozwoju Miasta",
              "Główny specjalista ds. funduszy europejskich", "Sekretarz Miasta", "Burmistrz",
              "Pełnomocnik Prezydenta ds. Smart City", "Inspektor w Wydziale Inwestycji")
_CITIES = ("Gdynia", "Łódź", "Kraków", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Bydgoszcz",
           "Lublin", "Białystok", "Katowice", "Częstochowa", "Radom", "Toruń", "Kielce",
           "Rzeszów", "Gliwice", "Zabrze", "Olsztyn", "Bielsko-Biała", "Zielona Góra", "Opole",
           "Tychy", "Gorzów Wielkopolski", "Elbląg", "Płock", "Wałbrzych", "Włocławek",
           "Tarnów", "Chorzów", "Koszalin", "Kalisz", "Legnica", "Grudziądz", "Słupsk",
           "Jastrzębie-Zdrój", "Nowy Sącz", "Jelenia Góra", "Siedlce", "Mysłowice", "Piła",
           "Piotrków Trybunalski", "Ostrów Wielkopolski", "Suwałki", "Gniezno", "Żory", "Ełk",
           "Zamość", "Łomża", "Chełm", "Kędzierzyn-Koźle", "Przemyśl", "Świdnica", "Będzin")
_PHONES = ("58 123 45 67", "+48 601 234 567", "601-234-567", "(22) 555 12 34", "tel. 42 638 44 00",
           "", "501234567", "+48 (12) 616 12 34", "brak")
_EVENTS = ("oba", "warsztat Smart City", "PIM", "obydwa", "Smart City i PIM", "oba wydarzenia",
           "warsztat, PIM", "Partnerska Inicjatywa Miast")
_GREETINGS = ("Dzień dobry,", "Szanowni Państwo,", "Dzień dobry!", "Witam,", "Dzien dobry,")
_CLOSINGS = ("Z poważaniem", "Pozdrawiam serdecznie", "Z wyrazami szacunku", "Pozdrawiam",
             "Łączę pozdrowienia")
_ISO_8859_2_SAFE = str.maketrans({"„": '"', "”": '"', "“": '"', "–": "-", "—": "-", "…": "...",
                                  "’": "'", "•": "*", "\u00a0": " "})




def _feminine(surname: str) -> str:
    for masculine, feminine in (("ski", "ska"), ("cki", "cka")):
        if surname.endswith(masculine):
            return surname[: -len(masculine)] + feminine
    return surname


@dataclass(frozen=True)
class Person:
    """An official of a city's office."""

    first: str
    last: str
    position: str
    city: str
    email: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


def make_person(rng: random.Random, serial: int, tag: str = "") -> Person:
    female = rng.random() < 0.5
    first = rng.choice(_FEMALE if female else _MALE)
    last = rng.choice(_SURNAMES)
    last = _feminine(last) if female else last
    city = rng.choice(_CITIES)
    email = f"{slug(first)}.{slug(last)}{tag}{serial}@um.{slug(city)}.example.com"
    return Person(first, last, rng.choice(_POSITIONS), city, email)


@dataclass(frozen=True)
class Reply:
    """One message for the inbox and what it was written to be."""

    data: bytes  # CRLF line ends: what Dovecot returns in BODY[]
    received: datetime  # the INTERNALDATE given to APPEND
    kind: str  # the kind mailer should find (SPEC §9)
    variant: str  # how it was written
    message_id: str


@dataclass(frozen=True)
class Invitation:
    """The campaign's invitation as a city received it: what replies quote."""

    subject: str
    text: str
    message_id: str


def render_invitation(config: Path) -> Invitation:
    """mailer's own rendering of the newsletter for the first contact of the list."""
    settings = load_settings(config)
    renderer = Renderer(settings, now=datetime.fromisoformat(NOW))
    contact = read_contacts(settings.campaign.recipients).contacts[0]
    sent = renderer.invitation(contact)
    msg = message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return Invitation(sent.subject, str(body.get_content()), sent.message_id)


# The kinds of reply, their share of the mix, and the kind mailer should find. Completions and
# cancellations follow an earlier reply of the same sender (an incomplete form, a registration).
MIX: tuple[tuple[str, int, str], ...] = (
    ("registration", 30, "registration"),
    ("registration-outlook", 12, "registration"),
    ("registration-html", 5, "registration"),
    ("late", 8, "registration"),
    ("incomplete", 7, "registration"),
    ("two-registrants", 4, "registration"),
    ("backlog", 2, "registration"),
    ("unsubscribe", 5, "unsubscribe"),
    ("auto-reply", 9, "auto_reply"),
    ("bounce", 6, "bounce"),
    ("other", 6, "other"),
)
FOLLOW_UPS: tuple[tuple[str, int, str], ...] = (
    ("completion", 3, "registration"),
    ("cancellation", 3, "cancellation"),
)


class ReplyWriter:
    """Writes replies as mail clients do: Gmail, Thunderbird, Outlook (text and HTML), robots."""

    def __init__(self, rng: random.Random, invitation: Invitation, answer_domain: str) -> None:
        self.rng = rng
        self.invitation = invitation
        self.answer_domain = answer_domain
        self.subject = f"Re: {invitation.subject}"
        self.sent = "poniedziałek, 19 października 2020 09:00"
        self.serial = 0

    # -- pieces --------------------------------------------------------------------------

    def _message(self, person: Person, subject: str, when: datetime, *,
                 in_reply_to: str | None = None) -> EmailMessage:
        self.serial += 1
        msg = EmailMessage()
        msg["From"] = f"{person.name} <{person.email}>"
        msg["To"] = "rejestracja@example.com"
        msg["Authentication-Results"] = f"mx.example.com; dmarc=pass header.from={person.domain}"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(when - timedelta(seconds=self.rng.randint(2, 90)))
        msg["Message-ID"] = f"<{self.rng.getrandbits(64):016x}.{self.serial}@mail.{person.domain}>"
        parent = in_reply_to or self.invitation.message_id
        msg["In-Reply-To"] = parent
        msg["References"] = parent
        msg["MIME-Version"] = "1.0"
        return msg

    def form(self, person: Person, *, event: str | None = None, city: str | None = None,
             email: str | None = None, name: str | None = None) -> str:
        values = (event if event is not None else self.rng.choice(_EVENTS),
                  name if name is not None else person.name, person.position,
                  city if city is not None else f"Urząd Miasta {person.city}",
                  email if email is not None else self.rng.choice((person.email, "")),
                  self.rng.choice(_PHONES))
        style = self.rng.random()
        if style < 0.6:
            labels = ("Wydarzenie (warsztat Smart City / PIM / oba)", "Imię i nazwisko",
                      "Stanowisko", "Miasto / urząd", "E-mail", "Telefon")
            return "\n".join(f"{label}: {value}" for label, value in zip(labels, values,
                                                                         strict=True))
        if style < 0.8:  # synonyms, no diacritics, dash separators
            labels = ("Udział w", "Imie i nazwisko", "Funkcja", "Instytucja",
                      "Adres e-mail", "Tel.")
            return "\n".join(f"{label} - {value}" for label, value in zip(labels, values,
                                                                          strict=True))
        labels = ("Wydarzenie:", "Imię i nazwisko:", "Stanowisko:", "Miasto / urząd:", "E-mail:",
                  "Telefon:")  # values on the next line, as people fill a copied template
        return "\n".join(f"{label}\n{value}\n" for label, value in zip(labels, values,
                                                                        strict=True))

    def _signature(self, person: Person) -> str:
        return (f"{self.rng.choice(_CLOSINGS)}\n{person.name}\n{person.position}\n"
                f"Urząd Miasta {person.city}\n")

    def gmail_quote(self) -> str:
        lines = [f"> {line}" if line else ">" for line in self.invitation.text.splitlines()]
        return ("W dniu pon., 19 paź 2020 o 09:00 Departament Strategii MFiPR "
                "<strategia@example.com> napisał(a):\n" + "\n".join(lines) + "\n")

    def thunderbird_quote(self) -> str:
        lines = [f"> {line}" if line else ">" for line in self.invitation.text.splitlines()]
        return "W dniu 19.10.2020 o 09:00, Departament Strategii MFiPR pisze:\n" + \
            "\n".join(lines) + "\n"

    def outlook_quote(self, person: Person) -> str:
        return (f"-----Wiadomość oryginalna-----\nOd: Departament Strategii MFiPR "
                f"<strategia@example.com>\nWysłano: {self.sent}\nDo: {person.name} "
                f"<{person.email}>\nTemat: {self.invitation.subject}\n\n{self.invitation.text}")

    def _quote(self, person: Person) -> str:
        roll = self.rng.random()
        if roll < 0.5:
            return self.gmail_quote()
        if roll < 0.75:
            return self.thunderbird_quote()
        return "" if roll < 0.9 else self.outlook_quote(person)

    def _text(self, msg: EmailMessage, text: str, charset: str = "utf-8") -> bytes:
        cte = self.rng.choice((None, None, "quoted-printable", "base64"))
        msg.set_content(text, charset=charset, cte=cte)
        return msg.as_bytes(policy=policy.SMTP)

    # -- kinds ---------------------------------------------------------------------------

    def registration(self, person: Person, when: datetime, **form: str) -> bytes:
        msg = self._message(person, self.subject, when)
        body = (f"{self.rng.choice(_GREETINGS)}\n\nw odpowiedzi na zaproszenie zgłaszam "
                f"udział.\n\n{self.form(person, **form)}\n\n{self._signature(person)}\n"
                f"{self._quote(person)}")
        return self._text(msg, body)

    def registration_outlook(self, person: Person, when: datetime) -> bytes:
        """Outlook plain text: unprefixed history, Windows-1250 or ISO-8859-2 (or mislabelled)."""
        msg = self._message(person, f"RE: {self.invitation.subject}", when)
        body = (f"{self.rng.choice(_GREETINGS)}\nprzesyłam zgłoszenie.\n\n{self.form(person)}"
                f"\n\n{self._signature(person)}\n{self.outlook_quote(person)}")
        roll = self.rng.random()
        if roll < 0.4:
            return self._text(msg, body, "windows-1250")
        if roll < 0.7:
            return self._text(msg, body.translate(_ISO_8859_2_SAFE), "iso-8859-2")
        # Outlook's classic: Windows-1250 bytes labelled ISO-8859-2.
        msg.set_content(body.encode("cp1250"), maintype="text", subtype="plain",
                        cte="quoted-printable", params={"charset": "iso-8859-2"})
        return msg.as_bytes(policy=policy.SMTP)

    def registration_html(self, person: Person, when: datetime) -> bytes:
        """Outlook HTML-only: the form as a table, the history below a border."""
        msg = self._message(person, f"RE: {self.invitation.subject}", when)
        charset = self.rng.choice(("utf-8", "windows-1250"))
        labels = ("Wydarzenie (warsztat Smart City / PIM / oba):", "Imię i nazwisko:",
                  "Stanowisko:", "Miasto / urząd:", "E-mail:", "Telefon:")
        values = (self.rng.choice(_EVENTS), person.name, person.position, person.city,
                  person.email, self.rng.choice(_PHONES))
        cell = '<td width="200" valign="top" style="border:solid windowtext 1.0pt">'
        rows = "".join(f'<tr>{cell}<p class="MsoNormal"><b>{html.escape(label)}</b></p></td>'
                       f'<td width="300" valign="top"><p class="MsoNormal">{html.escape(value)}'
                       f"</p></td></tr>\n" for label, value in zip(labels, values, strict=True))
        quoted = "".join(f'<p class="MsoNormal">{html.escape(p)}</p>\n'
                         for p in self.invitation.text.split("\n\n"))
        markup = (
            f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={charset}">'
            '<style><!-- p.MsoNormal {margin:0cm; font-size:11.0pt; font-family:"Calibri",'
            'sans-serif;} --></style></head><body lang="PL"><div class="WordSection1">\n'
            f'<p class="MsoNormal">{self.rng.choice(_GREETINGS)}</p>\n<p class="MsoNormal">'
            'przesyłam zgłoszenie:</p>\n<table class="MsoTableGrid" border="1" cellspacing="0" '
            f'cellpadding="0">\n{rows}</table>\n<p class="MsoNormal">Z poważaniem<br>'
            f'{html.escape(person.name)}</p>\n<div style="border:none;border-top:solid #E1E1E1 '
            '1.0pt"><p class="MsoNormal"><b>Od:</b> Departament Strategii MFiPR '
            f"&lt;strategia@example.com&gt;<br><b>Wysłane:</b> {self.sent}<br><b>Do:</b> "
            f"{html.escape(person.name)}<br><b>Temat:</b> {html.escape(self.invitation.subject)}"
            f"</p></div>\n{quoted}</div></body></html>\n")
        msg.set_content(markup, subtype="html", charset=charset, cte="quoted-printable")
        return msg.as_bytes(policy=policy.SMTP)

    def two_registrants(self, person: Person, when: datetime) -> bytes:
        colleague = make_person(self.rng, self.serial, tag="x")
        colleague = Person(colleague.first, colleague.last, colleague.position, person.city,
                           f"{slug(colleague.first)}.{slug(colleague.last)}@{person.domain}")
        msg = self._message(person, self.subject, when)
        body = (f"{self.rng.choice(_GREETINGS)}\n\nzgłaszam dwie osoby z naszego urzędu:\n\n"
                f"{self.form(person, email=person.email)}\n\n"
                f"{self.form(colleague, email=colleague.email)}\n\n{self._signature(person)}\n"
                f"{self.gmail_quote()}")
        return self._text(msg, body)

    def incomplete(self, person: Person, when: datetime) -> bytes:
        roll = self.rng.random()
        if roll < 0.5:
            return self.registration(person, when, city="")
        if roll < 0.8:
            return self.registration(person, when, email=person.email.partition("@")[0] + "@")
        return self.registration(person, when, name="-")

    def completion(self, person: Person, when: datetime, earlier: bytes) -> bytes:
        """A reply to the `incomplete` answer with only the corrected fields."""
        answer_id = answer_message_id(message_key(earlier), self.answer_domain)
        msg = self._message(person, f"Re: {self.subject}", when, in_reply_to=answer_id)
        body = (f"{self.rng.choice(_GREETINGS)}\n\nuzupełniam:\n"
                f"Imię i nazwisko: {person.name}\nMiasto / urząd: Urząd Miasta {person.city}\n"
                f"E-mail: {person.email}\n\n{self.rng.choice(_CLOSINGS)}\n{person.name}\n")
        return self._text(msg, body)

    def unsubscribe(self, person: Person, when: datetime) -> bytes:
        roll = self.rng.random()
        if roll < 0.4:  # a client answering List-Unsubscribe's mailto:?subject=wypisz
            msg = self._message(person, "wypisz", when)
            return self._text(msg, "wypisz\n")
        msg = self._message(person, self.subject, when)
        words = self.rng.choice(("Proszę mnie wypisać z listy mailingowej.",
                                 "Rezygnuję z newslettera, proszę nie przysyłać więcej "
                                 "wiadomości.", "Nie chcę otrzymywać tych wiadomości."))
        return self._text(msg, f"{self.rng.choice(_GREETINGS)}\n{words}\n\n"
                               f"{person.name}\n\n{self.gmail_quote()}")

    def cancellation(self, person: Person, when: datetime) -> bytes:
        msg = self._message(person, self.subject, when)
        words = self.rng.choice(("niestety rezygnuję z udziału w warsztacie – zmiana planów.",
                                 "odwołuję zgłoszenie, nie dam rady przyjechać.",
                                 "z przykrością informuję, że nie wezmę jednak udziału."))
        return self._text(msg, f"{self.rng.choice(_GREETINGS)}\n{words}\n\n"
                               f"{self._signature(person)}\n{self.thunderbird_quote()}")

    def auto_reply(self, person: Person, when: datetime) -> bytes:
        roll = self.rng.random()
        text = (f"Dzień dobry,\n\nprzebywam na urlopie do 2 listopada 2020 r. W sprawach "
                f"pilnych proszę o kontakt z sekretariatem Urzędu Miasta {person.city}.\n\n"
                f"{person.name}\n")
        if roll < 0.4:  # Gmail vacation responder
            msg = self._message(person, self.invitation.subject, when)
            msg["Auto-Submitted"] = "auto-replied"
            return self._text(msg, text)
        if roll < 0.8:  # Exchange out-of-office: rule headers, text + HTML in base64
            msg = self._message(person, f"Odpowiedź automatyczna: {self.invitation.subject}",
                                when)
            msg["X-MS-Exchange-Inbox-Rules-Loop"] = person.email
            msg["Auto-Submitted"] = "auto-generated"
            msg["X-Auto-Response-Suppress"] = "All"
            msg.set_content(text, cte="base64")
            msg.add_alternative("<html><body>" + "".join(
                f"<p>{html.escape(p)}</p>" for p in text.split("\n\n")) + "</body></html>",
                subtype="html", cte="base64")
            return msg.as_bytes(policy=policy.SMTP)
        # An electronic document system's receipt: only the subject says it is automatic.
        msg = self._message(person, "Potwierdzenie wpływu korespondencji", when)
        return self._text(msg, f"Urząd Miasta {person.city} potwierdza wpływ korespondencji. "
                               f"Nadano numer KW-{self.rng.randint(1000, 99999)}/2020.\n")

    def bounce(self, failed: Person, when: datetime) -> bytes:
        """An RFC 3464 DSN from Postfix, or a qmail failure notice (flufl.bounce reads it)."""
        self.serial += 1
        mx = f"mx{self.rng.randint(1, 3)}.{failed.domain}"
        head = (f"From: MAILER-DAEMON@{mx} (Mail Delivery System)\r\n"
                f"To: rejestracja@example.com\r\nDate: {format_datetime(when)}\r\n"
                f"Message-ID: <{self.rng.getrandbits(64):016x}.{self.serial}@{mx}>\r\n")
        original = (f"From: Departament Strategii MFiPR <strategia@example.com>\r\n"
                    f"To: {failed.email}\r\nSubject: Zaproszenie: warsztat Smart City\r\n"
                    f"Message-ID: {self.invitation.message_id}\r\n")
        if self.rng.random() < 0.3:
            return (f"{head}Subject: failure notice\r\n\r\nHi. This is the qmail-send program "
                    f"at {mx}.\r\nI'm afraid I wasn't able to deliver your message to the "
                    f"following addresses.\r\nThis is a permanent error; I've given up. Sorry "
                    f"it didn't work out.\r\n\r\n<{failed.email}>:\r\nSorry, no mailbox here by "
                    f"that name. (#5.1.1)\r\n\r\n--- Below this line is a copy of the message."
                    f"\r\n\r\n{original}\r\n").encode()
        boundary = f"{self.rng.getrandbits(48):012X}.{self.serial}/{mx}"
        return (f"{head}Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: "
                f"auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
                f'report-type=delivery-status;\r\n\tboundary="{boundary}"\r\n\r\n'
                f"This is a MIME-encapsulated message.\r\n\r\n--{boundary}\r\n"
                f"Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii"
                f"\r\n\r\nThis is the mail system at host {mx}.\r\n\r\nI'm sorry to have to "
                f"inform you that your message could not\r\nbe delivered to one or more "
                f"recipients.\r\n\r\n<{failed.email}>: host {mx} said: 550 5.1.1 User unknown"
                f"\r\n\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: "
                f"message/delivery-status\r\n\r\nReporting-MTA: dns; {mx}\r\nArrival-Date: "
                f"{format_datetime(when)}\r\n\r\nFinal-Recipient: rfc822; {failed.email}\r\n"
                f"Original-Recipient: rfc822;{failed.email}\r\nAction: failed\r\nStatus: 5.1.1"
                f"\r\nDiagnostic-Code: smtp; 550 5.1.1 <{failed.email}>: Recipient address "
                f"rejected: User unknown\r\n\r\n--{boundary}\r\nContent-Description: Undelivered"
                f" Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n"
                f"--{boundary}--\r\n").encode()

    def other(self, person: Person, when: datetime) -> bytes:
        msg = self._message(person, self.subject, when)
        words = self.rng.choice((
            "czy warsztat będzie nagrywany? Nie mogę być obecny na żywo.",
            "proszę o przesłanie prezentacji po warsztacie.",
            "dziękuję za informację, przekazałam ją do Wydziału Rozwoju.",
            "czy w naborze do PIM mogą startować miasta poniżej 20 tys. mieszkańców?"))
        return self._text(msg, f"{self.rng.choice(_GREETINGS)}\n{words}\n\n"
                               f"{self._signature(person)}\n{self._quote(person)}")


def _on_time(rng: random.Random) -> datetime:
    """Most registrations come in the first days after the invitation."""
    span = (DEADLINE - WATERMARK).total_seconds() - 3600
    return WATERMARK + timedelta(seconds=rng.triangular(60, span, 60))


def _any_time(rng: random.Random) -> datetime:
    return WATERMARK + timedelta(seconds=rng.uniform(60, (END - WATERMARK).total_seconds()))


def _reply_id(data: bytes) -> str:
    match = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE | re.IGNORECASE)
    assert match is not None
    return match.group(1).decode()


def _write_primary(writer: ReplyWriter, variant: str, person: Person,
                   rng: random.Random) -> tuple[bytes, datetime]:
    if variant == "registration-outlook":
        when = _on_time(rng)
        return writer.registration_outlook(person, when), when
    if variant == "registration-html":
        when = _on_time(rng)
        return writer.registration_html(person, when), when
    if variant == "late":  # after the workshop's deadline, before PIM's
        when = DEADLINE + timedelta(seconds=rng.uniform(3600, (END - DEADLINE).total_seconds()))
        return writer.registration(person, when, event=rng.choice(("oba", "warsztat"))), when
    if variant == "backlog":  # before the watermark: stored for review, not answered
        when = WATERMARK - timedelta(days=rng.uniform(0.5, 14))
        return writer.registration(person, when), when
    simple: dict[str, Callable[[Person, datetime], bytes]] = {
        "registration": writer.registration, "incomplete": writer.incomplete,
        "two-registrants": writer.two_registrants, "unsubscribe": writer.unsubscribe,
        "auto-reply": writer.auto_reply, "bounce": writer.bounce, "other": writer.other}
    when = _on_time(rng) if variant in ("registration", "incomplete", "two-registrants") \
        else _any_time(rng)
    return simple[variant](person, when), when


def make_replies(n: int, seed: int, invitation: Invitation, answer_domain: str,
                 tag: str = "") -> list[Reply]:
    """N replies in INTERNALDATE order (so UIDs follow arrival, as in a real inbox)."""
    rng = random.Random(seed)
    writer = ReplyWriter(rng, invitation, answer_domain)
    follow_total = sum(w for _, w, _ in FOLLOW_UPS)
    primaries = n - round(n * follow_total / 100)
    weights = [w for _, w, _ in MIX]
    variants = rng.choices([v for v, _, _ in MIX], weights=weights, k=primaries)
    expected = {v: k for v, _, k in (*MIX, *FOLLOW_UPS)}
    replies: list[Reply] = []
    earlier: dict[str, list[tuple[Person, datetime, bytes]]] = {"incomplete": [],
                                                                 "registration": []}
    for serial, variant in enumerate(variants):
        person = make_person(rng, serial, tag)
        data, when = _write_primary(writer, variant, person, rng)
        replies.append(Reply(data, when, expected[variant], variant, _reply_id(data)))
        if variant in earlier:
            earlier[variant].append((person, when, data))
    for variant, share, kind in FOLLOW_UPS:
        pool = earlier["incomplete" if variant == "completion" else "registration"]
        count = min(len(pool), round(n * share / 100), n - len(replies))
        for person, at, data in rng.sample(pool, count):
            when = min(at + timedelta(hours=rng.uniform(1, 72)), END)
            out = writer.completion(person, when, data) if variant == "completion" else \
                writer.cancellation(person, when)
            replies.append(Reply(out, when, kind, variant, _reply_id(out)))
    while len(replies) < n:  # pools too small (tiny --n): top up with registrations
        person = make_person(rng, len(replies), tag)
        when = _on_time(rng)
        data = writer.registration(person, when)
        replies.append(Reply(data, when, "registration", "registration", _reply_id(data)))
    replies.sort(key=lambda r: r.received)
    return replies


# ---------------------------------------------------------------------------------------------
# Dovecot: the repository's test helper, filled by MULTIAPPEND (RFC 3502)


def dovecot_class() -> Any:
    """tests/dovecot.py's Dovecot: a private instance on 127.0.0.1 (the repository on sys.path)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("tests.dovecot").Dovecot


def _read_tagged(reader: Any, tag: bytes) -> bytes:
    while True:
        line: bytes = reader.readline()
        if not line:
            raise BenchError("Dovecot closed the connection")
        if line.startswith(tag + b" "):
            return line


def append_all(port: int, user: str, replies: Sequence[Reply], chunk: int = 250) -> int:
    """APPEND every reply in order, `chunk` per MULTIAPPEND command; returns the UIDVALIDITY.

    One command per chunk keeps the UIDs in the given (arrival) order; LITERAL+ spares the
    round trip per message. About 2,000 messages/s here, against ~300/s with one imaplib APPEND
    per message.
    """
    uidvalidity = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"* OK"):
            raise BenchError("Dovecot did not greet")
        sock.sendall(f"L LOGIN {user} {PASSWORD}\r\n".encode())
        login = _read_tagged(reader, b"L")
        if not login.startswith(b"L OK") or b"MULTIAPPEND" not in login \
                or b"LITERAL+" not in login:
            raise BenchError(f"Dovecot login: {login!r} (MULTIAPPEND and LITERAL+ needed)")
        for number, start in enumerate(range(0, len(replies), chunk)):
            tag = f"A{number}".encode()
            parts = [tag + b" APPEND INBOX"]
            for reply in replies[start:start + chunk]:
                date = imaplib.Time2Internaldate(reply.received).encode()
                parts.append(b" () %s {%d+}\r\n%s" % (date, len(reply.data), reply.data))
            sock.sendall(b"".join(parts) + b"\r\n")
            done = _read_tagged(reader, tag)
            match = re.search(rb"\[APPENDUID (\d+) ", done)
            if not done.startswith(tag + b" OK") or match is None:
                raise BenchError(f"APPEND refused: {done[:200]!r}")
            uidvalidity = int(match.group(1))
        sock.sendall(b"Z LOGOUT\r\n")
    return uidvalidity


# ---------------------------------------------------------------------------------------------
# Workspace: the repository's campaign, [imap] at the private Dovecot, [smtp] at the sink




def make_workspace(root: Path, *, imap_port: int, user: str, smtp_port: int) -> Path:
    """A copy of the repository's campaign under `root`; returns its campaign.toml."""
    root.mkdir(parents=True)
    for folder in ("templates", "recipients"):
        shutil.copytree(REPO / folder, root / folder)
    text = rewrite_toml((REPO / "campaign.toml").read_text(encoding="utf-8"), {
        ("smtp", "host"): '"127.0.0.1"', ("smtp", "port"): str(smtp_port),
        ("smtp", "security"): '"none"', ("smtp", "username"): '""',
        ("imap", "host"): '"127.0.0.1"', ("imap", "port"): str(imap_port),
        ("imap", "security"): '"none"', ("imap", "username"): json.dumps(user),
        ("imap", "folder"): '"INBOX"', ("imap", "processed_folder"): '""',
        ("storage", "path"): '"state"',
        # The replies carry our MX's DMARC pass, so their answers go out unreviewed, and
        # all of them within the run (the default cap is 200 an hour).
        ("answers", "trusted_authserv_id"): '"mx.example.com"',
        ("answers", "max_per_hour"): "1000000",
    })
    config = root / "campaign.toml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config)
    assert settings.imap.port == imap_port and settings.smtp.port == smtp_port
    assert settings.storage.resolve().is_relative_to(root.resolve())
    return config


# ---------------------------------------------------------------------------------------------
# The baseline: aioimaplib + the stdlib parse, nothing else


async def baseline_read(port: int, user: str) -> tuple[int, int]:
    """List the folder, fetch it in batches of BATCH UIDs, parse each message's body."""
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(user, PASSWORD)
    await client.select("INBOX")
    # As mailer lists: UID SEARCH, then sizes LIST_BATCH UIDs at a time (one `UID FETCH 1:*`
    # of thousands of lines overflows aioimaplib's recursion per response line).
    search = await client.uid_search("UID 1:*", charset=None)
    uids = sorted({int(word) for line in search.lines if isinstance(line, bytes)
                   for word in line.split() if word.isdigit()})
    for start in range(0, len(uids), LIST_BATCH):
        sizes = await client.uid("fetch", ",".join(map(str, uids[start:start + LIST_BATCH])),
                                 "(UID RFC822.SIZE)")
        if sizes.result != "OK":
            raise BenchError(f"baseline size listing: {sizes.lines[-1]!r}")
    parsed = chars = 0
    for start in range(0, len(uids), BATCH):
        batch = ",".join(str(u) for u in uids[start:start + BATCH])
        response = await client.uid("fetch", batch, "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        if response.result != "OK":
            raise BenchError(f"baseline fetch: {response.lines[-1]!r}")
        for line in response.lines:
            if not isinstance(line, bytearray):
                continue
            msg = message_from_bytes(bytes(line), policy=policy.default)
            assert isinstance(msg, EmailMessage)
            body = msg.get_body(preferencelist=("plain", "html"))
            with contextlib.suppress(LookupError):  # an unknown charset
                chars += len(body.get_content()) if body is not None else 0
            parsed += 1
    await client.logout()
    return parsed, chars


def child_baseline(port: int, user: str) -> None:
    """`--child baseline`: print {"messages", "seconds"} of the fetch-and-parse phase."""
    start = time.perf_counter()
    parsed, chars = asyncio.run(baseline_read(port, user))
    print(json.dumps({"messages": parsed, "chars": chars,
                      "seconds": time.perf_counter() - start}), flush=True)


# ---------------------------------------------------------------------------------------------
# A state that already holds K registrations, in the shapes watcher.py writes


def _stored_docs(i: int, rng: random.Random,
                 messages: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    person = make_person(rng, i, tag="s")
    key = hashlib.sha256(f"stored reply {i}".encode()).hexdigest()[:32]
    received = _on_time(rng).isoformat()
    processed = datetime.fromisoformat(NOW).isoformat()
    invitation = {"contact": person.email, "city": person.city, "by": "address"}
    events = {"smart-city": "confirmed", "pim": "confirmed"}
    values = {"name": person.name, "position": person.position, "city": person.city,
              "email": person.email, "phone": "+48581234567", "event": "smart-city, pim"}
    message_id = f"<{key[:16]}@mail.{person.domain}>"
    registration = {
        "email": person.email, "name": person.name, "position": person.position,
        "city": person.city, "phone": "+48581234567", "events": events,
        "requested": ["smart-city", "pim"], "status": "complete", "problems": [],
        "warnings": [], "values": values, "sender": person.email, "received": received,
        "messages": [key], "invitation": invitation, "history": [], "updated": processed}
    inbound = {
        "uid": i + 1, "uidvalidity": 1, "size": 6000, "headers_only": False,
        "received": received, "sender": person.email,
        "subject": "Re: Zaproszenie: warsztat „Smart City” 26 października",
        "message_id": message_id, "kind": "registration", "reason": "filled registration form",
        "automated": None, "path": str(messages / f"{key}.eml"), "invitation": invitation,
        "review": None, "processed": processed, "answer": "confirmation", "refusal": None,
        "backlog": False, "effects": {"registrations": [person.email]}}
    answer = {
        "inbound": key, "to": person.email, "template": "confirmation", "status": "sent",
        "attempts": 1, "created": processed,
        "message_id": answer_message_id(key, "example.com"), "in_reply_to": message_id,
        "references": [message_id], "subject": "Re: Zaproszenie: warsztat „Smart City”",
        "registrants": [{"name": person.name, "position": person.position,
                         "city": person.city, "email": person.email, "phone": "+48581234567",
                         "confirmed": ["smart-city", "pim"], "late": [], "problems": [],
                         "warnings": []}],
        "cancelled_events": [], "received": received, "code": 250,
        "reply": "2.0.0 Ok: queued", "sent": processed}
    return {"registrations": (person.email, registration), "inbound": (key, inbound),
            "answers": (key, answer)}


def prepopulate(config: Path, k: int, *, seed: int,
                pointer: tuple[int, int] | None) -> None:
    """K registrations with their inbound messages (and .eml files) and sent answers, folded.

    `pointer` (uidvalidity, last_uid) makes the watcher read only the UIDs above last_uid.
    """
    settings = load_settings(config)
    messages = settings.storage / "messages"
    messages.mkdir(parents=True, mode=0o700)
    rng = random.Random(seed)
    records: list[tuple[str, str, dict[str, Any]]] = [
        ("meta", "watcher_first_start", {"at": NOW})]
    if pointer is not None:
        records.append(("mailbox", settings.imap.folder,
                        {"uidvalidity": pointer[0], "last_uid": pointer[1]}))
    filler = b"Dzie\xc5\x84 dobry,\r\n" + b"> cytat zaproszenia\r\n" * 250
    for i in range(k):
        for table, (key, doc) in _stored_docs(i, rng, messages).items():
            records.append((table, key, doc))
            if table == "inbound":
                (messages / f"{key}.eml").write_bytes(b"From: x@example.com\r\n\r\n" + filler)
    with open_state(settings.storage, writer=True) as store:
        asyncio.run(store.put_many(records))  # one journal line, folded on close


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Measurement:
    """messages/s and peak RSS of one way of reading N messages."""

    label: str
    n: int
    seconds: float
    max_rss_kb: int
    note: str = ""
    cpu: float = 0.0  # user + system seconds of the child
    load: float = 0.0

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Messages per CPU second: what the rate would be with a CPU to itself."""
        return self.n / self.cpu if self.cpu else 0.0

    @property
    def rss_mb(self) -> float:
        return self.max_rss_kb / 1024


@dataclass
class MailerRun:
    """One `mailer watch --once`: the measurement, what the state holds, the sink's count."""

    measurement: Measurement
    kinds: Counter[str]
    answers: Counter[str]
    sink_count: int | None
    mismatches: Counter[tuple[str, str, str]] = field(default_factory=Counter)


def _mailer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILER_CONFIG", "MAILER_NOW")}
    env.update(MAILER_NOW=NOW, MAILER_IMAP_PASSWORD=PASSWORD)
    return env


def _run_mailer(config: Path, n: int, *, expect_pending: bool) -> ChildResult:
    result = run_child([sys.executable, "-m", "mailer", "-c", str(config), "watch", "--once"],
                       timeout=120 + n * 0.05, cwd=config.parent, env=_mailer_env())
    wanted = 3 if expect_pending else 0
    if result.returncode != wanted or f"{n} new messages" not in result.stdout:
        raise child_failed(f"mailer watch --once ({n} new expected, exit {wanted})", result)
    return result


def _read_outcome(config: Path, replies: Sequence[Reply]) -> tuple[Counter[str], Counter[str],
                                                                    Counter[tuple[str, str,
                                                                                  str]]]:
    """Kinds stored, answers by template/status, and replies read as another kind than meant."""
    with open_state(load_settings(config).storage, writer=False) as store:
        inbound = store.all("inbound")
        answers = Counter(f"{a['template']} {a['status']}" for a in store.all("answers"))
    by_id = {doc["message_id"]: doc["kind"] for doc in inbound}
    mismatches: Counter[tuple[str, str, str]] = Counter()
    for reply in replies:
        got = by_id.get(reply.message_id, "missing")
        if got != reply.kind:
            mismatches[(reply.variant, reply.kind, got)] += 1
    return Counter(doc["kind"] for doc in inbound), answers, mismatches


def measure_mailer(root: Path, tag: str, replies: Sequence[Reply], *, imap_port: int,
                   user: str, sink_kind: str | None) -> MailerRun:
    """`mailer watch --once` in a fresh workspace; `sink_kind` None: the SMTP port refuses."""
    n = len(replies)
    if sink_kind is None:
        config = make_workspace(root / tag, imap_port=imap_port, user=user,
                                smtp_port=free_port())
        result = _run_mailer(config, n, expect_pending=True)
        count = None
        label, note = "mailer, answers queued", "fetch → parse … → journal, answers pending"
    else:
        with Sink(sink_kind, root) as sink:
            config = make_workspace(root / tag, imap_port=imap_port, user=user,
                                    smtp_port=sink.port)
            result = _run_mailer(config, n, expect_pending=False)
            count = sink.stop()
        label, note = "mailer, answers sent", "the same + answers rendered, sent, marked"
    kinds, answers, mismatches = _read_outcome(config, replies)
    if sum(kinds.values()) != n:
        raise BenchError(f"{config.parent}: {sum(kinds.values())} inbound records, expected {n}")
    sent = sum(v for k, v in answers.items() if k.endswith(" sent"))
    if sink_kind is not None and count is not None and count != sent:
        raise BenchError(f"the sink accepted {count} messages, the state says {sent} sent")
    return MailerRun(Measurement(label, n, result.seconds, result.rss_kb, note,
                                 result.cpu, result.load), kinds,
                     answers, count, mismatches)


def measure_baseline(port: int, user: str, n: int) -> tuple[Measurement, Measurement]:
    """The baseline child: its whole run, and its fetch-and-parse phase alone."""
    result = run_child([sys.executable, __file__, "--child", "baseline", "--port", str(port),
                        "--user", user], timeout=60 + n * 0.01)
    if result.returncode != 0:
        raise child_failed("baseline", result)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["messages"] != n:
        raise BenchError(f"baseline: parsed {report['messages']} of {n} messages")
    return (Measurement("baseline: aioimaplib + stdlib", n, result.seconds, result.rss_kb,
                        "whole child process", result.cpu, result.load),
            Measurement("  its fetch + parse phase", n, report["seconds"], 0,
                        "from connect to the last get_content()"))


def median(runs: Sequence[Any], key: Callable[[Any], float]) -> Any:
    return sorted(runs, key=key)[len(runs) // 2]


@dataclass
class Scale:
    """mailer at several stored-state sizes: full batch and tiny batch per size."""

    batch: int
    runs: dict[int, tuple[Measurement, Measurement]]  # K → (full, fixed)

    def per_message(self, k: int, *, cpu: bool = False) -> float:
        """Seconds (wall, or CPU) per message net of the FIXED_N-message run."""
        full, fixed = self.runs[k]
        if cpu:
            return (full.cpu - fixed.cpu) / (full.n - fixed.n)
        return (full.seconds - fixed.seconds) / (full.n - fixed.n)

    def ratio(self, *, cpu: bool = False) -> float:
        sizes = sorted(self.runs)
        return self.per_message(sizes[-1], cpu=cpu) / self.per_message(sizes[0], cpu=cpu)

    def gross_ratio(self) -> float:
        sizes = sorted(self.runs)
        big, small = self.runs[sizes[-1]][0], self.runs[sizes[0]][0]
        return (big.seconds / big.n) / (small.seconds / small.n)


def measure_stored(root: Path, k: int, replies: Sequence[Reply], *, imap_port: int,
                   user: str, uidvalidity: int, sink_kind: str, seed: int,
                   repeat: int) -> tuple[Measurement, Measurement]:
    """Ingest the batch (and its last FIXED_N) on top of a state of K registrations."""
    def once(i: int, fixed: bool) -> Measurement:
        tag = f"stored-{k}-{'fixed' if fixed else 'full'}-{i}"
        n = FIXED_N if fixed else len(replies)
        with Sink(sink_kind, root) as sink:
            config = make_workspace(root / tag, imap_port=imap_port, user=user,
                                    smtp_port=sink.port)
            prepopulate(config, k, seed=seed,
                        pointer=(uidvalidity, len(replies) - FIXED_N) if fixed else None)
            result = _run_mailer(config, n, expect_pending=False)
        shutil.rmtree(root / tag, ignore_errors=True)
        return Measurement(f"{k:,} stored + {n:,} new", n, result.seconds, result.rss_kb,
                           cpu=result.cpu, load=result.load)

    full = median([once(i, False) for i in range(repeat)], key=lambda m: m.seconds)
    fixed = median([once(i, True) for i in range(max(3, repeat))], key=lambda m: m.seconds)
    return full, fixed


# ---------------------------------------------------------------------------------------------
# Report


def _row(m: Measurement) -> str:
    rss = f"{m.rss_mb:8.1f}" if m.max_rss_kb else f"{'–':>8}"
    cpu = (f"{m.cpu:7.2f} {m.cpu_rate:>9,.0f} {m.load:5.1f}" if m.cpu
           else f"{'–':>7} {'–':>9} {'':5}")
    return (f"  {m.label:<34} {m.n:>7,} {m.seconds:>8.2f} {m.rate:>9,.0f} {rss} {cpu}  {m.note}")


_HEADER = (f"  {'':<34} {'msgs':>7} {'seconds':>8} {'msg/s':>9} {'RSS MB':>8} {'CPU s':>7}"
           f" {'msg/CPU s':>9} {'load':>5}")




def _mix_lines(replies: Sequence[Reply]) -> list[str]:
    variants = Counter(r.variant for r in replies)
    return [f"  mix: {', '.join(f'{v} {c:,}' for v, c in variants.most_common())}"]


def report(args: argparse.Namespace, sink: str, replies: Sequence[Reply],
           base: tuple[Measurement, Measurement], queued: MailerRun, sent: MailerRun,
           scale: Scale | None) -> bool:
    print(f"\nmailer watch --once benchmark — {len(replies):,} replies in a private Dovecot "
          f"(127.0.0.1), UID FETCH in batches of {BATCH}")
    print(f"  {os.cpu_count()} CPUs, Python {platform.python_version()}, aioimaplib "
          f"{metadata.version('aioimaplib')}, sink: {sink}, runs per figure: {args.repeat}"
          " (median)")
    for line in _mix_lines(replies):
        print(line)
    print(f"\n{_HEADER}")
    for m in (*base, queued.measurement, sent.measurement):
        print(_row(m))
    flush = sent.measurement.seconds - queued.measurement.seconds
    answered = sum(v for k, v in sent.answers.items() if k.endswith(" sent"))
    print(f"  answers sent: {answered:,} (sink counted {sent.sink_count}); flushing them took "
          f"≈ {flush:.2f} s more ({answered / flush if flush > 0 else 0:,.0f} answers/s)")
    print(f"  kinds stored: {', '.join(f'{k} {c:,}' for k, c in sent.kinds.most_common())}")
    print(f"  answers: {', '.join(f'{k} {c:,}' for k, c in sorted(sent.answers.items()))}")
    for (variant, meant, got), count in sent.mismatches.most_common(8):
        print(f"  note: {count} '{variant}' replies read as {got}, not {meant}")
    whole, phase = base
    share_q = queued.measurement.rate / whole.rate
    share_s = sent.measurement.rate / whole.rate
    print(f"\n  mailer / baseline (whole processes): answers queued {share_q:.0%}, answers sent "
          f"{share_s:.0%}   (against the baseline's fetch+parse phase alone: "
          f"{queued.measurement.rate / phase.rate:.0%}, {sent.measurement.rate / phase.rate:.0%})")
    print(f"  per CPU second (what a CPU to itself would give): answers queued "
          f"{queued.measurement.cpu_rate / whole.cpu_rate:.0%} of the baseline, answers sent "
          f"{sent.measurement.cpu_rate / whole.cpu_rate:.0%}; load average "
          f"{min(m.load for m in (whole, queued.measurement, sent.measurement)):.1f}–"
          f"{max(m.load for m in (whole, queued.measurement, sent.measurement)):.1f} "
          f"on {os.cpu_count()} CPUs (other work on the machine slows every wall figure)")
    rss = max(queued.measurement.rss_mb, sent.measurement.rss_mb)
    targets = [
        (f"answers queued ≥ {TARGET_SHARE:.0%} of baseline", f"{share_q:.0%}",
         share_q >= TARGET_SHARE),
        (f"answers queued ≥ {TARGET_RATE:.0f} msg/s", f"{queued.measurement.rate:,.0f}",
         queued.measurement.rate >= TARGET_RATE),
        (f"peak RSS < {TARGET_RSS_MB:.0f} MB (mailer, {len(replies):,})", f"{rss:.1f} MB",
         rss < TARGET_RSS_MB),
    ]
    if scale is not None:
        targets += _scale_lines(scale)
    print("\n  targets:")
    for name, value, ok in targets:
        print(f"    {verdict(ok)}  {name:<48} {value}")
    # The brief times the ingest with answers queued; sending them is reported beside it.
    print(f"    info  answers sent: {share_s:.0%} of baseline, {sent.measurement.rate:,.0f} msg/s "
          f"(same targets: {verdict(share_s >= TARGET_SHARE)}, "
          f"{verdict(sent.measurement.rate >= TARGET_RATE)})")
    return all(ok for _, _, ok in targets)


def _scale_lines(scale: Scale) -> list[tuple[str, str, bool]]:
    print(f"\n  stored state (answers sent; per message = (full − {FIXED_N}-message run) / "
          f"{scale.batch - FIXED_N:,}):")
    for k in sorted(scale.runs):
        full, fixed = scale.runs[k]
        print(_row(full))
        print(_row(fixed))
        print(f"  {'':<34} per message {scale.per_message(k) * 1e3:.3f} ms, "
              f"{scale.per_message(k, cpu=True) * 1e3:.3f} ms CPU")
    sizes = sorted(scale.runs)
    big_rss = max(m.rss_mb for m in scale.runs[sizes[-1]])
    print(f"  cost per message {sizes[-1]:,} / {sizes[0]:,} stored: "
          f"CPU {scale.ratio(cpu=True):.2f}, wall {scale.ratio():.2f} (gross wall, start-up and "
          f"fold included: "
          f"{scale.gross_ratio():.2f})")
    # CPU seconds are the cost; wall time also carries whatever else the machine is doing.
    return [(f"CPU cost per message {sizes[-1]:,} / {sizes[0]:,} stored ≤ {TARGET_SCALE}",
             f"{scale.ratio(cpu=True):.2f}", scale.ratio(cpu=True) <= TARGET_SCALE),
            (f"peak RSS < {TARGET_RSS_MB:.0f} MB ({sizes[-1]:,} stored)", f"{big_rss:.1f} MB",
             big_rss < TARGET_RSS_MB)]


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="replies (default 5000)")
    parser.add_argument("--stored", default="1000,20000",
                        help="stored registrations to compare, comma-separated ('' skips)")
    parser.add_argument("--batch", type=int, default=2000,
                        help="replies ingested on top of each stored state (default 2000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per figure, the median is shown (default 1)")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", choices=("baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.stored = sorted({int(k) for k in args.stored.split(",") if k.strip()})
    except ValueError:
        parser.error("--stored takes comma-separated numbers, e.g. 1000,20000")
    if args.n < 1 or args.repeat < 1 or args.batch <= FIXED_N or any(k < 1 for k in args.stored):
        parser.error(f"--n, --repeat and --stored must be ≥ 1, --batch > {FIXED_N}")
    if len(args.stored) == 1:
        parser.error("--stored needs two sizes or none")
    return args




def _timed(what: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = action()
    print(f"{what}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


def run(args: argparse.Namespace, root: Path) -> bool:
    kind = choose_sink(args.sink)
    sink_text = Sink(kind, root).describe()
    root.chmod(0o755)  # Dovecot's and vmail's users traverse it to their files
    (root / "dovecot").mkdir()
    server = dovecot_class()(root / "dovecot", password=PASSWORD)
    server.start()
    try:
        print(f"Dovecot on 127.0.0.1:{server.port}; sink: {sink_text}; workspace {root}",
              flush=True)
        probe = make_workspace(root / "probe", imap_port=server.port, user="bench",
                               smtp_port=free_port())
        invitation = render_invitation(probe)
        domain = Renderer(load_settings(probe), now=datetime.fromisoformat(NOW)).domain
        replies = _timed(f"writing {args.n:,} replies",
                         lambda: make_replies(args.n, args.seed, invitation, domain))
        _timed("appending them", lambda: append_all(server.port, "bench", replies))
        return measure_all(args, root, kind, sink_text, server.port, replies, invitation,
                           domain)
    finally:
        server.stop()


def measure_all(args: argparse.Namespace, root: Path, kind: str, sink_text: str, port: int,
                replies: list[Reply], invitation: Invitation, domain: str) -> bool:
    n = len(replies)
    measure_baseline(port, "bench", n)  # warms Dovecot's index cache and the page cache
    print("measuring the baseline …", flush=True)
    bases = [measure_baseline(port, "bench", n) for _ in range(args.repeat)]
    base = median(bases, key=lambda b: b[0].seconds)

    def mailer(sink: str | None) -> MailerRun:
        runs = [measure_mailer(root, f"mailer-{sink or 'queued'}-{i}", replies,
                               imap_port=port, user="bench", sink_kind=sink)
                for i in range(args.repeat)]
        return median(runs, key=lambda r: r.measurement.seconds)

    print("measuring mailer, answers queued …", flush=True)
    queued = mailer(None)
    print("measuring mailer, answers sent …", flush=True)
    sent = mailer(kind)
    scale = None
    if args.stored:
        batch = make_replies(args.batch, args.seed + 1, invitation, domain, tag="b")
        uidvalidity = append_all(port, "stored", batch)
        runs = {}
        for k in args.stored:
            print(f"measuring {k:,} stored registrations + {len(batch):,} new …", flush=True)
            runs[k] = measure_stored(root, k, batch, imap_port=port, user="stored",
                                     uidvalidity=uidvalidity, sink_kind=kind, seed=args.seed,
                                     repeat=args.repeat)
        scale = Scale(len(batch), runs)
    return report(args, sink_text, replies, base, queued, sent, scale)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "baseline":
        child_baseline(args.port, args.user)
        return 0
    return in_scratch_folder("mailer-ingest-", args.keep, lambda root: run(args, root))


if __name__ == "__main__":
    sys.exit(main())
