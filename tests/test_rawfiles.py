"""Raw messages written ahead of their batch: renamed into place only when the batch is kept."""

from __future__ import annotations

from concurrent.futures import wait
from pathlib import Path

import pytest

from mailer.errors import StateError
from mailer.rawfiles import RawFiles


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_written_ahead_then_kept(tmp_path: Path) -> None:
    folder = tmp_path / "messages"
    files = RawFiles(folder)
    try:
        files.write_ahead([(folder / "a.eml", b"A"), (folder / "b.eml", b"B")])
        files.add(folder / "a.eml", b"A")
        files.add(folder / "a.json", b"{}", durable=False)
        files.sync()
        # The batch's files are in place; the one not claimed yet waits, still temporary.
        assert names(folder) == [".b.eml.tmp", "a.eml", "a.json"]
        assert (folder / "a.eml").read_bytes() == b"A"
        files.add(folder / "b.eml", b"B")
        files.sync()
        assert names(folder) == ["a.eml", "a.json", "b.eml"]
    finally:
        files.close()


def test_what_no_batch_claims_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "messages"
    files = RawFiles(folder)
    files.write_ahead([(folder / "a.eml", b"A"), (folder / "b.eml", b"B")])
    files.add(folder / "a.eml", b"A")
    files.abandon()  # the pass failed before its batch was kept
    assert names(folder) == []
    files.close()


def test_an_early_write_that_failed_is_written_again(tmp_path: Path) -> None:
    folder = tmp_path / "messages"
    folder.mkdir()
    (folder / ".a.eml.tmp").mkdir()  # the early write cannot open its file
    files = RawFiles(folder)
    try:
        files.write_ahead([(folder / "a.eml", b"A")])
        wait(files.early.values())
        (folder / ".a.eml.tmp").rmdir()  # gone by the time the batch is kept
        files.add(folder / "a.eml", b"A")
        files.sync()
        assert names(folder) == ["a.eml"] and (folder / "a.eml").read_bytes() == b"A"
    finally:
        files.close()


def test_a_write_failing_again_is_the_batch_error(tmp_path: Path) -> None:
    folder = tmp_path / "messages"
    folder.mkdir()
    (folder / ".a.eml.tmp").mkdir()
    files = RawFiles(folder)
    try:
        files.write_ahead([(folder / "a.eml", b"A")])
        files.add(folder / "a.eml", b"A")
        with pytest.raises(StateError, match="cannot write the raw messages"):
            files.sync()
        assert not (folder / "a.eml").exists()
    finally:
        files.close()
