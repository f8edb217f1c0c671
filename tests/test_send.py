"""Sending over real SMTP (aiosmtpd): headers, personalisation, faults, resumption."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import pytest

from mailer.campaign import CampaignSender, SendReport, plan
from mailer.contacts import read_contacts
from mailer.models import DELIVERIES, SUPPRESSIONS, Status
from mailer.render import Renderer
from mailer.settings import load_settings
from mailer.store import open_state
from tests.conftest import REHEARSAL, SmtpSink, Workspace, contact_rows, free_port

NOW = datetime(2020, 10, 19, 7, 0, tzinfo=UTC)


async def send_all(ws: Workspace, *, retry_delay: float = 0.05) -> SendReport:
    """The library path of `mailer send`: plan and send every pending invitation."""
    settings = load_settings(ws.config)
    contacts = read_contacts(settings.campaign.recipients)
    with open_state(settings.storage, writer=True) as store:
        todo = plan(contacts.contacts, store, kind="invitation", report=SendReport())
        sender = CampaignSender(settings, Renderer(settings, now=NOW), store,
                                retry_delay=retry_delay)
        return await sender.run(todo)


def deliveries(ws: Workspace) -> dict[str, Any]:
    """Every delivery record, by contact address."""
    with open_state(ws.state, writer=False) as store:
        return {d["contact"]: d for d in store.all(DELIVERIES)}


def test_every_header_of_the_spec(make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """Each message has From, To, Reply-To, Subject, Date, Message-ID, List-Unsubscribe, parts."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    result = ws.run("send", "--yes", check=True)
    assert "sent 5" in result.stdout
    assert len(sink.messages) == 5
    ids = set()
    for received in sink.messages:
        msg = received.message
        assert received.mail_from == "rejestracja@example.com"  # bounces reach the inbox
        assert str(msg["From"]) == "Departament Strategii MFiPR <strategia@example.com>"
        assert parseaddr(str(msg["To"]))[1] == received.rcpt_tos[0]
        assert str(msg["Reply-To"]) == "rejestracja@example.com"
        assert msg["Date"].datetime.tzinfo is not None
        assert re.fullmatch(r"<[0-9a-f]{32}\.invitation@example\.com>", str(msg["Message-ID"]))
        ids.add(str(msg["Message-ID"]))
        assert str(msg["List-Unsubscribe"]) == "<mailto:rejestracja@example.com?subject=wypisz>"
        assert msg["List-Unsubscribe-Post"] is None  # only for https targets (RFC 8058)
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        assert "Imię i nazwisko:" in text.get_content()
        assert "RODO" in text.get_content()
        # The invitee's data come from the contact list (art. 14: source and categories) and
        # lateness is decided automatically (art. 22: how to ask for a human).
        for part in (" ".join(text.get_content().split()), html.get_content()):
            assert "art. 13 i 14" in part and "pochodzą z listy osób do kontaktu" in part
            assert "rozpatrzenia zgłoszenia przez pracownika" in part
        assert "<html" in html.get_content()
        assert "26 października 2020" in text.get_content()
    assert len(ids) == 5


def test_polish_subject_and_names_round_trip(make_workspace: Any,
                                             smtp_sink: tuple[SmtpSink, int]) -> None:
    """Polish letters in subject and display name survive RFC 2047 encoding intact."""
    sink, port = smtp_sink
    rows = [["jan@gdansk.example.com", "Grzegorz Żółć-Brzęczyszczykiewicz", "Ślęzak",
             "Zastępca Prezydenta", "Zielona Góra"]]
    ws = make_workspace(port=port, contacts=rows)
    ws.run("send", "--yes", check=True)
    msg = sink.messages[0].message
    assert msg["To"].addresses[0].display_name == "Grzegorz Żółć-Brzęczyszczykiewicz Ślęzak"
    assert str(msg["Subject"]) == "Zaproszenie – Zielona Góra: warsztat Smart City i PIM"
    raw_headers = sink.messages[0].data.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    assert all(len(line) <= 78 for line in raw_headers.split(b"\r\n"))


def test_https_unsubscribe_adds_one_click(make_workspace: Any,
                                         smtp_sink: tuple[SmtpSink, int]) -> None:
    """An https List-Unsubscribe target brings List-Unsubscribe-Post (RFC 8058)."""
    sink, port = smtp_sink
    ws = make_workspace(port=port, unsubscribe='["https://example.com/wypisz", '
                                               '"mailto:rejestracja@example.com"]')
    ws.run("send", "--yes", check=True)
    msg = sink.messages[0].message
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert "<https://example.com/wypisz>" in str(msg["List-Unsubscribe"])


@pytest.mark.parametrize("encoding", ["cp1250", "utf-8-sig"])
def test_contact_list_encodings_reach_the_message(make_workspace: Any,
                                                 smtp_sink: tuple[SmtpSink, int],
                                                 encoding: str) -> None:
    """Windows-1250 and UTF-8-BOM lists give the same Polish letters in the message."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    delimiter = ";" if encoding == "cp1250" else ","
    ws.write_contacts([["a@lodz.example.com", "Łucja", "Żółkiewska", "Naczelnik", "Łódź"]],
                      encoding=encoding, delimiter=delimiter)
    ws.run("send", "--yes", check=True)
    msg = sink.messages[0].message
    assert msg["To"].addresses[0].display_name == "Łucja Żółkiewska"
    assert str(msg["Subject"]).endswith("Łódź: warsztat Smart City i PIM")


@pytest.mark.parametrize("name", [
    "Jan\r\nBcc: victim@example.org",
    "Jan\u2028Bcc: victim@example.org",
    "Jan\nX-Injected: 1",
    "{{7*7}} {% raw %}",
])
def test_hostile_names_add_no_header(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
                                     name: str) -> None:
    """CR/LF, U+2028 or Jinja2 syntax in a CSV value change no header and render literally."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    ws.write_contacts([["a@x.example.com", name, "Kowalski", "", name]], encoding="utf-8")
    ws.run("send", "--yes", check=True)
    received = sink.messages[0]
    assert received.rcpt_tos == ["a@x.example.com"]
    msg = received.message
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    header_names = [k.lower() for k in msg]
    assert len(header_names) == len(set(header_names)) == 9
    assert "\n" not in str(msg["Subject"]) and "\u2028" not in str(msg["Subject"])
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    if "{{" in name:
        assert "{{7*7}}" in str(msg["Subject"]) and "49" not in str(msg["Subject"])
        assert "{{7*7}}" in text
        html = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        assert "{{7*7}}" in html


async def test_temporary_failure_then_success(make_workspace: Any,
                                              smtp_sink: tuple[SmtpSink, int]) -> None:
    """A 451 on DATA is retried and the message is delivered once."""
    sink, port = smtp_sink
    ws = make_workspace(port=port, contacts=contact_rows(3))
    sink.data_replies = ["451 4.3.0 try again later"]
    report = await send_all(ws)
    assert report.sent == 3 and not report.deferred
    assert sorted(sink.recipients()) == sorted(r[0] for r in contact_rows(3))
    assert max(d["attempts"] for d in deliveries(ws).values()) == 2


async def test_permanent_refusal_of_one_recipient(make_workspace: Any,
                                                  smtp_sink: tuple[SmtpSink, int]) -> None:
    """A 550 for one recipient is recorded with its code; the others are sent."""
    sink, port = smtp_sink
    rows = contact_rows(4)
    bad = rows[2][0]
    sink.rcpt_replies[bad] = [f"550 5.1.1 <{bad}>: Recipient address rejected"]
    ws = make_workspace(port=port, contacts=rows)
    report = await send_all(ws)
    assert report.sent == 3 and report.failed == [bad]
    record = deliveries(ws)[bad]
    assert record["status"] == Status.FAILED and record["code"] == 550
    assert "Recipient address rejected" in record["reply"]
    assert bad not in sink.recipients()
    again = await send_all(ws)  # a permanent refusal is not retried by a rerun
    assert again.sent == 0 and not again.failed


async def test_dropped_session_mid_data_is_retried(make_workspace: Any,
                                                   smtp_sink: tuple[SmtpSink, int]) -> None:
    """A connection closed after DATA without a reply is retried on a new session."""
    sink, port = smtp_sink
    sink.drop_data = 2
    ws = make_workspace(port=port, contacts=contact_rows(4))
    report = await send_all(ws)
    assert report.sent == 4
    assert sorted(sink.recipients()) == sorted(r[0] for r in contact_rows(4))


async def test_attempts_used_up_leave_message_pending(make_workspace: Any,
                                                      smtp_sink: tuple[SmtpSink, int]) -> None:
    """After max_attempts temporary failures a message is deferred; the next run sends it."""
    sink, port = smtp_sink
    rows = contact_rows(2)
    sink.rcpt_replies[rows[0][0]] = ["450 4.2.1 mailbox busy"] * 3
    ws = make_workspace(port=port, contacts=rows, max_attempts=3)
    report = await send_all(ws)
    assert report.deferred == [rows[0][0]] and report.sent == 1
    assert deliveries(ws)[rows[0][0]]["status"] == Status.DEFERRED
    again = await send_all(ws)
    assert again.sent == 1 and sink.recipients().count(rows[0][0]) == 1


async def test_quota_reply_pauses_sending(make_workspace: Any,
                                          smtp_sink: tuple[SmtpSink, int]) -> None:
    """421 4.7.0 pauses everything for quota_pause, then the rest goes out; nothing burnt."""
    sink, port = smtp_sink
    rows = contact_rows(6)
    sink.data_replies = ["421 4.7.0 Try again later, closing connection"]
    ws = make_workspace(port=port, contacts=rows, quota_pause=0.5)
    started = datetime.now(UTC)
    report = await send_all(ws)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    assert report.quota_pauses == 1 and report.sent == 6 and not report.failed
    assert elapsed >= 0.5


async def test_persistent_quota_stops_and_leaves_rest_pending(
        make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """A quota that keeps coming stops the run; everything unsent is pending, not failed."""
    sink, port = smtp_sink
    sink.data_replies = ["550 5.4.5 Daily sending quota exceeded"] * 50
    ws = make_workspace(port=port, contacts=contact_rows(5), quota_pause=0.1, max_attempts=2)
    report = await send_all(ws)
    assert report.sent == 0 and not report.failed
    assert len(report.deferred) == 5 and "quota" in report.stopped


def test_rerun_resumes_without_duplicates(make_workspace: Any,
                                          smtp_sink: tuple[SmtpSink, int]) -> None:
    """`--limit` sends part; the rerun sends exactly the rest."""
    sink, port = smtp_sink
    ws = make_workspace(port=port, contacts=contact_rows(7))
    assert "sent 3" in ws.run("send", "--yes", "--limit", "3", check=True).stdout
    assert "sent 4" in ws.run("send", "--yes", check=True).stdout
    result = ws.run("send", "--yes", check=True)
    assert "sent 0" in result.stdout and "7 already sent" in result.stdout
    assert sorted(sink.recipients()) == sorted(r[0] for r in contact_rows(7))


def test_suppressed_addresses_are_skipped(make_workspace: Any,
                                          smtp_sink: tuple[SmtpSink, int]) -> None:
    """An unsubscribed or bounced address gets nothing."""
    sink, port = smtp_sink
    rows = contact_rows(3)
    ws = make_workspace(port=port, contacts=rows)
    with open_state(ws.state, writer=True) as store:
        store.put_now(SUPPRESSIONS, rows[1][0].upper().casefold(), {"reason": "bounced"})
    ws.run("send", "--yes", check=True)
    assert sorted(sink.recipients()) == sorted([rows[0][0], rows[2][0]])


def test_dry_run_sends_and_records_nothing(make_workspace: Any,
                                           smtp_sink: tuple[SmtpSink, int]) -> None:
    """--dry-run renders every message but sends and records nothing."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    result = ws.run("send", "--dry-run", check=True)
    assert "5 invitations would be sent" in result.stdout
    assert sink.messages == [] and not (ws.state / "journal.jsonl").exists()


def test_test_send_is_not_recorded(make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """--to sends one sample to the given address and leaves the campaign untouched."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    ws.run("send", "--to", "organizer@example.com", check=True)
    assert sink.recipients() == ["organizer@example.com"]
    ws.run("send", "--yes", check=True)
    assert len(sink.recipients()) == 6


def test_no_terminal_and_no_yes_refuses(make_workspace: Any,
                                        smtp_sink: tuple[SmtpSink, int]) -> None:
    """Without a terminal to confirm on and without --yes, send exits 2 and sends nothing."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    result = ws.run("send")
    assert result.returncode == 2 and "--yes" in result.stderr
    assert sink.messages == []


def test_deadline_guard_and_force(make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """After every deadline send refuses with exit 1; --force sends and logs it."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    late = "2020-11-03T08:00:00+01:00"
    result = ws.run("send", "--yes", now=late)
    assert result.returncode == 1 and "deadline has passed" in result.stderr
    assert sink.messages == []
    forced = ws.run("send", "--yes", "--force", now=late)
    assert forced.returncode == 0 and "--force" in forced.stderr
    assert len(sink.messages) == 5


def test_pending_work_exits_3(make_workspace: Any) -> None:
    """With the server down, every message is deferred and the exit code is 3."""
    ws = make_workspace(port=free_port(), max_attempts=1)
    result = ws.run("send", "--yes")
    assert result.returncode == 3, result.stderr
    assert "rerun" in result.stderr


def test_kill_9_mid_run_then_rerun(make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """A real `mailer send` killed with SIGKILL three times: nobody missed, ≤ connections twice."""
    sink, port = smtp_sink
    sink.delay = 0.01
    rows = contact_rows(240)
    ws = make_workspace(port=port, contacts=rows, connections=4)
    env = {**os.environ, "MAILER_CONFIG": str(ws.config), "MAILER_NOW": REHEARSAL}
    for stop_at in (40, 110, 170):
        proc = subprocess.Popen([sys.executable, "-m", "mailer", "send", "--yes"], cwd=ws.root,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(sink.messages) < stop_at and proc.poll() is None:
            assert time.monotonic() < deadline, "the sender made no progress"
            time.sleep(0.005)
        proc.kill()
        proc.wait()
    ws.run("send", "--yes", check=True)
    received = sink.recipients()
    assert set(received) == {r[0] for r in rows}
    assert len(received) - len(rows) <= 3 * 4  # at most the in-flight messages per kill
    assert all(d["status"] == Status.SENT for d in deliveries(ws).values())
    # A second copy carries the same Message-ID as the first.
    ids: dict[str, set[str]] = {}
    for message in sink.messages:
        ids.setdefault(message.rcpt_tos[0], set()).add(str(message.message["Message-ID"]))
    assert all(len(v) == 1 for v in ids.values())


def test_second_writer_is_refused(make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """While one process holds state/, `send` fails at once naming the holder's pid."""
    sink, port = smtp_sink
    ws = make_workspace(port=port)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mailer.store import Store; s = Store.open(Path(sys.argv[1]), writer=True); "
         "print('ready', flush=True); time.sleep(30)", str(ws.state)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = ws.run("send", "--yes")
        assert result.returncode == 1
        assert f"pid {holder.pid}" in result.stderr and "Traceback" not in result.stderr
        assert sink.messages == []
        reader = ws.run("send", "--dry-run")  # reading works while the writer holds the lock
        assert reader.returncode == 0, reader.stderr
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


async def test_message_ids_cannot_be_computed_from_public_facts(
        make_workspace: Any, smtp_sink: tuple[SmtpSink, int]) -> None:
    """The same campaign and contacts in two state folders send different Message-IDs (the
    state's salt is in them: a stranger who knows the campaign's name and a contact's address
    cannot claim to write in our thread); in one state a rebuilt message keeps its id."""
    _sink, port = smtp_sink
    first, second = make_workspace(port=port, name="a"), make_workspace(port=port, name="b")
    await send_all(first)
    await send_all(second)
    ids = [{d["contact"]: d["message_id"] for d in deliveries(ws).values()}
           for ws in (first, second)]
    assert ids[0].keys() == ids[1].keys() and len(ids[0]) == 5
    assert not set(ids[0].values()) & set(ids[1].values())
    settings = load_settings(first.config)
    with open_state(settings.storage, writer=True) as store:
        sender = CampaignSender(settings, Renderer(settings, now=NOW), store)
        contact = read_contacts(settings.campaign.recipients).contacts[0]
        again = sender.renderer.message_id("invitation", contact.key, secret=sender._secret)
    assert again == ids[0][contact.key]
