#!/usr/bin/env python3
"""Crash campaign: `mailer run` killed with SIGKILL at random instants while replies arrive.

    .venv/bin/python bench/chaos.py [--kills 200] [--contacts 2000] [--replies 600]
                                    [--seed N] [--max-seconds 600] [--keep]
                                    [--kill-min 0.05] [--kill-max 1.5] [--fold-every 10]
                                    [--fold-kills 0.3]

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
exit 0. Each kill is labelled by the last line the killed run logged (starting, sending
invitations, recording replies, answering, folding the journal, …). The service runs with
$MAILER_FOLD_EVERY=--fold-every (a test-only knob of mailer.store: fold the journal into
TinyDB's file every N lines instead of 20,000), and --fold-kills of the kills are aimed at a
fold (SIGKILL as soon as the run logs that one starts, if before the drawn instant), so kills
land inside folds too.

Checks (exit 1 if one fails, 2 if the benchmark cannot run):
  - every contact invited; per kill, invitations the sink accepted and the state does not
    record as sent (each one sent again later: a duplicate) ≤ [smtp] connections (in flight);
    copies beyond one ≤ the sum of those;
  - every reply registered exactly once (one inbound record, one registration naming only that
    message, no history) and answered: per kill, answers accepted and not recorded ≤ 1 (the
    one in flight); copies beyond one ≤ the sum of those;
  - nothing recorded as sent that the sink did not accept; no answer to anyone else;
  - `state/` always loads and never loses a fact it showed; the final run exits 0 on SIGTERM;
  - the audit log holds every send, receipt and answer the state records, each once;
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
from common import free_port, in_scratch_folder  # bench/ is the script folder

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
FOLD_EVERY = 10  # journal lines between folds in the benchmark ($MAILER_FOLD_EVERY)
LOG_LINE = re.compile(r"^\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")
# A killed run is labelled by the last line it logged: (logger, start of the message, label).
FOLDING, FOLDED = "journal at ", "journal folded"  # mailer.store's lines around a fold
FOLD_MARK = b"mailer.store: journal at "
FOLD_KILLS = 0.3  # share of the kills aimed at a fold: killed as soon as one is logged
LABELS = [
    ("mailer.campaign", "", "sending invitations"),
    ("mailer", "invitations: ", "invitations sent, connecting to the inbox"),
    ("mailer.watcher", "connected to ", "connected, fetching"),
    ("mailer", "watching ", "connected, fetching"),
    ("mailer.reading.workers", "", "reading replies"),
    ("mailer.watcher", "uid ", "recording replies"),
    ("mailer.watcher", "no answer to ", "recording replies"),
    ("mailer.respond", "answer ", "answering"),
    ("mailer.watcher", "", "waiting for news (IDLE or poll)"),
    ("mailer", "rehearsal clock", "starting (imports, loading the state)"),
    ("mailer.journal", "", "starting (logging audit entries a kill kept from the log)"),
]

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
        ("answers", "max_per_hour", "1000000"),  # every reply answered within the run
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
    phases: Counter[str] = field(default_factory=Counter)  # the last thing each run logged
    # Per kill: invitations and answers the sink accepted that the state does not record as
    # sent (copies, counted when they appear): each will be sent again, a duplicate.
    unrecorded: list[tuple[int, int]] = field(default_factory=list)
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
    # Accepted copies not recorded as sent, per address, as of the last kill.
    loose: tuple[Counter[str], Counter[str]] = field(
        default_factory=lambda: (Counter(), Counter()))

    @property
    def deadline(self) -> float:
        return self.started + float(self.args.max_seconds)

    def start_run(self, label: str, log_name: str = "runs.log") -> subprocess.Popen[bytes]:
        env = {**os.environ, "MAILER_CONFIG": str(self.config), "MAILER_NOW": REHEARSAL,
               "MAILER_IMAP_PASSWORD": PASSWORD,
               "MAILER_FOLD_EVERY": str(self.args.fold_every)}
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
            offset = (self.root / "runs.log").stat().st_size if n else 0
            proc = self.start_run(f"run {n + 1}")
            killed = False
            if not self._wait_to_kill(proc, offset):
                self.figures.early_exits.append(proc.returncode)
            else:
                proc.kill()
                proc.wait()
                killed = True
                self.figures.kills += 1
                self.figures.phases[self._phase(offset)] += 1
            self.proc = None
            store = self.probe.probe(f"after kill {n + 1}")
            if killed and store is not None:
                self.figures.unrecorded.append(self._new_unrecorded(store))
            if (n + 1) % 25 == 0:
                self._progress(n + 1)
        self.figures.kill_seconds = time.monotonic() - t0

    def _wait_to_kill(self, proc: subprocess.Popen[bytes], offset: int) -> bool:
        """Wait for the instant of the kill: a drawn time, or for --fold-kills of the runs the
        moment the run logs that it starts a fold (if before that time). False when the run
        ended by itself first."""
        deadline = time.monotonic() + self.rng.uniform(self.args.kill_min, self.args.kill_max)
        aim = self.rng.random() < self.args.fold_kills
        with open(self.root / "runs.log", "rb") as log:
            log.seek(offset)
            seen = b""
            while (left := deadline - time.monotonic()) > 0:
                seen = seen[-200:] + log.read()
                if aim and FOLD_MARK in seen:
                    return True
                try:
                    proc.wait(min(left, 0.001) if aim else left)
                    return False
                except subprocess.TimeoutExpired:
                    pass
        return proc.poll() is None

    def _phase(self, offset: int) -> str:
        """Where the kill landed: the last line the killed run logged (from `offset` of
        runs.log), not what the run did at some time before."""
        with open(self.root / "runs.log", "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
        lines = [found.groups() for line in text.splitlines() if (found := LOG_LINE.match(line))]
        if lines and lines[-1][0] == "mailer.store" and lines[-1][1].startswith(FOLDING):
            return "folding the journal"
        # A fold ended: what the run does around it is the line before.
        lines = [(name, text) for name, text in lines
                 if not (name == "mailer.store" and text.startswith((FOLDING, FOLDED)))]
        if not lines:
            return "starting (imports, loading the state)"
        logger, message = lines[-1]
        for name, start, label in LABELS:
            if logger == name and message.startswith(start):
                return label
        return f"after {logger}: {' '.join(message.split()[:3])}"

    def _new_unrecorded(self, store: Store) -> tuple[int, int]:
        """(invitations, answers) the sink accepted since the last kill and the state does
        not record as sent: the ones in flight at this kill, to be sent again."""
        invitations, answers = self.sink.snapshot()  # the run is dead: nothing more arrives
        sent = {d["email"].lower() for d in store.all(DELIVERIES) if d.get("status") == "sent"}
        answered = Counter(d["to"].lower() for d in store.all(ANSWERS)
                           if d.get("status") == "sent")
        loose = (Counter({a: n - (a in sent) for a, n in invitations.items()}),
                 Counter({a: n - answered[a] for a, n in answers.items()}))
        new = tuple(sum((now - before).values()) for now, before in zip(loose, self.loose,
                                                                         strict=True))
        self.loose = (+loose[0], +loose[1])
        return new[0], new[1]

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
    loose_inv = [inv for inv, _ in f.unrecorded]
    loose_ans = [ans for _, ans in f.unrecorded]
    worst_inv, worst_ans = max(loose_inv, default=0), max(loose_ans, default=0)
    checks = [
        Check("kills", f.kills >= args.kills and not f.early_exits,
              f"{f.kills} of {args.kills} asked; {len(f.early_exits)} runs ended by "
              f"themselves {f.early_exits[:5]}"),
        Check("invited", len(invitations) == args.contacts,
              f"{len(invitations)} of {args.contacts} contacts, {sum(invitations.values())} "
              f"copies; recorded sent {recorded['deliveries']}"),
        Check("invitation duplicates",
              worst_inv <= CONNECTIONS and inv_dups <= sum(loose_inv)
              and len(f.unrecorded) == f.kills,
              f"per kill, accepted and not recorded (sent again): at most {worst_inv} "
              f"(allowed ≤ connections = {CONNECTIONS}), {sum(loose_inv)} in all, over "
              f"{len(f.unrecorded)} kills; {inv_dups} copies beyond one (allowed ≤ that sum); "
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
        Check("answer duplicates", worst_ans <= 1 and ans_dups <= sum(loose_ans),
              f"per kill, accepted and not recorded: at most {worst_ans} (allowed ≤ 1, the "
              f"one in flight), {sum(loose_ans)} in all; {ans_dups} copies beyond one "
              f"(allowed ≤ that sum); "
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
        audit_check(chaos.config.parent / "state", store),
    ]
    return checks


def audit_check(folder: Path, store: Store | None) -> Check:
    """README: the audit log has every send, receipt and answer, each once, after any kill:
    its entries are journalled with the facts and a kill's missing ones written at the next
    start (issue 12). So the log and the state agree exactly, fact by fact."""
    logged: dict[str, Counter[str]] = {"send": Counter(), "answer": Counter(),
                                       "receive": Counter()}
    for entry in AuditLog(folder).entries():
        if entry["action"] in ("send", "answer") and entry.get("status") == "sent":
            logged[entry["action"]][str(entry["to"]).lower()] += 1
        elif entry["action"] == "receive":
            logged["receive"][str(entry["message"])] += 1
    docs = store.all if store is not None else (lambda table: [])
    facts = {
        "send": Counter(d["email"].lower() for d in docs(DELIVERIES) if d.get("status") == "sent"),
        "answer": Counter(d["to"].lower() for d in docs(ANSWERS) if d.get("status") == "sent"),
        "receive": Counter(d["key"] for d in docs(INBOUND)),
    }
    missing = {k: sum((facts[k] - logged[k]).values()) for k in facts}
    extra = {k: sum((logged[k] - facts[k]).values()) for k in facts}
    return Check("audit log", store is not None and not any(missing.values())
                 and not any(extra.values()),
                 f"{sum(logged['send'].values())} sends, {sum(logged['receive'].values())} "
                 f"receipts, {sum(logged['answer'].values())} answers logged; missing "
                 f"(allowed 0): {missing}; logged twice or without the fact (allowed 0): {extra}")


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
    print("  killed after logging: " + ", ".join(f"{phase} {n}"
                                                 for phase, n in f.phases.most_common()))
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
    parser.add_argument("--fold-every", type=int, default=FOLD_EVERY,
                        help="journal lines between folds ($MAILER_FOLD_EVERY of the service)")
    parser.add_argument("--fold-kills", type=float, default=FOLD_KILLS,
                        help="share of the kills aimed at the start of a fold")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.replies > args.contacts:
        parser.error("--replies cannot exceed --contacts (one reply per invited contact)")
    if not shutil.which("dovecot"):
        print("dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 2
    return in_scratch_folder("mailer-chaos-", args.keep, lambda root: campaign(args, root))


if __name__ == "__main__":
    sys.exit(main())
