"""`mailer demo`: the main job end to end against the dev server, in a throwaway workspace.

Everything goes the production way: the newsletter leaves through `mailer send` over SMTP, the
officials read it from their mailboxes over IMAP, their replies reach the reply inbox over
IMAP APPEND (what a server delivering a message does) with the arrival time each case needs,
and `mailer watch --once` reads, registers and answers over IMAP and SMTP into the state.
The campaign keeps its own dates; every command runs on the rehearsal clock `MAILER_NOW`.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from mailer.contacts import read_contacts
from mailer.dev import script as write
from mailer.dev.devserver import DEFAULT_PASSWORD, HOST, plain_address
from mailer.dev.script import Cast, DemoError, Official, Received, Timeline
from mailer.models import ANSWERS, INBOUND
from mailer.report import (
    cities_table,
    city_status,
    format_table,
    plural,
    registration_rows,
    registrations_table,
)
from mailer.settings import Settings, load_settings
from mailer.store import Doc, open_state

Echo = Callable[[str], None]
STEP_TIMEOUT = 60  # seconds for one `mailer` command
READY_TIMEOUT = 20  # seconds for the dev server to listen

DEMO_SECTIONS = """
[smtp]
# The demo's dev server (mailer devserver), on 127.0.0.1 only.
host = "{host}"
port = {smtp_port}
security = "none"
username = ""
connections = 4
timeout = 10

[imap]
host = "{host}"
port = {imap_port}
security = "none"
username = "{login}"
password_env = "MAILER_IMAP_PASSWORD"
folder = "INBOX"
poll_seconds = 5

[storage]
path = "state"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_workspace(source: Settings, root: Path, *, smtp_port: int, imap_port: int) -> Path:
    """Copy the campaign, its templates and contact lists; point SMTP/IMAP at the dev server."""
    base = source.path.parent
    for path in (source.templates_dir, *source.campaign.recipients):
        try:
            # abspath, not resolve(): the checkout's templates/ is a symlink into the package
            relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
        except ValueError as err:
            raise DemoError(f"{path}: the demo copies only files beside {source.path}") from err
        if path.is_dir():
            shutil.copytree(path, root / relative)
        else:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, root / relative)
    text = _without_sections(source.path.read_text(encoding="utf-8"), {"smtp", "imap", "storage"})
    config = root / "campaign.toml"
    config.write_text(text.rstrip() + "\n" + DEMO_SECTIONS.format(
        host=HOST, smtp_port=smtp_port, imap_port=imap_port, login=source.imap.username),
        encoding="utf-8")
    return config


def _without_sections(text: str, names: set[str]) -> str:
    """The TOML text without the tables in `names` (comments elsewhere survive)."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\s*\[\[?\s*([A-Za-z0-9_-]+)", line)
        if header:
            skipping = header.group(1) in names
        if not skipping:
            kept.append(line)
    return "".join(kept)


def _local(moment: datetime, settings: Settings) -> str:
    return f"{moment.astimezone(settings.campaign.timezone):%a %d %b %Y %H:%M %Z}"


class Demo:
    """One run: a workspace, a dev server process, the commands, the officials, the report."""

    def __init__(self, source_config: Path, root: Path, echo: Echo) -> None:
        self.echo = echo
        self.root = root
        self.smtp_port, self.imap_port = free_port(), free_port()
        self.source = source_config
        source = load_settings(source_config)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.config = make_workspace(source, root, smtp_port=self.smtp_port,
                                     imap_port=self.imap_port)
        self.settings = load_settings(self.config)
        self.contacts = read_contacts(self.settings.campaign.recipients).contacts
        self.cast = Cast.of(self.contacts, self.settings)
        self.times = Timeline.around(self.settings)
        self.inbox_login = self.settings.imap.username
        self.server: subprocess.Popen[bytes] | None = None
        self.steps = 0

    # -- processes ---------------------------------------------------------------------------

    def _env(self, now: datetime | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAILER_NOW", "MAILER_CONFIG", "MAILER_SMTP_PASSWORD")}
        env[self.settings.imap.password_env] = DEFAULT_PASSWORD
        if now is not None:
            env["MAILER_NOW"] = now.astimezone(self.settings.campaign.timezone).isoformat()
        return env

    def mailer(self, *args: str, now: datetime) -> str:
        """Run one real `mailer` command in the workspace; its stdout, indented, is shown."""
        self.steps += 1
        log = self.root / "logs" / f"{self.steps:02d}-{args[0]}.log"
        self.echo(f"\n  $ MAILER_NOW={self._env(now)['MAILER_NOW']} mailer {' '.join(args)}")
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "-c", str(self.config), *args],
            cwd=self.root, env=self._env(now), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT, check=False)
        log.write_text(result.stdout + result.stderr, encoding="utf-8")
        for line in result.stdout.strip().splitlines():
            self.echo(f"    {line}")
        if result.returncode != 0:
            raise DemoError(f"`mailer {' '.join(args)}` exited {result.returncode}: "
                            f"{result.stderr.strip()[-500:]}", hint=f"the whole log: {log}")
        return result.stdout

    @contextmanager
    def devserver(self) -> Iterator[None]:
        """`mailer devserver` as a child process; stopped like Ctrl-C, killed if it lingers."""
        log_path = self.root / "logs" / "devserver.log"
        command = [sys.executable, "-m", "mailer", "-c", str(self.config), "devserver",
                   "--smtp-port", str(self.smtp_port), "--imap-port", str(self.imap_port),
                   "--dir", str(self.root / "devmail"), "--bounce", self.cast.bounced.email]
        with open(log_path, "wb") as log:
            self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=self._env(None))
        try:
            self._wait_ready(log_path)
            yield
        finally:
            self._stop_server()

    def _wait_ready(self, log_path: Path) -> None:
        assert self.server is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if b"ready" in log_path.read_bytes():
                return
            if self.server.poll() is not None:
                break
            time.sleep(0.05)
        raise DemoError("the dev server did not start: "
                        + log_path.read_text(errors="replace").strip()[-500:],
                        hint=f"its log: {log_path}")

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is None or server.poll() is not None:
            return
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # -- the officials' mail clients ---------------------------------------------------------

    @contextmanager
    def imap(self, login: str) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4(HOST, self.imap_port, timeout=10)
        try:
            client.login(login, DEFAULT_PASSWORD)
            client.select("INBOX")
            yield client
        finally:
            client.logout()

    def read_mail(self, official: Official) -> list[Received]:
        """What is in an official's mailbox, oldest first (read over IMAP, as a client does)."""
        with self.imap(official.email) as client:
            status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        if status != "OK":
            raise DemoError(f"cannot read the mailbox of {official.email}: {data!r}")
        return [Received.parse(part[1]) for part in data if isinstance(part, tuple)]

    def invitation(self, official: Official) -> Received:
        mail = self.read_mail(official)
        if not mail:
            raise DemoError(f"the newsletter did not reach {official.email}")
        return mail[0]

    def deliver(self, raw: bytes, when: datetime, what: str) -> None:
        """Put a reply into the reply inbox with its arrival time (INTERNALDATE)."""
        with self.imap(self.inbox_login) as client:
            status, detail = client.append("INBOX", "", imaplib.Time2Internaldate(when), raw)
        if status != "OK":
            raise DemoError(f"APPEND of {what} refused: {detail!r}")
        self.echo(f"    {_local(when, self.settings)}  {what}")

    # -- the story ---------------------------------------------------------------------------

    def run(self) -> None:
        t = self.times
        self.echo(f"Workspace: {self.root} (a copy of {self.source}, its templates and "
                  f"{plural(len(self.contacts), 'contact', 'contacts')})")
        self.echo("Clock: the campaign keeps its own dates; each command runs on the "
                  "rehearsal clock MAILER_NOW. The officials' replies reach the "
                  "inbox by IMAP APPEND with the arrival time each case needs.")
        with self.devserver():
            self.echo(f"\n1. Dev mail server: SMTP {HOST}:{self.smtp_port}, IMAP "
                      f"{HOST}:{self.imap_port} (child process `mailer devserver`)")
            self.echo(f"\n2. {_local(t.send, self.settings)}: check and send the newsletter")
            self.mailer("check", now=t.send)
            self.mailer("send", "--yes", now=t.send)
            self._first_replies()
            self.mailer("watch", "--once", now=t.first_pass)
            self._correction()
            self.mailer("watch", "--once", now=t.second_pass)
            self._late_reply()
            self.mailer("watch", "--once", now=t.third_pass)
        self.echo("\nThe dev server has stopped; nothing of the demo is running.")
        self._report()
        self._paths()

    def _first_replies(self) -> None:
        c, t = self.cast, self.times
        self.echo(f"\n3. The officials answer (they read the newsletter from their mailboxes); "
                  f"the watcher runs {_local(t.first_pass, self.settings)}")
        self.deliver(write.out_of_office(c.out_of_office, self.invitation(c.out_of_office),
                                         t.out_of_office),
                     t.out_of_office, f"{c.out_of_office.city}: out-of-office auto-reply")
        form = write.form(c.on_time, phone="58 668 80 00")
        self.deliver(write.gmail_reply(c.on_time, self.invitation(c.on_time),
                                       f"Dzień dobry,\n\nzgłaszam się na oba wydarzenia.\n\n"
                                       f"{form}\nPozdrawiam\n{c.on_time.name}", t.on_time),
                     t.on_time, f"{c.on_time.city}: registration on time for both events")
        self.deliver(write.gmail_unsubscribe(c.unsubscribe, self.invitation(c.unsubscribe),
                                             t.unsubscribe),
                     t.unsubscribe, f"{c.unsubscribe.city}: unsubscribe (Gmail's button)")
        self._two_people()
        # The city, the name or the position the contact list would fill (issue 13): what is
        # missing here is the choice of events, which only the official can make.
        text = (f"Dzień dobry,\n\nzgłaszam udział.\n\n{write.form(c.incomplete, event='')}\n"
                f"Z poważaniem\n{c.incomplete.name}")
        self.deliver(write.gmail_reply(c.incomplete, self.invitation(c.incomplete), text,
                                       t.incomplete),
                     t.incomplete, f"{c.incomplete.city}: registration without the events")
        self.echo(f"    (and the invitation to {c.bounced.email} bounced during `send`: the dev "
                  "server returned a DSN to the envelope sender, the reply inbox, stamped with "
                  "today's real time as any server would)")

    def _two_people(self) -> None:
        c, t = self.cast, self.times
        official = c.two_people
        colleague = write.form(official, event="warsztat", name="Tadeusz Wróbel",
                               email=f"t.wrobel@{official.domain}", phone="58 323 60 00")
        text = (f"Dzień dobry,\n\nprzesyłam zgłoszenia dwóch osób z naszego urzędu.\n\n"
                f"{write.form(official)}\n{colleague}\nZ poważaniem\n{official.name}")
        self.deliver(write.outlook_reply(official, self.invitation(official), text,
                                         t.two_people),
                     t.two_people, f"{official.city}: two people in one reply (Outlook)")

    def _correction(self) -> None:
        c, t = self.cast, self.times
        self.echo(f"\n4. {c.incomplete.city} reads the answer asking for the events and replies "
                  f"in the thread; the watcher runs {_local(t.second_pass, self.settings)}")
        answers = [m for m in self.read_mail(c.incomplete) if m.message_id
                   and m.subject.lower().startswith("re:")]
        if not answers:
            raise DemoError(f"no answer reached {c.incomplete.email}")
        text = (f"Dzień dobry,\n\nprzepraszam, uzupełniam:\n\n"
                f"Wydarzenie: oba\n\nPozdrawiam\n{c.incomplete.name}")
        self.deliver(write.thunderbird_reply(c.incomplete, answers[-1], text, t.correction),
                     t.correction, f"{c.incomplete.city}: the missing events, in the thread")

    def _late_reply(self) -> None:
        c, t = self.cast, self.times
        self.echo(f"\n5. After the workshop's deadline; the watcher runs "
                  f"{_local(t.third_pass, self.settings)}")
        text = (f"Dzień dobry,\n\nprzepraszam za późną odpowiedź, zgłaszam się.\n\n"
                f"{write.form(c.late)}\nPozdrawiam\n{c.late.name}")
        self.deliver(write.gmail_reply(c.late, self.invitation(c.late), text, t.late),
                     t.late, f"{c.late.city}: registration for both, late for the workshop")

    def _table(self, title: str, lines: list[str]) -> None:
        self.echo(f"\n{title}")
        for line in lines:
            self.echo(f"  {line}")

    def _report(self) -> None:
        """The registrations, what came in and what it got, and the per-city status."""
        events = [e.id for e in self.settings.events]
        with open_state(self.settings.storage, writer=False) as store:
            people = registration_rows(store)
            cities = city_status(self.contacts, store)
            inbound = sorted(store.all(INBOUND), key=lambda d: str(d["received"]))
            answers = {a["inbound"]: a for a in store.all(ANSWERS)}
        self._table("Registrations", registrations_table(people, events))
        self._table("The reply inbox, as the watcher read it", format_table(
            ["received", "from", "kind", "answer"],
            [[self._received(d), d["sender"], d["kind"], _answer(answers.get(d["key"]))]
             for d in inbound]))
        self._table("Cities (one row per invited city)", cities_table(cities, events))

    def _received(self, doc: Doc) -> str:
        return _local(datetime.fromisoformat(doc["received"]), self.settings)

    def _paths(self) -> None:
        mail = self.root / "devmail"
        reply_inbox = plain_address(self.settings.campaign.reply_to) or self.inbox_login
        self.echo("\nWhere to look")
        self.echo(f"  the campaign:           {self.config}")
        self.echo(f"  mail as delivered:      {mail}/<address>/{{new,cur}} (one Maildir each: "
                  "the newsletter and the answers sit in the officials' mailboxes)")
        self.echo(f"  the reply inbox:        {mail / reply_inbox}")
        self.echo(f"  state:                  {self.root / 'state'} (journal, TinyDB, "
                  "messages/*.eml as received)")
        self.echo(f"  each command's output:  {self.root / 'logs'}")


def _answer(doc: Doc | None) -> str:
    return f"{doc['template']} ({doc['status']})" if doc else "-"


def run_demo(source_config: Path, root: Path | None, echo: Echo) -> Path:
    """Play the whole flow; returns the workspace (kept for looking at, nothing running)."""
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="mailer-demo-"))
    elif root.exists() and any(root.iterdir()):
        raise DemoError(f"{root} is not empty", hint="give --dir a new or empty folder")
    started = time.monotonic()
    Demo(source_config, root, echo).run()
    echo(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return root
