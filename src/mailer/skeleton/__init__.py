"""The default campaign as package data: `mailer init` writes it out, `mailer demo` plays it.

The files beside this module (campaign.toml, templates/, recipients/miasta.csv) are the ones
the checkout uses too: its campaign.toml, templates/ and recipients/miasta.csv are symlinks
here (issue 15), so the package and the repository cannot drift apart.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from mailer.errors import MailerError
from mailer.settings import DEFAULT_CONFIG

# state/ holds personal data (every reply as received); devmail/ is `mailer devserver`'s.
GITIGNORE = """\
# Stan kampanii: dane osobowe (każda odpowiedź, jak przyszła) – nie do repozytorium.
# The campaign's state: personal data (every reply as received) – keep it out of git.
state/
# Skrzynki `mailer devserver` / `mailer devserver`'s mailboxes.
devmail/
"""
FOLDERS = ("templates", "recipients")


def _skeleton() -> Traversable:
    return files(__name__)


def skeleton_files() -> dict[str, bytes]:
    """Every file of the default campaign by its path in a campaign folder, with its bytes."""
    root = _skeleton()
    found = {DEFAULT_CONFIG: root.joinpath(DEFAULT_CONFIG).read_bytes()}
    for folder in FOLDERS:
        for item in sorted(root.joinpath(folder).iterdir(), key=lambda t: t.name):
            if item.is_file():
                found[f"{folder}/{item.name}"] = item.read_bytes()
    found[".gitignore"] = GITIGNORE.encode()
    return found


def write_campaign(folder: Path) -> list[Path]:
    """Write the default campaign into `folder`; refuses, naming them, to overwrite files."""
    content = skeleton_files()
    targets = {folder / name: data for name, data in content.items()}
    existing = sorted(str(path) for path in targets if path.exists() or path.is_symlink())
    if existing:
        raise MailerError(
            f"{folder}: would overwrite {len(existing)} existing file(s): "
            + ", ".join(existing[:5]) + (", …" if len(existing) > 5 else ""),
            hint="choose a new or empty folder, or move those files away first")
    for path, data in targets.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as out:  # exclusive: never replaces a file made meanwhile
                out.write(data)
        except OSError as err:
            raise MailerError(f"{path}: cannot write the campaign: {err.strerror or err}",
                              hint="choose a folder you can write to") from err
    return list(targets)


@contextmanager
def default_campaign() -> Iterator[Path]:
    """The packaged campaign file as a real path (written to a temporary folder when the
    package is not a plain folder, e.g. imported from a zip)."""
    root = _skeleton()
    if isinstance(root, Path):
        yield root / DEFAULT_CONFIG
        return
    with tempfile.TemporaryDirectory(prefix="mailer-campaign-") as tmp:
        write_campaign(Path(tmp))
        yield Path(tmp) / DEFAULT_CONFIG
