"""The audit log: `state/audit.log`, one JSON line per action, with time and actor."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.errors import StateError
from mailer.store import atomic_write, write_all

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
    """Append-only JSON lines. Each entry is written at once and fsync'd in groups (never per
    message: the facts themselves are already durable in the journal); `flush` at the end of
    work."""

    def __init__(self, folder: Path, *, actor: str | None = None) -> None:
        self.path = folder / "audit.log"
        self.actor = actor or current_actor()
        self._unsynced = 0  # entries written since the last fsync

    def record(self, action: str, *, at: datetime | None = None, **details: Any) -> None:
        entry = {"at": (at or datetime.now(UTC)).isoformat(), "actor": self.actor,
                 "action": action, **details}
        # Written now (one append, ~6 µs), not kept in memory until the next flush: a
        # buffer of up to 500 entries was lost at every crash of the process (kill -9, OOM),
        # so after bench/chaos.py's kills the log missed most sends, receipts and answers.
        # Only the fsync is grouped: a power loss alone can take the newest lines.
        self._write(json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n",
                    sync=False)
        self._unsynced += 1
        if self._unsynced >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """fsync what `record` wrote since the last flush."""
        if not self._unsynced:
            return
        self._unsynced = 0
        self._write(b"", sync=True)

    def _write(self, data: bytes, *, sync: bool) -> None:
        try:
            fd = self._open_current()
            try:
                write_all(fd, data)  # a nearly full disk raises ENOSPC, not a torn line
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise StateError(f"{self.path}: cannot write the audit log: {err}") from err

    def _open_current(self) -> int:
        """The log for appending, under a shared lock, and surely the file now at `path`.

        `redact` replaces the file while holding the exclusive lock; an append that waited for
        it holds the replaced file, whose lines nobody reads any more: it opens again.
        (Readers such as `mailer web` append without the state's lock, beside `forget`.)
        """
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:  # replaced and not yet renamed into place: again
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

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
