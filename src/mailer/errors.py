"""One error hierarchy: everything the CLI turns into a clear message and an exit code."""

from __future__ import annotations


class MailerError(Exception):
    """A problem the user can fix; the message says what and where, `hint` what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(MailerError):
    """The campaign file, a template or a contact list is invalid (names file, key or line)."""


class StateLockedError(MailerError):
    """Another process holds the state folder for writing."""


class StateError(MailerError):
    """The state folder cannot be read or written (corrupt file, full disk, permissions)."""


class DeliveryError(MailerError):
    """The SMTP server could not be used at all (refused connection, failed login, no TLS)."""


class UsageError(MailerError):
    """The command was called in a way that cannot proceed (e.g. no terminal to confirm on)."""

    exit_code = 2
