"""LLaVA `conversations` ⇄ the `messages` + `images` layout LLaMA-Factory and ms-swift read.

`<image>` tokens stay where they are; ids and extra keys travel unchanged, so LLaVA → messages → LLaVA
gives back the same records (one exception: a one-element image list comes back as a plain string).
Turns, roles, texts and image paths are checked on the way: a wrong type stops the run with the record's
file:line and what is wrong, never a record written through.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UserError

TO_ROLE = {"human": "user", "gpt": "assistant", "system": "system"}
TO_FROM = {role: source for source, role in TO_ROLE.items()}


def _turns(record: dict[str, Any], key: str, role_key: str, text_key: str, roles: dict[str, str],
           where: str) -> list[dict[str, str]]:
    """`record[key]` (a list of {role_key, text_key}) mapped to the other layout, every field checked."""
    turns = record.get(key)
    if not isinstance(turns, list):
        raise UserError(f"{where}: '{key}' must be a list, got {_kind(turns)}")
    out = []
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise UserError(f"{where}: {key}[{n}] must be an object, got {_kind(turn)}")
        role, text = turn.get(role_key), turn.get(text_key)
        if role not in roles:
            raise UserError(f"{where}: {key}[{n}] has {role_key}={role!r}; expected one of {', '.join(roles)}")
        if not isinstance(text, str):
            raise UserError(f"{where}: {key}[{n}].{text_key} must be a string, got {_kind(text)}")
        out.append({"from" if key == "messages" else "role": roles[role],
                    "value" if key == "messages" else "content": text})
    return out


def _images(value: Any, key: str, where: str) -> list[str]:
    """An image path or a list of them, as a list; anything else is refused."""
    paths = value if isinstance(value, list) else [value]
    for path in paths:
        if not isinstance(path, str) or not path:
            raise UserError(f"{where}: '{key}' must be a path or a list of paths, got {path!r}")
    return paths


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def llava_to_messages(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One LLaVA record as a messages record."""
    messages = _turns(record, "conversations", "from", "value", TO_ROLE, where)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "conversations":
            out["messages"] = messages
        elif key == "image":
            if value is not None:
                out["images"] = _images(value, key, where)
        else:
            out[key] = value
    return out


def messages_to_llava(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One messages record as a LLaVA record."""
    turns = _turns(record, "messages", "role", "content", TO_FROM, where)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "messages":
            out["conversations"] = turns
        elif key == "images":
            if value:
                paths = _images(value, key, where)
                out["image"] = paths[0] if len(paths) == 1 else paths
        else:
            out[key] = value
    return out
