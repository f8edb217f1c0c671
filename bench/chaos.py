#!/usr/bin/env python3
"""Crash campaign: `mailer run` killed with SIGKILL at random instants while replies arrive.

    .venv/bin/python bench/chaos.py [--kills 200] [--contacts 2000] [--replies 600]
                                    [--seed N] [--max-seconds 600] [--keep]
                                    [--kill-min 0.05] [--kill-max 1.5]

Everything runs on 127.0.0.1 in a temporary folder: a private Dovecot (tests/dovecot.py, its
own config, a free port) holds the reply inbox; a recording aiosmtpd runs in this process (a
thread), so what it accepted survives every kill of the service; a campaign workspace is the
repository's campaign.toml and templates with a generated list of --contacts contacts,
`[smtp]` at the sink with 4 connections, `[imap]` at Dovecot polling every second, and
MAILER_NOW=2020-10-19T09:00:00+02:00 so that both events are open.

A feeder thread APPENDs --replies filled registration forms at a steady rate, each from a
different contact that the sink has seen invited (In-Reply-To: its invitation), with an
INTERNALDATE between 20 and 25 October. Meanwhile `mailer run` is started and killed with
SIGKILL at a uniformly drawn instant 0.05–1.5 s (--kill-min, --kill-max) after its start
(seeded), --kills times. The state is opened read-only (mailer.store.Store.open(…,
writer=False)) after each kill and, by a reader thread, again and again while the service runs:
it must load, everything it records as sent must be at the sink, and nothing it showed once may
be missing later. Then one last `mailer run` does the rest (until every contact is invited and
every reply answered, or the time is up) and is stopped with SIGTERM, which must end it with
exit 0. The figures say what each killed run was doing (starting, sending invitations, reading
the inbox, answering) from what it logged and what the sink received meanwhile.

Checks (exit 1 if one fails, 2 if the benchmark cannot run):
  - every contact invited; copies beyond one ≤ kills × [smtp] connections (in flight per kill);
  - every reply registered exactly once (one inbound record, one registration naming only that
    message, no history) and answered: answer copies beyond one ≤ kills (the one in flight);
  - nothing recorded as sent that the sink did not accept; no answer to anyone else;
  - `state/` always loads and never loses a fact it showed; the final run exits 0 on SIGTERM;
  - the requested number of kills fitted in --max-seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import imaplib
import importlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from common import free_port  # bench/ is the script folder

from mailer.audit import AuditLog
from mailer.models import ANSWERS, DELIVERIES, INBOUND, REGISTRATIONS
from mailer.store import Store

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "sekret"  # tests/dovecot.py: every user logs in with this one password
IMAP_USER = "rejestracja"
REHEARSAL = "2020-10-19T09:00:00+02:00"
CONNECTIONS = 4
FIRST_REPLY = datetime(2020, 10, 20, 0, 0, tzinfo=UTC)
REPLY_SPAN = 5 * 86400  # 20–25 October
FINAL_STOP_SECONDS = 30
READ_EVERY = 0.25  # seconds between two read-only loads while the service runs
WATCHING = b"INFO mailer: watching "  # what `mailer run` logs once it watches the inbox

FORM = """\
Dzień dobry,

w imieniu urzędu zgłaszam udział.

Wydarzenie (warsztat Smart City / PIM / oba): oba
Imię i nazwisko: {name}
Stanowisko: Naczelnik Wydziału
Miasto / urząd: {city}
E-mail: {email}
Telefon: 58 123 45 67

Z poważaniem
{name}
"""


# -- the SMTP sink ----------------------------------------------------------------------------

@dataclass
class Sink:
    """aiosmtpd handler: counts what it accepts per recipient, invitations apart from answers.

    Answers are told apart by `Auto-Submitted` (RFC 3834), which only they carry.
    """

    invitations: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    invitation_ids: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content)
        headers = BytesHeaderParser(policy=compat32).parsebytes(data)
        answer = headers.get("Auto-Submitted") is not None
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                address = rcpt.lower()
                if answer:
                    self.answers[address] += 1
                else:
                    self.invitations[address] += 1
                    self.invitation_ids[address] = str(headers.get("Message-ID", ""))
        return "250 2.0.0 queued"

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            return Counter(self.invitations), Counter(self.answers)

    def invited(self) -> dict[str, str]:
        with self.lock:
            return dict(self.invitation_ids)




# -- the campaign workspace -------------------------------------------------------------------

def set_key(text: str, section: str, key: str, value: str) -> str:
    """Replace `key = …` inside `[section]` of a TOML text, keeping the comments."""
    lines = text.splitlines(keepends=True)
    current = ""
    done = False
    for i, line in enumerate(lines):
        header = re.match(r"^\[\[?([\w.-]+)\]\]?\s*$", line)
        if header:
            current = header.group(1)
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}\n"
            done = True
    if not done:
        raise SystemExit(f"campaign.toml: no [{section}] {key} to set")
    return "".join(lines)


def contacts(n: int) -> list[dict[str, str]]:
    return [{"email": f"kontakt{i:05d}@gmina{i:05d}.example.pl", "imie": f"Łucja{i}",
             "nazwisko": f"Żółkiewska{i}", "stanowisko": "Naczelnik Wydziału",
             "miasto": f"Miasto {i}"} for i in range(n)]


def make_workspace(root: Path, people: list[dict[str, str]], smtp_port: int,
                   imap_port: int) -> Path:
    """campaign.toml (the repository's, pointed at the sink and Dovecot), templates, the list."""
    text = (REPO / "campaign.toml").read_text(encoding="utf-8")
    for section, key, value in [
        ("campaign", "recipients", '["recipients/chaos.csv"]'),
        ("smtp", "port", str(smtp_port)), ("smtp", "connections", str(CONNECTIONS)),
        ("imap", "port", str(imap_port)), ("imap", "username", f'"{IMAP_USER}"'),
        ("imap", "poll_seconds", "1"),
    ]:
        text = set_key(text, section, key, value)
    root.mkdir(parents=True)
    (root / "campaign.toml").write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "recipients").mkdir()
    with open(root / "recipients" / "chaos.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(people[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(people)
    return root / "campaign.toml"


# -- the replies ------------------------------------------------------------------------------

def reply_bytes(address: str, invitation_id: str, number: int) -> bytes:
    """A filled form, as a mail client writes a reply to the invitation."""
    name = f"Jan Kowalski{number}"
    msg = EmailMessage()
    msg["From"] = f"{name} <{address}>"
    msg["To"] = "rejestracja@example.com"
    msg["Subject"] = "Re: Zaproszenie: warsztat „Smart City” i nabór miast do PIM"
    msg["Message-ID"] = f"<chaos.{number}.{address}>"
    msg["Date"] = "Tue, 20 Oct 2020 12:00:00 +0200"
    if invitation_id:
        msg["In-Reply-To"] = invitation_id
        msg["References"] = invitation_id
    msg.set_content(FORM.format(name=name, city=f"Urząd Miasta {number}", email=address))
    return msg.as_bytes()


class Feeder(threading.Thread):
    """APPENDs the replies at a steady rate, each from a different contact seen invited."""

    def __init__(self, port: int, sink: Sink, total: int, interval: float, seed: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self.port = port
        self.sink = sink
        self.total = total
        self.interval = interval
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.senders: list[str] = []
        self.errors = 0
        self.client: imaplib.IMAP4 | None = None

    def run(self) -> None:
        try:
            while len(self.senders) < self.total and not self.stop.is_set():
                invited = self.sink.invited()
                used = set(self.senders)
                fresh = sorted(a for a in invited if a not in used)
                if not fresh:
                    self.stop.wait(0.05)
                    continue
                address = self.rng.choice(fresh)
                received = FIRST_REPLY + timedelta(seconds=self.rng.uniform(0, REPLY_SPAN))
                data = reply_bytes(address, invited[address], len(self.senders))
                self._append(data, received)
                self.senders.append(address)
                self.stop.wait(self.interval)
        finally:
            self._logout()

    def _append(self, data: bytes, received: datetime) -> None:
        while True:
            try:
                if self.client is None:
                    self.client = imaplib.IMAP4("127.0.0.1", self.port)
                    self.client.login(IMAP_USER, PASSWORD)
                status, detail = self.client.append("INBOX", "",
                                                    imaplib.Time2Internaldate(received), data)
                if status == "OK":
                    return
                raise imaplib.IMAP4.error(str(detail))
            except (OSError, imaplib.IMAP4.error):
                self.errors += 1
                self._logout()
                if self.errors > 50:
                    raise
                time.sleep(0.2)

    def _logout(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()

    @property
    def done(self) -> bool:
        return len(self.senders) >= self.total


# -- the crash loop ---------------------------------------------------------------------------

class StateProbe:
    """Opens `state/` read-only, as `mailer status` does, and checks what it shows.

    It must load; whatever it records as sent must be at the sink (recorded only after the
    server accepted it); and no fact shown once (a delivery or answer sent, a message read, a
    registration) may be missing later: a crash leaves the old state or the new, never less.
    Loads are serialised, so "later" is well defined between the two threads that probe.
    """

    def __init__(self, folder: Path, sink: Sink) -> None:
        self.folder = folder
        self.sink = sink
        self.lock = threading.Lock()
        self.loads = 0
        self.failures: list[str] = []
        self.lost: set[str] = set()  # recorded as sent, never at the sink
        self.forgotten: set[str] = set()  # shown once, missing later
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def probe(self, when: str) -> Store | None:
        with self.lock:
            try:
                store = Store.open(self.folder, writer=False)
            except Exception as err:  # any failure to load is what this counts
                self.failures.append(f"{when}: {type(err).__name__}: {err}")
                return None
            self.loads += 1
            invitations, answers = self.sink.snapshot()  # after the load: a superset
            facts: set[str] = set()
            for doc in store.all(DELIVERIES):
                if doc.get("status") == "sent":
                    facts.add(f"delivery {doc['key']}")
                    if doc["email"].lower() not in invitations:
                        self.lost.add(f"invitation {doc['email']} ({when})")
            for doc in store.all(ANSWERS):
                if doc.get("status") == "sent":
                    facts.add(f"answer {doc['key']}")
                    if doc["to"].lower() not in answers:
                        self.lost.add(f"answer {doc['to']} ({when})")
            facts.update(f"{table} {key}" for table in (INBOUND, REGISTRATIONS)
                         for key in store.keys(table))
            self.forgotten |= {f"{fact} ({when})" for fact in self.seen - facts}
            self.seen |= facts
            return store

    def keep_reading(self, every: float) -> threading.Thread:
        """A reader thread probing while the service runs (reading commands must work)."""

        def loop() -> None:
            pause = every
            while not self.stop.wait(pause):
                t0 = time.monotonic()
                self.probe("while running")
                # A load of a large state costs a CPU for a while: leave the service most.
                pause = max(every, 2 * (time.monotonic() - t0))

        thread = threading.Thread(target=loop, name="reader", daemon=True)
        thread.start()
        return thread


@dataclass
class Figures:
    """What the campaign counted along the way."""

    kills: int = 0
    phases: Counter[str] = field(default_factory=Counter)  # what each killed run was doing
    early_exits: list[int] = field(default_factory=list)
    final_exit: int | None = None
    final_seconds: float = 0.0
    kill_seconds: float = 0.0


@dataclass
class Chaos:
    """One campaign: the servers, the workspace, the service under test."""

    args: argparse.Namespace
    root: Path
    sink: Sink
    config: Path
    feeder: Feeder
    rng: random.Random
    started: float
    probe: StateProbe
    figures: Figures = field(default_factory=Figures)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def deadline(self) -> float:
        return self.started + float(self.args.max_seconds)

    def start_run(self, label: str, log_name: str = "runs.log") -> subprocess.Popen[bytes]:
        env = {**os.environ, "MAILER_CONFIG": str(self.config), "MAILER_NOW": REHEARSAL,
               "MAILER_IMAP_PASSWORD": PASSWORD}
        with open(self.root / log_name, "ab") as log:
            log.write(f"==== {label}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "mailer", "run"], env=env,
                                         cwd=self.config.parent, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        return self.proc

    def kill_loop(self) -> None:
        # Leave a quarter of the time (at least a minute) to the final run.
        stop_at = self.deadline - max(60.0, self.args.max_seconds / 4)
        t0 = time.monotonic()
        for n in range(self.args.kills):
            if time.monotonic() > stop_at:
                print(f"  time is up after {n} kills", flush=True)
                break
            before = self.sink.snapshot()
            offset = (self.root / "runs.log").stat().st_size if n else 0
            proc = self.start_run(f"run {n + 1}")
            try:
                proc.wait(self.rng.uniform(self.args.kill_min, self.args.kill_max))
                self.figures.early_exits.append(proc.returncode)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.figures.kills += 1
                self.figures.phases[self._phase(before, offset)] += 1
            self.proc = None
            self.probe.probe(f"after kill {n + 1}")
            if (n + 1) % 25 == 0:
                self._progress(n + 1)
        self.figures.kill_seconds = time.monotonic() - t0

    def _phase(self, before: tuple[Counter[str], Counter[str]], offset: int) -> str:
        """What the killed run was doing: from what the sink got and what the run logged."""
        invitations, answers = self.sink.snapshot()
        if sum(answers.values()) > sum(before[1].values()):
            return "answering"
        if sum(invitations.values()) > sum(before[0].values()):
            return "sending invitations"
        with open(self.root / "runs.log", "rb") as log:
            log.seek(offset)
            text = log.read()
        if WATCHING in text:
            return "reading the inbox"
        return "starting (imports, loading the state)"

    def _progress(self, n: int) -> None:
        invitations, answers = self.sink.snapshot()
        print(f"  {n} kills, {time.monotonic() - self.started:.0f} s: {len(invitations)} "
              f"invited, {len(self.feeder.senders)} replies appended, {len(answers)} answered",
              flush=True)

    def final_run(self) -> None:
        """One run left alone until everything is done (or time is up), then SIGTERM."""
        t0 = time.monotonic()
        proc = self.start_run("final run", "final.log")
        limit = self.deadline - FINAL_STOP_SECONDS
        # Until it watches the inbox (its SIGTERM handler is installed by then) and all is done.
        while time.monotonic() < limit and proc.poll() is None and not (
                self._watching() and self._all_done()):
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(FINAL_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.figures.final_exit = proc.returncode
        self.figures.final_seconds = time.monotonic() - t0
        self.proc = None

    def _watching(self) -> bool:
        return WATCHING in (self.root / "final.log").read_bytes()

    def _all_done(self) -> bool:
        if not self.feeder.done:
            return False
        invitations, answers = self.sink.snapshot()
        return (len(invitations) >= self.args.contacts
                and all(s in answers for s in self.feeder.senders))


# -- the verdict ------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def verdict(chaos: Chaos, store: Store | None) -> list[Check]:
    args, f, probe = chaos.args, chaos.figures, chaos.probe
    invitations, answers = chaos.sink.snapshot()
    senders = set(chaos.feeder.senders)
    inv_dups = sum(invitations.values()) - len(invitations)
    ans_dups = sum(answers.values()) - len(answers)
    registrations, inbound, recorded = _state_counts(store, senders)
    checks = [
        Check("kills", f.kills >= args.kills and not f.early_exits,
              f"{f.kills} of {args.kills} asked; {len(f.early_exits)} runs ended by "
              f"themselves {f.early_exits[:5]}"),
        Check("invited", len(invitations) == args.contacts,
              f"{len(invitations)} of {args.contacts} contacts, {sum(invitations.values())} "
              f"copies; recorded sent {recorded['deliveries']}"),
        Check("invitation duplicates", inv_dups <= f.kills * CONNECTIONS,
              f"{inv_dups} (allowed ≤ kills × connections = {f.kills * CONNECTIONS}); "
              f"contacts with >1 copy {sum(1 for n in invitations.values() if n > 1)}"),
        Check("replies appended", len(senders) == args.replies,
              f"{len(senders)} of {args.replies} (IMAP errors {chaos.feeder.errors})"),
        Check("registered once", registrations == len(senders) and inbound == len(senders),
              f"{registrations} registrations (unique by sender, one message each), "
              f"{inbound} inbound records of {len(senders)} replies"),
        Check("answered", senders <= set(answers) and set(answers) <= senders
              and recorded["answers"] == len(senders),
              f"{sum(answers.values())} copies to {len(answers)} addresses "
              f"({len(set(answers) - senders)} not among the senders); "
              f"recorded sent {recorded['answers']}"),
        Check("answer duplicates", ans_dups <= f.kills,
              f"{ans_dups} (allowed ≤ kills = {f.kills}); "
              f"addresses with >1 copy {sum(1 for n in answers.values() if n > 1)}"),
        Check("nothing recorded that was not sent", not probe.lost,
              f"{len(probe.lost)} {sorted(probe.lost)[:3]}"),
        Check("state loads", store is not None and not probe.failures,
              f"{len(probe.failures)} failures in {probe.loads + len(probe.failures)} "
              f"read-only loads (after each kill, at the end, and while the service runs) "
              f"{probe.failures[:3]}"),
        Check("nothing shown is lost later", not probe.forgotten,
              f"{len(probe.forgotten)} facts {sorted(probe.forgotten)[:3]}"),
        Check("final run stops on SIGTERM", f.final_exit == 0,
              f"exit {f.final_exit} after {f.final_seconds:.1f} s"),
        audit_check(chaos.config.parent / "state", store, f.kills),
    ]
    return checks


def audit_check(folder: Path, store: Store | None, kills: int) -> Check:
    """README: the audit log has every send, receipt and answer. A kill may lose only the
    entries of what was in flight (recorded in the journal, not yet in the log); a message
    read again after a kill must not be logged as received twice."""
    sends: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    receipts: Counter[str] = Counter()
    for entry in AuditLog(folder).entries():
        if entry["action"] == "send" and entry.get("status") == "sent":
            sends[str(entry["to"]).lower()] += 1
        elif entry["action"] == "answer" and entry.get("status") == "sent":
            answered[str(entry["to"]).lower()] += 1
        elif entry["action"] == "receive":
            receipts[str(entry["message"])] += 1
    docs = store.all if store is not None else (lambda table: [])
    no_send = [d for d in docs(DELIVERIES) if d.get("status") == "sent"
               and d["email"].lower() not in sends]
    no_answer = [d for d in docs(ANSWERS) if d.get("status") == "sent"
                 and d["to"].lower() not in answered]
    no_receipt = [d for d in docs(INBOUND) if d["key"] not in receipts]
    twice = sum(1 for n in receipts.values() if n > 1)
    ok = (len(no_send) <= kills * CONNECTIONS and len(no_answer) <= kills
          and len(no_receipt) <= kills and not twice)
    return Check("audit log", ok,
                 f"missing: {len(no_send)} sends (allowed ≤ {kills * CONNECTIONS}), "
                 f"{len(no_answer)} answers (≤ {kills}), {len(no_receipt)} receipts "
                 f"(≤ {kills}); messages logged as received twice: {twice}")


def _state_counts(store: Store | None, senders: set[str]) -> tuple[int, int, Counter[str]]:
    """(registrations made by exactly one message, inbound records of the replies, sent)."""
    recorded: Counter[str] = Counter()
    if store is None:
        return 0, 0, recorded
    once = {d["sender"] for d in store.all(REGISTRATIONS)
            if d.get("sender") in senders and d.get("status") == "complete"
            and len(d.get("messages", [])) == 1 and not d.get("history")}
    inbound = sum(1 for d in store.all(INBOUND) if d.get("sender") in senders)
    recorded["deliveries"] = sum(1 for d in store.all(DELIVERIES) if d.get("status") == "sent")
    recorded["answers"] = sum(1 for d in store.all(ANSWERS)
                              if d.get("status") == "sent" and d.get("to") in senders)
    return len(once), inbound, recorded


# -- main -------------------------------------------------------------------------------------

def dovecot_class() -> Any:
    """tests/dovecot.py's Dovecot (the repository on sys.path)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("tests.dovecot").Dovecot


@contextlib.contextmanager
def servers(root: Path) -> Iterator[tuple[Sink, int, int]]:
    """(sink, SMTP port, IMAP port): the recording aiosmtpd and a private Dovecot."""
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    root.chmod(0o755)  # Dovecot's users must reach its folder inside
    (root / "dovecot").mkdir()
    dovecot = dovecot_class()(root / "dovecot", password=PASSWORD)
    controller.start()
    try:
        dovecot.start()
        yield sink, smtp_port, dovecot.port
    finally:
        dovecot.stop()
        controller.stop()


def campaign(args: argparse.Namespace, root: Path) -> int:
    started = time.monotonic()
    with servers(root) as (sink, smtp_port, imap_port):
        config = make_workspace(root / "campaign", contacts(args.contacts), smtp_port,
                                imap_port)
        # Spread the replies over about 60 % of the expected kill loop.
        cycle = (args.kill_min + args.kill_max) / 2 + 0.15
        interval = max(0.0, 0.6 * args.kills * cycle / max(args.replies, 1))
        feeder = Feeder(imap_port, sink, args.replies, interval, args.seed + 1)
        probe = StateProbe(config.parent / "state", sink)
        chaos = Chaos(args, root, sink, config, feeder, random.Random(args.seed), started,
                      probe)
        print(f"chaos: {args.kills} kills, {args.contacts} contacts, {args.replies} replies "
              f"(one every {interval:.2f} s), seed {args.seed}, at most {args.max_seconds} s; "
              f"in {root}", flush=True)
        feeder.start()
        reader = probe.keep_reading(READ_EVERY)
        try:
            chaos.kill_loop()
            chaos.final_run()
        finally:
            if chaos.proc is not None and chaos.proc.poll() is None:
                chaos.proc.kill()
                chaos.proc.wait()
            feeder.stop.set()
            probe.stop.set()
            feeder.join(10)
            reader.join(10)
        checks = verdict(chaos, probe.probe("at the end"))
    print_report(chaos, checks, time.monotonic() - started)
    return 0 if all(c.ok for c in checks) else 1


def print_report(chaos: Chaos, checks: list[Check], wall: float) -> None:
    f = chaos.figures
    print(f"\nkill loop {f.kill_seconds:.1f} s ({f.kills} kills), final run "
          f"{f.final_seconds:.1f} s, wall time {wall:.1f} s")
    print("  killed while " + ", ".join(f"{phase} {n}" for phase, n in f.phases.most_common()))
    for check in checks:
        print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [c.name for c in checks if not c.ok]
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--replies", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--kill-min", type=float, default=0.05,
                        help="earliest kill, seconds after the start of `mailer run`")
    parser.add_argument("--kill-max", type=float, default=1.5, help="latest kill")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.replies > args.contacts:
        parser.error("--replies cannot exceed --contacts (one reply per invited contact)")
    if not shutil.which("dovecot"):
        print("dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="mailer-chaos-"))
    try:
        return campaign(args, root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
