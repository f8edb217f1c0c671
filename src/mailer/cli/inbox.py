"""Commands of the inbox side: inspect, watch, run."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import click

from mailer.audit import AuditLog
from mailer.campaign import CampaignSender, SendReport, plan
from mailer.cli.app import EXIT_PENDING, App, parse_time
from mailer.contacts import read_contacts
from mailer.errors import MailerError
from mailer.i18n import _
from mailer.models import DELIVERIES, DeliveryKind
from mailer.reading.decide import answer_allowed
from mailer.reading.invited import ContactBook
from mailer.reading.understand import answer_template, reading_json, understand
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.store import open_state
from mailer.trust import FREE_MAIL
from mailer.watcher import Watcher, WatchReport

log = logging.getLogger("mailer")

_HEAD_BYTES = 64 * 1024  # enough to find a message's first header


@click.command()
@click.argument("eml", type=click.Path(path_type=Path))
@click.option("--received", help="Arrival time (ISO-8601); default: the (rehearsal) clock.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: kind, sender, received, registrants, errors, bounced, "
              "answer.")
@click.pass_obj
def inspect(app: App, eml: Path, received: str | None, as_json: bool) -> None:
    """What the service makes of one message; nothing is stored or sent."""
    settings = app.settings()
    when = (parse_time(received, settings, "--received") if received else app.clock.now()
            ).astimezone(settings.campaign.timezone)  # shown in the campaign's zone
    own = settings.own_addresses
    book = _contact_book(settings)
    reading = understand(read_message_file(eml), received=when, events=settings.events,
                         own_addresses=own, authserv_id=settings.answers.trusted_authserv_id,
                         invitee=book.match if book else None)
    answer = answer_template(reading)
    if answer and answer_allowed(sender=reading.sender, own_addresses=own,
                                 automated=bool(reading.automated), received=when,
                                 watermark=None, answers_today=0, forged=reading.forged,
                                 max_per_day=settings.answers.max_per_sender_per_day):
        answer = None
    data = reading_json(reading, answer)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(_("kind: {kind} ({reason})").format(
        kind=data["kind"], reason=_shown(reading.classification.reason)))
    click.echo(_("sender: {sender}  received: {received}").format(
        sender=_shown(data["sender"]), received=data["received"]))
    for number, person in enumerate(data["registrants"], start=1):
        events = ", ".join(f"{k}: {v}" for k, v in person["events"].items()) or _("none")
        fields = " | ".join(_shown(person[key]) for key in _REGISTRANT_FIELDS)
        click.echo(_("registrant {number}: {fields} | {events}").format(
            number=number, fields=fields, events=events))
    for error in data["errors"]:
        click.echo(f"  {_shown(error['field'])}: {_shown(error['message'])}")
    if data["bounced"]:
        click.echo(_("bounced: {addresses}").format(addresses=", ".join(data["bounced"])))
    click.echo(_("answer: {answer}").format(answer=data["answer"] or _("none")))


_REGISTRANT_FIELDS = ("name", "position", "city", "email", "phone")  # inspect's columns


def _shown(value: object) -> str:
    """A value for `inspect`'s text output: "-" when absent (None or empty), never "None"."""
    return "-" if value is None or value == "" else str(value)


def _contact_book(settings: Settings) -> ContactBook | None:
    """The invited contacts, as the watcher knows them: the campaign's lists and the
    Message-IDs of the invitations sent (read-only; none when nothing was sent yet)."""
    if not settings.campaign.recipients:
        return None
    try:
        contacts = read_contacts(settings.campaign.recipients).contacts
        with open_state(settings.storage, writer=False) as store:
            sent = {d["message_id"]: d["contact"] for d in store.iter(DELIVERIES)
                    if d.get("message_id") and d.get("contact")}
    except MailerError as err:  # the message is still read, as one from a stranger
        log.warning("contact list not used: %s", err)
        return None
    return ContactBook(contacts, sent, free_mail=FREE_MAIL)


def read_message_file(eml: Path) -> bytes:
    """The bytes of the message file named on the command line; a file that is missing,
    unreadable or no message is the user's mistake (exit 1 naming it), never a traceback."""
    hint = _("give a message saved as .eml (Thunderbird, Outlook: Save As) or one from "
             "the state folder's messages/")
    unreadable = _("{path}: cannot read the message: {why}")
    if not eml.is_file():  # a directory or a pipe would fail or block when read
        why = _("not a regular file") if eml.exists() else _("no such file")
        raise MailerError(unreadable.format(path=eml, why=why), hint=hint)
    try:
        data = eml.read_bytes()
    except OSError as err:
        raise MailerError(unreadable.format(path=eml, why=err.strerror or err),
                          hint=hint) from err
    if not len(BytesHeaderParser().parsebytes(data[:_HEAD_BYTES], headersonly=True)):
        raise MailerError(_("{path}: not an e-mail message: expected headers (From:, "
                            "Subject:, …), a blank line, then the text").format(path=eml),
                          hint=hint)
    return data


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _watch(app: App, settings: Settings, *, once: bool, send_first: bool) -> WatchReport:
    with open_state(settings.storage, writer=True) as store:
        audit = AuditLog(settings.storage)
        if send_first:
            await _send_pending(app, settings, store, audit)
        watcher = Watcher(settings, store, clock=app.clock, audit=audit)
        try:
            if once:
                return await watcher.process_once()
            stop = asyncio.Event()
            _install_stop(stop)
            log.info("watching %s:%s %s; stop with Ctrl-C or SIGTERM", settings.imap.host,
                     settings.imap.port, settings.imap.folder)
            await watcher.run(stop)
            return WatchReport()
        finally:
            await watcher.close()
            audit.flush()


async def _send_pending(app: App, settings: Settings, store: Any, audit: AuditLog) -> None:
    """`run` first sends invitations still pending, while any event is open."""
    if not settings.open_events(app.clock.now()):
        log.info("every deadline has passed: no invitations are sent")
        return
    contacts = read_contacts(settings.campaign.recipients)
    report = SendReport()
    todo = plan(contacts.contacts, store, kind=DeliveryKind.INVITATION, report=report)
    if todo:
        sender = CampaignSender(settings, Renderer(settings, now=app.clock.now()), store,
                                now=app.clock.now, audit=audit)
        result = await sender.run(todo)
        log.info("invitations: sent %d, refused %d, deferred %d", result.sent,
                 len(result.failed), len(result.deferred))


@click.command()
@click.option("--once", is_flag=True, help="Process what is waiting now, then exit.")
@click.pass_obj
def watch(app: App, once: bool) -> None:
    """Read the reply inbox, register, answer."""
    settings = app.settings()
    report = asyncio.run(_watch(app, settings, once=once, send_first=False))
    if once:
        click.echo(report.summary())
        if report.answers_pending:
            sys.exit(EXIT_PENDING)


@click.command()
@click.pass_obj
def run(app: App) -> None:
    """The service: send pending invitations, then watch the inbox until SIGTERM/Ctrl-C."""
    settings = app.settings()
    asyncio.run(_watch(app, settings, once=False, send_first=True))
    click.echo(_("stopped; state saved"))


COMMANDS = (inspect, watch, run)
