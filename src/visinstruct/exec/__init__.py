"""Executors: run a pipeline of steps locally (processes) or on a Ray cluster, with the same output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..core.deps import require
from ..core.errors import UserError
from ..core.inputs import Split
from ..core.report import Tally
from ..core.step import Item, Step

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs steps over splits; yields every item (rejected ones too) in input order."""

    name: str
    workers: int

    def run(self, splits: list[Split], steps: list[Step], tally: Tally) -> Iterator[Item]: ...


def make_executor(name: str, workers: int = 1, address: str | None = None) -> Executor:
    """`local` (the default) or `ray` (needs the 'ray' extra; `address` joins a cluster, else a local Ray)."""
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(workers)
    if name == "ray":
        require("ray", "--executor ray")
        from .ray import RayExecutor

        return RayExecutor(workers, address)
    raise UserError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
