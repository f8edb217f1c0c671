"""State under `storage.path`: TinyDB tables, an fsync'd journal in front of them, one writer.

TinyDB rewrites its whole file on every write, so per-message facts go first to an
append-only journal (one JSON line each, group-committed with one fsync for all the lines
that arrived meanwhile) and are folded into TinyDB in one atomic write at the end of a run or
when the journal grows. Readers merge both, so they see the state while a writer runs. The
journal, and the audit entries committed in it with the facts they describe, is
mailer.journal.

In memory each document is kept as its compact UTF-8 JSON, decoded when asked for: a Python
dict costs three to four times its JSON (20,000 registrations with their messages and
answers took 180 MB as dicts, 60 MB as JSON). The same bytes go to the journal and, at the
fold, into TinyDB's file, one document per line, so that the file is read back a line at a
time instead of parsed whole (which held the text and every document at once).
"""

from __future__ import annotations

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
from mailer.journal import Journal, change_line, fsync_dir, json_bytes, transaction_line
from mailer.migrate import migrate, record_version

log = logging.getLogger(__name__)

Doc = dict[str, Any]
FOLD_EVERY = 20_000  # journal lines; a fold of 50,000 deliveries takes about a second
# A test-only knob: bench/chaos.py folds every few lines so that its kills land inside folds.
FOLD_EVERY_ENV = "MAILER_FOLD_EVERY"


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
        parts = [b",\n" if t else b"", json_bytes(name), b": {"]
        for i, raw in enumerate(docs.values(), start=1):
            parts += (b",\n" if i > 1 else b"\n", b'"%d": ' % i, raw)
            if len(parts) >= 3000:
                yield b"".join(parts)
                parts = []
        parts.append(b"\n}")
        yield b"".join(parts)
    yield b"}\n"


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
        self._staged_audit: list[Doc] = []
        self._savepoints = 0  # savepoint blocks entered and not left
        self._undo: list[tuple[str, str, Raw | None]] = []  # what staging replaced, in them
        self.fold_every = _fold_every()

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
                store.journal.audit.restore()  # what a kill kept from the audit log
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
            if self.writer:
                self.journal.audit.journalled += record.get("audit", [])
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
        return change_line(table, key, raw)

    async def put(self, table: str, key: str, doc: Doc, *, audit: Doc | None = None) -> None:
        """Record `doc` durably (fsync'd, group-committed); returns once it is on disk.

        The in-memory table is updated first, so a fold that runs meanwhile already holds
        every record the journal may contain when the fold empties it. `audit`: an entry
        (`AuditLog.entry`) recorded with it and copied to the audit log after.
        """
        change = self._keep(table, key, doc)
        if audit is None:
            await self.journal.append(change + b"\n")
        else:
            await self.journal.append(transaction_line([change], [audit]), [audit])

    def stage(self, table: str, key: str, doc: Doc) -> None:
        """Change a document in memory now; `commit` records all staged changes at once."""
        self._remember(table, key)
        self._staged.append(self._keep(table, key, doc))

    def stage_audit(self, entry: Doc) -> None:
        """An audit entry (`AuditLog.entry`) committed with the staged changes, copied to the
        audit log once they are on disk (issue 12: a kill in between lost it for good)."""
        self._staged_audit.append(entry)

    @property
    def staged(self) -> int:
        """How many changes wait for `commit`."""
        return len(self._staged)

    def stage_delete(self, table: str, key: str) -> None:
        """Remove a document (in memory now, on disk at `commit`; gone from TinyDB at the fold)."""
        self._remember(table, key)
        self.tables.get(table, {}).pop(key, None)
        self._staged.append(change_line(table, key, None))

    def commit_now(self) -> None:
        """`commit` for code without an event loop."""
        if self._staged or self._staged_audit:
            line, audit = self._take_staged()
            self.journal.append_now(line, audit)

    async def commit(self) -> None:
        """Write every staged change as one journal line (all or nothing after a crash)."""
        if self._staged or self._staged_audit:
            line, audit = self._take_staged()
            await self.journal.append(line, audit)

    def _take_staged(self) -> tuple[bytes, list[Doc]]:
        assert not self._savepoints, "commit inside a savepoint"
        records, self._staged = self._staged, []
        audit, self._staged_audit = self._staged_audit, []
        return transaction_line(records, audit), audit

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Changes and audit entries staged inside the block are dropped, in memory too, when
        it raises: a half-recorded message leaves nothing behind (an answer to a message
        that went to review instead). No commit inside."""
        marks = len(self._staged), len(self._staged_audit), len(self._undo)
        self._savepoints += 1
        try:
            yield
        except BaseException:
            self._roll_back(*marks)
            raise
        finally:
            self._savepoints -= 1
            if not self._savepoints:
                self._undo = []

    def _remember(self, table: str, key: str) -> None:
        """Inside a savepoint: what a staged change replaces, to be put back on rollback."""
        if self._savepoints:
            self._undo.append((table, key, self.tables.get(table, {}).get(key)))

    def _roll_back(self, staged: int, audit: int, undo: int) -> None:
        for table, key, raw in reversed(self._undo[undo:]):
            if raw is None:
                self.tables.get(table, {}).pop(key, None)
            else:
                self.tables.setdefault(table, {})[key] = raw
        del self._undo[undo:], self._staged[staged:], self._staged_audit[audit:]

    async def put_many(self, records: list[tuple[str, str, Doc]]) -> None:
        """Record several documents as one journal line: after a crash all or none are there."""
        await self.journal.append(transaction_line([self._keep(*r) for r in records]))

    def put_now(self, table: str, key: str, doc: Doc) -> None:
        """Like `put`, for code without an event loop."""
        self.journal.append_now(self._keep(table, key, doc) + b"\n")

    async def fold_if_large(self) -> None:
        """Fold when the journal is long, never while a batch of it is being written."""
        if self.journal.lines >= self.fold_every:
            async with self.journal.io_lock:
                # Logged both sides: bench/chaos.py labels a kill by the last line logged.
                log.info("journal at %d lines: folding it into %s", self.journal.lines,
                         self.db_path.name)
                self.fold()
                log.info("journal folded")

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
            if self._staged or self._staged_audit:
                # A transaction failed half-way (a full disk while its raw messages were
                # saved): its changes exist in memory only and must not reach TinyDB. The
                # journal holds every committed change; the next open replays it.
                log.warning("%s: %d uncommitted changes dropped; the journal is not folded",
                            self.folder, len(self._staged) + len(self._staged_audit))
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


def _fold_every() -> int:
    """FOLD_EVERY, or a positive number of journal lines in $MAILER_FOLD_EVERY (tests only)."""
    value = os.environ.get(FOLD_EVERY_ENV, "").strip()
    if not value:
        return FOLD_EVERY
    if not value.isdigit() or int(value) < 1:
        raise StateError(f"${FOLD_EVERY_ENV}: {value!r} is not a positive number of lines",
                         hint=f"unset {FOLD_EVERY_ENV}; it exists for crash tests only")
    return int(value)


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
