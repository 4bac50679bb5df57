"""`generate --batch`: the units go to the teacher's Batch API (`/v1/files` + `/v1/batches`, as OpenAI and
vLLM serve it) at its lower price, and every reply lands in the ledger as the online path puts it there.

Why a kill at any moment neither loses a unit nor submits one twice:
1. Units not answered and not waiting in a batch are written to a batch input file beside the ledger (JSONL,
   at most `max_requests` lines and `max_bytes`). Each is first stored in the ledger as failed ("not yet
   submitted"), so a run killed here simply sends it again later.
2. The file is uploaded. Then ONE ledger transaction adds the batch row (`uploaded`, with the input file id)
   and marks the file's units `submitted` in it: from that commit on, no later run puts them in a new file.
3. The batch is created and its id stored. A row still `uploaded` without an id (killed in between, or the
   create's answer was lost) is settled on the next start: a listed batch with that input file is adopted,
   else the batch is created then. A failed create is retried the same way, so a retry never doubles it.
4. Batches are polled until they end; their output and error files are read into the ledger line by line
   (an answer, or a failure with the server's message), and units that got no line are failed, so a later
   run resubmits them. A unit already answered (say, by an online run meanwhile) is left as it is.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..core.errors import UserError
from ..core.io import RecordWriter, remove_quietly
from ..teachers.base import Reply, TeacherError
from .batch_api import ENDPOINT, BatchAPI, CreateRefused
from .budget import Budget
from .ledger import Ledger, chunks
from .runner import RunStats
from .units import Unit
from .vlm import ImageError

MAX_REQUESTS = 50_000  # OpenAI's limit per batch input file
MAX_BYTES = 190_000_000  # under OpenAI's 200 MB per file
ENDED = ("completed", "failed", "expired", "cancelled")
FEED = 1000  # units looked up in the ledger (and stored) at a time
COMMIT_EVERY = 1000  # result lines recorded per ledger transaction


@dataclass
class BatchOptions:
    """How `generate --batch` runs: submit, wait and collect; or only submit; or only collect."""

    submit_only: bool = False  # --batch-submit-only: submit, print the batch ids, write no output
    collect: bool = False  # --batch-collect: submit nothing new; wait for the ledger's batches, collect
    poll: float = 60.0  # seconds between two looks at the batches
    max_requests: int = MAX_REQUESTS  # requests per input file
    max_bytes: int = MAX_BYTES  # bytes per input file
    discount: float = 0.5  # the share of the online price a batch costs (cost report and budget)

    def __post_init__(self) -> None:
        if self.submit_only and self.collect:
            raise UserError("give --batch-submit-only or --batch-collect, not both")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise UserError(f"--batch-max-requests must be between 1 and {MAX_REQUESTS:,}, got {self.max_requests}")
        if self.poll <= 0 or self.discount < 0 or self.max_bytes <= 0:
            raise UserError("--batch-poll must be above 0 and --batch-discount at least 0")


def check(opts: Any, embedded: bool) -> None:
    """Refuse what batch mode cannot do, before anything is read or sent."""
    if embedded:
        raise UserError("--batch needs a server with a Batch API (--base-url, --model): the embedded teacher "
                        "answers online only")
    if opts.executor == "ray":
        raise UserError("--batch runs on the local executor (the server does the batching): drop --executor ray")


@dataclass
class Draft:
    """A batch input file being written: its path, the keys in it, its size and the budget it holds."""

    path: Path
    writer: RecordWriter
    keys: list[str]
    seen: set[str] = field(default_factory=set)
    size: int = 0
    prompt: int = 0  # estimated prompt tokens of its units
    completion: int = 0  # their max tokens

    @classmethod
    def open(cls, path: Path) -> Draft:
        writer = RecordWriter(path)
        writer.__enter__()
        return cls(path, writer, [])

    def __contains__(self, key: str) -> bool:
        return key in self.seen

    def fits(self, line: bytes, opts: BatchOptions) -> bool:
        return not self.keys or (len(self.keys) < opts.max_requests and self.size + len(line) + 1 <= opts.max_bytes)

    def add(self, unit: Unit, line: bytes) -> None:
        self.writer.write_raw(line)
        self.keys.append(unit.key)
        self.seen.add(unit.key)
        self.size += len(line) + 1
        self.prompt += unit.prompt_estimate
        self.completion += unit.request["max_tokens"]

    def close(self, error: BaseException | None = None) -> None:
        self.writer.__exit__(type(error) if error else None, error, None)


def batch_line(key: str, body: dict[str, Any]) -> bytes:
    """One request of a batch input file."""
    return orjson.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body})


class BatchRun:
    """One `generate --batch` run over a ledger: settle, submit, wait, collect."""

    def __init__(self, api: BatchAPI, ledger: Ledger, opts: BatchOptions, budget: Budget | None,
                 progress: bool, stream: TextIO) -> None:
        self.api, self.ledger, self.opts = api, ledger, opts
        self.budget, self.progress, self.stream = budget, progress, stream
        self.stats = RunStats()
        self.new: list[str] = []  # batch ids created this run
        self.draft: Draft | None = None  # the input file being written
        self.scratch = ledger.path.with_name(ledger.path.name + ".batch-input.jsonl")
        self.results = ledger.path.with_name(ledger.path.name + ".batch-results.jsonl")

    async def run(self, units: Iterable[Unit]) -> RunStats:
        """Settle batches left uploaded, collect those that ended, submit (unless --batch-collect), then wait
        for every batch of the ledger and collect it (unless --batch-submit-only)."""
        self._reserve_live()
        if self.opts.collect and not self.ledger.open_batches():
            self._say(f"generate: no batch waits in {self.ledger.path}: nothing to collect", always=True)
        for row in self.ledger.open_batches(created=False):
            await self._create(row[0], look_first=True)
        await self._look()
        if not self.opts.collect:
            await self._submit(units)
        while not self.opts.submit_only and self.ledger.open_batches():
            await asyncio.sleep(self.opts.poll)
            await self._look()
        return self.stats

    # ---- the budget ------------------------------------------------------------------------------------
    def _reserve_live(self) -> None:
        """Units waiting in batches count against the budget at their most until they are collected."""
        if self.budget is None:
            return
        for _, _, _, detail in self.ledger.open_batches():
            prompt, completion = orjson.loads(detail)["estimate"]
            self.budget.reserved_tokens += prompt + completion
            self.budget.reserved_cost += self.budget.cost(prompt, completion)

    # ---- submitting -------------------------------------------------------------------------------------
    async def _submit(self, units: Iterable[Unit]) -> None:
        """Put every unit not waiting in a batch into new batch files, as far as the budget allows."""
        try:
            for chunk in chunks(units, FEED):
                admitted, capped = self._admitted(self._answer_locally(chunk))
                shipped: set[str] = set()  # keys submitted since this chunk was looked up in the ledger
                for unit in self._stored(admitted):
                    await self._add(unit, shipped)
                if capped:
                    break
            if self.draft is not None:
                await self._ship(set())
        except BaseException as error:
            if self.draft is not None:
                self.draft.close(error)
                self.draft = None
            raise
        finally:
            remove_quietly(self.scratch)
        self._say_submitted()

    def _answer_locally(self, chunk: list[Unit]) -> list[Unit]:
        """Units made without a teacher (presence) are recorded here, never put in a batch file; the rest."""
        rest = []
        for unit in chunk:
            if unit.local_reply is None:
                rest.append(unit)
                continue
            self.ledger.record_answer(unit.key, unit.unit_id, unit.request, unit.local_reply, "stop", 0, 0, 0)
            self.stats.answered += 1
        return rest

    async def _add(self, unit: Unit, shipped: set[str]) -> None:
        """Write the unit into the current file; ship the file first when the unit would not fit."""
        if unit.key in shipped or (self.draft is not None and unit.key in self.draft):
            return  # the same request twice in the input: it is sent once
        line = self._line(unit)
        if line is None:
            return
        if self.draft is not None and not self.draft.fits(line, self.opts):
            await self._ship(shipped)
        self.draft = self.draft or Draft.open(self.scratch)
        self.draft.add(unit, line)

    def _admitted(self, chunk: list[Unit]) -> tuple[list[Unit], bool]:
        """The chunk's units not waiting in a batch, up to the budget; and whether the budget stopped them."""
        waiting = self.ledger.keys_among([u.key for u in chunk], "submitted")
        admitted = []
        for unit in chunk:
            if unit.key in waiting:
                continue
            if self.budget is not None and not self.budget.admit(unit.prompt_estimate, unit.request["max_tokens"]):
                return admitted, True
            admitted.append(unit)
        return admitted, False

    def _stored(self, units: list[Unit]) -> list[Unit]:
        """Store the units (failed, "not yet submitted") so that marking them submitted is one UPDATE."""
        with self.ledger.transaction():
            for unit in units:
                self.ledger.record_failure(unit.key, unit.unit_id, unit.request,
                                           "not submitted: the run stopped while preparing its batch", 0)
        return units

    def _line(self, unit: Unit) -> bytes | None:
        """The unit's request line (with the image's data URL in VLM mode); None when its image is bad."""
        if unit.info.file is None:
            return batch_line(unit.key, unit.request)
        try:
            return batch_line(unit.key, unit.with_image())
        except ImageError as error:
            self.ledger.record_failure(unit.key, unit.unit_id, unit.request, f"bad image {unit.info.file}: {error}", 0)
            self.stats.failed += 1
            self.stats.bad_images += 1
            if self.budget is not None:
                self.budget.settle(unit.prompt_estimate, unit.request["max_tokens"], 0, 0)
            return None

    async def _ship(self, shipped: set[str]) -> None:
        """Upload the finished file, record it with its units, then create its batch."""
        draft, self.draft = self.draft, None
        draft.close()
        shipped.update(draft.keys)
        input_file = await self.api.upload(draft.path)
        remove_quietly(draft.path)
        self.ledger.add_batch(input_file, draft.keys, (draft.prompt, draft.completion),
                              f"waiting in a batch (input file {input_file}); collect it with --batch-collect")
        batch = await self._create(input_file, look_first=False)
        if batch is None:
            return
        self.new.append(batch["id"])
        self._say(f"generate: batch {batch['id']} submitted: {len(draft.keys):,} requests "
                  f"(input file {input_file})")

    async def _create(self, input_file: str, look_first: bool) -> dict[str, Any] | None:
        """Adopt or create the batch of an uploaded file; a refusal for good releases its units (None)."""
        try:
            batch = await self.api.ensure(input_file, look_first)
        except CreateRefused as refused:
            reason = self.api._scrub(f"the server refused the batch of input file {input_file}: {refused}")
            self.ledger.end_batch(input_file, reason)
            self._say(f"generate: {reason}; its units are failed and go into a new batch on the next run",
                      always=True)
            return None
        self.ledger.batch_state(input_file, batch.get("status") or "validating", batch["id"])
        return batch

    def _say_submitted(self) -> None:
        waiting = self.ledger.open_batches()
        ids = ", ".join(row[1] or row[0] for row in waiting) or "none"
        self._say(f"generate: {len(self.new)} new batch{'es' if len(self.new) != 1 else ''} this run; "
                  f"{len(waiting)} waiting: {ids}", always=self.opts.submit_only)

    # ---- waiting and collecting -------------------------------------------------------------------------
    async def _look(self) -> None:
        """Read each waiting batch's state; collect those that ended; one progress line."""
        seen: list[dict[str, Any]] = []
        for input_file, batch_id, _, _ in self.ledger.open_batches(created=True):
            batch = await self.api.get(batch_id)
            seen.append(batch)
            status = batch.get("status") or "unknown"
            self.ledger.batch_state(input_file, status, counts=batch.get("request_counts"))
            if status in ENDED:
                await self._collect(input_file, batch)
        if seen:
            self._say(_progress_line(seen))

    async def _collect(self, input_file: str, batch: dict[str, Any]) -> None:
        """Record the batch's output and error lines; units it did not answer are failed."""
        batch_id, status = batch["id"], batch["status"]
        used = [0, 0]
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                try:
                    await self.api.download(file_id, self.results)
                    self._record_file(batch_id, input_file, used)
                finally:
                    remove_quietly(self.results)
        why = f"not answered in batch {batch_id} ({status}{_errors(batch)})"
        missed, estimate = self.ledger.end_batch(input_file, why)
        self.stats.failed += missed
        if self.budget is not None:
            self.budget.settle(*estimate, *used)
        self._say(f"generate: batch {batch_id} {status}: collected ({missed:,} requests without an answer)"
                  if missed else f"generate: batch {batch_id} {status}: collected")

    def _record_file(self, batch_id: str, input_file: str, used: list[int]) -> None:
        """Every line of a downloaded output or error file into the ledger (in transactions of some lines)."""
        with self.results.open("rb") as handle:
            for part in chunks(handle, COMMIT_EVERY):
                with self.ledger.transaction():
                    for line in part:
                        self._record_line(line, batch_id, input_file, used)

    def _record_line(self, line: bytes, batch_id: str, input_file: str, used: list[int]) -> None:
        """One result line: an answer, or a failure with the server's reason (malformed lines are skipped:
        their unit counts as not answered)."""
        try:
            item = orjson.loads(line)
            key = item["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if not isinstance(key, str):
            return
        row = self.ledger.unit_state(key)
        if row is None or row[1] == "answered":
            return  # not ours, or answered already (a line read twice, or an online run got there first)
        unit_id, _, waiting_in = row
        request = self.ledger.request(key)
        if request is None:
            return
        reply, reason = self._outcome(item, batch_id)
        if reply is not None:
            self.ledger.record_answer(key, unit_id, request, reply.text, reply.finish_reason, reply.prompt_tokens,
                                      reply.completion_tokens, 1, reply.cached_tokens)
            self._count(reply, used)
        elif waiting_in == input_file:  # a failure never overrides the unit's place in a newer batch
            self.ledger.record_failure(key, unit_id, request, reason, 1)
            self.stats.failed += 1

    def _outcome(self, item: dict[str, Any], batch_id: str) -> tuple[Reply | None, str]:
        response = item.get("response") if isinstance(item.get("response"), dict) else {}
        body = response.get("body")
        status = response.get("status_code")
        if status == 200 and not item.get("error"):
            try:
                return self.api.parse(body), ""
            except TeacherError as error:
                return None, f"batch {batch_id}: {error.reason}"
        error = item.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return None, self.api._scrub(f"batch {batch_id}: HTTP {status}: {str(message or 'no message')[:200]}")

    def _count(self, reply: Reply, used: list[int]) -> None:
        self.stats.add_reply(reply)
        used[0] += reply.prompt_tokens
        used[1] += reply.completion_tokens

    def _say(self, line: str, always: bool = False) -> None:
        if self.progress or always:
            print(line, file=self.stream, flush=True)


def _progress_line(batches: list[dict[str, Any]]) -> str:
    """`generate: batches: 2 (1 in_progress, 1 completed); requests: 45/60 completed, 3 failed`."""
    states: dict[str, int] = {}
    total = completed = failed = 0
    for batch in batches:
        states[batch.get("status") or "unknown"] = states.get(batch.get("status") or "unknown", 0) + 1
        counts = batch.get("request_counts") or {}
        total += counts.get("total") or 0
        completed += counts.get("completed") or 0
        failed += counts.get("failed") or 0
    parts = ", ".join(f"{n} {state}" for state, n in states.items())
    return (f"generate: batches: {len(batches)} ({parts}); requests: {completed:,}/{total:,} completed, "
            f"{failed:,} failed")


def _errors(batch: dict[str, Any]) -> str:
    """The first error the server gives for a whole batch (e.g. a failed validation), as `: message`."""
    data = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), dict) else None
    if data and isinstance(data[0], dict) and data[0].get("message"):
        return f": {str(data[0]['message'])[:200]}"
    return ""


def run_batches(units: Iterable[Unit], ledger: Ledger, teacher: Any, opts: Any, budget: Budget | None,
                stream: TextIO = sys.stderr) -> RunStats:
    """Run `generate --batch` (opts.batch says how) over the units not yet answered; returns what came back."""
    check(opts, teacher.embedded)

    async def go() -> RunStats:
        api = BatchAPI(teacher.base_url, teacher.api_key, teacher.timeout, opts.retries, opts.backoff)
        try:
            return await BatchRun(api, ledger, opts.batch, budget, opts.progress is not False, stream).run(units)
        finally:
            await api.close()

    return asyncio.run(go())
