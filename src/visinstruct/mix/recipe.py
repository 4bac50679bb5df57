"""The mix recipe: LLaVA-NeXT's data YAML as it is (`datasets:`, each a `json_path` and a `sampling_strategy`)
plus optional keys. It is read as a YAML node tree so that every problem names the recipe file and line;
every path is checked here, before anything is read or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.errors import UserError
from ..core.io import decode_utf8
from ..core.phash import MAX_DISTANCE
from .sources import SourceFile, source_files
from .strategy import Strategy, parse_strategy

TOP_KEYS = ("datasets", "seed", "image_root", "total", "exclude_images_of", "dedup", "image_match",
            "phash_distance")
SOURCE_KEYS = ("json_path", "sampling_strategy", "name", "image_root", "count", "weight", "seed")
EXCLUDE_KEYS = ("path", "image_root")
DEDUP = ("text", "image", "both")
MATCH = ("path", "phash", "both")


@dataclass
class SourceSpec:
    """One `datasets:` entry."""

    name: str
    path: Path
    files: list[SourceFile]
    strategy: Strategy
    line: int
    image_root: Path | None = None
    count: int | None = None
    weight: float | None = None
    seed: int = 0


@dataclass
class ExcludeSpec:
    """One `exclude_images_of:` entry: records (json, jsonl, parquet, a folder of them) or an image folder."""

    path: Path
    line: int
    files: list[SourceFile] = field(default_factory=list)  # empty: an image folder
    image_root: Path | None = None


@dataclass
class Recipe:
    """A whole recipe, paths resolved against the recipe's folder."""

    path: Path
    sources: list[SourceSpec]
    seed: int = 0
    image_root: Path | None = None
    total: int | None = None
    exclude: list[ExcludeSpec] = field(default_factory=list)
    dedup: str | None = None
    image_match: str = "both"
    phash_distance: int = 4
    lines: dict[str, int] = field(default_factory=dict)  # top-level key → line

    def where(self, key: str) -> str:
        """`recipe.yaml:LINE` of a top-level key."""
        return f"{self.path}:{self.lines.get(key, 1)}"

    @property
    def uses_phash(self) -> bool:
        """Whether images will be hashed: exclusion or image dedup, with perceptual matching on."""
        return self.image_match != "path" and (bool(self.exclude) or self.dedup in ("image", "both"))


class _Reader:
    """Turns YAML nodes into checked values; every error is `recipe:line: problem`."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.recipe, self.yaml = path, yaml
        self.loader = yaml.SafeLoader("")

    def fail(self, node: Any, problem: str) -> UserError:
        return UserError(f"{self.recipe}:{node.start_mark.line + 1}: {problem}")

    def value(self, node: Any) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: Any, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
        """key → (key node, value node), refusing unknown and repeated keys."""
        if not isinstance(node, self.yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines)")
        found: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if key not in allowed:
                raise self.fail(key_node, f"unknown key {key!r} in {what}; known: {', '.join(allowed)}")
            if key in found:
                raise self.fail(key_node, f"{key!r} given twice in {what}")
            found[key] = (key_node, value_node)
        return found

    def text(self, node: Any, key: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{key} must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, node: Any, key: str, low: int = 0, high: int | None = None) -> int:
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.fail(node, f"{key} must be a whole number {bound}, got {value!r}")
        return value

    def choice(self, node: Any, key: str, choices: tuple[str, ...]) -> str:
        value = self.value(node)
        if value not in choices:
            raise self.fail(node, f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def path(self, node: Any, key: str) -> Path:
        """An absolute path; relative ones are relative to the recipe's folder."""
        return Path(os.path.abspath(self.recipe.parent / os.path.expanduser(self.text(node, key))))

    def folder(self, node: Any, key: str) -> Path:
        path = self.path(node, key)
        if not path.is_dir():
            raise self.fail(node, f"{key} {path}: {'not a folder' if path.exists() else 'not found'}")
        return path

    def files(self, node: Any, key: str) -> list[SourceFile]:
        path = self.path(node, key)
        try:
            return source_files(path)
        except UserError as exc:
            raise self.fail(node, f"{key}: {exc}") from None


def load_recipe(path: Path) -> Recipe:
    """Parse and check a recipe file: keys, types, strategies, and that every named file and folder exists."""
    require("filter", "visinstruct mix (the recipe is YAML)", ("yaml",))
    import yaml

    try:
        text = decode_utf8(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: recipe not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML ({problem})") from None
    if root is None:
        raise UserError(f"{path}:1: the recipe is empty; it needs a `datasets:` list")
    return _recipe(_Reader(path), root)


def _recipe(reader: _Reader, root: Any) -> Recipe:
    top = reader.mapping(root, "the recipe", TOP_KEYS)
    if "datasets" not in top:
        raise reader.fail(root, "the recipe has no `datasets:` list")
    recipe = Recipe(reader.recipe, [], lines={key: k.start_mark.line + 1 for key, (k, _) in top.items()})
    values = {key: value for key, (_, value) in top.items()}
    if "seed" in values:
        recipe.seed = reader.integer(values["seed"], "seed")
    if "image_root" in values:
        recipe.image_root = reader.folder(values["image_root"], "image_root")
    if "total" in values:
        recipe.total = reader.integer(values["total"], "total")
    if "dedup" in values and reader.value(values["dedup"]) not in (None, False, "none"):
        recipe.dedup = reader.choice(values["dedup"], "dedup", DEDUP)
    if "image_match" in values:
        recipe.image_match = reader.choice(values["image_match"], "image_match", MATCH)
    if "phash_distance" in values:
        recipe.phash_distance = reader.integer(values["phash_distance"], "phash_distance", 0, MAX_DISTANCE)
    recipe.sources = _sources(reader, values["datasets"], recipe)
    if "exclude_images_of" in values:
        recipe.exclude = _excludes(reader, values["exclude_images_of"])
    _check_targets(reader, recipe, top)
    if recipe.uses_phash:
        require("filter", "matching images by perceptual hash (image_match: path needs nothing)", ("imagehash",))
    return recipe


def _items(reader: _Reader, node: Any, key: str) -> list[Any]:
    if not isinstance(node, reader.yaml.SequenceNode) or not node.value:
        raise reader.fail(node, f"{key} must be a non-empty list (lines starting with '- ')")
    return node.value


def _sources(reader: _Reader, node: Any, recipe: Recipe) -> list[SourceSpec]:
    sources, names = [], set()
    for item in _items(reader, node, "datasets"):
        entry = reader.mapping(item, "a datasets entry", SOURCE_KEYS)
        if "json_path" not in entry:
            raise reader.fail(item, "this datasets entry has no json_path")
        path_node = entry["json_path"][1]
        files = reader.files(path_node, "json_path")
        strategy = Strategy("all")
        if "sampling_strategy" in entry:
            strategy_node = entry["sampling_strategy"][1]
            try:
                strategy = parse_strategy(reader.text(strategy_node, "sampling_strategy"))
            except ValueError as exc:
                raise reader.fail(strategy_node, str(exc)) from None
        path = reader.path(path_node, "json_path")
        spec = SourceSpec(_name(reader, entry, path, names), path, files, strategy, item.start_mark.line + 1,
                          seed=recipe.seed)
        names.add(spec.name)
        if "image_root" in entry:
            spec.image_root = reader.folder(entry["image_root"][1], "image_root")
        if "seed" in entry:
            spec.seed = reader.integer(entry["seed"][1], "seed")
        if "count" in entry:
            spec.count = reader.integer(entry["count"][1], "count")
        if "weight" in entry:
            spec.weight = _weight(reader, entry["weight"][1])
        if spec.count is not None and spec.weight is not None:
            raise reader.fail(entry["weight"][0], "give count or weight, not both")
        sources.append(spec)
    return sources


def _name(reader: _Reader, entry: dict[str, tuple[Any, Any]], path: Path, taken: set[str]) -> str:
    """The `name`, or the file's stem made unique (`stem`, `stem-2`, …) when not given."""
    if "name" in entry:
        name = reader.text(entry["name"][1], "name")
        if name in taken:
            raise reader.fail(entry["name"][1], f"name {name!r} is used by an earlier source; names must differ")
        return name
    stem = path.name[: -len(path.suffix)] if path.suffix and path.is_file() else path.name
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name


def _weight(reader: _Reader, node: Any) -> float:
    value = reader.value(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise reader.fail(node, f"weight must be a positive number, got {value!r}")
    return float(value)


def _excludes(reader: _Reader, node: Any) -> list[ExcludeSpec]:
    found = []
    for item in _items(reader, node, "exclude_images_of"):
        if isinstance(item, reader.yaml.ScalarNode):
            entry = {"path": (item, item)}
        else:
            entry = reader.mapping(item, "an exclude_images_of entry", EXCLUDE_KEYS)
            if "path" not in entry:
                raise reader.fail(item, "this exclude_images_of entry has no path")
        path_node = entry["path"][1]
        path = reader.path(path_node, "path")
        if not path.exists():
            raise reader.fail(path_node, f"path {path}: not found")
        spec = ExcludeSpec(path, item.start_mark.line + 1)
        if "image_root" in entry:
            spec.image_root = reader.folder(entry["image_root"][1], "image_root")
        if path.is_file() or any(f.suffix.lower() in (".json", ".jsonl", ".parquet") for f in path.rglob("*")):
            spec.files = reader.files(path_node, "path")
        found.append(spec)
    return found


def _check_targets(reader: _Reader, recipe: Recipe, top: dict[str, tuple[Any, Any]]) -> None:
    weighted = [s for s in recipe.sources if s.weight is not None]
    if weighted and recipe.total is None:
        raise UserError(f"{recipe.path}:{weighted[0].line}: weight needs a top-level `total:` (the mixture's "
                        "size, shared out by weight after the other sources' rows)")
    if recipe.total is not None and not weighted:
        raise reader.fail(top["total"][0], "total is only used with weight: give at least one source a weight")
