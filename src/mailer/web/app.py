"""`mailer web`: the clerk's pages — audit, review, export, erasure — over the CLI's own code.

Security model (as Jupyter's): the server listens on loopback only and prints one URL with a
random token; the first visit trades it for an HTTP-only, SameSite=Strict session cookie,
and the token is spent: it signs in one browser, once (issue 12). Every redirect goes to a path
on this server.
Every page needs the session; every POST needs the session's CSRF token and a same-origin
Origin (or Referer). Requests naming another Host are refused (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer import reasons
from mailer.clock import Clock, in_zone
from mailer.contacts import Contact, read_contacts
from mailer.errors import MailerError, UsageError
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.staff import review_queue
from mailer.store import Store
from mailer.web.actions import action_routes, same_origin
from mailer.web.memo import PerState
from mailer.web.pages import page_routes
from mailer.web.views import (
    ANSWER_PL,
    CITY_STATUS_PL,
    DELIVERY_PL,
    FIELD_PL,
    KIND_PL,
    SOURCE_PL,
    STANDING_PL,
    STATUS_PL,
    StateCache,
    form_pl,
    plural_pl,
    polish,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_SESSIONS = 64  # browsers signed in at once; the oldest is signed out beyond that
SECURITY_HEADERS = {
    # No script at all; the one stylesheet is inline; the chart is inline SVG.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on POST,
    # which the CSRF check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # personal data: nothing in the browser's cache
}
TOKEN_WRONG = "Nieprawidłowy token."
TOKEN_SPENT = ("Ten link logowania został już użyty – działa tylko raz. Wróć do okna "
               "przeglądarki, w którym jesteś już zalogowany, albo zatrzymaj „mailer web” "
               "(Ctrl-C) i uruchom je ponownie: wypisze nowy link.")
# A redirect target on this server: one "/" not followed by "/" or "\" ("//host" and "/\host"
# are another site to a browser, issue 12), no backslash or control character anywhere.
LOCAL_TARGET = re.compile(r"/(?![/\\])[^\\\x00-\x1f\x7f]*")


def is_local(target: str) -> bool:
    """Whether a redirect to `target` stays on this server (a path, never a scheme or host)."""
    return LOCAL_TARGET.fullmatch(target) is not None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, public: bool) -> None:
    """Serve other machines only when asked twice: --host and --public."""
    if not is_loopback(host) and not public:
        raise UsageError(f"--host {host} would show personal data to other machines",
                         hint="add --public, and serve it only behind a TLS reverse proxy "
                              "(README: the web view)")


@dataclass
class Sessions:
    """Signed-in browsers: session id → CSRF token, in memory (a restart signs all out)."""

    sessions: OrderedDict[str, str] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self) -> str:
        with self.lock:
            sid = secrets.token_urlsafe(32)
            self.sessions[sid] = secrets.token_urlsafe(32)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return sid

    def csrf(self, sid: str | None) -> str | None:
        with self.lock:
            return self.sessions.get(sid) if sid else None

    def drop(self, sid: str | None) -> None:
        with self.lock:
            self.sessions.pop(sid or "", None)


class WebApp:
    """What every page needs: settings, clock, the state reader, templates, sessions."""

    def __init__(self, settings: Settings, *, clock: Clock, token: str, port: int,
                 public: bool = False) -> None:
        self.settings = settings
        self.clock = clock
        self.token = token
        self._token_spent = False
        self._token_lock = threading.Lock()
        self.public = public
        self.cookie = f"mailer_session_{port}"  # cookies ignore ports: one per server
        self.sessions = Sessions()
        self.state = StateCache(settings.storage)
        self.memo = PerState()  # what pages computed, until the state changes (issue 17)
        self.renderer = Renderer(settings, now=clock.now())
        self._contacts: tuple[tuple[Any, ...], list[Contact]] = ((), [])
        self._contacts_lock = threading.Lock()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("mailer.web", "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(
            city_status=lambda v: polish(CITY_STATUS_PL, v),
            standing=lambda v: polish(STANDING_PL, v), status=lambda v: polish(STATUS_PL, v),
            kind=lambda v: polish(KIND_PL, v), answer=lambda v: polish(ANSWER_PL, v),
            delivery=lambda v: polish(DELIVERY_PL, v), field=lambda v: polish(FIELD_PL, v),
            source=lambda v: polish(SOURCE_PL, v),
            review=reasons.polish, reason=reasons.polish, when=self.local_time,
            plural_pl=plural_pl, form_pl=form_pl)  # a count before a noun agrees (issue 16)
        self.templates.globals["query"] = lambda **kw: urlencode(
            {k: v for k, v in kw.items() if v not in (None, "")})

    def local_time(self, value: str | None) -> str:
        """An ISO time from the state as the clerk reads it: campaign zone, to the minute."""
        moment = in_zone(value, self.settings.campaign.timezone)
        return f"{moment:%d.%m.%Y %H:%M}" if moment else ""

    def contacts(self) -> list[Contact]:
        """The contact lists, read again only when a file changes."""
        paths = self.settings.campaign.recipients
        signature = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else (p,)
                          for p in paths)
        with self._contacts_lock:
            if signature != self._contacts[0]:
                self._contacts = (signature, list(read_contacts(paths).contacts))
            return self._contacts[1]

    def cached(self, key: Hashable, compute: Callable[[Store], T]) -> T:
        """`compute(store)` for the current state, computed once per change of the state."""
        store = self.state.store()
        return self.memo.get(store, key, lambda: compute(store))

    def review_queue(self, store: Store) -> list[Any]:
        """`staff.review_queue`, once per change of the state (every page shows its length)."""
        return self.memo.get(store, ("review",), lambda: review_queue(store))

    def render(self, request: Request, template: str, *, status: int = 200,
               **context: Any) -> HTMLResponse:
        """A page in the common layout (navigation, notices, the logout form)."""
        store = self.state.store()
        html = self.templates.get_template(template).render(
            campaign=self.settings.campaign.name, csrf=getattr(request.state, "csrf", ""),
            path=request.url.path, waiting=len(self.review_queue(store)),
            rehearsal=self.clock.rehearsal, now=self.local_time(self.clock.now().isoformat()),
            **context)
        return HTMLResponse(html, status_code=status)

    def login_page(self, *, status: int, error: str = "") -> HTMLResponse:
        html = self.templates.get_template("login.html.j2").render(
            title="Logowanie", campaign=self.settings.campaign.name, error=error)
        return HTMLResponse(html, status_code=status)

    def signed_in(self, response: Response, request: Request) -> Response:
        """Start a session on `response`: HttpOnly, SameSite=Strict, Secure over https."""
        sid = self.sessions.create()
        response.set_cookie(self.cookie, sid, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        client = request.client.host if request.client else "?"
        log.info("web: signed in from %s", client)
        return response

    def token_ok(self, given: str) -> bool:
        return secrets.compare_digest(given.encode(), self.token.encode())

    def spend_token(self, given: str) -> str:
        """Trade the printed token for a session, once: "" when it signs in now, else why not
        (in Polish). A restart of `mailer web` prints a new one."""
        with self._token_lock:
            if not self.token_ok(given):
                return TOKEN_WRONG
            if self._token_spent:
                return TOKEN_SPENT
            self._token_spent = True
            return ""


class Guard(BaseHTTPMiddleware):
    """Host check, token for cookie, session required, security headers on every answer."""

    def __init__(self, app: Any, web: WebApp) -> None:
        super().__init__(app)
        self.web = web

    async def dispatch(self, request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await self._check(request, call_next)
        response.headers.update(SECURITY_HEADERS)
        location = response.headers.get("location")
        if location is not None and not is_local(location):  # a bug, never another site
            log.warning("web: redirect off this server refused")
            response.headers["location"] = "/"
        return response

    async def _check(self, request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        if not self.web.public and not is_loopback(host):
            return Response("Nieznany host.", status_code=400, media_type="text/plain")
        token = request.query_params.get("token")
        if token is not None and request.method == "GET":
            return self._trade(request, token)
        if request.url.path != "/login":
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return await call_next(request)

    def _trade(self, request: Request, token: str) -> Response:
        """The printed URL's token for a session cookie, then the same page without it (a
        path on this server: `//evil.example/?token=…` lands on our own "/")."""
        params = urlencode([(k, v) for k, v in request.query_params.multi_items()
                            if k != "token"])
        path = request.url.path if is_local(request.url.path) else "/"
        target = path + (f"?{params}" if params else "")
        if self.web.sessions.csrf(request.cookies.get(self.web.cookie)) is not None:
            # The signed-in browser opening the link again: no second session, no refusal.
            return RedirectResponse(target, status_code=303)
        refusal = self.web.spend_token(token)
        if refusal:
            return self.web.login_page(status=401, error=refusal)
        return self.web.signed_in(RedirectResponse(target, status_code=303), request)

    def _refusal(self, request: Request) -> Response | None:
        """None for a signed-in browser (its CSRF token goes to request.state)."""
        csrf = self.web.sessions.csrf(request.cookies.get(self.web.cookie))
        if csrf is None:
            if request.url.path.endswith((".csv", ".xlsx", ".eml")):
                return Response("Wymagane logowanie.", status_code=401, media_type="text/plain")
            return self.web.login_page(status=401)
        request.state.csrf = csrf
        if request.method == "POST" and not same_origin(request):
            return Response("Żądanie z innej strony odrzucone.", status_code=403,
                            media_type="text/plain")
        return None


def create_app(settings: Settings, *, clock: Clock, token: str, port: int,
               public: bool = False) -> Starlette:
    """The web application (tests serve it in-process; `mailer web` through uvicorn)."""
    web = WebApp(settings, clock=clock, token=token, port=port, public=public)
    routes: list[Route] = [*page_routes(web), *action_routes(web)]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, web=web)])
    app.state.web = web

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MailerError)
        log.error("web: %s %s: %s", request.method, request.url.path, exc)
        return web.render(request, "message.html.j2", status=500, title="Błąd",
                          text="Nie udało się odczytać stanu.", detail=str(exc))

    async def on_crash(request: Request, exc: Exception) -> Response:
        return Response("Błąd serwera – szczegóły w dzienniku `mailer web`.", status_code=500,
                        media_type="text/plain")

    app.add_exception_handler(MailerError, on_error)
    app.add_exception_handler(500, on_crash)
    return app


def open_socket(host: str, port: int) -> socket.socket:
    """Bind before printing the URL, so that the URL works the moment it is printed."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise MailerError(f"cannot listen on {host}:{port}: {err.strerror}",
                          hint="another program uses the port: choose one with --port") \
            from err
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn raises the stopping signal again after its graceful shutdown (to die of it);
    a command asked to stop has done its job: it returns, and the CLI exits 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        getattr(self, "_captured_signals", []).clear()


def serve(settings: Settings, *, clock: Clock, host: str, port: int, public: bool,
          echo: Callable[[str], None]) -> None:
    """Listen, print the one URL with its token, serve until Ctrl-C or SIGTERM."""
    check_bind(host, public=public)
    sock = open_socket(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(32)
    app = create_app(settings, clock=clock, token=token, port=port, public=public)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    echo(f"mailer web: open http://{shown}:{port}/?token={token}")
    echo("the link signs one browser in; Ctrl-C stops the server")
    config = uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=public,
                            forwarded_allow_ips="127.0.0.1", server_header=False)
    _Server(config).run(sockets=[sock])
    echo("mailer web: stopped")
