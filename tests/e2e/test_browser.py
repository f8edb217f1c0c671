"""The clerk's web view in a real browser: Debian's chromium driven by Playwright.

Screenshots of each step are left in tests/e2e/output/ (git-ignored; CI keeps them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Workspace
from tests.dovecot import Dovecot
from tests.e2e.realrun import QUESTION, WEB_NOW, ZOFIA, real_run
from tests.system import missing

CHROMIUM = Path(os.environ.get("MAILER_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parent / "output"
# The machine has no network: nothing in the background may try to reach it.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"]
PIM = "Partnerska Inicjatywa Miast 2021–2023 – nabór miast"


@pytest.fixture
def served(tmp_path: Path, dovecot_server: Dovecot) -> Iterator[tuple[Workspace, str]]:
    """State from a real run, served by the real `mailer web`: (workspace, the printed URL)."""
    with real_run(tmp_path / "ws", dovecot_server) as run:
        env = {**os.environ, "MAILER_CONFIG": str(run.ws.config), "MAILER_NOW": WEB_NOW}
        proc = subprocess.Popen([sys.executable, "-m", "mailer", "web", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
            assert found, f"no URL printed: {line!r}"
            yield run.ws, found.group(0)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless chromium from Debian (never a downloaded browser build); missing is a failure."""
    if not CHROMIUM.exists():
        pytest.fail(missing(f"{CHROMIUM} is missing (Debian: chromium; or MAILER_CHROMIUM=path)"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def shot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def sign_in(page: Page, url: str) -> None:
    """The printed URL: the token is traded for a strict HTTP-only cookie and leaves the URL."""
    page.goto(url)
    assert page.url == f"{url.split('/?', 1)[0]}/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Panel kampanii")
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    expect(page.locator("svg.chart")).to_be_visible()
    shot(page, "01-panel")


def open_person(page: Page) -> None:
    """Cities sorted by status, then a registration found by search, then that person."""
    nav = page.get_by_role("navigation")
    nav.get_by_role("link", name="Miasta").click()
    page.get_by_role("link", name="Status").click()
    expect(page.locator("tbody th").first).to_have_text("Łódź")  # needs review: first (issue 13)
    shot(page, "02-miasta")
    nav.get_by_role("link", name="Zgłoszenia").click()
    page.get_by_label("Szukaj").fill("krakow")
    page.get_by_role("button", name="Filtruj").click()
    page.get_by_role("link", name=ZOFIA[0]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Osoba: {ZOFIA[1]}")
    expect(page.locator('pre.mail mark[data-field="city"]')).to_have_text("Kraków")
    expect(page.locator('pre.mail mark[data-field="name"]').first).to_have_text(ZOFIA[0])
    shot(page, "03-osoba")


def resolve_review_item(page: Page) -> None:
    """Register the sender of a message the service did not understand."""
    nav = page.get_by_role("navigation")
    nav.get_by_role("link", name=re.compile(r"Do przejrzenia \(2\)")).click()
    page.get_by_role("link", name="Pytanie o nagranie").click()
    expect(page.get_by_label("E-mail")).to_have_value(QUESTION)
    page.get_by_label("Imię i nazwisko").fill("Ola Kot")
    page.get_by_label("Miasto / urząd").fill("Poznań")
    page.get_by_label(PIM).check()
    shot(page, "04-do-przejrzenia")
    page.get_by_role("button", name="Zarejestruj z tymi polami").click()
    expect(page.get_by_role("status")).to_contain_text("Zarejestrowano osobę")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Osoba: {QUESTION}")
    expect(nav.get_by_role("link", name=re.compile(r"Do przejrzenia \(1\)"))).to_be_visible()
    shot(page, "05-zarejestrowano")


def download_xlsx(page: Page) -> set[str]:
    """The registrations page's XLSX link: the names on its first sheet."""
    page.get_by_role("navigation").get_by_role("link", name="Zgłoszenia").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="XLSX").click()
    saved = OUTPUT / "zgloszenia.xlsx"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "zgloszenia-2020-10-29.xlsx"
    shot(page, "06-zgloszenia")
    sheet = openpyxl.load_workbook(saved)["Wszystkie"]
    return {str(row[1]) for row in sheet.iter_rows(min_row=2, values_only=True)}


def test_clerk_signs_in_reads_resolves_and_downloads(served: tuple[Workspace, str],
                                                      browser: Browser) -> None:
    """Log in with the printed URL, open a person, resolve a review item, download the XLSX."""
    ws, url = served
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="pl-PL",
                                  accept_downloads=True)
    page = context.new_page()
    sign_in(page, url)
    open_person(page)
    resolve_review_item(page)
    assert {"Ola Kot", ZOFIA[0]} <= download_xlsx(page)
    context.close()
    assert '"how": "registered"' in (ws.state / "audit.log").read_text()
    stranger = browser.new_context().new_page()  # no cookie: the login page, no data
    response = stranger.goto(f"{url.split('/?', 1)[0]}/registrations")
    assert response is not None and response.status == 401
    expect(stranger.get_by_label("Token dostępu")).to_be_visible()
    assert ZOFIA[0] not in stranger.content()
