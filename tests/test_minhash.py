"""Near-duplicate text: band hashes the same in every process, clusters that agree with exact Jaccard,
rejected items untouched, order kept, and the spill folder gone however the stream ends."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visinstruct.core.step import Item
from visinstruct.filters.dedup import conversation_text
from visinstruct.filters.minhash import (
    MinhashStep,
    NearDedupStep,
    band_hashes,
    band_layout,
    components,
    shingle_hashes,
)

REPO = Path(__file__).resolve().parents[1]
RNG = random.Random(7)
VOCAB = sorted({"".join(RNG.choice("abcdefghijklmnopqrstuvwxyzабвгдеж") for _ in range(RNG.randint(2, 9)))
                for _ in range(3000)})


def words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(count)]


def record(rid: str, text: str) -> dict:
    return {"id": rid, "image": f"{rid}.jpg",
            "conversations": [{"from": "human", "value": "<image>\nDescribe the picture."},
                              {"from": "gpt", "value": text}]}


def run_steps(records: list[dict], threshold: float, tmp: Path, rejected: dict[int, str] | None = None) -> list[Item]:
    items = [Item(i, r) for i, r in enumerate(records)]
    for i, stage in (rejected or {}).items():
        items[i].reject(stage, f"{stage}: planted")
    items = MinhashStep(threshold).process(items)
    return list(NearDedupStep(threshold, tmp_dir=tmp).run(iter(items)))


def exact_pairs(texts: list[str]) -> dict[tuple[int, int], float]:
    sets = []
    for text in texts:
        w = text.split()
        sets.append({" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))})
    return {(i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            for i in range(len(sets)) for j in range(i + 1, len(sets))}


def test_band_layout() -> None:
    assert band_layout(0.85) == (15, 8) and band_layout(0.8) == (16, 6)
    for threshold in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95):
        bands, rows = band_layout(threshold)
        assert bands * rows <= 128 and 1 - (1 - threshold ** rows) ** bands >= 0.99


def test_shingles_match_word_5grams_and_ignore_the_batch() -> None:
    texts = [" ".join(words(RNG, n)) for n in (0, 1, 3, 4, 5, 6, 40, 90)] + ["a b a b a b a b", "ёлка 你好 b"]
    hashes, bounds = shingle_hashes(texts)
    for i, text in enumerate(texts):
        w = text.split()
        expected = {" ".join(w[k:k + 5]) for k in range(max(1, len(w) - 4))}
        alone = shingle_hashes([text])[0]
        assert np.array_equal(alone, hashes[bounds[i]:bounds[i + 1]])
        assert len(np.unique(alone)) == len(expected)
    assert len({shingle_hashes([t])[0][0] for t in ("", "a", "a b", "b a")}) == 4
    together = band_hashes(texts, 15, 8)
    assert all(np.array_equal(together[i], band_hashes([t], 15, 8)[0]) for i, t in enumerate(texts))


def test_bands_are_the_same_in_another_process() -> None:
    texts = [" ".join(words(RNG, n)) for n in (2, 7, 60, 120)] + ["привет мир как дела сегодня утром"]
    code = ("import json, sys; from visinstruct.filters.minhash import band_hashes; "
            "print(json.dumps(band_hashes(json.loads(sys.stdin.read()), 15, 8).tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    found = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                           env=env, check=True, cwd=REPO)
    assert json.loads(found.stdout) == band_hashes(texts, 15, 8).tolist()


def test_near_duplicates_clustered_unrelated_kept_order_kept(tmp_path: Path) -> None:
    base = words(RNG, 100)
    changed = list(base)
    changed[50] = "different"
    records = [record("a", " ".join(base)), record("x", " ".join(words(RNG, 80))),
               record("b", " ".join(changed)), record("y", " ".join(words(RNG, 80))),
               record("c", "<image> " + " ".join(base).upper()),  # same normalised text, other image
               record("short", "yes"), record("short2", "no")]
    out = run_steps(records, 0.85, tmp_path)
    assert [item.index for item in out] == list(range(len(records)))
    verdicts = {item.record["id"]: item.reason for item in out if item.rejected}
    assert verdicts == {"b": "near_duplicate: like a", "c": "near_duplicate: like a"}
    assert all(item.rejected in (None, "near_dedup") for item in out)
    assert all(not item.extra for item in out)  # the band bytes are not carried on
    assert not list(tmp_path.iterdir())


def test_rejected_items_pass_untouched_and_are_not_clustered(tmp_path: Path) -> None:
    text = " ".join(words(RNG, 60))
    records = [record("first", text), record("again", text), record("third", text)]
    out = run_steps(records, 0.85, tmp_path, rejected={0: "dedup"})
    assert out[0].rejected == "dedup" and out[0].reason == "dedup: planted"
    assert out[1].rejected is None  # the first live one keeps its place
    assert (out[2].rejected, out[2].reason) == ("near_dedup", "near_duplicate: like again")


def test_items_without_bands_are_signed_in_the_driver(tmp_path: Path) -> None:
    text = " ".join(words(RNG, 60))
    step = NearDedupStep(0.85, tmp_dir=tmp_path)
    out = list(step.run(Item(i, record(str(i), text)) for i in range(3)))
    assert [item.reason for item in out] == [None, "near_duplicate: like 0", "near_duplicate: like 0"]
    assert step.stats["signed_in_driver"] == 3 and step.stats["clusters"] == 1


def test_spill_removed_on_early_stop_and_on_error(tmp_path: Path) -> None:
    records = [record(str(i), " ".join(words(RNG, 30))) for i in range(20)]
    items = MinhashStep(0.85).process([Item(i, r) for i, r in enumerate(records)])
    stream = NearDedupStep(0.85, tmp_dir=tmp_path).run(iter(items))
    next(stream)
    assert len(list(tmp_path.iterdir())) == 1  # the spill folder, while the stream is open
    stream.close()
    assert not list(tmp_path.iterdir())

    def failing():
        yield from items[:5]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(NearDedupStep(0.85, tmp_dir=tmp_path).run(failing()))
    assert not list(tmp_path.iterdir())


def test_components_join_chains_at_their_smallest_member() -> None:
    nodes, roots = components(np.array([5, 2, 9]), np.array([7, 5, 11]))
    assert nodes.tolist() == [2, 5, 7, 9, 11] and roots.tolist() == [2, 2, 2, 9, 9]


def test_clusters_agree_with_exact_jaccard(tmp_path: Path) -> None:
    rng = random.Random(3)
    texts = []
    for _ in range(60):  # 60 families: an original and variants with 1 to 25 words replaced (J ~0.9 to 0.1)
        base = words(rng, rng.randint(60, 110))
        texts.append(" ".join(base))
        for _ in range(rng.randint(0, 4)):
            variant = list(base)
            for k in rng.sample(range(len(base)), rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 12, 25])):
                variant[k] = rng.choice(VOCAB)
            texts.append(" ".join(variant))
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    records = [record(str(i), t) for i, t in enumerate(texts)]
    assert len(records) > 150
    threshold = 0.7
    out = run_steps(records, threshold, tmp_path)
    cluster = {}
    for item in out:
        cluster[item.index] = int(item.reason.rsplit(" ", 1)[1]) if item.rejected else item.index
    pairs = exact_pairs([conversation_text(r) for r in records])
    assert sum(j >= threshold + 0.1 for j in pairs.values()) > 40
    # every pair well above the threshold lands in one cluster
    missed = [p for p, j in pairs.items() if j >= threshold + 0.1 and cluster[p[0]] != cluster[p[1]]]
    assert not missed
    # and every cluster lies inside one exact-Jaccard component: no pair is joined without a chain of similar ones
    exact = {i: i for i in range(len(records))}

    def root(i: int) -> int:
        while exact[i] != i:
            i = exact[i]
        return i

    for (i, j), value in pairs.items():
        if value >= threshold:
            exact[max(root(i), root(j))] = min(root(i), root(j))
    assert all(root(i) == root(cluster[i]) for i in cluster)
    far = [p for p, j in pairs.items() if j <= threshold - 0.2 and cluster[p[0]] == cluster[p[1]]
           and root(p[0]) != root(p[1])]
    assert not far and not list(tmp_path.iterdir())
