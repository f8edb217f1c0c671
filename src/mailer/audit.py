"""The audit log: `state/audit.log`, one JSON line per action, with time and actor."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.journal import Doc, append_log, log_lines
from mailer.store import atomic_write

FLUSH_EVERY = 500


def current_actor() -> str:
    """Who is acting: the OS user for commands (the service logs as the user it runs as)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def web_actor() -> str:
    """The actor of what is done through `mailer web`: the user who runs it, marked."""
    return f"{current_actor()} (web)"


class AuditLog:
    """Append-only JSON lines, each with an `id`. The entry of a state change (a send, a
    receipt, an answer) goes through the store with the change (`entry` + `Store.stage_audit`
    or `put(…, audit=)`), so a kill neither loses nor doubles it; `record` logs the rest at
    once. fsync'd in groups, never per message; `flush` at the end of work."""

    def __init__(self, folder: Path, *, actor: str | None = None) -> None:
        self.path = folder / "audit.log"
        self.actor = actor or current_actor()
        self._unsynced = 0  # entries written since the last fsync

    def entry(self, action: str, *, at: datetime | None = None, **details: Any) -> Doc:
        """An entry to record with the state change it describes (`Store.stage_audit`,
        `Store.put(…, audit=)`): it reaches the log after the change is durable, and a kill
        in between is made good at the next start, by its `id` (issue 12)."""
        return {"id": secrets.token_hex(8), "at": (at or datetime.now(UTC)).isoformat(),
                "actor": self.actor, "action": action, **details}

    def record(self, action: str, *, at: datetime | None = None, **details: Any) -> None:
        """Log what changed no state (an export, a download, a forced send) at once."""
        # Written now (one append, ~6 µs), not kept in memory until the next flush: a
        # buffer of up to 500 entries was lost at every crash of the process (kill -9, OOM),
        # so after bench/chaos.py's kills the log missed most sends, receipts and answers.
        # Only the fsync is grouped: a power loss alone can take the newest lines.
        append_log(self.path, log_lines([self.entry(action, at=at, **details)]), sync=False)
        self._unsynced += 1
        if self._unsynced >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """fsync what `record` wrote since the last flush."""
        if not self._unsynced:
            return
        self._unsynced = 0
        append_log(self.path, b"", sync=True)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry (a torn last line after a crash is skipped)."""
        self.flush()
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        result = []
        for line in lines:
            try:
                result.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        return result

    def redact(self, needles: Iterable[str], replacement: str) -> int:
        """Erase personal data from past entries (RODO art. 17 outranks append-only).

        Rewrites the file atomically; returns how many entries changed.
        """
        self.flush()
        words = sorted({n for n in needles if n and len(n) > 2}, key=len, reverse=True)
        if not words or not self.path.exists():
            return 0
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # no append lands in what is being rewritten
            changed, out = 0, []
            with open(fd, "rb", closefd=False) as held:
                text = held.read().decode("utf-8", errors="replace")
            for line in text.splitlines(True):
                new = line
                for word in words:
                    new = _replace_folded(new, word, replacement)
                changed += new != line
                out.append(new)
            if changed:
                atomic_write(self.path, "".join(out).encode("utf-8"))
        finally:
            os.close(fd)  # and the lock with it; waiting appends find the new file
        return changed


def _replace_folded(text: str, word: str, replacement: str) -> str:
    """Replace `word` in any letter case (addresses are compared case-insensitively)."""
    lowered, target = text.casefold(), word.casefold()
    if target not in lowered or len(lowered) != len(text):
        return text.replace(word, replacement)
    pieces, start = [], 0
    while (at := lowered.find(target, start)) >= 0:
        pieces += [text[start:at], replacement]
        start = at + len(target)
    return "".join([*pieces, text[start:]])
