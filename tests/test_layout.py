"""The package's layout: no import cycles, modules import alone, pure reading, the commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner

from mailer.cli.main import cli

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mailer"
READING = PACKAGE / "reading"
COMMANDS = ("check", "deliver", "demo", "devserver", "doctor", "forget", "init", "inspect",
            "preview", "purge", "registrations", "remind", "review", "run", "send", "show",
            "status", "watch", "web")
# What a pure reader must not touch: state, the clock, the network, files, processes.
IMPURE_IMPORTS = ("mailer.store", "mailer.audit", "mailer.clock", "mailer.imap_client",
                  "mailer.smtp_client", "mailer.watcher", "asyncio", "socket", "subprocess",
                  "os", "time", "pathlib", "sqlite3", "tinydb")
IMPURE_CALLS = ("open", "datetime.now", "datetime.utcnow", "date.today", "time.time")
# workers.py is the process boundary: processes and signals, but still no state or clock.
WORKER_FORBIDDEN = ("mailer.store", "mailer.audit", "mailer.clock")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: not in functions, not under TYPE_CHECKING."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from top_level_imports(node.body)
            yield from top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(handler.body for handler in node.handlers)):
                yield from top_level_imports(block)
        elif isinstance(node, ast.With | ast.ClassDef):  # class bodies run at import too
            yield from top_level_imports(node.body)


def all_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it is."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules `node` (in `module`) imports; `from p import m` names p.m when m is one."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names]


def parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))


def import_graph() -> dict[str, set[str]]:
    return {module: {name for node in top_level_imports(parse(module).body)
                     for name in imported_names(module, node) if name in MODULES}
            for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def impurities(module: str, forbidden: tuple[str, ...], calls: tuple[str, ...]) -> list[str]:
    """What in `module` imports a forbidden module or makes a forbidden call, with its line."""
    tree = parse(module)
    found = list(dict.fromkeys(  # once per statement, not per imported name
        f"{module}:{node.lineno} imports {name}"
        for node in all_imports(tree) for name in imported_names(module, node)
        if any(name == bad or name.startswith(f"{bad}.") for bad in forbidden)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if any(name == call or name.endswith(f".{call}") for call in calls):
                found.append(f"{module}:{node.lineno} calls {name}()")
    return found


def test_the_module_graph_is_read_whole() -> None:
    """The layout checks below see every package and reach the modules they name."""
    assert {"mailer", "mailer.store", "mailer.watcher", "mailer.reading.workers",
            "mailer.cli.main", "mailer.web.app", "mailer.dev.devserver"} <= set(MODULES)
    graph = import_graph()
    assert {"mailer.cli.inbox", "mailer.cli.send"} <= graph["mailer.cli.main"]
    assert "mailer.store" in graph["mailer.watcher"]


def test_no_import_cycle_at_module_level() -> None:
    """No chain of module-level imports between mailer's modules leads back to its start."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or ())


def test_find_cycle_finds_one() -> None:
    """The cycle finder reports a cycle when there is one (so the test above can fail)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_alone() -> None:
    """Each module imports in a fresh interpreter, without another module imported first."""
    def try_import(module: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return module, subprocess.run([sys.executable, "-c", f"import {module}"],
                                      capture_output=True, text=True, timeout=50, check=False)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(try_import, sorted(MODULES)))
    failed = {module: result.stderr.strip().splitlines()[-1:]
              for module, result in results if result.returncode != 0}
    assert not failed, failed


def test_only_the_store_imports_tinydb() -> None:
    """TinyDB is the store's business: no other module imports it."""
    importers = {module for module in MODULES for node in all_imports(parse(module))
                 for name in imported_names(module, node)
                 if name == "tinydb" or name.startswith("tinydb.")}
    assert importers == {"mailer.store"}


def test_reading_is_pure() -> None:
    """The reading modules take values and return values: no state, clock, network or files;
    workers.py (the process boundary) may use processes but no state or clock either."""
    reading = [m for m in MODULES if MODULES[m].parent == READING]
    assert "mailer.reading.parse" in reading
    found = [problem for module in reading if module != "mailer.reading.workers"
             for problem in impurities(module, IMPURE_IMPORTS, IMPURE_CALLS)]
    found += impurities("mailer.reading.workers", WORKER_FORBIDDEN, ())
    assert not found, "\n".join(found)


def test_help_lists_the_commands() -> None:
    """`mailer --help` lists exactly the service's commands."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    section = result.output.split("Commands:", 1)[1]
    listed = [line.split()[0] for line in section.splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(listed) == sorted(COMMANDS)
