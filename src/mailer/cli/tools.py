"""Commands for starting, trying and checking a setup: init, devserver, deliver, demo,
doctor.

Their modules (pymap, DNS) are imported inside the commands, so that `mailer send` and
`mailer run` do not pay for them at every start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from mailer.cli.app import App
from mailer.errors import MailerError
from mailer.i18n import _
from mailer.report import plural

log = logging.getLogger("mailer")


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def init(folder: Path) -> None:
    """Write a ready campaign folder (campaign file, templates, sample list) to edit."""
    from mailer.skeleton import write_campaign
    written = write_campaign(folder)
    click.echo(_("A campaign in {folder} ({files}):").format(
        folder=folder, files=plural(len(written), "file", "files")))
    # The paths and the steps' numbers stay outside the messages: the columns keep their line.
    click.echo("  campaign.toml          " + _(
        "the campaign: sender, events and deadlines, servers (comments in Polish and English)"))
    click.echo("  templates/             " + _(
        "the newsletter, the reminder and the answers (Jinja2)"))
    click.echo("  recipients/miasta.csv  " + _(
        "20 sample contacts (Windows-1250, ';', the columns "
        "email;imie;nazwisko;stanowisko;miasto)"))
    click.echo("  .gitignore             " + _(
        "keeps state/ (personal data) out of version control"))
    click.echo(_("Next:"))
    click.echo("  1. " + _(
        "campaign.toml: [campaign] name, sender, reply_to, subject; each [[event]] and its "
        "deadline; [smtp] and [imap] for your servers (passwords only in the variables named "
        "by password_env)"))
    click.echo("  2. " + _("recipients/: your contact list instead of the sample (same columns)"))
    click.echo("  3. " + _("templates/newsletter.txt.j2 and .html.j2: the invitation's text"))
    click.echo("  4. " + _("cd {folder} && mailer check && mailer preview; `mailer demo` plays "
                           "the whole flow on this machine").format(folder=folder))


@click.command()
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
    from mailer.dev.devserver import options_for, run_until_stopped
    # Under $MAILER_NOW mail arrives in the rehearsal's time: a reply sent by SMTP during a
    # rehearsal is on time or late as the rehearsal says, not stamped today (issue 16).
    options = options_for(app.config, root=folder, smtp_port=smtp_port,
                          imap_port=imap_port, password=password, bounce=bounce,
                          clock=app.clock)
    server = run_until_stopped(options, click.echo)
    click.echo(_("stopped; {delivered} this run; the mailboxes stay in {root}").format(
        delivered=plural(server.delivered, "message delivered", "messages delivered"),
        root=options.root))


@click.command()
@click.argument("eml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--at", "arrival", metavar="ISO-8601",
              help="Arrival time (INTERNALDATE), e.g. 2020-10-27T09:30:00+01:00 "
                   "(default: now, on the rehearsal clock under $MAILER_NOW).")
@click.pass_obj
def deliver(app: App, eml: Path, arrival: str | None) -> None:
    """Put a reply file into the campaign's inbox, arriving at a chosen time (rehearsals)."""
    from mailer.cli.app import parse_time
    from mailer.cli.inbox import read_message_file
    from mailer.imap_client import append_message
    settings = app.settings()
    when = parse_time(arrival, settings, "--at") if arrival else app.clock.now()
    data = read_message_file(eml)
    asyncio.run(append_message(settings.imap, settings.imap.password(), data, when))
    shown = when.astimezone(settings.campaign.timezone).isoformat(timespec="seconds")
    click.echo(_("{path} delivered to {user}@{host}:{port} {folder}, arriving {arrival}").format(
        path=eml, user=settings.imap.username, host=settings.imap.host,
        port=settings.imap.port, folder=settings.imap.folder, arrival=shown))


@click.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="The demo's workspace, new or empty (default: a new temporary folder).")
@click.pass_obj
def demo(app: App, folder: Path | None) -> None:
    """The whole flow end to end against the dev server, in a throwaway workspace."""
    from mailer.dev.demo import run_demo
    from mailer.settings import DEFAULT_CONFIG
    from mailer.skeleton import default_campaign
    if app.config.exists() or app.config != Path(DEFAULT_CONFIG):
        run_demo(app.config, folder, click.echo)
        return
    # Nothing configured here (issue 15): play the campaign that ships with mailer.
    with default_campaign() as config:
        click.echo(_("No {config} here: the demo plays mailer's default campaign "
                     "(`mailer init DIR` writes it out to edit).").format(config=DEFAULT_CONFIG))
        run_demo(config, folder, click.echo)


@click.command()
@click.pass_obj
def doctor(app: App) -> None:
    """Check the campaign against its servers (SMTP, IMAP, DNS) without sending anything."""
    from mailer.doctor import Level, diagnose
    settings = app.settings()
    findings = asyncio.run(diagnose(settings))
    for finding in findings:
        click.echo(f"[{finding.level:>4}] {finding.check}: {finding.detail}")
    failed = [f for f in findings if f.level is Level.FAIL]
    if failed:
        raise MailerError(_("{failed} (see above)").format(
            failed=plural(len(failed), "check failed", "checks failed")))


COMMANDS = (init, devserver, deliver, demo, doctor)
