"""Commands of the staff's side: status, registrations, show, review, forget, purge, web.

openpyxl and starlette are imported inside their commands, so that `mailer send` and `mailer
run` do not pay for them at every start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from mailer import erase, reasons, staff
from mailer.audit import AuditLog
from mailer.cli.app import App, confirm, parse_time
from mailer.clock import shown_time
from mailer.contacts import read_contacts
from mailer.errors import MailerError, UsageError
from mailer.i18n import _
from mailer.models import CURRENT_STATUSES
from mailer.report import cities_table, city_status, format_table, plural
from mailer.staff import campaign_counts, counts_csv, describe_person, format_counts
from mailer.store import open_state

log = logging.getLogger("mailer")


@click.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def forget(app: App, email: str, yes: bool) -> None:
    """Erase that person's personal data (RODO article 17), keeping a suppression hash."""
    settings = app.settings()
    confirm(_("Erase every record and message of {email}? This cannot be undone").format(
        email=email), yes=yes)
    with open_state(settings.storage, writer=True) as store:
        erasure = erase.forget(store, AuditLog(settings.storage), email, now=app.clock.now())
    click.echo(_("erased {records} and {messages}; redacted {entries}; the address is kept "
                 "only as {subject}, so it is never mailed again").format(
        records=plural(erasure.documents, "record", "records"),
        messages=plural(erasure.files, "stored message", "stored messages"),
        entries=plural(erasure.audit_entries, "audit entry", "audit entries"),
        subject=erasure.subject))
    click.echo(_("note: copies on the mail server (the IMAP folder) are not touched"), err=True)
    # Logs are not state: they are the system's (journald, a file), and `forget` cannot edit
    # them (issue 12). The inbox side logs message keys; sending failures name the recipient.
    click.echo(_("note: the service's logs (journald: journalctl -u mailer, or wherever its "
                 "output goes) may still hold the address in lines about sending to it and in "
                 "lines an earlier release wrote; they go when the log is rotated "
                 "(see the README, 'What the logs keep')"), err=True)


@click.command()
@click.option("--before", "before_text", required=True,
              help="Erase people registered only for events that ended before this date.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge(app: App, before_text: str, yes: bool) -> None:
    """Erase personal data of events that have ended (RODO article 5(1)(e))."""
    settings = app.settings()
    before = parse_time(before_text, settings, "--before")
    ends = {e.id: e.starts or e.deadline for e in settings.events}
    confirm(_("Erase everyone registered only for events that ended before {before}?").format(
        before=before.isoformat()), yes=yes)
    with open_state(settings.storage, writer=True) as store:
        erased = erase.purge(store, AuditLog(settings.storage), before=before,
                             now=app.clock.now(), event_ends=ends)
    click.echo(_("erased {people}").format(people=plural(len(erased), "person", "people")))


def _write_or_echo(data: str | bytes, out: Path | None) -> None:
    if out is None:
        click.echo(data.decode("utf-8-sig") if isinstance(data, bytes) else data, nl=False)
        return
    from mailer.export import write_private  # 0600: registrations are personal data
    write_private(out, data if isinstance(data, bytes) else data.encode("utf-8"))
    click.echo(_("wrote {path}").format(path=out), err=True)


@click.command()
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
                     "incomplete": r.incomplete, "review": r.review, "events": r.events,
                     "people_per_event": r.people_per_event} for r in rows]
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


@click.command()
@click.option("--event", "event_id", help="Only registrations for this event.")
# Plain strings: click shows and returns an enum member's name, not its value.
@click.option("--status", "status_filter",
              type=click.Choice([str(status) for status in CURRENT_STATUSES]))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]),
              default="table")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (required for xlsx).")
@click.pass_obj
def registrations(app: App, event_id: str | None, status_filter: str | None, fmt: str,
                  out: Path | None) -> None:
    """The registrations: table, CSV for Excel (UTF-8 BOM, ';'), JSON or XLSX."""
    from mailer.export import record_export, registration_records, to_csv, to_xlsx
    settings = app.settings()
    events = [settings.event(event_id)] if event_id else list(settings.events)
    with open_state(settings.storage, writer=False) as store:
        records = registration_records(store, event=event_id, status=status_filter,
                                       zone=settings.campaign.timezone)
    if fmt != "table":  # data leaving in a form for other programs; the table is for the screen
        record_export(settings.storage, actor=None, at=app.clock.now(), fmt=fmt,
                      rows=len(records), filters={"event": event_id, "status": status_filter},
                      to=str(out) if out else "stdout")
    if fmt == "xlsx":
        if out is None:
            raise UsageError(_("--format xlsx needs --out FILE.xlsx"))
        to_xlsx(records, events, out, settings.campaign.timezone)
        click.echo(_("wrote {path} ({registrations})").format(
            path=out, registrations=plural(len(records), "registration", "registrations")),
                   err=True)
    elif fmt == "csv":
        _write_or_echo(to_csv(records, events), out)
    elif fmt == "json":
        _write_or_echo(json.dumps(records, ensure_ascii=False, indent=2) + "\n", out)
    else:
        rows = [[r["name"] or "", r["city"] or "", r["email"] or "",
                 *(r["events"].get(e.id, "-") for e in events), r["status"]] for r in records]
        table = format_table(["name", "city", "e-mail", *(e.id for e in events), "status"], rows)
        _write_or_echo("\n".join(table) + "\n", out)


@click.command()
@click.argument("email")
@click.pass_obj
def show(app: App, email: str) -> None:
    """One person: registrations with history, every message in and out, raw .eml paths."""
    settings = app.settings()
    with open_state(settings.storage, writer=False) as store:
        found = staff.person(store, email)
    if not (found.registrations or found.inbound or found.answers or found.deliveries):
        raise MailerError(_("nothing is stored about {email}").format(email=email))
    for line in describe_person(found, settings.campaign.timezone):
        click.echo(line)


@click.command()
@click.option("--handled", "handled_key", metavar="ID", help="Mark this message handled.")
@click.option("--note", default="", help="With --handled: why.")
@click.option("--release", "release_key", metavar="ID",
              help="Approve the answer held for this message (sender not verified); the "
              "service sends it with its next pass.")
@click.option("--register", "register_key", metavar="ID",
              help="Register the person of this message with the fields below.")
@click.option("--name")
@click.option("--position")
@click.option("--city")
@click.option("--email")
@click.option("--phone")
@click.option("--event", "events", multiple=True, help="Event id (repeat for several).")
@click.pass_obj
def review(app: App, /, handled_key: str | None, note: str, release_key: str | None,
           register_key: str | None, **fields: Any) -> None:
    """Inbound messages waiting for a human; resolve one with --handled, --release or
    --register."""
    settings = app.settings()
    if handled_key or release_key or register_key:
        with open_state(settings.storage, writer=True) as store:
            audit = AuditLog(settings.storage)
            if handled_key:
                doc = staff.mark_handled(store, audit, handled_key, now=app.clock.now(),
                                         note=note)
            elif release_key:
                doc = staff.release_answer(store, audit, release_key, now=app.clock.now())
                click.echo(_("the answer goes out with the service's next pass"), err=True)
            else:
                values = {k: v for k, v in fields.items() if v and k != "events"}
                values["event"] = ", ".join(fields["events"])
                doc = staff.register_by_hand(store, audit, settings, register_key or "",
                                             values, clock=app.clock)
        click.echo(_("resolved {key} from {sender}").format(key=doc["key"][:12],
                                                              sender=doc["sender"]))
        return
    with open_state(settings.storage, writer=False) as store:
        waiting = staff.review_queue(store)
        held = {d["key"] for d in waiting if staff.held_answer(store, d["key"])}
    zone = settings.campaign.timezone
    rows = [[d["key"][:12], shown_time(d.get("received"), zone), d.get("sender", ""),
             d.get("kind", ""),
             d.get("subject", "")[:40], _why(d, held=d["key"] in held)] for d in waiting]
    click.echo("\n".join(format_table(["id", "received", "sender", "kind", "subject", "why"],
                                      rows)))
    click.echo(_("{waiting} for review").format(
        waiting=plural(len(waiting), "message waits", "messages wait")),
               err=True)


def _why(doc: dict[str, Any], *, held: bool) -> str:
    """The review reason, and that an answer waits for --release when one does."""
    why = reasons.english(doc.get("review"))
    return f"{why}; answer held (--release)" if held and "answer held" not in why else why


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="TCP port (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback also needs --public.")
@click.option("--public", is_flag=True,
              help="Allow a non-loopback --host (only behind a TLS reverse proxy).")
@click.pass_obj
def web(app: App, port: int, host: str, public: bool) -> None:
    """The clerk's web view: audit, review, export. Prints one URL with an access token."""
    from mailer.web.app import serve

    serve(app.settings(), clock=app.clock, host=host, port=port, public=public,
          echo=click.echo)


COMMANDS = (status, registrations, show, review, forget, purge, web)
