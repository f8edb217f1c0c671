"""Reading in worker processes gives what reading here gives, and survives a dead worker."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailer.clock import Clock
from mailer.models import ANSWERS, INBOUND, REGISTRATIONS
from mailer.reading.understand import message_key, read
from mailer.reading.workers import Readers, ReadFailure
from mailer.reasons import Code, Reason
from mailer.settings import load_settings
from mailer.store import open_state
from mailer.watcher import Watcher
from tests.test_inbox import ON_TIME, START, form, reply, table

DATA = Path(__file__).parent / "data"
RECEIVED = datetime(2020, 10, 20, 10, 0, tzinfo=UTC)


def samples() -> list[tuple[bytes, datetime]]:
    """Every reply and robot message of tests/data, as the watcher hands them over."""
    files = sorted((DATA / "replies").glob("*.eml")) + sorted((DATA / "classify").glob("*.eml"))
    assert len(files) > 20
    return [(path.read_bytes(), RECEIVED) for path in files]


def readers_for(config: Path, **options: Any) -> Readers:
    settings = load_settings(config)
    return Readers(events=settings.events, own_addresses={"rejestracja@example.com"},
                   authserv_id="mx.example.com", **options)


def here(readers: Readers, items: list[tuple[bytes, datetime]]) -> list[Any]:
    context = readers.context
    return [read(data, received=received, events=context.events,
                 own_addresses=context.own_addresses, authserv_id=context.authserv_id)
            for data, received in items]


async def test_workers_read_what_this_process_reads(make_workspace: Any) -> None:
    """The readings that come back from two workers equal those made here, in order."""
    readers = readers_for(make_workspace().config, workers=2)
    items = samples()
    try:
        readings = await readers.start(items)
        assert len(multiprocessing.active_children()) == 2  # it really was them
    finally:
        readers.close()
    assert readings == here(readers, items)
    assert {str(r.kind) for r in readings} >= {"registration", "bounce", "auto_reply"}
    assert not multiprocessing.active_children()


async def test_one_message_is_read_by_a_worker_and_the_loop_goes_on(
        make_workspace: Any) -> None:
    """Even a batch of one is read in a worker: the event loop keeps running meanwhile."""
    readers = readers_for(make_workspace().config, workers=1)
    items = [(many_forms(), RECEIVED)]
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        readings = await readers.start(items)
        took = time.monotonic() - started
        assert len(multiprocessing.active_children()) == 1  # it really was a worker
    finally:
        ticker.cancel()
        readers.close()
    assert readings == here(readers, items)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert took > 0.3 and len(ticks) > 10 and max(gaps) < 0.25


def many_forms(count: int = 1000) -> bytes:
    """A reply holding `count` filled-in forms: a second or so of reading."""
    body = "".join(form(name=f"Anna Nowak{chr(97 + n % 26)}", email=f"a{n}@gdynia.example.com")
                   for n in range(count))
    return reply("anna@gdynia.example.com", body)


async def test_a_message_over_its_budget_is_a_read_failure(make_workspace: Any) -> None:
    """The worker's alarm stops a reading over budget; the messages around it are read."""
    readers = readers_for(make_workspace().config, workers=1, budget=0.05)
    items = [*samples()[:2], (many_forms(), RECEIVED), *samples()[2:4]]
    try:
        readings = await readers.start(items)
    finally:
        readers.close()
    slow = readings.pop(2)
    assert isinstance(slow, ReadFailure)
    assert slow.reason == Reason.of(Code.READ_TIMEOUT, seconds="0.05")
    assert slow.key == message_key(items[2][0])
    assert readings == here(readers, items[:2] + items[3:])


async def test_a_hung_worker_is_killed_and_its_chunk_read_again(
        make_workspace: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A worker no signal reaches (stopped here with SIGSTOP) is killed after its chunk's
    deadline; the chunk is read again in a fresh worker and nothing is lost."""
    readers = readers_for(make_workspace().config, workers=1, budget=0.1, startup=3)
    items = samples()[:6]
    try:
        await readers.start(items[:1])
        [worker] = multiprocessing.active_children()
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
        with caplog.at_level(logging.WARNING, logger="mailer.reading.workers"):
            readings = await readers.start(items)
        assert not worker.is_alive()
        assert len(multiprocessing.active_children()) == 1  # a fresh one
    finally:
        readers.close()
    assert readings == here(readers, items)
    assert "a reader process hung" in caplog.text


async def test_a_dead_worker_is_replaced(make_workspace: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A worker killed between batches: the next batch is read in a fresh worker, message by
    message, and nothing is lost."""
    readers = readers_for(make_workspace().config, workers=1)
    items = samples()
    try:
        await readers.start(items[:3])
        [worker] = multiprocessing.active_children()
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="mailer.reading.workers"):
            readings = await readers.start(items)
        assert readings == here(readers, items)
        assert "a reader process died" in caplog.text
        [fresh] = multiprocessing.active_children()
        assert fresh.pid != worker.pid
        assert await readers.start(items[:2]) == readings[:2]
    finally:
        readers.close()
    assert not multiprocessing.active_children()


async def test_workers_ignore_the_signals_meant_for_the_watcher(make_workspace: Any) -> None:
    """Ctrl-C (the process group) and systemd's SIGTERM (the cgroup) reach the workers too:
    they stay, and the watcher stops them when it has finished its batch."""
    readers = readers_for(make_workspace().config, workers=1)
    items = samples()
    try:
        await readers.start(items[:2])
        [worker] = multiprocessing.active_children()
        assert worker.pid is not None
        for sent in (signal.SIGINT, signal.SIGTERM):
            os.kill(worker.pid, sent)
        time.sleep(0.3)
        assert worker.is_alive()
        assert await readers.start(items) == here(readers, items)
        assert readers.workers == 1
    finally:
        readers.close()
    assert not worker.is_alive()


async def test_watcher_with_workers_completes_a_form_in_the_same_batch(
        inbox_ws: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A batch read by a worker: a correction that follows an incomplete form in the same
    batch still completes it (that part needs the state and stays in the watcher)."""
    ws, sink, server, user = inbox_ws
    server.append(user, reply("d@torun.example.com", form(city="")), ON_TIME)
    server.append(user, reply("d@torun.example.com", "Miasto / urząd: Toruń\n"),
                  ON_TIME + timedelta(hours=1))
    for i in range(20):
        server.append(user, reply(f"osoba{i}@gdynia.example.com",
                                  form(name=f"Anna Nowak{'a' * i}")), ON_TIME)
    settings = load_settings(ws.config)
    with open_state(settings.storage, writer=True) as store, \
            caplog.at_level(logging.INFO, logger="mailer.reading.workers"):
        readers = Readers(events=settings.events, own_addresses=settings.own_addresses,
                          authserv_id=settings.answers.trusted_authserv_id, workers=1)
        watcher = Watcher(settings, store, clock=Clock(START), readers=readers)
        try:
            report = await watcher.process_once()
        finally:
            await watcher.close()
    assert "reading in 1 worker process" in caplog.text
    assert report.new == 22 and not multiprocessing.active_children()
    people = {r["key"]: r for r in table(ws, REGISTRATIONS)}
    assert len(people) == 21
    assert people["d@torun.example.com"]["status"] == "complete"
    assert people["d@torun.example.com"]["city"] == "Toruń"
    assert len(table(ws, INBOUND)) == 22
    templates = sorted(a["template"] for a in table(ws, ANSWERS)
                       if a["to"] == "d@torun.example.com")
    assert templates == ["confirmation", "incomplete"]
    assert len(sink.messages) == 22


CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from mailer.reading.workers import Readers
import multiprocessing

async def main():
    readers = Readers(events=(), own_addresses=(), authserv_id="", workers=1)
    message = b"From: a@b.pl\\r\\nSubject: pytanie\\r\\n\\r\\nCzy bedzie nagranie?\\r\\n"
    await readers.start([(message, datetime.now(UTC))])
    [worker] = multiprocessing.active_children()
    print(worker.pid, flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_leave_when_the_watcher_is_killed(tmp_path: Path) -> None:
    """kill -9 of the watcher (which cannot stop its workers) leaves no worker behind."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None
            worker = int(child.stdout.readline())
            assert Path(f"/proc/{worker}").exists()
        finally:
            child.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()
