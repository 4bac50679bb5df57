"""Decontamination: reject training records that show an evaluation benchmark's images or questions.

The eval set is loaded once, in the driver, when the pipeline is checked: its images are hashed (perceptual
hash, `core.phash`) into a `PhashIndex`, and its questions are cut into word n-grams kept as sorted 64-bit
digests. Both are small numpy arrays and lists, so the step pickles cheaply to every worker. On a worker,
a batch's training images are hashed (each file once while it stays in a bounded cache) and looked up in
the index all at once; each human turn's n-grams are looked up in the digests. A record with any match is
rejected (`eval_image` or `eval_question`), and every match (both sides named) rides on the item to the
driver, which lists them in the report.

Text is compared after NFKC, case folding and dropping punctuation: a word is a run of letters and digits,
and each Han or kana character is a token of its own (Chinese and Japanese have no spaces). A question
whose tokens are mostly such characters is cut into n-grams of ceil(1.5 * n) characters (about 1.5
characters a Chinese word), others into n-grams of n words; training turns are cut both ways.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.deps import require
from ..core.errors import UserError
from ..core.io import read_json_list, read_jsonl, safe_relative, stays_inside
from ..core.phash import IMAGE_SUFFIXES, PhashIndex, image_files, phash_file
from ..core.records import IMAGE_TOKEN, images_of
from ..core.step import Item, Step

PHASH_DISTANCE = 6  # bench/decontaminate.py: every 60% + JPEG q70 copy within 6 bits; 9 of 4.95e8 unrelated pairs
NGRAM = 13
CHARS_PER_WORD = 1.5
CACHE_SIZE = 1 << 16
SHOWN_CHARS = 80
_CHARACTER = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han: one token each
TOKEN = re.compile(f"[{_CHARACTER}]|[^\\W_{_CHARACTER}]+")
CHARACTER = re.compile(f"[{_CHARACTER}]")


# ---- text ----------------------------------------------------------------------------------------------

def tokens(text: str) -> list[str]:
    """Words and single Han/kana characters of `text`, NFKC-normalised and case-folded, `<image>` dropped."""
    return TOKEN.findall(unicodedata.normalize("NFKC", text.replace(IMAGE_TOKEN, " ")).casefold())


def gram_size(words: list[str], ngram: int) -> int:
    """n words, or ceil(1.5 n) characters when most tokens are Han/kana characters."""
    characters = sum(1 for w in words if len(w) == 1 and CHARACTER.match(w))
    return math.ceil(CHARS_PER_WORD * ngram) if characters * 2 > len(words) else ngram


def digest(words: list[str]) -> int:
    """A 64-bit digest of a token sequence (the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).digest(), "little")


def grams(words: list[str], size: int) -> list[int]:
    """Digests of every window of `size` tokens."""
    return [digest(words[i:i + size]) for i in range(len(words) - size + 1)]


def shown(words: list[str]) -> str:
    """An n-gram as text for a report (characters joined without spaces), cut to SHOWN_CHARS."""
    joined = "".join(words) if all(len(w) == 1 for w in words) else " ".join(words)
    return joined if len(joined) <= SHOWN_CHARS else joined[:SHOWN_CHARS - 1] + "…"


# ---- the eval set --------------------------------------------------------------------------------------

def eval_images(path: Path) -> list[tuple[str, Path]]:
    """(name, file) of each eval image: a folder's image files, or the paths a text file lists one per line
    (relative ones to the list's folder; blank lines and `#` comments skipped)."""
    if path.is_dir():
        found = [(name, path / name) for name in image_files(path)]
        if not found:
            raise UserError(f"{path}: --decontaminate folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if not path.is_file():
        raise UserError(f"{path}: --decontaminate: no such folder or file")
    if path.suffix.lower() in (".json", ".jsonl", ".parquet"):
        raise UserError(f"{path}: --decontaminate takes a folder of images or a text file of image paths; "
                        "benchmark questions go to --eval-questions")
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the list of eval images ({exc})") from None
    found = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        file = path.parent / name
        if not file.is_file():
            raise UserError(f"{path}:{number}: eval image {name} not found")
        found.append((name, file))
    if not found:
        raise UserError(f"{path}: the list of eval images is empty")
    return found


def question_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a .json list or .jsonl file of benchmark questions."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from ((f"{path}:{line}", row) for line, row in read_jsonl(path))
    elif suffix == ".json":
        yield from ((f"{path}: record {n}", row) for n, row in enumerate(read_json_list(path), start=1))
    else:
        raise UserError(f"{path}: --eval-questions must be a .json list or a .jsonl file")


def row_questions(where: str, row: Any) -> list[tuple[str, str]]:
    """(id, text) of a row's questions: a LLaVA record's human turns (`<id> turn <i>`), a row's `question`,
    `text` or `prompt` (id: `question_id`, else `id`, else where it is), or a bare string."""
    if isinstance(row, str):
        return [(where, row)]
    if not isinstance(row, dict):
        raise UserError(f"{where}: a question row must be an object or a string, got {type(row).__name__}")
    name = str(row.get("question_id", row.get("id", where)))
    turns = row.get("conversations")
    if isinstance(turns, list):
        return [(f"{name} turn {i}", t["value"]) for i, t in enumerate(turns)
                if isinstance(t, dict) and t.get("from") == "human" and isinstance(t.get("value"), str)]
    for key in ("question", "text", "prompt"):
        if isinstance(row.get(key), str):
            return [(name, row[key])]
    raise UserError(f"{where}: no question in this row (expected LLaVA conversations, or a question, text or "
                    "prompt field)")


@dataclass
class EvalSet:
    """The benchmark side: image names, their hashes' index, question ids and their n-gram digests."""

    distance: int
    ngram: int
    images: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    index: PhashIndex | None = None
    owners: dict[int, list[int]] = field(default_factory=dict)  # hash -> eval images with it
    questions: list[str] = field(default_factory=list)
    digests: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted
    digest_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # question of each digest
    sizes: tuple[int, ...] = ()
    short: int = 0  # questions with fewer tokens than one n-gram
    seconds: float = 0.0

    def add_images(self, path: Path, threads: int) -> None:
        """Hash every eval image (`threads` at a time); unreadable ones are listed, not fatal."""
        found = eval_images(path)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            hashes = list(pool.map(phash_file, [file for _, file in found]))
        kept = []
        for (name, _), value in zip(found, hashes, strict=True):
            if value is None:
                self.unreadable.append(name)
                continue
            self.owners.setdefault(value, []).append(len(self.images))
            self.images.append(name)
            kept.append(value)
        self.index = PhashIndex(np.array(kept, dtype=np.uint64), self.distance)

    def add_questions(self, path: Path) -> None:
        """Cut every question into n-grams and keep their digests, sorted, with their question's number."""
        digests, owner, sizes = [], [], set()
        for where, row in question_rows(path):
            for name, text in row_questions(where, row):
                words = tokens(text)
                size = gram_size(words, self.ngram)
                found = set(grams(words, size))
                if found:
                    sizes.add(size)
                else:
                    self.short += 1
                digests.extend(found)
                owner.extend([len(self.questions)] * len(found))
                self.questions.append(name)
        order = np.argsort(np.array(digests, dtype=np.uint64), kind="stable")
        self.digests = np.array(digests, dtype=np.uint64)[order]
        self.digest_owner = np.array(owner, dtype=np.int64)[order]
        self.sizes = tuple(sorted(sizes))

    def question_matches(self, words: list[str]) -> list[tuple[int, int, list[str], int]]:
        """(question, n-gram size, first shared n-gram, shared n-grams) for each eval question sharing one."""
        found: dict[int, list[Any]] = {}
        for size in self.sizes:
            wanted = np.array(grams(words, size), dtype=np.uint64)
            if not len(wanted) or not len(self.digests):
                continue
            low = np.searchsorted(self.digests, wanted, "left")
            high = np.searchsorted(self.digests, wanted, "right")
            for start in np.nonzero(high > low)[0]:
                for question in self.digest_owner[low[start]:high[start]].tolist():
                    if question in found:
                        found[question][3] += 1
                    else:
                        found[question] = [question, size, words[start:start + size], 1]
        return [tuple(v) for v in found.values()]

    def summary(self) -> dict[str, Any]:
        """What the report says about the eval set."""
        bands, radius = (len(self.index.bands), self.index.radius) if self.index is not None else (0, 0)
        return {"eval_images": len(self.images), "eval_images_unreadable": self.unreadable,
                "eval_questions": len(self.questions), "eval_questions_too_short": self.short,
                "phash_distance": self.distance, "ngram_words": self.ngram,
                "ngram_characters": math.ceil(CHARS_PER_WORD * self.ngram),
                "index": {"bands": bands, "radius": radius}, "seconds_to_load": round(self.seconds, 2)}


def load_eval(images: Path | None, questions: Path | None, distance: int, ngram: int, threads: int) -> EvalSet:
    """The eval set from a folder or list of images and/or a file of questions."""
    started = time.perf_counter()
    found = EvalSet(distance, ngram)
    if images is not None:
        found.add_images(images, threads)
    if questions is not None:
        found.add_questions(questions)
    found.seconds = time.perf_counter() - started
    return found


# ---- the step ------------------------------------------------------------------------------------------

class DecontaminateStep(Step):
    """Stateless: rejects records whose images or human turns match the eval set (loaded in `check`, in the
    driver, and pickled to the workers with the step)."""

    name = "decontaminate"

    def __init__(self, images: Path | None, questions: Path | None, image_root: Path | None,
                 distance: int = PHASH_DISTANCE, ngram: int = NGRAM, threads: int = 1) -> None:
        super().__init__()
        self.images, self.questions, self.image_root = images, questions, image_root
        self.distance, self.ngram, self.threads = distance, ngram, threads
        self.eval: EvalSet | None = None
        self.cache: OrderedDict[str, int | None] = OrderedDict()

    def check(self) -> None:
        if self.images is not None:
            require("filter", "the decontaminate stage (image hashes)", ("imagehash",))
        if self.eval is None:
            self.eval = load_eval(self.images, self.questions, self.distance, self.ngram, self.threads)

    def setup(self) -> None:
        self.check()

    def summary(self) -> dict[str, Any]:
        """The eval set's side of the report."""
        self.check()
        return self.eval.summary()

    def process(self, items: list[Item]) -> list[Item]:
        self.setup()
        live = [item for item in items if item.alive]
        found: list[list[dict[str, Any]]] = [[] for _ in live]
        if self.eval.index is not None and len(self.eval.index):
            self._image_matches(live, found)
        if len(self.eval.digests):
            for item, matches in zip(live, found, strict=True):
                matches.extend(self._question_matches(item.record))
        for item, matches in zip(live, found, strict=True):
            if matches:
                item.reject(self.name, _reason(matches))
                item.extra = {**(item.extra or {}), "decontaminate": matches}
        return items

    def _image_matches(self, live: list[Item], found: list[list[dict[str, Any]]]) -> None:
        """Hash the batch's images and add each one's eval look-alikes to its record's matches."""
        owners, names, hashes = [], [], []
        for number, item in enumerate(live):
            for name in images_of(item.record):
                value = self._hash(name)
                if value is None:
                    continue
                owners.append(number)
                names.append(name)
                hashes.append(value)
        if not hashes:
            return
        where, stored, distances = self.eval.index.pairs(np.array(hashes, dtype=np.uint64))
        for query, value, distance in zip(where.tolist(), stored.tolist(), distances.tolist(), strict=True):
            record = live[owners[query]].record
            for image in self.eval.owners[value]:
                found[owners[query]].append({"kind": "image", "id": record.get("id"), "image": names[query],
                                             "eval_image": self.eval.images[image], "distance": distance})

    def _hash(self, name: Any) -> int | None:
        """The perceptual hash of a training image under the image root (cached), None when unreadable."""
        if not isinstance(name, str):
            return None
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        path = safe_relative(name)
        value = None
        if path is not None and self.image_root is not None and stays_inside(self.image_root, path):
            value = phash_file(self.image_root / path)
        self.stats["images hashed" if value is not None else "images that could not be hashed"] += 1
        self.cache[name] = value
        if len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)
        return value

    def _question_matches(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Every (human turn, eval question) pair sharing an n-gram."""
        matches = []
        for turn, entry in enumerate(record["conversations"]):
            if entry.get("from") != "human":
                continue
            for question, size, words, count in self.eval.question_matches(tokens(entry["value"])):
                matches.append({"kind": "question", "id": record.get("id"), "turn": turn,
                                "eval_question": self.eval.questions[question], "ngram": shown(words),
                                "ngram_size": f"{size} {'words' if size == self.ngram else 'characters'}",
                                "shared_ngrams": count})
        return matches


def _reason(matches: list[dict[str, Any]]) -> str:
    """`eval_image: ...` or `eval_question: ...` for the first match, with how many more there are."""
    first = matches[0]
    more = f" (+{len(matches) - 1} more)" if len(matches) > 1 else ""
    if first["kind"] == "image":
        return (f"eval_image: {first['image']} is {first['distance']} bits from eval image "
                f"{first['eval_image']}{more}")
    return (f"eval_question: human turn {first['turn']} shares {first['ngram_size']} with eval question "
            f"{first['eval_question']}: \"{first['ngram']}\"{more}")
