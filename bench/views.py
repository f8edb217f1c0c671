#!/usr/bin/env python3
"""Benchmark the staff's views on a state of 20,000 registrations (issue 17).

    .venv/bin/python bench/views.py [--k 20000] [--repeat 3] [--seed 2020] [--keep]

Fills a state once with K registrations, their inbound messages (and .eml files) and sent
answers, in the shapes the watcher writes (bench/ingest.py's `prepopulate`, folded), in a
copy of the repository's campaign. Then, each in its own child process (so that peak memory
is per measurement, bench/common.py's launcher):

  web       the web app (mailer.web.app.create_app through starlette's TestClient, in one
            process as `mailer web` serves it): signs in, then asks for each page — the
            dashboard "/", /registrations, /person?address=…, /cities, /review. "first" is
            the first request of each page after start (the state read from disk included for
            the first page); "warm" the median of --repeat requests more with the state
            unchanged; "changed" a request after the journal has grown by one record (what a
            running `mailer run` does to the web view every few seconds).
  cli       `mailer status`, `status --cities`, `registrations --format csv`, `show ADDRESS`
            and `review`, each a whole process (imports and reading the state included).

Targets: each web page ≤ 300 ms (warm and after a change), `status --cities` and
`registrations --format csv` ≤ 1 s; the other commands are shown against 1 s too. Exit
status 0 when every target passes, 1 when one fails, 2 when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    REPO,
    ChildResult,
    child_failed,
    free_port,
    in_scratch_folder,
    run_child,
    verdict,
)
from ingest import NOW, make_workspace, prepopulate
from starlette.testclient import TestClient

from mailer.clock import Clock
from mailer.journal import change_line
from mailer.settings import load_settings
from mailer.store import encode, open_state
from mailer.web.app import create_app

PAGES = ["/", "/registrations", "/person", "/cities", "/review"]
PAGE_TARGET = 0.300  # seconds
CLI_TARGET = 1.0
CLI_COMMANDS: list[tuple[str, list[str]]] = [
    ("status", ["status"]),
    ("status --cities", ["status", "--cities"]),
    ("registrations --format csv", ["registrations", "--format", "csv"]),
    ("show ADDRESS", ["show", "{address}"]),
    ("review", ["review"]),
]
TOKEN = "bench-token"


def some_address(config: Path) -> str:
    """A registered person's address from the filled state (for /person and `show`)."""
    with open_state(load_settings(config).storage, writer=False) as store:
        keys = sorted(store.keys("registrations"))
    return keys[len(keys) // 2]


def child_web(config: Path, address: str, repeat: int) -> None:
    """`--child web`: time each page; print {"first", "warm", "changed", "load", "rss_mb"}."""

    settings = load_settings(config)
    app = create_app(settings, clock=Clock(datetime.fromisoformat(NOW)), token=TOKEN, port=8025)
    client = TestClient(app, base_url="http://127.0.0.1:8025", follow_redirects=False)

    def get(page: str) -> float:
        url = f"{page}?address={address}" if page == "/person" else page
        start = time.perf_counter()
        response = client.get(url)
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
        return seconds

    start = time.perf_counter()
    if client.get(f"/login?token={TOKEN}").status_code != 303:
        raise SystemExit("sign-in failed")
    login = time.perf_counter() - start
    first = {page: get(page) for page in PAGES}
    warm = {page: statistics.median(get(page) for _ in range(repeat)) for page in PAGES}
    changed: dict[str, float] = {}
    journal = settings.storage / "journal.jsonl"
    for i, page in enumerate(PAGES):
        # One record more in the journal, as the watcher appends: the view must notice it.
        with open(journal, "ab") as handle:
            handle.write(change_line("meta", "bench_views", encode({"at": NOW, "n": i})) + b"\n")
        changed[page] = get(page)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"login": login, "first": first, "warm": warm, "changed": changed,
                      "rss_mb": rss}), flush=True)


def measure_web(config: Path, address: str, repeat: int) -> dict[str, Any]:
    result = run_child([sys.executable, str(Path(__file__)), "--child", "web",
                        "--config", str(config), "--address", address,
                        "--repeat", str(repeat)], timeout=900, cwd=config.parent)
    if result.returncode != 0:
        raise child_failed("the web child", result)
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    data["peak_mb"] = result.rss_kb / 1024
    return data


def measure_cli(config: Path, address: str, repeat: int) -> dict[str, ChildResult]:
    env = {**os.environ, "MAILER_NOW": NOW}
    results: dict[str, ChildResult] = {}
    for label, args in CLI_COMMANDS:
        argv = [a.format(address=address) for a in args]
        runs = []
        for _ in range(repeat):
            result = run_child([sys.executable, "-m", "mailer", "--config", str(config), *argv],
                               timeout=600, cwd=config.parent, env=env)
            if result.returncode != 0:
                raise child_failed(f"mailer {label}", result)
            runs.append(result)
        results[label] = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    return results


def report(k: int, web: dict[str, Any], cli: dict[str, ChildResult]) -> bool:
    ok = True
    print(f"\nStaff views at {k:,} registrations (web: one process, peak "
          f"{web['peak_mb']:.0f} MB; sign-in {web['login'] * 1000:.0f} ms)")
    print(f"{'web page':<16} {'first':>9} {'warm':>9} {'changed':>9} {'target':>8} "
          f"{'ratio':>6}  verdict")
    for page in PAGES:
        worst = max(web["warm"][page], web["changed"][page])
        passed = worst <= PAGE_TARGET
        ok &= passed
        print(f"{page:<16} {web['first'][page] * 1000:>7.0f}ms {web['warm'][page] * 1000:>7.0f}ms "
              f"{web['changed'][page] * 1000:>7.0f}ms {PAGE_TARGET * 1000:>6.0f}ms "
              f"{worst / PAGE_TARGET:>6.2f}  {verdict(passed)}")
    print(f"\n{'command (whole process)':<30} {'seconds':>8} {'peak MB':>8} {'target':>7} "
          f"{'ratio':>6}  verdict")
    for label, result in cli.items():
        passed = result.seconds <= CLI_TARGET
        ok &= passed
        print(f"{'mailer ' + label:<30} {result.seconds:>8.2f} {result.rss_kb / 1024:>8.0f} "
              f"{CLI_TARGET:>6.1f}s {result.seconds / CLI_TARGET:>6.2f}  {verdict(passed)}")
    print("(the ratio is the figure over its target: ≤ 1.00 passes)")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--k", type=int, default=20_000, help="registrations (default 20000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="requests / runs per figure, the median is shown (default 3)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", choices=("web",), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.k < 1 or args.repeat < 1:
        parser.error("--k and --repeat must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "web":
        child_web(args.config, args.address, args.repeat)
        return 0
    return in_scratch_folder("mailer-views-", args.keep, lambda root: measure(args, root))


def measure(args: argparse.Namespace, root: Path) -> bool:
    """Fill a state in `root`, then time the web pages and the commands on it."""
    config = make_workspace(root / "campaign", imap_port=free_port(), user="bench",
                            smtp_port=free_port())
    start = time.perf_counter()
    prepopulate(config, args.k, seed=args.seed, pointer=None)
    print(f"filled a state with {args.k:,} registrations in "
          f"{time.perf_counter() - start:.1f} s ({root})", flush=True)
    address = some_address(config)
    web = measure_web(config, address, args.repeat)
    cli = measure_cli(config, address, args.repeat)
    return report(args.k, web, cli)


if __name__ == "__main__":
    assert REPO.is_dir()
    sys.exit(main())
