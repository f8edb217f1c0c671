"""Campaign file (TOML) → frozen, typed settings, checked once at load; errors name file and key."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import ConfigError

DEFAULT_CONFIG = "campaign.toml"
SECURITY_SMTP = ("none", "starttls", "tls")
SECURITY_IMAP = ("none", "tls")

T = TypeVar("T")
# A table header line: [name], [[name]], [a.b] or [ "a" . b ], a comment allowed after it.
_HEADER = re.compile(r"""^\s*\[\[?\s*([\w.\-"' ]+?)\s*\]\]?\s*(?:#.*)?$""")


@dataclass(frozen=True)
class Event:
    """One event officials can register for."""

    id: str
    title: str
    deadline: datetime  # aware
    starts: datetime | None = None  # aware
    place: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class CampaignSettings:
    """The [campaign] table."""

    name: str
    sender: str
    reply_to: str
    subject: str
    template: str
    recipients: tuple[Path, ...]
    timezone: ZoneInfo
    unsubscribe: tuple[str, ...] = ()

    @property
    def sender_address(self) -> str:
        """The bare address of `sender`."""
        return parseaddr(self.sender)[1]


@dataclass(frozen=True)
class SmtpSettings:
    """The [smtp] table; the password is read from the environment only when needed."""

    host: str = "127.0.0.1"
    port: int = 2525
    security: str = "none"
    username: str = ""
    password_env: str = "MAILER_SMTP_PASSWORD"
    envelope_from: str = ""
    connections: int = 4
    rate_per_minute: int = 0
    max_attempts: int = 5
    timeout: float = 30.0
    quota_pause: float = 60.0
    ca_file: str = ""
    allow_plaintext_login: bool = False  # AUTH without TLS to a host that is not loopback

    def password(self) -> str | None:
        """The SMTP password from `password_env`, or None when no AUTH is configured."""
        return _secret(self.username, self.password_env, "smtp")


@dataclass(frozen=True)
class ImapSettings:
    """The [imap] table."""

    host: str = "127.0.0.1"
    port: int = 1143
    security: str = "none"
    username: str = "rejestracja"
    password_env: str = "MAILER_IMAP_PASSWORD"
    folder: str = "INBOX"
    processed_folder: str = ""
    poll_seconds: float = 60.0
    max_message_bytes: int = 10 * 1024 * 1024
    allow_plaintext_login: bool = False  # LOGIN without TLS to a host that is not loopback

    def password(self) -> str | None:
        """The IMAP password from `password_env`."""
        return _secret(self.username, self.password_env, "imap")


@dataclass(frozen=True)
class AnswerSettings:
    """The [answers] table."""

    max_per_sender_per_day: int = 5
    trusted_authserv_id: str = ""  # our MX's Authentication-Results id; "" = the topmost
    max_registrants_per_sender: int = 50
    # Answers sent in any 60 minutes, all senders together; more wait for a later hour.
    max_per_hour: int = 200


@dataclass(frozen=True)
class Settings:
    """Everything the campaign file says, with paths resolved against its folder."""

    path: Path
    campaign: CampaignSettings
    events: tuple[Event, ...]
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    answers: AnswerSettings = field(default_factory=AnswerSettings)
    storage: Path = Path("state")

    @property
    def base_dir(self) -> Path:
        """The folder the campaign file lives in; relative paths start here."""
        return self.path.parent

    @property
    def templates_dir(self) -> Path:
        """Where the Jinja2 templates live."""
        return self.base_dir / "templates"

    @property
    def envelope_from(self) -> str:
        """MAIL FROM: so that bounces reach the inbox the watcher reads."""
        return self.smtp.envelope_from or self.campaign.reply_to

    @property
    def own_addresses(self) -> frozenset[str]:
        """Our addresses, lower-cased: a message from one of them is never answered (a loop)."""
        campaign = self.campaign
        return frozenset(a.lower() for a in (campaign.reply_to, campaign.sender_address,
                                             self.envelope_from) if a)

    def event(self, event_id: str) -> Event:
        """The event with that id, or a ConfigError naming the known ids."""
        for event in self.events:
            if event.id == event_id:
                return event
        known = ", ".join(e.id for e in self.events)
        raise ConfigError(f"unknown event {event_id!r}; the campaign has: {known}")

    def open_events(self, now: datetime) -> tuple[Event, ...]:
        """Events whose registration deadline has not passed at `now`."""
        return tuple(e for e in self.events if now <= e.deadline)


def _secret(username: str, env: str, table: str) -> str | None:
    if not username:
        return None
    value = os.environ.get(env)
    if value is None:
        raise ConfigError(
            f"[{table}] username is set but the environment variable {env} "
            f"(named by [{table}] password_env) is not",
            hint=f"export {env}=… before running, or leave [{table}] username empty",
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (127.0.0.0/8, ::1, localhost): no wire to listen on."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761 §6.3
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plaintext_login(security: str, username: str, host: str) -> bool:
    """Whether a password would cross the network in clear: a login, no TLS, not loopback."""
    return bool(username) and security == "none" and not is_loopback(host)


def _header_name(raw: str) -> str:
    """`"smtp" . tls` → `smtp.tls`: a header's dotted name without quotes or spaces."""
    return ".".join(part.strip().strip("\"'") for part in raw.split("."))


def key_line(text: str, table: str | None, key: str, nth: int = 1) -> int | None:
    """The line (from 1) of the campaign file `text` that sets `key` in `table` (the `nth`
    of an array of tables such as [[event]]; None: the top level, where `key` may be a
    table's header too); None when not found (an inline table). tomllib keeps no positions,
    so this is a linear scan of the lines, tracking the table each header opens."""
    quoted = re.escape(key)
    setting = re.compile(rf"""^\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.]""")
    below = f"{table}.{key}" if table else key  # a sub-table's header: [smtp.tls]
    wanted = nth if table else 0  # headers of `table` seen so far when in the right one
    current: str | None = None
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = _header_name(header.group(1))
            if current == table:
                seen += 1
            if seen == wanted and (current == below or current.startswith(below + ".")):
                return number
        elif current == table and seen == wanted and setting.match(line):
            return number
    return None


def resolve_config_path(option: str | None) -> Path:
    """`-c PATH`, else $MAILER_CONFIG, else ./campaign.toml."""
    return Path(option or os.environ.get("MAILER_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: Path) -> Settings:
    """Read and check the campaign file; every problem is a ConfigError naming file and key."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError as err:
        raise ConfigError(
            f"{path}: campaign file not found",
            hint="pass -c PATH or set MAILER_CONFIG",
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the campaign file: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    # Absolute but not resolved: relative paths start beside the file as named, so a
    # campaign.toml symlinked elsewhere (the checkout's, into the package) keeps its
    # state/ and lists beside the link.
    return _Loader(Path(os.path.abspath(path)), text).settings(raw)


class _Loader:
    """Turns the parsed TOML into settings; knows the file name for every message."""

    def __init__(self, path: Path, text: str = "") -> None:
        self.path = path
        self.text = text  # the file as read: unknown keys are found in it by line

    def fail(self, where: str, expected: str, got: object = None) -> ConfigError:
        tail = "" if got is None else f", got {got!r}"
        return ConfigError(f"{self.path}: {where}: expected {expected}{tail}")

    def table(self, raw: Mapping[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(f"[{name}]", "a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.unknown(name, unknown[0], allowed)
        return value

    def unknown(self, table: str | None, key: str, allowed: set[str], *, nth: int = 1,
                where: str = "") -> ConfigError:
        """`FILE:LINE: [table] key: unknown key; expected one of …`, the line found in the
        file (left out when not found), and the closest allowed name as a hint."""
        line = key_line(self.text, table, key, nth)
        at = f"{self.path}:{line}" if line else str(self.path)
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        if table is None:
            return ConfigError(f"{at}: [{key}]: unknown table; expected one of the tables "
                               + ", ".join(sorted(allowed)), hint=hint)
        return ConfigError(f"{at}: [{where or table}] {key}: unknown key; expected one of "
                           + ", ".join(sorted(allowed)), hint=hint)

    def get(self, tab: Mapping[str, Any], where: str, key: str, kind: Callable[[Any], T],
            default: T | None = None) -> T:
        if key not in tab:
            if default is None:
                raise ConfigError(f"{self.path}: [{where}] {key}: required key is missing")
            return default
        return kind(tab[key])

    def settings(self, raw: dict[str, Any]) -> Settings:
        tables = {"campaign", "event", "smtp", "imap", "answers", "storage"}
        unknown = sorted(set(raw) - tables)
        if unknown:
            raise self.unknown(None, unknown[0], tables)
        campaign = self.campaign(raw)
        events = self.events(raw, campaign.timezone)
        storage = self.table(raw, "storage", {"path"})
        return Settings(
            path=self.path,
            campaign=campaign,
            events=events,
            smtp=self.smtp(raw),
            imap=self.imap(raw),
            answers=self.answers(raw),
            storage=self.path.parent / self.string(storage, "storage", "path", "state"),
        )

    # -- typed getters -------------------------------------------------------------------

    def string(self, tab: Mapping[str, Any], where: str, key: str,
               default: str | None = None, *, nonempty: bool = False) -> str:
        value = tab.get(key, default)
        if value is None:
            raise ConfigError(f"{self.path}: [{where}] {key}: required key is missing")
        if not isinstance(value, str):
            raise self.fail(f"[{where}] {key}", "a string", value)
        if nonempty and not value.strip():
            raise self.fail(f"[{where}] {key}", "a non-empty string", value)
        return value

    def int_in(self, tab: Mapping[str, Any], where: str, key: str, low: int, high: int,
               default: int) -> int:
        value = tab.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"[{where}] {key}", f"a whole number from {low} to {high}", value)
        return value

    def flag(self, tab: Mapping[str, Any], where: str, key: str, default: bool) -> bool:
        value = tab.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"[{where}] {key}", "true or false", value)
        return value

    def refuse_plaintext_login(self, where: str, security: str, username: str, host: str,
                               allowed: bool) -> None:
        """A login over an unencrypted link to another host sends the password in clear
        (SMTP AUTH PLAIN, IMAP LOGIN): refused unless the file allows it (issue 12)."""
        if allowed or not plaintext_login(security, username, host):
            return
        tls = '"starttls" (port 587) or "tls" (465)' if where == "smtp" else '"tls" (port 993)'
        raise ConfigError(
            f"{self.path}: [{where}] security: \"none\" with [{where}] username set would send "
            f"the password for {username!r} in clear to {host}",
            hint=f"set [{where}] security = {tls}; or, only on a network you trust, "
                 f"[{where}] allow_plaintext_login = true")

    def seconds(self, tab: Mapping[str, Any], where: str, key: str, default: float) -> float:
        value = tab.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(f"[{where}] {key}", "a positive number of seconds", value)
        return float(value)

    def choice(self, tab: Mapping[str, Any], where: str, key: str, options: tuple[str, ...],
               default: str) -> str:
        value = self.string(tab, where, key, default)
        if value not in options:
            raise self.fail(f"[{where}] {key}", "one of " + " | ".join(options), value)
        return value

    def strings(self, tab: Mapping[str, Any], where: str, key: str) -> tuple[str, ...]:
        value = tab.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"[{where}] {key}", "a string or a list of strings", value)
        return tuple(value)

    def address(self, tab: Mapping[str, Any], where: str, key: str, *, display: bool) -> str:
        value = self.string(tab, where, key, nonempty=True)
        pairs = getaddresses([value])
        if len(pairs) != 1 or "@" not in pairs[0][1] or any(c in value for c in "\r\n"):
            form = '"Name <user@domain>" or "user@domain"' if display else '"user@domain"'
            raise self.fail(f"[{where}] {key}", f"one e-mail address like {form}", value)
        try:
            Address(display_name=pairs[0][0], addr_spec=pairs[0][1])
        except (ValueError, IndexError) as err:
            raise self.fail(f"[{where}] {key}", f"a valid e-mail address ({err})", value) from err
        return value

    def when(self, tab: Mapping[str, Any], where: str, key: str, zone: ZoneInfo,
             *, required: bool) -> datetime | None:
        value = tab.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.path}: [{where}] {key}: required key is missing")
            return None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = datetime.fromisoformat(value)
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime.combine(value, time(23, 59, 59))
        if not isinstance(value, datetime):
            raise self.fail(f"[{where}] {key}", "a date-time like 2020-10-26T10:00:00", value)
        return value if value.tzinfo else value.replace(tzinfo=zone)

    # -- tables ----------------------------------------------------------------------------

    def campaign(self, raw: Mapping[str, Any]) -> CampaignSettings:
        keys = {"name", "sender", "reply_to", "subject", "template", "recipients", "timezone",
                "unsubscribe"}
        tab = self.table(raw, "campaign", keys)
        if not tab:
            raise ConfigError(f"{self.path}: [campaign]: required table is missing")
        zone_name = self.string(tab, "campaign", "timezone", "Europe/Warsaw")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise self.fail("[campaign] timezone", "an IANA time zone like Europe/Warsaw",
                            zone_name) from err
        template = self.string(tab, "campaign", "template", nonempty=True)
        if not (self.path.parent / "templates" / f"{template}.txt.j2").is_file():
            raise self.fail("[campaign] template",
                            f"a template with a file templates/{template}.txt.j2 beside "
                            "the campaign file", template)
        recipients = self.strings(tab, "campaign", "recipients")
        if not recipients:
            raise self.fail("[campaign] recipients", "at least one CSV file")
        return CampaignSettings(
            name=self.string(tab, "campaign", "name", nonempty=True),
            sender=self.address(tab, "campaign", "sender", display=True),
            reply_to=parseaddr(self.address(tab, "campaign", "reply_to", display=False))[1],
            subject=self.string(tab, "campaign", "subject", nonempty=True),
            template=template,
            recipients=tuple(self.path.parent / r for r in recipients),
            timezone=zone,
            unsubscribe=self.strings(tab, "campaign", "unsubscribe"),
        )

    def events(self, raw: Mapping[str, Any], zone: ZoneInfo) -> tuple[Event, ...]:
        tabs = raw.get("event", [])
        if not isinstance(tabs, list) or not tabs:
            raise self.fail("[[event]]", "at least one [[event]] table")
        events: list[Event] = []
        allowed = {"id", "title", "starts", "place", "deadline", "aliases"}
        for number, tab in enumerate(tabs, start=1):
            where = f"event #{number}"
            if not isinstance(tab, dict):
                raise self.fail(f"[[event]] #{number}", "a table")
            unknown = sorted(set(tab) - allowed)
            if unknown:
                raise self.unknown("event", unknown[0], allowed, nth=number, where=where)
            event_id = self.string(tab, where, "id", nonempty=True)
            if not event_id.replace("-", "").replace("_", "").isalnum():
                raise self.fail(f"[{where}] id", "letters, digits, '-' or '_'", event_id)
            if any(e.id == event_id for e in events):
                raise self.fail(f"[{where}] id", "an id used by no other event", event_id)
            deadline = self.when(tab, where, "deadline", zone, required=True)
            assert deadline is not None
            place = self.string(tab, where, "place", "") or None
            events.append(Event(
                id=event_id,
                title=self.string(tab, where, "title", nonempty=True),
                deadline=deadline,
                starts=self.when(tab, where, "starts", zone, required=False),
                place=place,
                aliases=self.strings(tab, where, "aliases"),
            ))
        return tuple(events)

    def smtp(self, raw: Mapping[str, Any]) -> SmtpSettings:
        keys = {"host", "port", "security", "username", "password_env", "envelope_from",
                "connections", "rate_per_minute", "max_attempts", "timeout", "quota_pause",
                "ca_file", "allow_plaintext_login"}
        tab = self.table(raw, "smtp", keys)
        d = SmtpSettings()
        envelope = self.string(tab, "smtp", "envelope_from", "")
        if envelope:
            envelope = parseaddr(self.address(tab, "smtp", "envelope_from", display=False))[1]
        smtp = SmtpSettings(
            host=self.string(tab, "smtp", "host", d.host, nonempty=True),
            port=self.int_in(tab, "smtp", "port", 1, 65535, d.port),
            security=self.choice(tab, "smtp", "security", SECURITY_SMTP, d.security),
            username=self.string(tab, "smtp", "username", d.username),
            password_env=self.string(tab, "smtp", "password_env", d.password_env),
            envelope_from=envelope,
            connections=self.int_in(tab, "smtp", "connections", 1, 64, d.connections),
            rate_per_minute=self.int_in(tab, "smtp", "rate_per_minute", 0, 1_000_000,
                                        d.rate_per_minute),
            max_attempts=self.int_in(tab, "smtp", "max_attempts", 1, 100, d.max_attempts),
            timeout=self.seconds(tab, "smtp", "timeout", d.timeout),
            quota_pause=self.seconds(tab, "smtp", "quota_pause", d.quota_pause),
            ca_file=self.string(tab, "smtp", "ca_file", d.ca_file),
            allow_plaintext_login=self.flag(tab, "smtp", "allow_plaintext_login",
                                            d.allow_plaintext_login),
        )
        self.refuse_plaintext_login("smtp", smtp.security, smtp.username, smtp.host,
                                    smtp.allow_plaintext_login)
        return smtp

    def answers(self, raw: Mapping[str, Any]) -> AnswerSettings:
        keys = {"max_per_sender_per_day", "trusted_authserv_id", "max_registrants_per_sender",
                "max_per_hour"}
        tab = self.table(raw, "answers", keys)
        d = AnswerSettings()
        return AnswerSettings(
            max_per_sender_per_day=self.int_in(tab, "answers", "max_per_sender_per_day", 0,
                                               10_000, d.max_per_sender_per_day),
            trusted_authserv_id=self.string(tab, "answers", "trusted_authserv_id",
                                            d.trusted_authserv_id),
            max_registrants_per_sender=self.int_in(tab, "answers", "max_registrants_per_sender",
                                                   # the reader reads at most 1,000 forms
                                                   1, 1_000, d.max_registrants_per_sender),
            max_per_hour=self.int_in(tab, "answers", "max_per_hour", 1, 1_000_000,
                                     d.max_per_hour),
        )

    def imap(self, raw: Mapping[str, Any]) -> ImapSettings:
        keys = {"host", "port", "security", "username", "password_env", "folder",
                "processed_folder", "poll_seconds", "max_message_bytes", "allow_plaintext_login"}
        tab = self.table(raw, "imap", keys)
        d = ImapSettings()
        imap = ImapSettings(
            host=self.string(tab, "imap", "host", d.host, nonempty=True),
            port=self.int_in(tab, "imap", "port", 1, 65535, d.port),
            security=self.choice(tab, "imap", "security", SECURITY_IMAP, d.security),
            username=self.string(tab, "imap", "username", d.username),
            password_env=self.string(tab, "imap", "password_env", d.password_env),
            folder=self.string(tab, "imap", "folder", d.folder, nonempty=True),
            processed_folder=self.string(tab, "imap", "processed_folder", d.processed_folder),
            poll_seconds=self.seconds(tab, "imap", "poll_seconds", d.poll_seconds),
            max_message_bytes=self.int_in(tab, "imap", "max_message_bytes", 1024, 2**31,
                                          d.max_message_bytes),
            allow_plaintext_login=self.flag(tab, "imap", "allow_plaintext_login",
                                            d.allow_plaintext_login),
        )
        self.refuse_plaintext_login("imap", imap.security, imap.username, imap.host,
                                    imap.allow_plaintext_login)
        return imap
