"""A record read the way one target's loader reads it: where the turns are, their roles and texts, its images.

Whatever the loader could not read at all comes back as problems (`not_a_record`, `layout`, `bad_turn`,
`bad_role`, `image_field`) instead of a Shape part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .targets import Target

Problem = tuple[str, str]  # (kind, detail)
CONTAINERS = ("conversations", "messages", "conversation")


@dataclass(slots=True)
class Turn:
    """One turn: its role mapped to user / assistant / system, the role as written, its text."""

    role: str
    written: str
    value: str


@dataclass
class Shape:
    """The readable parts of a record. `turns` is None when a turn could not be read; `images` is None when
    the image field could not be read."""

    container: str
    keys: tuple[str, str]
    turns: list[Turn] | None
    image_key: str | None
    images: list[str] | None = field(default_factory=list)

    @property
    def layout(self) -> str:
        return f"{self.container} ({self.keys[0]}/{self.keys[1]})"


JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
              dict: "an object"}


def _kind(value: Any) -> str:
    """The JSON type of `value`, with its article."""
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def _container(record: dict[str, Any], target: Target) -> tuple[str | None, Problem | None]:
    for key in target.containers:
        if key in record:
            turns = record[key]
            if not isinstance(turns, list):
                return None, ("layout", f"'{key}' is {_kind(turns)}, not a list of turns")
            if not turns:
                return None, ("layout", f"'{key}' is empty: no turns")
            return key, None
    other = [key for key in CONTAINERS if key in record]
    if other:
        return None, ("layout", f"the turns are under '{other[0]}'; {target.trainer} reads "
                                f"'{target.containers[0]}' (visinstruct convert changes the layout)")
    return None, ("layout", f"no '{target.containers[0]}' list of turns")


def _keys(turns: list[Any], target: Target) -> tuple[tuple[str, str] | None, Problem | None]:
    first = next((t for t in turns if isinstance(t, dict)), None)
    if first is None:
        return None, ("bad_turn", "no turn is an object")
    for keys in target.key_pairs:
        if keys[0] in first:
            return keys, None
    wanted = " or ".join(f"'{k[0]}'/'{k[1]}'" for k in target.key_pairs)
    found = next((k for k in (("from", "value"), ("role", "content")) if k[0] in first), None)
    if found:
        return None, ("layout", f"turns use '{found[0]}'/'{found[1]}'; {target.trainer} reads {wanted}")
    return None, ("bad_turn", f"turn 0 has neither {wanted}: keys {sorted(first)[:5]}")


def _turns(turns: list[Any], keys: tuple[str, str], target: Target, problems: list[Problem]) -> list[Turn] | None:
    roles = target.roles[keys]
    out, readable = [], True
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            problems.append(("bad_turn", f"turn {n} is {_kind(turn)}, not an object"))
            readable = False
            continue
        written, value = turn.get(keys[0]), turn.get(keys[1])
        if not isinstance(written, str) or not isinstance(value, str):
            bad = keys[0] if not isinstance(written, str) else keys[1]
            problems.append(("bad_turn", f"turn {n}: '{bad}' is {_kind(turn.get(bad))}, not a string"))
            readable = False
            continue
        role = roles.get(written, "")
        if not role:
            known = ", ".join(r for r in roles if roles[r] != "system")
            problems.append(("bad_role", f"turn {n} has {keys[0]}={written!r}; {target.name} reads {known}"))
        elif role == "system" and n > 0:
            problems.append(("bad_role", f"turn {n} is a system turn; only the first turn may be one"))
        out.append(Turn(role, written, value))
    return out if readable else None


def _image_list(value: Any, key: str, target: Target) -> tuple[list[str] | None, Problem | None]:
    if value is None or value == []:
        if target.no_image_values:
            return [], None
        return None, ("image_field", f"'{key}' is {value!r}: {target.trainer} opens the image of every row "
                                     f"that has the key (leave the key out for a text-only row)")
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not target.multi_image:
        return None, ("image_field", f"'{key}' is a list of {len(value)}; {target.trainer} reads one path")
    paths = []
    for item in items:
        if isinstance(item, dict) and target.no_image_values:
            item = item.get("path")
        if not isinstance(item, str) or not item:
            return None, ("image_field", f"'{key}' holds {item!r}, not a path")
        paths.append(item)
    return paths, None


def _images(record: dict[str, Any], target: Target) -> tuple[str | None, list[str] | None, Problem | None]:
    key = next((k for k in target.image_keys if k in record), None)
    if key is None:
        other = next((k for k in ("images", "image") if k in record and record[k] not in (None, [])), None)
        if other:
            return None, None, ("image_field", f"the images are under '{other}'; {target.trainer} reads "
                                               f"'{target.image_keys[0]}'")
        return None, [], None
    images, problem = _image_list(record[key], key, target)
    return key, images, problem


def read_shape(record: Any, target: Target) -> tuple[Shape | None, list[Problem]]:
    """The record as `target` reads it, and what it cannot read."""
    if not isinstance(record, dict):
        return None, [("not_a_record", f"the row is {_kind(record)}, not an object")]
    container, problem = _container(record, target)
    if problem:
        return None, [problem]
    keys, problem = _keys(record[container], target)
    if problem:
        return None, [problem]
    problems: list[Problem] = []
    turns = _turns(record[container], keys, target, problems)
    image_key, images, problem = _images(record, target)
    if problem:
        problems.append(problem)
    return Shape(container, keys, turns, image_key, images), problems
