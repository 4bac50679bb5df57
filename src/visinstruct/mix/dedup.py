"""`dedup:` across the sources of a mixture. A row is dropped when a row of an earlier source (recipe order)
was written with the same
- `text`: conversation (turn values, `<image>` removed, whitespace collapsed, lower-cased), whatever the image;
- `image`: image (same path in the mixture's folder, or a perceptual hash within `phash_distance` bits);
- `both`: conversation on the same image, or the same conversation when neither row has an image (the same
  row in two files).
Repeats inside one source (its own duplicates, or the copies a `count` above its size makes) are kept: that
is the source's business (`visinstruct filter` finds them). State: 8 bytes per written row and image in
sorted numpy arrays, merged when a source ends.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Any

import numpy as np

from ..core.phash import PhashIndex, popcounts


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def conversation_key(record: dict[str, Any]) -> str:
    """The normalized conversation text of a record (turns kept apart by a NUL token)."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        return ""
    values = [t["value"] for t in turns if isinstance(t, dict) and isinstance(t.get("value"), str)]
    return " ".join(" \x00 ".join(values).replace("<image>", " ").lower().split())


class _Digests:
    """A set of 64-bit digests: the earlier sources' (sorted array) and the current source's (appended)."""

    def __init__(self) -> None:
        self.earlier = np.zeros(0, np.uint64)
        self.current = array("Q")

    def seen(self, value: int) -> bool:
        if not len(self.earlier):
            return False
        key = np.uint64(value)
        at = self.earlier.searchsorted(key)
        return bool(at < len(self.earlier) and self.earlier[at] == key)

    def add(self, value: int) -> None:
        self.current.append(value)

    def close(self) -> None:
        if self.current:
            self.earlier = np.union1d(self.earlier, np.frombuffer(self.current, np.uint64))
            self.current = array("Q")


class _TextHashes:
    """(conversation digest, image hash) pairs: is this conversation known on an image like this one?"""

    def __init__(self, distance: int) -> None:
        self.distance = distance
        self.texts, self.hashes = np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        self.new_texts, self.new_hashes = array("Q"), array("Q")

    def seen(self, text: int, value: int) -> bool:
        key = np.uint64(text)
        low, high = np.searchsorted(self.texts, key, "left"), np.searchsorted(self.texts, key, "right")
        return high > low and int(popcounts(self.hashes[low:high] ^ np.uint64(value)).min()) <= self.distance

    def add(self, text: int, value: int) -> None:
        self.new_texts.append(text)
        self.new_hashes.append(value)

    def close(self) -> None:
        if self.new_texts:
            texts = np.concatenate([self.texts, np.frombuffer(self.new_texts, np.uint64)])
            hashes = np.concatenate([self.hashes, np.frombuffer(self.new_hashes, np.uint64)])
            order = np.argsort(texts, kind="stable")
            self.texts, self.hashes = texts[order], hashes[order]
            self.new_texts, self.new_hashes = array("Q"), array("Q")


class CrossSourceDedup:
    """Drops rows that repeat an earlier source's rows (see the module docstring for the three modes)."""

    def __init__(self, mode: str, match: str, distance: int) -> None:
        self.mode, self.distance = mode, distance
        self.by_path, self.by_hash = match in ("path", "both"), match in ("phash", "both")
        self.texts, self.paths, self.pairs = _Digests(), _Digests(), _Digests()
        self.index = PhashIndex(np.zeros(0, np.uint64), distance)
        self.new_hashes = array("Q")
        self.text_hashes = _TextHashes(distance)

    def check(self, record: dict[str, Any], paths: list[str], hashes: list[int]) -> bool:
        """True when the row repeats an earlier source; otherwise it is remembered and False is returned."""
        text = _digest(conversation_key(record)) if self.mode != "image" else 0
        if self.mode == "text":
            return self._check_text(text)
        if self.mode == "image":
            return self._check_image(paths, hashes)
        return self._check_pair(text, paths, hashes)

    def _check_text(self, text: int) -> bool:
        if self.texts.seen(text):
            return True
        self.texts.add(text)
        return False

    def _check_image(self, paths: list[str], hashes: list[int]) -> bool:
        keys = [_digest(p) for p in paths] if self.by_path else []
        hashes = hashes if self.by_hash else []
        if any(self.paths.seen(k) for k in keys) or any(self.index.near(h) for h in hashes):
            return True
        for key in keys:
            self.paths.add(key)
        self.new_hashes.extend(hashes)
        return False

    def _check_pair(self, text: int, paths: list[str], hashes: list[int]) -> bool:
        keys = [_digest(f"{text}\x00{p}") for p in paths] if self.by_path or not paths else []
        if not paths:
            keys = [_digest(f"{text}\x00")]
        hashes = hashes if self.by_hash else []
        if any(self.pairs.seen(k) for k in keys) or any(self.text_hashes.seen(text, h) for h in hashes):
            return True
        for key in keys:
            self.pairs.add(key)
        for value in hashes:
            self.text_hashes.add(text, value)
        return False

    def end_source(self) -> None:
        """The current source is done: its rows become the earlier rows the next sources are checked against."""
        for table in (self.texts, self.paths, self.pairs, self.text_hashes):
            table.close()
        if self.new_hashes:
            self.index = self.index.merged(np.frombuffer(self.new_hashes, np.uint64))
            self.new_hashes = array("Q")
