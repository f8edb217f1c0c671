"""`mailer demo` as CI runs it: the expected registrations, answers and statuses; nothing left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailer.models import ANSWERS, SUPPRESSIONS
from mailer.store import open_state
from tests.conftest import REPO
from tests.test_devserver import listening_addresses

EXPECTED_REGISTRATIONS = [
    # name, city, smart-city, pim, status
    ("Bożena Grzędzińska", "Bydgoszcz", "confirmed", "confirmed", "complete"),
    ("Tadeusz Wróbel", "Gdańsk", "confirmed", "-", "complete"),
    ("Żaneta Kępińska", "Gdańsk", "confirmed", "confirmed", "complete"),
    ("Agnieszka Kołodziej", "Gdynia", "confirmed", "confirmed", "complete"),
    ("Jędrzej Wąsowicz", "Poznań", "late", "confirmed", "complete"),
]
EXPECTED_INBOX = [
    # from, kind, answer
    ("l.zolkiewska@lodz.example.com", "auto_reply", "-"),
    ("a.kolodziej@gdynia.example.com", "registration", "confirmation (sent)"),
    ("p.lecki@szczecin.example.com", "unsubscribe", "unsubscribed (sent)"),
    ("z.kepinska@gdansk.example.com", "registration", "confirmation (sent)"),
    ("b.grzedzinska@bydgoszcz.example.com", "registration", "incomplete (sent)"),
    ("b.grzedzinska@bydgoszcz.example.com", "registration", "confirmation (sent)"),
    ("j.wasowicz@poznan.example.com", "registration", "confirmation (sent)"),
    ("mailer-daemon@devserver.localhost", "bounce", "-"),
]
EXPECTED_CITIES = {
    "Gdynia": "registered", "Łódź": "invited", "Kraków": "invited", "Wrocław": "bounced",
    "Poznań": "registered", "Gdańsk": "registered", "Szczecin": "unsubscribed",
    "Bydgoszcz": "registered", "Lublin": "invited", "Bielsko-Biała": "invited",
}


def section(output: str, title: str) -> list[list[str]]:
    """The rows of one printed table, split on runs of two or more spaces."""
    lines = output.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the demo's workspace)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(command)
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """One `mailer demo` for the module: (workspace, stdout, seconds)."""
    root = tmp_path_factory.mktemp("demo") / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mailer", "-c", str(REPO / "campaign.toml"),
                             "demo", "--dir", str(root)], env=env, capture_output=True,
                            text=True, timeout=90, stdin=subprocess.DEVNULL, check=False)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return root, result.stdout, seconds


@pytest.mark.slow
def test_demo_registers_answers_and_reports(demo_run: tuple[Path, str, float]) -> None:
    """The demo's tables show each case's registration, answer and city status."""
    _root, output, seconds = demo_run
    assert seconds < 60
    assert "sent 20, refused 0, deferred 0" in output
    people = [tuple(row[:2] + row[3:]) for row in section(output, "Registrations")]
    assert people == EXPECTED_REGISTRATIONS
    inbox = [tuple(row[1:]) for row in section(output, "The reply inbox, as the watcher read it")]
    assert inbox == EXPECTED_INBOX
    cities = {row[0]: row[2] for row in section(output, "Cities (one row per invited city)")}
    assert len(cities) == 20
    assert {c: cities[c] for c in EXPECTED_CITIES} == EXPECTED_CITIES
    assert "MAILER_NOW=2020-10-19T09:00:00+02:00 mailer send --yes" in output


@pytest.mark.slow
def test_demo_state_and_mailboxes(demo_run: tuple[Path, str, float]) -> None:
    """The answers went out over SMTP into the officials' mailboxes; suppressions recorded."""
    root, _output, _seconds = demo_run
    with open_state(root / "state", writer=False) as store:
        answers = sorted((a["to"], a["template"], a["status"]) for a in store.all(ANSWERS))
        suppressed: dict[str, Any] = {d["key"]: d["reason"] for d in store.all(SUPPRESSIONS)}
    assert answers == [
        ("a.kolodziej@gdynia.example.com", "confirmation", "sent"),
        ("b.grzedzinska@bydgoszcz.example.com", "confirmation", "sent"),
        ("b.grzedzinska@bydgoszcz.example.com", "incomplete", "sent"),
        ("j.wasowicz@poznan.example.com", "confirmation", "sent"),
        ("p.lecki@szczecin.example.com", "unsubscribed", "sent"),
        ("z.kepinska@gdansk.example.com", "confirmation", "sent"),
    ]
    assert suppressed == {"p.lecki@szczecin.example.com": "unsubscribed",
                          "m.slezak@wroclaw.example.com": "bounced"}
    mailbox = root / "devmail" / "b.grzedzinska@bydgoszcz.example.com"
    assert len([*mailbox.glob("new/*"), *mailbox.glob("cur/*")]) == 3  # newsletter + 2 answers
    assert not (root / "devmail" / "m.slezak@wroclaw.example.com").exists()


@pytest.mark.slow
def test_demo_leaves_nothing_running(demo_run: tuple[Path, str, float]) -> None:
    """After the demo no process of its workspace is alive and its ports are closed."""
    root, output, _seconds = demo_run
    match = re.search(r"SMTP 127\.0\.0\.1:(\d+), IMAP 127\.0\.0\.1:(\d+)", output)
    assert match
    for port in map(int, match.groups()):
        assert not listening_addresses(port)
    assert processes_mentioning(str(root)) == []
    assert "nothing of the demo is running" in output


def test_demo_refuses_a_folder_in_use(tmp_path: Path) -> None:
    """--dir must be new or empty: the demo never mixes its files into someone's folder."""
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "mailer", "-c", str(REPO / "campaign.toml"),
                             "demo", "--dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "hint:" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
