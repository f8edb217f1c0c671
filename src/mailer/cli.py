"""The command line: the only place that prints, prompts or exits."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.progress import Progress

from mailer import __version__, erase, staff
from mailer.audit import AuditLog
from mailer.campaign import CampaignSender, SendReport, plan
from mailer.clock import Clock, clock_from_env
from mailer.contacts import Contact, ContactList, normalize_key, read_contacts
from mailer.decide import answer_allowed
from mailer.demo import run_demo
from mailer.devserver import options_for, run_until_stopped
from mailer.doctor import Level, diagnose
from mailer.errors import MailerError, UsageError
from mailer.export import registration_records, to_csv, to_xlsx
from mailer.remind import REMINDER, ReminderGroup, plan_reminders
from mailer.render import Renderer
from mailer.report import cities_table, city_status, format_table
from mailer.settings import Settings, load_settings, resolve_config_path
from mailer.smtp_client import Outcome, SmtpSession
from mailer.staff import campaign_counts, counts_csv, describe_person, format_counts
from mailer.store import open_state
from mailer.understand import answer_template, reading_json, understand
from mailer.watcher import Watcher, WatchReport

log = logging.getLogger("mailer")

EXIT_PENDING = 3


@dataclass
class App:
    """What every command needs: the campaign file's path and the clock."""

    config: Path
    clock: Clock

    def settings(self) -> Settings:
        return load_settings(self.config)


def _configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mailer").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", type=click.Path(path_type=Path), default=None,
              help="Campaign file (default: $MAILER_CONFIG or ./campaign.toml).")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv: debug).")
@click.version_option(__version__, prog_name="mailer")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: int) -> None:
    """Send a campaign's invitations and handle the replies."""
    _configure_logging(verbose)
    clock = clock_from_env()
    if clock.rehearsal:
        log.warning("rehearsal clock: MAILER_NOW makes the current time %s",
                    clock.now().isoformat(timespec="seconds"))
    ctx.obj = App(config=resolve_config_path(str(config) if config else None), clock=clock)


def _echo_problems(contacts: ContactList) -> None:
    for problem in contacts.invalid:
        click.echo(f"{problem.source}: {problem.message}", err=True)
    for problem in contacts.duplicates:
        click.echo(f"{problem.source}: {problem.message}", err=True)


@cli.command()
@click.pass_obj
def check(app: App) -> None:
    """Validate the campaign file, templates (rendered for every contact) and contact lists."""
    settings = app.settings()
    contacts = read_contacts(settings.campaign.recipients)
    _echo_problems(contacts)
    renderer = Renderer(settings, now=app.clock.now())
    templates = [settings.campaign.template]
    if (settings.templates_dir / "reminder.txt.j2").is_file():
        templates.append("reminder")
    for contact in contacts.contacts:
        for name in templates:
            renderer.invitation(contact, template=name, extra={"open_events": settings.events})
    now = app.clock.now()
    open_ids = ", ".join(e.id for e in settings.open_events(now)) or "none"
    click.echo(f"{settings.path}: campaign {settings.campaign.name!r}: "
               f"{len(contacts.contacts)} contacts, {len(contacts.invalid)} invalid, "
               f"{len(contacts.duplicates)} duplicates; templates {', '.join(templates)} "
               f"render for every contact; events open now: {open_ids}")
    if contacts.invalid:
        raise MailerError(f"{len(contacts.invalid)} contact rows are invalid (listed above)",
                          hint="fix or remove them; `send` skips them")


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


@cli.command()
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
        out.write_bytes(message.data)
        click.echo(f"wrote {out} ({len(message.data)} bytes) for {contact.email}")
        return
    click.echo(describe_message(message.data))


def describe_message(data: bytes) -> str:
    """Headers decoded and the text part, for a human reading a preview."""
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    lines = [f"{name}: {value}" for name, value in parsed.items()
             if name.lower() not in ("content-type", "content-transfer-encoding")]
    body = parsed.get_body(preferencelist=("plain",))
    parts = "text + HTML" if parsed.is_multipart() else "text only"
    lines += [f"(parts: {parts})", "", body.get_content() if body else ""]
    return "\n".join(lines)


def _confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; without one (and without --yes) refuse with exit 2."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} — no terminal to ask on",
                         hint="add --yes to confirm in a script")
    if not click.confirm(question, default=False):
        raise UsageError("cancelled; nothing was sent")


def _deadline_guard(settings: Settings, app: App, *, force: bool) -> None:
    """SPEC §5: never mail invitations once every event's deadline has passed."""
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


@cli.command()
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
        todo = plan(contacts.contacts, store, kind="invitation", report=report, limit=limit)
        if dry_run:
            for contact in todo:
                renderer.invitation(contact)
            click.echo(f"dry run: {len(todo)} invitations would be sent "
                       f"({report.already} already sent, {report.suppressed} suppressed)")
            return
        if todo:
            _confirm(f"Send {len(todo)} invitations of {settings.campaign.name!r} "
                     f"via {settings.smtp.host}:{settings.smtp.port}?", yes=yes)
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
    click.echo(
        f"sent {result.sent}, refused {len(result.failed)}, deferred {len(result.deferred)}; "
        f"skipped {planned.already} already sent, {planned.suppressed} suppressed"
    )
    for address in result.failed:
        click.echo(f"refused permanently: {address}", err=True)
    if result.stopped:
        click.echo(result.stopped, err=True)
    if result.pending:
        click.echo(f"{len(result.deferred)} messages wait for the next run "
                   "(temporary failures); rerun `mailer send` to resume", err=True)
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
        session = SmtpSession(settings.smtp, envelope_from=settings.envelope_from,
                              password=settings.smtp.password())
        try:
            return await session.send(contact.email, message.data)
        finally:
            await session.close()

    attempt = asyncio.run(deliver())
    if attempt.outcome is not Outcome.SENT:
        raise MailerError(f"test send to {to} failed: {attempt.code} {attempt.text}")
    click.echo(f"test message sent to {to} (as {sample.email} would get it); not recorded")


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: MailerError → its exit code and one clear line, never a traceback."""
    try:
        cli.main(args=argv, prog_name="mailer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_PENDING)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except MailerError as err:
        click.echo(f"error: {err}", err=True)
        if err.hint:
            click.echo(f"hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; what was sent is recorded — rerun to resume", err=True)
        sys.exit(EXIT_PENDING)
    sys.exit(0)


@cli.command()
@click.argument("eml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--received", help="Arrival time (ISO-8601); default: the (rehearsal) clock.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (SPEC §9).")
@click.pass_obj
def inspect(app: App, eml: Path, received: str | None, as_json: bool) -> None:
    """What the service makes of one message; nothing is stored or sent."""
    settings = app.settings()
    when = _parse_time(received, settings, "--received") if received else app.clock.now()
    campaign = settings.campaign
    own = {a.lower() for a in (campaign.reply_to, campaign.sender_address,
                               settings.envelope_from)}
    reading = understand(eml.read_bytes(), received=when, events=settings.events,
                         own_addresses=own, authserv_id=settings.answers.trusted_authserv_id)
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
    click.echo(f"kind: {data['kind']} ({reading.classification.reason})")
    click.echo(f"sender: {data['sender']}  received: {data['received']}")
    for number, person in enumerate(data["registrants"], start=1):
        events = ", ".join(f"{k}: {v}" for k, v in person["events"].items()) or "none"
        click.echo(f"registrant {number}: {person['name']} | {person['position']} | "
                   f"{person['city']} | {person['email']} | {person['phone']} | {events}")
    for error in data["errors"]:
        click.echo(f"  {error['field']}: {error['message']}")
    if data["bounced"]:
        click.echo(f"bounced: {', '.join(data['bounced'])}")
    click.echo(f"answer: {data['answer'] or 'none'}")


def _parse_time(value: str, settings: Settings, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError as err:
        raise UsageError(f"{option} {value!r}: expected ISO-8601 like "
                         "2020-10-20T12:00:00+02:00") from err
    return when if when.tzinfo else when.replace(tzinfo=settings.campaign.timezone)


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
    todo = plan(contacts.contacts, store, kind="invitation", report=report)
    if todo:
        sender = CampaignSender(settings, Renderer(settings, now=app.clock.now()), store,
                                now=app.clock.now, audit=audit)
        result = await sender.run(todo)
        log.info("invitations: sent %d, refused %d, deferred %d", result.sent,
                 len(result.failed), len(result.deferred))


@cli.command()
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


@cli.command()
@click.pass_obj
def run(app: App) -> None:
    """The service: send pending invitations, then watch the inbox until SIGTERM/Ctrl-C."""
    settings = app.settings()
    asyncio.run(_watch(app, settings, once=False, send_first=True))
    click.echo("stopped; state saved")


@cli.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def forget(app: App, email: str, yes: bool) -> None:
    """Erase that person's personal data (RODO art. 17), keeping a suppression hash."""
    settings = app.settings()
    _confirm(f"Erase every record and message of {email}? This cannot be undone", yes=yes)
    with open_state(settings.storage, writer=True) as store:
        erasure = erase.forget(store, AuditLog(settings.storage), email, now=app.clock.now())
    click.echo(f"erased {erasure.documents} records and {erasure.files} stored messages; "
               f"redacted {erasure.audit_entries} audit entries; the address is kept only as "
               f"{erasure.subject}, so it is never mailed again")
    click.echo("note: copies on the mail server (the IMAP folder) are not touched", err=True)


@cli.command()
@click.option("--before", "before_text", required=True,
              help="Erase people registered only for events that ended before this date.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge(app: App, before_text: str, yes: bool) -> None:
    """Erase personal data of events that have ended (RODO art. 5(1)(e))."""
    settings = app.settings()
    before = _parse_time(before_text, settings, "--before")
    ends = {e.id: e.starts or e.deadline for e in settings.events}
    _confirm(f"Erase everyone registered only for events that ended before "
             f"{before.isoformat()}?", yes=yes)
    with open_state(settings.storage, writer=True) as store:
        erased = erase.purge(store, AuditLog(settings.storage), before=before,
                             now=app.clock.now(), event_ends=ends)
    click.echo(f"erased {len(erased)} people")


@cli.command()
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
            _confirm(f"Send {total} reminders?", yes=yes)
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
    renderer.templates(REMINDER, subject=f"Przypomnienie: {settings.campaign.subject}")
    results = []
    for group in groups:
        todo = plan(group.contacts, store, kind=group.kind, report=SendReport())
        sender = CampaignSender(settings, renderer, store, kind=group.kind, template=REMINDER,
                                now=app.clock.now, audit=audit,
                                extra={"open_events": list(group.events)})
        results.append(await sender.run(todo))
    return results


@cli.command()
@click.option("--smtp-port", type=click.IntRange(1, 65535),
              help="Default: the campaign's [smtp] port when its host is local, else 2525.")
@click.option("--imap-port", type=click.IntRange(1, 65535),
              help="Default: the campaign's [imap] port when its host is local, else 1143.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Where the mailboxes live (default: devmail/ beside the campaign file).")
@click.option("--password", default="devserver", show_default=True,
              help="The one password of every mailbox.")
@click.option("--bounce", multiple=True, metavar="ADDRESS",
              help="Accept mail for ADDRESS, then bounce it (a DSN to the sender). Repeatable.")
@click.pass_obj
def devserver(app: App, smtp_port: int | None, imap_port: int | None, folder: Path | None,
              password: str, bounce: tuple[str, ...]) -> None:
    """Local SMTP + IMAP on 127.0.0.1 for trying everything out; Ctrl-C stops it."""
    options = options_for(app.config, root=folder, smtp_port=smtp_port,
                              imap_port=imap_port, password=password, bounce=bounce)
    if app.clock.rehearsal:
        log.warning("MAILER_NOW does not move arrival times: like a real server, the dev server "
                    "stamps mail with the real time (IMAP APPEND with a date sets any other)")
    server = run_until_stopped(options, click.echo)
    click.echo(f"stopped; {server.delivered} messages delivered this run; "
               f"the mailboxes stay in {options.root}")


@cli.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="The demo's workspace, new or empty (default: a new temporary folder).")
@click.pass_obj
def demo(app: App, folder: Path | None) -> None:
    """The whole flow end to end against the dev server, in a throwaway workspace."""
    run_demo(app.config, folder, click.echo)


def _write_or_echo(data: str | bytes, out: Path | None) -> None:
    if out is None:
        click.echo(data.decode("utf-8-sig") if isinstance(data, bytes) else data, nl=False)
        return
    out.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    click.echo(f"wrote {out}", err=True)


@cli.command()
@click.option("--cities", is_flag=True, help="One row per invited city.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_obj
def status(app: App, cities: bool, fmt: str) -> None:
    """Counts: deliveries, inbound by kind, registrations per event, pending answers."""
    settings = app.settings()
    with open_state(settings.storage, writer=False) as store:
        if cities:
            contacts = read_contacts(settings.campaign.recipients).contacts
            rows = city_status(contacts, store)
            event_ids = [e.id for e in settings.events]
            data = [{"city": r.city, "contacts": r.contacts, "status": str(r.status),
                     "invited": r.invited, "bounced": r.bounced,
                     "unsubscribed": r.unsubscribed, "registered": r.registered,
                     "incomplete": r.incomplete, "events": r.events} for r in rows]
            text = "\n".join(cities_table(rows, event_ids)) + "\n"
        else:
            data = [campaign_counts(store, settings)]
            text = format_counts(data[0])
    if fmt == "json":
        click.echo(json.dumps(data if cities else data[0], ensure_ascii=False, indent=2))
    elif fmt == "csv":
        _write_or_echo(counts_csv(data), None)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--event", "event_id", help="Only registrations for this event.")
@click.option("--status", "status_filter", type=click.Choice(["complete", "incomplete",
                                                               "cancelled"]))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]),
              default="table")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (required for xlsx).")
@click.pass_obj
def registrations(app: App, event_id: str | None, status_filter: str | None, fmt: str,
                  out: Path | None) -> None:
    """The registrations: table, CSV for Excel (UTF-8 BOM, ';'), JSON (SPEC §9) or XLSX."""
    settings = app.settings()
    events = [settings.event(event_id)] if event_id else list(settings.events)
    with open_state(settings.storage, writer=False) as store:
        records = registration_records(store, event=event_id, status=status_filter)
    if fmt == "xlsx":
        if out is None:
            raise UsageError("--format xlsx needs --out FILE.xlsx")
        to_xlsx(records, events, out, settings.campaign.timezone)
        click.echo(f"wrote {out} ({len(records)} registrations)", err=True)
    elif fmt == "csv":
        _write_or_echo(to_csv(records, events), out)
    elif fmt == "json":
        _write_or_echo(json.dumps(records, ensure_ascii=False, indent=2) + "\n", out)
    else:
        rows = [[r["name"] or "", r["city"] or "", r["email"] or "",
                 *(r["events"].get(e.id, "-") for e in events), r["status"]] for r in records]
        table = format_table(["name", "city", "e-mail", *(e.id for e in events), "status"], rows)
        _write_or_echo("\n".join(table) + "\n", out)


@cli.command()
@click.argument("email")
@click.pass_obj
def show(app: App, email: str) -> None:
    """One person: registrations with history, every message in and out, raw .eml paths."""
    settings = app.settings()
    with open_state(settings.storage, writer=False) as store:
        found = staff.person(store, email)
    if not (found.registrations or found.inbound or found.answers or found.deliveries):
        raise MailerError(f"nothing is stored about {email}")
    for line in describe_person(found):
        click.echo(line)


@cli.command()
@click.option("--handled", "handled_key", metavar="ID", help="Mark this message handled.")
@click.option("--note", default="", help="With --handled: why.")
@click.option("--register", "register_key", metavar="ID",
              help="Register the person of this message with the fields below.")
@click.option("--name")
@click.option("--position")
@click.option("--city")
@click.option("--email")
@click.option("--phone")
@click.option("--event", "events", multiple=True, help="Event id (repeat for several).")
@click.pass_obj
def review(app: App, /, handled_key: str | None, note: str, register_key: str | None,
           **fields: Any) -> None:
    """Inbound messages waiting for a human; resolve one with --handled or --register."""
    settings = app.settings()
    if handled_key or register_key:
        with open_state(settings.storage, writer=True) as store:
            audit = AuditLog(settings.storage)
            if handled_key:
                doc = staff.mark_handled(store, audit, handled_key, now=app.clock.now(),
                                         note=note)
            else:
                values = {k: v for k, v in fields.items() if v and k != "events"}
                values["event"] = ", ".join(fields["events"])
                doc = staff.register_by_hand(store, audit, settings, register_key or "",
                                             values, clock=app.clock)
        click.echo(f"resolved {doc['key'][:12]} from {doc['sender']}")
        return
    with open_state(settings.storage, writer=False) as store:
        waiting = staff.review_queue(store)
    rows = [[d["key"][:12], d.get("received", "")[:16], d.get("sender", ""), d.get("kind", ""),
             d.get("subject", "")[:40], d.get("review", "")] for d in waiting]
    click.echo("\n".join(format_table(["id", "received", "sender", "kind", "subject", "why"],
                                      rows)))
    click.echo(f"{len(waiting)} messages wait for review", err=True)


@cli.command()
@click.pass_obj
def doctor(app: App) -> None:
    """Check the campaign against its servers (SMTP, IMAP, DNS) without sending anything."""
    settings = app.settings()
    findings = asyncio.run(diagnose(settings))
    for finding in findings:
        click.echo(f"[{finding.level:>4}] {finding.check}: {finding.detail}")
    failed = [f for f in findings if f.level is Level.FAIL]
    if failed:
        raise MailerError(f"{len(failed)} checks failed (see above)")


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="TCP port (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback also needs --public.")
@click.option("--public", is_flag=True,
              help="Allow a non-loopback --host (only behind a TLS reverse proxy).")
@click.pass_obj
def web(app: App, port: int, host: str, public: bool) -> None:
    """The clerk's web view: audit, review, export. Prints one URL with an access token."""
    from mailer.web import serve  # noqa: PLC0415 (Starlette and uvicorn load only for this)

    serve(app.settings(), clock=app.clock, host=host, port=port, public=public,
          echo=click.echo)
