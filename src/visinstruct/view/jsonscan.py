"""Where the items of a top-level JSON list start and end, found in one streaming pass without parsing them.

Per block, with numpy (no Python step per byte): a quote not preceded by an odd run of backslashes toggles
"inside a string"; outside strings `[`/`{` open and `]`/`}` close. A `,` at depth 1 ends an item and the `]`
that brings the depth back to 0 ends the list. The result is the byte offset just after each separator:
item k lies in [offsets[k], offsets[k + 1] - 1). Items are not validated here; a broken item is reported
when it is read. The list's own shape is checked: it must be a list, closed, with nothing after it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UserError

BLOCK = 8 << 20
QUOTE, BACKSLASH = 34, 92
_DELTA = np.zeros(256, dtype=np.int64)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1
_WHITESPACE = b" \t\r\n"


class ListScanner:
    """Feed the file's bytes block by block, then `finish()` for the item offsets."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.position = 0        # absolute offset of the next block
        self.depth = 0
        self.in_string = False
        self.backslashes = 0     # the run of backslashes that ended the previous block
        self.opened = False
        self.closed = False
        self.parts: list[np.ndarray] = []

    def feed(self, block: bytes) -> None:
        """Scan one block (any size; blocks are consecutive)."""
        data = np.frombuffer(block, dtype=np.uint8)
        if self.closed:
            self._only_whitespace(block, 0)
        elif not self.opened and not self._open(block):
            self.position += len(block)
            return
        quotes = self._real_quotes(data)
        self._structure(block, data, quotes)
        self.in_string ^= bool(len(quotes) % 2)
        self.backslashes = _trailing_backslashes(block, self.backslashes)
        self.position += len(block)

    def finish(self) -> np.ndarray:
        """The offsets (uint64): one after each item separator, the last one after the closing `]`."""
        if not self.opened:
            raise UserError(f"{self.name}: empty file, expected a JSON list of records")
        if not self.closed:
            raise UserError(f"{self.name}: the JSON list is never closed (a truncated file?)")
        return np.concatenate(self.parts).astype(np.uint64) if self.parts else np.zeros(0, np.uint64)

    def _open(self, block: bytes) -> bool:
        """Find the list's `[` (after whitespace); False while the file has shown only whitespace."""
        stripped = block.lstrip(_WHITESPACE)
        if not stripped:
            return False
        if stripped[:1] != b"[":
            shown = stripped[:20].decode("utf-8", "replace")
            raise UserError(f"{self.name}: the top level is not a JSON list of records (starts with {shown!r}); "
                            "use .jsonl for one record per line")
        self.opened = True
        return True

    def _real_quotes(self, data: np.ndarray) -> np.ndarray:
        """Positions (in the block) of the quotes that are not escaped."""
        quotes = np.flatnonzero(data == QUOTE)
        if not len(quotes):
            return quotes
        before = np.where(quotes > 0, data[np.maximum(quotes - 1, 0)], BACKSLASH if self.backslashes else 0)
        suspects = np.flatnonzero(before == BACKSLASH)
        if not len(suspects):
            return quotes
        escaped = [i for i in suspects if self._run_before(data, int(quotes[i])) % 2]
        return np.delete(quotes, escaped)

    def _run_before(self, data: np.ndarray, at: int) -> int:
        """How many backslashes stand right before position `at` (across the block boundary too)."""
        run = 0
        while at - run - 1 >= 0 and data[at - run - 1] == BACKSLASH:
            run += 1
        return run + (self.backslashes if run == at else 0)

    def _structure(self, block: bytes, data: np.ndarray, quotes: np.ndarray) -> None:
        """Track the depth of brackets outside strings and keep the item separators."""
        folded = data | 0x20  # `[` → `{` and `]` → `}`: two comparisons instead of four (a lookup table is slower)
        marks = np.flatnonzero((folded == 0x7B) | (folded == 0x7D) | (data == 0x2C))
        outside = (np.searchsorted(quotes, marks) + self.in_string) % 2 == 0
        marks = marks[outside]
        if not len(marks):
            return
        delta = _DELTA[data[marks]]
        after = self.depth + np.cumsum(delta)
        before = after - delta
        self._check_top(data, marks, before, after)
        ends = (before == 1) & ((data[marks] == ord(",")) | (after == 0))
        starts = (before == 0) & (after == 1)
        keep = marks[ends | starts]
        self.parts.append(keep.astype(np.uint64) + np.uint64(self.position + 1))
        self.depth = int(after[-1])
        closing = np.flatnonzero(after == 0)
        if len(closing):
            self.closed = True
            self._only_whitespace(block, int(marks[closing[0]]) + 1)

    def _check_top(self, data: np.ndarray, marks: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
        """Only one `[` may open at depth 0 (the list itself), and nothing may close below it."""
        opened_at_top = np.flatnonzero(before == 0)
        if (self.parts and len(opened_at_top)) or len(opened_at_top) > 1 or (after < 0).any():
            where = self.position + int(marks[opened_at_top[-1] if len(opened_at_top) else 0])
            raise UserError(f"{self.name}: not valid JSON near byte {where + 1:,}: the list of records is "
                            "closed early or followed by more data")

    def _only_whitespace(self, block: bytes, start: int) -> None:
        rest = block[start:]
        if rest.strip(_WHITESPACE):
            where = self.position + start + len(rest) - len(rest.lstrip(_WHITESPACE))
            raise UserError(f"{self.name}: not valid JSON: data after the end of the list (byte {where + 1:,})")


def _trailing_backslashes(block: bytes, carried: int) -> int:
    """The run of backslashes at the end of `block` (continuing `carried` when the block is all backslashes)."""
    run = len(block) - len(block.rstrip(b"\\"))
    return carried + run if run == len(block) else run


def list_offsets(path: Path, start: int = 0) -> np.ndarray:
    """The item offsets of the JSON list in `path` (from byte `start`, past a byte order mark)."""
    scanner = ListScanner(str(path))
    with path.open("rb") as handle:
        handle.seek(start)
        scanner.position = start
        while block := handle.read(BLOCK):
            scanner.feed(block)
    offsets = scanner.finish()
    if len(offsets) == 2 and _blank(path, int(offsets[0]), int(offsets[1]) - 1):
        return offsets[:1]  # `[]`: no items
    return offsets


def _blank(path: Path, start: int, end: int) -> bool:
    with path.open("rb") as handle:
        handle.seek(start)
        return not handle.read(end - start).strip(_WHITESPACE)
