"""The clerk's side against state made by a real run: RODO erasure, audit log."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl

from mailer.models import DELIVERIES, INBOUND, REGISTRATIONS
from tests.conftest import SmtpSink, Workspace
from tests.dovecot import Dovecot
from tests.test_inbox import ON_TIME, form, reply, table

NAME = "Zofia Przybylska-Wrzos"
ADDRESS = "osoba2@miasto2.example.com"


def real_run(ws: Workspace, server: Dovecot, user: str) -> None:
    """Invitations over SMTP, two replies through Dovecot, the watcher answering both."""
    ws.run("send", "--yes", check=True)
    server.append(user, reply(f"{NAME} <{ADDRESS.upper()}>", form(name=NAME, city="Kraków")),
                  ON_TIME)
    server.append(user, reply("osoba3@miasto3.example.com", form(name="Adam Nowak")), ON_TIME)
    ws.run("watch", "--once", check=True)


def files_mentioning(folder: Path, *needles: str) -> list[str]:
    """Every file under `folder` whose bytes contain a needle (case-insensitive)."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes().lower()
            found += [f"{path}: {n}" for n in needles if n.lower().encode() in data]
    return found


def test_forget_leaves_no_trace_in_state(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
                                         mailbox: tuple[Dovecot, str]) -> None:
    """After `forget`, no file under state/ holds the address or the name; never mailed again."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    real_run(ws, server, user)
    assert files_mentioning(ws.state, ADDRESS, NAME)  # the run did store them
    refused = ws.run("forget", ADDRESS)
    assert refused.returncode == 2  # no terminal, no --yes
    result = ws.run("forget", ADDRESS, "--yes")
    assert result.returncode == 0, result.stderr
    assert files_mentioning(ws.state, ADDRESS, NAME) == []
    assert [r["name"] for r in table(ws, REGISTRATIONS)] == ["Adam Nowak"]
    entries = [json.loads(line) for line in (ws.state / "audit.log").read_text().splitlines()]
    assert entries[-1]["action"] == "forget" and entries[-1]["subject"].startswith("erased:")
    assert {"send", "receive", "answer"} <= {e["action"] for e in entries}
    before = len(sink.messages)
    ws.run("send", "--yes", "--force", check=True)
    assert len(sink.messages) == before  # the erased address stays suppressed by its hash


def dsn(address: str, message_id: str, *, action: str = "failed") -> bytes:
    """A Postfix DSN (multipart/report) about our invitation to `address`, headers returned."""
    status, text = ("5.1.1", "User unknown") if action == "failed" else ("4.4.1", "timed out")
    return f"""\
Return-Path: <>
From: MAILER-DAEMON@mail.example.com (Mail Delivery System)
To: rejestracja@example.com
Subject: Undelivered Mail Returned to Sender
Date: Tue, 20 Oct 2020 12:00:00 +0200
Message-ID: <{action}.{abs(hash(address))}@mail.example.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BND"

--BND
Content-Type: text/plain; charset=utf-8

<{address}>: host mx.miasto2.example.com said: {status} {text}

--BND
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.com
X-Postfix-Sender: rfc822; rejestracja@example.com

Final-Recipient: rfc822; {address}
Original-Recipient: rfc822;{address}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {status} <{address}>: {text}

--BND
Content-Type: text/rfc822-headers

Return-Path: <rejestracja@example.com>
From: Departament Strategii MFiPR <strategia@example.com>
To: {address}
Subject: Zaproszenie
Message-ID: {message_id}

--BND--
""".replace("\n", "\r\n").encode()


def test_forget_erases_bounces_naming_the_address(inbox_ws: Any) -> None:
    """`forget` deletes the DSNs about the address (failed and delayed): raw .eml and record."""
    ws, _sink, server, user = inbox_ws
    ws.run("send", "--yes", check=True)
    sent = {d["contact"]: d for d in table(ws, DELIVERIES)}
    for action in ("failed", "delayed"):
        server.append(user, dsn(ADDRESS, sent[ADDRESS]["message_id"], action=action), ON_TIME)
    server.append(user, dsn("osoba3@miasto3.example.com",
                            sent["osoba3@miasto3.example.com"]["message_id"]), ON_TIME)
    ws.run("watch", "--once", check=True)
    bounces = [d for d in table(ws, INBOUND) if d["kind"] == "bounce"]
    assert sorted(tuple(d["read"]["bounced"]) for d in bounces) == [
        (), (ADDRESS,), ("osoba3@miasto3.example.com",)]
    assert files_mentioning(ws.state, ADDRESS)
    ws.run("forget", ADDRESS, "--yes", check=True)
    assert files_mentioning(ws.state, ADDRESS) == []
    kept = [d["read"]["bounced"] for d in table(ws, INBOUND)]
    assert kept == [["osoba3@miasto3.example.com"]]  # another person's bounce stays
    assert [p.name for p in ws.state.rglob("*.eml")] == [Path(table(ws, INBOUND)[0]["path"]).name]


def test_purge_erases_people_of_ended_events(make_workspace: Any,
                                             smtp_sink: tuple[SmtpSink, int],
                                             mailbox: tuple[Dovecot, str]) -> None:
    """purge --before a date after both events erases every registrant and their messages."""
    _, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    real_run(ws, server, user)
    result = ws.run("purge", "--before", "2020-12-01T00:00:00+01:00", "--yes")
    assert result.returncode == 0, result.stderr
    assert "erased 2 people" in result.stdout
    assert table(ws, REGISTRATIONS) == []
    assert files_mentioning(ws.state, ADDRESS, NAME, "Adam Nowak") == []


def test_remind_only_missing_cities_and_never_twice(make_workspace: Any,
                                                    smtp_sink: tuple[SmtpSink, int],
                                                    mailbox: tuple[Dovecot, str]) -> None:
    """Reminders go to invited contacts of cities without a registration, once per event."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    real_run(ws, server, user)  # osoba2 (Kraków) and osoba3 (Wrocław) registered for both
    before = len(sink.messages)
    result = ws.run("remind", "--yes", now="2020-10-22T09:00:00+02:00")
    assert result.returncode == 0, result.stderr
    reminded = sorted(m.rcpt_tos[0] for m in sink.messages[before:])
    assert reminded == ["osoba0@miasto0.example.com", "osoba1@miasto1.example.com",
                        "osoba4@miasto4.example.com"]
    reminder = sink.messages[-1].message
    assert str(reminder["Subject"]).startswith("Przypomnienie: ")
    text = reminder.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Imię i nazwisko:" in text
    again = ws.run("remind", "--yes", now="2020-10-23T09:00:00+02:00")
    assert again.returncode == 0 and len(sink.messages) == before + 3
    late = ws.run("remind", "--yes", "--event", "smart-city", now="2020-10-27T09:00:00+01:00")
    assert late.returncode == 1 and "deadline" in late.stderr


def test_status_and_exports(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
                            mailbox: tuple[Dovecot, str], tmp_path: Path) -> None:
    """Status, per-city status and the CSV, XLSX and JSON exports of a real run."""
    _, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    real_run(ws, server, user)
    server.append(user, reply("osoba4@miasto4.example.com", "Czy będzie nagranie?\n"), ON_TIME)
    watched = ws.run("watch", "--once", check=True)
    assert "1 waiting for review (mailer review)" in watched.stdout  # never silent (issue 13)

    counts = json.loads(ws.run("status", "--format", "json", check=True).stdout)
    assert counts["deliveries"] == {"invitation sent": 5}
    assert counts["inbound"] == {"registration": 2, "other": 1}
    assert counts["events"]["pim"] == {"confirmed": 2, "late": 0}
    assert counts["answers_sent"] == 2 and counts["review"] == 1

    cities = json.loads(ws.run("status", "--cities", "--format", "json", check=True).stdout)
    by_city = {c["city"]: c["status"] for c in cities}
    assert by_city["Kraków"] == "registered" and by_city["Łódź"] == "invited"
    asking = [c for c in cities if c["review"]]  # the question from osoba4 waits for a human
    assert [(c["status"], c["review"]) for c in asking] == [("needs review", 1)]
    krakow = next(c for c in cities if c["city"] == "Kraków")
    assert krakow["people_per_event"] == {"smart-city": 1, "pim": 1}
    table_text = ws.run("status", "--cities", check=True).stdout
    assert "Kraków" in table_text and "registered" in table_text
    assert "needs review" in table_text and "1 for review" in table_text

    out = tmp_path / "reg.csv"
    ws.run("registrations", "--format", "csv", "--out", str(out), check=True)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert out.stat().st_mode & 0o777 == 0o600  # personal data, as state/ (issue 12)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:3] == ["Id", "Imię i nazwisko", "Stanowisko"]
    assert sorted(r[1] for r in rows[1:]) == ["Adam Nowak", NAME]
    assert rows[0][7] == "Otrzymano" and all(  # the campaign's zone, with its offset
        re.fullmatch(r"2020-10-\d\d \d\d:\d\d:\d\d\+02:00", r[7]) for r in rows[1:])
    audited = [json.loads(line) for line in (ws.state / "audit.log").read_text().splitlines()]
    [export] = [e for e in audited if e["action"] == "export"]
    assert (export["format"], export["rows"], export["to"]) == ("csv", 2, str(out))

    xlsx = tmp_path / "reg.xlsx"
    ws.run("registrations", "--format", "xlsx", "--out", str(xlsx), check=True)
    assert xlsx.stat().st_mode & 0o777 == 0o600
    book = openpyxl.load_workbook(xlsx)
    assert book.sheetnames == ["Wszystkie", "smart-city", "pim"]
    sheet = book["pim"]
    assert sheet.freeze_panes == "A2"
    assert isinstance(sheet["H2"].value, datetime)
    assert sheet["I2"].value == "confirmed"

    records = json.loads(ws.run("registrations", "--format", "json", "--event", "pim",
                                check=True).stdout)
    zofia = next(r for r in records if r["name"] == NAME)
    assert zofia["id"] == ADDRESS and zofia["status"] == "complete"
    assert zofia["events"] == {"smart-city": "confirmed", "pim": "confirmed"}
    assert zofia["message_ids"] and zofia["received"].startswith("2020-10-20")
    assert zofia["received"].endswith("+02:00")  # the campaign's zone, not UTC



def test_show_and_review(make_workspace: Any, smtp_sink: tuple[SmtpSink, int],
                         mailbox: tuple[Dovecot, str]) -> None:
    """One person's file, the review queue, and a review resolved by registering by hand."""
    _, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user)
    real_run(ws, server, user)
    server.append(user, reply("osoba4@miasto4.example.com", "Czy będzie nagranie?\n"), ON_TIME)
    ws.run("watch", "--once", check=True)

    shown = ws.run("show", ADDRESS, check=True).stdout
    assert NAME in shown and "answer confirmation: sent" in shown and ".eml" in shown
    assert f"read: {NAME} | Naczelnik Wydziału | Kraków" in shown

    queue = ws.run("review", check=True).stdout
    assert "osoba4@miasto4.example.com" in queue and "not understood" in queue
    # Times in the campaign's zone with its offset (10:00 UTC is 12:00 in Warsaw in October).
    assert "2020-10-20 12:00 +02:00" in queue
    assert "in  2020-10-20 12:00 +02:00  other" in ws.run(
        "show", "osoba4@miasto4.example.com", check=True).stdout
    item = queue.splitlines()[2].split()[0]
    registered = ws.run("review", "--register", item, "--name", "Ewa Lis", "--city", "Poznań",
                        "--event", "pim")
    assert registered.returncode == 0, registered.stderr
    assert "0 messages wait" in ws.run("review", check=True).stderr
    people = {r["name"] for r in json.loads(ws.run("registrations", "--format", "json",
                                                    check=True).stdout)}
    assert "Ewa Lis" in people
    entries = [json.loads(line) for line in (ws.state / "audit.log").read_text().splitlines()]
    assert entries[-2]["action"] == "review" and entries[-2]["how"] == "registered"
    assert entries[-1]["action"] == "export" and entries[-1]["to"] == "stdout"
