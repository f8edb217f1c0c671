"""The state's written form: its TinyDB tables, the statuses stored in them, their documents.

The store keeps plain JSON and hands out `dict[str, Any]`; this module says what those dicts
hold. The enums are StrEnums: a member is the very string that is stored (json writes it as
such), so the files stay as they were, and a value read back compares equal to its member.
Fields typed with an enum hold its value; `key` is the document's id, which the store adds.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Required, TypedDict

if TYPE_CHECKING:  # for annotations only: the state does not need the reader at run time
    from mailer.reading.classify import Kind
    from mailer.reading.decide import Answer, EventStatus

# --- tables -----------------------------------------------------------------------------------

DELIVERIES = "deliveries"  # Delivery by `delivery_key`: "<kind>:<contact key>"
SUPPRESSIONS = "suppressions"  # Suppression by address, or by an erased person's hash
META = "meta"  # Meta: "salt", "watcher_first_start", "state_version"
INBOUND = "inbound"  # InboundMessage by the message's content hash
REGISTRATIONS = "registrations"  # Registration by the registrant's address (lower case)
ANSWERS = "answers"  # AnswerRecord by the key of the message it answers
MAILBOX = "mailbox"  # MailboxPointer by IMAP folder
MESSAGES = "messages"  # the folder, in the state folder, of the raw .eml files

# --- statuses ---------------------------------------------------------------------------------


class Status(StrEnum):
    """A delivery's state (`Delivery.status`)."""

    SENT = "sent"
    FAILED = "failed"  # permanent refusal: not retried
    DEFERRED = "deferred"  # temporary failures used up this run: the next run retries
    # Never stored as a status: a sent delivery whose `bounced` names a DSN counts as this.
    BOUNCED = "bounced"
    # Nor this: one whose `undelivered` names a notice that the MTA gave up retrying (a 4xx):
    # not delivered, for a temporary reason; not suppressed, not sent again by `send`.
    UNDELIVERED = "undelivered"


class DeliveryKind(StrEnum):
    """What a delivery sent: the invitation, or a reminder (`Delivery.kind`).

    A reminder's kind also names its events, "reminder:<id>+<id>", so that it is sent once per
    contact per event: this is the part before the colon, and the reminder template's name.
    """

    INVITATION = "invitation"
    REMINDER = "reminder"


class SuppressionReason(StrEnum):
    """Why an address is never mailed again (`Suppression.reason`)."""

    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"  # marked our message as spam (ARF, RFC 5965): never mail again
    ERASED = "erased"  # RODO: kept under the person's salted hash


class RegistrationStatus(StrEnum):
    """A registration's state (`Registration.status`)."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # the official is asked to correct the form
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # an incomplete form completed under another address


# What staff see of registrations: a superseded one lives on in the history of the other.
CURRENT_STATUSES = (RegistrationStatus.COMPLETE, RegistrationStatus.INCOMPLETE,
                    RegistrationStatus.CANCELLED)


class AnswerStatus(StrEnum):
    """An answer's state in the outbox (`AnswerRecord.status`)."""

    PENDING = "pending"  # recorded, not yet accepted by the SMTP server
    HELD = "held"  # waits for staff: the sender was not verified (`held`, issue 12)
    SENT = "sent"
    FAILED = "failed"  # refused permanently (5xx), or could not be built or sent (`error`)


class Resolution(StrEnum):
    """How a human closed a review item (`ReviewResolution.how`)."""

    HANDLED = "handled"  # looked at; nothing changed
    REGISTERED = "registered"  # the person registered with the fields a human read
    RELEASED = "released"  # the held answer approved: it goes out with the next pass


# --- documents --------------------------------------------------------------------------------


class Delivery(TypedDict, total=False):
    """One message of the campaign to one contact; erased, only kind, status and time remain."""

    key: str
    kind: Required[str]  # a DeliveryKind, or "reminder:" and the event ids
    email: str
    contact: Required[str]  # the contact's key, or the erased person's hash
    status: Required[Status]
    message_id: str
    at: Required[str | None]  # ISO time of the last attempt
    attempts: int
    code: int | None  # the SMTP server's reply code
    reply: str  # and its text
    source: str  # the contact list the address came from
    bounced: str  # the inbound key of the DSN that reported it undelivered
    undelivered: str  # the inbound key of a notice that the MTA gave up on a temporary failure
    erased: bool


class Suppression(TypedDict, total=False):
    """An address never to mail again."""

    key: str
    reason: Required[SuppressionReason]
    message: str  # the inbound key of the unsubscribe or the DSN (none for an erasure)
    at: Required[str]


class Meta(TypedDict, total=False):
    """The service's own facts, one document per key."""

    key: str
    value: str  # "salt": hex, so hashes of erased people match nothing outside this state
    at: str  # "watcher_first_start": ISO time; nothing received before it is answered
    version: int  # "state_version": the shape of the documents (mailer.migrate)


class InvitationMatch(TypedDict):
    """The invited contact a reply was matched to, and by what."""

    contact: str
    city: str
    by: str  # "message-id", "address" or "domain"


class StoredProblem(TypedDict):
    """One thing the official has to correct, in Polish."""

    field: str
    message: str


class WhatWasRead(TypedDict):
    """What the reader understood of a message (`reading_json`'s registrants and errors)."""

    registrants: list[dict[str, Any]]  # as in `inspect --json`: name … phone, events: id → status
    errors: list[StoredProblem]
    bounced: list[str]


class Effects(TypedDict, total=False):
    """What a message changed (`Ledger.apply`)."""

    registrations: list[str]  # keys of the registrations made, changed or cancelled
    suppressed: list[str]
    cancelled: list[str]  # event ids
    withheld: list[str]  # keys of other people's registrations the message would change
    undelivered: list[str]  # a notice that the MTA gave up retrying (not suppressed)
    not_suppressed: list[str]  # failed addresses of a notice not about our mail to them
    bounce_review: StoredReason  # why (Code.BOUNCE_NOT_SENT / BOUNCE_NOT_OURS, issue 12)


class ReviewResolution(TypedDict, total=False):
    """Who closed a review item, when and how."""

    how: Required[Resolution]
    by: Required[str]
    at: Required[str]
    note: str  # handled
    registrations: list[str]  # registered


# A reason as stored: a code and its parameters (mailer.reasons), or the English sentence that
# releases before the codes wrote.
StoredReason = str | dict[str, str]


class InboundMessage(TypedDict, total=False):
    """One message read from the inbox; its raw bytes are in `path`."""

    key: str
    uid: Required[int]
    uidvalidity: Required[int]
    size: Required[int]
    headers_only: Required[bool]  # over the size limit: only the headers were fetched
    received: Required[str]  # ISO INTERNALDATE
    sender: Required[str]
    subject: Required[str]
    message_id: Required[str]
    kind: Required[Kind]
    reason: Required[StoredReason]  # why it is of this kind
    automated: Required[StoredReason | None]  # why a machine sent it
    path: Required[str]  # "messages/<key>.eml": see `message_path`
    invitation: Required[InvitationMatch | None]
    read: Required[WhatWasRead]
    review: Required[StoredReason | None]  # why a human should look at it
    processed: Required[str]  # ISO time
    answer: Required[Answer | None]
    refusal: Required[StoredReason | None]  # why it gets no answer though one was due
    backlog: Required[bool]  # received before the campaign started
    effects: Required[Effects]
    resolved: ReviewResolution


class Registration(TypedDict, total=False):
    """One person registered (or trying to): the values read, each event's standing."""

    key: str
    email: Required[str | None]
    name: Required[str | None]
    position: Required[str | None]
    city: Required[str | None]
    phone: Required[str | None]
    events: Required[dict[str, EventStatus]]  # event id → standing
    requested: Required[list[str]]  # event ids as the form named them
    status: Required[RegistrationStatus]
    problems: Required[list[StoredProblem]]
    warnings: Required[list[str]]
    values: Required[dict[str, str]]  # the form's fields as read, for completing it later
    sender: Required[str]
    received: Required[str]  # ISO time of the message
    messages: Required[list[str]]  # inbound keys, oldest first
    invitation: Required[InvitationMatch | None]
    history: Required[list[dict[str, Any]]]  # earlier versions (without their history)
    updated: Required[str]  # ISO time
    superseded_by: str  # the key of the registration that completed this one


class AnswerRegistrant(TypedDict):
    """A registrant as an answer's template shows them (event ids, resolved at render)."""

    name: str | None
    position: str | None
    city: str | None
    email: str | None
    phone: str | None
    confirmed: list[str]
    late: list[str]
    problems: list[str]
    warnings: list[str]


class AnswerRecord(TypedDict, total=False):
    """An answer in the outbox: everything to build it again after a restart."""

    key: str
    inbound: Required[str]  # the key of the message answered
    to: Required[str]
    template: Required[Answer]
    status: Required[AnswerStatus]
    attempts: Required[int]
    created: Required[str]  # ISO time of the decision
    message_id: Required[str]
    in_reply_to: Required[str]
    references: Required[list[str]]
    subject: Required[str]
    registrants: Required[list[AnswerRegistrant]]
    cancelled_events: Required[list[str]]
    received: Required[str]  # ISO time of the message answered
    code: int | None  # the SMTP server's reply to the last attempt
    reply: str
    sent: str  # ISO time
    error: StoredReason  # why it could not be built or sent (Code.ANSWER_FAILED, issue 12)
    held: StoredReason  # why it waits for staff (Code.ANSWER_HELD, issue 12)
    released: ReviewResolution  # who approved a held answer, and when


class MailboxPointer(TypedDict, total=False):
    """How far an IMAP folder has been read."""

    key: str
    uidvalidity: Required[int]
    last_uid: Required[int]


# --- where the raw messages are ---------------------------------------------------------------


def message_record(key: str) -> str:
    """What an inbound message's `path` holds: its raw .eml relative to the state folder."""
    return f"{MESSAGES}/{key}.eml"


def reading_file(raw: Path) -> Path:
    """Where what was read of the message in `raw` (its .eml) is kept for the web view."""
    return raw.with_suffix(".json")


def relative_message(stored: str) -> PurePath:
    """A stored `path` relative to the state folder. Before state version 3 it was absolute
    (where the folder was then: issue 12); the watcher always wrote `<folder>/messages/<key>.eml`,
    so an absolute one counts by its last two parts wherever the folder is now."""
    path = PurePath(stored)
    if path.is_absolute() and path.parent.name == MESSAGES:
        return PurePath(MESSAGES, path.name)
    return path


def message_path(folder: Path, stored: object) -> Path | None:
    """The raw .eml file of an inbound message whose `path` is `stored`, in the state folder
    `folder`; None for none, and for a path that leads anywhere but a file of `folder/messages`
    (a damaged or hostile state must not make `forget` delete or the web serve anything else)."""
    if not isinstance(stored, str) or not stored:
        return None
    path = relative_message(stored)
    if path.is_absolute() or path.parent != PurePath(MESSAGES) or path.name in ("", ".", ".."):
        return None
    file = folder / path
    try:  # no symbolic link out of the folder either
        inside = file.resolve().parent == (folder / MESSAGES).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return file if inside else None
