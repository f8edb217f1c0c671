"""What the benchmark scripts share: the measured child process (time, CPU, peak memory), free
ports, the SMTP sink (Postfix's smtp-sink, else an aiosmtpd child process that counts),
campaign-file editing, the verdict column."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServer

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark could not measure (a child failed or timed out, a server refused, …)."""


# ---------------------------------------------------------------------------------------------
# Child processes: one at a time, timed, peak memory of the program and of its own children


@dataclass
class ChildResult:
    """One finished child: exit status, wall time, memory, CPU and its output."""

    returncode: int
    seconds: float
    max_rss_kb: int  # the peak RSS of its largest process (wait4)
    tree_kb: int  # the peak PSS of the program and its child processes together (sampled)
    cpu: float  # user + system seconds, its child processes included
    load: float  # the 1-minute load average when it ended (other work on the machine)
    stdout: str
    stderr: str

    @property
    def rss_kb(self) -> int:
        """What the program holds at its peak: its worker processes count too."""
        return max(self.max_rss_kb, self.tree_kb)


# The measured program is started by this small launcher, not by the benchmark itself: Linux
# counts the RSS of the process that spawned a child (at exec) into the child's ru_maxrss, and
# a benchmark holds thousands of messages (and the stored state) in memory; the launcher is a
# few MB. wait4() gives the peak of the largest process only, so the launcher also adds up the
# memory of the program and its descendants (mailer's reader workers) every 50 ms: their PSS,
# which counts a page shared by several processes (libpython, the modules' code) once, where
# RSS would count it in each.
_LAUNCHER = """\
import json, os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
def tree(root):
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo += [int(c) for c in children.read().split()]
        except (OSError, ValueError):
            pass
    return found
def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
peak = 0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    peak = max(peak, sum(pss_kb(p) for p in tree(pid)))
    time.sleep(0.05)
with open(report, "w") as out:
    json.dump({"status": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss,
               "tree": peak, "seconds": time.perf_counter() - start,
               "cpu": usage.ru_utime + usage.ru_stime}, out)
"""


def run_child(cmd: Sequence[str], *, timeout: float, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> ChildResult:
    """Run `cmd` to completion (killed after `timeout` s): wall time, peak memory, CPU."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "rusage.json"
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(report), *cmd],
                                cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the program
            proc.wait(timeout=10)
            raise BenchError(f"{' '.join(cmd[:6])} …: no result within {timeout:.0f} s") \
                from None
        except BaseException:  # Ctrl-C: leave no child behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise
        if proc.returncode != 0 or not report.exists():
            err.seek(0)
            raise BenchError(f"the launcher of {' '.join(cmd[:6])} … failed "
                             f"({proc.returncode}): {err.read().decode(errors='replace')}")
        usage = json.loads(report.read_text())
        out.seek(0)
        err.seek(0)
        return ChildResult(usage["status"], usage["seconds"], usage["maxrss"], usage["tree"],
                           usage["cpu"], os.getloadavg()[0], out.read().decode(errors="replace"),
                           err.read().decode(errors="replace"))


def child_failed(what: str, result: ChildResult) -> BenchError:
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
    return BenchError(f"{what} exited with {result.returncode}:\n{tail}")


def slug(text: str) -> str:
    """ASCII for an address: diacritics dropped (ł has no decomposition), spaces → '-'."""
    text = text.replace("ł", "l").replace("Ł", "L")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join(plain.lower().split())


def rewrite_toml(text: str, changes: dict[tuple[str, str], str]) -> str:
    """Replace `key = value` lines of the given tables; every change must find its line."""
    section, lines, done = "", [], set()
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip()
        elif "=" in stripped and not stripped.startswith("#"):
            where = (section, stripped.split("=", 1)[0].strip())
            if where in changes:
                lines.append(f"{where[1]} = {changes[where]}\n")
                done.add(where)
                continue
        lines.append(line)
    if missing := set(changes) - done:
        raise BenchError(f"{REPO / 'campaign.toml'}: no line for {sorted(missing)}")
    return "".join(lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the sink exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"the sink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def smtp_sink_path() -> str | None:
    return shutil.which("smtp-sink") or next(
        (p for p in ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink") if os.access(p, os.X_OK)),
        None)


class Sink:
    """A fresh sink per measurement, so its message counter checks that measurement alone."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def describe(self) -> str:
        if self.kind == "smtp-sink":
            return f"Postfix smtp-sink ({smtp_sink_path()})"
        return "aiosmtpd 1.x in a separate process (no smtp-sink found)"

    def __enter__(self) -> Sink:
        self.port = free_port()
        self.log = self.folder / f"sink-{self.port}.log"
        if self.kind == "smtp-sink":
            path = smtp_sink_path()
            assert path is not None
            user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required when root
            # -c: running counters on stdout ("… mesg=N"); 256: listen backlog
            cmd = [path, "-c", *user, f"127.0.0.1:{self.port}", "256"]
        else:
            cmd = [sys.executable, __file__, "--port", str(self.port)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        """Stop the sink; the number of messages it accepted, when it says."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        assert self.log is not None
        counts = re.findall(r"mesg=(\d+)", self.log.read_text(errors="replace"))
        return int(counts[-1]) if counts else None


class _CountingHandler:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 Ok"


def child_sink(port: int) -> None:
    """`python bench/common.py --port P`: an aiosmtpd server that discards messages;
    prints mesg=N on SIGTERM."""
    handler = _CountingHandler()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(lambda: SMTPServer(handler, hostname="sink"),
                                          "127.0.0.1", port)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    print(f"mesg={handler.count}", flush=True)


def choose_sink(choice: str) -> str:
    if choice == "auto":
        return "smtp-sink" if smtp_sink_path() else "aiosmtpd"
    if choice == "smtp-sink" and not smtp_sink_path():
        raise BenchError("smtp-sink not found; install Debian's postfix package or use "
                         "--sink aiosmtpd")
    return choice


def verdict(ok: bool) -> str:
    """The report's verdict column: PASS or FAIL."""
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=child_sink.__doc__)
    parser.add_argument("--port", type=int, required=True)
    child_sink(parser.parse_args().port)


def in_scratch_folder(prefix: str, keep: bool, work: Callable[[Path], int | bool]) -> int:
    """Run `work` in a fresh temporary folder, removed after unless `keep`: its exit code (True
    is 0, False 1), or 2 with the message of a BenchError."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        outcome = work(root)
        return outcome if not isinstance(outcome, bool) else 0 if outcome else 1
    except BenchError as err:
        print(f"benchmark error: {err}", file=sys.stderr)
        return 2
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
