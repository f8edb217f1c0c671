"""Folding text for matching: lower case without diacritics, one character at a time, cached."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

# ł has no Unicode decomposition, so NFKD alone leaves it ("Łódź" would not match "lodz").
_POLISH_L = str.maketrans("łŁ", "lL")


def strip_marks(char: str) -> str:
    """One character without its combining marks, lower-cased (ł → l); may be longer than one
    character for ligatures and the like."""
    decomposed = unicodedata.normalize("NFKD", char.translate(_POLISH_L))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


class FoldTable(dict[int, str]):
    """A `str.translate` table filled on first sight: each character is folded once, not once
    per occurrence (folding every line of a quoted newsletter char by char was a hot spot).

    Folding char by char equals folding the whole text: NFKD decomposes each code point on its
    own (canonical reordering moves only combining marks, which are dropped) and lower-casing
    maps each code point without context.
    """

    def __init__(self, fold_char: Callable[[str], str], *, limit: int = 20_000) -> None:
        super().__init__()
        self.fold_char = fold_char
        self.limit = limit  # bounded: a message full of rare characters

    def __missing__(self, code: int) -> str:
        folded = self.fold_char(chr(code))
        if len(self) < self.limit:
            self[code] = folded
        return folded
