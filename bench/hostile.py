"""Worst cases for the reader: crafted messages, one per weakness, each read in a child process.

    .venv/bin/python bench/hostile.py [--timeout 30] [--only NAME] [--budget 2]

Each case is a message an attacker can send (issue 12 lists what was observed): it is read by
the reader (`understand`, what the watcher and `mailer inspect` run) in a child process of its
own, killed after `--timeout` seconds. The table gives, per case, the seconds the reading took
(start-up excluded), the peak memory and how it ended; then the slowest case per stage of the
reader against the budget every message must meet (2 s on this machine). A case that raises
is a failure too (the watcher survives it, but the reader should not raise); one the reader
declares unreadable goes to review, as designed. Bounded: 12 cases, each at most
`--timeout` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

from common import REPO, BenchError, run_child, verdict

from mailer.reading.workers import Readers, ReadFailure
from mailer.settings import load_settings

RECEIVED = "2020-10-20T12:00:00+02:00"

# The child reads one file with the default campaign's events and prints what it cost.
_CHILD = r"""
import json, sys, time
from datetime import datetime
from pathlib import Path
from mailer.settings import load_settings
from mailer.reading.understand import UnreadableMessage, understand
settings = load_settings(Path(sys.argv[2]))
raw = Path(sys.argv[1]).read_bytes()
start = time.perf_counter()
try:
    reading = understand(raw, received=datetime.fromisoformat(sys.argv[3]),
                         events=settings.events, own_addresses={"rejestracja@example.com"})
    outcome = f"{reading.kind}, {len(reading.registrants)} registrants"
except UnreadableMessage:  # the reader's own verdict: the watcher keeps it for review
    outcome = "unreadable: to review"
except BaseException as err:  # what the watcher would have to survive
    outcome = f"raised {type(err).__name__}"
print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def message(*, body: str = "Dzień dobry", subject: str = "Re: Zaproszenie",
            sender: str = "jan.kowalski@gdynia.example.com", html: str | None = None,
            raw_headers: str = "") -> bytes:
    """A plain reply with the given parts; `raw_headers` are put in as written."""
    msg = EmailMessage()
    msg["To"] = "rejestracja@example.com"
    msg["Message-ID"] = "<hostile@gdynia.example.com>"
    if html is None:
        msg.set_content(body)
    else:  # HTML only, as Outlook sends it: read as text through html2text
        msg.set_content(html, subtype="html")
    head = f"From: {sender}\r\nSubject: {subject}\r\n{raw_headers}"
    return head.encode("utf-8", "surrogateescape") + msg.as_bytes(policy=msg.policy.clone(
        linesep="\r\n"))


def nested_multiparts(depth: int) -> bytes:
    """`depth` multiparts inside each other, a text part at the bottom."""
    head = "From: jan@gdynia.example.com\r\nSubject: Re: Zaproszenie\r\nMIME-Version: 1.0\r\n"
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n'
                      for n in range(depth))
    closing = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(depth)))
    return (head + opening + "Content-Type: text/plain\r\n\r\nWydarzenie: oba\r\n"
            + closing).encode()


def folded(value: str, width: int = 900) -> str:
    """A long header value folded so that no line passes the 998-octet limit."""
    return "\r\n ".join(value[i:i + width] for i in range(0, len(value), width))


FORM = ("Wydarzenie: oba\nImię i nazwisko: Jan Kowalski\nStanowisko: Naczelnik\n"
        "Miasto / urząd: Gdynia\nE-mail: jan.kowalski@gdynia.example.com\nTelefon: 58 1\n\n")


@dataclass(frozen=True)
class Case:
    """One crafted message and the stage of the reader it aims at."""

    name: str
    stage: str
    build: Callable[[], bytes]


CASES = (
    Case("events-list", "form", lambda: message(body="Wydarzenie: " + "pim, " * 8_000)),
    Case("mailto-repeated", "form", lambda: message(body="E-mail: " + "<mailto:" * 20_000)),
    Case("forms-15000", "form", lambda: message(body=FORM * 15_000)),
    Case("cdata-angles", "html", lambda: message(html="<![x[" + "<" * 50_000)),
    Case("nested-lists", "html", lambda: message(html="<ul><li>" * 10_000)),
    Case("quote-markers", "quotes", lambda: message(
        body="W dniu 20.10.2020 o 12:00 Jan Kowalski <jan@gdynia.example.com> pisze:"
        + "\n>" * 500_000)),
    Case("subject-spaces", "headers", lambda: message(subject="Re" + " " * 60_000)),
    Case("subject-encoded-words", "headers", lambda: message(
        subject=folded("=?utf-8?q?=C5=81=C3=B3d=C5=BA?= " * 30_000))),
    Case("from-60000-addresses", "headers", lambda: message(
        sender=folded(", ".join(f"a{n}@x.pl" for n in range(60_000))))),
    Case("from-parentheses", "headers", lambda: message(sender="(" * 500)),
    Case("nested-multiparts", "mime", lambda: nested_multiparts(1_000)),
    Case("many-parts", "mime", lambda: nested_multiparts(1).replace(
        b"Content-Type: text/plain\r\n\r\nWydarzenie: oba\r\n",
        b"".join(b"Content-Type: text/plain\r\n\r\nx\r\n--b0\r\n" for _ in range(10_000))
        + b"Content-Type: text/plain\r\n\r\nx\r\n")),
)


def measure(case: Case, folder: Path, timeout: float) -> dict[str, object]:
    """Read the case's message in a child: seconds, peak memory (MB), outcome."""
    path = folder / f"{case.name}.eml"
    path.write_bytes(case.build())
    size = path.stat().st_size
    try:
        result = run_child([sys.executable, "-c", _CHILD, str(path),
                            str(REPO / "campaign.toml"), RECEIVED], timeout=timeout, cwd=REPO)
    except BenchError:
        return {"size": size, "seconds": None, "mb": None, "outcome": f"over {timeout:.0f} s"}
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"size": size, "seconds": None, "mb": result.rss_kb / 1024,
                "outcome": f"crashed: {tail[:60]}"}
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"size": size, "seconds": report["seconds"], "mb": result.rss_kb / 1024,
            "outcome": report["outcome"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a case may take before it is killed (default 30)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds any message may take (default 2)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this case (repeatable)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only]
    if not cases:
        parser.error(f"no such case; the cases: {', '.join(c.name for c in CASES)}")
    slowest: dict[str, tuple[float, str]] = {}
    print(f"{'case':24} {'stage':8} {'size':>9} {'seconds':>8} {'MB':>6}  outcome")
    with tempfile.TemporaryDirectory(prefix="mailer-hostile-") as folder:
        for case in cases:
            row = measure(case, Path(folder), args.timeout)
            seconds = row["seconds"]
            failed_outright = seconds is None or "raised" in str(row["outcome"])
            cost = args.timeout if failed_outright else float(str(seconds))
            if cost >= slowest.get(case.stage, (-1.0, ""))[0]:
                slowest[case.stage] = (cost, case.name)
            shown = "-" if seconds is None else f"{seconds:.2f}"
            mb = "-" if row["mb"] is None else f"{row['mb']:.0f}"
            print(f"{case.name:24} {case.stage:8} {row['size']:>9} {shown:>8} {mb:>6}  "
                  f"{row['outcome']}", flush=True)
    print(f"\nslowest per stage against the {args.budget:g} s budget:")
    failed = 0
    for stage, (cost, name) in sorted(slowest.items()):
        ok = cost <= args.budget
        failed += not ok
        print(f"  {stage:8} {cost:8.2f} s  ({cost / args.budget:.1f}× budget)  {name:24} "
              f"{verdict(ok)}")
    failed += not asyncio.run(through_the_watchers_readers(cases, args.budget))
    return 1 if failed else 0


async def through_the_watchers_readers(cases: Sequence[Case], budget: float) -> bool:
    """Every case and one ordinary reply in one batch, read as the watcher reads them: by a
    worker process, each message within the budget (over it: kept for review). Holds when
    the ordinary reply is read and no case took much more than the budget."""
    settings = load_settings(REPO / "campaign.toml")
    received = datetime.fromisoformat(RECEIVED)
    items = [(case.build(), received) for case in cases]
    items.append((message(body=FORM), received))
    readers = Readers(events=settings.events, own_addresses=settings.own_addresses,
                      authserv_id="", workers=1, budget=budget)
    try:
        await readers.start(items[-1:])  # the worker's start is not the messages' cost
        started = time.perf_counter()
        readings = await readers.start(items)
        took = time.perf_counter() - started
    finally:
        readers.close()
    print(f"\nthrough the watcher's readers (one worker, {budget:g} s budget per message):")
    for name, reading in zip([c.name for c in cases] + ["ordinary reply"], readings,
                             strict=True):
        outcome = reading.reason.english() if isinstance(reading, ReadFailure) \
            else f"{reading.kind}, {len(reading.registrants)} registrants"
        print(f"  {name:24} {outcome}")
    ordinary = readings[-1]
    limit = budget * len(items) + 2
    ok = not isinstance(ordinary, ReadFailure) and len(ordinary.registrants) == 1 \
        and took <= limit
    print(f"  the batch of {len(items)}: {took:.1f} s (at most {limit:.0f} s)  {verdict(ok)}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
