"""Reading replies in worker processes, so that a full inbox uses more than one CPU.

Reading a reply (parsing, HTML, quoted history, classification, validation) costs about a
millisecond of CPU, twice what the rest of its handling costs (fetching it, recording it).
`understand.read` needs no state, so a batch of messages is read by worker processes while
the watcher fetches the next batch and records the one before; what depends on the state
(`understand.complete`, an incomplete form completed by a later reply) stays in the watcher.

Workers are started only for batches of at least `min_batch` messages: a watcher that sees a
reply now and then reads it itself and never starts one. Should a worker die, the batch is
read in this process, and so is every later one (whatever killed it may kill the next).

A message the reader fails on (any exception) becomes a `ReadFailure`, here and in the
workers alike: the watcher keeps it for review and goes on with the batch (issue 12).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from mailer.reading.understand import Reading, message_key, read
from mailer.settings import Event

log = logging.getLogger(__name__)

MIN_BATCH = 20  # fewer messages are read in this process: a worker's start costs ~0.3 s


def default_workers() -> int:
    """One CPU stays with the watcher; at most three workers (the watcher keeps up with that)."""
    return max(0, min(3, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class _Context:
    """What every reading of one campaign shares: sent to each worker once, at its start."""

    events: tuple[Event, ...]
    own_addresses: frozenset[str]
    authserv_id: str


_worker_context: _Context | None = None


def _start_worker(context: _Context) -> None:
    global _worker_context  # noqa: PLW0603  # one per worker process, set at its start
    _worker_context = context
    # Ctrl-C reaches the whole process group, and systemd's SIGTERM the whole cgroup: the
    # watcher finishes its batch and stops its workers itself. Dying here first would only
    # make it read the batch again without them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A watcher killed outright (kill -9, the OOM killer) cannot stop its workers, and a worker
    # waiting for work would wait forever: it leaves when its parent is gone.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


@dataclass(frozen=True)
class ReadFailure:
    """A message the reader raised on: its identity and the error, for the review queue."""

    key: str  # message_key of the raw bytes, as a Reading's: a rerun recognises it
    received: datetime
    error: str  # the exception's type and the start of its text


Read = Reading | ReadFailure

_ERROR_TEXT = 200  # characters of an exception's text kept (a hostile one may be huge)


def _read_in_worker(items: Sequence[tuple[bytes, datetime]]) -> list[Read]:
    assert _worker_context is not None, "worker started without its context"
    return _read_all(_worker_context, items)


def _read_all(context: _Context, items: Sequence[tuple[bytes, datetime]]) -> list[Read]:
    return [_read_one(context, data, received) for data, received in items]


def _read_one(context: _Context, data: bytes, received: datetime) -> Read:
    """One message read, or why not: one message never stops the batch (issue 12)."""
    try:
        return read(data, received=received, events=context.events,
                    own_addresses=context.own_addresses, authserv_id=context.authserv_id)
    except Exception as err:  # any bug or stdlib failure, for this message only
        text = str(err)[:_ERROR_TEXT]
        log.warning("cannot read message %s: %s: %s", message_key(data), type(err).__name__,
                    text, exc_info=not isinstance(err, RecursionError))
        return ReadFailure(message_key(data), received, f"{type(err).__name__}: {text}".strip())


class Readers:
    """Reads batches of raw messages, in worker processes when a batch is large."""

    def __init__(self, *, events: Sequence[Event], own_addresses: Collection[str],
                 authserv_id: str, workers: int | None = None,
                 min_batch: int = MIN_BATCH) -> None:
        self.context = _Context(tuple(events), frozenset(own_addresses), authserv_id)
        self.workers = default_workers() if workers is None else workers
        self.min_batch = min_batch
        self._pool: ProcessPoolExecutor | None = None

    def start(self, items: Sequence[tuple[bytes, datetime]]) -> asyncio.Future[list[Read]]:
        """Start reading `items` (raw message, received time) at once; the future gives the
        readings in the same order. Large batches go to the workers before this returns, so
        they read while the caller goes on (a coroutine would start only at its next await).
        """
        if self.workers < 1 or len(items) < self.min_batch:
            done: asyncio.Future[list[Read]] = asyncio.get_running_loop().create_future()
            done.set_result(_read_all(self.context, items))
            return done
        pool = self._ensure_pool()
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self.workers)  # one chunk per worker
        parts: list[asyncio.Future[list[Read]]] = []
        try:
            for start in range(0, len(items), size):
                parts.append(loop.run_in_executor(pool, _read_in_worker,
                                                  items[start:start + size]))
        except BrokenProcessPool as err:  # a worker died since the last batch
            for part in parts:
                part.cancel()
            return self._fall_back(err, items)
        return asyncio.ensure_future(self._collect(parts, items))

    async def _collect(self, parts: list[asyncio.Future[list[Read]]],
                       items: Sequence[tuple[bytes, datetime]]) -> list[Read]:
        try:
            done = await asyncio.gather(*parts)
        except BrokenProcessPool as err:
            return await self._fall_back(err, items)
        return [reading for part in done for reading in part]

    def _fall_back(self, err: BaseException,
                   items: Sequence[tuple[bytes, datetime]]) -> asyncio.Future[list[Read]]:
        # Not started again: a message that killed its reader would kill the next one too.
        log.warning("a reader process died (%s); reading %d messages here, and every message "
                    "from now on", err, len(items))
        self.close()
        self.workers = 0
        return self.start(items)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the watcher has threads (raw files, the journal) that a fork
            # would copy in the middle of whatever they hold.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.context,))
            log.info("reading large batches in %d worker process%s", self.workers,
                     "" if self.workers == 1 else "es")
        return self._pool

    def close(self) -> None:
        """Stop the workers (those busy are waited for: they hold no state)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
