"""The raw messages of a batch, written to `state/messages` and made durable together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from mailer.errors import StateError
from mailer.journal import fsync_dir, write_all

SYNC_THREADS = 16  # raw messages fsync'd at once
EARLY_LIMIT = 1_000  # files written ahead and not yet claimed: the rest waits for its batch


class RawFiles:
    """The raw messages of one batch, made durable together before the batch is recorded.

    An fsync per message cost more than reading the message; here a batch's files are
    written and fsync'd by a pool of threads (concurrent fsyncs reach the disk together and
    share journal commits), renamed into place, and the folder is fsync'd once. A crash
    before that leaves at most temporary files and no journal line naming any of them: the
    batch is read again.

    `write_ahead` starts writing and fsyncing a batch's messages as soon as they are fetched,
    while the batch before is still being recorded and this one read: the fsyncs, the
    largest part of `sync` on a slow disk, are then mostly done when the batch is kept.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending: dict[Path, tuple[Path, bytes, bool]] = {}
        self.early: dict[Path, Future[None]] = {}  # temporary files being written ahead
        self._pool: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="rawfiles")
        return self._pool

    def write_ahead(self, files: Iterable[tuple[Path, bytes]]) -> None:
        """Start writing (and fsyncing) the temporary files of messages a later `add` will
        name; a file never claimed is removed by `abandon`."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return  # `sync` reports it, with the path
        for path, data in files:
            if path not in self.early and len(self.early) < EARLY_LIMIT:
                self.early[path] = self._threads().submit(_write_synced, (path, data, True))

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
            early = {path: self.early.pop(path) for path in self.pending if path in self.early}
            wait(early.values())
            # One written ahead that failed (a full disk) is written again: its error counts.
            todo = [item for path, item in self.pending.items()
                    if path not in early or early[path].exception() is not None]
            for future in [self._threads().submit(_write_synced, item) for item in todo]:
                future.result()
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

    def abandon(self) -> None:
        """`discard`, and the files written ahead for batches that will not be kept."""
        self.discard()
        early, self.early = self.early, {}
        wait(early.values())
        for path in early:
            with contextlib.suppress(OSError):
                os.unlink(_temporary(path))

    def close(self) -> None:
        self.abandon()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


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
