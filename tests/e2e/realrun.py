"""State for the web tests made the production way: invitations over SMTP (aiosmtpd), replies
appended to a real Dovecot, `mailer watch --once` reading, registering and answering them."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.conftest import CAMPAIGN, REPO, SmtpSink, Workspace, contact_rows, free_port
from tests.dovecot import Dovecot
from tests.test_inbox import BETWEEN, ON_TIME, form, reply

# contact_rows(5): osoba0 Łódź, osoba1 Gdańsk, osoba2 Kraków, osoba3 Wrocław, osoba4 Poznań
ZOFIA = ("Zofia Przybylska-Wrzos", "osoba2@miasto2.example.com")  # on time, both events
ADAM = ("Adam Nowak", "osoba3@miasto3.example.com")  # after the workshop's deadline
# A form with a mistyped e-mail (the city, left out, is the contact's office: issue 13).
INCOMPLETE = "osoba1@miasto1.example.com"
QUESTION = "osoba4@miasto4.example.com"  # not understood: waits for review
REQUEST = "osoba0@miasto0.example.com"  # not understood either
WEB_NOW = "2020-10-29T09:00:00+01:00"  # the clerk looks after both replies came in


@dataclass
class RealRun:
    """A campaign folder whose state/ the real commands wrote."""

    ws: Workspace
    sink: SmtpSink


def _workspace(root: Path, *, smtp_port: int, dovecot: Dovecot, user: str) -> Workspace:
    (root / "recipients").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "campaign.toml").write_text(CAMPAIGN.format(
        port=smtp_port, connections=2, max_attempts=3, quota_pause=0.5,
        subject="Zaproszenie – {{ recipient.miasto }}: warsztat Smart City i PIM",
        unsubscribe='"mailto:rejestracja@example.com?subject=wypisz"',
        imap_port=dovecot.port, imap_user=user, poll_seconds=60, max_answers=5,
    ), encoding="utf-8")
    ws = Workspace(root)
    ws.write_contacts(contact_rows(5))
    return ws


@contextmanager
def real_run(root: Path, dovecot: Dovecot) -> Iterator[RealRun]:
    """Send to five cities, deliver five replies into Dovecot, let the watcher handle them."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        user = f"web{uuid.uuid4().hex[:10]}"
        ws = _workspace(root, smtp_port=controller.port, dovecot=dovecot, user=user)
        env = {"MAILER_IMAP_PASSWORD": dovecot.password}
        ws.run("send", "--yes", check=True, **env)
        dovecot.append(user, reply(f"{ZOFIA[0]} <{ZOFIA[1]}>", form(name=ZOFIA[0], city="Kraków")),
                       ON_TIME)
        dovecot.append(user, reply(ADAM[1], form(name=ADAM[0], city="Wrocław")), BETWEEN)
        dovecot.append(user, reply(INCOMPLETE, form(name="Ewa Lis", city="",
                                                      email="ewa.lis@gdansk")), ON_TIME)
        dovecot.append(user, reply(QUESTION, "Czy będzie nagranie warsztatu?\n",
                                   subject="Pytanie o nagranie"), ON_TIME)
        dovecot.append(user, reply(REQUEST, "Proszę o telefon w sprawie naboru.\n",
                                   subject="Prośba o kontakt"), ON_TIME)
        result = ws.run("watch", "--once", **env)
        assert result.returncode in (0, 3), result.stderr
        yield RealRun(ws, sink)
    finally:
        controller.stop()
