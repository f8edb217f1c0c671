"""RODO: erase one person (art. 17) or everyone of events long over (art. 5(1)(e))."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mailer.audit import AuditLog
from mailer.campaign import person_hash
from mailer.contacts import normalize_key
from mailer.journal import fsync_dir
from mailer.models import (
    ANSWERS,
    DELIVERIES,
    INBOUND,
    REGISTRATIONS,
    SUPPRESSIONS,
    DeliveryKind,
    Suppression,
    SuppressionReason,
    message_path,
    reading_file,
)
from mailer.reading.classify import Kind
from mailer.store import Doc, Store

log = logging.getLogger(__name__)


@dataclass
class Erasure:
    """What an erasure removed (counts only: the report itself holds no personal data)."""

    subject: str  # the salted hash that stands for the person from now on
    documents: int = 0
    files: int = 0
    audit_entries: int = 0
    names: set[str] = field(default_factory=set)


def forget(store: Store, audit: AuditLog, address: str, *, now: datetime,
           suppress: bool = True) -> Erasure:
    """Remove the person's data from every table, their raw messages (and the bounce notices
    about their address) and the audit log.

    Keeps a salted hash in `suppressions` (with `suppress`) so they are never mailed again,
    and anonymous traces (a delivery without address) so counts stay right.
    """
    key = normalize_key(address)
    erasure = Erasure(subject=person_hash(store, key))
    registrations = _person_registrations(store, key)
    erasure.names = {d["name"] for d in registrations if d.get("name")}
    messages = {m for d in registrations for m in d.get("messages", [])}
    for doc in registrations:
        store.stage_delete(REGISTRATIONS, doc["key"])
    for doc in store.all(INBOUND):
        if doc.get("sender") == key or doc["key"] in messages \
                or _bounce_names(store.folder, doc, key):
            raw = message_path(store.folder, doc.get("path"))
            erasure.files += _remove_file(raw)
            _remove_file(reading_file(raw) if raw else None)  # what was read of it
            store.stage_delete(INBOUND, doc["key"])
    for doc in store.all(ANSWERS):
        if doc.get("to") == key or doc.get("inbound") in messages:
            store.stage_delete(ANSWERS, doc["key"])
    _anonymise_deliveries(store, key, erasure.subject)
    store.stage_delete(SUPPRESSIONS, key)
    if suppress:
        suppression: Suppression = {"reason": SuppressionReason.ERASED, "at": now.isoformat()}
        store.stage(SUPPRESSIONS, erasure.subject, dict(suppression))  # the store takes dicts
    erasure.documents = store.staged
    store.commit_now()
    store.fold()  # rewrite TinyDB without the data and empty the journal that held it
    erasure.audit_entries = audit.redact([key, *erasure.names], erasure.subject)
    audit.record("forget", at=now, subject=erasure.subject, documents=erasure.documents,
                 files=erasure.files)
    audit.flush()
    return erasure


def _bounce_names(folder: Path, doc: Doc, key: str) -> bool:
    """Whether `doc` is a DSN about `key`: its record lists the address, or its raw bytes
    hold it (a delay notice lists none; issue 12). Such a notice is the person's data too:
    it goes whole, as their own messages do, other addresses it names included."""
    if doc.get("kind") != Kind.BOUNCE:
        return False
    read, effects = doc.get("read") or {}, doc.get("effects") or {}
    listed = [*read.get("bounced", []), *effects.get("suppressed", [])]
    if key in (a.lower() for a in listed):
        return True
    raw_file = message_path(folder, doc.get("path"))
    if raw_file is None:  # no path, or one outside the state folder
        return False
    try:
        raw = raw_file.read_bytes()
    except OSError:  # already gone
        return False
    # The whole address, not the tail of a longer one (ala@x.pl in mala@x.pl).
    whole = rb"(?<![\w.+-])" + re.escape(key.encode()) + rb"(?![\w.-])"
    return re.search(whole, raw.lower()) is not None


def _person_registrations(store: Store, key: str) -> list[Doc]:
    return [d for d in store.all(REGISTRATIONS)
            if key in (d.get("sender"), (d.get("email") or "").lower(), d["key"])]


def _anonymise_deliveries(store: Store, key: str, subject: str) -> None:
    for doc in store.all(DELIVERIES):
        if doc.get("contact") == key:
            store.stage_delete(DELIVERIES, doc["key"])
            kind = doc.get("kind", DeliveryKind.INVITATION)
            store.stage(DELIVERIES, f"{kind}:{subject}", {
                "kind": kind, "contact": subject, "status": doc.get("status"),
                "at": doc.get("at"), "erased": True})


def _remove_file(file: Path | None) -> int:
    if file is None:
        return 0
    try:
        file.unlink()
    except FileNotFoundError:
        return 0
    fsync_dir(file.parent)
    return 1


def people_of_ended_events(store: Store, ended: Iterable[str]) -> list[str]:
    """Addresses whose every registration concerns only events in `ended`."""
    ended = set(ended)
    people: dict[str, bool] = {}
    for doc in store.all(REGISTRATIONS):
        person = (doc.get("email") or doc.get("sender") or "").lower()
        only_ended = set(doc.get("events", {})) <= ended
        people[person] = people.get(person, True) and only_ended
    return sorted(p for p, ok in people.items() if ok and p)


def purge(store: Store, audit: AuditLog, *, before: datetime, now: datetime,
          event_ends: dict[str, datetime]) -> list[Erasure]:
    """Erase everyone registered only for events that ended before `before` (no suppression:
    they asked for nothing; the campaign simply no longer needs their data)."""
    ended = [e for e, end in event_ends.items() if end < before]
    return [forget(store, audit, person, now=now, suppress=False)
            for person in people_of_ended_events(store, ended)]
