"""What the web pages show, computed by the same queries the commands use (no second rule)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel import Locale
from markupsafe import Markup, escape

from mailer.campaign import SendReport, plan
from mailer.contacts import Contact
from mailer.export import registration_records
from mailer.models import (
    AnswerStatus,
    DeliveryKind,
    RegistrationStatus,
    Status,
    message_path,
    reading_file,
)
from mailer.reading.body import body_text
from mailer.reading.classify import Kind
from mailer.reading.decide import Answer, EventStatus
from mailer.reading.quotes import fold
from mailer.reading.understand import parse_bytes
from mailer.reading.validate import validate_draft
from mailer.render import Renderer
from mailer.report import CityRow, CityStatus, city_status
from mailer.respond import build_answer
from mailer.settings import Settings
from mailer.staff import Person, campaign_counts, person, review_queue
from mailer.store import Doc, Store, open_state
from mailer.web.chart import chart_svg, registrations_per_day

# Polish words for the values the state stores in English (the members' values: a page's
# query parameter or a stored string finds its word, and a template shows the value).
CITY_STATUS_PL: dict[str, str] = {
    CityStatus.REVIEW: "czeka na przejrzenie",
    CityStatus.REGISTERED: "zarejestrowane", CityStatus.LATE: "po terminie",
    CityStatus.INCOMPLETE: "niekompletne", CityStatus.UNSUBSCRIBED: "wypisane",
    CityStatus.BOUNCED: "adres odbity", CityStatus.INVITED: "zaproszone",
    CityStatus.NOT_SENT: "nie wysłano"}
STANDING_PL: dict[str, str] = {EventStatus.CONFIRMED: "potwierdzone",
                               EventStatus.LATE: "po terminie"}
STATUS_PL: dict[str, str] = {
    RegistrationStatus.COMPLETE: "kompletne", RegistrationStatus.INCOMPLETE: "niekompletne",
    RegistrationStatus.CANCELLED: "anulowane", RegistrationStatus.SUPERSEDED: "zastąpione"}
KIND_PL: dict[str, str] = {
    Kind.REGISTRATION: "zgłoszenie", Kind.CANCELLATION: "rezygnacja z udziału",
    Kind.UNSUBSCRIBE: "wypisanie", Kind.BOUNCE: "zwrot (adres nie istnieje)",
    Kind.AUTO_REPLY: "odpowiedź automatyczna", Kind.OTHER: "inne"}
ANSWER_PL: dict[str, str] = {
    Answer.CONFIRMATION: "potwierdzenie", Answer.LATE_NOTICE: "informacja o spóźnieniu",
    Answer.INCOMPLETE: "prośba o uzupełnienie", Answer.UNSUBSCRIBED: "potwierdzenie wypisania",
    Answer.CANCELLED: "potwierdzenie rezygnacji"}
DELIVERY_PL: dict[str, str] = {  # deliveries and answers
    Status.SENT: "wysłane", Status.FAILED: "odrzucone", Status.DEFERRED: "oczekuje",
    AnswerStatus.PENDING: "oczekuje", Status.BOUNCED: "odbite",
    AnswerStatus.HELD: "wstrzymana do przejrzenia"}
FIELD_PL = {"event": "Wydarzenie", "name": "Imię i nazwisko", "position": "Stanowisko",
            "city": "Miasto / urząd", "email": "E-mail", "phone": "Telefon"}
# Where a value came from (Draft.sources, Registrant.sources; issue 13).
SOURCE_PL = {"form": "z formularza", "sentence": "ze zdania", "list": "z listy",
             "line": "z jednej linii", "signature": "z podpisu", "contact": "z listy kontaktów",
             "earlier": "z wcześniejszej wiadomości"}
CITY_COLUMNS = {"city": "Miasto", "contacts": "Kontakty", "status": "Status",
                "registered": "Osoby", "notes": "Uwagi"}


def polish(mapping: Mapping[str, str], value: object) -> str:
    """The Polish word for a stored value; the value itself when there is none."""
    return mapping.get(str(value), str(value) if value is not None else "")


_POLISH = Locale("pl")


def form_pl(n: int, one: str, few: str, many: str) -> str:
    """The Polish form for a count: `one` for 1, `few` for 2–4, 22–24, … (not 12–14),
    `many` otherwise ("1 wiadomość czeka", "2 wiadomości czekają", "5 wiadomości czeka"):
    CLDR's rule, as Babel knows it."""
    return {"one": one, "few": few}.get(_POLISH.plural_form(n), many)


def plural_pl(n: int, one: str, few: str, many: str) -> str:
    """The count and its Polish form, agreeing (issue 16: "1 autoodpowiedzi" was a slip)."""
    return f"{n} {form_pl(n, one, few, many)}"


class StateCache:
    """The state as readers see it, read again only when its files change.

    A reader takes no lock (only the writer does), so this runs beside `mailer run`; the
    signature is (inode, mtime, size) of TinyDB's file and of the journal the writer appends to.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._signature: tuple[Any, ...] = ()

    def _current(self) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name in ("mailer.json", "journal.jsonl"):
            try:
                stat = (self.folder / name).stat()
            except FileNotFoundError:
                parts.append(None)
            else:
                parts.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(parts)

    def store(self) -> Store:
        with self._lock:
            signature = self._current()
            if self._store is None or signature != self._signature:
                with open_state(self.folder, writer=False) as store:
                    self._store, self._signature = store, signature
            return self._store


# --- dashboard --------------------------------------------------------------------------------

@dataclass
class Dashboard:
    """The figures of the front page."""

    counts: dict[str, Any]
    events: list[dict[str, Any]]
    contacts: int
    invitations: dict[str, int]
    chart: Markup
    days: list[dict[str, Any]]
    review: list[Doc] = field(default_factory=list)  # what waits for a human, shown first


DASHBOARD_REVIEW = 10  # review items listed at the top of the front page (all: /review)


def dashboard(store: Store, settings: Settings, contacts: Sequence[Contact]) -> Dashboard:
    """Per event confirmed / late / incomplete, invitations sent of all, answers, the chart."""
    counts = campaign_counts(store, settings)
    events = [{"event": e, **counts["events"].get(e.id, dict.fromkeys(EventStatus, 0)),
               "incomplete": len(registration_records(
                   store, event=e.id, status=RegistrationStatus.INCOMPLETE))}
              for e in settings.events]
    report = SendReport()
    remaining = plan(contacts, store, kind=DeliveryKind.INVITATION, report=report)
    deliveries = counts["deliveries"]  # "<kind> <status>" → how many
    invitations = {str(status): deliveries.get(f"{DeliveryKind.INVITATION} {status}", 0)
                   for status in (Status.SENT, Status.BOUNCED, Status.FAILED)}
    invitations.update(suppressed=report.suppressed, remaining=len(remaining))
    invitations["done"] = invitations["sent"] + invitations["bounced"] + invitations["failed"]
    days = registrations_per_day(registration_records(store, status=RegistrationStatus.COMPLETE),
                                 settings.events, settings.campaign.timezone)
    return Dashboard(counts=counts, events=events, contacts=len(contacts),
                     invitations=invitations,
                     chart=chart_svg(days, settings.events, settings.campaign.timezone),
                     days=days, review=review_queue(store)[:DASHBOARD_REVIEW])


# --- cities -----------------------------------------------------------------------------------

def _city_sort_key(column: str, event_ids: Sequence[str]) -> Callable[[CityRow], Any]:
    if column in event_ids:
        return lambda row: (row.events.get(column, "~"), fold(row.city))
    if column == "status":
        order = list(CITY_STATUS_PL)
        return lambda row: (order.index(str(row.status)), fold(row.city))
    if column in ("contacts", "registered"):
        return lambda row: (getattr(row, column), fold(row.city))
    if column == "notes":
        return lambda row: (row.notes(), fold(row.city))
    return lambda row: fold(row.city)


def cities(store: Store, contacts: Sequence[Contact], event_ids: Sequence[str], *,
           sort: str = "", descending: bool = False, status: str = "",
           query: str = "") -> list[CityRow]:
    """`status --cities`, filtered by status and a piece of the name, sorted by a column."""
    rows = city_status(contacts, store)
    if status:
        rows = [r for r in rows if str(r.status) == status]
    if query.strip():
        wanted = fold(query.strip())
        rows = [r for r in rows if wanted in fold(r.city)]
    if sort in (*CITY_COLUMNS, *event_ids):
        rows.sort(key=_city_sort_key(sort, event_ids), reverse=descending)
    else:  # never silent (issue 13): a city with a message waiting for a human comes first
        rows.sort(key=lambda row: row.status is not CityStatus.REVIEW)
    return rows


# --- registrations ----------------------------------------------------------------------------

def registrations(store: Store, *, event: str | None, status: str | None,
                  query: str = "") -> list[dict[str, Any]]:
    """The export's records (`registrations --format json`), narrowed by a search."""
    records = registration_records(store, event=event or None, status=status or None)
    wanted = fold(query.strip())
    if not wanted:
        return records
    return [r for r in records
            if any(wanted in fold(str(r.get(f) or "")) for f in ("name", "city", "email",
                                                                  "invited_city"))]


# --- one message: the text beside what was read from it ---------------------------------------

@dataclass
class MessageView:
    """One stored message: its text (own part, quoted history) with the values read marked."""

    doc: Doc
    own: Markup = field(default_factory=Markup)
    quoted: Markup = field(default_factory=Markup)
    from_quoted: bool = False
    missing: str = ""  # why there is no text to show
    drafts: list[dict[str, str]] = field(default_factory=list)
    sources: list[dict[str, str]] = field(default_factory=list)  # per draft: field → rule
    registrants: list[Any] = field(default_factory=list)


def highlight(text: str, values: Mapping[str, str]) -> Markup:
    """`text`, HTML-escaped, with each value found in it (any case, any diacritics) in <mark>."""
    folded = fold(text)
    spans: list[tuple[int, int, str]] = []
    for name, value in values.items():
        needle = fold(value.strip())
        if len(needle) < 2:
            continue
        start = folded.find(needle)
        while start >= 0:
            end = start + len(needle)
            line_end = folded.find("\n", end)
            if ":" not in folded[end:line_end if line_end >= 0 else None]:
                spans.append((start, end, name))  # not a word of the label before the ":"
            start = folded.find(needle, end)
    spans.sort(key=lambda s: (s[0], s[0] - s[1]))  # leftmost, then longest
    out, at = [], 0
    for start, end, name in spans:
        if start < at:
            continue  # overlaps a longer or earlier value
        label = FIELD_PL.get(name, name)
        out += [escape(text[at:start]),
                Markup('<mark title="{}" data-field="{}">{}</mark>').format(
                    label, name, text[start:end])]
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def message_view(doc: Doc, settings: Settings) -> MessageView:
    """What the watcher read of a stored message (kept beside its .eml when it was read):
    a page never reads the raw message again (issue 12: a hostile one took 17 s a view)."""
    view = MessageView(doc=doc)
    file = message_path(settings.storage, doc.get("path"))  # None: out of the state folder
    stored = _stored_reading(reading_file(file)) if file else None
    if stored is None:
        view.missing = ("Treść nie została zapisana (wiadomość nieodczytana, zapisana przed "
                        "wersją 0.4 albo usunięta): pobierz oryginał (.eml)."
                        if file and file.exists() else
                        "Plik wiadomości nie istnieje (dane usunięte albo przeniesione).")
        return view
    if doc.get("headers_only"):
        view.missing = "Wiadomość zbyt duża: zachowano tylko nagłówki."
    view.drafts = stored["drafts"]
    view.sources = stored["sources"]
    view.from_quoted = stored["from_quoted"]
    sender = str(doc.get("sender") or "")
    view.registrants = [validate_draft(values, sender=sender, events=settings.events)
                        for values in view.drafts]
    marks: dict[str, str] = {}
    for values in view.drafts:
        marks.update({f"{k}": v for k, v in values.items() if v})
    view.own = highlight(stored["own"], {} if view.from_quoted else marks)
    view.quoted = highlight(stored["quoted"], marks if view.from_quoted else {})
    return view


def _stored_reading(file: Path) -> dict[str, Any] | None:
    """The stored reading in `file` (`understand.stored_reading`), checked; None if there is
    none or it is damaged."""
    try:
        data = json.loads(file.read_bytes())
        drafts = [{str(k): str(v) for k, v in d.items()} for d in data["drafts"]]
        # A reading stored before issue 13 has no sources: its values came from the form.
        sources = [{str(k): str(v) for k, v in d.items()} for d in data.get("sources", [])]
        sources += [{} for _ in drafts[len(sources):]]
        return {"own": str(data["own"]), "quoted": str(data["quoted"]), "drafts": drafts,
                "sources": sources, "from_quoted": bool(data["from_quoted"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def registrations_of_message(found: Person, key: str) -> list[Doc]:
    """The registration versions (current or in history) that this message made or changed."""
    versions = []
    for doc in found.registrations:
        for version in [*doc.get("history", []), doc]:
            if (version.get("messages") or [None])[-1] == key:
                versions.append(version)
    return versions


@dataclass
class PersonView:
    """Everything about one address, each message beside what was read from it."""

    found: Person
    messages: list[tuple[MessageView, list[Doc]]]
    answers: list[tuple[Doc, str]]


def person_view(store: Store, settings: Settings, renderer: Renderer,
                address: str) -> PersonView:
    """`mailer show` for the browser, plus the text of each message in and out."""
    found = person(store, address)
    messages = [(message_view(doc, settings), registrations_of_message(found, doc["key"]))
                for doc in found.inbound]
    answers = [(doc, answer_text(renderer, settings, doc)) for doc in found.answers]
    return PersonView(found=found, messages=messages, answers=answers)


def answer_text(renderer: Renderer, settings: Settings, doc: Doc) -> str:
    """The answer as the service built it (the same renderer and outbox record)."""
    try:
        message = build_answer(renderer, settings, doc)
    except Exception as err:  # MailerError, a damaged record, an unsendable answer (issue 12)
        return f"(nie można odtworzyć treści: {err})"
    return body_text(parse_bytes(message.data))


# --- review -----------------------------------------------------------------------------------

def waiting_item(store: Store, key: str) -> Doc | None:
    """The review item with exactly this key, if it still waits."""
    return next((d for d in review_queue(store) if d["key"] == key), None)


def prefill(view: MessageView) -> dict[str, Any]:
    """The register form's starting values: what the reader found, else the sender."""
    values = dict(view.drafts[0]) if view.drafts else {}
    registrant = view.registrants[0] if view.registrants else None
    sender = str(view.doc.get("sender") or "")
    return {**{f: values.get(f, "") for f in FIELD_PL if f != "event"},
            "email": values.get("email") or sender,
            "events": list(registrant.events) if registrant else []}
