"""Thin aiosmtplib wrapper: one reusable session, replies sorted into sent/temporary/permanent."""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from mailer.errors import DeliveryError
from mailer.settings import SmtpSettings

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
            raise
        return client

    async def send(self, to: str, data: bytes) -> Attempt:
        """Hand one message to the server; never raises for server or network trouble."""
        try:
            if self.client is None or not self.client.is_connected:
                self.client = await self._connect()
            errors, reply = await self.client.sendmail(self.envelope_from, [to], data)
        except aiosmtplib.SMTPRecipientsRefused as err:
            refused = err.recipients[0]
            return Attempt(sort_reply(refused.code, refused.message), refused.code,
                           refused.message)
        except aiosmtplib.SMTPResponseException as err:
            attempt = Attempt(sort_reply(err.code, err.message), err.code, err.message)
            if attempt.outcome is Outcome.QUOTA:
                await self.close()
            return attempt
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
            # Timeouts and drops leave the session in an unknown state: start afresh.
            await self.close()
            return Attempt(Outcome.TEMPORARY, None, f"{type(err).__name__}: {err}")
        if errors:  # partial refusal is returned, not raised; one recipient here
            code, text = errors.get(to, (None, ""))
            return Attempt(sort_reply(code or 550, text), code, text)
        return Attempt(Outcome.SENT, 250, reply)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await asyncio.wait_for(client.quit(), timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            client.close()


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
