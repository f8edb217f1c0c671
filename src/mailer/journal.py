"""The write-ahead journal in front of TinyDB, and the audit entries committed with it.

One JSON line per transaction, fsync'd in groups. A transaction may carry audit entries
(`{"tx": [...], "audit": [...]}`): they are durable with the facts they describe and copied
to `audit.log` after the commit; at the next start any entry the log misses is written, found
by its id, so a kill between the two neither loses nor doubles it (issue 12).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mailer.errors import StateError

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def json_bytes(value: str) -> bytes:
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


class Journal:
    """Append-only JSON lines with group commit; a torn last line is dropped on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.audit = AuditCopy(path.parent / "audit.log")
        self._pending: list[tuple[bytes, list[Doc], asyncio.Future[None]]] = []
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
        records, good = parse_lines(raw, self.path)
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

    def append_now(self, line: bytes, audit: list[Doc] | None = None) -> None:
        """Write and fsync one record line before returning (for code without an event loop)."""
        self._write(line)
        self.lines += 1
        self._copy_audit(audit or [])

    async def append(self, line: bytes, audit: list[Doc] | None = None) -> None:
        """Return once the record `line` is on disk; lines arriving meanwhile share one fsync.

        `audit`: the entries `line` carries, copied to the audit log once it is on disk.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, audit or [], future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            async with self.io_lock:
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._write,
                                            b"".join(line for line, _, _ in batch))
                except Exception as err:  # every waiter must hear of the failure
                    error: Exception | None = err
                else:
                    error = None
                    # Under the lock: a fold (which takes it) finds every entry of the lines
                    # it empties either in the log or waiting in `audit`, never in between.
                    self._copy_audit([entry for _, entries, _ in batch for entry in entries])
            if error is not None:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.lines += len(batch)
            for _, _, future in batch:
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

    def _copy_audit(self, entries: list[Doc]) -> None:
        """The audit entries of lines now on disk, to the log. A failure here does not undo
        the commit: they stay journalled, and `reset` writes them before emptying it."""
        try:
            self.audit.write(entries)
        except Exception as err:  # the waiters' lines are on disk: they must hear so
            log.error("%s; the entries are kept in the journal and written at the next fold",
                      err)

    def reset(self) -> None:
        """Empty the journal after its records were folded into TinyDB (and its audit entries
        are safe in the log: a failure to write them raises and keeps the journal)."""
        assert self.fd is not None
        self.audit.sync()
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.lines = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def change_line(table: str, key: str, raw: bytes | None) -> bytes:
    """One change as the journal holds it: {"t": table, "k": key, "v": doc or null}."""
    return b'{"t":%s,"k":%s,"v":%s}' % (json_bytes(table), json_bytes(key),
                                         b"null" if raw is None else raw)


def transaction_line(changes: list[bytes], audit: list[Doc] | None = None) -> bytes:
    """Changes (and the audit entries about them) applied all or nothing: one journal line
    even when there is one change."""
    if not audit:
        return b'{"tx":[%s]}\n' % b",".join(changes)
    entries = json.dumps(audit, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b'{"tx":[%s],"audit":%s}\n' % (b",".join(changes), entries)


def parse_lines(raw: bytes, path: Path) -> tuple[list[Doc], int]:
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
    if not isinstance(record.get("audit", []), list):
        return None
    return record


def _damaged(path: Path, number: int) -> StateError:
    return StateError(
        f"{path}: line {number} is damaged and has records after it: it is not a record "
        "torn by a crash, so the journal was left as it is",
        hint=f"copy the folder {path.parent} somewhere safe first; then remove or fix line "
             f"{number} of {path.name} (the transactions on it are lost) and run again, "
             "or restore the state folder from a backup")


# -- the audit log's appends ------------------------------------------------------------------

def append_log(path: Path, data: bytes, *, sync: bool) -> None:
    """Append `data` to the log at `path` (fsync'd with `sync`) under a shared lock."""
    try:
        fd = _open_current(path)
        try:
            write_all(fd, data)  # a nearly full disk raises ENOSPC, not a torn line
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StateError(f"{path}: cannot write the audit log: {err}") from err


def _open_current(path: Path) -> int:
    """The log for appending, under a shared lock, and surely the file now at `path`.

    `AuditLog.redact` replaces the file while holding the exclusive lock; an append that
    waited for it holds the replaced file, whose lines nobody reads any more: it opens again.
    (Readers such as `mailer web` append without the state's lock, beside `forget`.)
    """
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:  # replaced and not yet renamed into place: again
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def log_lines(entries: Iterable[Doc]) -> bytes:
    """Audit entries as `audit.log` holds them: one JSON object a line."""
    return b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in entries)


class AuditCopy:
    """The audit entries of committed transactions, copied to `audit.log`.

    The journal is their durable copy until a fold empties it: `sync` (before every fold)
    writes what is still missing and fsyncs the log; `restore` (at a writer's start) writes
    the journalled entries a kill kept from the log, each once, by its id.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journalled: list[Doc] = []  # entries found in the journal at open
        self._unwritten: list[Doc] = []  # committed, not yet in the log
        self._failed = False  # the last append failed, maybe half-way
        self._unsynced = False

    def write(self, entries: list[Doc]) -> None:
        """Copy committed entries to the log (fsync'd by `sync`, before the journal empties)."""
        self._unwritten += entries
        if not self._unwritten:
            return
        data = log_lines(self._unwritten)
        if self._failed:  # a full disk may have taken part of it: what is there stays once
            logged = _logged_ids(self.path)
            data = b"\n" + log_lines(e for e in self._unwritten if e.get("id") not in logged)
        self._failed = True
        append_log(self.path, data, sync=False)  # raises: the entries wait in the journal
        self._unwritten, self._failed, self._unsynced = [], False, True

    def sync(self) -> None:
        """Every committed entry in the log, on disk: the journal may be emptied."""
        self.write([])
        if self._unsynced:
            append_log(self.path, b"", sync=True)
            self._unsynced = False

    def restore(self) -> int:
        """Write the journalled entries missing from the log; returns how many."""
        entries, self.journalled = self.journalled, []
        if not entries:
            return 0
        logged = _logged_ids(self.path)
        missing = [e for e in entries if e.get("id") not in logged]
        if missing:
            log.warning("%s: writing %d audit entries a crash kept from it", self.path,
                        len(missing))
            append_log(self.path, _newline_if_torn(self.path) + log_lines(missing), sync=True)
        return len(missing)


def _newline_if_torn(path: Path) -> bytes:
    """A newline when the log ends in a line cut short (a power loss), so the next entry
    starts a line of its own."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return b""
            handle.seek(-1, os.SEEK_END)
            return b"" if handle.read(1) == b"\n" else b"\n"
    except FileNotFoundError:
        return b""


def _logged_ids(path: Path) -> set[str]:
    """The ids of the entries in the log (entries written before ids have none)."""
    ids: set[str] = set()
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed by the with below
    except FileNotFoundError:
        return ids
    with handle:
        for line in handle:
            if b'"id"' not in line:
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a torn line: its entry, if journalled, is written again
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                ids.add(entry["id"])
    return ids
