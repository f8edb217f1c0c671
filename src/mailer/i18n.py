"""The command line in Polish under a Polish locale, in English otherwise (SPEC: CLI).

Messages are written in English in the code, wrapped in `_()` (or `n_()` for a count), and
translated in `locale/pl.po`, a plain gettext catalogue a translator edits with any PO editor.
It is compiled in memory by Babel when the locale asks for Polish (a few milliseconds, once),
so no compiled file has to be kept in step with it. `tests/test_i18n.py` checks that every
message the code wraps has its translation.
"""

from __future__ import annotations

import functools
import gettext
import io
import os
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

CATALOGUE = Path(__file__).with_name("locale") / "pl.po"


def language() -> str:
    """"pl" when the locale is Polish (LC_ALL, else LC_MESSAGES, else LANG, as POSIX reads
    them; LANGUAGE's first entry first, as GNU gettext does), else "en"."""
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            first = value.split(":")[0] if name == "LANGUAGE" else value
            return "pl" if first.lower().startswith("pl") else "en"
    return "en"


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of `lang` (English: the messages as written)."""
    if lang != "pl":
        return gettext.NullTranslations()
    with CATALOGUE.open("rb") as source:
        catalogue = read_po(source, locale="pl")
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _(message: str) -> str:
    """`message` in the user's language."""
    return translations(language()).gettext(message)


def n_(one: str, many: str, count: int) -> str:
    """The form of a message that goes with `count` (Polish has three: 1, 2–4, 5+)."""
    return translations(language()).ngettext(one, many, count)
