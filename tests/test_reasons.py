"""Tests for reasons: every code has an English and a Polish text, stored reasons read back."""

from __future__ import annotations

import pytest

from mailer.reasons import ENGLISH, POLISH, Code, Reason, fields, from_english


@pytest.mark.parametrize("code", list(Code))
def test_every_code_has_both_texts_with_the_same_parameters(code: Code) -> None:
    """A code without its English (logs) or Polish (clerk) text, or with other parameters, fails."""
    assert code in ENGLISH and code in POLISH
    assert ENGLISH[code].strip() and POLISH[code].strip()
    assert fields(ENGLISH[code]) == fields(POLISH[code])
    if code is not Code.LEGACY:
        assert ENGLISH[code] != POLISH[code]


@pytest.mark.parametrize("code", [code for code in Code if code is not Code.LEGACY])
def test_stored_reason_reads_back(code: Code) -> None:
    """A reason survives the state (to_doc/from_doc) and its English sentence is recognised."""
    reason = Reason.of(code, **{name: f"x{name}" for name in fields(ENGLISH[code])})
    assert Reason.from_doc(reason.to_doc()) == reason
    assert from_english(reason.english()) == reason


def test_sentences_stored_by_earlier_releases() -> None:
    """Sentences the state kept before codes become codes; an unknown one is kept as written."""
    old = from_english("over daily limit (5 of 5 answers to this sender today)")
    assert old == Reason.of(Code.DAILY_LIMIT, count=5, limit=5)
    assert Reason.from_doc("confirmed: pim; late: smart-city") == Reason.of(
        Code.CONFIRMED_SOME_LATE, confirmed="pim", late="smart-city")
    assert Reason.from_doc("sender not authenticated: dmarc=fail at mx") == Reason.of(
        Code.NOT_AUTHENTICATED, verdict="dmarc=fail at mx")
    unknown = Reason.from_doc("something a later release will say")
    assert unknown is not None and unknown.code is Code.LEGACY
    assert unknown.polish() == "something a later release will say"
    assert Reason.from_doc(None) is None
    assert Reason.from_doc({"code": "no-such-code"}) == Reason.of(
        Code.LEGACY, text="{'code': 'no-such-code'}")


def test_a_reason_needs_every_parameter_its_text_names() -> None:
    """Reason.of refuses a reason whose text would show a hole."""
    with pytest.raises(ValueError, match="verdict"):
        Reason.of(Code.FORGED)
