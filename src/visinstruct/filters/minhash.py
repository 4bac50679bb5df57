"""Near-duplicate text: MinHash band hashes in the stateless steps, clustered over the whole stream in the driver.

The design is the one datatrove's MinHash pipeline uses, in two steps:

- `MinhashStep` (stateless, runs on any worker): the text of a record is `conversation_text` (lower-cased,
  whitespace collapsed, `<image>` removed), its shingles are word 5-grams (a text of fewer than 5 words is
  one shingle). Each shingle is hashed to 64 bits, `bands * rows` MinHash values are taken with
  multiply-add-shift permutations `(a*x + b mod 2**64) >> 32` (x: 32 bits of the shingle hash; a, b: fixed
  64-bit constants, so 2-independent 32-bit outputs), and each band's `rows` values are hashed to one uint64.
  Only those `bands` uint64 travel on (`item.extra["bands"]`, 8 bytes a band): no signature objects.
  Everything is vectorised over a batch in numpy and depends on no per-process state (no `hash()`; the
  constants come from splitmix64 with a fixed seed), so every worker computes the same bands.
- `NearDedupStep` (stateful, in the driver): pass 1 spills every item to a temporary folder (pickle frames)
  and appends each live item's band hashes to one file per band; clustering then reads one band column at
  a time (16 bytes a live record in memory: the column and its argsort), finds runs of equal hashes with a
  stable sort, and checks each run's members against its first member (the one with the smallest index).
  Pass 2 replays the spill in order and rejects every member of a cluster but its first, with
  `near_duplicate: like <first member's id>`. Items that arrive rejected pass through untouched.

Bands and rows (`band_layout`): at most 128 permutations; among the (bands, rows) that make a pair at
exactly the threshold a candidate with probability >= 0.99, the one with the least false-candidate area
below the threshold (0.85 -> 15 bands x 8 rows; 0.8 -> 16 x 6; 0.9 -> 11 x 10).

Candidates are verified, unlike datatrove: a candidate pair is an edge only if the exact Jaccard of the two
shingle sets (64-bit shingle hashes) is >= the threshold. The two records are read back from the spill
(`seek` + unpickle, so nothing of theirs stays in memory), about 0.1-0.4 ms a candidate pair (1M records
with 5% near-duplicates: 37k candidates), and makes the result the exact-Jaccard clusters up to the LSH's
misses (about 1% of the pairs right at the threshold, none in practice 0.05 above it). Runs are checked
as stars, not all pairs (linear in the bucket's size); members that fail against the first one are
checked again among themselves (a star from the smallest of them), for up to `MAX_ROUNDS` rounds.
Clusters are the connected components of the verified edges (numpy min-label propagation), so a chain
a~b~c is one cluster even when a and c are less similar than the threshold, as with exact-Jaccard
clustering.

The spill needs about 1.3x the input's size on disk (TMPDIR, or `tmp_dir`). On a cluster executor the
same split holds: signatures in the stateless map, and `band_runs` / `components` are the per-band
shuffle (group by band hash) and the union of its edges.
"""

from __future__ import annotations

import pickle
from array import array
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..core.io import open_scratch, scratch_dir
from ..core.step import BATCH, Item, Step
from .dedup import conversation_text

SHINGLE = 5           # words per shingle
MAX_PERM = 128        # permutations at most (bands * rows)
RECALL = 0.99         # a pair at exactly the threshold is a candidate with at least this probability
MAX_ROUNDS = 8        # star checks per bucket: the first member, then the smallest of those that failed, ...
CHUNK_ROWS = 2048     # shingles per signature chunk (2048 x 128 x 8 bytes = 2 MB of scratch)
BAND_BUFFER = 1 << 16  # live records buffered before the band columns are appended to their files
VERIFY_CHUNK = 4096   # candidate pairs verified at a time
SEED = 0x5EED_11A7_A5EE_D000

_U64 = np.uint64
_MASK = (1 << 64) - 1
_MUL = _U64(0x9E3779B97F4A7C15)  # odd: the polynomial over a shingle's word hashes


def _splitmix64(count: int, seed: int) -> np.ndarray:
    """`count` well-mixed 64-bit constants from a fixed seed (stable across numpy versions and processes)."""
    out = []
    state = seed & _MASK
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        out.append(z ^ (z >> 31))
    return np.array(out, dtype=_U64)


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (every input bit reaches every output bit)."""
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


_WORD_SPAN = 64                                                       # byte offsets within a word, then wraps
_TABLE = _splitmix64(_WORD_SPAN * 256, SEED)                         # (offset in word << 8 | byte) -> 64 bits
_PERM_A = _splitmix64(MAX_PERM, SEED + 1) | _U64(1)                   # odd multipliers
_PERM_B = _splitmix64(MAX_PERM, SEED + 2)
_ROW_MUL = _splitmix64(MAX_PERM, SEED + 3) | _U64(1)                  # a band's rows -> one uint64
_SPACE = 32


@lru_cache(maxsize=64)
def band_layout(threshold: float) -> tuple[int, int]:
    """(bands, rows) for a Jaccard threshold: P(candidate | J = threshold) >= RECALL, least false candidates.

    P(candidate | J = s) = 1 - (1 - s**rows)**bands; the false-candidate area is its integral over
    [0, threshold]. When no layout within MAX_PERM reaches RECALL (thresholds near 0), the most sensitive.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"a Jaccard threshold is in (0, 1], got {threshold}")
    grid = np.linspace(0.0, threshold, 257)
    best: tuple[Any, ...] | None = None
    for rows in range(1, MAX_PERM + 1):
        for bands in range(1, MAX_PERM // rows + 1):
            recall = 1 - (1 - threshold ** rows) ** bands
            curve = 1 - (1 - grid ** rows) ** bands
            false = float((curve[1:] + curve[:-1]).sum() * (grid[1] - grid[0]) / 2)  # trapezoids
            key = (recall >= RECALL, -false if recall >= RECALL else recall, -bands * rows)
            if best is None or key > best[0]:
                best = (key, bands, rows)
    assert best is not None
    return best[1], best[2]


# ---- shingles and signatures ------------------------------------------------------------------------------

def shingle_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every text's word 5-grams, concatenated, and each text's start in them (len + 1).

    `texts` are normalised (`conversation_text`: single spaces). A word hashes to the sum of a fixed random
    table over its (offset, byte) pairs, finalised; a 5-gram is a polynomial over its five word hashes,
    finalised. A text of fewer than 5 words is one shingle over its words (no words: one fixed shingle).
    A text's shingles may repeat (the minimum does not mind; `shingle_set` makes them unique). Scratch:
    about 60 bytes per byte of text, so callers pass batches (BATCH texts), not whole datasets.
    """
    count = len(texts)
    if not count:
        return np.empty(0, dtype=_U64), np.zeros(1, dtype=np.int64)
    encoded = [text.encode() for text in texts]
    lengths = np.fromiter((len(data) for data in encoded), dtype=np.int64, count=count)
    data = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    owner = np.repeat(np.arange(count, dtype=np.int64), lengths + 1)  # the text of each byte (and its separator)

    letters = np.flatnonzero(data != _SPACE)
    starts_mask = np.zeros(data.size, dtype=bool)
    starts_mask[letters] = True
    starts_mask[1:] &= data[:-1] == _SPACE
    word_starts = np.flatnonzero(starts_mask)                       # byte position of each word's first byte
    word_of_letter = np.cumsum(starts_mask[letters]) - 1
    offset = letters - word_starts[word_of_letter]
    np.minimum(offset, _WORD_SPAN - 1, out=offset)
    offset <<= 8
    offset |= data[letters]
    values = _TABLE[offset]
    if values.size:
        words = _fmix(np.add.reduceat(values, np.flatnonzero(starts_mask[letters])))
    else:
        words = np.empty(0, dtype=_U64)
    word_owner = owner[word_starts]
    per_text = np.bincount(word_owner, minlength=count)

    pieces_hash, pieces_owner = [], []
    span = words.size - (SHINGLE - 1)
    if span > 0:
        full = np.flatnonzero(word_owner[:span] == word_owner[SHINGLE - 1:])  # 5-grams inside one text
        h = np.full(full.size, SHINGLE, dtype=_U64)
        for k in range(SHINGLE):
            h *= _MUL
            h += words[full + k]
        pieces_hash.append(_fmix(h))
        pieces_owner.append(word_owner[full])
    first_word = np.concatenate(([0], np.cumsum(per_text)[:-1]))
    for size in range(SHINGLE):  # short texts: one shingle over all their words
        short = np.flatnonzero(per_text == size)
        if short.size:
            h = np.full(short.size, size, dtype=_U64) ^ _U64(SEED)
            for k in range(size):
                h *= _MUL
                h += words[first_word[short] + k]
            pieces_hash.append(_fmix(h))
            pieces_owner.append(short)
    hashes = np.concatenate(pieces_hash) if pieces_hash else np.empty(0, dtype=_U64)
    owners = np.concatenate(pieces_owner) if pieces_owner else np.empty(0, dtype=np.int64)
    order = np.argsort(owners, kind="stable")
    bounds = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(owners, minlength=count), out=bounds[1:])
    return hashes[order], bounds


def shingle_set(text: str) -> np.ndarray:
    """One text's distinct shingle hashes, sorted (for an exact Jaccard)."""
    return np.unique(shingle_hashes([text])[0])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted, distinct hash arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


def signatures(texts: list[str], perms: int) -> np.ndarray:
    """(len(texts), perms) uint32 MinHash values: min over a text's shingles of `(a*x + b) >> 32`."""
    a, b = _PERM_A[:perms, None], _PERM_B[:perms, None]
    out = np.empty((len(texts), perms), dtype=np.uint32)
    for start in range(0, len(texts), BATCH):
        hashes, bounds = shingle_hashes(texts[start:start + BATCH])
        x = hashes >> _U64(32)
        count, first = bounds.size - 1, 0
        while first < count:  # chunks of whole texts, about CHUNK_ROWS shingles each
            last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + CHUNK_ROWS, side="right")) - 1)
            last = min(last, count)
            lo, hi = bounds[first], bounds[last]
            scratch = a * x[lo:hi]  # (perms, shingles), wrapping mod 2**64
            scratch += b
            low = np.minimum.reduceat(scratch, bounds[first:last] - lo, axis=1)
            low >>= _U64(32)  # the min of the values' top halves is the top half of their min
            out[start + first:start + last] = low.T
            first = last
    return out


def band_hashes(texts: list[str], bands: int, rows: int) -> np.ndarray:
    """(len(texts), bands) uint64: each band's `rows` MinHash values hashed to one number."""
    values = signatures(texts, bands * rows).reshape(len(texts), bands, rows).astype(_U64)
    values *= _ROW_MUL[:rows]
    h = values.sum(axis=2, dtype=_U64)
    h += _splitmix64(bands, SEED + 4)
    return _fmix(h)


def _text(item: Item) -> str:
    return conversation_text(item.record)


class MinhashStep(Step):
    """Stateless: each live item's band hashes (`bands` uint64 as bytes) in `item.extra["bands"]`."""

    name = "minhash"

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.bands, self.rows = band_layout(threshold)

    def process(self, items: list[Item]) -> list[Item]:
        live = [item for item in items if item.alive]
        if live:
            found = band_hashes([_text(item) for item in live], self.bands, self.rows)
            for item, row in zip(live, found, strict=True):
                item.extra = {**(item.extra or {}), "bands": row.tobytes()}
            self.stats["signed"] += len(live)
        return items


# ---- clustering ----------------------------------------------------------------------------------------

def band_runs(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members of every run of equal hashes in one band column, in index order, and each one's run number.

    Only runs of two or more; a stable sort keeps each run's members ascending, so a run's first member is
    its smallest index.
    """
    order = np.argsort(column, kind="stable")
    ordered = column[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    in_run = np.zeros(column.size, dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    where = np.flatnonzero(in_run)
    starts = np.ones(where.size, dtype=bool)
    starts[1:] = ~same[where[1:] - 1]
    return order[where].astype(np.int64), np.cumsum(starts) - 1


def components(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the edges: (every node on an edge, sorted; its component's smallest node)."""
    nodes, packed = np.unique(np.concatenate([first, second]), return_inverse=True)
    u, v = packed[:first.size], packed[first.size:]
    label = np.arange(nodes.size)
    while True:
        low = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, low)
        np.minimum.at(new, v, low)
        while True:  # pointer jumping: every node straight to its label's label
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return nodes, nodes[label]
        label = new


class _Spill:
    """Pass 1's files: every item in pickle frames, live items' offsets, one uint64 file per band."""

    def __init__(self, folder: Path, bands: int) -> None:
        self.folder, self.bands = folder, bands
        self.items_path = folder / "items.pickle"
        self.handle: BinaryIO | None = open_scratch(self.items_path)
        self.band_paths = [folder / f"band{k:02d}.u64" for k in range(bands)]
        self.band_handles = [open_scratch(path) for path in self.band_paths]
        self.buffer = np.empty((bands, BAND_BUFFER), dtype=_U64)
        self.buffered = 0
        self.offsets = array("q")  # live item -> its frame's offset in items.pickle
        self.size = 0
        self.total = 0

    def add(self, item: Item, bands: np.ndarray | None) -> None:
        assert self.handle is not None
        frame = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        if bands is not None:
            self.offsets.append(self.size)
            self.buffer[:, self.buffered] = bands
            self.buffered += 1
            if self.buffered == BAND_BUFFER:
                self._flush()
        self.handle.write(frame)
        self.size += len(frame)
        self.total += 1

    def _flush(self) -> None:
        for k, handle in enumerate(self.band_handles):
            self.buffer[k, :self.buffered].tofile(handle)
        self.buffered = 0

    def finish(self) -> None:
        self._flush()
        for handle in [self.handle, *self.band_handles]:
            if handle is not None:
                handle.close()
        self.handle, self.band_handles, self.buffer = None, [], np.empty((0, 0), dtype=_U64)

    def column(self, band: int) -> np.ndarray:
        return np.fromfile(self.band_paths[band], dtype=_U64)

    def replay(self) -> Iterator[Item]:
        with self.items_path.open("rb") as handle:
            for _ in range(self.total):
                yield pickle.load(handle)


class NearDedupStep(Step):
    """Stateful: clusters live items whose texts have a Jaccard >= threshold; keeps each cluster's first.

    Memory: 8 bytes a live item (spill offsets) plus, while clustering, one band column and its sort order
    (16 bytes a live item) and the candidate pairs; the items and band hashes wait on disk in a temporary
    folder (under `tmp_dir`, else the system's), removed when the stream ends, stops early or fails.
    """

    name = "near_dedup"
    stateless = False

    def __init__(self, threshold: float, tmp_dir: Path | None = None, shuffle_parts: int = 0) -> None:
        super().__init__()
        self.threshold, self.tmp_dir = threshold, tmp_dir
        self.bands, self.rows = band_layout(threshold)
        self.shuffle_parts = shuffle_parts  # > 0: find each band's buckets with a Ray shuffle (--executor ray)

    def _band_runs(self, spill: _Spill) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each band's buckets: sorted here one column at a time, or all in one Ray shuffle."""
        if self.shuffle_parts:
            from ..exec.ray import equal_key_runs

            yield from equal_key_runs((spill.column(band) for band in range(self.bands)), self.shuffle_parts)
            return
        for band in range(self.bands):
            yield band_runs(spill.column(band))

    def process(self, items: list[Item]) -> list[Item]:
        raise RuntimeError("near_dedup needs the whole stream: call run(), not process()")

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        with scratch_dir("visinstruct-near-dup-", self.tmp_dir) as folder:
            spill = _Spill(folder, self.bands)
            try:
                self._fill(spill, items)
            finally:
                spill.finish()
            duplicates, roots = self._cluster(spill)
            yield from self._replay(spill, duplicates, roots)

    def _fill(self, spill: _Spill, items: Iterable[Item]) -> None:
        for item in items:
            if not item.alive:
                spill.add(item, None)
                continue
            extra = item.extra or {}
            raw = extra.pop("bands", None)
            item.extra = extra or None
            if raw is None:  # no MinhashStep before this one: sign it here
                bands = band_hashes([_text(item)], self.bands, self.rows)[0]
                self.stats["signed_in_driver"] += 1
            else:
                bands = np.frombuffer(raw, dtype=_U64)
                if bands.size != self.bands:
                    raise ValueError(f"near_dedup: {bands.size} band hashes, expected {self.bands}")
            spill.add(item, bands)

    # -- clustering --

    def _cluster(self, spill: _Spill) -> tuple[np.ndarray, np.ndarray]:
        """(the live indices to reject, ascending; each one's cluster's first member) over the verified edges."""
        live = len(spill.offsets)
        self.stats["live"] += live
        none = np.empty(0, dtype=np.int64)
        if live < 2:
            return none, none
        verdicts = _Verdicts(self, spill, live)
        for members, runs in self._band_runs(spill):
            for _ in range(MAX_ROUNDS):
                if not members.size:
                    break
                members, runs = verdicts.star(members, runs)
            else:
                self.stats["unchecked_bucket_members"] += int(members.size)
        first, second = verdicts.edges()
        self.stats["candidate_pairs"] += verdicts.checked
        self.stats["similar_pairs"] += int(first.size)
        if not first.size:
            return none, none
        nodes, roots = components(first, second)
        duplicate = nodes != roots
        return nodes[duplicate], roots[duplicate]

    def _replay(self, spill: _Spill, duplicates: np.ndarray, roots: np.ndarray) -> Iterator[Item]:
        keepers, left = np.unique(roots, return_counts=True)
        self.stats["clusters"] += int(keepers.size)
        names: dict[int, str] = {}  # the ids of the clusters' first members, while members are still to come
        next_keeper = next_duplicate = 0
        keeper = int(keepers[0]) if keepers.size else -1
        duplicate = int(duplicates[0]) if duplicates.size else -1
        live = -1
        for item in spill.replay():
            if item.alive:
                live += 1
                if live == keeper:
                    names[live] = _record_id(item)
                    next_keeper += 1
                    keeper = int(keepers[next_keeper]) if next_keeper < keepers.size else -1
                elif live == duplicate:
                    root = int(roots[next_duplicate])
                    item.reject(self.name, f"near_duplicate: like {names[root]}")
                    self.stats["near_duplicates"] += 1
                    at = int(np.searchsorted(keepers, root))
                    left[at] -= 1
                    if not left[at]:
                        del names[root]
                    next_duplicate += 1
                    duplicate = int(duplicates[next_duplicate]) if next_duplicate < duplicates.size else -1
            yield item


def _record_id(item: Item) -> str:
    record = item.record
    return str(record.get("id")) if isinstance(record, dict) else f"record {item.index}"


class _Verdicts:
    """Exact-Jaccard checks of candidate pairs (each pair once), reading both records back from the spill."""

    def __init__(self, step: NearDedupStep, spill: _Spill, live: int) -> None:
        self.threshold, self.offsets, self.live = step.threshold, spill.offsets, live
        self.path = spill.items_path
        self.known = np.empty(0, dtype=np.int64)    # sorted pair keys (first * live + second) already checked
        self.similar = np.empty(0, dtype=bool)      # their verdicts
        self.checked = 0

    def star(self, members: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Check every run's members against its first; returns the runs of those that failed."""
        first = np.ones(members.size, dtype=bool)
        first[1:] = runs[1:] != runs[:-1]
        heads = members[np.flatnonzero(first)][np.cumsum(first) - 1]
        tails = ~first
        a, b, run = heads[tails], members[tails], runs[tails]
        ok = self.check(a, b)
        failed = ~ok
        members, runs = b[failed], run[failed]
        sizes = np.bincount(runs) if runs.size else np.empty(0, dtype=np.int64)
        keep = sizes[runs] >= 2 if runs.size else np.empty(0, dtype=bool)
        return members[keep], runs[keep]

    def check(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = a * self.live + b
        unknown = np.unique(keys[~np.isin(keys, self.known)])
        if unknown.size:
            verdicts = np.concatenate([self._verify(unknown[i:i + VERIFY_CHUNK])
                                       for i in range(0, unknown.size, VERIFY_CHUNK)])
            merged = np.concatenate([self.known, unknown])
            order = np.argsort(merged, kind="stable")
            self.known, self.similar = merged[order], np.concatenate([self.similar, verdicts])[order]
            self.checked += int(unknown.size)
        return self.similar[np.searchsorted(self.known, keys)]

    def _verify(self, keys: np.ndarray) -> np.ndarray:
        a, b = np.divmod(keys, self.live)
        nodes = np.unique(np.concatenate([a, b]))
        texts = []
        with self.path.open("rb") as handle:
            for node in nodes:  # ascending offsets: a forward sweep through the spill
                handle.seek(self.offsets[int(node)])
                texts.append(_text(pickle.load(handle)))
        sets = []
        for batch in range(0, len(texts), BATCH):  # the byte-level scratch of a batch, not of every text
            hashes, bounds = shingle_hashes(texts[batch:batch + BATCH])
            sets += [np.unique(hashes[bounds[i]:bounds[i + 1]]) for i in range(bounds.size - 1)]
        where = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
        return np.fromiter((jaccard(sets[i], sets[j]) >= self.threshold for i, j in zip(*where, strict=True)),
                           dtype=bool, count=keys.size)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        first, second = np.divmod(self.known[self.similar], self.live)
        return first, second


__all__ = ["MinhashStep", "NearDedupStep", "band_hashes", "band_layout", "band_runs", "components", "jaccard",
           "shingle_hashes", "shingle_set", "signatures"]
