"""The command line in Polish under a Polish locale (SPEC: CLI), English otherwise."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from mailer import i18n
from mailer.report import plural
from tests.conftest import REPO

KEYWORDS = {"_": None, "n_": (1, 2), "plural": (2, 3)}


def wrapped_messages() -> set[str | tuple[str, str]]:
    """Every message the code hands to `_`, `n_` or `plural` as a literal."""
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(REPO / "src" / "mailer"), keywords=KEYWORDS, comment_tags=()):
        found.add(tuple(message) if isinstance(message, (tuple, list)) else message)
    return found


def fields(text: str) -> list[str]:
    return sorted(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


def test_every_wrapped_message_is_translated() -> None:
    """A message the code wraps has its Polish, with every form and the same {fields}."""
    with i18n.CATALOGUE.open("rb") as source:
        catalogue = read_po(source, locale="pl")
    missing = []
    for message in wrapped_messages():
        entry = catalogue.get(message[0] if isinstance(message, tuple) else message)
        if entry is None or not entry.string or not all(
                entry.string if isinstance(entry.string, tuple) else [entry.string]):
            missing.append(message)
            continue
        msgid = entry.id[0] if isinstance(entry.id, tuple) else entry.id
        for translated in entry.string if isinstance(entry.string, tuple) else [entry.string]:
            assert fields(translated) == fields(msgid), (msgid, translated)
        if isinstance(message, tuple):
            assert len(entry.string) == 3, message  # Polish: 1, 2–4, 5+
    assert not missing, f"not in {i18n.CATALOGUE.name}: {sorted(map(str, missing))}"


@pytest.mark.parametrize(("env", "language"), [
    ({"LANG": "pl_PL.UTF-8"}, "pl"),
    ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LC_ALL": "pl_PL.UTF-8", "LANG": "en_US.UTF-8"}, "pl"),
    ({"LC_ALL": "C.UTF-8", "LANG": "pl_PL.UTF-8"}, "en"),
    ({"LANGUAGE": "pl:en", "LANG": "C.UTF-8"}, "pl"),
    ({}, "en"),
])
def test_the_locale_chooses_the_language(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                         language: str) -> None:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert i18n.language() == language


def test_polish_counts_take_their_three_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGUAGE", "pl")
    counts = [plural(n, "new message", "new messages") for n in (0, 1, 2, 5, 12, 22, 112)]
    assert counts == ["0 nowych wiadomości", "1 nowa wiadomość", "2 nowe wiadomości",
                      "5 nowych wiadomości", "12 nowych wiadomości", "22 nowe wiadomości",
                      "112 nowych wiadomości"]
    monkeypatch.setenv("LANGUAGE", "en")
    assert plural(1, "new message", "new messages") == "1 new message"


def test_the_command_line_speaks_polish(make_workspace: Any) -> None:
    """`check` and an error under a Polish locale; the same in English otherwise."""
    ws = make_workspace()
    polish = {"LC_ALL": "pl_PL.UTF-8", "LANGUAGE": ""}
    result = ws.run("check", **polish)
    assert result.returncode == 0, result.stderr
    assert re.search(r"kampania '.*': 5 kontaktów, błędne: 0, 0 duplikatów", result.stdout)
    english = ws.run("check", LC_ALL="en_US.UTF-8", LANGUAGE="")
    assert "5 contacts, 0 invalid, 0 duplicates" in english.stdout
    (ws.root / "templates" / "confirmation.txt.j2").unlink()
    failed = ws.run("check", **polish)
    assert failed.returncode == 1 and "błąd: template not found" in failed.stderr
    assert "wskazówka: " in failed.stderr


def test_the_catalogue_ships_with_the_package() -> None:
    assert i18n.CATALOGUE.is_file()
    assert 'mailer = ["py.typed", "locale/*.po"]' in (REPO / "pyproject.toml").read_text(
        encoding="utf-8")
    assert Path(i18n.__file__).parent / "locale" / "pl.po" == i18n.CATALOGUE
