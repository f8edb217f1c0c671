"""The current time, or the rehearsal clock of $MAILER_NOW ."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from mailer.errors import ConfigError

ENV = "MAILER_NOW"


@dataclass(frozen=True)
class Clock:
    """Real time, or time that starts at `start` and runs on from there.

    A rehearsal clock keeps ticking (instead of standing still) so that a long `mailer run`
    still sees time pass; a short command effectively sees `start`.
    """

    start: datetime | None = None
    _t0: float = field(default_factory=time.monotonic)

    @property
    def rehearsal(self) -> bool:
        return self.start is not None

    def now(self) -> datetime:
        """An aware UTC date-time."""
        if self.start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=time.monotonic() - self._t0)


def clock_from_env() -> Clock:
    """The clock $MAILER_NOW asks for; an error names the variable and the expected form."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return Clock()
    try:
        start = datetime.fromisoformat(raw)
    except ValueError as err:
        raise ConfigError(f"${ENV}={raw!r}: expected an ISO-8601 date-time with an offset, "
                          "like 2020-10-19T09:00:00+02:00") from err
    if start.tzinfo is None:
        raise ConfigError(f"${ENV}={raw!r}: the time needs an offset, like +02:00")
    return Clock(start.astimezone(UTC))


def in_zone(value: str | None, zone: tzinfo) -> datetime | None:
    """A stored ISO-8601 time (UTC) in `zone`; None when there is none or it is no time."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(zone) if moment.tzinfo else moment.replace(tzinfo=UTC).astimezone(
        zone)


def local_iso(value: str | None, zone: tzinfo) -> str | None:
    """A stored time as ISO-8601 in the campaign's zone, with its offset (for JSON and CSV);
    a value that is no time is kept as it is."""
    moment = in_zone(value, zone)
    return moment.isoformat() if moment else value


def shown_time(value: str | None, zone: tzinfo) -> str:
    """A stored time as staff read it on a terminal: "2020-10-20 12:00 +02:00" in the
    campaign's zone (SPEC: every time shown is in that zone, with its offset)."""
    moment = in_zone(value, zone)
    if moment is None:
        return value or ""
    return moment.strftime("%Y-%m-%d %H:%M %z")[:-2] + ":" + moment.strftime("%z")[-2:]
