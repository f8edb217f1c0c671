"""Which addresses a bounce or complaint may suppress: only mail we sent, by a notice about it.

Anyone can write a bounce (issue 12: a forged one silenced any address). A notice suppresses an
address only when we sent to that address (a delivery or an answer is recorded) and the notice
refers to that message: its Message-ID is in the returned copy (or the notice's References), or,
when the notice returns no Message-ID at all, our envelope sender is in the returned part.
Anything else goes to review with the reason, and suppresses nothing.

A notice that the MTA gave up after retrying a 4xx (`expired`) suppresses nothing either: the
delivery is marked `undelivered` (not delivered, temporary reason) for the organiser. `send`
does not send those again by itself — the server may yet have delivered a copy, and a second
invitation is worse than a late one; `mailer remind` still reaches them (they are not
suppressed), and the organiser sees them in `status` and `show`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from mailer.reading.classify import Classification
from mailer.reasons import Code, Reason


@dataclass(frozen=True)
class BounceVerdict:
    """What a notice may change, and what it may not (for review)."""

    suppress: tuple[str, ...] = ()  # failed for good, a notice about our message to them
    undelivered: tuple[str, ...] = ()  # the MTA gave up on a temporary failure: marked only
    not_sent: tuple[str, ...] = ()  # we sent nothing there
    not_ours: tuple[str, ...] = ()  # the notice does not refer to our message to them

    def review(self) -> Reason | None:
        """Why a human should look at the notice, or None."""
        if self.not_sent:
            return Reason.of(Code.BOUNCE_NOT_SENT, addresses=_shown(self.not_sent))
        if self.not_ours:
            return Reason.of(Code.BOUNCE_NOT_OURS, addresses=_shown(self.not_ours))
        return None


def judge_bounce(found: Classification, *, sent_ids: Callable[[str], Collection[str]],
                 recipient_of: Callable[[str], str | None],
                 envelope: Collection[str]) -> BounceVerdict:
    """Judge a bounce (or complaint) classification against what we sent.

    `sent_ids(address)`: the Message-IDs of what we sent to that address (none: never mailed);
    `recipient_of(message_id)`: whom our message with that id went to, or None;
    `envelope`: our addresses (envelope sender, From, Reply-To).
    """
    targets = list(found.bounced)
    if found.reason.code is Code.COMPLAINT and not targets:
        # Providers often redact the complainant; our Message-ID in the returned copy says who.
        targets = sorted({r for r in map(recipient_of, found.refs) if r})
    suppress, not_sent, not_ours = [], [], []
    for address in targets:
        target, ours = _check(address, found, sent_ids, envelope)
        if target is None:
            not_sent.append(address)
        elif ours:
            suppress.append(target)
        else:
            not_ours.append(address)
    undelivered = []
    for address in found.expired:
        target, ours = _check(address, found, sent_ids, envelope)
        if target is not None and ours:
            undelivered.append(target)
    return BounceVerdict(tuple(dict.fromkeys(suppress)), tuple(dict.fromkeys(undelivered)),
                         tuple(not_sent), tuple(not_ours))


def _check(address: str, found: Classification, sent_ids: Callable[[str], Collection[str]],
           envelope: Collection[str]) -> tuple[str | None, bool]:
    """The address we sent to for this failed one (itself, or the one that forwarded to it),
    or None; and whether the notice refers to our message to it."""
    candidates = [address, *(original for final, original in found.forwarded
                             if final == address)]
    for target in candidates:
        ids = set(sent_ids(target))
        if not ids:
            continue
        if ids & set(found.refs):
            return target, True
        if not found.refs and {s.lower() for s in found.senders} & {e.lower() for e in envelope}:
            return target, True  # no Message-ID returned at all: our envelope in the copy
        return target, False
    return None, False


def _shown(addresses: tuple[str, ...]) -> str:
    return ", ".join(addresses[:5]) + (", …" if len(addresses) > 5 else "")
