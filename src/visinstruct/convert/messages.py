"""LLaVA `conversations` ⇄ the `messages` + `images` layout LLaMA-Factory and ms-swift read.

`<image>` tokens stay where they are; ids and extra keys travel unchanged, so LLaVA → messages → LLaVA
gives back the same records (one exception: a one-element image list comes back as a plain string).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UserError

TO_ROLE = {"human": "user", "gpt": "assistant", "system": "system"}
TO_FROM = {role: source for source, role in TO_ROLE.items()}


def llava_to_messages(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One LLaVA record as a messages record."""
    try:
        messages = [{"role": TO_ROLE[t["from"]], "content": t["value"]} for t in record["conversations"]]
    except (KeyError, TypeError):
        raise UserError(f"{where}: turns need 'from' (human, gpt or system) and 'value'") from None
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "conversations":
            out["messages"] = messages
        elif key == "image":
            out["images"] = value if isinstance(value, list) else [value]
        else:
            out[key] = value
    return out


def messages_to_llava(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One messages record as a LLaVA record."""
    try:
        turns = [{"from": TO_FROM[m["role"]], "value": m["content"]} for m in record["messages"]]
    except (KeyError, TypeError):
        raise UserError(f"{where}: messages need 'role' (user, assistant or system) and string 'content'") from None
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "messages":
            out["conversations"] = turns
        elif key == "images":
            if value:
                out["image"] = value[0] if len(value) == 1 else value
        else:
            out[key] = value
    return out
