"""Duplicates: exact (normalised text + image) and image (perceptual hash); near duplicates are in minhash.py.

The first occurrence is kept; later ones are rejected with the id of the record they repeat. These stages
keep state across records, so they run in the main process, in input order.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from pathlib import Path
from typing import Any

from .base import Reject, Verdict


def conversation_text(record: dict[str, Any]) -> str:
    """All turn values, lower-cased with whitespace collapsed, `<image>` tokens removed."""
    text = " ".join(t["value"] for t in record["conversations"]).replace("<image>", " ")
    return " ".join(text.split()).lower()


class DigestTable:
    """64-bit digest → number, in one bytearray (open addressing, 12 bytes a slot, grown at 70% load).

    About 25 bytes per record against ~130 for a dict of ints to strings: 4M records fit in ~100 MB.
    """

    _SLOT = struct.Struct("<QI")

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity, self.size = capacity, 0
        self.slots = bytearray(self._SLOT.size * capacity)

    def get_or_add(self, digest: int, number: int) -> int | None:
        """The number stored with `digest`, or None after storing `number` with it."""
        digest |= 1  # 0 marks an empty slot
        mask, width, slots = self.capacity - 1, self._SLOT.size, self.slots
        index = digest & mask
        while True:
            found, stored = self._SLOT.unpack_from(slots, index * width)
            if found == 0:
                self._SLOT.pack_into(slots, index * width, digest, number)
                self.size += 1
                if self.size * 10 > self.capacity * 7:
                    self._grow()
                return None
            if found == digest:
                return stored
            index = (index + 1) & mask

    def _grow(self) -> None:
        old, width = self.slots, self._SLOT.size
        self.capacity *= 2
        self.slots, self.size = bytearray(width * self.capacity), 0
        for offset in range(0, len(old), width):
            digest, number = self._SLOT.unpack_from(old, offset)
            if digest:
                self.get_or_add(digest, number)


class ExactDedup:
    """Same image and same normalised conversation text; memory ~25 bytes per distinct record."""

    name = "dedup"

    def __init__(self) -> None:
        self.table = DigestTable()
        self.ids = bytearray()
        self.offsets = array("Q", [0])

    def check(self, record: dict[str, Any]) -> Verdict:
        key = f"{record.get('image')!r}\x00{conversation_text(record)}".encode()
        digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        first = self.table.get_or_add(digest, len(self.offsets) - 1)
        if first is not None:
            return Reject(f"exact_duplicate: same as {self._id(first)}")
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
            import imagehash
            from PIL import Image

            try:
                with Image.open(self.root / name) as image:
                    image.draft("L", (64, 64))
                    self.cache[name] = int(str(imagehash.phash(image)), 16)
            except Exception:
                self.cache[name] = None
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
