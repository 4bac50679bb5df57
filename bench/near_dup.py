"""Near-duplicate text dedup (`--near-dup`) at scale, and its clusters against exact Jaccard.

Writes N synthetic LLaVA records once (a question from 12 templates, an answer of 60-120 words drawn from a
Zipf-weighted 20,000-word vocabulary, 1 in 4 with a second turn; ~5% planted near-duplicates of a record
among the previous 5,000: same text on another image, or 1, 2, 3, 4, 6 or 10 answer words replaced), then
(a) runs `run_filter` with stages structure + dedup and `near_dup` in a child process, polling its
    RSS (and its workers'), and prints records/s, peak RSS, the spill's peak size and the step's counts;
(b) on the first `--sample` records: exact-Jaccard pairs (prefix-filtered all-pairs, exact on every pair
    down to threshold - 0.2) and their connected components, against the clusters of the new step and of
    the previous implementation (datasketch MinHashLSH, 64 permutations, first match), if installed.

    python bench/near_dup.py [--records 1000000] [--sample 10000] [--threshold 0.85] [--workers 1]
                             [--data DIR]   (keeps the generated records there for the next run)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

QUESTIONS = ["What is happening in this image?", "Describe the picture in detail.", "What can you see here?",
             "Explain what the people in the photo are doing.", "What is unusual about this scene?",
             "Describe the objects on the table.", "What might happen next in this scene?",
             "Write a short story about this picture.", "What is the weather like in the image?",
             "Where could this photo have been taken?", "What are the main colors in the image?",
             "How many animals are visible, and what are they doing?"]
WINDOW = 5000                          # a near-duplicate repeats one of the previous WINDOW records
CHANGES = [0, 1, 1, 2, 2, 3, 4, 6, 10]  # answer words replaced in a near-duplicate (0: same text, other image)


def vocabulary(rng: random.Random, size: int = 20000) -> tuple[list[str], np.ndarray]:
    """`size` made-up words and Zipf-like probabilities (1 / (rank + 10))."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(size * 2)})
    rng.shuffle(words)
    weights = 1 / (np.arange(size) + 10.0)
    return words[:size], weights / weights.sum()


def write_records(path: Path, count: int, seed: int = 0) -> int:
    """`count` records as JSONL; returns how many are planted near-duplicates."""
    rng = random.Random(seed)
    words, probability = vocabulary(rng)
    draws = np.random.default_rng(seed)
    pool: list[int] = []

    def draw(k: int) -> list[str]:
        nonlocal pool
        if len(pool) < k:
            pool = draws.choice(len(words), size=1 << 20, p=probability).tolist()
        cut = len(pool) - k
        taken = pool[cut:]
        del pool[cut:]
        return [words[i] for i in taken]

    recent: deque[tuple[str, list[str], list[dict]]] = deque(maxlen=WINDOW)
    planted = 0
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as handle:
        for i in range(count):
            if recent and rng.random() < 0.05:
                question, answer, rest = recent[rng.randrange(len(recent))]
                answer = list(answer)
                changes = rng.choice(CHANGES)
                for k, word in zip(rng.sample(range(len(answer)), changes), draw(changes), strict=True):
                    answer[k] = word
                planted += 1
            else:
                question, answer = rng.choice(QUESTIONS), draw(rng.randint(60, 120))
                rest = []
                if rng.random() < 0.25:
                    rest = [{"from": "human", "value": rng.choice(QUESTIONS)},
                            {"from": "gpt", "value": " ".join(draw(rng.randint(15, 40))).capitalize() + "."}]
            record = {"id": f"{i:08d}", "image": f"coco/train2017/{i:012d}.jpg", "task": "conversation",
                      "conversations": [{"from": "human", "value": "<image>\n" + question},
                                        {"from": "gpt", "value": " ".join(answer).capitalize() + "."}, *rest]}
            handle.write(orjson.dumps(record) + b"\n")
            recent.append((question, answer, rest))
    tmp.rename(path)
    return planted


# ---- (a) the whole filter in a child process --------------------------------------------------------------

CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from visinstruct.filters.pipeline import FilterConfig, run_filter
config = FilterConfig(stages=["structure", "dedup"], near_dup={threshold}, workers={workers})
started = time.perf_counter()
report = run_filter(Path({source!r}), Path({kept!r}), Path({rejects!r}), config, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - started, "report": report}}))
"""


def _tree_rss(pid: int) -> int:
    """Resident KiB of `pid` and its children (the pool's workers), 0 once it is gone."""
    total = 0
    try:
        children = (Path(f"/proc/{pid}/task/{pid}/children").read_text()).split()
    except OSError:
        children = []
    for proc in [pid, *map(int, children)]:
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _folder_size(folder: Path) -> int:
    size = 0
    for path in folder.glob("visinstruct-near-dup-*/*"):
        with contextlib.suppress(OSError):
            size += path.stat().st_size
    return size


def full_run(source: Path, work: Path, threshold: float, workers: int) -> None:
    spill_dir = work / "tmp"
    spill_dir.mkdir(exist_ok=True)
    code = CHILD.format(src=str(REPO / "src"), threshold=threshold, workers=workers, source=str(source),
                        kept=str(work / "kept.jsonl"), rejects=str(work / "rejects.jsonl"))
    env = {**os.environ, "TMPDIR": str(spill_dir)}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak_tree = peak_spill = 0
    while child.poll() is None:
        peak_tree = max(peak_tree, _tree_rss(child.pid))
        peak_spill = max(peak_spill, _folder_size(spill_dir))
        time.sleep(0.2)
    out, err = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode:
        sys.exit(f"filter run failed ({child.returncode}):\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    report = result["report"]
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    records = report["records_in"]
    print(f"\n(a) run_filter, stages structure + dedup, near_dup {threshold}, workers {workers}")
    print(f"    {records:,} records in {result['seconds']:.0f} s ({records / result['seconds']:,.0f} records/s; "
          f"{wall:.0f} s with start-up)")
    print(f"    peak RSS: {largest:,.0f} MB (largest process), {peak_tree / 1024:,.0f} MB (process + workers, "
          f"polled); spill on disk at most {peak_spill / 1e6:,.0f} MB")
    steps = report["steps"]
    for name in ("dedup", "near_dedup"):
        step = steps.get(name, {})
        print(f"    {name}: rejected {step.get('rejected', 0):,}  {step.get('counts', {})}")
    leftover = list(spill_dir.iterdir())
    print(f"    spill folders left behind: {len(leftover)}")


# ---- (b) clusters on a sample against exact Jaccard ---------------------------------------------------------

def _read(source: Path, count: int) -> list[dict]:
    with source.open("rb") as handle:
        return [orjson.loads(line) for line in itertools.islice(handle, count)]


def _shingles(text: str) -> set[str]:
    words = text.split()
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def exact_pairs(sets: list[set[str]], floor: float) -> dict[tuple[int, int], float]:
    """Every pair with Jaccard >= floor, exactly (prefix filtering: rare shingles first)."""
    frequency = Counter(s for shingles in sets for s in shingles)
    index: dict[str, list[int]] = defaultdict(list)
    candidates: set[tuple[int, int]] = set()
    for i, shingles in enumerate(sets):
        ordered = sorted(shingles, key=lambda s: (frequency[s], s))
        prefix = len(ordered) - math.ceil(floor * len(ordered)) + 1
        for s in ordered[:prefix]:
            for j in index[s]:
                candidates.add((j, i))
            index[s].append(i)
    found = {}
    for i, j in candidates:
        common = len(sets[i] & sets[j])
        value = common / (len(sets[i]) + len(sets[j]) - common)
        if value >= floor:
            found[(i, j)] = value
    return found


def _roots(count: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Each record's component's smallest member."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(count)]


def new_clusters(records: list[dict], threshold: float) -> tuple[list[int], float]:
    from visinstruct.core.step import Item, batches
    from visinstruct.filters.minhash import MinhashStep, NearDedupStep

    started = time.perf_counter()
    sign = MinhashStep(threshold)
    items = [item for batch in batches(Item(i, r) for i, r in enumerate(records)) for item in sign.process(batch)]
    out = list(NearDedupStep(threshold).run(iter(items)))
    roots = [int(item.reason.rsplit(" ", 1)[1]) if item.rejected else item.index for item in out]
    return roots, time.perf_counter() - started


def old_clusters(records: list[dict], threshold: float) -> tuple[list[int], float] | None:
    """The previous implementation: datasketch MinHash (64 permutations) + MinHashLSH, first match wins."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    from visinstruct.filters.dedup import conversation_text

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    roots = []
    for i, record in enumerate(records):
        signature = MinHash(num_perm=64)
        signature.update_batch([s.encode() for s in _shingles(conversation_text(record))])
        matches = lsh.query(signature)
        if matches:
            roots.append(roots[min(int(m) for m in matches)])
        else:
            roots.append(i)
            lsh.insert(str(i), signature)
    return roots, time.perf_counter() - started


def compare(records: list[dict], threshold: float) -> None:
    from visinstruct.filters.dedup import conversation_text

    count = len(records)
    started = time.perf_counter()
    sets = [_shingles(conversation_text(r)) for r in records]
    pairs = exact_pairs(sets, max(0.05, threshold - 0.2))
    above = [p for p, value in pairs.items() if value >= threshold]
    exact = _roots(count, above)
    exact_seconds = time.perf_counter() - started
    exact_dups = {i for i in range(count) if exact[i] != i}
    near_miss = sum(threshold - 0.2 <= value < threshold for value in pairs.values())
    print(f"\n(b) {count:,} records, Jaccard >= {threshold}: {len(above):,} exact pairs, "
          f"{len(exact_dups):,} records in {len(set(exact[i] for i in exact_dups)):,} clusters to reject "
          f"(and {near_miss:,} pairs in [{threshold - 0.2:.2f}, {threshold}))")
    print(f"    {'method':<28} {'rejects':>8} {'both':>7} {'missed':>7} {'extra':>6} {'wrong_first':>11} "
          f"{'pairs_found':>12} {'pairs_missed':>12} {'outside':>8} {'seconds':>8}")
    rows = [("exact Jaccard (all pairs)", exact, exact_seconds),
            ("new: bands + verify", *new_clusters(records, threshold))]
    old = old_clusters(records, threshold)
    if old is not None:
        rows.append(("old: datasketch LSH (64)", *old))
    for label, roots, seconds in rows:
        rejected = {i for i in range(count) if roots[i] != i}
        both = rejected & exact_dups
        wrong = sum(1 for i in both if roots[i] != exact[i])
        found = sum(1 for i, j in above if roots[i] == roots[j])
        outside = sum(1 for i in rejected if exact[i] != exact[roots[i]])  # joined without a chain of similar
        print(f"    {label:<28} {len(rejected):>8,} {len(both):>7,} {len(exact_dups - rejected):>7,} "
              f"{len(rejected - exact_dups):>6,} {wrong:>11,} {found:>12,} {len(above) - found:>12,} "
              f"{outside:>8,} {seconds:>8.1f}")
    print("    both/missed/extra: records rejected by the method and by exact Jaccard / only exact / only the method;"
          "\n    wrong_first: rejected by both but named after another cluster; pairs: exact pairs >= threshold in"
          "\n    one cluster or not; outside: rejected records whose cluster is not their exact-Jaccard component")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data", type=Path, help="keep the generated records in this folder (reused next time)")
    parser.add_argument("--skip-full", action="store_true", help="only the sample comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="near-dup-bench-") as tmp:
        data = args.data or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        source = data / f"records-{args.records}.jsonl"
        if not source.exists():
            started = time.perf_counter()
            planted = write_records(source, args.records)
            print(f"wrote {args.records:,} records ({source.stat().st_size / 1e6:,.0f} MB, {planted:,} planted "
                  f"near-duplicates) in {time.perf_counter() - started:.0f} s")
        if not args.skip_full:
            full_run(source, Path(tmp), args.threshold, args.workers)
        compare(_read(source, min(args.sample, args.records)), args.threshold)


if __name__ == "__main__":
    main()
