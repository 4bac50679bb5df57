"""Reject reasons from a rejects file: `filter`'s (records with `reject_stage` and `reject_reason`) or
`generate`'s (units with `status` and `reason`). Reasons are grouped by stage and a short reason code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .inputs import read_input
from .tally import CappedCounter

CODE_CHARS = 80


def reason_code(reason: str) -> str:
    """The part of a reason that names its kind: before the first `:` (filter's `code: detail`), numbers and
    boxes replaced by `#` (generate's free-text reasons), cut to CODE_CHARS characters."""
    code = reason.split(":", 1)[0].strip() or reason.strip()
    code = re.sub(r"\[[^\]]*\]", "[#]", code)
    code = re.sub(r"\d+(\.\d+)?", "#", code)
    return code if len(code) <= CODE_CHARS else code[: CODE_CHARS - 1] + "…"


def reject_key(row: Any) -> str:
    """`stage: code` for one row of a rejects file."""
    if not isinstance(row, dict):
        return "(not an object)"
    if isinstance(row.get("reject_reason"), str):
        return f"{row.get('reject_stage') or 'filter'}: {reason_code(row['reject_reason'])}"
    if isinstance(row.get("reason"), str):
        return f"generate {row.get('status') or 'rejected'}: {reason_code(row['reason'])}"
    return "(no reason given)"


def read_rejects(path: Path) -> dict[str, Any]:
    """Counts of reject reasons in one rejects file (json or jsonl), streamed."""
    if path.is_dir() or path.suffix.lower() not in (".json", ".jsonl"):
        raise UserError(f"{path}: --rejects expects a .json or .jsonl file of rejected records")
    if not path.exists():
        raise UserError(f"{path}: file not found (--rejects)")
    reasons, total = CappedCounter(500), 0
    for _, row in read_input(path):
        reasons.add(reject_key(row))
        total += 1
    return {"file": str(path), "rejected": total, "by_reason": reasons.as_dict()}
