"""Names made fit for searching and for file names, in any script.

Transliteration is anyascii's (ISC licence): "Zoë" becomes "Zoe", "øre" "ore", "Æ" "AE",
"Đặng" "Dang", "Straße" "Strasse"; other scripts get their usual romanisation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from anyascii import anyascii

__all__ = ["search_text", "search_patterns", "file_slug"]

_NOT_SLUG = re.compile(r"[^A-Za-z0-9]+")


def _casefold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def search_text(names: Iterable[str]) -> str:
    """Return the text a letter is found by: each name as written and transliterated, folded.

    Each name appears twice, case-folded as written and in ASCII, so that "zoe" and "Zoë"
    both find "Zoë", and a search typed in the name's own script finds it too.
    """
    parts: list[str] = []
    for name in names:
        if name and name.strip():
            parts += [_casefold(name), _casefold(anyascii(name))]
    return "\n".join(dict.fromkeys(parts))


def search_patterns(query: str) -> list[str]:
    """Return the SQL LIKE patterns (escaped with backslash) that a search query matches."""
    words = [_casefold(query), _casefold(anyascii(query))]
    patterns = []
    for word in dict.fromkeys(w for w in words if w):
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        patterns.append(f"%{escaped}%")
    return patterns


def file_slug(text: str, *, limit: int = 60, default: str = "letter") -> str:
    """Return a lower-case ASCII file-name stem: letters transliterated, never dropped."""
    slug = _NOT_SLUG.sub("-", anyascii(unicodedata.normalize("NFC", text))).strip("-").lower()
    return slug[:limit].strip("-") or default
