"""Image file names for conversions: safe stems from ids, never colliding."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^\w.-]+")


def safe_stem(name: str, fallback: str) -> str:
    """A file-name stem from an id: no separators, no leading dots, nothing that climbs out of a folder."""
    stem = re.sub(r"[._]{2,}", "_", _UNSAFE.sub("_", name)).strip("._")[:120]
    return stem or fallback


class NameBook:
    """Hands out file names that never collide (case-insensitively), in a stable order."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, stem: str) -> str:
        name, n = stem, 1
        while name.lower() in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name.lower())
        return name
