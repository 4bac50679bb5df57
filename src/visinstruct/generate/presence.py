"""The presence task: yes/no questions about objects an image's annotations show and objects they do not,
made from the annotations alone, with no teacher (POPE's probe of object hallucination, used as training
data the way LRV-Instruction used negative instructions).

Per image as many "no" as "yes" questions: up to `pairs` of each, fewer of both when the image has fewer
present objects or absent candidates. Absent objects are COCO categories seen in the input, half of them
(the odd one by the seed) of each kind:
- adversarial: the ones most often annotated in the same image as this image's categories (POPE's
  adversarial setting; with nothing counted together, the most frequent ones: its popular setting);
- random: any other, drawn by a seed from the unit id, which also draws the present objects, the order
  of the questions and the wording of each.
A category is asked as absent only when no box, caption or region of the image names it, nor anything its
name in the question's language can also mean (zh 滑雪板 is skis or snowboard), matched through the
grounding synonym tables. Absence holds as far as the annotations are complete: COCO's instances are, for
its 80 categories; Visual Genome's are not, so there an object that no box or region names may be in the
picture all the same.
Present objects are the boxes' COCO categories (a Visual Genome name mapped through the English table). An
English question may also ask about a Visual Genome name that no table knows, as written (after the COCO
ones; singular names only); ru and zh skip such names. Wording: `prompt_packs/<lang>/presence.json`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ..core.referring import seeded_index
from ..grounding.scan import detect_lang, scan
from ..grounding.vocab import categories
from ..sources.scene import Scene
from .parse import LABELS
from .tasks import LANGS

FALLBACK_NAME = re.compile(r"[a-z]+(?: [a-z]+){0,2}")  # a Visual Genome name asked as written (en)
DEFAULT_PAIRS = 3


@dataclass(frozen=True)
class Wording:
    """One language's questions, answers and category names (`forms`: the fields each name gives)."""

    forms: tuple[str, ...]
    questions: tuple[str, ...]
    yes: tuple[str, ...]
    no: tuple[str, ...]
    names: dict[str, tuple[str, ...]]
    mass_nouns: frozenset[str]


@cache
def wording(lang: str) -> Wording:
    """`prompt_packs/<lang>/presence.json`, shipped inside the package."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")
    raw = json.loads(resources.files(__package__).joinpath("prompt_packs", lang, "presence.json").read_text("utf-8"))
    return Wording(tuple(raw["forms"]), tuple(raw["questions"]), tuple(raw["yes"]), tuple(raw["no"]),
                   {cat: tuple(forms) for cat, forms in raw["names"].items()}, frozenset(raw.get("mass_nouns", ())))


def _english_forms(name: str, mass_nouns: frozenset[str]) -> tuple[str, str] | None:
    """`a`/`noun` forms of a name no table knows; None when it does not read as one singular noun phrase."""
    last = name.rsplit(" ", 1)[-1]
    if not FALLBACK_NAME.fullmatch(name) or (last.endswith("s") and not last.endswith(("ss", "us", "is"))):
        return None
    if last in mass_nouns:
        return name, name
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}", name


def subject_forms(subject: str, lang: str) -> dict[str, str] | None:
    """The template fields naming `subject` (a COCO category, or in English any name); None: not askable."""
    words = wording(lang)
    forms = words.names.get(subject)
    if forms is None and lang == "en":  # the article rule is English; ru/zh would need a table entry
        forms = _english_forms(subject, words.mass_nouns)
    return dict(zip(words.forms, forms, strict=True)) if forms else None


@lru_cache(maxsize=1)
def _coco_names() -> frozenset[str]:
    return frozenset(categories())


@lru_cache(maxsize=65536)
def name_categories(name: str, lang: str = "en") -> tuple[str, ...]:
    """The COCO categories a name stands for: a COCO name itself, else every category the words of `lang`'s
    synonym table in it can mean (a Visual Genome `white dog`: dog; `bike`: bicycle and motorcycle)."""
    if name in _coco_names():
        return (name,)
    return tuple(dict.fromkeys(c for m in scan(name, lang, labels=True) for c in m.entry.categories))


def question_categories(subject: str, lang: str) -> frozenset[str]:
    """`subject` and every category its names in `lang` can also be read as."""
    forms = subject_forms(subject, lang) or {}
    return frozenset({subject, *(c for form in forms.values() for c in name_categories(form, lang))})


@cache
def _askable(lang: str) -> dict[str, frozenset[str]]:
    """Each COCO category named in `lang` → the categories its question can be read as."""
    return {cat: question_categories(cat, lang) for cat in wording(lang).names}


def _box_objects(scene: Scene) -> tuple[set[str], set[str], set[str]]:
    """The categories of the boxes (one category per box name), all categories their names can mean, and
    the names no table knows (lower case)."""
    present: set[str] = set()
    named: set[str] = set()
    unknown: set[str] = set()
    for box in scene.boxes:
        cats = name_categories(box.category)
        named.update(cats)
        if len(cats) == 1:
            present.add(cats[0])
        elif not cats:
            unknown.add(" ".join(box.category.lower().split()))
    return present, named, unknown


def _prose_categories(texts: Iterable[str]) -> set[str]:
    """Every category that captions or region phrases name, in English or in their own language, negated or not."""
    found: set[str] = set()
    for text in texts:
        for lang in {"en", detect_lang(text)}:
            found.update(c for m in scan(text, lang, labels=True) for c in m.entry.categories)
    return found


@dataclass(frozen=True)
class SceneObjects:
    """What one image's annotations say is there."""

    present: tuple[str, ...]   # COCO categories of its boxes, sorted
    unknown: tuple[str, ...]   # box names no table knows (Visual Genome), sorted
    named: frozenset[str]      # every category a box, caption or region names: never asked as absent


def scene_objects(scene: Scene) -> SceneObjects:
    """The present, unknown and named objects of a scene."""
    present, named, unknown = _box_objects(scene)
    named |= _prose_categories(scene.captions + [r.category for r in scene.regions])
    return SceneObjects(tuple(sorted(present)), tuple(sorted(unknown)), frozenset(named | present))


def _rank(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Cooccurrence:
    """How often COCO categories are annotated in one image, and together, over a stream of scenes.

    Memory is one count per category and per pair of categories (at most 80 and 80 × 79), whatever the
    number of images. Build it over the whole input before asking (`of`), or per shard and `merge`.
    """

    def __init__(self) -> None:
        self.images = 0
        self.counts: Counter[str] = Counter()
        self.neighbours: dict[str, Counter[str]] = {}  # category → images it shares with each other one

    @classmethod
    def of(cls, scenes: Iterable[Scene]) -> Cooccurrence:
        """The counts over `scenes`."""
        cooc = cls()
        for scene in scenes:
            cooc.add(scene)
        return cooc

    def add(self, scene: Scene) -> None:
        """Count one image's box categories."""
        self.add_categories(_box_objects(scene)[0])

    def add_categories(self, present: Iterable[str]) -> None:
        """Count one image that holds these categories."""
        cats = set(present)
        self.images += 1
        self.counts.update(cats)
        for cat in cats:
            self.neighbours.setdefault(cat, Counter()).update(cats - {cat})

    def merge(self, other: Cooccurrence) -> None:
        """Add the counts of another shard."""
        self.images += other.images
        self.counts.update(other.counts)
        for cat, counts in other.neighbours.items():
            self.neighbours.setdefault(cat, Counter()).update(counts)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every category seen in the input, sorted."""
        return tuple(sorted(self.counts))

    def together(self, a: str, b: str) -> int:
        """Images annotated with both `a` and `b`."""
        return self.neighbours.get(a, Counter())[b]

    def candidates(self, present: Iterable[str], exclude: Iterable[str]) -> list[str]:
        """The categories seen in the input, less the present and the excluded ones, sorted."""
        out = set(present) | set(exclude)
        return [c for c in self.vocabulary if c not in out]

    def adversarial(self, present: Iterable[str], exclude: Iterable[str], k: int) -> list[str]:
        """The `k` categories, not present and not excluded, annotated most often with the present ones
        (ties: the more frequent, then by name)."""
        present = set(present)
        rows = [self.neighbours[cat] for cat in present if cat in self.neighbours]
        score = {c: sum(row.get(c, 0) for row in rows) for c in self.candidates(present, exclude)}
        return heapq.nsmallest(k, score, key=lambda c: (-score[c], -self.counts[c], c))

    def random(self, present: Iterable[str], exclude: Iterable[str], k: int, seed: str) -> list[str]:
        """`k` categories, not present and not excluded, drawn one by one by a seed derived from `seed`."""
        pool = self.candidates(present, exclude)
        return [pool.pop(seeded_index(f"{seed}:random:{i}", len(pool))) for i in range(min(k, len(pool)))]

    def to_dict(self) -> dict[str, Any]:
        """The counts as plain JSON data (to ship to workers or keep beside a ledger)."""
        pairs = [[a, b, n] for a in sorted(self.neighbours) for b, n in sorted(self.neighbours[a].items()) if a < b]
        return {"images": self.images, "counts": dict(sorted(self.counts.items())), "pairs": pairs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cooccurrence:
        """The counts `to_dict` wrote."""
        cooc = cls()
        cooc.images = int(data["images"])
        cooc.counts.update({str(c): int(n) for c, n in data["counts"].items()})
        for a, b, n in data["pairs"]:
            cooc.neighbours.setdefault(str(a), Counter())[str(b)] = int(n)
            cooc.neighbours.setdefault(str(b), Counter())[str(a)] = int(n)
        return cooc


@dataclass(frozen=True)
class Ask:
    """One question to ask: about `subject` (a COCO category or an English name), whose answer is yes when
    `present`; `kind` is present, adversarial or random."""

    subject: str
    present: bool
    kind: str


def plan(scene: Scene, lang: str, seed: str, cooc: Cooccurrence, pairs: int = DEFAULT_PAIRS) -> list[Ask]:
    """The balanced questions for one image in one language, in an order seeded by `seed` ([]: none)."""
    objects, askable = scene_objects(scene), _askable(lang)
    yes = sorted((c for c in objects.present if c in askable), key=lambda c: _rank(f"{seed}:{c}"))
    yes += sorted((n for n in objects.unknown if subject_forms(n, lang)), key=lambda n: _rank(f"{seed}:{n}"))
    exclude = {c for c in cooc.counts if c not in askable or askable[c] & objects.named}
    n = min(pairs, len(yes), len(cooc.candidates(objects.present, exclude)))
    if n <= 0:
        return []
    n_adversarial = (n + seeded_index(f"{seed}:adversarial", 2)) // 2
    adversarial = cooc.adversarial(objects.present, exclude, n_adversarial)
    randoms = cooc.random(objects.present, exclude | set(adversarial), n - n_adversarial, seed)
    asks = [Ask(s, True, "present") for s in yes[:n]] + [Ask(c, False, "adversarial") for c in adversarial] \
        + [Ask(c, False, "random") for c in randoms]
    return sorted(asks, key=lambda a: _rank(f"{seed}:order:{a.subject}"))


def _say(templates: tuple[str, ...], subject: str, lang: str, key: str) -> str:
    forms = subject_forms(subject, lang) or {}  # plan() asks only about subjects that have forms
    return templates[seeded_index(f"{key}:{subject}", len(templates))].format(**forms)


def presence_pairs(scene: Scene, lang: str, unit_id: str, cooc: Cooccurrence,
                   pairs: int = DEFAULT_PAIRS) -> list[tuple[str, str]]:
    """The (question, answer) pairs of one unit, drawn by a seed from its id ([]: the image gives none)."""
    words = wording(lang)
    return [(_say(words.questions, a.subject, lang, f"{unit_id}:q"),
             _say(words.yes if a.present else words.no, a.subject, lang, f"{unit_id}:a"))
            for a in plan(scene, lang, unit_id, cooc, pairs)]


def presence_reply(scene: Scene, lang: str, unit_id: str, cooc: Cooccurrence,
                   pairs: int = DEFAULT_PAIRS) -> str | None:
    """The unit's pairs as a reply in the LLaVA `Question:` / `===` / `Answer:` layout with the language's
    labels, which `parse.parse_conversations` reads back; None when the image gives no question."""
    found = presence_pairs(scene, lang, unit_id, cooc, pairs)
    if not found:
        return None
    labels, colon = LABELS[lang], "：" if lang == "zh" else ":"
    return "\n===\n".join(f"{labels.question[0]}{colon}\n{q}\n===\n{labels.answer[0]}{colon}\n{a}" for q, a in found)
