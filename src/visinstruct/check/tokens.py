"""Counting a sample's tokens for --max-tokens: a real tokenizer (a `tokenizer.json`, read with the
`tokenizers` library) when --tokenizer names one, else a stated approximation: about 4 ASCII characters or
1.5 other characters per token (the same rule the generation engine uses for its estimates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.errors import UserError


def estimate_tokens(text: str) -> int:
    """A rough token count: ~4 ASCII characters or ~1.5 other characters per token."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return int(ascii_chars / 4 + (len(text) - ascii_chars) / 1.5) + 1


def _load(path: Path) -> Any:
    require("embedded", "--tokenizer", ("tokenizers",))
    from tokenizers import Tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: --tokenizer names no tokenizer.json (a file, or a folder holding one)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the library raises a bare Exception for a file it cannot parse
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{file}: not a tokenizers tokenizer.json ({reason})") from None


class TokenCounter:
    """Tokens of a list of texts, with the method named for reports (`~` marks the approximation)."""

    def __init__(self, tokenizer: Path | None = None) -> None:
        self.tokenizer = _load(tokenizer) if tokenizer else None
        self.method = f"tokenizer {tokenizer}" if tokenizer else "estimated (~4 ASCII or 1.5 other chars a token)"
        self.mark = "" if tokenizer else "~"

    def count(self, texts: list[str]) -> int:
        if self.tokenizer is None:
            return sum(estimate_tokens(text) for text in texts)
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False))
