"""A count before a noun agrees with it, in the English commands and the Polish pages (issue 16)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from mailer.clock import Clock
from mailer.report import CityRow, plural
from mailer.settings import load_settings
from mailer.watcher import WatchReport
from mailer.web.app import WebApp
from mailer.web.views import form_pl, plural_pl

COUNTS = [0, 1, 2, 5, 12, 22, 112]


@pytest.mark.parametrize(("n", "expected"), [
    (0, "0 messages"), (1, "1 message"), (2, "2 messages"), (5, "5 messages"),
    (12, "12 messages"), (22, "22 messages"), (112, "112 messages")])
def test_english_plural(n: int, expected: str) -> None:
    """Only 1 is singular in English; 0, 21 and 101 are plural."""
    assert plural(n, "message", "messages") == expected


@pytest.mark.parametrize(("n", "expected"), [
    (0, "0 wiadomości czeka"), (1, "1 wiadomość czeka"), (2, "2 wiadomości czekają"),
    (5, "5 wiadomości czeka"), (12, "12 wiadomości czeka"), (22, "22 wiadomości czekają"),
    (112, "112 wiadomości czeka")])
def test_polish_plural(n: int, expected: str) -> None:
    """Polish: one for 1, few for 2–4 ending a number but not 12–14, many otherwise."""
    assert plural_pl(n, "wiadomość czeka", "wiadomości czekają", "wiadomości czeka") == expected


def test_polish_forms_of_a_noun_with_three_forms() -> None:
    """A noun whose few and many forms differ: miasto, miasta, miast."""
    forms = [form_pl(n, "miasto", "miasta", "miast") for n in COUNTS]
    assert forms == ["miast", "miasto", "miasta", "miast", "miast", "miasta", "miast"]
    assert [form_pl(n, "a", "b", "c") for n in (3, 4, 13, 14, 21, 23, 104, 111)] == [
        "b", "b", "c", "c", "c", "b", "b", "c"]


def test_watch_summary_with_one_new_message() -> None:
    """"1 new message", not "1 new messages"; other counts keep the wording bench/ reads."""
    assert WatchReport(new=1).summary().startswith("1 new message (none); ")
    assert WatchReport(new=5000).summary().startswith("5000 new messages (none); ")
    assert WatchReport(new=0).summary().startswith("0 new messages (none); ")


def test_city_notes_name_auto_replies_in_the_plural() -> None:
    """The one noun among the notes agrees; the adjectives stay as they are."""
    assert CityRow("Sopot", auto_replies=1).notes() == "1 auto-reply"
    assert CityRow("Sopot", bounced=2, auto_replies=2).notes() == "2 bounced, 2 auto-replies"


@pytest.fixture
def web(make_workspace: Any) -> WebApp:
    """The web app's Jinja environment over a fresh workspace (no server, no state read)."""
    settings = load_settings(make_workspace().config)
    return WebApp(settings, clock=Clock(datetime.fromisoformat("2025-09-01T10:00:00+02:00")),
                  token="test-token-1234567890", port=8025)


def _page(web: WebApp, template: str, **context: Any) -> str:
    return web.templates.get_template(template).render(
        title="test", campaign="test", csrf="", path="/", waiting=0, rehearsal=False, now="",
        **context)


def _queue(n: int) -> list[dict[str, Any]]:
    return [{"key": f"{i:032x}", "received": "", "sender": f"a{i}@example.com", "subject": "",
             "kind": "other", "review": ""} for i in range(n)]


@pytest.mark.parametrize(("n", "caption"), [
    (1, "1 wiadomość czeka"), (2, "2 wiadomości czekają"), (5, "5 wiadomości czeka")])
def test_review_page_caption_agrees(web: WebApp, n: int, caption: str) -> None:
    """The review page's caption as the clerk reads it, rendered by the app's environment."""
    assert f"<caption>{caption}</caption>" in _page(web, "review.html.j2", queue=_queue(n))


def test_cities_page_notes_agree(web: WebApp) -> None:
    """One city with one of each note, one with two, one with five: each in its form."""
    rows = [CityRow(city, review=n, bounced=n, unsubscribed=n, incomplete=n, cancelled=n,
                    auto_replies=n) for city, n in (("Sopot", 1), ("Gdynia", 2), ("Hel", 5))]
    html = _page(web, "cities.html.j2", rows=rows, events=[], headers=[], statuses={},
                 params={"q": "", "status": "", "sort": "", "dir": ""})
    assert "<caption>3 miasta;" in html
    assert ("1 do przejrzenia, 1 odbite, 1 wypisany, 1 niekompletne, 1 anulowane, "
            "1 autoodpowiedź") in html
    assert ("2 do przejrzenia, 2 odbite, 2 wypisane, 2 niekompletne, 2 anulowane, "
            "2 autoodpowiedzi") in html
    assert ("5 do przejrzenia, 5 odbitych, 5 wypisanych, 5 niekompletnych, 5 anulowanych, "
            "5 autoodpowiedzi") in html
