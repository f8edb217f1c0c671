"""`mailer doctor`: check a campaign against its servers without sending, in plain words."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosmtplib
import dns.exception
import dns.resolver

from mailer.errors import MailerError, connection_problem
from mailer.imap_client import ImapError, ImapInbox
from mailer.settings import Settings, is_loopback, plaintext_login
from mailer.smtp_client import tls_context


class Level(enum.StrEnum):
    """How a check went."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One check: what was checked, how it went, and what to do about it."""

    check: str
    level: Level
    detail: str


async def check_smtp(settings: Settings) -> list[Finding]:
    """Connect, EHLO, TLS as configured, AUTH if configured; never MAIL FROM."""
    s = settings.smtp
    where = f"{s.host}:{s.port}"
    client = aiosmtplib.SMTP(hostname=s.host, port=s.port, timeout=min(s.timeout, 15),
                             use_tls=s.security == "tls", start_tls=s.security == "starttls",
                             tls_context=tls_context(s))
    findings: list[Finding] = []
    try:
        await client.connect()
        findings.append(Finding("smtp connect", Level.OK,
                                f"{where} answers (security: {s.security})"))
        findings += check_security("smtp", s.security, s.username, s.host)
        if s.username:
            await client.login(s.username, s.password() or "")
            findings.append(Finding("smtp login", Level.OK, f"logged in as {s.username}"))
        await client.quit()
    except aiosmtplib.SMTPAuthenticationError as err:
        findings.append(Finding("smtp login", Level.FAIL,
                                f"{where} refused the login ({err.code} {err.message}); check "
                                f"[smtp] username and ${s.password_env}"))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        findings.append(Finding("smtp connect", Level.FAIL, _smtp_advice(where, s.security, err)))
    finally:
        client.close()
    return findings


def _smtp_advice(where: str, security: str, err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if "STARTTLS" in text:
        return (f"{where} offers no STARTTLS ({text}): use the submission port 587, or "
                "security = tls on port 465; nothing was sent, no password either")
    if "certificate" in text.lower():
        return f"{where}: the certificate is not trusted ({text}); for a private CA set ca_file"
    if isinstance(err, aiosmtplib.SMTPConnectError):  # "connection refused", not the repr
        text = connection_problem(err)
    return (f"cannot talk to {where}: {text}; is the server running, and are [smtp] host, "
            "port and security right?")


async def check_imap(settings: Settings) -> list[Finding]:
    """Log in, open the folder, look for IDLE; read nothing."""
    s = settings.imap
    security = check_security("imap", s.security, s.username, s.host)
    inbox = ImapInbox(s, s.password())
    try:
        await inbox.connect()
    except ImapError as err:
        await inbox.close()
        return [*security, Finding("imap", Level.FAIL, f"{err}; check [imap] host, port, "
                                   f"security, username and ${s.password_env}")]
    try:
        findings = [*security, Finding("imap login", Level.OK,
                                       f"{inbox.where}: folder {s.folder!r} open, "
                                       f"UIDVALIDITY {inbox.uidvalidity}")]
        if inbox.has_idle:
            findings.append(Finding("imap idle", Level.OK, "IDLE offered: replies in seconds"))
        else:
            findings.append(Finding("imap idle", Level.WARN,
                                    f"no IDLE: the watcher polls every {s.poll_seconds:.0f} s"))
        return findings
    finally:
        await inbox.close()


def check_security(table: str, security: str, username: str, host: str) -> list[Finding]:
    """What crosses the network in clear with `security = "none"` (issue 12: IMAP too)."""
    if security != "none":
        return []  # TLS, with the certificate verified when connecting
    tls = "starttls (587) or tls (465)" if table == "smtp" else "tls (993)"
    if plaintext_login(security, username, host):  # only with allow_plaintext_login
        return [Finding(f"{table} security", Level.WARN,
                        f"no TLS: the password for {username!r} goes to {host} in clear "
                        f"([{table}] allow_plaintext_login = true); set [{table}] security = "
                        f"{tls}")]
    if not is_loopback(host):
        return [Finding(f"{table} security", Level.WARN,
                        f"no TLS: messages (personal data) go to {host} in clear; set "
                        f"[{table}] security = {tls}")]
    return [Finding(f"{table} security", Level.OK, f"no TLS: {host} is this machine")]


def check_dns(settings: Settings, *, timeout: float = 3.0) -> list[Finding]:
    """SPF and DMARC of the sender's domain; DKIM is the sending server's to sign."""
    domain = settings.campaign.sender_address.rpartition("@")[2]
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    findings = []
    for check, name, marker in (("spf", domain, "v=spf1"),
                                ("dmarc", f"_dmarc.{domain}", "v=DMARC1")):
        try:
            texts = [b"".join(r.strings).decode(errors="replace")
                     for r in resolver.resolve(name, "TXT")]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            texts = []
        except (dns.exception.DNSException, OSError) as err:
            findings.append(Finding(check, Level.WARN,
                                    f"cannot look up {name} from here ({type(err).__name__}); "
                                    "check it where DNS is reachable"))
            continue
        found = [t for t in texts if t.startswith(marker)]
        findings.append(Finding(check, Level.OK, f"{name}: {found[0]}") if found else Finding(
            check, Level.WARN, f"{name} has no {marker} record: receivers may file the "
            "invitations as spam; ask the domain's administrator"))
    findings.append(Finding("dkim", Level.WARN, f"make sure the SMTP server signs mail from "
                            f"{domain} with DKIM (a selector's key is published in DNS)"))
    return findings


async def diagnose(settings: Settings) -> list[Finding]:
    """Every check; none sends mail or changes the mailbox."""
    findings: list[Finding] = []
    checks: list[Callable[[Settings], Awaitable[list[Finding]]]] = [check_smtp, check_imap]
    for run in checks:
        try:
            findings += await run(settings)
        except MailerError as err:  # a missing password, say
            findings.append(Finding(run.__name__.removeprefix("check_"), Level.FAIL, str(err)))
    findings += await asyncio.to_thread(check_dns, settings)
    return findings
