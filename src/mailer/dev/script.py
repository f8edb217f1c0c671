"""The script `mailer demo` plays: who answers, when, and what their mail clients write.

Pure: the cast comes from the contact list, the timeline from the campaign's deadlines, and
each reply function takes the message being answered and returns the bytes a client would
hand to its server — Gmail quoting below, Outlook's header block, Thunderbird's "pisze:", an
Exchange out-of-office and Gmail's one-click unsubscribe through the List-Unsubscribe mailto.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dt_time
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from zoneinfo import ZoneInfo

from mailer.contacts import Contact
from mailer.errors import MailerError
from mailer.settings import Settings

WARSAW = ZoneInfo("Europe/Warsaw")
_MONTHS = ("sty", "lut", "mar", "kwi", "maj", "cze", "lip", "sie", "wrz", "paź", "lis", "gru")
_DAYS = ("pon.", "wt.", "śr.", "czw.", "pt.", "sob.", "niedz.")

FORM = """\
Wydarzenie (warsztat Smart City / PIM / oba): {event}
Imię i nazwisko: {name}
Stanowisko: {position}
Miasto / urząd: {city}
E-mail: {email}
Telefon: {phone}
"""


@dataclass(frozen=True)
class Official:
    """A contact from the list, as the person who answers."""

    email: str
    name: str
    position: str
    city: str

    @classmethod
    def of(cls, contact: Contact) -> Official:
        f = contact.fields
        name = f"{f.get('imie', '')} {f.get('nazwisko', '')}".strip() or contact.email
        return cls(contact.email, name, f.get("stanowisko", ""), f.get("miasto", ""))

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class Received:
    """A message in the official's mailbox: what a reply needs of it."""

    message_id: str
    subject: str
    sender: str  # the From header as written
    reply_to: str  # where "Reply" sends to
    date: datetime
    text: str
    references: str
    unsubscribe: str  # the List-Unsubscribe mailto address, if any (RFC 2369)

    @classmethod
    def parse(cls, raw: bytes) -> Received:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(preferencelist=("plain",))
        return cls(
            message_id=str(msg.get("Message-ID", "")), subject=str(msg.get("Subject", "")),
            sender=str(msg.get("From", "")),
            reply_to=parseaddr(str(msg.get("Reply-To") or msg.get("From", "")))[1],
            date=msg["Date"].datetime if msg["Date"] else datetime.now(WARSAW),
            text=body.get_content() if body is not None else "",
            references=str(msg.get("References", "")),
            unsubscribe=_mailto(str(msg.get("List-Unsubscribe", ""))),
        )


class DemoError(MailerError):
    """A step of the demo failed; the message names the step and where its log is."""


@dataclass(frozen=True)
class Timeline:
    """The demo's moments (aware), placed around the campaign's own deadlines."""

    send: datetime
    out_of_office: datetime
    on_time: datetime
    unsubscribe: datetime
    two_people: datetime
    incomplete: datetime
    first_pass: datetime
    correction: datetime
    second_pass: datetime
    late: datetime
    third_pass: datetime

    @classmethod
    def around(cls, settings: Settings) -> Timeline:
        """Local wall-clock moments around the first deadline D (the workshop's) and the last.

        A week before D the newsletter goes out; replies come in over the next days; the late
        one two days after D (halfway to the last deadline when that is closer).
        """
        deadlines = sorted(e.deadline for e in settings.events)
        if len(deadlines) < 2 or deadlines[-1] - deadlines[0] < timedelta(days=1):
            raise DemoError(f"{settings.path}: the demo plays a campaign with two events whose "
                            "deadlines are at least a day apart (like the default campaign)")
        zone = settings.campaign.timezone
        day = deadlines[0].astimezone(zone).date()

        def at(days: int, hh_mm: str) -> datetime:
            hour, minute = map(int, hh_mm.split(":"))
            return datetime.combine(day + timedelta(days=days), dt_time(hour, minute),
                                    tzinfo=zone)

        late = min(at(2, "09:30"), deadlines[0] + (deadlines[-1] - deadlines[0]) / 2)
        return cls(send=at(-7, "09:00"), out_of_office=at(-7, "09:02"),
                   on_time=at(-6, "10:15"), unsubscribe=at(-6, "16:40"),
                   two_people=at(-5, "11:05"), incomplete=at(-4, "08:40"),
                   first_pass=at(-4, "12:00"), correction=at(-3, "14:10"),
                   second_pass=at(-3, "15:00"), late=late, third_pass=late + timedelta(hours=2))


@dataclass
class Cast:
    """Who does what: contacts of the list, by position."""

    on_time: Official
    out_of_office: Official
    silent: Official
    bounced: Official
    late: Official
    two_people: Official
    unsubscribe: Official
    incomplete: Official

    @classmethod
    def of(cls, contacts: tuple[Contact, ...], settings: Settings) -> Cast:
        if len(contacts) < 8:
            raise DemoError(f"{settings.path}: the demo needs at least 8 contacts "
                            f"(the lists hold {len(contacts)})")
        return cls(*(Official.of(c) for c in contacts[:8]))


def _mailto(header: str) -> str:
    match = re.search(r"<mailto:([^?>]+)", header)
    return match.group(1) if match else ""


def form(official: Official, *, event: str = "oba", city: str | None = None,
         name: str | None = None, email: str | None = None, phone: str = "") -> str:
    """The newsletter's registration form, filled in."""
    return FORM.format(event=event, name=official.name if name is None else name,
                       position=official.position, phone=phone,
                       city=official.city if city is None else city,
                       email=official.email if email is None else email)


def _message(official: Official, to: Received, subject: str, sent: datetime,
             id_domain: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{official.name} <{official.email}>"
    msg["To"] = to.reply_to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(sent.astimezone(WARSAW))
    seed = f"{official.email}\0{to.message_id}\0{sent.isoformat()}".encode()
    msg["Message-ID"] = f"<{hashlib.sha1(seed).hexdigest()[:24]}@{id_domain}>"
    if to.message_id:
        msg["In-Reply-To"] = to.message_id
        msg["References"] = f"{to.references} {to.message_id}".strip()
    return msg


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.strip().splitlines())


def _re(subject: str) -> str:
    return subject if subject.lower().startswith(("re:", "odp:")) else f"Re: {subject}"


def gmail_reply(official: Official, to: Received, own_text: str, sent: datetime) -> bytes:
    """Gmail: own text on top, "W dniu … napisał(a):" and the original quoted with '>'."""
    msg = _message(official, to, _re(to.subject), sent, "mail.gmail.com")
    d = to.date.astimezone(WARSAW)
    header = (f"W dniu {_DAYS[d.weekday()]} {d.day} {_MONTHS[d.month - 1]} {d.year} "
              f"o {d:%H:%M} {to.sender} napisał(a):")
    msg.set_content(f"{own_text.rstrip()}\n\n{header}\n\n{_quoted(to.text)}\n")
    return msg.as_bytes()


def outlook_reply(official: Official, to: Received, own_text: str, sent: datetime) -> bytes:
    """Outlook: own text on top, then the Polish header block and the original unquoted."""
    msg = _message(official, to, f"RE: {to.subject}", sent, official.domain)
    msg["X-Mailer"] = "Microsoft Outlook 16.0"
    msg["Content-Language"] = "pl"
    d = to.date.astimezone(WARSAW)
    block = (f"-----Wiadomość oryginalna-----\nOd: {to.sender}\n"
             f"Wysłano: {_DAYS[d.weekday()]} {d:%d.%m.%Y %H:%M}\nDo: {official.email}\n"
             f"Temat: {to.subject}\n")
    msg.set_content(f"{own_text.rstrip()}\n\n{block}\n{to.text.strip()}\n")
    return msg.as_bytes()


def thunderbird_reply(official: Official, to: Received, own_text: str, sent: datetime) -> bytes:
    """Thunderbird, answering on top: "W dniu 22.10.2020 o 14:02, … pisze:" and '>' lines."""
    msg = _message(official, to, _re(to.subject), sent, official.domain)
    msg["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:78.0) Thunderbird/78.3.1"
    d = to.date.astimezone(WARSAW)
    header = f"W dniu {d:%d.%m.%Y o %H:%M}, {to.sender} pisze:"
    msg.set_content(f"{own_text.rstrip()}\n\n{header}\n{_quoted(to.text)}\n")
    return msg.as_bytes()


def out_of_office(official: Official, to: Received, sent: datetime) -> bytes:
    """Exchange's automatic reply (RFC 3834 Auto-Submitted, X-Auto-Response-Suppress)."""
    msg = _message(official, to, f"Odpowiedź automatyczna: {to.subject}", sent,
                   f"EXCH01.{official.domain}")
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Content-Language"] = "pl-PL"
    msg.set_content(f"Dzień dobry,\n\nprzebywam na urlopie do 30 października. W sprawach "
                    f"pilnych proszę o kontakt z sekretariatem.\n\n{official.name}\n")
    return msg.as_bytes()


def gmail_unsubscribe(official: Official, to: Received, sent: datetime) -> bytes:
    """Gmail's "Unsubscribe" button: a message to the List-Unsubscribe mailto (RFC 2369)."""
    msg = EmailMessage()
    msg["From"] = official.email
    msg["To"] = to.unsubscribe or to.reply_to
    msg["Subject"] = "wypisz"
    msg["Date"] = format_datetime(sent.astimezone(WARSAW))
    seed = f"unsubscribe\0{official.email}\0{sent.isoformat()}".encode()
    msg["Message-ID"] = f"<{hashlib.sha1(seed).hexdigest()[:24]}@mail.gmail.com>"
    msg.set_content("This message was automatically generated by Gmail.\n")
    return msg.as_bytes()
