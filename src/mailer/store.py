"""State under `storage.path`: TinyDB tables, an fsync'd journal in front of them, one writer.

TinyDB rewrites its whole file on every write, so per-message facts go first to an
append-only journal (one JSON line each, group-committed with one fsync for all the lines
that arrived meanwhile) and are folded into TinyDB in one atomic write at the end of a run or
when the journal grows. Readers merge both, so they see the state while a writer runs.

In memory each document is kept as its compact UTF-8 JSON, decoded when asked for: a Python
dict costs three to four times its JSON (20,000 registrations with their messages and
answers took 180 MB as dicts, 60 MB as JSON). The same bytes go to the journal and, at the
fold, into TinyDB's file, one document per line, so that the file is read back a line at a
time instead of parsed whole (which held the text and every document at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from mailer.errors import StateError, StateLockedError
from mailer.migrate import migrate, record_version

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


Raw = bytes  # a document as compact UTF-8 JSON


def encode(doc: Doc) -> Raw:
    """A document as it is kept: compact UTF-8 JSON."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def tinydb_file(tables: Mapping[str, Mapping[str, Raw]]) -> Iterator[bytes]:
    """TinyDB's file for `tables` (`{name: {"1": doc, …}}`), documents numbered from 1, as
    chunks: each document on a line of its own (still one JSON value, which TinyDB reads), so
    `_read_db` can take the file a line at a time.
    """
    yield b"{"
    for t, (name, docs) in enumerate(tables.items()):
        parts = [b",\n" if t else b"", _json_bytes(name), b": {"]
        for i, raw in enumerate(docs.values(), start=1):
            parts += (b",\n" if i > 1 else b"\n", b'"%d": ' % i, raw)
            if len(parts) >= 3000:
                yield b"".join(parts)
                parts = []
        parts.append(b"\n}")
        yield b"".join(parts)
    yield b"}\n"


def _json_bytes(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, looping over short writes.

    A nearly full disk takes part of a write and says so only by the count: the loop makes
    the ENOSPC that follows raise instead of a torn record passing for a whole one.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
        """Every complete record; with `repair`, cut off a torn tail so appends stay clean.

        Only the last line can be torn by a crash (issue 12): a damaged line followed by
        others is a StateError, and the file is left as it is.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records, good = _parse_lines(raw, self.path)
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

    def append_now(self, line: bytes) -> None:
        """Write and fsync one record line before returning (for code without an event loop)."""
        self._write(line)
        self.lines += 1

    async def append(self, line: bytes) -> None:
        """Return once the record `line` is on disk; lines arriving meanwhile share one fsync."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, future))
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
            # A torn write ends in ENOSPC from write_all: the torn record is cut off below
            # instead of acknowledged.
            write_all(self.fd, data)
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


def _record(table: str, key: str, raw: Raw | None) -> bytes:
    """One change as the journal holds it: {"t": table, "k": key, "v": doc or null}."""
    return b'{"t":%s,"k":%s,"v":%s}' % (_json_bytes(table), _json_bytes(key),
                                         b"null" if raw is None else raw)




def _parse_lines(raw: bytes, path: Path) -> tuple[list[Doc], int]:
    """The records of a journal and the length of its whole part.

    A crash can tear only the last line (cut short, or garbage where it did not reach the
    disk): it is left out of that length. A bad line with lines after it is damage, not a
    crash, and cutting the journal there would lose every later transaction without a word:
    that is a StateError naming the line (issue 12).
    """
    records: list[Doc] = []
    good = 0
    lines = raw.split(b"\n")  # json escapes every \n inside a record
    last = len(lines) - 1  # the text after the last newline ("" for a whole journal)
    for number, line in enumerate(lines, start=1):
        record = _parse_record(line) if number <= last else None
        if record is not None:
            records.append(record)
        elif line.strip() and any(rest.strip() for rest in lines[number:]):
            raise _damaged(path, number)
        elif line.strip():  # the torn last record: left out of `good`
            break
        good += len(line) + (number <= last)
    return records, good


def _parse_record(line: bytes) -> Doc | None:
    """A journal line as a record (one change, or a {"tx": [...]} of them), or None."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    changes = record.get("tx", [record])
    if not isinstance(changes, list) or not all(
            isinstance(c, dict) and {"t", "k", "v"} <= c.keys() for c in changes):
        return None
    return record


def _damaged(path: Path, number: int) -> StateError:
    return StateError(
        f"{path}: line {number} is damaged and has records after it: it is not a record "
        "torn by a crash, so the journal was left as it is",
        hint=f"copy the folder {path.parent} somewhere safe first; then remove or fix line "
             f"{number} of {path.name} (the transactions on it are lost) and run again, "
             "or restore the state folder from a backup")


class Store:
    """The merged view of TinyDB and the journal; writes go through the journal.

    `get`, `all` and `iter` hand out fresh dicts: change one and `stage` or `put` it.
    """

    def __init__(self, folder: Path, *, writer: bool) -> None:
        self.folder = folder
        self.writer = writer
        self.lock = StateLock(folder)
        self.journal = Journal(folder / "journal.jsonl")
        self.db_path = folder / "mailer.json"
        self.tables: dict[str, dict[str, Raw]] = {}
        self._staged: list[bytes] = []

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
        for attempt in range(5):
            inode = _inode(self.db_path)
            tables = _read_db(self.db_path)
            try:
                records = self.journal.read(repair=self.writer)
            except StateError:
                if attempt < 4 and _inode(self.db_path) != inode:  # emptied by a fold meanwhile
                    continue
                raise
            if _inode(self.db_path) == inode:  # no fold happened while we read
                break
        for record in records:
            # A {"tx": [...]} line holds the records of one message, applied all or nothing.
            for item in record.get("tx", [record]):
                table = tables.setdefault(item["t"], {})
                if item["v"] is None:  # a deletion (RODO erasure)
                    table.pop(item["k"], None)
                else:
                    table[item["k"]] = encode(item["v"])
        self.tables = tables

    def get(self, table: str, key: str) -> Doc | None:
        raw = self.tables.get(table, {}).get(key)
        return None if raw is None else _decode(raw)

    def has(self, table: str, key: str) -> bool:
        return key in self.tables.get(table, {})

    def all(self, table: str) -> list[Doc]:
        return list(self.iter(table))

    def iter(self, table: str) -> Iterator[Doc]:
        """The documents one at a time (a snapshot: staging meanwhile is safe), so a pass over
        a large table never holds all of them decoded."""
        return (_decode(raw) for raw in list(self.tables.get(table, {}).values()))

    def keys(self, table: str) -> set[str]:
        return set(self.tables.get(table, {}))

    def _keep(self, table: str, key: str, doc: Doc) -> bytes:
        """Set the document in memory; returns its journal record."""
        doc["key"] = key
        raw = encode(doc)
        self.tables.setdefault(table, {})[key] = raw
        return _record(table, key, raw)

    async def put(self, table: str, key: str, doc: Doc) -> None:
        """Record `doc` durably (fsync'd, group-committed); returns once it is on disk.

        The in-memory table is updated first, so a fold that runs meanwhile already holds
        every record the journal may contain when the fold empties it.
        """
        await self.journal.append(self._keep(table, key, doc) + b"\n")

    def stage(self, table: str, key: str, doc: Doc) -> None:
        """Change a document in memory now; `commit` records all staged changes at once."""
        self._staged.append(self._keep(table, key, doc))

    @property
    def staged(self) -> int:
        """How many changes wait for `commit`."""
        return len(self._staged)

    def stage_delete(self, table: str, key: str) -> None:
        """Remove a document (in memory now, on disk at `commit`; gone from TinyDB at the fold)."""
        self.tables.get(table, {}).pop(key, None)
        self._staged.append(_record(table, key, None))

    def commit_now(self) -> None:
        """`commit` for code without an event loop."""
        if self._staged:
            records, self._staged = self._staged, []
            self.journal.append_now(_transaction(records))

    async def commit(self) -> None:
        """Write every staged change as one journal line (all or nothing after a crash)."""
        if self._staged:
            records, self._staged = self._staged, []
            await self.journal.append(_transaction(records))

    async def put_many(self, records: list[tuple[str, str, Doc]]) -> None:
        """Record several documents as one journal line: after a crash all or none are there."""
        await self.journal.append(_transaction([self._keep(*record) for record in records]))

    def put_now(self, table: str, key: str, doc: Doc) -> None:
        """Like `put`, for code without an event loop."""
        self.journal.append_now(self._keep(table, key, doc) + b"\n")

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
        atomic_write(self.db_path, tinydb_file(self.tables))  # what AtomicJSONStorage reads
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


def _decode(raw: Raw) -> Doc:
    doc: Doc = json.loads(raw)
    return doc


def _transaction(records: list[bytes]) -> bytes:
    """Changes applied all or nothing: one journal line even when there is one change."""
    return b'{"tx":[%s]}\n' % b",".join(records)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


_TABLE_START = re.compile(rb'^\{?("(?:[^"\\]|\\.)*"): \{$')
_DOCUMENT = re.compile(rb'^"\d+": (\{.*\}),?$')


def _read_db(path: Path) -> dict[str, dict[str, Raw]]:
    """TinyDB's tables as {table: {key: raw document}}; each document carries its own `key`.

    The file `tinydb_file` writes is read a line (a document) at a time; any other layout
    of TinyDB's format (TinyDB's own JSONStorage writes one line) is parsed whole.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed below, after the fallback choice
    except FileNotFoundError:
        return {}
    with handle:
        tables = _read_lines(handle)
    if tables is not None:
        return tables
    # TinyDB's own Table.all() reads (and parses) the whole file once per table: at 20,000
    # registrations that was 6 s and 415 MB. Its storage is read once here instead.
    data = AtomicJSONStorage(path, writable=False).read() or {}
    return {name: {doc["key"]: encode(doc) for doc in table.values()}
            for name, table in data.items()}


def _read_lines(handle: Any) -> dict[str, dict[str, Raw]] | None:
    """The tables of a file in `tinydb_file`'s layout, or None when it is laid out otherwise."""
    tables: dict[str, dict[str, Raw]] = {}
    table: dict[str, Raw] | None = None
    for number, text in enumerate(handle, start=1):
        line = text.rstrip(b"\r\n")
        if table is not None and (found := _DOCUMENT.match(line)):
            raw = found.group(1)
            try:
                key = json.loads(raw)["key"]
            except (ValueError, KeyError, TypeError) as err:
                raise StateError(f"{handle.name}: line {number} is not a document with a key "
                                 f"({err}); restore the file from a backup") from err
            table[key] = raw
        elif found := _TABLE_START.match(line):
            table = tables.setdefault(json.loads(found.group(1)), {})
        elif table is not None and line in (b"}", b"},", b"}}"):
            table = None
            if line == b"}}":
                return tables
        elif number == 1 and line == b"{}":
            return tables
        else:
            return None
    return None


@contextlib.contextmanager
def open_state(folder: Path, *, writer: bool) -> Iterator[Store]:
    """`with open_state(path, writer=True) as store:` — folds and unlocks on exit."""
    store = Store.open(folder, writer=writer)
    try:
        if writer:
            migrate(store)
        yield store
        if writer:
            record_version(store)
    finally:
        store.close()
