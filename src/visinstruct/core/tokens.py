"""Counting tokens: a real tokenizer (a local `tokenizer.json`, read with the `tokenizers` package) when one is
named, else a stated approximation — about 4 ASCII characters or 1.5 other characters per token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .deps import available
from .errors import UserError

ESTIMATE = "estimated (~4 ASCII characters or ~1.5 other characters per token)"


def estimate_tokens(text: str) -> int:
    """A rough token count: ~4 ASCII characters or ~1.5 other characters per token."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return int(ascii_chars / 4 + (len(text) - ascii_chars) / 1.5) + 1


def load_tokenizer(path: Path) -> Any:
    """The `tokenizers` Tokenizer of a tokenizer.json (or of a folder holding one); one-line errors."""
    if not available("tokenizers"):
        raise UserError("--tokenizer needs the 'tokenizers' package (pip install tokenizers, or the 'embedded' "
                        "extra); without --tokenizer tokens are estimated")
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
    """Counts tokens of texts; `method` says how (for reports and cards), `mark` is "~" for the estimate."""

    def __init__(self, tokenizer: Path | None = None) -> None:
        self.tokenizer = load_tokenizer(tokenizer) if tokenizer else None
        self.method = f"tokenizer {tokenizer}" if tokenizer else ESTIMATE
        self.exact = tokenizer is not None
        self.mark = "" if self.exact else "~"

    def count_each(self, texts: list[str]) -> list[int]:
        """Tokens of each text, special tokens left out."""
        if self.tokenizer is None:
            return [estimate_tokens(text) for text in texts]
        if not texts:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count(self, texts: list[str]) -> int:
        """Tokens of all the texts together."""
        return sum(self.count_each(texts))
