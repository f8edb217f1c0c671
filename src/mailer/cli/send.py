"""Commands of the send side: check, preview, send, remind."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from mailer.audit import AuditLog
from mailer.campaign import CampaignSender, SendReport, plan
from mailer.cli.app import EXIT_PENDING, App, confirm
from mailer.contacts import (
    Contact,
    ContactList,
    normalize_key,
    read_contacts,
    template_fields,
)
from mailer.errors import MailerError
from mailer.export import write_private
from mailer.i18n import _
from mailer.models import DeliveryKind
from mailer.reading.decide import Answer
from mailer.reading.invited import COLUMNS_READ
from mailer.remind import ReminderGroup, plan_reminders
from mailer.render import Renderer
from mailer.report import plural
from mailer.respond import build_answer, sample_answer
from mailer.settings import Settings
from mailer.smtp_client import Outcome, SmtpSession
from mailer.store import open_state

log = logging.getLogger("mailer")

def _echo_problems(contacts: ContactList) -> None:
    for problem in contacts.invalid:
        click.echo(f"{problem.source}: {problem.message}", err=True)
    for problem in contacts.duplicates:
        click.echo(f"{problem.source}: {problem.message}", err=True)


@click.command()
@click.pass_obj
def check(app: App) -> None:
    """Validate the campaign file, templates (rendered for every contact) and contact lists."""
    settings = app.settings()
    contacts = read_contacts(settings.campaign.recipients)
    _echo_problems(contacts)
    renderer = Renderer(settings, now=app.clock.now())
    templates = [settings.campaign.template]
    if (settings.templates_dir / f"{DeliveryKind.REMINDER}.txt.j2").is_file():
        templates.append(DeliveryKind.REMINDER)
    for contact in contacts.contacts:
        for name in templates:
            renderer.invitation(contact, template=name, extra={"open_events": settings.events})
    _echo_columns(contacts, {column for name in templates
                             for column in renderer.recipient_names(name)})
    now = app.clock.now()
    # Every answer the service can send, for the first contact: a missing or broken answer
    # template stops the check, not `watch` after it has registered everyone (issue 16).
    for answer in Answer if contacts.contacts else ():
        build_answer(renderer, settings, sample_answer(
            answer, contacts.contacts[0], settings.events, now=now, domain=renderer.domain))
    templates += [str(answer) for answer in Answer]
    open_ids = ", ".join(e.id for e in settings.open_events(now))
    click.echo(_("{path}: campaign {name!r}: {contacts}, {invalid} invalid, {duplicates}; "
                 "templates {templates} render for every contact; events open now: {open}"
                 ).format(path=settings.path, name=settings.campaign.name,
                          contacts=plural(len(contacts.contacts), "contact", "contacts"),
                          invalid=len(contacts.invalid),
                          duplicates=plural(len(contacts.duplicates), "duplicate", "duplicates"),
                          templates=", ".join(templates), open=open_ids or _("none")))
    if contacts.invalid:
        rows = plural(len(contacts.invalid), "contact row is invalid", "contact rows are invalid")
        raise MailerError(_("{rows} (listed above)").format(rows=rows),
                          hint="fix or remove them; `send` skips them")


def _echo_columns(contacts: ContactList, used: set[str]) -> None:
    """Say which columns the templates read that no contact list has (a guarded one is left
    out of every message), and which list columns neither the templates nor the service read
    (a column headed unlike the template's name, say "Imie_nazwisko" for `recipient.imie`)."""
    columns = sorted({name for contact in contacts.contacts for name in contact.fields})
    if not columns:
        return
    known = set(template_fields(dict.fromkeys(columns, "")))  # "imię" is also "imie"
    for name in sorted(used - known):
        click.echo(f"templates read recipient.{name}, but no contact list has a column "
                   f"{name!r} (columns: {', '.join(columns)}): it is left out where the "
                   "template guards it", err=True)
    unused = [name for name in columns if name not in COLUMNS_READ and not (
        set(template_fields({name: ""})) & used)]
    if unused:
        said = plural(len(unused), "column of the contact lists is read by no template",
                      "columns of the contact lists are read by no template")
        click.echo(f"{said}: {', '.join(unused)}", err=True)


def _find_contact(contacts: ContactList, email: str | None) -> Contact:
    if not contacts.contacts:
        raise MailerError("the contact lists hold no valid contact")
    if email is None:
        return contacts.contacts[0]
    wanted = normalize_key(email)
    for contact in contacts.contacts:
        if contact.key == wanted:
            return contact
    raise MailerError(f"{email} is not in the contact lists",
                      hint="leave out --to to preview the first contact")


@click.command()
@click.option("--to", "email", help="Render for the contact with this address.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the exact message here.")
@click.pass_obj
def preview(app: App, email: str | None, out: Path | None) -> None:
    """Render one message, as the contact would receive it."""
    settings = app.settings()
    contacts = read_contacts(settings.campaign.recipients)
    contact = _find_contact(contacts, email)
    message = Renderer(settings, now=app.clock.now()).invitation(contact)
    if out:
        try:  # 0600 as every export: the message holds the contact's personal data
            write_private(out, message.data)
        except OSError as err:
            raise MailerError(f"{out}: cannot write the message: {err.strerror or err}") from err
        click.echo(f"wrote {out} ({len(message.data)} bytes) for {contact.email}")
        return
    click.echo(describe_message(message.data))


def describe_message(data: bytes) -> str:
    """Headers decoded and the text part, for a human reading a preview."""
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    lines = [f"{name}: {_decoded(value)}" for name, value in parsed.raw_items()
             if name.lower() not in ("content-type", "content-transfer-encoding")]
    body = parsed.get_body(preferencelist=("plain",))
    parts = "text + HTML" if parsed.is_multipart() else "text only"
    lines += [f"(parts: {parts})", "", body.get_content() if body else ""]
    return "\n".join(lines)


def _decoded(raw: str) -> str:
    """A header as the recipient's client shows it. The stdlib's address parser puts a blank
    between adjacent encoded words, so a long name split mid-word ("Jednostk" + "ami", as
    RFC 2047 allows) showed as two words in the preview, though the mail itself is right."""
    unfolded = re.sub(r"\r?\n[ \t]", " ", raw)
    try:
        return str(make_header(decode_header(unfolded)))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return unfolded


def _deadline_guard(settings: Settings, app: App, *, force: bool) -> None:
    """Never mail invitations once every event's deadline has passed."""
    now = app.clock.now()
    if settings.open_events(now):
        return
    last = max(e.deadline for e in settings.events).astimezone(settings.campaign.timezone)
    if not force:
        raise MailerError(
            f"every event's deadline has passed (the last was {last.isoformat()}); "
            "invitations now would be stale",
            hint="check the campaign file's dates; --force sends anyway",
        )
    log.warning("--force: sending although every deadline has passed (last %s)",
                last.isoformat())


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[SendReport], None]]:
    """A progress bar on a terminal, plain log lines every 10% otherwise."""
    if sys.stderr.isatty() and total:
        with Progress(transient=False) as bar:
            task = bar.add_task(label, total=total)
            yield lambda report: bar.update(task, completed=report.done)
        return
    step = max(1, total // 10)

    def line(report: SendReport) -> None:
        if report.done % step == 0 or report.done == total:
            log.info("%s: %d/%d done (%d sent)", label, report.done, total, report.sent)

    yield line


@click.command()
@click.option("--dry-run", is_flag=True, help="Render everything, send nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Send at most N messages now.")
@click.option("--to", "test_to", help="Test send to this address only; not recorded.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Send even when every deadline has passed.")
@click.pass_obj
def send(app: App, dry_run: bool, limit: int | None, test_to: str | None, yes: bool,
         force: bool) -> None:
    """Send the newsletter to every contact not yet mailed (a rerun resumes)."""
    settings = app.settings()
    contacts = read_contacts(settings.campaign.recipients)
    _echo_problems(contacts)
    renderer = Renderer(settings, now=app.clock.now())
    if test_to:
        _test_send(settings, renderer, contacts, test_to)
        return
    _deadline_guard(settings, app, force=force)
    with open_state(settings.storage, writer=not dry_run) as store:
        report = SendReport()
        todo = plan(contacts.contacts, store, kind=DeliveryKind.INVITATION, report=report,
                    limit=limit)
        if dry_run:
            for contact in todo:
                renderer.invitation(contact)
            invitations = plural(len(todo), "invitation", "invitations")
            click.echo(_("dry run: {invitations} would be sent ({already} already sent, "
                         "{suppressed} suppressed)").format(
                invitations=invitations, already=report.already, suppressed=report.suppressed))
            return
        if todo:
            confirm(_("Send {invitations} of {name!r} via {host}:{port}?").format(
                invitations=plural(len(todo), "invitation", "invitations"),
                name=settings.campaign.name, host=settings.smtp.host, port=settings.smtp.port),
                yes=yes)
        audit = AuditLog(settings.storage)
        with _progress(len(todo), "sending") as progress:
            sender = CampaignSender(settings, renderer, store, now=app.clock.now,
                                    on_progress=progress, audit=audit)
            if force:
                audit.record("force", at=app.clock.now(), reason="every deadline has passed")
            try:
                result = asyncio.run(sender.run(todo))
            finally:
                audit.flush()
    _finish(result, report)


def _finish(result: SendReport, planned: SendReport) -> None:
    click.echo(_("sent {sent}, refused {refused}, deferred {deferred}; skipped {already} "
                 "already sent, {suppressed} suppressed").format(
        sent=result.sent, refused=len(result.failed), deferred=len(result.deferred),
        already=planned.already, suppressed=planned.suppressed))
    for address in result.failed:
        click.echo(f"refused permanently: {address}", err=True)
    if result.stopped:
        click.echo(result.stopped, err=True)
    if result.pending:
        waiting = plural(len(result.deferred), "message waits", "messages wait")
        click.echo(_("{waiting} for the next run (temporary failures); rerun `mailer send` "
                     "to resume").format(waiting=waiting), err=True)
        sys.exit(EXIT_PENDING)


def _test_send(settings: Settings, renderer: Renderer, contacts: ContactList, to: str) -> None:
    key = normalize_key(to)
    sample = next((c for c in contacts.contacts if c.key == key), None)
    if sample is None:
        sample = _find_contact(contacts, None)
    contact = Contact(email=to.strip(), key=key, fields={**sample.fields, "email": to.strip()},
                      source=sample.source)
    message = renderer.invitation(contact, message_id=renderer.random_message_id("test"))

    async def deliver() -> Any:
        session = SmtpSession.from_settings(settings)
        try:
            return await session.send(contact.email, message.data)
        finally:
            await session.close()

    attempt = asyncio.run(deliver())
    if attempt.outcome is not Outcome.SENT:
        said = f"{attempt.code} {attempt.text}" if attempt.code else attempt.text
        raise MailerError(f"test send to {to} failed: {said}", hint=None if attempt.code else (
            "is the SMTP server running, and are [smtp] host, port and security right? "
            "`mailer doctor` checks them"))
    click.echo(f"test message sent to {to} (as {sample.email} would get it); not recorded")


@click.command()
@click.option("--event", "event_id", help="Only this event (default: every open event).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remind(app: App, event_id: str | None, yes: bool) -> None:
    """Remind invited contacts whose city has not registered for an event still open."""
    settings = app.settings()
    now = app.clock.now()
    events = [settings.event(event_id)] if event_id else list(settings.events)
    if not [e for e in events if now <= e.deadline]:
        raise MailerError("no reminder after the deadline: "
                          + ", ".join(f"{e.id} closed {e.deadline.isoformat()}" for e in events))
    contacts = read_contacts(settings.campaign.recipients)
    with open_state(settings.storage, writer=True) as store:
        groups = plan_reminders(contacts.contacts, store, events, now=now)
        total = sum(len(g.contacts) for g in groups)
        if total:
            confirm(_("Send {reminders}?").format(
                reminders=plural(total, "reminder", "reminders")), yes=yes)
        audit = AuditLog(settings.storage)
        try:
            results = asyncio.run(_send_reminders(app, settings, store, groups, audit))
        finally:
            audit.flush()
    for group, result in zip(groups, results, strict=True):
        click.echo(f"reminder for {', '.join(e.id for e in group.events)}: sent {result.sent}, "
                   f"refused {len(result.failed)}, deferred {len(result.deferred)}")
    if not groups:
        click.echo("no reminders due: every invited city has registered or was reminded")
    if any(r.pending for r in results):
        sys.exit(EXIT_PENDING)


async def _send_reminders(app: App, settings: Settings, store: Any,
                          groups: list[ReminderGroup], audit: AuditLog) -> list[SendReport]:
    renderer = Renderer(settings, now=app.clock.now())
    renderer.templates(DeliveryKind.REMINDER, subject=f"Przypomnienie: {settings.campaign.subject}")
    results = []
    for group in groups:
        todo = plan(group.contacts, store, kind=group.kind, report=SendReport())
        sender = CampaignSender(settings, renderer, store, kind=group.kind,
                                template=DeliveryKind.REMINDER,
                                now=app.clock.now, audit=audit,
                                extra={"open_events": list(group.events)})
        results.append(await sender.run(todo))
    return results


COMMANDS = (check, preview, send, remind)
