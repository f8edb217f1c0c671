"""Registrations for staff: JSON (one object each), CSV for Polish Excel, XLSX with typed cells."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from mailer.audit import AuditLog
from mailer.clock import in_zone, local_iso
from mailer.models import CURRENT_STATUSES, REGISTRATIONS
from mailer.settings import Event
from mailer.store import Store

FIELDS = ("name", "position", "city", "email", "phone")
HEADERS_PL = {"id": "Id", "name": "Imię i nazwisko", "position": "Stanowisko",
              "city": "Miasto / urząd", "email": "E-mail", "phone": "Telefon",
              "status": "Status", "received": "Otrzymano", "invited_city": "Zaproszone miasto"}

# OWASP "CSV Injection" (issue 12): a cell starting with = + - @, a tab or a carriage return is
# taken for a formula by Excel and LibreOffice (=HYPERLINK(…) sends data away, =cmd|… runs a
# program through DDE). Spreadsheets skip leading spaces and quotes, so those do not hide one;
# the full-width forms count too.
FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
# A phone number is no formula: a plus (or nothing) then only digits, spaces, dashes and
# parentheses holds no letter, so no function, reference or DDE call. It stays as written.
PHONE = re.compile(r"\+?[0-9 ()\-]*[0-9][0-9 ()\-]*")


def is_formula(value: str) -> bool:
    """Whether a spreadsheet would run `value` as a formula (OWASP's rule, phones excepted)."""
    if value[:1] in ("\t", "\r"):
        return True
    head = value.lstrip(" \t\r\n\"'")
    return head[:1] in FORMULA_START and not PHONE.fullmatch(value.strip())


def neutralise(value: Any) -> Any:
    """A text a spreadsheet would run as a formula gets a leading `'` (OWASP): shown as text."""
    return f"'{value}" if isinstance(value, str) and is_formula(value) else value


def open_private(path: Path) -> BinaryIO:
    """Open an export for writing, readable by its owner only (0600), as state/ is (0700):
    registrations are personal data (issue 12)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if stat.S_ISREG(os.fstat(fd).st_mode):  # a file that was there keeps its mode otherwise
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as `open_private` opens it."""
    with open_private(path) as file:
        file.write(data)


def registration_records(store: Store, *, event: str | None = None,
                         status: str | None = None,
                         zone: tzinfo | None = None) -> list[dict[str, Any]]:
    """Current registrations as JSON-ready objects, filtered, oldest first; `zone`: the
    received times in it, with its offset (as stored, UTC, without)."""
    records = []
    for doc in store.all(REGISTRATIONS):
        if doc.get("status") not in CURRENT_STATUSES or (status and doc.get("status") != status):
            continue
        if event and event not in doc.get("events", {}) and event not in doc.get("requested", []):
            continue
        records.append({
            "id": doc["key"], **{f: doc.get(f) for f in FIELDS},
            "events": dict(doc.get("events", {})), "status": doc.get("status"),
            "received": doc.get("received"), "message_ids": list(doc.get("messages", [])),
            "invited_city": (doc.get("invitation") or {}).get("city"),
        })
    records.sort(key=lambda r: (r["received"] or "", r["id"]))  # UTC strings sort as times
    if zone is not None:
        for record in records:
            record["received"] = local_iso(record["received"], zone)
    return records


_RECEIVED = 1 + len(FIELDS) + 1  # the column of the received time (id, fields, status)


def _row(record: dict[str, Any], events: Sequence[Event]) -> list[Any]:
    return [record["id"], *(record[f] or "" for f in FIELDS), record["status"],
            record["received"] or "", *(record["events"].get(e.id, "") for e in events),
            record["invited_city"] or ""]


def _headers(events: Sequence[Event]) -> list[str]:
    return [HEADERS_PL["id"], *(HEADERS_PL[f] for f in FIELDS), HEADERS_PL["status"],
            HEADERS_PL["received"], *(e.id for e in events), HEADERS_PL["invited_city"]]


def _csv_row(record: dict[str, Any], events: Sequence[Event]) -> list[Any]:
    row = _row(record, events)
    row[_RECEIVED] = str(row[_RECEIVED]).replace("T", " ", 1)  # "2020-10-20 12:00:18+02:00"
    return row


def to_csv(records: Sequence[dict[str, Any]], events: Sequence[Event]) -> bytes:
    """UTF-8 with BOM and `;`: what Polish Excel opens correctly with a double click."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([neutralise(v) for v in _headers(events)])
    writer.writerows([neutralise(v) for v in _csv_row(r, events)] for r in records)
    return buffer.getvalue().encode("utf-8-sig")


def to_xlsx(records: Sequence[dict[str, Any]], events: Sequence[Event], path: Path,
            zone: ZoneInfo) -> None:
    """One sheet with everyone, one per event; typed cells, dates as dates, frozen header.
    Written 0600 (`open_private`)."""
    book = Workbook()
    _sheet(book.active, "Wszystkie", records, events, zone)  # type: ignore[arg-type]
    for event in events:
        chosen = [r for r in records if event.id in r["events"]]
        _sheet(book.create_sheet(), event.id, chosen, [event], zone)
    with open_private(path) as file:
        book.save(file)


def _append(sheet: Worksheet, row: list[Any]) -> None:
    """A row in which no text becomes a formula: openpyxl makes one of any text starting with
    `=`; such a cell is kept a text (type "s") with Excel's quote prefix, so the clerk sees the
    value as written and editing the cell does not turn it into a formula either."""
    sheet.append(row)
    for cell in sheet[sheet.max_row]:
        if isinstance(cell.value, str) and is_formula(cell.value):
            cell.data_type = "s"
            cell.quotePrefix = True


def _sheet(sheet: Worksheet, title: str, records: Sequence[dict[str, Any]],
           events: Sequence[Event], zone: ZoneInfo) -> None:
    sheet.title = title[:31]  # Excel's limit on sheet names
    _append(sheet, _headers(events))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for record in records:
        row = _row(record, events)
        # Excel has no time zones: the campaign's local time, as the clerk reads it.
        moment = in_zone(record["received"], zone)
        row[_RECEIVED] = moment.replace(tzinfo=None) if moment else None
        _append(sheet, row)
    for cell in sheet["H"][1:]:
        cell.number_format = "yyyy-mm-dd hh:mm"
    sheet.freeze_panes = "A2"
    for number, column in enumerate(sheet.columns, start=1):
        width = max(len(str(c.value or "")) for c in column)
        sheet.column_dimensions[get_column_letter(number)].width = min(max(width, 10), 50) + 2


def record_export(folder: Path, *, actor: str | None, at: datetime, fmt: str, rows: int,
                  filters: dict[str, str | None], to: str) -> None:
    """Log who took registrations out of the service, in which form, which and how many: an
    auditor asks where personal data went (RODO art. 30). Nothing to log without a state."""
    if not folder.is_dir():
        return
    audit = AuditLog(folder, actor=actor)
    audit.record("export", at=at, what="registrations", format=fmt, rows=rows,
                 filters={k: v for k, v in filters.items() if v}, to=to)
    audit.flush()
