"""Next tokens for a batch of rows with their own sampling settings, in transformers' order: repetition penalty,
(presence / frequency penalties), temperature, top-k, top-p. Greedy rows (temperature 0) take the arg-max, so
they match `model.generate(do_sample=False)`. Logprobs are those of the model's raw distribution, as vLLM reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from swift.infer.engine.types import SamplingParams, TokenLogprobInfo


class SampledRow(Protocol):
    params: SamplingParams
    prompt: list[int]
    generated: list[int]
    generator: torch.Generator | None

    def allowed(self, candidates: list[int]) -> int | None:
        """For constrained rows: the first of `candidates` (best first) that the constraint allows."""
        ...


@dataclass
class Sampled:
    token_ids: list[int]
    logprobs: list[TokenLogprobInfo | None]


def sample(logits: torch.Tensor, rows: Sequence[SampledRow]) -> Sampled:
    """logits [B, V] (any dtype) -> one token per row."""
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1) if any(r.params.logprobs for r in rows) else None
    _apply_penalties(logits, rows)
    greedy = [r.params.is_greedy for r in rows]
    chosen = logits.argmax(dim=-1)
    if not all(greedy):
        sampled_rows = [i for i, g in enumerate(greedy) if not g]
        probs = _sampling_probs(logits[sampled_rows], [rows[i].params for i in sampled_rows])
        chosen[sampled_rows] = _draw(probs, [rows[i].generator for i in sampled_rows])
    token_ids = chosen.tolist()
    for i, row in enumerate(rows):
        if row.params.json_mode:
            token_ids[i] = _constrained(logits[i], row, greedy[i], token_ids[i])
    infos: list[TokenLogprobInfo | None] = [None] * len(rows)
    if raw_logprobs is not None:
        for i, row in enumerate(rows):
            if row.params.logprobs:
                infos[i] = _logprob_info(raw_logprobs[i], token_ids[i], row.params.top_logprobs)
    return Sampled(token_ids, infos)


def _apply_penalties(logits: torch.Tensor, rows: Sequence[SampledRow]) -> None:
    vocab = logits.shape[-1]
    for i, row in enumerate(rows):
        p = row.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(row.prompt + row.generated, dtype=torch.long, device=logits.device).unique()
            seen = seen[seen < vocab]
            values = logits[i, seen]
            logits[i, seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and row.generated:
            generated = torch.tensor(row.generated, dtype=torch.long, device=logits.device)
            counts = torch.bincount(generated, minlength=vocab)[:vocab].to(logits.dtype)
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)


def _sampling_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Probabilities after temperature, top-k and top-p, for rows that sample."""
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    logits = logits / temperature[:, None]
    vocab = logits.shape[-1]
    top_k = [p.top_k if 0 < p.top_k < vocab else 0 for p in params]
    if any(top_k):
        kth = torch.topk(logits, max(top_k), dim=-1).values
        index = torch.tensor([max(k, 1) - 1 for k in top_k], device=device)
        threshold = kth.gather(1, index[:, None])
        threshold[torch.tensor([k == 0 for k in top_k], device=device)] = -float("inf")
        logits = logits.masked_fill(logits < threshold, -float("inf"))
    top_p = torch.tensor([p.top_p for p in params], device=device)
    if bool((top_p < 1.0).any()):
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the better tokens
        sorted_logits = sorted_logits.masked_fill(before > top_p[:, None], -float("inf"))  # the best one stays
        logits = torch.full_like(logits, -float("inf")).scatter(1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def _draw(probs: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """One token per row, by the exponential race (argmax of p / Exp(1)): a draw from `probs`, like
    torch.multinomial, without its cumulative sum over the vocabulary. A seeded request draws its noise from its
    own generator, so it gets the same answer every time."""
    noise = torch.empty_like(probs)
    for i, generator in enumerate(generators):
        noise[i].exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)


def _constrained(logits: torch.Tensor, row: SampledRow, greedy: bool, proposal: int) -> int:
    """The proposed token if the row's constraint allows it, else the best allowed one (by probability)."""
    if row.allowed([proposal]) is not None:
        return proposal
    order = torch.argsort(logits, descending=True)
    for start in range(0, order.numel(), 512):  # nearly always decided in the first chunk
        found = row.allowed(order[start:start + 512].tolist())
        if found is not None:
            return found
    return proposal  # no token of the vocabulary fits


def _logprob_info(logprobs: torch.Tensor, token_id: int, top: int) -> TokenLogprobInfo:
    info = TokenLogprobInfo(token_id, float(logprobs[token_id]))
    if top:
        values, ids = torch.topk(logprobs, top)
        info.top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return info
