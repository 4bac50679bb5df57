"""Duplicates: exact (normalised text + image, or a substantive conversation on any image) and image
(perceptual hash); near duplicates are in minhash.py.

The first occurrence is kept; later ones are rejected with the id of the record they repeat. These stages
keep state across records, so they run in the main process, in input order.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from pathlib import Path
from typing import Any

from ..core.phash import phash_file
from .base import Reject, Verdict

# A conversation is substantive (the same one on another image is a teacher failure, not a coincidence) when
# its answers hold at least SUBSTANTIVE_CHARS characters in all, or at least two of them hold ANSWER_CHARS
# each (whitespace collapsed, `<image>` removed). "Yes." or "Two." (even several of them) stay below.
SUBSTANTIVE_CHARS = 100
ANSWER_CHARS = 25


def conversation_text(record: dict[str, Any]) -> str:
    """All turn values, lower-cased with whitespace collapsed, `<image>` tokens removed."""
    text = " ".join(t["value"] for t in record["conversations"]).replace("<image>", " ")
    return " ".join(text.split()).lower()


def substantive(record: dict[str, Any]) -> bool:
    """Whether the record's answers are long enough that repeating them on another image is not chance."""
    lengths = [len(" ".join(t["value"].replace("<image>", " ").split()))
               for t in record["conversations"] if t.get("from") == "gpt"]
    return sum(lengths) >= SUBSTANTIVE_CHARS or sum(n >= ANSWER_CHARS for n in lengths) >= 2


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class DigestTable:
    """64-bit digest → number, in one bytearray (open addressing, 12 bytes a slot, grown at 70% load).

    About 25 bytes per record against ~130 for a dict of ints to strings: 4M records fit in ~100 MB.
    """

    _SLOT = struct.Struct("<QI")

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity, self.size = capacity, 0
        self.slots = bytearray(self._SLOT.size * capacity)

    def _probe(self, digest: int) -> tuple[int, int | None]:
        """(the slot holding `digest`, or the empty slot where it would go; the number stored or None)."""
        mask, width, slots = self.capacity - 1, self._SLOT.size, self.slots
        index = digest & mask
        while True:
            found, stored = self._SLOT.unpack_from(slots, index * width)
            if found == 0:
                return index, None
            if found == digest:
                return index, stored
            index = (index + 1) & mask

    def get(self, digest: int) -> int | None:
        """The number stored with `digest`, or None."""
        return self._probe(digest | 1)[1]

    def get_or_add(self, digest: int, number: int) -> int | None:
        """The number stored with `digest`, or None after storing `number` with it."""
        digest |= 1  # 0 marks an empty slot
        index, stored = self._probe(digest)
        if stored is not None:
            return stored
        self._SLOT.pack_into(self.slots, index * self._SLOT.size, digest, number)
        self.size += 1
        if self.size * 10 > self.capacity * 7:
            self._grow()
        return None

    def _grow(self) -> None:
        old, width = self.slots, self._SLOT.size
        self.capacity *= 2
        self.slots, self.size = bytearray(width * self.capacity), 0
        for offset in range(0, len(old), width):
            digest, number = self._SLOT.unpack_from(old, offset)
            if digest:
                self.get_or_add(digest, number)


class ExactDedup:
    """Same image and same normalised conversation text (`exact_duplicate`), or the same substantive
    conversation on another image (`same_conversation`: the teacher ignored the scene). Memory: ~25 bytes
    per kept record in each of the two digest tables, plus its id."""

    name = "dedup"

    def __init__(self) -> None:
        self.pairs = DigestTable()  # image + text
        self.texts = DigestTable()  # text alone, substantive conversations only
        self.ids = bytearray()
        self.offsets = array("Q", [0])

    def check(self, record: dict[str, Any]) -> Verdict:
        text = conversation_text(record)
        pair = _digest(f"{record.get('image')!r}\x00{text}")
        first = self.pairs.get(pair)
        if first is not None:
            return Reject(f"exact_duplicate: same as {self._id(first)}")
        number = len(self.offsets) - 1
        if substantive(record):
            first = self.texts.get_or_add(_digest(text), number)
            if first is not None:
                return Reject(f"same_conversation: same whole conversation as {self._id(first)}, another image")
        self.pairs.get_or_add(pair, number)
        self.ids += str(record.get("id")).encode()
        self.offsets.append(len(self.ids))
        return None

    def _id(self, number: int) -> str:
        return self.ids[self.offsets[number]:self.offsets[number + 1]].decode()


class ImageDedup:
    """A different image file whose perceptual hash (64 bits) is within a Hamming distance of an earlier one.

    Candidates are found through max_distance + 1 exact-match bands (pigeonhole), then checked exactly.
    Records sharing one image path (several tasks on one image) are not duplicates of each other.
    """

    name = "image_dedup"

    def __init__(self, image_root: Path, max_distance: int = 4) -> None:
        self.root, self.max_distance = image_root, max_distance
        self.bands: list[dict[int, list[tuple[int, str, str]]]] = [{} for _ in range(max_distance + 1)]
        self.cache: dict[str, int | None] = {}

    def _hash(self, name: str) -> int | None:
        if name not in self.cache:
            self.cache[name] = phash_file(self.root / name)
        return self.cache[name]

    def _band_keys(self, value: int) -> list[int]:
        count = len(self.bands)
        width = 64 // count + 1
        return [(value >> (i * width)) & ((1 << width) - 1) for i in range(count)]

    def check(self, record: dict[str, Any]) -> Verdict:
        image = record.get("image")
        if not isinstance(image, str):
            return None
        value = self._hash(image)
        if value is None:
            return None
        keys = self._band_keys(value)
        for band, key in zip(self.bands, keys, strict=True):
            for other, other_id, other_image in band.get(key, []):
                distance = bin(value ^ other).count("1")
                if distance <= self.max_distance and other_image != image:  # one image, several tasks: fine
                    return Reject(f"image_duplicate: image like {other_id}'s (distance {distance})")
        for band, key in zip(self.bands, keys, strict=True):
            band.setdefault(key, []).append((value, str(record.get("id")), image))
        return None
