"""What the tests need from the machine, and the one command that installs it (scripts/setup)."""

from __future__ import annotations

# scripts/setup prints the same command when it is not root (issue 15): the Debian packages
# (dovecot-imapd, chromium, openssl, …) and the vmail user that Dovecot's mail belongs to.
SYSTEM_SETUP = "sudo bash scripts/setup --system"


def missing(what: str) -> str:
    """The failure message of a test whose system dependency is absent (a failure, never a skip:
    CI installs everything, so a missing piece there is a broken setup)."""
    return f"{what} — install it with: {SYSTEM_SETUP}"
