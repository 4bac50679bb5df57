"""`--fix`: a corrected copy of a record, only where there is one obvious correction. Everything else is
copied unchanged (and stays reported). The corrections, in the order they are made:

- image_field: `"image": null` or `[]` is removed (a text-only row) for the LLaVA loaders, which open the
  image of every row that has the key; a one-element list becomes the path for LLaVA; `images` is renamed
  `image` for the LLaVA loaders when the record has no `image`;
- first_turn: an opening answer turn is dropped (LLaVA and LLaVA-NeXT skip it themselves) when it holds no
  `<image>` and a question and an answer remain;
- last_turn: a trailing question is dropped when it holds no `<image>` and an exchange remains;
- empty_value: an exchange (question + answer) with an empty or whitespace-only side is dropped when
  neither holds `<image>` and another exchange remains;
- image_token_added: one image and no `<image>` anywhere: `<image>\\n` is put at the start of the first
  human turn (where LLaVA's train split puts it);
- image_token_moved (LLaVA, LLaVA-NeXT): one image and its token(s) in one turn, not at the start of the
  first human turn: the token is removed there and put at the start of the first human turn, as
  `<image>\\n` (what preprocess_multimodal does inside a turn); not when that would leave a turn empty.

Order and alternation faults other than those (two questions in a row, an unknown role), a token count
that does not match several images, and missing or unreadable images have no single right answer: they
are left as they are.
"""

from __future__ import annotations

from typing import Any

from ..core.records import IMAGE_TOKEN
from .shape import read_shape
from .targets import Target

FIXES = {
    "image_field": "normalised the image field",
    "first_turn": "dropped an opening answer turn",
    "last_turn": "dropped a trailing question",
    "empty_value": "dropped an exchange with an empty turn",
    "image_token_added": "added <image> at the start of the first human turn",
    "image_token_moved": "moved <image> to the start of the first human turn",
}


def _fix_image_field(record: dict[str, Any], target: Target, done: list[str]) -> dict[str, Any]:
    if target.no_image_values:
        return record
    if "image" not in record and "images" in record:
        record = {("image" if key == "images" else key): value for key, value in record.items()}
        done.append("image_field")
    value = record.get("image", 0)
    if value is None or value == []:
        record = {key: v for key, v in record.items() if key != "image"}
        done.append("image_field")
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and not target.multi_image:
        record = {**record, "image": value[0]}
        done.append("image_field")
    return record


def _alternating(roles: list[str], start: int) -> bool:
    return all(role == ("user" if (n - start) % 2 == 0 else "assistant") for n, role in enumerate(roles) if n >= start)


def _fix_order(turns: list[dict[str, Any]], roles: list[str], text: str, done: list[str]) -> None:
    def holds(n: int) -> bool:
        return IMAGE_TOKEN in turns[n][text]

    def empty(n: int) -> bool:
        return not turns[n][text].strip()

    start = 1 if roles and roles[0] == "system" else 0
    if roles[start:start + 1] == ["assistant"] and len(roles) - start >= 3 and not holds(start):
        del turns[start], roles[start]
        done.append("first_turn")
    if not _alternating(roles, start):
        return
    if len(roles) - start >= 3 and roles[-1] == "user" and not holds(len(roles) - 1):
        turns.pop()
        roles.pop()
        done.append("last_turn")
    pairs = list(range(start, len(roles) - 1, 2))
    bad = [n for n in pairs if (empty(n) or empty(n + 1)) and not holds(n) and not holds(n + 1)]
    if bad and len(bad) < len(pairs):
        for n in reversed(bad):
            del turns[n:n + 2], roles[n:n + 2]
        done.append("empty_value")


def _fix_token(turns: list[dict[str, Any]], roles: list[str], text: str, target: Target, done: list[str]) -> None:
    first = next((n for n, role in enumerate(roles) if role == "user"), None)
    if first is None:
        return
    counts = [turn[text].count(IMAGE_TOKEN) for turn in turns]
    holding = [n for n, count in enumerate(counts) if count]
    if not holding:
        turns[first][text] = f"{IMAGE_TOKEN}\n{turns[first][text]}"
        done.append("image_token_added")
        return
    if not target.token_at_start or len(holding) != 1:
        return
    at = holding[0]
    if (counts[at] > 1 and not target.collapse_per_turn) or (
            at == first and counts[at] == 1 and turns[at][text].startswith(IMAGE_TOKEN)):
        return
    rest = turns[at][text].replace(IMAGE_TOKEN, "").strip()
    if at != first and not rest:
        return
    turns[at][text] = rest
    turns[first][text] = f"{IMAGE_TOKEN}\n{turns[first][text].strip()}"
    done.append("image_token_moved")


def fix_record(record: Any, target: Target) -> tuple[Any, list[str]]:
    """The record corrected for `target` where the correction is unambiguous, and the fixes made."""
    if not isinstance(record, dict):
        return record, []
    done: list[str] = []
    if read_shape(record, target)[0] is None:
        return record, done  # not in a layout this target reads: nothing here is obvious
    record = _fix_image_field(record, target, done)
    shape, _ = read_shape(record, target)
    if shape is None or shape.turns is None or any(not turn.role for turn in shape.turns):
        return record, done
    turns = [dict(turn) for turn in record[shape.container]]
    roles = [turn.role for turn in shape.turns]
    before = len(done)
    _fix_order(turns, roles, shape.keys[1], done)
    if shape.images is not None and len(shape.images) == 1:
        _fix_token(turns, roles, shape.keys[1], target, done)
    if len(done) > before:
        record = {**record, shape.container: turns}
    return record, done
