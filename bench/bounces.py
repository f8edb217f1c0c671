#!/usr/bin/env python3
"""How many bounces of a folder of .eml files are read as bounces with the right address.

    .venv/bin/python bench/bounces.py DIR [--expected FILE | --flufl-table FILE] [--verbose]

Nothing is fetched: DIR is a local copy of a bounce corpus (flufl.bounce's test data, say,
from its sdist: flufl/bounce/tests/data). Each file is parsed and classified as the watcher
does (mailer.reading.understand.parse_bytes, mailer.reading.classify.classify) and counts as
right when its kind is `bounce` and every expected address is among the failed ones (permanent
or temporary) and nothing else is (the addresses compared case-insensitively).

The expected addresses come from
  --expected FILE      lines `name.eml: a@b, c@d` (`name.eml: -` for a delay notice or
                       anything without a failed address: left out of the figure), or
  --flufl-table FILE   flufl.bounce's table of (detector, file, addresses) tuples (its
                       _detectors/tests/detectors.py or the like): every tuple found in the
                       file's source is read; `Stop` entries (delay warnings) are left out,
                       a file listed twice takes the union;
  neither              the To of the returned copy of our message (right for our own
                       fixtures, tests/data/bounces: we send one recipient per message).
Prints one line per miss (with --verbose, per file) and the figure: right / counted, in %.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailer.reading.bounces import addresses_in  # noqa: E402
from mailer.reading.classify import Kind, classify  # noqa: E402
from mailer.reading.notice import returned_text  # noqa: E402
from mailer.reading.understand import parse_bytes  # noqa: E402

OWN = ("rejestracja@example.com", "strategia@example.com")
Expected = dict[str, frozenset[str] | None]  # None: left out (a delay notice)


def read_expected(path: Path) -> Expected:
    """`name: a@b, c@d` lines; `-` (or nothing) after the colon leaves the file out."""
    expected: Expected = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, colon, rest = line.partition(":")
        if not colon or line.lstrip().startswith("#"):
            continue
        addresses = frozenset(a.strip().lower() for a in rest.split(",") if "@" in a)
        expected[name.strip()] = addresses or None
    return expected


def read_flufl_table(path: Path) -> Expected:
    """Every (detector, file, [addresses] | Stop) tuple in a Python source file."""
    expected: Expected = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Tuple) and len(node.elts) in (3, 4)):
            continue
        _module, name, addresses, *rest = node.elts
        if rest and isinstance(rest[0], ast.Constant) and rest[0].value is True:
            addresses = ast.Name("Stop")  # flufl.bounce 6: (…, temporary=True) is a warning
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        if isinstance(addresses, ast.Name):  # Stop: a warning, no failure to find
            expected.setdefault(name.value, None)
            continue
        try:
            value = ast.literal_eval(addresses)
        except ValueError:
            continue
        found = frozenset(str(a.decode() if isinstance(a, bytes) else a).lower() for a in value)
        known = expected.get(name.value) or frozenset()
        expected[name.value] = (known | found) or None
    return expected


def returned_recipient(raw: bytes) -> frozenset[str] | None:
    """The To of the returned copy: whom the bounced message was for."""
    text = returned_text(parse_bytes(raw))
    for line in text.split("\n"):
        if line.lower().startswith("to:"):
            found = addresses_in(line)
            return frozenset(found[:1]) if found else None
    return None


def run(folder: Path, expected: Expected | None, *, verbose: bool) -> tuple[int, int]:
    """Classify every file; return (right, counted)."""
    right = counted = 0
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        raw = path.read_bytes()
        want = expected.get(path.name) if expected is not None else returned_recipient(raw)
        if not want:
            continue  # a delay notice, or a file the table does not name
        result = classify(parse_bytes(raw), "", has_form=False, own_addresses=OWN)
        found = {a.lower() for a in (*result.bounced, *result.temporary)}
        if expected is None:  # the address we sent to is right when it forwarded to the failed
            found = {dict(result.forwarded).get(a, a) for a in found}
        ok = result.kind is Kind.BOUNCE and found == set(want)
        counted += 1
        right += ok
        if verbose or not ok:
            print(f"{'ok  ' if ok else 'MISS'} {path.name}: {result.kind}, found "
                  f"{sorted(found) or '-'}, expected {sorted(want)}")
    return right, counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--expected", type=Path)
    parser.add_argument("--flufl-table", type=Path)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    expected = read_expected(args.expected) if args.expected else \
        read_flufl_table(args.flufl_table) if args.flufl_table else None
    right, counted = run(args.folder, expected, verbose=args.verbose)
    share = 100 * right / counted if counted else 0.0
    print(f"{right} of {counted} classified as bounce with the right address: {share:.1f} %")
    return 0 if counted else 1


if __name__ == "__main__":
    sys.exit(main())
