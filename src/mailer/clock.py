"""The current time, or the rehearsal clock of $MAILER_NOW ."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
