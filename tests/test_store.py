"""State: the journal survives torn writes, folds are atomic and idempotent, readers merge."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest
from tinydb import Query, TinyDB

from mailer.audit import AuditLog
from mailer.errors import StateError, StateLockedError
from mailer.store import AtomicJSONStorage, Store, atomic_write, open_state


def test_put_is_visible_to_a_reader_before_any_fold(tmp_path: Path) -> None:
    """A reader sees journal records that are not yet folded into TinyDB."""
    writer = Store.open(tmp_path, writer=True)
    writer.put_now("deliveries", "invitation:a@b.pl", {"status": "sent"})
    reader = Store.open(tmp_path, writer=False)
    assert reader.get("deliveries", "invitation:a@b.pl") == {"status": "sent",
                                                             "key": "invitation:a@b.pl"}
    assert not (tmp_path / "mailer.json").exists()
    writer.close()
    assert (tmp_path / "journal.jsonl").read_bytes() == b""
    folded = json.loads((tmp_path / "mailer.json").read_text())
    assert list(folded["deliveries"].values()) == [{"status": "sent", "key": "invitation:a@b.pl"}]


def test_torn_journal_tail_is_dropped(tmp_path: Path) -> None:
    """A half-written last line (a crash mid-append) is cut off; complete lines are kept."""
    with open_state(tmp_path, writer=True) as store:
        store.put_now("t", "k1", {"n": 1})
        store.journal.reset = lambda: None  # type: ignore[method-assign]  # crash before reset
        store.fold = lambda: None  # type: ignore[method-assign]
        store.put_now("t", "k2", {"n": 2})
    with open(tmp_path / "journal.jsonl", "ab") as handle:
        handle.write(b'{"t":"t","k":"k3","v":{"n"')
    store = Store.open(tmp_path, writer=True)
    assert sorted(store.keys("t")) == ["k1", "k2"]
    store.put_now("t", "k4", {"n": 4})
    store.close()
    reopened = Store.open(tmp_path, writer=False)
    assert sorted(reopened.keys("t")) == ["k1", "k2", "k4"]


def journal_of(tmp_path: Path, *lines: bytes) -> bytes:
    """Write a journal of `lines` (records or damage) as a crash would leave it; its bytes."""
    raw = b"".join(lines)
    (tmp_path / "journal.jsonl").write_bytes(raw)
    return raw


RECORD = b'{"tx":[{"t":"t","k":"k%d","v":{"n":%d}}]}\n'


@pytest.mark.parametrize("damage", [b'{"t":"t","k":"k2","v":{"n"\n', b"\x00\x00\x00\n",
                                    b"42\n", b'{"tx":[{"t":"t"}]}\n'])
@pytest.mark.parametrize("writer", [True, False])
def test_damaged_middle_line_stops_and_keeps_the_journal(tmp_path: Path, damage: bytes,
                                                         writer: bool) -> None:
    """A bad line with records after it is a StateError naming the line; nothing is cut."""
    raw = journal_of(tmp_path, RECORD % (1, 1), damage, RECORD % (3, 3), RECORD % (4, 4))
    with pytest.raises(StateError, match=r"journal\.jsonl: line 2 is damaged") as caught:
        Store.open(tmp_path, writer=writer)
    assert caught.value.hint is not None and "line 2" in caught.value.hint
    assert "backup" in caught.value.hint
    assert (tmp_path / "journal.jsonl").read_bytes() == raw
    assert not (tmp_path / "mailer.json").exists()


def test_damaged_line_removed_by_hand_loads_the_rest(tmp_path: Path) -> None:
    """Following the hint (the bad line deleted) brings back every later transaction."""
    journal_of(tmp_path, RECORD % (1, 1), RECORD % (3, 3), b"\n", RECORD % (4, 4))
    with open_state(tmp_path, writer=True) as store:
        assert sorted(store.keys("t")) == ["k1", "k3", "k4"]


@pytest.mark.parametrize("tail", [b'{"tx":[{"t":"t","k":"k3"', b"garbage\n", b"\x00" * 40,
                                  b'{"tx":[{"t":"t","k":"k3","v":{"n":3}}]}'])
def test_only_the_torn_last_line_is_dropped(tmp_path: Path, tail: bytes) -> None:
    """The last line, cut short or unreadable, is dropped by a writer; a reader leaves it."""
    whole = journal_of(tmp_path, RECORD % (1, 1), RECORD % (2, 2))
    raw = journal_of(tmp_path, whole, tail)
    reader = Store.open(tmp_path, writer=False)
    assert sorted(reader.keys("t")) == ["k1", "k2"]
    assert (tmp_path / "journal.jsonl").read_bytes() == raw  # readers never repair
    store = Store.open(tmp_path, writer=True)
    assert sorted(store.keys("t")) == ["k1", "k2"]
    assert (tmp_path / "journal.jsonl").read_bytes() == whole
    store.close()


def test_crash_between_fold_and_reset_replays_harmlessly(tmp_path: Path) -> None:
    """If the journal survives a fold, replaying it over TinyDB changes nothing."""
    store = Store.open(tmp_path, writer=True)
    store.put_now("t", "k", {"v": 1})
    store.put_now("t", "k", {"v": 2})
    journal = (tmp_path / "journal.jsonl").read_bytes()
    store.close()
    (tmp_path / "journal.jsonl").write_bytes(journal)  # as if reset never happened
    again = Store.open(tmp_path, writer=True)
    assert again.all("t") == [{"v": 2, "key": "k"}]
    again.close()


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    """A TinyDB file that is not JSON gives a StateError naming the file."""
    (tmp_path / "mailer.json").write_text('{"deliveries": {"1": ', encoding="utf-8")
    with pytest.raises(StateError, match=r"mailer\.json"):
        Store.open(tmp_path, writer=False)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    """A second writer in the same process is refused with the pid of the first."""
    first = Store.open(tmp_path, writer=True)
    with pytest.raises(StateLockedError, match=r"pid \d+"):
        Store.open(tmp_path, writer=True)
    first.close()
    Store.open(tmp_path, writer=True).close()


async def test_group_commit_records_every_put(tmp_path: Path) -> None:
    """Concurrent puts share fsyncs and all reach the journal."""
    store = Store.open(tmp_path, writer=True)
    await asyncio.gather(*(store.put("t", f"k{i}", {"i": i}) for i in range(200)))
    lines = (tmp_path / "journal.jsonl").read_bytes().splitlines()
    assert len(lines) == 200
    store.close()
    assert len(Store.open(tmp_path, writer=False).all("t")) == 200


def test_state_folder_is_private(tmp_path: Path) -> None:
    """state/ and its files are readable by the owner only."""
    folder = tmp_path / "state"
    with open_state(folder, writer=True) as store:
        store.put_now("t", "k", {})
    assert folder.stat().st_mode & 0o077 == 0
    assert (folder / "mailer.json").stat().st_mode & 0o077 == 0


def test_state_is_a_tinydb_database(tmp_path: Path) -> None:
    """What the fold writes is TinyDB's format: TinyDB itself queries it."""
    with open_state(tmp_path, writer=True) as store:
        store.put_now("registrations", "a@b.pl", {"city": "Łódź", "status": "complete"})
        store.put_now("registrations", "c@d.pl", {"city": "Gdańsk", "status": "incomplete"})
    db = TinyDB(tmp_path / "mailer.json", storage=AtomicJSONStorage, writable=False)
    found = db.table("registrations").search(Query().status == "complete")
    assert [d["city"] for d in found] == ["Łódź"]


def test_file_is_read_a_document_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold writes a document per line, and opening reads those lines without parsing
    the whole file (which held the text and every document in memory at once)."""
    with Store.open(tmp_path, writer=True) as store:  # the store alone: no version recorded
        store.put_now("meta", "salt", {"value": "x"})
        store.put_now("empty", "gone", {})
        store.stage_delete("empty", "gone")
        store.commit_now()
        for i in range(3):
            store.put_now("registrations", f"r{i}@b.pl", {"city": "Łódź\n2", "n": i})
    lines = (tmp_path / "mailer.json").read_bytes().splitlines()
    assert len(lines) == 3 + 2 + 5  # each table's opening line, its documents, its closing
    assert lines[-1] == b"}}"

    def whole_file_parse(self: AtomicJSONStorage) -> None:
        raise AssertionError("the file was parsed whole")

    monkeypatch.setattr(AtomicJSONStorage, "read", whole_file_parse)
    store = Store.open(tmp_path, writer=False)
    assert store.get("registrations", "r1@b.pl") == {"city": "Łódź\n2", "n": 1,
                                                     "key": "r1@b.pl"}
    assert store.keys("empty") == set() and len(store.keys("registrations")) == 3


def test_tinydb_written_file_is_read_too(tmp_path: Path) -> None:
    """A file in TinyDB's own layout (one line, written by TinyDB) opens like ours."""
    db = TinyDB(tmp_path / "mailer.json", storage=AtomicJSONStorage)
    db.table("registrations").insert_multiple([{"key": "a@b.pl", "city": "Gdańsk"},
                                               {"key": "c@d.pl", "city": "Łódź"}])
    store = Store.open(tmp_path, writer=False)
    assert sorted(d["city"] for d in store.iter("registrations")) == ["Gdańsk", "Łódź"]
    assert store.get("registrations", "c@d.pl") == {"key": "c@d.pl", "city": "Łódź"}


def test_damaged_document_line_names_the_line(tmp_path: Path) -> None:
    """A document line that is not JSON is a StateError naming the file and line."""
    with open_state(tmp_path, writer=True) as store:
        store.put_now("t", "k1", {"n": 1})
        store.put_now("t", "k2", {"n": 2})
    path = tmp_path / "mailer.json"
    path.write_bytes(path.read_bytes().replace(b'"n":2', b'"n":2,'))
    with pytest.raises(StateError, match=r"mailer\.json: line 3"):
        Store.open(tmp_path, writer=False)


def test_documents_handed_out_are_copies(tmp_path: Path) -> None:
    """Changing a document got from the store changes nothing until it is put back."""
    with open_state(tmp_path, writer=True) as store:
        store.put_now("t", "k", {"n": 1})
        doc = store.get("t", "k")
        assert doc is not None
        doc["n"] = 2
        assert store.get("t", "k") == {"n": 1, "key": "k"}
        store.put_now("t", "k", doc)
        assert [d["n"] for d in store.iter("t")] == [2]


def test_audit_line_written_during_a_redaction_lands_in_the_new_log(tmp_path: Path) -> None:
    """`forget` rewrites audit.log while readers (`mailer web`, exports) may append: an append
    that comes meanwhile waits, then goes into the rewritten file, not the replaced one."""
    AuditLog(tmp_path, actor="cli").record("send", to="anna@example.com")
    path = tmp_path / "audit.log"
    redacting = os.open(path, os.O_RDONLY)
    fcntl.flock(redacting, fcntl.LOCK_EX)  # what AuditLog.redact holds while it rewrites
    writer = threading.Thread(
        target=lambda: AuditLog(tmp_path, actor="web").record("export", rows=1))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive()  # waiting for the rewrite to end
    atomic_write(path, b'{"action": "send", "to": "[erased]"}\n')
    os.close(redacting)
    writer.join(5)
    assert [(e["action"], e.get("to")) for e in AuditLog(tmp_path).entries()] == [
        ("send", "[erased]"), ("export", None)]


def test_redaction_keeps_every_concurrent_append(tmp_path: Path) -> None:
    """Appends from another thread while the log is redacted again and again: none is lost."""
    log = AuditLog(tmp_path, actor="cli")
    log.record("send", to="anna@example.com")
    done = threading.Event()

    def append() -> None:
        web = AuditLog(tmp_path, actor="web")
        for i in range(300):
            web.record("download", message=f"m{i}")
        done.set()

    writer = threading.Thread(target=append)
    writer.start()
    while not done.is_set():
        log.redact(["anna@example.com"], "[erased]")
    writer.join(5)
    entries = AuditLog(tmp_path).entries()
    assert [e["message"] for e in entries if e["action"] == "download"] == \
        [f"m{i}" for i in range(300)]
    assert entries[0]["to"] == "[erased]"


def test_savepoint_drops_what_was_staged_inside_when_it_raises(tmp_path: Path) -> None:
    """A block that raises leaves neither its staged changes nor its audit entries, in the
    journal or in memory; what was staged before it is committed as usual."""
    with open_state(tmp_path, writer=True) as store:
        store.put_now("t", "kept", {"n": 1})
        store.put_now("t", "erased", {"n": 2})
        store.stage("t", "before", {"n": 3})
        with pytest.raises(ValueError), store.savepoint():
            store.stage("t", "kept", {"n": 10})
            store.stage("answers", "new", {"to": "a@b.pl"})
            store.stage_delete("t", "erased")
            store.stage_audit({"id": "x1", "action": "receive"})
            raise ValueError("the message failed half-way")
        assert store.get("t", "kept") == {"n": 1, "key": "kept"}
        assert store.get("t", "erased") == {"n": 2, "key": "erased"}
        assert not store.has("answers", "new") and store.staged == 1
        with store.savepoint():  # a block that ends well keeps what it staged
            store.stage("t", "after", {"n": 4})
        store.commit_now()
    reopened = Store.open(tmp_path, writer=False)
    assert sorted(reopened.keys("t")) == ["after", "before", "erased", "kept"]
    assert reopened.get("t", "kept") == {"n": 1, "key": "kept"} and not reopened.keys("answers")
    assert AuditLog(tmp_path).entries() == []


def test_audit_entries_are_journalled_and_a_lost_copy_is_written_once(
        tmp_path: Path) -> None:
    """An audit entry committed with its change reaches audit.log; killed before the copy
    (the journal line on disk, the log not written), the next writer writes it, and only
    once however often the state is opened again; a fold writes the log before emptying the
    journal."""
    audit = AuditLog(tmp_path, actor="test")
    store = Store.open(tmp_path, writer=True)
    store.stage("inbound", "m1", {"sender": "a@b.pl"})
    store.stage_audit(audit.entry("receive", message="m1"))
    store.commit_now()
    store.journal.audit.write = lambda entries: None  # type: ignore[method-assign]  # a kill
    store.stage("inbound", "m2", {"sender": "c@d.pl"})
    store.stage_audit(audit.entry("receive", message="m2"))
    store.commit_now()
    store.journal.close()  # what the kernel does at a kill: nothing folded, the lock dropped
    store.lock.release()
    assert [e["message"] for e in audit.entries()] == ["m1"]
    again = Store.open(tmp_path, writer=True)  # writes m2's entry
    again.journal.close()  # and is killed too, before any fold
    again.lock.release()
    assert [e["message"] for e in audit.entries()] == ["m1", "m2"]
    Store.open(tmp_path, writer=True).close()  # writes nothing again, folds
    assert [e["message"] for e in audit.entries()] == ["m1", "m2"]
    assert (tmp_path / "journal.jsonl").read_bytes() == b""  # folded, the entries kept
    assert len({e["id"] for e in audit.entries()}) == 2


async def test_put_with_an_audit_entry_logs_it_after_the_record(tmp_path: Path) -> None:
    """`put(…, audit=)` journals the entry with the document and then logs it; concurrent
    puts share one fsync and each entry is logged once."""
    audit = AuditLog(tmp_path, actor="test")
    with open_state(tmp_path, writer=True) as store:
        await asyncio.gather(*(store.put("deliveries", f"k{n}", {"n": n},
                                         audit=audit.entry("send", to=f"p{n}@b.pl"))
                               for n in range(20)))
        journal = (tmp_path / "journal.jsonl").read_bytes()
        assert journal.count(b'"audit":') == 20
        assert sorted(e["to"] for e in audit.entries()) == sorted(f"p{n}@b.pl" for n in range(20))
    assert len(audit.entries()) == 20


def test_the_fold_threshold_is_a_test_knob(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """$MAILER_FOLD_EVERY (bench/chaos.py) lowers the fold threshold; nonsense is refused."""
    monkeypatch.setenv("MAILER_FOLD_EVERY", "3")
    assert Store(tmp_path, writer=True).fold_every == 3
    monkeypatch.setenv("MAILER_FOLD_EVERY", "0")
    with pytest.raises(StateError, match="MAILER_FOLD_EVERY"):
        Store(tmp_path, writer=True)
