"""Pure: whose word a sender is taken for, and what of their message is answered.

A forged From turns the service into a megaphone: a ministry confirmation, repeating the
stranger's text, mailed to the forged sender's victim (issue 12). So an answer goes out
without review only to a sender who is plausibly who the From says (`Ledger.unverified`):
authenticated by our MX, an invited contact (their address or their office's domain), or
replying in the thread of a message we sent. The same office's domain may also change a
colleague's registration (`Ledger` holds back other changes of someone else's).

A webmail domain is nobody's office: a contact at gmail.com vouches for no other Gmail user.
An answer confirms exactly the forms that were stored (`stored_part`); what was not stored,
or not answered, is put up for review (`review_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mailer.reading.classify import Kind
from mailer.reading.decide import decide_registration
from mailer.reading.understand import Reading
from mailer.reading.validate import Registrant
from mailer.reasons import Code, Reason
from mailer.settings import Event

# Public webmail services, Polish and international: their users share no town hall.
FREE_MAIL = frozenset({
    "wp.pl", "o2.pl", "go2.pl", "tlen.pl", "onet.pl", "onet.eu", "op.pl", "vp.pl",
    "poczta.onet.pl", "vip.onet.pl", "autograf.pl", "buziaczek.pl", "spoko.pl",
    "interia.pl", "interia.eu", "interia.com", "poczta.fm", "gazeta.pl", "int.pl",
    "gmail.com", "googlemail.com", "outlook.com", "outlook.pl", "hotmail.com", "live.com",
    "msn.com", "yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com",
    "proton.me", "protonmail.com", "pm.me", "gmx.com", "gmx.net", "gmx.de", "mail.com",
    "yandex.com", "zoho.com", "tutanota.com",
})


def domain_of(address: str) -> str:
    """The domain of an address, lower case ("" when it has none)."""
    return address.rpartition("@")[2].strip().lower()


def office_domain(address: str) -> str:
    """The domain `address` shares with its colleagues; "" for a webmail one or none."""
    domain = domain_of(address)
    return "" if domain in FREE_MAIL else domain


def same_office(one: str, other: str) -> bool:
    """Both addresses belong to one organisation's domain (not a webmail one)."""
    domain = office_domain(one)
    return bool(domain) and domain == office_domain(other)


def registration_key(registrant: Registrant, sender: str) -> str:
    """The key a registrant is stored under: their e-mail, else the sender's address."""
    return (registrant.email or sender).lower()


def stored_part(reading: Reading, effects: dict[str, Any], events: Sequence[Event]) -> Reading:
    """`reading` with only the registrants `effects` registered, decided again: the answer
    confirms exactly what was stored, never forms over a limit or held back (issue 12)."""
    kept = effects.get("registrations")
    if reading.kind is not Kind.REGISTRATION or kept is None:
        return reading
    registrants = tuple(r for r in reading.registrants
                        if registration_key(r, reading.sender) in kept)
    if len(registrants) == len(reading.registrants):
        return reading
    return replace(reading, registrants=registrants,
                   decision=decide_registration(registrants, reading.received, events))


def review_reason(reading: Reading, *, headers_only: bool, backlog: bool,
                  effects: dict[str, Any], held: Reason | None) -> Reason | None:
    """Why a human should look at this message, or None (an incomplete form is not such a
    case: the official is asked to correct it). `held`: why its answer waits for review."""
    if headers_only:
        return Reason.of(Code.OVERSIZE)
    if backlog:
        return Reason.of(Code.BACKLOG_REVIEW)
    if reading.forged:
        return Reason.of(Code.FORGED, verdict=reading.forged)
    not_understood = Reason.of(Code.NOT_UNDERSTOOD) if reading.kind is Kind.OTHER else None
    # RODO art. 17: the unsubscribe is applied, erasing the data is staff's `forget` (issue 13).
    erasure = (Reason.of(Code.ERASURE_REQUEST)
               if reading.classification.reason.code is Code.ERASURE_PHRASE else None)
    return _unapplied(reading, effects) or held or erasure or not_understood


def _unapplied(reading: Reading, effects: dict[str, Any]) -> Reason | None:
    """Why some forms of the message were not registered (or a bounce not applied), or None."""
    if effects.get("bounce_review"):
        return Reason.from_doc(effects["bounce_review"])
    withheld = effects.get("withheld")
    registered = effects.get("registrations")
    if withheld:
        shown = ", ".join(withheld[:5]) + (", …" if len(withheld) > 5 else "")
        return Reason.of(Code.FOREIGN_CHANGE, registrations=shown)
    if registered is not None and len(registered) < len(reading.registrants):
        return Reason.of(Code.TOO_MANY_REGISTRANTS)
    return None
