"""GRPO on mcore, the parts built so far (not yet wired into `megatron rlhf`: no flag offers it): rollouts with the
synced HF model (`swift.megatron.sync`; swift.megatron may not import swift.infer, so transformers' `generate`),
shared by every rank of a model-parallel group, and trl 1.16's clipped GRPO loss (`GRPOTrainer._compute_loss`,
token-level importance sampling) per micro-batch. The advantages are swift-core's `group_advantages`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")


@dataclass(frozen=True)
class GrpoLoss:
    """trl's names: `epsilon` (low clip), `epsilon_high` (None: = epsilon), `beta` (KL to the reference; 0: none)."""

    loss_type: LossType = "grpo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    max_completion_length: int = 512


def per_token_terms(policy_logps, old_logps, advantages, settings: GrpoLoss, ref_logps=None):
    """(B, T) per-token loss of trl: -min(r A, clip(r, 1-eps, 1+eps_high) A) + beta KL3(ref || policy), with
    r = exp(policy - old). Returns (loss, kl or None); `advantages` is (B,)."""
    import torch

    ratio = torch.exp(policy_logps - old_logps)
    high = settings.epsilon if settings.epsilon_high is None else settings.epsilon_high
    clipped = torch.clamp(ratio, 1 - settings.epsilon, 1 + high)
    adv = advantages.unsqueeze(1)
    loss = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if settings.beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference's log-probabilities")
        delta = ref_logps - policy_logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + settings.beta * kl
    return loss, kl


def reduce_tokens(per_token, mask, settings: GrpoLoss, *, num_items: float | None = None,
                  accumulation: int = 1):
    """The micro-batch's share of the step's loss, as trl aggregates it; summed over a step's micro-batches it is
    trl's step loss. `accumulation`: micro-batches per step (trl's gradient-accumulation normaliser); `num_items`
    (dapo): the global batch's completion tokens divided by the data-parallel size when gradients are averaged
    over it (trl's num_items_in_batch / processes)."""
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    if settings.loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if settings.loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if settings.loss_type == "dr_grpo":
        return masked.sum() / (per_token.size(0) * settings.max_completion_length) / accumulation
    if settings.loss_type == "dapo":
        if num_items is None:
            raise ValueError("dapo normalises by the step's completion tokens: pass num_items")
        return masked.sum() / max(num_items, 1.0)
    raise ValueError(f"--loss_type {settings.loss_type!r}: choose from {', '.join(LOSS_TYPES)}")


def completion_logps(per_token_ce, loss_mask):
    """mcore's forward with labels returns the (vocab-parallel, summed over TP) cross-entropy per token [b, s]:
    its negative is the per-token log-probability, zero outside the completion."""
    return -per_token_ce.float() * loss_mask.to(per_token_ce.device).float()


def generate_rollouts(hf_model: Any, prompts: list[list[int]], *, num_generations: int, max_completion_length: int,
                      temperature: float, seed: int, pad_token_id: int, eos_token_id: int | None) -> list[list[int]]:
    """`num_generations` completions per prompt (consecutive, as group_advantages expects), token ids without the
    prompt, cut after eos. Seeded per call, so a rerun (or another process with the same seed) draws the same;
    temperature 0: greedy. Left-padded batch of every prompt x generations."""
    import torch

    expanded = [p for p in prompts for _ in range(num_generations)]
    width = max(len(p) for p in expanded)
    ids = torch.full((len(expanded), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, prompt in enumerate(expanded):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        attention[i, width - len(prompt):] = 1
    device = next(hf_model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else \
        {"do_sample": False}
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = hf_model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                max_new_tokens=max_completion_length, pad_token_id=pad_token_id,
                                eos_token_id=eos_token_id, **sampling)
    completions = []
    for row in out[:, width:].tolist():
        if eos_token_id is not None and eos_token_id in row:  # generate pads only after eos
            row = row[: row.index(eos_token_id) + 1]
        completions.append(row)
    return completions


def broadcast_rollouts(completions: list[list[int]] | None, *, src: int, group: Any) -> list[list[int]]:
    """Rank `src`'s completions on every rank of `group` (a model-parallel group: its ranks train one replica and
    must see the same tokens)."""
    import torch.distributed as dist

    box = [completions]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]
