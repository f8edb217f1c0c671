"""State under `storage.path`: TinyDB tables, an fsync'd journal in front of them, one writer.

TinyDB rewrites its whole file on every write (SPEC §8), so per-message facts go first to an
append-only journal (one JSON line each, group-committed with one fsync for all the lines
that arrived meanwhile) and are folded into TinyDB in one atomic write at the end of a run or
when the journal grows. Readers merge both, so they see the state while a writer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from mailer.errors import StateError, StateLockedError

log = logging.getLogger(__name__)

Doc = dict[str, Any]
FOLD_EVERY = 20_000  # journal lines; a fold of 50,000 deliveries takes about a second


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written file (TinyDB #6, #467).

    The stock JSONStorage rewrites the file in place, so a crash mid-write leaves a truncated
    file. Here every write goes to a temporary file that is fsync'd and renamed over the old
    one, and the folder is fsync'd so the rename itself survives a power loss.
    """

    def __init__(self, path: str | Path, *, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            data: dict[str, dict[str, Any]] = json.loads(text)
        except json.JSONDecodeError as err:
            raise StateError(f"{self.path}: not valid JSON ({err}); restore it from a backup")\
                from err
        return data

    def write(self, data: Mapping[str, Any]) -> None:
        if not self.writable:
            raise StateError(f"{self.path}: opened read-only")
        atomic_write(self.path, json.dumps(data, ensure_ascii=False).encode("utf-8"))

    def close(self) -> None:
        pass


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, sync_dir: bool = True) -> None:
    """Replace `path` with `data` (bytes, or chunks of them) so that a crash leaves either the
    old or the new file.

    With `sync_dir=False` the caller fsyncs the folder once for many files.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in [data] if isinstance(data, bytes) else data:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # chunks are made while writing: they may fail too
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise StateError(f"{path}: cannot write: {err}; the previous file is intact") \
                from err
        raise
    if sync_dir:
        fsync_dir(path.parent)


_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(…, ensure_ascii=False)


def tinydb_file(tables: Mapping[str, Mapping[str, Doc]]) -> Iterator[bytes]:
    """TinyDB's file for `tables`, documents numbered from 1, as UTF-8 chunks.

    The same bytes as `json.dumps({name: {"1": doc, …}}, ensure_ascii=False).encode()`, made
    a thousand documents at a time: the whole at once is a str of 2 bytes a character
    (Polish letters) and its UTF-8 copy, 50 MB at 50,000 deliveries, which is what set the
    peak memory of a campaign.
    """
    encode = _JSON.encode
    parts = ["{"]
    for t, (name, docs) in enumerate(tables.items()):
        parts.append(f"{', ' if t else ''}{encode(name)}: {{")
        for i, doc in enumerate(docs.values(), start=1):
            parts.append(f'{", " if i > 1 else ""}"{i}": {encode(doc)}')
            if len(parts) >= 1000:
                yield "".join(parts).encode("utf-8")
                parts = []
        parts.append("}")
    parts.append("}")
    yield "".join(parts).encode("utf-8")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateLock:
    """An exclusive flock on `state/lock`; the file names the pid that holds it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise StateError(f"{self.path}: cannot lock: {err}") from err
            raise StateLockedError(
                f"{self.path.parent} is in use by another mailer process (pid {holder})",
                hint="wait for it to finish or stop it; reading commands work meanwhile",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:  # a full disk: say so, not a traceback
            os.close(fd)
            raise StateError(f"{self.path}: cannot write: {err}") from err
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class Journal:
    """Append-only JSON lines with group commit; a torn last line is dropped on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._io: asyncio.Lock | None = None  # held while a batch is written, and by a fold
        self.lines = 0

    @property
    def io_lock(self) -> asyncio.Lock:
        if self._io is None:
            self._io = asyncio.Lock()
        return self._io

    def read(self, *, repair: bool) -> list[Doc]:
        """Every complete record; with `repair`, cut off a torn tail so appends stay clean."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records, good = _parse_lines(raw)
        if repair and good < len(raw):
            log.warning("%s: dropping %d bytes of a torn last record", self.path, len(raw) - good)
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
        self.lines = len(records)
        return records

    def open_for_append(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_dir(self.path.parent)

    def append_now(self, records: list[Doc]) -> None:
        """Write and fsync `records` before returning (for commands without an event loop)."""
        self._write(b"".join(_line(r) for r in records))
        self.lines += len(records)

    async def append(self, record: Doc) -> None:
        """Return once `record` is on disk; records arriving meanwhile share one fsync."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((_line(record), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            async with self.io_lock:
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
                except Exception as err:  # every waiter must hear of the failure
                    error: Exception | None = err
                else:
                    error = None
            if error is not None:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.lines += len(batch)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, data: bytes) -> None:
        assert self.fd is not None, "journal not opened for append"
        before = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            # A nearly full disk takes part of a write and says so only by the count: loop, so
            # the ENOSPC that follows cuts the torn record off instead of acknowledging it.
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, before)
            raise StateError(f"{self.path}: cannot record: {err}") from err

    def reset(self) -> None:
        """Empty the journal after its records were folded into TinyDB."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.lines = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _line(record: Doc) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _parse_lines(raw: bytes) -> tuple[list[Doc], int]:
    records: list[Doc] = []
    good = 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        good += len(line)
    return records, good


class Store:
    """The merged view of TinyDB and the journal; writes go through the journal."""

    def __init__(self, folder: Path, *, writer: bool) -> None:
        self.folder = folder
        self.writer = writer
        self.lock = StateLock(folder)
        self.journal = Journal(folder / "journal.jsonl")
        self.db_path = folder / "mailer.json"
        self.tables: dict[str, dict[str, Doc]] = {}
        self._staged: list[Doc] = []

    @classmethod
    def open(cls, folder: Path, *, writer: bool) -> Store:
        """Open the state; a writer takes the lock (failing fast) and repairs a torn journal."""
        store = cls(folder, writer=writer)
        if writer:
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                folder.chmod(0o700)  # personal data: owner only, even for a folder from git
            except OSError as err:
                raise StateError(f"{folder}: cannot create the state folder: {err}") from err
            store.lock.acquire()
            try:
                store._load()
                store.journal.open_for_append()
            except BaseException:
                store.lock.release()
                raise
        elif folder.is_dir():
            store._load()
        return store

    def _load(self) -> None:
        for _ in range(5):
            inode = _inode(self.db_path)
            tables = _read_db(self.db_path)
            records = self.journal.read(repair=self.writer)
            if _inode(self.db_path) == inode:  # no fold happened while we read
                break
        for record in records:
            # A {"tx": [...]} line holds the records of one message, applied all or nothing.
            for item in record.get("tx", [record]):
                table = tables.setdefault(item["t"], {})
                if item["v"] is None:  # a deletion (RODO erasure)
                    table.pop(item["k"], None)
                else:
                    table[item["k"]] = item["v"]
        self.tables = tables

    def get(self, table: str, key: str) -> Doc | None:
        return self.tables.get(table, {}).get(key)

    def all(self, table: str) -> list[Doc]:
        return list(self.tables.get(table, {}).values())

    def keys(self, table: str) -> set[str]:
        return set(self.tables.get(table, {}))

    async def put(self, table: str, key: str, doc: Doc) -> None:
        """Record `doc` durably (fsync'd, group-committed); returns once it is on disk.

        The in-memory table is updated first, so a fold that runs meanwhile already holds
        every record the journal may contain when the fold empties it.
        """
        doc["key"] = key
        self.tables.setdefault(table, {})[key] = doc
        await self.journal.append({"t": table, "k": key, "v": doc})

    def stage(self, table: str, key: str, doc: Doc) -> None:
        """Change a document in memory now; `commit` records all staged changes at once."""
        doc["key"] = key
        self.tables.setdefault(table, {})[key] = doc
        self._staged.append({"t": table, "k": key, "v": doc})

    @property
    def staged(self) -> int:
        """How many changes wait for `commit`."""
        return len(self._staged)

    def stage_delete(self, table: str, key: str) -> None:
        """Remove a document (in memory now, on disk at `commit`; gone from TinyDB at the fold)."""
        self.tables.get(table, {}).pop(key, None)
        self._staged.append({"t": table, "k": key, "v": None})

    def commit_now(self) -> None:
        """`commit` for code without an event loop."""
        if self._staged:
            items, self._staged = self._staged, []
            self.journal.append_now([{"tx": items}])

    async def commit(self) -> None:
        """Write every staged change as one journal line (all or nothing after a crash)."""
        if self._staged:
            items, self._staged = self._staged, []
            await self.journal.append({"tx": items})

    async def put_many(self, records: list[tuple[str, str, Doc]]) -> None:
        """Record several documents as one journal line: after a crash all or none are there."""
        items = []
        for table, key, doc in records:
            doc["key"] = key
            self.tables.setdefault(table, {})[key] = doc
            items.append({"t": table, "k": key, "v": doc})
        await self.journal.append({"tx": items})

    def put_now(self, table: str, key: str, doc: Doc) -> None:
        """Like `put`, for code without an event loop."""
        doc["key"] = key
        self.tables.setdefault(table, {})[key] = doc
        self.journal.append_now([{"t": table, "k": key, "v": doc}])

    async def fold_if_large(self) -> None:
        """Fold when the journal is long, never while a batch of it is being written."""
        if self.journal.lines >= FOLD_EVERY:
            async with self.journal.io_lock:
                self.fold()

    def fold(self) -> None:
        """Write every table into TinyDB in one atomic write, then empty the journal.

        A crash between the two replays the journal over the new file on the next open;
        records are whole documents keyed by id, so replaying them changes nothing.
        """
        assert not self._staged, "fold with uncommitted changes"
        if not self.journal.lines:
            return
        atomic_write(self.db_path, tinydb_file(self.tables))  # what AtomicJSONStorage writes
        self.journal.reset()

    def close(self) -> None:
        """Fold and release the lock (a writer); nothing to do for a reader."""
        if not self.writer:
            return
        try:
            if self._staged:
                # A transaction failed half-way (a full disk while its raw messages were
                # saved): its changes exist in memory only and must not reach TinyDB. The
                # journal holds every committed change; the next open replays it.
                log.warning("%s: %d uncommitted changes dropped; the journal is not folded",
                            self.folder, len(self._staged))
            else:
                self.fold()
        finally:
            self.journal.close()
            self.lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read_db(path: Path) -> dict[str, dict[str, Doc]]:
    """TinyDB's tables as {table: {key: doc}}; each document carries its own `key`."""
    if not path.exists():
        return {}
    # TinyDB's own Table.all() reads (and parses) the whole file once per table: at 20,000
    # registrations that was 6 s and 415 MB. Its storage is read once here instead; the
    # format is TinyDB's ({table: {doc_id: doc}}), written by the same storage.
    data = AtomicJSONStorage(path, writable=False).read() or {}
    return {name: {doc["key"]: doc for doc in table.values()} for name, table in data.items()}


@contextlib.contextmanager
def open_state(folder: Path, *, writer: bool) -> Iterator[Store]:
    """`with open_state(path, writer=True) as store:` — folds and unlocks on exit."""
    store = Store.open(folder, writer=writer)
    try:
        yield store
    finally:
        store.close()
