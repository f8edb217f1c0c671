"""The web view's pages (GET): dashboard, cities, registrations and exports, person, review."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mailer.audit import AuditLog, web_actor
from mailer.export import record_export, to_csv, to_xlsx
from mailer.models import CURRENT_STATUSES, INBOUND, Resolution, message_path
from mailer.reading.validate import Problem
from mailer.settings import Event
from mailer.staff import held_answer, person
from mailer.web.views import (
    CITY_COLUMNS,
    CITY_STATUS_PL,
    FIELD_PL,
    STATUS_PL,
    cities,
    dashboard,
    message_view,
    person_view,
    prefill,
    registrations,
    waiting_item,
)

if TYPE_CHECKING:
    from mailer.web.app import WebApp

KEY = re.compile(r"^[0-9a-f]{8,64}$")  # message keys are hex digests
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NOTICES: dict[str, str] = {  # by `?done=`: how a review item was just resolved
    Resolution.HANDLED: "Wiadomość oznaczono jako załatwioną; zapisano to w dzienniku audytu.",
    Resolution.REGISTERED: "Zarejestrowano osobę z podanymi polami; zapisano to w dzienniku "
                           "audytu.",
    Resolution.RELEASED: "Odpowiedź zatwierdzono: usługa wyśle ją przy najbliższym sprawdzeniu "
                         "skrzynki; zapisano to w dzienniku audytu.",
}


def _param(request: Request, name: str, allowed: Any = None) -> str:
    """A query parameter; a value outside `allowed` counts as not given."""
    value = request.query_params.get(name, "").strip()
    return value if allowed is None or value in allowed else ""


class Pages:
    """Each method is one page; Starlette runs these (blocking reads) in its thread pool."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    @property
    def event_ids(self) -> list[str]:
        return [e.id for e in self.web.settings.events]

    def _notice(self, request: Request) -> str:
        return NOTICES.get(request.query_params.get("done", ""), "")

    def login(self, request: Request) -> Response:
        return self.web.login_page(status=200)

    def dashboard(self, request: Request) -> Response:
        web = self.web
        contacts = web.contacts()
        data = web.cached(("dashboard", id(contacts)),
                          lambda store: dashboard(store, web.settings, contacts))
        return web.render(request, "dashboard.html.j2", title="Panel", data=data,
                          notice=self._notice(request))

    def cities(self, request: Request) -> Response:
        web = self.web
        params = {"sort": _param(request, "sort", [*CITY_COLUMNS, *self.event_ids]),
                  "dir": _param(request, "dir", ("asc", "desc")),
                  "status": _param(request, "status", CITY_STATUS_PL),
                  "q": _param(request, "q")}
        contacts = web.contacts()
        rows = web.cached(("cities", id(contacts), *params.values()), lambda store: cities(
            store, contacts, self.event_ids, sort=params["sort"],
            descending=params["dir"] == "desc", status=params["status"], query=params["q"]))
        columns = list(CITY_COLUMNS.items())
        headers = [*columns[:4], *((e, e) for e in self.event_ids), columns[4]]
        return web.render(request, "cities.html.j2", title="Miasta", rows=rows,
                          params=params, headers=headers, statuses=CITY_STATUS_PL,
                          events=web.settings.events)

    def _records(self, request: Request) -> tuple[dict[str, str], list[dict[str, Any]]]:
        params = {"event": _param(request, "event", self.event_ids),
                  "status": _param(request, "status", CURRENT_STATUSES),
                  "q": _param(request, "q")}
        records = self.web.cached(("registrations", *params.values()), lambda store: (
            registrations(store, event=params["event"], status=params["status"],
                          query=params["q"])))
        return params, records

    def _events(self, chosen: str) -> list[Event]:
        settings = self.web.settings
        return [settings.event(chosen)] if chosen else list(settings.events)

    def registrations(self, request: Request) -> Response:
        params, records = self._records(request)
        return self.web.render(request, "registrations.html.j2", title="Zgłoszenia",
                               records=records, params=params, statuses=STATUS_PL,
                               events=self.web.settings.events,
                               shown=self._events(params["event"]))

    def _filename(self, suffix: str) -> dict[str, str]:
        today = self.web.clock.now().astimezone(self.web.settings.campaign.timezone).date()
        return {"Content-Disposition": f'attachment; filename="zgloszenia-{today}.{suffix}"'}

    def _audit(self, action: str, **details: Any) -> None:
        web = self.web
        audit = AuditLog(web.settings.storage, actor=web_actor())
        audit.record(action, at=web.clock.now(), **details)
        audit.flush()

    def _exported(self, fmt: str, params: dict[str, str], rows: int) -> None:
        record_export(self.web.settings.storage, actor=web_actor(),
                      at=self.web.clock.now(), fmt=fmt, rows=rows,
                      filters=dict(params), to="browser")

    def export_csv(self, request: Request) -> Response:
        params, records = self._records(request)
        self._exported("csv", params, len(records))
        return Response(to_csv(records, self._events(params["event"])),
                        media_type="text/csv; charset=utf-8", headers=self._filename("csv"))

    def export_xlsx(self, request: Request) -> Response:
        params, records = self._records(request)
        with tempfile.TemporaryDirectory(prefix="mailer-web-") as folder:
            path = Path(folder) / "zgloszenia.xlsx"
            to_xlsx(records, self._events(params["event"]), path,
                    self.web.settings.campaign.timezone)
            data = path.read_bytes()
        self._exported("xlsx", params, len(records))
        return Response(data, media_type=XLSX, headers=self._filename("xlsx"))

    def person(self, request: Request) -> Response:
        web = self.web
        address = _param(request, "address")
        if not address:
            return web.render(request, "person_search.html.j2", title="Osoba")
        # Not kept between requests: it reads the stored readings beside the .eml files,
        # which the state's signature does not cover.
        view = person_view(web.state.store(), web.settings, web.renderer, address)
        found = view.found
        if not (found.registrations or found.inbound or found.answers or found.deliveries):
            return web.render(request, "message.html.j2", status=404, title="Osoba",
                              text=f"Nic nie zapisano o adresie {address}.", detail="")
        return web.render(request, "person.html.j2", title=f"Osoba: {found.address}",
                          view=view, notice=self._notice(request),
                          events=web.settings.events)

    def raw_message(self, request: Request) -> Response:
        key = request.path_params["key"]
        store = self.web.state.store()
        doc = store.get(INBOUND, key) if KEY.match(key) else None
        file = message_path(store.folder, doc.get("path")) if doc else None
        try:
            data = file.read_bytes() if file else None
        except OSError:
            data = None
        if data is None:
            return Response("Nie ma takiej wiadomości.", status_code=404,
                            media_type="text/plain")
        self._audit("download", message=key)
        return Response(data, media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{key}.eml"'})

    def review(self, request: Request) -> Response:
        queue = self.web.review_queue(self.web.state.store())
        return self.web.render(request, "review.html.j2", title="Do przejrzenia",
                               queue=queue, notice=self._notice(request))

    def review_item(self, request: Request) -> Response:
        return review_item_page(self.web, request, request.path_params["key"])

    def erase(self, request: Request) -> Response:
        address = _param(request, "address")
        found = person(self.web.state.store(), address) if address else None
        return self.web.render(request, "erase.html.j2", title="Usuwanie danych (RODO)",
                               address=address, found=found, error="")


def review_item_page(web: WebApp, request: Request, key: str, *,
                     values: dict[str, Any] | None = None,
                     problems: list[Problem] | None = None, error: str = "",
                     status: int = 200) -> HTMLResponse:
    """One message waiting for review: its text, what was read, the two ways to resolve it."""
    store = web.state.store()
    doc = waiting_item(store, key) if KEY.match(key) else None
    if doc is None:
        return web.render(request, "message.html.j2", status=404, title="Do przejrzenia",
                          text="Ta wiadomość nie czeka na przejrzenie (już załatwiona?).",
                          detail="")
    view = message_view(doc, web.settings)
    return web.render(request, "review_item.html.j2", status=status, title="Do przejrzenia",
                      doc=doc, view=view, values=values or prefill(view),
                      problems={p.field: p.message for p in problems or []}, error=error,
                      events=web.settings.events, fields=FIELD_PL,
                      held=held_answer(store, doc["key"]))


def page_routes(web: WebApp) -> list[Route]:
    """GET routes; the guard in `mailer.web.app` has checked the session before any of them."""
    pages = Pages(web)
    return [
        Route("/", pages.dashboard),
        Route("/login", pages.login, methods=["GET"]),
        Route("/cities", pages.cities),
        Route("/registrations", pages.registrations),
        Route("/registrations.csv", pages.export_csv),
        Route("/registrations.xlsx", pages.export_xlsx),
        Route("/person", pages.person),
        Route("/message/{key}.eml", pages.raw_message),
        Route("/review", pages.review),
        Route("/review/{key}", pages.review_item),
        Route("/erase", pages.erase, methods=["GET"]),
    ]
