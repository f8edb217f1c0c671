"""What every command shares: the campaign file and clock (App), confirmation, time options."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from mailer.clock import Clock
from mailer.errors import UsageError
from mailer.settings import Settings, load_settings

EXIT_PENDING = 3


@dataclass
class App:
    """What every command needs: the campaign file's path and the clock."""

    config: Path
    clock: Clock

    def settings(self) -> Settings:
        return load_settings(self.config)


def confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; without one (and without --yes) refuse with exit 2."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} — no terminal to ask on",
                         hint="add --yes to confirm in a script")
    if not click.confirm(question, default=False):
        raise UsageError("cancelled; nothing was sent")


def parse_time(value: str, settings: Settings, option: str) -> datetime:
    """An ISO-8601 option value; a naive one is in the campaign's time zone."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError as err:
        raise UsageError(f"{option} {value!r}: expected ISO-8601 like "
                         "2020-10-20T12:00:00+02:00") from err
    return when if when.tzinfo else when.replace(tzinfo=settings.campaign.timezone)
