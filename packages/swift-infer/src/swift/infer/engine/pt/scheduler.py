"""`PtGenerator`: continuous batching for a transformers model, on one background thread.

The loop, between two decoding steps: take new requests and aborts from the inbox; prefill waiting requests (as
many as `max_batch_size` leaves room for) as a batch of their own and merge them into the running batch; run one
decoding step for every running row; send each row its new text; drop the rows that finished. A request never
waits for another to finish, only for the current step. Requests for different LoRA adapters share a batch (peft's
per-row `adapter_names`).

Consumers are asyncio tasks on any event loop: each request has a sink that hands outputs over with
`call_soon_threadsafe`. A consumer that goes away (client disconnect, cancelled task) aborts its request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import torch

from swift.infer.engine.errors import EngineError, UnknownAdapterError
from swift.infer.engine.pt.batch import DecodeBatch
from swift.infer.engine.pt.detokenize import Detokenizer
from swift.infer.engine.pt.json_mode import JsonState
from swift.infer.engine.pt.sampling import sample
from swift.infer.engine.types import GenerationOutput, GenerationRequest, SamplingParams, TokenLogprobInfo

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
Sink = Callable[[GenerationOutput | BaseException], bool]


class _Row:
    """One request while it waits or decodes."""

    def __init__(self, request: GenerationRequest, sink: Sink, tokenizer: Any, token_text: Callable[[int], str]):
        self.request, self.sink = request, sink
        self.params: SamplingParams = request.params
        self.prompt = request.prompt_ids
        self.generated: list[int] = []
        self.stop_ids = frozenset(request.params.stop_token_ids)
        self.detokenizer = Detokenizer(tokenizer, self.prompt, request.params.stop)
        self.generator = None if self.params.seed is None else torch.Generator().manual_seed(self.params.seed)
        self.json = JsonState() if self.params.json_mode else None
        self._token_text = token_text

    @property
    def adapter(self) -> str:
        return self.request.adapter or BASE_ADAPTER

    def allowed(self, candidates: list[int]) -> int | None:
        """JSON mode: the first candidate that keeps the answer a JSON object prefix (a stop token once complete)."""
        if self.json is None:
            return candidates[0]
        if self.json.done:
            return self.params.stop_token_ids[0] if self.params.stop_token_ids else candidates[0]
        for token_id in candidates:
            if token_id not in self.stop_ids and self.json.copy().feed(self._token_text(token_id)):
                return token_id
        return None


class PtGenerator:
    """The PyTorch backend behind `PtEngine` (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 16, max_model_len: int | None = None,
                 max_prefill_tokens: int = 8192) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_prefill_tokens = max_batch_size, max_prefill_tokens
        self.max_model_len = max_model_len
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.adapters: Sequence[str] = tuple(getattr(model, "peft_config", {}) or ())
        self._forward_kwargs = _forward_kwarg_names(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # Multimodal prompts: their processor outputs go into the prefill; Qwen-VL's 3-D positions come from here.
        self.accepts_media = True
        self.rope_index = getattr(getattr(base, "model", base), "get_rope_index", None)
        self._token_texts: dict[int, str] = {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[_Row] = deque()
        self._rows: list[_Row] = []
        self._batch: DecodeBatch | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        # for tests and metrics: decoding steps run, the most rows decoded together, requests dropped by an abort
        self.steps = 0
        self.max_rows_seen = 0
        self.aborted = 0

    @property
    def active(self) -> int:
        """Requests waiting or decoding (read from any thread: a snapshot)."""
        return len(self._rows) + len(self._waiting)

    # ----- the consumer side (any thread, any event loop) -----

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        if request.adapter is not None and request.adapter not in self.adapters:
            raise UnknownAdapterError(request.adapter, list(self.adapters))
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()

        def sink(item: GenerationOutput | BaseException) -> bool:
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, item)
                return True
            except RuntimeError:  # the consumer's loop is closed
                return False

        self._submit(_Row(request, sink, self.tokenizer, self._token_text))
        finished = False
        try:
            while True:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._inbox.put(("abort", request.request_id))

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._inbox.put(("stop", None))
            self._thread.join(timeout=30)

    def _submit(self, row: _Row) -> None:
        if self._closed:
            raise EngineError("the engine is closed")
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="swift-pt-engine", daemon=True)
                self._thread.start()
        self._inbox.put(("add", row))

    def _token_text(self, token_id: int) -> str:
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    # ----- the engine thread -----

    def _run(self) -> None:
        with torch.inference_mode():
            while self._read_inbox(block=not self._rows and not self._waiting):
                try:
                    self._admit()
                    if self._rows:
                        self._decode()
                except Exception as e:  # noqa: BLE001  (_fail logs it) a failed step loses its rows, not the engine
                    self._fail(self._rows, "a decoding step failed", e)
                    self._rows, self._batch = [], None
        leftovers = self._rows + list(self._waiting)
        while True:  # requests that arrived with or after the stop message
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                leftovers.append(item)
        for row in leftovers:
            row.sink(EngineError("the engine was closed"))

    def _read_inbox(self, *, block: bool) -> bool:
        """Take in new requests and aborts; False once asked to stop."""
        aborted: set[str] = set()
        while True:
            try:
                kind, item = self._inbox.get(block=block)
            except queue.Empty:
                break
            block = False
            if kind == "stop":
                return False
            if kind == "add":
                self._waiting.append(item)
            else:
                aborted.add(item)
        if aborted:
            before = self.active
            self._waiting = deque(r for r in self._waiting if r.request.request_id not in aborted)
            keep = [i for i, r in enumerate(self._rows) if r.request.request_id not in aborted]
            if len(keep) < len(self._rows):
                self._keep(keep)
            self.aborted += before - self.active
        return True

    def _admit(self) -> None:
        room = self.max_batch_size - len(self._rows)
        if room <= 0 or not self._waiting:
            return
        rows: list[_Row] = []
        width = 0
        while self._waiting and len(rows) < room:
            longest = max(width, len(self._waiting[0].prompt))
            if rows and longest * (len(rows) + 1) > self.max_prefill_tokens:
                break  # the rest prefill next step, so running rows are not stalled by one huge prefill
            if rows and (self._waiting[0].request.media or rows[0].request.media):
                break  # a prompt with images prefills alone (its media tensors and 3-D positions are its own)
            rows.append(self._waiting.popleft())
            width = longest
        try:
            batch, logits = DecodeBatch.prefill(self._forward, [r.prompt for r in rows], self._adapter_names(rows),
                                                self.pad_id, self.device, media=rows[0].request.media,
                                                rope_index=self.rope_index)
            keep, batch.next_tokens = self._advance(rows, logits)
            if not keep:
                return
            if len(keep) < len(rows):
                batch.select(keep)
            if self._batch is None:
                self._batch = batch
            else:
                self._batch.merge(batch)
        except Exception as e:  # noqa: BLE001  (_fail logs it) the new rows fail; the running ones go on
            self._fail(rows, "the prefill failed", e)
            return
        self._rows += [rows[i] for i in keep]
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _decode(self) -> None:
        assert self._batch is not None
        logits = self._batch.step(self._forward, self._adapter_names(self._rows))
        self.steps += 1
        keep, self._batch.next_tokens = self._advance(self._rows, logits)
        if len(keep) < len(self._rows):
            self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(keep)

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Sample each row's next token and send its news: the indices of rows that go on, and the tokens [B]."""
        sampled = sample(logits, rows)
        keep = []
        for i, (row, token_id, info) in enumerate(zip(rows, sampled.token_ids, sampled.logprobs, strict=True)):
            if self._append(row, token_id, info):
                keep.append(i)
        return keep, torch.tensor(sampled.token_ids, dtype=torch.long, device=self.device)

    def _append(self, row: _Row, token_id: int, info: TokenLogprobInfo | None) -> bool:
        row.generated.append(token_id)
        finish = None
        if token_id in row.stop_ids:
            finish = "stop"
        else:
            if row.json is not None:
                row.json.feed(self._token_text(token_id))
            if row.detokenizer.add(token_id):
                finish = "stop"
        if finish is None and (len(row.generated) >= row.params.max_tokens or (
                self.max_model_len and len(row.prompt) + len(row.generated) >= self.max_model_len)):
            finish = "length"
        output = GenerationOutput(row.detokenizer.take(final=finish is not None), [token_id], len(row.prompt),
                                  len(row.generated), finish, [info] if info is not None else None)
        return row.sink(output) and finish is None

    def _fail(self, rows: Sequence[_Row], what: str, cause: Exception) -> None:
        """Each row gets its own `EngineError` chained to `cause`; the traceback is logged here, once for all."""
        ids = [row.request.request_id for row in rows]
        logger.error("the PyTorch engine: %s; requests %s get an error", what, ids, exc_info=cause)
        for row in rows:
            error = EngineError(f"{what}: {type(cause).__name__}: {cause}")
            error.__cause__ = cause
            row.sink(error)

    def _adapter_names(self, rows: Sequence[_Row]) -> list[str] | None:
        return [row.adapter for row in rows] if self.adapters else None

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache: Any, adapter_names: Sequence[str] | None, media: dict[str, Any] | None = None) -> torch.Tensor:
        cache_kw, keep_kw = self._forward_kwargs
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                  "position_ids": position_ids, cache_kw: cache, "use_cache": True, **(media or {})}
        if keep_kw:
            kwargs[keep_kw] = 1
        if adapter_names is not None:
            kwargs["adapter_names"] = list(adapter_names)
        return self.model(**kwargs).logits[:, -1, :]


def _forward_kwarg_names(model: Any) -> tuple[str, str | None]:
    """transformers 5.2x calls the KV cache `cache` (earlier: `past_key_values`); `logits_to_keep` may be missing."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    keep_kw = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)
    return cache_kw, keep_kw
