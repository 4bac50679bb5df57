"""Perceptual image hashes and a compact index that answers "is any stored hash within D bits of this one?".

The hash is imagehash's 64-bit DCT `phash` of the image decoded small (JPEG draft mode), so a re-encoded or
resized copy of a picture lands a few bits away from the original. The index splits the 64 bits into D + 1
bands: two hashes within D bits agree exactly on at least one band (pigeonhole), so only hashes sharing a
band value are compared. It lives in numpy arrays (8 bytes per hash and 16 per band), built once and then
queried; `imagehash` (the `filter` extra) is imported only when an image is hashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_DISTANCE = 12  # beyond this the bands get so narrow that every query compares against most hashes


def phash_file(path: Path) -> int | None:
    """The 64-bit perceptual hash of the image at `path`, or None when it cannot be read or decoded."""
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("L", (64, 64))
            return int(str(imagehash.phash(image)), 16)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def popcounts(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return np.array([int(v).bit_count() for v in values], dtype=np.int64)


class PhashIndex:
    """An immutable set of 64-bit hashes; `near(h)` is True when one of them is within `distance` bits of h."""

    def __init__(self, hashes: np.ndarray | list[int], distance: int) -> None:
        if not 0 <= distance <= MAX_DISTANCE:
            raise ValueError(f"distance must be in 0..{MAX_DISTANCE}, got {distance}")
        self.distance = distance
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))
        count = distance + 1
        widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
        self.bands: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        shift = 0
        for width in widths:
            mask = (1 << width) - 1
            keys = (self.hashes >> np.uint64(shift)) & np.uint64(mask)
            order = np.argsort(keys, kind="stable")
            self.bands.append((shift, mask, keys[order], order))
            shift += width

    def __len__(self) -> int:
        return len(self.hashes)

    def near(self, value: int) -> bool:
        """Whether a stored hash lies within `distance` bits of `value`."""
        if not len(self.hashes):
            return False
        for shift, mask, keys, order in self.bands:
            key = np.uint64((value >> shift) & mask)
            low, high = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
            if high > low:
                found = self.hashes[order[low:high]] ^ np.uint64(value)
                if int(popcounts(found).min()) <= self.distance:
                    return True
        return False

    def merged(self, more: np.ndarray | list[int]) -> PhashIndex:
        """A new index holding these hashes and `more`."""
        return PhashIndex(np.concatenate([self.hashes, np.asarray(more, dtype=np.uint64)]), self.distance)
