#!/usr/bin/env python3
"""How well the reader reads replies written the way officials write them (issue 13).

    .venv/bin/python bench/reading_accuracy.py [DIR] [--campaign FILE] [--received ISO]
                                               [--json] [--quiet]

DIR (default tests/data/officials) holds hand-written replies (*.eml), an expectations file
`expected.json` and a campaign file (default DIR/campaign.toml, whose contact list names the
invited senders). Every reply goes through the real reader exactly as `mailer -c CAMPAIGN
inspect --json --received ISO FILE` does — the click command is run in this process — so
whatever the command knows (the contact list, once the reader takes it) is used here too.
All replies are read as received at --received (default 2020-10-20 12:00 Warsaw, before
every deadline), so every chosen event is `confirmed`.

expected.json, per file:
  kind         registration | cancellation | unsubscribe | bounce | auto_reply | other
  registrants  [{name, position, city, email, phone, events: [event ids]}] — `null` for a
               value nobody gave; a list of strings (or null) where several readings are
               right ("Kalisz" or "Urząd Miasta Kalisza"); a phone is E.164, its extension
               after it ("+48297646811 wew. 108")
  cancel       for a cancellation: the event ids it cancels
  tags         what the reply exercises (capabilities of issue 13, client, charset)

Scoring:
  kinds   the files whose kind is right.
  fields  six per expected registrant (name, position, city, e-mail, phone, events), one
          per cancellation (the events cancelled). Registrants are paired with the read ones
          by most fields in common (order does not matter); an expected registrant nobody
          read counts six misses, a registrant read that nobody expected six more (false
          data: the denominator grows). Names compare as words in any order, texts without
          case, surrounding punctuation or repeated spaces; a phone by its E.164 number and
          the digits of its extension. While `inspect --json` does not say which events a
          cancellation cancels, a cancellation is taken to cancel every event.
  safety  (reported, never scored) a human reply read as bounce or auto_reply; a human
          reply read as unsubscribe that is none; automatic mail that would get an answer;
          our own confirmation quoted back read as a new registration.

Prints the two figures, the figures per tag, the safety findings and every miss per file.
Exit status 0 (it measures; tests/test_officials.py holds the floors), 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "tests" / "data" / "officials"
DEFAULT_RECEIVED = "2020-10-20T12:00:00+02:00"

KINDS = ("registration", "cancellation", "unsubscribe", "bounce", "auto_reply", "other")
FIELDS = ("name", "position", "city", "email", "phone", "events")
AUTOMATIC = frozenset({"bounce", "auto_reply"})
CANCELLED_KEYS = ("cancelled", "cancelled_events", "cancel")  # where inspect may say it


# --- reading ----------------------------------------------------------------------------------


def inspect_json(eml: Path, campaign: Path, received: str) -> dict[str, Any]:
    """What `mailer -c CAMPAIGN inspect --json --received RECEIVED EML` prints, parsed; an
    object with "error" when the command failed."""
    from click.testing import CliRunner  # noqa: PLC0415  (the CLI is imported when run)

    from mailer.cli.main import cli  # noqa: PLC0415

    runner = CliRunner()
    result = runner.invoke(cli, ["-c", str(campaign), "inspect", "--json", "--received",
                                 received, str(eml)], catch_exceptions=True)
    out = result.stdout if hasattr(result, "stdout") else result.output
    start = out.find("{")
    if result.exit_code != 0 or start < 0:
        reason = repr(result.exception) if result.exception else out.strip()[-300:]
        return {"error": f"exit {result.exit_code}: {reason}"}
    try:
        data: dict[str, Any] = json.loads(out[start:])
    except json.JSONDecodeError as err:
        return {"error": f"not JSON: {err}"}
    return data


# --- comparing --------------------------------------------------------------------------------

_EDGE = " \t.,;:-–—\"'„”“()"


def _text(value: object) -> str:
    text = re.sub(r"[\s,;]+", " ", str(value).casefold())
    return " ".join(text.split()).strip(_EDGE)


def _name(value: object) -> tuple[str, ...]:
    return tuple(sorted(_text(value).replace(",", " ").split()))


def _phone(value: object) -> tuple[str, str] | None:
    """(E.164 main number, extension digits); None when it does not start with +digits."""
    text = str(value).strip()
    main = re.match(r"\+\d{6,15}", text)
    if not main:
        return None
    return main.group(), re.sub(r"\D", "", text[main.end():])


def _one_matches(name: str, expected: object, actual: object) -> bool:
    if expected is None or expected == "":
        return actual in (None, "", [], {})
    if actual in (None, ""):
        return False
    if name == "name":
        return _name(expected) == _name(actual)
    if name == "email":
        return str(expected).strip().casefold() == str(actual).strip().casefold()
    if name == "phone":
        wanted = _phone(expected)
        return wanted is not None and wanted == _phone(actual)
    return _text(expected) == _text(actual)


def field_matches(name: str, expected: object, actual: object) -> bool:
    """Does the read value match the expectation (a list: any of the alternatives)?"""
    if name == "events":
        wanted = expected if isinstance(expected, list) else []
        read = actual if isinstance(actual, list) else []
        return sorted(map(str, wanted)) == sorted(map(str, read))
    alternatives = expected if isinstance(expected, list) else [expected]
    return any(_one_matches(name, alt, actual) for alt in alternatives)


def read_registrant(person: Mapping[str, Any]) -> dict[str, Any]:
    """A registrant of inspect's JSON with its events as a list of ids."""
    events = person.get("events") or {}
    return {**{f: person.get(f) for f in FIELDS}, "events": list(events)}


def pair(expected: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]]
         ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Expected and read registrants paired by most equal fields: (pairs, unread, unexpected)."""
    scores = sorted(((sum(field_matches(f, e[f], a.get(f)) for f in FIELDS), i, j)
                     for i, e in enumerate(expected) for j, a in enumerate(actual)),
                    key=lambda s: (-s[0], s[1], s[2]))
    pairs: list[tuple[int, int]] = []
    used_e: set[int] = set()
    used_a: set[int] = set()
    for _score, i, j in scores:
        if i not in used_e and j not in used_a:
            pairs.append((i, j))
            used_e.add(i)
            used_a.add(j)
    return (sorted(pairs), [i for i in range(len(expected)) if i not in used_e],
            [j for j in range(len(actual)) if j not in used_a])


# --- scoring ----------------------------------------------------------------------------------


@dataclass
class FileResult:
    """One reply: its kind, field tallies and what went wrong."""

    name: str
    tags: tuple[str, ...]
    expected_kind: str
    kind: str
    answer: str | None
    fields_right: int = 0
    fields_total: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def kind_right(self) -> bool:
        return self.kind == self.expected_kind


def _cancelled(data: Mapping[str, Any], all_events: Sequence[str]) -> list[str]:
    for key in CANCELLED_KEYS:
        value = data.get(key)
        if isinstance(value, list | dict):
            return list(value)
    return list(all_events) if data.get("kind") == "cancellation" else []


def _short(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def score_file(name: str, expected: Mapping[str, Any], data: Mapping[str, Any],
               all_events: Sequence[str]) -> FileResult:
    """Compare one inspect result with its expectation."""
    result = FileResult(name=name, tags=tuple(expected.get("tags", ())),
                        expected_kind=expected["kind"], kind=str(data.get("kind", "error")),
                        answer=data.get("answer"))
    if "error" in data:
        result.misses.append(f"reader failed: {data['error']}")
    if not result.kind_right:
        result.misses.append(f"kind: expected {expected['kind']}, read {result.kind}")
    wanted = expected.get("registrants", [])
    read = [read_registrant(p) for p in data.get("registrants", [])]
    pairs, unread, unexpected = pair(wanted, read)
    for i, j in pairs:
        for f in FIELDS:
            result.fields_total += 1
            if field_matches(f, wanted[i][f], read[j].get(f)):
                result.fields_right += 1
            else:
                result.misses.append(f"registrant {i + 1} {f}: expected "
                                     f"{_short(wanted[i][f])}, read {_short(read[j].get(f))}")
    for i in unread:
        result.fields_total += len(FIELDS)
        result.misses.append(f"registrant {i + 1} not read: {_short(wanted[i]['name'])}")
    for j in unexpected:
        result.fields_total += len(FIELDS)
        result.misses.append(f"unexpected registrant read: {_short(read[j].get('name'))} "
                             f"({_short(read[j].get('city'))})")
    if "cancel" in expected:
        result.fields_total += 1
        got = _cancelled(data, all_events)
        if sorted(got) == sorted(expected["cancel"]):
            result.fields_right += 1
        else:
            result.misses.append(f"cancel: expected {expected['cancel']}, read {got}")
    return result


def safety_findings(results: Iterable[FileResult]) -> list[str]:
    """What must never happen (issue 13, 'What must hold'), one line per file."""
    found = []
    for r in results:
        human = r.expected_kind not in AUTOMATIC
        if human and r.kind in AUTOMATIC:
            found.append(f"{r.name}: a human reply read as {r.kind}")
        if human and r.expected_kind != "unsubscribe" and r.kind == "unsubscribe":
            found.append(f"{r.name}: read as unsubscribe (would suppress the sender)")
        if not human and r.answer:
            found.append(f"{r.name}: automatic mail would get an answer ({r.answer})")
        if "our-confirmation-quoted" in r.tags and r.kind == "registration":
            found.append(f"{r.name}: our own confirmation quoted back read as a registration")
    return found


@dataclass
class Report:
    """Every file's result and the totals."""

    results: list[FileResult]

    @property
    def fields_right(self) -> int:
        return sum(r.fields_right for r in self.results)

    @property
    def fields_total(self) -> int:
        return sum(r.fields_total for r in self.results)

    @property
    def fields_pct(self) -> float:
        return 100.0 * self.fields_right / max(1, self.fields_total)

    @property
    def kinds_right(self) -> int:
        return sum(r.kind_right for r in self.results)

    @property
    def kinds_pct(self) -> float:
        return 100.0 * self.kinds_right / max(1, len(self.results))

    @property
    def safety(self) -> list[str]:
        return safety_findings(self.results)

    def by_tag(self) -> dict[str, tuple[int, int, int, int]]:
        """tag → (kinds right, files, fields right, fields)."""
        tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for r in self.results:
            for tag in r.tags:
                t = tally[tag]
                t[0] += r.kind_right
                t[1] += 1
                t[2] += r.fields_right
                t[3] += r.fields_total
        return {tag: (t[0], t[1], t[2], t[3]) for tag, t in sorted(tally.items())}

    def as_json(self) -> dict[str, Any]:
        return {
            "fields_pct": round(self.fields_pct, 1), "kinds_pct": round(self.kinds_pct, 1),
            "fields": [self.fields_right, self.fields_total],
            "kinds": [self.kinds_right, len(self.results)],
            "safety": self.safety,
            "misses": {r.name: r.misses for r in self.results if r.misses},
            "kind_confusion": {f"{e}->{k}": n for (e, k), n in sorted(Counter(
                (r.expected_kind, r.kind) for r in self.results if not r.kind_right).items())},
        }


def load_expected(folder: Path) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((folder / "expected.json").read_text("utf-8"))
    return data


def measure(folder: Path = DEFAULT_DIR, campaign: Path | None = None,
            received: str = DEFAULT_RECEIVED) -> Report:
    """Read every expected reply of `folder` with the real reader and score it."""
    from mailer.settings import load_settings  # noqa: PLC0415

    campaign = campaign or folder / "campaign.toml"
    all_events = [e.id for e in load_settings(campaign).events]
    expected = load_expected(folder)
    results = [score_file(name, want, inspect_json(folder / name, campaign, received), all_events)
               for name, want in sorted(expected.items())]
    return Report(results)


def print_report(report: Report, *, quiet: bool) -> None:
    print(f"replies: {len(report.results)}")
    print(f"fields right: {report.fields_right}/{report.fields_total} = "
          f"{report.fields_pct:.1f} %")
    print(f"kinds right:  {report.kinds_right}/{len(report.results)} = {report.kinds_pct:.1f} %")
    confusion = report.as_json()["kind_confusion"]
    if confusion:
        print("kind confusions (expected->read): "
              + ", ".join(f"{k} ×{n}" for k, n in confusion.items()))
    print("\nsafety:")
    for line in report.safety or ["(nothing found)"]:
        print(f"  {line}")
    if quiet:
        return
    print("\nper tag (kinds right/files, fields right/fields):")
    for tag, (kr, files, fr, ft) in report.by_tag().items():
        pct = f"{100.0 * fr / ft:5.1f} %" if ft else "   –   "
        print(f"  {tag:32} kinds {kr:3}/{files:<3} fields {fr:4}/{ft:<4} {pct}")
    print("\nmisses:")
    for r in report.results:
        if r.misses:
            print(f"  {r.name}")
            for miss in r.misses:
                print(f"      {miss}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR,
                        help="replies with expected.json (default tests/data/officials)")
    parser.add_argument("--campaign", type=Path, default=None,
                        help="campaign file (default FOLDER/campaign.toml)")
    parser.add_argument("--received", default=DEFAULT_RECEIVED,
                        help=f"arrival time of every reply (default {DEFAULT_RECEIVED})")
    parser.add_argument("--json", action="store_true", help="one JSON object instead")
    parser.add_argument("--quiet", action="store_true", help="figures and safety only")
    args = parser.parse_args(argv)
    folder: Path = args.folder
    campaign: Path = args.campaign or folder / "campaign.toml"
    if not (folder / "expected.json").is_file() or not campaign.is_file():
        print(f"{folder}: needs expected.json and {campaign.name}", file=sys.stderr)
        return 2
    report = measure(folder, campaign, args.received)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=1))
    else:
        print_report(report, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
