"""The built wheel, installed (not editable) in a fresh venv, outside the checkout: init, demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from mailer.skeleton import skeleton_files
from tests.conftest import REPO
from tests.system import SYSTEM_SETUP

DEMO_LIMIT = 60  # seconds: issue 15, "finishes in under a minute"


def run(command: list[str | Path], *, cwd: Path, timeout: float,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n" \
        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def build_wheel(tmp: Path) -> Path:
    """`pip wheel` from a copy of the sources, so the checkout gets no build/ folder."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", source],
        cwd=tmp, timeout=240)
    (wheel,) = (tmp / "dist").glob("mailer-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv with only the wheel installed in it; the dependencies (already installed in the
    test's own environment) are reached by a .pth line, so nothing is downloaded. A path in
    a .pth is not a site dir: the checkout's editable install (a .pth there) stays out."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, timeout=60)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", wheel], cwd=tmp, timeout=120)
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       cwd=tmp, timeout=30).stdout.strip())
    (purelib / "zz_mailer_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def processes_of(venv: Path) -> list[str]:
    """Command lines of running processes started from `venv` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(venv) in text:
            found.append(text)
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_wheel_inits_checks_and_demos_outside_the_checkout(tmp_path: Path) -> None:
    """From the built wheel in a fresh venv, in an empty folder: `mailer --version`,
    `mailer init`, `mailer check` exit 0; `mailer demo` exits 0 within a minute and leaves
    nothing running."""
    venv = fresh_venv(tmp_path, build_wheel(tmp_path))
    mailer = venv / "bin" / "mailer"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MAILER_CONFIG", "MAILER_NOW", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    home = tmp_path / "home"
    home.mkdir()

    where = run([venv / "bin" / "python", "-c", "import mailer; print(mailer.__file__)"],
                cwd=home, env=env, timeout=30).stdout
    assert where.startswith(str(venv)), f"mailer imported from {where}, not the wheel"
    assert "0." in run([mailer, "--version"], cwd=home, env=env, timeout=30).stdout

    run([mailer, "init", "kampania"], cwd=home, env=env, timeout=60)
    campaign = home / "kampania"
    written = {str(p.relative_to(campaign)) for p in campaign.rglob("*") if p.is_file()}
    assert written == set(skeleton_files())
    assert (campaign / "recipients" / "miasta.csv").read_bytes() == \
        (REPO / "recipients" / "miasta.csv").read_bytes()  # Windows-1250, as shipped
    run([mailer, "check"], cwd=campaign, env=env, timeout=60)
    # The Polish catalogue is in the wheel: under a Polish locale the summary is Polish.
    polish = run([mailer, "check"], cwd=campaign, timeout=60,
                 env={**env, "LC_ALL": "pl_PL.UTF-8", "LANGUAGE": ""}).stdout
    assert "20 kontaktów" in polish and "kampania" in polish

    empty = home / "empty"
    empty.mkdir()
    started = time.monotonic()
    demo = run([mailer, "demo", "--dir", home / "demo"], cwd=empty, env=env,
               timeout=DEMO_LIMIT + 30)
    took = time.monotonic() - started
    assert "Demo finished" in demo.stdout, demo.stdout[-2000:]
    assert took < DEMO_LIMIT, f"the demo took {took:.1f} s"
    assert not list(empty.iterdir()), "the demo wrote into the folder it ran from"
    assert not processes_of(venv), processes_of(venv)


def test_ci_runs_the_readmes_two_commands() -> None:
    """.ci/run is the README's first two commands, and scripts/setup prints the very command
    that the tests needing Dovecot or Chromium name when those are missing."""
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    commands = [line.split("#")[0].strip() for line in readme[:5] if line.startswith("    ")]
    assert commands == ["bash scripts/setup && .venv/bin/mailer demo",
                        "bash scripts/setup && bash scripts/check"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == commands
    setup = (REPO / "scripts" / "setup").read_text()
    assert f'SYSTEM_COMMAND="{SYSTEM_SETUP}"' in setup
    for package in ("python3-venv", "dovecot-imapd", "openssl", "chromium", "fonts-dejavu-core"):
        assert package in setup
