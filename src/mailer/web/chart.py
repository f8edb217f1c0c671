"""The dashboard's chart: registrations per day against each deadline, as SVG made here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from mailer.settings import Event

WIDTH, LEFT, RIGHT = 720, 40, 16
PANEL, TOP, PLOT = 128, 26, 72  # one panel per event: title, bars, then the day labels
COLOURS = {"confirmed": "#1d5f8a", "late": "#b8431f"}


def registrations_per_day(records: Sequence[dict[str, Any]], events: Sequence[Event],
                          zone: ZoneInfo) -> list[dict[str, Any]]:
    """Per local day, per event: registrations confirmed and late (from the registration records).

    The days run from the first registration to the last deadline (or the last
    registration, when one came later), so every deadline falls inside the chart.
    """
    by_day: dict[date, dict[str, dict[str, int]]] = {}
    for record in records:
        if not record.get("received"):
            continue
        day = datetime.fromisoformat(record["received"]).astimezone(zone).date()
        counts = by_day.setdefault(day, {})
        for event_id, standing in record["events"].items():
            slot = counts.setdefault(event_id, {"confirmed": 0, "late": 0})
            slot[standing] = slot.get(standing, 0) + 1
    if not by_day:
        return []
    first = min(by_day)
    last = max([*by_day, *(e.deadline.astimezone(zone).date() for e in events)])
    empty = {"confirmed": 0, "late": 0}
    return [{"day": first + timedelta(days=n),
             "counts": {e.id: by_day.get(first + timedelta(days=n), {}).get(e.id, empty)
                        for e in events}}
            for n in range((last - first).days + 1)]


def _day_label(day: date) -> str:
    return f"{day.day:02d}.{day.month:02d}"


def _text(x: float, y: float, body: str, **attributes: str) -> Markup:
    extra = Markup("").join(Markup(' {}="{}"').format(k.rstrip("_").replace("_", "-"), v)
                            for k, v in attributes.items())
    return Markup('<text x="{:.1f}" y="{:.1f}"{}>{}</text>').format(x, y, extra, body)


def _panel(days: Sequence[dict[str, Any]], event: Event, zone: ZoneInfo, top: float,
           peak: int) -> list[Markup]:
    band = (WIDTH - LEFT - RIGHT) / len(days)
    base = top + TOP + PLOT
    parts = [_text(LEFT, top + 14, event.title, class_="title"),
             Markup('<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" class="axis"/>').format(
                 LEFT, base, WIDTH - RIGHT, base)]
    for value in sorted({0, peak // 2, peak}):
        y = base - PLOT * value / peak
        parts += [_text(LEFT - 6, y + 4, str(value), text_anchor="end"),
                  Markup('<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" class="grid"/>').format(
                      LEFT, y, WIDTH - RIGHT, y)]
    step = max(1, math.ceil(len(days) / 12))
    for n, entry in enumerate(days):
        x = LEFT + n * band
        counts = entry["counts"][event.id]
        y = base
        for standing in ("confirmed", "late"):
            height = PLOT * counts[standing] / peak
            if height:
                y -= height
                tip = (f"{_day_label(entry['day'])}: {counts['confirmed']} potwierdzonych, "
                       f"{counts['late']} po terminie")
                parts.append(Markup(
                    '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">'
                    '<title>{}</title></rect>').format(
                        x + band * 0.15, y, band * 0.7, height, COLOURS[standing], tip))
        if n % step == 0:
            parts.append(_text(x + band / 2, base + 16, _day_label(entry["day"]),
                               text_anchor="middle"))
    deadline = event.deadline.astimezone(zone)
    offset = (deadline.replace(tzinfo=None) - datetime.combine(days[0]["day"],
                                                              datetime.min.time()))
    x = LEFT + band * offset.total_seconds() / 86400
    label = f"termin {_day_label(deadline.date())} {deadline:%H:%M}"
    parts += [Markup('<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" '
                     'class="deadline"/>').format(x, top + TOP - 6, x, base),
              _text(min(x, WIDTH - RIGHT) - 4, top + TOP + 4, label, text_anchor="end",
                    class_="deadline-label")]
    return parts


def chart_svg(days: Sequence[dict[str, Any]], events: Sequence[Event],
              zone: ZoneInfo) -> Markup:
    """One panel per event: bars per day (confirmed, late on top), the deadline as a line."""
    if not days or not events:
        return Markup("")
    peak = max(1, *(c["confirmed"] + c["late"] for d in days for c in d["counts"].values()))
    height = PANEL * len(events) + 24
    parts = [Markup('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" '
                    'aria-labelledby="chart-title chart-desc" class="chart">').format(
                        WIDTH, height),
             Markup('<title id="chart-title">Zgłoszenia dziennie a terminy</title>'),
             Markup('<desc id="chart-desc">{}</desc>').format(_describe(days, events))]
    for number, event in enumerate(events):
        parts += _panel(days, event, zone, number * PANEL, peak)
    legend_y = height - 8
    for n, (standing, word) in enumerate((("confirmed", "potwierdzone"),
                                          ("late", "po terminie"))):
        x = LEFT + n * 140
        parts += [Markup('<rect x="{}" y="{}" width="12" height="12" fill="{}"/>').format(
                      x, legend_y - 10, COLOURS[standing]),
                  _text(x + 18, legend_y, word)]
    parts.append(Markup("</svg>"))
    return Markup("\n").join(parts)


def _describe(days: Sequence[dict[str, Any]], events: Sequence[Event]) -> str:
    """A sentence for screen readers; the full numbers are in the table below the chart."""
    totals = []
    for event in events:
        confirmed = sum(d["counts"][event.id]["confirmed"] for d in days)
        late = sum(d["counts"][event.id]["late"] for d in days)
        totals.append(f"{event.title}: {confirmed} potwierdzonych, {late} po terminie")
    return (f"Od {_day_label(days[0]['day'])} do {_day_label(days[-1]['day'])}. "
            + "; ".join(totals) + ".")
