"""The state's shape across releases: each change a numbered step, run once by the first writer.

A state folder carries the version of its shape in `meta/state_version`. A writer that opens
an older one runs the missing steps in order, records the new version in the same journal
transaction as the documents a step changed (a crash leaves the old or the new state), and
logs what it did. A state written by a newer release is refused rather than misread. A new
state folder gets the current version when its first writer finishes (not before: a dry run
leaves no state behind). A folder without it is version 1; every step changes only documents
in the old shape, so over a new state whose writer was killed before it recorded its version
a step changes nothing and says nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING

from mailer.errors import StateError
from mailer.models import INBOUND, META, relative_message
from mailer.reasons import Reason

if TYPE_CHECKING:  # the store runs the steps when it opens: no import back at run time
    from mailer.store import Store

log = logging.getLogger(__name__)

VERSION_KEY = "state_version"
# The fields of an inbound message that hold a reason.
_REASON_FIELDS = ("reason", "automated", "refusal", "review")


def _reasons_as_codes(store: Store) -> int:
    """Version 2: reasons were English sentences; they are codes with parameters now."""
    changed = 0
    for doc in store.iter(INBOUND):
        texts = {name: doc[name] for name in _REASON_FIELDS if isinstance(doc.get(name), str)}
        if not texts:
            continue
        for name, text in texts.items():
            reason = Reason.from_doc(text)
            doc[name] = None if reason is None else reason.to_doc()
        store.stage(INBOUND, doc.pop("key"), doc)
        changed += 1
    return changed


def _relative_paths(store: Store) -> int:
    """Version 3: a message's `path` was absolute, and moving the state folder lost every raw
    message (issue 12); it is relative to the folder now. A path not in the watcher's form
    stays as it is: `message_path` refuses it."""
    changed = 0
    for doc in store.iter(INBOUND):
        old = doc.get("path")
        if not isinstance(old, str) or not PurePath(old).is_absolute():
            continue
        new = relative_message(old)
        if new.is_absolute():
            log.warning("%s: message %s: path %s left as it is (not in messages/)",
                        store.folder, doc["key"], old)
            continue
        doc["path"] = new.as_posix()
        store.stage(INBOUND, doc.pop("key"), doc)
        changed += 1
    return changed


# STEPS[n] takes a state from version n + 1 to n + 2, and says how many documents it changed.
STEPS: tuple[tuple[str, Callable[[Store], int]], ...] = (
    ("messages' reasons stored as codes", _reasons_as_codes),
    ("raw messages' paths relative to the state folder", _relative_paths),
)
CURRENT = len(STEPS) + 1


def state_version(store: Store) -> int:
    """The version of the shape the state folder was written in (1: before versions)."""
    doc = store.get(META, VERSION_KEY)
    return 1 if doc is None else int(doc["version"])


def migrate(store: Store) -> list[str]:
    """Bring a writer's state to the current shape; return what was done (logged too)."""
    found = state_version(store)
    if found > CURRENT:
        raise StateError(
            f"{store.folder}: written by a newer release of mailer (state version {found}; "
            f"this one reads up to {CURRENT})",
            hint="upgrade mailer, or restore a backup made with this release")
    if found == CURRENT or not any(store.tables.values()):
        return []  # up to date, or new: what will be written is in the current shape
    done = []
    for version, (what, step) in enumerate(STEPS[found - 1:], start=found):
        changed = step(store)
        store.stage(META, VERSION_KEY, {"version": version + 1})
        store.commit_now()
        if changed:  # a state written in the new shape before it had a version: no news
            note = f"state upgraded from version {version} to {version + 1}: {what} ({changed})"
            log.warning("%s: %s", store.folder, note)
            done.append(note)
    return done


def record_version(store: Store) -> None:
    """A writer that wrote a new state's first documents records their (current) shape."""
    if store.get(META, VERSION_KEY) is None and any(store.tables.values()):
        store.put_now(META, VERSION_KEY, {"version": CURRENT})
