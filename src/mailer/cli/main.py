"""The command line: the only place that prints, prompts or exits.

`cli` is the click group; each side's commands live in a module of their own (send, inbox,
staff, tools) and are added to the group here, by name, not by the side effect of an import.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from mailer import __version__
from mailer.cli import inbox, send, staff, tools
from mailer.cli.app import EXIT_PENDING, App
from mailer.clock import clock_from_env
from mailer.errors import MailerError
from mailer.i18n import _
from mailer.settings import resolve_config_path

log = logging.getLogger("mailer")

# A bug, not a mistake in the configuration (exit 1) or the command line (exit 2): the
# service unit restarts on it (deploy/mailer.service). EX_SOFTWARE of sysexits.h.
EXIT_SOFTWARE = 70


def _configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mailer").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def summary(command: click.Command) -> str:
    """A command's line in `mailer --help`: its short_help, else the first paragraph of its
    help, whole. Click's own cuts at 45-60 characters ("… (a...") and at the first word
    ending in a full stop, mid-phrase ("(RODO art.") — issue 16."""
    if command.short_help:
        return command.short_help
    paragraph = inspect.cleandoc(command.help or "").split("\n\n", 1)[0]
    return " ".join(word for word in paragraph.split() if word != "\b")


class _Group(click.Group):
    """The `mailer` group: lists every command with its whole summary, wrapped, not cut."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary(command)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in (*send.COMMANDS, *inbox.COMMANDS, *staff.COMMANDS, *tools.COMMANDS):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: MailerError → its exit code and one clear line, never a traceback;
    anything unexpected → its traceback in the log and EXIT_SOFTWARE (issue 12)."""
    try:
        cli.main(args=argv, prog_name="mailer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(_("aborted"), err=True)
        sys.exit(EXIT_PENDING)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except MailerError as err:
        click.echo(_("error: {message}").format(message=err), err=True)
        if err.hint:
            click.echo(_("hint: {hint}").format(hint=err.hint), err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo(_("interrupted; what was sent is recorded — rerun to resume"), err=True)
        sys.exit(EXIT_PENDING)
    except Exception:
        log.exception("unexpected error (a bug: please report it with this traceback)")
        sys.exit(EXIT_SOFTWARE)
    sys.exit(0)
