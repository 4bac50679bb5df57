"""Perceptual image hashes and a compact index that answers "is any stored hash within D bits of this one?".

The hash is imagehash's 64-bit DCT `phash` of the image decoded small (JPEG draft mode), so a re-encoded or
resized copy of a picture lands a few bits away from the original. The index is multi-index hashing: the
64 bits are cut into b bands, and two hashes within D bits differ by at most r = D // b bits in one of them
(pigeonhole), so a query only compares the stored hashes whose band value lies within r bits of its own.
b and r are chosen for the set's size (`layout`): D + 1 exact bands for small sets, four 16-bit bands
probed at radius 1 or 2 once exact buckets would crowd. It lives in numpy arrays (per band: the hashes'
order, 8 bytes each, and a table of where each band value starts), built once and then queried one hash
at a time (`near`) or a batch at once (`pairs`: no Python loop per query; 100,000 queries against 5,000
hashes take ~0.2 s where comparing every pair takes ~6 s, see bench/decontaminate.py). `imagehash` (the
`filter` extra) is imported only when an image is hashed.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

MAX_DISTANCE = 12  # beyond this the bands get so narrow that every query compares against most hashes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
QUERY_BLOCK = 8192  # queries per round of `pairs`: bounds the candidate arrays of one round
MAX_BAND_BITS = 16  # a band of w bits keeps a table of 2**w + 1 run starts (512 KiB at 16)


def image_files(folder: Path) -> list[str]:
    """Image files under a folder (by extension), as sorted relative posix paths; hidden ones skipped."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not any(
                part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return sorted(found)


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


def layout(distance: int, size: int) -> tuple[int, int]:
    """(bands, radius) for `size` stored hashes: two hashes within `distance` bits differ by at most
    `distance // bands` bits in one of `bands` bands (pigeonhole), so a query probes every key within that
    radius in each band. Chosen to make probes + expected candidates per query fewest (hashes taken as
    uniform): narrow exact bands for small sets, wider bands probed at radius 1 once buckets would crowd."""
    best: tuple[float, int, int] = (math.inf, 0, 0)
    for bands in range(1, max(distance + 2, 65 // MAX_BAND_BITS + 1)):  # more bands than distance + 1: radius 0
        radius, widest = distance // bands, -(-64 // bands)
        if widest > MAX_BAND_BITS:
            continue
        probes = sum(math.comb(widest, i) for i in range(radius + 1))
        best = min(best, (bands * probes * (1 + size / 2 ** (64 / bands)), bands, radius))
    return best[1], best[2]


def _flips(width: int, radius: int) -> list[int]:
    """Every mask of at most `radius` set bits among `width` bits (0 first)."""
    return [sum(1 << b for b in bits) for r in range(radius + 1) for bits in itertools.combinations(range(width), r)]


class _Band:
    """One slice of the 64 bits: the stored hashes' positions sorted by their key there, and where each key's
    run starts (a table of 2**width + 1 entries, so a probe is two array reads)."""

    def __init__(self, hashes: np.ndarray, shift: int, width: int, radius: int) -> None:
        self.shift, self.mask = shift, (1 << width) - 1
        keys = (hashes >> np.uint64(shift)) & np.uint64(self.mask)
        self.order = np.argsort(keys, kind="stable")
        self.starts = np.searchsorted(keys[self.order], np.arange(self.mask + 2, dtype=np.uint64)).astype(np.int64)
        self.flips = _flips(width, radius)
        self.flip_array = np.array(self.flips, dtype=np.uint64)

    def candidates(self, value: int) -> list[np.ndarray]:
        """Positions of the stored hashes whose key here lies within the radius of `value`'s."""
        key, starts, found = (value >> self.shift) & self.mask, self.starts, []
        for flip in self.flips:
            probe = key ^ flip
            low, high = starts[probe], starts[probe + 1]
            if high > low:
                found.append(self.order[low:high])
        return found

    def block(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query position, stored position) of every candidate pair of a block of queries."""
        probes = (((queries >> np.uint64(self.shift)) & np.uint64(self.mask))[:, None] ^ self.flip_array).ravel()
        probes = probes.astype(np.int64)
        low = self.starts[probes]
        counts = self.starts[probes + 1] - low
        owner = np.repeat(np.arange(len(probes)) // len(self.flips), counts)
        ranks = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, self.order[np.repeat(low, counts) + ranks]


class PhashIndex:
    """An immutable set of 64-bit hashes; `near(h)` is True when one of them is within `distance` bits of h,
    `pairs(hs)` lists every close (query, stored hash) pair of a batch."""

    def __init__(self, hashes: np.ndarray | list[int], distance: int) -> None:
        if not 0 <= distance <= MAX_DISTANCE:
            raise ValueError(f"distance must be in 0..{MAX_DISTANCE}, got {distance}")
        self.distance = distance
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))
        count, self.radius = layout(distance, len(self.hashes))
        self.bands, shift = [], 0
        for i in range(count):
            width = 64 // count + (1 if i < 64 % count else 0)
            self.bands.append(_Band(self.hashes, shift, width, self.radius))
            shift += width

    def __len__(self) -> int:
        return len(self.hashes)

    def near(self, value: int) -> bool:
        """Whether a stored hash lies within `distance` bits of `value` (one query, no batch overhead)."""
        target = np.uint64(value)
        for band in self.bands:
            found = band.candidates(value)
            if found and int(popcounts(self.hashes[np.concatenate(found)] ^ target).min()) <= self.distance:
                return True
        return False

    def pairs(self, values: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query position, stored hash, distance) within `distance` bits, each pair once, by query.

        Candidates come from every band's probes, for a whole block of queries at once (array reads, no
        per-query Python), and are checked exactly with a popcount."""
        queries = np.asarray(values, dtype=np.uint64)
        found = [self._block_pairs(queries[start:start + QUERY_BLOCK], start)
                 for start in range(0, len(queries), QUERY_BLOCK)] if len(self.hashes) else []
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, np.zeros(0, dtype=np.uint64), empty
        where, stored = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
        hashes = self.hashes[stored]
        return where, hashes, popcounts(hashes ^ queries[where]).astype(np.int64)

    def _block_pairs(self, queries: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(query positions offset by `start`, stored positions) of the close pairs of one block, sorted."""
        where, stored = [], []
        for band in self.bands:
            owner, candidate = band.block(queries)
            close = popcounts(self.hashes[candidate] ^ queries[owner]) <= self.distance
            where.append(owner[close])
            stored.append(candidate[close])
        # a close pair may turn up in several bands: keep it once (unique also sorts by query, then hash)
        size = len(self.hashes)
        keys = np.unique(np.concatenate(where).astype(np.int64) * size + np.concatenate(stored))
        return keys // size + start, keys % size

    def merged(self, more: np.ndarray | list[int]) -> PhashIndex:
        """A new index holding these hashes and `more`."""
        return PhashIndex(np.concatenate([self.hashes, np.asarray(more, dtype=np.uint64)]), self.distance)
