"""The raw messages of a batch, written to `state/messages` and made durable together."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailer.errors import StateError
from mailer.journal import fsync_dir, write_all

SYNC_THREADS = 16  # raw messages fsync'd at once at the end of a batch


class RawFiles:
    """The raw messages of one batch, made durable together before the batch is recorded.

    An fsync per message cost more than reading the message; here a batch's files are
    written and fsync'd by a pool of threads (concurrent fsyncs reach the disk together and
    share journal commits), renamed into place, and the folder is fsync'd once. A crash
    before that leaves at most temporary files and no journal line naming any of them: the
    batch is read again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending: dict[Path, tuple[Path, bytes, bool]] = {}

    def add(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        """`durable=False`: a file derived from another (what was read of a message), written
        with the batch but not fsync'd: a power cut may lose it, never the message."""
        # A message whose recording failed half-way is added again (issue 12): kept once.
        self.pending.setdefault(path, (path, data, durable))

    def sync(self) -> None:
        """Write and fsync every file (in parallel), rename each into place, fsync the folder."""
        if not self.pending:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with ThreadPoolExecutor(min(SYNC_THREADS, len(self.pending))) as pool:
                list(pool.map(_write_synced, self.pending.values()))
            for path in self.pending:
                os.replace(_temporary(path), path)
        except OSError as err:
            raise StateError(f"{self.folder}: cannot write the raw messages: {err}") from err
        self.pending = {}
        fsync_dir(self.folder)

    def discard(self) -> None:
        """Forget what was not synced (the batch failed), temporary files included."""
        pending, self.pending = self.pending, {}
        for path in pending:
            with contextlib.suppress(OSError):
                os.unlink(_temporary(path))


def _temporary(path: Path) -> Path:
    # Names are content hashes and one process writes (the state lock): no clashes.
    return path.with_name(f".{path.name}.tmp")


def _write_synced(item: tuple[Path, bytes, bool]) -> None:
    path, data, durable = item
    fd = os.open(_temporary(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
