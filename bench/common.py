"""What the benchmark scripts share: free ports, the SMTP sink (Postfix's smtp-sink, else an
aiosmtpd child process that counts), campaign-file editing, the verdict column."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServer

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark could not measure (a child failed or timed out, a server refused, …)."""


def _slug(text: str) -> str:
    """ASCII for an address: diacritics dropped (ł has no decomposition), spaces → '-'."""
    text = text.replace("ł", "l").replace("Ł", "L")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join(plain.lower().split())


def _rewrite_toml(text: str, changes: dict[tuple[str, str], str]) -> str:
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


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=child_sink.__doc__)
    parser.add_argument("--port", type=int, required=True)
    child_sink(parser.parse_args().port)
