"""Thin aiosmtplib wrapper: one reusable session, replies sorted into sent/temporary/permanent."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.typing import SMTPStatus

from mailer.errors import DeliveryError, connection_problem
from mailer.settings import Settings, SmtpSettings

log = logging.getLogger(__name__)

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


class Outcome(enum.StrEnum):
    """What became of one attempt to hand a message to the server."""

    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, timeout, dropped connection: try again later
    PERMANENT = "permanent"  # 5xx for this recipient: do not try again
    QUOTA = "quota"  # the server says we send too much: pause everything


@dataclass(frozen=True)
class Attempt:
    """The server's answer to one message, with code and text for the record."""

    outcome: Outcome
    code: int | None = None
    text: str = ""


def sort_reply(code: int, text: str) -> Outcome:
    """Classify an SMTP error reply (RFC 5321 §4.2.1, enhanced codes of RFC 3463).

    421 closes the session for everyone, 5.4.5 is a provider's sending quota (Gmail,
    Office 365) and 4.7.x with rate words is throttling: each means "stop sending for a
    while", not "this recipient is bad", so the whole campaign pauses instead of burning
    through the list.
    """
    match = _ENHANCED.match(text)
    enhanced = match.group(1) if match else ""
    lowered = text.lower()
    if code == 421 or enhanced == "5.4.5":
        return Outcome.QUOTA
    throttled = any(w in lowered for w in ("rate", "quota", "too many", "limit"))
    if enhanced.startswith("4.7.") and throttled:
        return Outcome.QUOTA
    return Outcome.PERMANENT if 500 <= code < 600 else Outcome.TEMPORARY


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """Certificates are verified by default; `ca_file` trusts a private CA explicitly."""
    if settings.security == "none":
        return None
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    return context


class SmtpSession:
    """One SMTP connection, opened lazily and reused for many messages; rebuilt after loss."""

    def __init__(self, settings: SmtpSettings, *, envelope_from: str, password: str | None,
                 local_hostname: str | None = None) -> None:
        self.settings = settings
        self.envelope_from = envelope_from
        self._password = password
        self._local_hostname = local_hostname
        self.client: aiosmtplib.SMTP | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSession:
        """The campaign's session: [smtp], its MAIL FROM, the password from the environment."""
        return cls(settings.smtp, envelope_from=settings.envelope_from,
                   password=settings.smtp.password())

    def __repr__(self) -> str:  # never the password (STYLE rule 5)
        return f"SmtpSession({self.settings.host}:{self.settings.port})"

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout,
            use_tls=s.security == "tls",
            # starttls must be required explicitly: None would silently stay in clear text
            # when a man in the middle strips the STARTTLS capability.
            start_tls=s.security == "starttls",
            tls_context=tls_context(s),
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
            if s.username:
                await client.login(s.username, self._password or "")
        except aiosmtplib.SMTPAuthenticationError as err:
            client.close()
            raise DeliveryError(
                f"{s.host}:{s.port} refused the login of {s.username!r}: {err.code} {err.message}",
                hint=f"check [smtp] username and the password in ${s.password_env}",
            ) from err
        except aiosmtplib.SMTPException as err:
            client.close()
            if "STARTTLS" in str(err) or "TLS" in str(err):
                raise DeliveryError(
                    f"{s.host}:{s.port}: {err}; no credentials or mail were sent",
                    hint="the server (or something between) offers no STARTTLS; "
                    "check [smtp] security and port",
                ) from err
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                raise _untrusted(s, err) from err
            raise
        except ssl.SSLCertVerificationError as err:
            client.close()
            raise _untrusted(s, err) from err
        return client

    async def send(self, to: str, data: bytes) -> Attempt:
        """Hand one message to the server; never raises for server or network trouble."""
        try:
            if self.client is None or not self.client.is_connected:
                self.client = await self._connect()
            reply = await _transaction(self.client, self.envelope_from, to, data)
        except aiosmtplib.SMTPSenderRefused as err:
            if sort_reply(err.code, err.message) is Outcome.PERMANENT:
                # MAIL FROM refused for good: our sender, not this recipient, is at fault, and
                # marking every recipient failed would keep the whole list from ever getting
                # mail. Stop, as for a refused login; who is not recorded is still to send.
                await self.close()
                raise DeliveryError(
                    f"{self.settings.host}:{self.settings.port} refused the envelope sender "
                    f"<{self.envelope_from}>: {err.code} {err.message}; the message to {to} "
                    "and every one after it are still to send",
                    hint="check [smtp] envelope_from (by default campaign.reply_to) and which "
                    "senders the server lets this login use",
                ) from err
            return await self._refused(err)
        except aiosmtplib.SMTPResponseException as err:  # MAIL, RCPT or DATA refused
            return await self._refused(err)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
            # Timeouts and drops leave the session in an unknown state: start afresh.
            await self.close()
            return Attempt(Outcome.TEMPORARY, None, self._trouble(err))
        return Attempt(Outcome.SENT, 250, reply)

    def _trouble(self, err: BaseException) -> str:
        """A network failure in words: "cannot connect to SMTP host:port: connection
        refused" when no connection was made (not aiosmtplib's repr), else type and text."""
        if isinstance(err, aiosmtplib.SMTPConnectError):
            where = f"{self.settings.host}:{self.settings.port}"
            return f"cannot connect to SMTP {where}: {connection_problem(err)}"
        return f"{type(err).__name__}: {err}"

    async def _refused(self, err: aiosmtplib.SMTPResponseException) -> Attempt:
        attempt = Attempt(sort_reply(err.code, err.message), err.code, err.message)
        if attempt.outcome is Outcome.QUOTA:
            await self.close()
        return attempt

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await asyncio.wait_for(client.quit(), timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            client.close()


async def _transaction(client: aiosmtplib.SMTP, sender: str, to: str, data: bytes) -> str:
    """MAIL, RCPT, DATA for one recipient, as `sendmail` does; the server's final reply.

    `sendmail` parses both addresses twice and rescans every message with two regular
    expressions (line ends, leading dots): 0.4 ms for a 19 kB invitation, more than half of
    what aiosmtplib costs per message. Here plain addresses and CRLF-only messages take
    shortcuts (`_envelope`, `_send_data`); anything else goes through aiosmtplib as before.
    """
    try:
        await _envelope(client, sender, to)
        response = await _send_data(client, data)
    except aiosmtplib.SMTPResponseException:
        # As sendmail does: reset the envelope; a failing reset must not hide the refusal.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise
    return response.message


# A dot-atom address of ASCII letters, digits and atext symbols (RFC 5322 §3.2.3): nothing
# in it can end an SMTP command or add a parameter, and aiosmtplib's quote_address returns
# it unchanged in <>. Quoted local parts, spaces or non-ASCII go through aiosmtplib.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


async def _envelope(client: aiosmtplib.SMTP, sender: str, to: str) -> None:
    """MAIL FROM and RCPT TO, raising what aiosmtplib's mail() and rcpt() raise."""
    if (client.is_ehlo_or_helo_needed or not _PLAIN_ADDRESS.fullmatch(sender)
            or not _PLAIN_ADDRESS.fullmatch(to)):
        await client.mail(sender)
        await client.rcpt(to)
        return
    reply = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await client.execute_command(b"RCPT", b"TO:<" + to.encode("ascii") + b">")
    if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, to)


def _has_crlf_only(data: bytes) -> bool:
    """True when every CR and LF is part of a CRLF pair (what the renderer writes)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\n") == pairs and data.count(b"\r") == pairs


async def _send_data(client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    """DATA with the message dot-stuffed (RFC 5321 §4.5.2) by `bytes.replace`.

    Equivalent to aiosmtplib's `data()` for CRLF-only messages (any other message goes
    through `data()`, which normalises line ends): same bytes on the wire, same errors,
    and the connection is closed on a drop or timeout, as aiosmtplib does.
    """
    protocol = client.protocol
    if protocol is None or not _has_crlf_only(data):
        return await client.data(data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    wire = data.replace(b"\n.", b"\n..") + b".\r\n"
    start = await client.execute_command(b"DATA")
    if start.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    try:
        # One session is used by one task at a time, and read_response() marks the reply
        # as expected before the event loop can deliver it: nothing runs in between.
        protocol.write(wire)
        response = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _untrusted(s: SmtpSettings, err: Exception) -> DeliveryError:
    """An unverifiable certificate ends the run: retrying cannot help, and no password or mail
    may go to a server that cannot prove who it is."""
    return DeliveryError(
        f"{s.host}:{s.port}: the server's certificate is not trusted ({err}); nothing was sent",
        hint="for a server with a private CA or a self-signed certificate, name the "
        "certificate in [smtp] ca_file",
    )


class RateLimiter:
    """At most `per_minute` sends, evenly spaced; 0 means unlimited."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_slot = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
