"""A state folder written by release 0.1.0 (the demo's) loads, upgrades once and keeps working."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mailer.migrate import CURRENT, VERSION_KEY, migrate, state_version
from mailer.models import INBOUND, META, REGISTRATIONS, message_path, message_record
from mailer.reasons import Code, Reason
from mailer.store import open_state
from tests.conftest import SmtpSink, Workspace
from tests.dovecot import Dovecot
from tests.test_inbox import reply
from tests.test_web import signed_in

FIXTURE = Path(__file__).parent / "data" / "state-0.1.0"
WRITTEN_AT = "/tmp/demo0"  # where 0.1.0's `mailer demo --dir` wrote it: paths in it say so
NOW = "2020-10-29T09:00:00+01:00"  # the clock the expected outputs were printed on
READ_COMMANDS = {
    "status.txt": ("status",),
    "status-cities.txt": ("status", "--cities"),
    "registrations.json": ("registrations", "--format", "json"),
    "review.txt": ("review",),
    "show.txt": ("show", "t.wrobel@gdansk.example.com"),
}


def old_state(root: Path, *, smtp_port: int = 2525, imap_port: int = 1143,
              imap_user: str = "rejestracja", paths_at: str | None = None) -> Workspace:
    """The fixture copied to `root`, its paths moved there (or to `paths_at`: where the
    folder was before it moved), its servers pointed at ours."""
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("expected"))
    db = root / "state" / "mailer.json"
    db.write_text(db.read_text(encoding="utf-8").replace(WRITTEN_AT, paths_at or str(root)),
                  encoding="utf-8")
    config = root / "campaign.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"(\[smtp\][^\[]*?)port = \d+", rf"\g<1>port = {smtp_port}", text)
    text = re.sub(r"(\[imap\][^\[]*?)port = \d+", rf"\g<1>port = {imap_port}", text)
    text = text.replace('username = "rejestracja"', f'username = "{imap_user}"')
    config.write_text(text, encoding="utf-8")
    return Workspace(root)


def expected(name: str, root: Path) -> str:
    return (FIXTURE / "expected" / name).read_text(encoding="utf-8").replace(WRITTEN_AT,
                                                                             str(root))


def test_old_state_reads_as_it_did(tmp_path: Path) -> None:
    """status, status --cities, registrations, review and show print what 0.1.0 printed,
    before and after the upgrade (times since in the campaign's zone, with its offset: the
    expected outputs were updated for that, and only for that, in issue 16)."""
    ws = old_state(tmp_path / "old")
    for name, args in READ_COMMANDS.items():
        assert ws.run(*args, now=NOW, check=True).stdout == expected(name, ws.root), name
    with open_state(ws.state, writer=True):
        pass  # the first writer upgrades
    for name, args in READ_COMMANDS.items():
        assert ws.run(*args, now=NOW, check=True).stdout == expected(name, ws.root), name


def test_upgrade_runs_once_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Version 1 → current: the reasons become codes, the version is recorded, a second open
    changes nothing."""
    ws = old_state(tmp_path / "old")
    with open_state(ws.state, writer=False) as store:
        assert state_version(store) == 1
        assert all(isinstance(doc["reason"], str) for doc in store.iter(INBOUND))
    with caplog.at_level("WARNING", logger="mailer.migrate"), \
            open_state(ws.state, writer=True) as store:
        assert state_version(store) == CURRENT
    assert "state upgraded from version 1 to 2: messages' reasons stored as codes (8)" \
        in caplog.text
    assert "state upgraded from version 2 to 3: raw messages' paths relative to the state " \
        "folder (8)" in caplog.text
    with open_state(ws.state, writer=False) as store:
        docs = {doc["sender"]: doc for doc in store.iter(INBOUND)}
        assert store.get(META, VERSION_KEY) == {"version": CURRENT, "key": VERSION_KEY}
        journal = (ws.state / "journal.jsonl").read_bytes()
    bounce = docs["mailer-daemon@devserver.localhost"]
    assert Reason.from_doc(bounce["reason"]) == Reason.of(Code.DSN)
    assert Reason.from_doc(bounce["automated"]) == Reason.of(Code.AUTO_SUBMITTED,
                                                             value="auto-replied")
    assert all(set(doc["reason"]) >= {"code"} for doc in docs.values())
    with open_state(ws.state, writer=True) as store:
        assert migrate(store) == []
    assert (ws.state / "journal.jsonl").read_bytes() == journal


def test_newer_state_is_refused(tmp_path: Path) -> None:
    """A state written by a newer release is not misread: the writer stops with a hint."""
    ws = old_state(tmp_path / "old")
    with open_state(ws.state, writer=True) as store:
        store.put_now(META, VERSION_KEY, {"version": CURRENT + 1})
    result = ws.run("forget", "nobody@example.com", "--yes", now=NOW)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"state version {CURRENT + 1}" in result.stderr and "hint: upgrade" in result.stderr


def test_old_state_keeps_working(tmp_path: Path, smtp_sink: tuple[SmtpSink, int],
                                 mailbox: tuple[Dovecot, str]) -> None:
    """The watcher upgrades the old state, registers a new city's reply and answers it; the
    old registrations are still there and staff see the new one."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = old_state(tmp_path / "old", smtp_port=port, imap_port=server.port, imap_user=user)
    form = ("Wydarzenie: oba\nImię i nazwisko: Marek Zając\nStanowisko: Kierownik Referatu\n"
            "Miasto / urząd: Kraków\nE-mail:\nTelefon: 12 616 12 00\n")
    server.append(user, reply("m.zajac@krakow.example.com", form),
                  datetime.fromisoformat("2020-10-23T11:00:00+02:00"))
    result = ws.run("watch", "--once", now="2020-10-23T12:00:00+02:00",
                    MAILER_IMAP_PASSWORD=server.password)
    assert result.returncode == 0, result.stderr
    assert "state upgraded from version 1 to 2" in result.stderr
    assert [m.rcpt_tos for m in sink.messages] == [["m.zajac@krakow.example.com"]]
    # The log names the message by its key, not the sender: logs outlive `forget` (issue 12).
    assert "registration, answer confirmation" in result.stderr
    assert "m.zajac" not in result.stderr and "krakow.example" not in result.stderr
    people: list[dict[str, Any]] = json.loads(
        ws.run("registrations", "--format", "json", now=NOW, check=True).stdout)
    by_email = {person["email"]: person for person in people}
    assert len(people) == 6 and by_email["m.zajac@krakow.example.com"]["city"] == "Kraków"
    cities = ws.run("status", "--cities", now=NOW, check=True).stdout
    assert re.search(r"^Kraków\s+1\s+registered\s+1\s", cities, re.MULTILINE), cities
    with open_state(ws.state, writer=False) as store:
        assert store.get(REGISTRATIONS, "m.zajac@krakow.example.com") is not None
        new = [d for d in store.iter(INBOUND) if d["sender"] == "m.zajac@krakow.example.com"]
    assert Reason.from_doc(new[0]["reason"]) == Reason.of(Code.FORM)


def test_new_state_records_its_version(tmp_path: Path) -> None:
    """A new state gets the current version when its first writer finishes; an empty one none."""
    folder = tmp_path / "state"
    with open_state(folder, writer=True):
        pass
    assert not (folder / "journal.jsonl").exists() or not (folder / "journal.jsonl").stat().st_size
    with open_state(folder, writer=True) as store:
        store.put_now(REGISTRATIONS, "a@example.com", {"email": "a@example.com"})
    with open_state(folder, writer=False) as store:
        assert state_version(store) == CURRENT


GDANSK = "110a924d1e081513fdc5b8a6efcd8713"  # the Gdańsk reply: two registrants, one .eml
MOVED_FROM = "/srv/moved-away/mailer"  # where the folder was when 0.1.0 wrote its paths


def finds_raw_message(ws: Workspace) -> None:
    """`show`, the web's person page and its download find the Gdańsk reply's raw .eml."""
    raw = ws.state / "messages" / f"{GDANSK}.eml"
    shown = ws.run("show", "t.wrobel@gdansk.example.com", now=NOW, check=True).stdout
    assert f"raw: {raw}" in shown, shown
    client = signed_in(ws)
    page = client.get("/person?address=t.wrobel@gdansk.example.com")
    assert page.status_code == 200 and "Plik wiadomości nie istnieje" not in page.text
    download = client.get(f"/message/{GDANSK}.eml")
    assert download.status_code == 200 and download.content == raw.read_bytes()


def test_moved_state_keeps_its_messages(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12: 0.1.0 stored absolute paths; a folder moved since still finds every raw
    message, the upgrade makes the paths relative, and `forget` erases the files after
    another move."""
    ws = old_state(tmp_path / "moved", paths_at=MOVED_FROM)
    finds_raw_message(ws)
    with caplog.at_level("WARNING", logger="mailer.migrate"), \
            open_state(ws.state, writer=True) as store:
        paths = {doc["key"]: doc["path"] for doc in store.iter(INBOUND)}
    assert len(paths) == 8 and paths == {key: message_record(key) for key in paths}
    assert "from version 2 to 3: raw messages' paths relative to the state folder (8)" \
        in caplog.text
    again = Workspace(Path(shutil.move(ws.root, tmp_path / "again")))
    finds_raw_message(again)
    erased = again.run("forget", "t.wrobel@gdansk.example.com", "--yes", now=NOW)
    assert erased.returncode == 0, erased.stderr
    assert not (again.state / "messages" / f"{GDANSK}.eml").exists()
    assert "logs (journald" in erased.stderr  # what `forget` cannot erase, it says


@pytest.mark.parametrize("stored", [
    "../secret.eml", "messages/../../secret.eml", "messages/..", "messages/sub/x.eml",
    "campaign.toml", "/etc/passwd", "messages/link.eml", "", None, 7])
def test_paths_out_of_the_state_folder_lead_nowhere(tmp_path: Path, stored: object) -> None:
    """A damaged or hostile `path` (`..`, absolute, a symbolic link out) resolves to none."""
    folder = tmp_path / "state"
    (folder / "messages").mkdir(parents=True)
    (tmp_path / "secret.eml").write_bytes(b"secret")
    (folder / "messages" / "link.eml").symlink_to(tmp_path / "secret.eml")
    assert message_path(folder, stored) is None
    assert message_path(folder, "messages/a.eml") == folder / "messages" / "a.eml"
    assert message_path(folder, "/old/state/messages/a.eml") == folder / "messages" / "a.eml"


def test_forget_and_web_stay_in_the_state_folder(tmp_path: Path) -> None:
    """A record pointing out of the state folder: the web serves 404 and `forget` erases
    the record but leaves the file it names alone."""
    ws = old_state(tmp_path / "old")
    outside = tmp_path / "outside.eml"
    outside.write_bytes((ws.state / "messages" / f"{GDANSK}.eml").read_bytes())
    with open_state(ws.state, writer=True) as store:
        doc = store.get(INBOUND, GDANSK)
        assert doc is not None
        doc.pop("key")
        store.put_now(INBOUND, GDANSK, {**doc, "path": str(outside)})
    client = signed_in(ws)
    assert client.get(f"/message/{GDANSK}.eml").status_code == 404
    page = client.get("/person?address=t.wrobel@gdansk.example.com")
    assert page.status_code == 200 and "Plik wiadomości nie istnieje" in page.text
    erased = ws.run("forget", "t.wrobel@gdansk.example.com", "--yes", now=NOW)
    assert erased.returncode == 0, erased.stderr
    assert outside.exists()
    with open_state(ws.state, writer=False) as store:
        assert store.get(INBOUND, GDANSK) is None
