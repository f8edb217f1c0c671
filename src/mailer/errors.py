"""One error hierarchy: everything the CLI turns into a clear message and an exit code."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator


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


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what it was raised from (or during), down the chain."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def connection_problem(err: BaseException) -> str:
    """Why a connection failed, in plain words ("connection refused", "unknown host …"),
    instead of a library's repr such as `ConnectionRefusedError(111, 'Connect call …')`."""
    for link in _causes(err):
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return f"unknown host ({link.strerror or link})"
        if isinstance(link, TimeoutError):
            return "no answer (timed out)"
        if isinstance(link, ssl.SSLError):
            return f"TLS failed ({link.reason or link})"
        if isinstance(link, OSError) and link.strerror:
            return link.strerror[:1].lower() + link.strerror[1:]
    return str(err) or type(err).__name__
