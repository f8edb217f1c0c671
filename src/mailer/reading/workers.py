"""Reading replies in worker processes: off the event loop, each message within a time budget.

Reading a reply (parsing, HTML, quoted history, classification, validation) is the costly,
attacker-controlled part of handling it, and `understand.read` needs no state: so every batch
is read by worker processes while the watcher fetches the next batch and records the one
before; what depends on the state (`understand.complete`) stays in the watcher. The watcher's
event loop never reads a message (issue 12): a hostile one cannot stall the service.

Each message has `BUDGET` seconds of CPU for its reading — CPU, not wall-clock time, so a
busy machine does not send ordinary replies to review. A worker's profiling timer
(ITIMER_PROF) interrupts a reading over it (Python code and regular expressions both stop at
a signal), and the message becomes a
`ReadFailure` kept for review, as does one the reader raises on; the batch goes on. Should a
worker die or hang where no signal reaches it, the watcher kills the workers and reads that
chunk again one message at a time in fresh ones: the message that kills or hangs a worker
alone is the one kept for review. A worker's memory is capped (`MEMORY_LIMIT`): a message
that needs more fails alone with MemoryError instead of growing the host's swap.

Workers log nothing themselves (a spawned process has no logging set up): what went wrong
travels back in the `ReadFailure` and the watcher logs it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import threading
import traceback
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

from mailer.reading.understand import Reading, message_key, read
from mailer.reading.wording import prepare as prepare_wording
from mailer.reasons import Code, Reason
from mailer.settings import Event

log = logging.getLogger(__name__)

# CPU seconds of reading per message. The reader's target is 2 s for any message up to
# `max_message_bytes` (bench/hostile.py; a 10 MB attachment takes 1 s here, a real reply
# ~50 ms); the budget leaves room for a machine slower than this one.
BUDGET = 5.0
MEMORY_LIMIT = 2 << 30  # bytes of address space per worker; reading a reply takes ~100 MB
STARTUP = 15.0  # seconds a fresh worker may take to start (imports) on a loaded machine
_ERROR_TEXT = 200  # characters of an exception's text kept (a hostile one may be huge)
_DETAIL_TEXT = 4000  # characters of a traceback sent back for the log


def default_workers() -> int:
    """One CPU stays with the watcher, but one worker at least; at most three (the watcher
    keeps up with that)."""
    return max(1, min(3, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class _Context:
    """What every reading of one campaign shares: sent to each worker once, at its start."""

    events: tuple[Event, ...]
    own_addresses: frozenset[str]
    authserv_id: str


_worker_context: _Context | None = None


class _OverBudget(BaseException):
    """Raised by a worker's alarm. Not an Exception: no `except Exception` in the reader
    (a charset fallback, say) can swallow it and read on."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _OverBudget


def _start_worker(context: _Context) -> None:
    global _worker_context  # noqa: PLW0603  # one per worker process, set at its start
    _worker_context = context
    prepare_wording(context.events)  # its patterns are built at start, not in a budget
    # Ctrl-C reaches the whole process group, and systemd's SIGTERM the whole cgroup: the
    # watcher finishes its batch and stops its workers itself. Dying here first would only
    # make it read the batch again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGPROF, _on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > MEMORY_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))
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
    """A message not read: its identity, why (for the review queue) and, for the log, the
    traceback of an error."""

    key: str  # message_key of the raw bytes, as a Reading's: a rerun recognises it
    received: datetime
    reason: Reason  # READ_FAILED or READ_TIMEOUT
    detail: str = ""


Read = Reading | ReadFailure


def failure_of(key: str, received: datetime, err: BaseException) -> ReadFailure:
    """The ReadFailure for an exception met while reading or recording one message."""
    text = f"{type(err).__name__}: {str(err)[:_ERROR_TEXT]}".strip().rstrip(":")
    detail = "" if isinstance(err, RecursionError | MemoryError) else \
        "".join(traceback.format_exception(err))[-_DETAIL_TEXT:]
    return ReadFailure(key, received, Reason.of(Code.READ_FAILED, error=text), detail)


def _timeout(key: str, received: datetime, budget: float) -> ReadFailure:
    return ReadFailure(key, received, Reason.of(Code.READ_TIMEOUT, seconds=f"{budget:g}"))


def _read_in_worker(items: Sequence[tuple[bytes, datetime]], budget: float) -> list[Read]:
    assert _worker_context is not None, "worker started without its context"
    return _read_all(_worker_context, items, budget)


def _read_all(context: _Context, items: Sequence[tuple[bytes, datetime]],
              budget: float | None) -> list[Read]:
    return [_read_one(context, data, received, budget) for data, received in items]


def _read_one(context: _Context, data: bytes, received: datetime,
              budget: float | None) -> Read:
    """One message read, or why not: one message never stops the batch (issue 12). With a
    `budget` (in a worker, where the alarm is ours), reading stops after that many seconds."""
    try:
        if budget:
            signal.setitimer(signal.ITIMER_PROF, budget)
        try:
            return read(data, received=received, events=context.events,
                        own_addresses=context.own_addresses, authserv_id=context.authserv_id)
        finally:
            if budget:
                signal.setitimer(signal.ITIMER_PROF, 0)
    except _OverBudget:
        return _timeout(message_key(data), received, budget or 0)
    except Exception as err:  # any bug or stdlib failure, for this message only
        return failure_of(message_key(data), received, err)


Items = Sequence[tuple[bytes, datetime]]


class Readers:
    """Reads batches of raw messages in worker processes, each message within `budget`."""

    def __init__(self, *, events: Sequence[Event], own_addresses: Collection[str],
                 authserv_id: str, workers: int | None = None, budget: float = BUDGET,
                 startup: float = STARTUP) -> None:
        """`workers=0` reads in a thread of this process instead: off the event loop, but
        with no budget (a thread cannot be interrupted) — for tools, not for the service."""
        self.context = _Context(tuple(events), frozenset(own_addresses), authserv_id)
        self.workers = default_workers() if workers is None else workers
        self.budget = budget
        self.startup = startup
        self._pool: ProcessPoolExecutor | None = None
        self._recovering = asyncio.Lock()

    def start(self, items: Items) -> asyncio.Future[list[Read]]:
        """Start reading `items` (raw message, received time) at once; the future gives the
        readings in the same order. The work is queued before this returns, so the workers
        read while the caller goes on (a coroutine would start only at its next await)."""
        if self.workers < 1:
            return asyncio.ensure_future(asyncio.to_thread(_read_all, self.context, items, None))
        size = max(1, -(-len(items) // self.workers))  # one chunk per worker
        parts = [(items[at:at + size], self._submit(items[at:at + size]))
                 for at in range(0, len(items), size)]
        return asyncio.ensure_future(self._collect(parts))

    def _submit(self, chunk: Items) -> asyncio.Future[list[Read]]:
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self._ensure_pool(), _read_in_worker, chunk,
                                        self.budget)
        except BrokenProcessPool as err:  # a worker died since the last batch
            broken: asyncio.Future[list[Read]] = loop.create_future()
            broken.set_exception(err)
            return broken

    def _deadline(self, count: int) -> float:
        """How long a chunk may take before its worker is taken for hung: its messages'
        budgets, twice (the chunk queued before it, of the batch before, may take as long),
        and a fresh worker's start."""
        return 2 * self.budget * count + self.startup

    async def _collect(self, parts: list[tuple[Items, asyncio.Future[list[Read]]]],
                       ) -> list[Read]:
        readings: list[Read] = []
        for chunk, part in parts:
            try:
                readings += await asyncio.wait_for(part, self._deadline(len(chunk)))
            except Exception as err:  # BrokenProcessPool, TimeoutError, or any other
                readings += await self._one_at_a_time(chunk, err)
        return readings

    async def _one_at_a_time(self, chunk: Items, err: BaseException) -> list[Read]:
        """A chunk whose worker died or hung, read again one message per task in fresh
        workers: the message that kills or hangs one is the one that fails. One recovery at
        a time, so that no other chunk's worker is killed for a message it does not hold."""
        async with self._recovering:
            log.warning("a reader process %s (%s); reading its %d messages one at a time",
                        "hung" if isinstance(err, TimeoutError) else "died",
                        type(err).__name__, len(chunk))
            self._kill()
            readings: list[Read] = []
            for data, received in chunk:
                try:
                    readings += await asyncio.wait_for(self._submit([(data, received)]),
                                                       self._deadline(1))
                except TimeoutError:
                    self._kill()
                    readings.append(_timeout(message_key(data), received, self.budget))
                except BrokenProcessPool:
                    self._kill()
                    readings.append(ReadFailure(message_key(data), received, Reason.of(
                        Code.READ_FAILED, error="the reader process died reading it")))
                except Exception as other:  # the result could not come back, say
                    readings.append(failure_of(message_key(data), received, other))
            return readings

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the watcher has threads (raw files, the journal) that a fork
            # would copy in the middle of whatever they hold.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.context,))
            log.info("reading in %d worker process%s", self.workers,
                     "" if self.workers == 1 else "es")
        return self._pool

    def _kill(self) -> None:
        """Stop the workers now, busy or not (a hung one would never finish)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # The executor has no public way to stop a busy worker.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (those busy are waited for: they hold no state)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
