"""`generate --executor ray`: the same runner in Ray actors, one ledger shard each, restarted when killed.

Design:
- Sharding: a unit goes to shard `int(key[:8], 16) % workers`, stable across runs. Each shard has its own
  SQLite ledger beside the main one, `<ledger>.shard-00000-of-00004.sqlite` (SQLite has one writer per file,
  so actors never share one), and an actor that builds its own teacher and runs the ordinary `Runner` over
  the shard's units. While it runs, the actor writes its process id to `<shard>.pid` (ops: which process
  works on which shard); the file is removed when the shard is done.
- Limits: split evenly, fixed per actor: each of the N actors started (shards with work to do) gets
  `concurrency // N` requests in flight (at least 1: a `--concurrency` below N gives N in all) and `rpm / N`,
  `tpm / N`; a Retry-After slows the actor that received it.
  Otherwise the sum never exceeds the global limit, and a request costs no round trip to a shared limiter actor (which
  would also be one more process whose death stalls every shard). The price: a shard that finishes early
  leaves its share unused, so near the end the run may go below the limit, never above it; shards are
  balanced by the key hash, so this tail is short.
- A killed worker: the driver sees `RayActorError` on the shard's result, starts a new actor for that shard
  (at most MAX_RESTARTS times, then a one-line UserError) and sends it the same units; the new actor skips
  every unit its ledger shard already holds as answered, so only the requests in flight at the kill (at most
  the per-actor concurrency) and the answers not yet committed (those of the last ~0.1 s, see runner.py)
  are paid twice. Run stats stay exact for answers and tokens (the new actor
  counts what the shard ledger gained this run); retries of a dead actor count as of its last progress
  report (at most POLL_S old).
- Resume: units answered in the main ledger (a local run) or in any shard file (of any `--workers`) are
  never sent (generate/stage.py looks them up as the units stream by). The units left to send stream into
  one file per shard beside its ledger, `<shard>.todo` (SPILL units per pickle, so a prompt pack is
  written once per SPILL units), which its actor (and a restarted one) reads back in chunks: neither
  the driver nor an actor holds the shard's units. The files are removed when the run ends. The output is
  assembled in the driver from all of those ledgers, in unit order, by `finish`.
- Errors: a UserError inside an actor comes back as its message and is raised in the driver as a UserError.
- Resources: an actor takes one CPU (a local Ray gets `max(2, workers)`); on a smaller cluster the extra
  shards wait for a CPU and start as others finish. On a cluster (`--ray-address`) every node needs
  visinstruct installed, and the ledger directory (and, in VLM mode, the images) on a filesystem shared at
  the same path: the actor checks that its shard file, created by the driver, is visible.
- A later `--executor local` run also skips units answered in the shard files (generate/stage.py).
- Secrets: the teacher settings travel to the actors without the API key; each actor reads it from the
  `--api-key-env` variable of its own environment (a local Ray inherits it; on a cluster, set it on the nodes).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..core.errors import UserError
from ..core.io import AtomicFile, remove_quietly, write_bytes
from ..core.report import Progress
from ..exec.ray import start_ray
from ..teachers.factory import TeacherConfig
from .ledger import CHUNK, Ledger, chunks, shard_path
from .limits import Limits
from .runner import Runner, RunStats
from .stage import GenerateOptions
from .units import Unit

MAX_RESTARTS = 3
POLL_S = 1.0
SPILL = 1000  # units per pickle in a shard's todo file


def shard_of(unit: Unit, shards: int) -> int:
    """The unit's shard: a stable hash of its key."""
    return int(unit.key[:8], 16) % shards


def spill_path(shard: Path) -> Path:
    """The file holding the units a shard is to send, beside its ledger."""
    return shard.with_name(shard.name + ".todo")


def spill(units: Iterable[Unit], paths: dict[int, Path]) -> dict[int, int]:
    """Write each shard's units to its todo file as they stream by, SPILL units per pickle (objects they share,
    such as the prompt pack, are written once per pickle); how many each shard got. On an error no todo file
    is left (each is written under a temporary name)."""
    counts = dict.fromkeys(paths, 0)
    with contextlib.ExitStack() as stack:
        files = {rank: stack.enter_context(AtomicFile(spill_path(path))) for rank, path in paths.items()}
        blocks: dict[int, list[Unit]] = {rank: [] for rank in paths}
        for unit in units:
            rank = shard_of(unit, len(paths))
            blocks[rank].append(unit)
            counts[rank] += 1
            if len(blocks[rank]) == SPILL:
                pickle.dump(blocks[rank], files[rank], protocol=5)
                blocks[rank] = []
        for rank, block in blocks.items():
            if block:
                pickle.dump(block, files[rank], protocol=5)
    return counts


def read_spill(path: Path) -> Iterator[Unit]:
    """The units of a shard's todo file, in the order written."""
    with path.open("rb") as handle:
        while True:
            try:
                block = pickle.load(handle)
            except EOFError:
                return
            yield from block


def _add(total: RunStats, more: dict[str, int] | RunStats) -> None:
    more = more if isinstance(more, dict) else asdict(more)
    for f in fields(RunStats):
        setattr(total, f.name, getattr(total, f.name) + more[f.name])


class ShardWorker:
    """One shard: its ledger, its own teacher, the ordinary Runner (a Ray async actor)."""

    def __init__(self, teacher: TeacherConfig, ledger: str, rpm: float | None, tpm: float | None,
                 retries: int, backoff: float) -> None:
        self.teacher, self.path = teacher, Path(ledger)
        self.rpm, self.tpm, self.retries, self.backoff = rpm, tpm, retries, backoff
        self.recovered = RunStats()  # answered this run by an earlier actor of this shard that died
        self.runner: Runner | None = None

    async def run(self, todo: str) -> dict[str, Any]:
        """Answer every unit of the todo file not yet answered in the shard; {"stats": ...} or {"error": ...}."""
        try:
            return {"stats": asdict(await self._run(Path(todo)))}
        except UserError as exc:
            return {"error": str(exc)}

    async def progress(self) -> dict[str, int]:
        """Run stats so far (units recovered from the shard ledger included)."""
        total = RunStats()
        _add(total, self.recovered)
        if self.runner is not None:
            _add(total, self.runner.stats)
        return asdict(total)

    def _unanswered(self, ledger: Ledger, todo: Path) -> Iterator[Unit]:
        """The todo file's units not answered in the shard ledger; those answered (by an earlier actor of
        this shard that died) are counted as recovered."""
        for chunk in chunks(read_spill(todo), CHUNK):
            entries = ledger.entries([unit.key for unit in chunk])
            for unit in chunk:
                entry = entries.get(unit.key)
                if entry is None or entry.status != "answered":
                    yield unit
                    continue
                self.recovered.answered += 1
                self.recovered.prompt_tokens += entry.prompt_tokens
                self.recovered.completion_tokens += entry.completion_tokens

    async def _run(self, todo: Path) -> RunStats:
        if not self.path.exists():
            raise UserError(f"ledger shard {self.path} is not visible on Ray node {socket.gethostname()}: "
                            "on a cluster the ledger (--ledger) must be on a filesystem that every node shares")
        pid_file = self.path.with_name(self.path.name + ".pid")
        write_bytes(pid_file, f"{os.getpid()}\n".encode(), fsync=False)
        ledger = Ledger(self.path)
        try:
            client = self.teacher.build()
            try:
                self.runner = Runner(client, ledger, Limits(self.rpm, self.tpm), self.teacher.concurrency,
                                     self.retries, self.backoff, progress=False)
                stats = await self.runner.run(self._unanswered(ledger, todo))
            finally:
                await client.close()
        finally:
            ledger.close()
            remove_quietly(pid_file)
        total = RunStats()
        _add(total, self.recovered)
        _add(total, stats)
        return total


@dataclass
class _Shard:
    """The driver's view of one shard: its units, its current actor and what it reported."""

    rank: int
    path: Path
    todo: Path  # the file of the shard's units, read again by a restarted actor
    actor: Any = None
    result: Any = None  # ObjectRef of actor.run
    poll: Any = None  # ObjectRef of actor.progress, while one is out
    restarts: int = 0
    last: dict[str, int] = field(default_factory=lambda: asdict(RunStats()))
    lost_retries: int = 0  # retries made by actors of this shard that died
    shown: int = 0  # units done, as shown in the progress display


class _Driver:
    """Starts one actor per shard, restarts dead ones, polls progress, sums the stats."""

    def __init__(self, shards: list[_Shard], teacher: TeacherConfig, opts: GenerateOptions,
                 progress: Progress) -> None:
        n = len(shards)
        self.shards, self.opts, self.progress = shards, opts, progress
        self.teacher = replace(teacher, concurrency=max(1, (teacher.concurrency or 1) // n))
        self.limits = (opts.rpm / n if opts.rpm else None, opts.tpm / n if opts.tpm else None)
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0)(ShardWorker)

    def _start(self, shard: _Shard) -> None:
        shard.actor = self.actor_class.remote(
            self.teacher, str(shard.path), *self.limits, self.opts.retries, self.opts.backoff)
        shard.result = shard.actor.run.remote(str(shard.todo))
        shard.poll = None

    def _restart(self, shard: _Shard, error: Exception) -> None:
        shard.restarts += 1
        shard.lost_retries += shard.last["retries"]
        shard.last = asdict(RunStats())
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if shard.restarts > MAX_RESTARTS:
            raise UserError(f"ledger shard {shard.path.name}: its Ray actor died {shard.restarts} times "
                            f"(last: {reason}); re-run the same command to resume")
        self._say(f"generate: the actor of shard {shard.rank} died ({reason}); restarting it "
                  f"({shard.restarts}/{MAX_RESTARTS}), it resumes from {shard.path.name}")
        ray.kill(shard.actor)
        self._start(shard)

    def _say(self, line: str) -> None:
        if self.progress.bar is not None:
            self.progress.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def _poll(self, running: list[_Shard]) -> None:
        """Read the progress reports that came back; ask again those that did."""
        out = [s.poll for s in running if s.poll is not None]
        ready = set(ray.wait(out, num_returns=len(out), timeout=0)[0]) if out else set()
        for shard in running:
            if shard.poll is not None and shard.poll in ready:
                with contextlib.suppress(RayActorError, RayTaskError):  # the result ref says what happened
                    shard.last = ray.get(shard.poll)
                shard.poll = None
            if shard.poll is None:
                shard.poll = shard.actor.progress.remote()
            done = shard.last["answered"] + shard.last["failed"]
            if done > shard.shown:
                self.progress.update(done - shard.shown)
                shard.shown = done

    def run(self) -> RunStats:
        total = RunStats()
        try:
            for shard in self.shards:
                self._start(shard)
            running = {shard.result: shard for shard in self.shards}
            while running:
                refs = list(running)
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
                for ref in ready:
                    shard = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayActorError as exc:
                        self._restart(shard, exc)
                        running[shard.result] = shard
                        continue
                    except RayTaskError as exc:
                        if isinstance(exc.cause, UserError):
                            raise UserError(str(exc.cause)) from None
                        raise
                    if "error" in result:
                        raise UserError(result["error"])
                    _add(total, result["stats"])
                    total.retries += shard.lost_retries
                    done = result["stats"]["answered"] + result["stats"]["failed"]
                    self.progress.update(max(0, done - shard.shown))
                    shard.shown = max(done, shard.shown)
                    ray.kill(shard.actor)  # frees its CPU for a shard still waiting for one
                self._poll(list(running.values()))
        finally:
            for shard in self.shards:
                if shard.actor is not None:
                    ray.kill(shard.actor)
        return total


def run_on_ray(todo: Iterable[Unit], teacher: TeacherConfig, opts: GenerateOptions) -> RunStats:
    """Answer the units not yet answered on Ray actors, one ledger shard each (the driver writes the output)."""
    workers = max(1, opts.workers)
    paths = {rank: shard_path(opts.ledger_path, rank, workers) for rank in range(workers)}
    try:
        counts = spill(todo, paths)
        ranks = [rank for rank in sorted(paths) if counts[rank]]
        if not ranks:
            return RunStats()
        for rank in ranks:  # created here, so an actor can tell a shared filesystem from a node's own
            Ledger(paths[rank]).close()
        return _run_shards([_Shard(rank, paths[rank], spill_path(paths[rank])) for rank in ranks],
                           sum(counts.values()), teacher, opts)
    finally:
        for path in paths.values():
            remove_quietly(spill_path(path))


def _run_shards(shards: list[_Shard], total: int, teacher: TeacherConfig, opts: GenerateOptions) -> RunStats:
    owns = start_ray(opts.workers, opts.ray_address)  # True: started here, so stopped here
    try:
        with Progress("generate", total=total, enabled=opts.progress, unit="req") as progress:
            return _Driver(shards, teacher, opts, progress).run()
    finally:
        if owns:
            ray.shutdown()
