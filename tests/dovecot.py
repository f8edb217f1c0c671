"""A private Dovecot for the tests: own config (-c), 127.0.0.1, a free port, a temp Maildir."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.system import missing

CONFIG = """\
protocols = imap
listen = 127.0.0.1
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Every user name logs in with the one password: a test takes a fresh mailbox by naming it
# (a rewritten passwd-file within the same second would not be re-read).
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={root}/home/%n
}}
mail_location = maildir:~/Maildir
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class DovecotMissing(RuntimeError):
    """Dovecot (or its vmail user) is not installed: scripts/setup installs it as root, so this
    fails with the command to run, never skips."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_vmail() -> None:
    """The unprivileged owner of the mail (Dovecot refuses to deliver as root)."""
    try:
        pwd.getpwnam("vmail")
    except KeyError:
        if os.geteuid() != 0:
            raise DovecotMissing(
                missing("the vmail user (Dovecot's mail owner) does not exist")) from None
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "vmail"], check=True)


@dataclass
class Dovecot:
    """One Dovecot instance under `root`, listening on 127.0.0.1:`port`."""

    root: Path
    port: int = field(default_factory=_free_port)
    password: str = "sekret"

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def start(self) -> None:
        if not shutil.which("dovecot"):
            raise DovecotMissing(missing("dovecot is not installed (Debian: dovecot-imapd)"))
        ensure_vmail()
        # The dovecot and vmail users must traverse to the users file and the Maildir.
        self.root.chmod(0o755)
        for sub in ("run", "state", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "home", "vmail", "vmail")
        self.config.write_text(CONFIG.format(root=self.root, port=self.port,
                                             instance=f"mailer-test-{self.port}",
                                             password=self.password))
        # Dovecot keeps the caller's stderr open: never let it inherit a pipe.
        with open(self.root / "startup.log", "ab") as log:
            subprocess.run(["dovecot", "-c", str(self.config)], stdin=subprocess.DEVNULL,
                           stdout=log, stderr=log, check=True)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start; see {self.root}/dovecot.log")

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().strip())
        subprocess.run(["doveadm", "-c", str(self.config), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, 9)

    def restart(self) -> None:
        self.stop()
        self.start()

    def imap(self, user: str) -> imaplib.IMAP4:
        """A logged-in stdlib IMAP client, for the tests' own look at the mailbox."""
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.login(user, self.password)
        return client

    def append(self, user: str, data: bytes, received: datetime,
               folder: str = "INBOX") -> None:
        """Deliver `data` with the INTERNALDATE `received` (what the service reads as arrival)."""
        client = self.imap(user)
        try:
            status, detail = client.append(folder, "", imaplib.Time2Internaldate(received),
                                           data)
            assert status == "OK", detail
        finally:
            client.logout()

    def reset_uidvalidity(self, user: str, value: int, folder: str = "INBOX") -> None:
        """Give the folder a new UIDVALIDITY, as a restored or rebuilt mailbox gets."""
        subprocess.run(["doveadm", "-c", str(self.config), "mailbox", "update",
                        "--uid-validity", str(value), "-u", user, folder],
                       check=True, capture_output=True)
