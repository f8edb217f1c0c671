"""The web view's actions (POST): each checks the CSRF token, takes the writer's lock for its
own short write, and goes through the same code as the CLI — which writes the audit log."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer import erase, staff
from mailer.audit import AuditLog, web_actor
from mailer.errors import MailerError, StateLockedError
from mailer.models import INBOUND, Resolution
from mailer.reading.validate import validate_draft
from mailer.store import Store, open_state
from mailer.web.pages import review_item_page
from mailer.web.views import FIELD_PL

if TYPE_CHECKING:
    from mailer.web.app import WebApp

log = logging.getLogger(__name__)
T = TypeVar("T")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def same_origin(request: Request) -> bool:
    """The POST comes from a page of this server (Origin, else Referer; neither: a script,
    which still needs the CSRF token)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.headers.get("host")


class Actions:
    """Sign in and out, resolve a review item, erase a person."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    async def _form(self, request: Request) -> FormData | None:
        """The posted form when its CSRF token is this session's, else None."""
        form = await request.form()
        given = _text(form, "csrf")
        expected = getattr(request.state, "csrf", "")
        if not given or not expected or not secrets.compare_digest(given, expected):
            return None
        return form

    @staticmethod
    def _refused() -> Response:
        return Response("Brak lub nieprawidłowy token CSRF: odśwież stronę i spróbuj ponownie.",
                        status_code=403, media_type="text/plain")

    def _write(self, change: Callable[[Store, AuditLog], T]) -> T:
        """One change under the writer's lock (StateLockedError while `mailer run` holds it)."""
        settings = self.web.settings
        with open_state(settings.storage, writer=True) as store:
            return change(store, AuditLog(settings.storage, actor=web_actor()))

    def _locked(self, request: Request, err: StateLockedError) -> Response:
        pid = re.search(r"pid ([^)]+)\)", str(err))
        holder = f" (pid {pid.group(1)})" if pid else ""
        return self.web.render(
            request, "message.html.j2", status=409, title="Zmiana teraz niemożliwa",
            text=f"Stan kampanii zapisuje teraz inny proces mailer{holder} – zwykle działająca "
                 "usługa „mailer run”. Niczego nie zmieniono. Zatrzymaj usługę (systemctl "
                 "stop mailer) lub poczekaj, aż skończy, i spróbuj ponownie; przeglądanie "
                 "działa cały czas.", detail=str(err))

    async def login(self, request: Request) -> Response:
        form = await request.form()
        # The pasted token is spent as the printed URL's is: it signs in once (issue 12).
        refusal = (self.web.spend_token(_text(form, "token")) if same_origin(request)
                   else "Nieprawidłowy token.")
        if refusal:
            return self.web.login_page(status=401, error=refusal)
        return self.web.signed_in(RedirectResponse("/", status_code=303), request)

    async def logout(self, request: Request) -> Response:
        if await self._form(request) is None:
            return self._refused()
        self.web.sessions.drop(request.cookies.get(self.web.cookie))
        response = self.web.login_page(status=200, error="Wylogowano.")
        response.delete_cookie(self.web.cookie, path="/")
        return response

    async def handled(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return self._refused()
        key, now = request.path_params["key"], self.web.clock.now()
        note = _text(form, "note")
        try:
            await run_in_threadpool(self._write, lambda store, audit: staff.mark_handled(
                store, audit, key, now=now, note=note))
        except StateLockedError as err:
            return self._locked(request, err)
        except MailerError as err:
            return review_item_page(self.web, request, key, error=str(err), status=400)
        log.info("web: review %s marked handled", key[:12])
        return RedirectResponse(f"/review?done={Resolution.HANDLED}", status_code=303)

    async def release(self, request: Request) -> Response:
        """Approve a held answer (sender not verified): the service sends it next pass."""
        if await self._form(request) is None:
            return self._refused()
        key, now = request.path_params["key"], self.web.clock.now()
        try:
            await run_in_threadpool(self._write, lambda store, audit: staff.release_answer(
                store, audit, key, now=now))
        except StateLockedError as err:
            return self._locked(request, err)
        except MailerError as err:
            return review_item_page(self.web, request, key, error=str(err), status=400)
        log.info("web: review %s answer released", key[:12])
        return RedirectResponse(f"/review?done={Resolution.RELEASED}", status_code=303)

    async def register(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return self._refused()
        web, key = self.web, request.path_params["key"]
        values = {f: _text(form, f) for f in FIELD_PL if f != "event"}
        events = [e for e in form.getlist("event") if isinstance(e, str)]
        given = {**{k: v for k, v in values.items() if v}, "event": ", ".join(events)}
        try:
            doc = await run_in_threadpool(self._write, lambda store, audit:
                                          staff.register_by_hand(store, audit, web.settings,
                                                                 key, given, clock=web.clock))
        except StateLockedError as err:
            return self._locked(request, err)
        except MailerError as err:
            sender = str((web.state.store().get(INBOUND, key) or {}).get("sender", ""))
            problems = validate_draft(given, sender=sender, events=web.settings.events).problems
            return review_item_page(web, request, key, values={**values, "events": events},
                                    problems=list(problems), status=400,
                                    error="Nie zarejestrowano: popraw zaznaczone pola."
                                    if problems else f"Nie zarejestrowano: {err}")
        log.info("web: review %s registered by hand", key[:12])
        address = values["email"] or str(doc.get("sender", ""))
        query = urlencode({"address": address, "done": Resolution.REGISTERED})
        return RedirectResponse(f"/person?{query}", status_code=303)

    async def erase(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return self._refused()
        web, address = self.web, _text(form, "address")
        if not address or _text(form, "confirm") != "yes":
            found = staff.person(web.state.store(), address) if address else None
            return web.render(request, "erase.html.j2", status=400,
                              title="Usuwanie danych (RODO)", address=address, found=found,
                              error="Zaznacz potwierdzenie, aby usunąć dane.")
        now = web.clock.now()
        try:
            erasure = await run_in_threadpool(self._write, lambda store, audit: erase.forget(
                store, audit, address, now=now))
        except StateLockedError as err:
            return self._locked(request, err)
        log.info("web: erased %s (%d records)", erasure.subject, erasure.documents)
        return web.render(request, "erased.html.j2", title="Dane usunięte", erasure=erasure)


def action_routes(web: WebApp) -> list[Route]:
    """POST routes; the guard has checked the session and the Origin, each checks CSRF."""
    actions = Actions(web)
    return [
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route("/review/{key}/handled", actions.handled, methods=["POST"]),
        Route("/review/{key}/release", actions.release, methods=["POST"]),
        Route("/review/{key}/register", actions.register, methods=["POST"]),
        Route("/erase", actions.erase, methods=["POST"]),
    ]
