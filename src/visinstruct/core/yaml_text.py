"""Dataset cards: a small YAML writer for the header (dicts, lists and scalars in block style, the way HF cards look),
so that writing a card needs no YAML package. Strings that YAML could read as anything but a string are quoted."""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/<>*]*( [A-Za-z0-9_.\-/<>*]+)*")
_NUMBER = re.compile(r"[-+]?(0[xob][0-9a-fA-F_]+|[\d_]*\.?[\d_]*([eE][-+]?\d+)?)")
_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def scalar(value: Any) -> str:
    """One scalar as YAML text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NUMBER.fullmatch(text) and text.lower() not in _WORDS:
        return text
    # a JSON string is a valid YAML double-quoted scalar; characters YAML will not read raw are escaped too
    return "".join(_escape(c) for c in json.dumps(text, ensure_ascii=False))


def _escape(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def dump(value: Any, indent: int = 0) -> list[str]:
    """Block-style lines of a dict or a list; list items sit at their key's indent, as HF cards write them."""
    pad, lines = " " * indent, []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{scalar(key)}:")
                lines += dump(item, indent + 2 if isinstance(item, dict) else indent)
            else:
                empty = "{}" if isinstance(item, dict) else "[]"
                lines.append(f"{pad}{scalar(key)}: {empty if isinstance(item, (dict, list)) else scalar(item)}")
        return lines
    for item in value:
        if isinstance(item, (dict, list)) and item:
            inner = dump(item, indent + 2)
            lines.append(f"{pad}- {inner[0][indent + 2:]}")
            lines += inner[1:]
        else:
            lines.append(f"{pad}- {scalar(item)}")
    return lines


_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
          (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


def size_category(n: int) -> str:
    """Hugging Face's size bucket for n rows."""
    return next((name for bound, name in _SIZES if n < bound), "n>1T")
