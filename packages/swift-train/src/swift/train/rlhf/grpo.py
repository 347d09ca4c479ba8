"""The GRPO family on top of trl's GRPOTrainer: advantage estimators, KL in the reward, dynamic sampling and the
completions log (ms-swift's `--advantage_estimator`, `--kl_in_reward`, `--dynamic_sample`, `--log_completions`).

trl computes GRPO's group-normalised advantages inside `_generate_and_score_completions`; `trainers.grpo_trainer_class`
keeps trl's rollout, log-probs and loss, and recomputes the advantages from each completion's rewards with
swift-core's formulas (`swift.core.advantages`, shared with `megatron rlhf`):

| --advantage_estimator | advantage of completion i in a group of G (before `--scale_rewards`) |
|---|---|
| grpo | r_i - mean(r) |
| rloo | r_i - mean of the other G-1 = G/(G-1) (r_i - mean(r)) |
| reinforce_plus_plus | r_i - mean(r), scaled by the batch std of these centred rewards (`--scale_rewards batch`) |

`--scale_rewards group` divides by the group's reward std, `batch` by the batch's (of the raw rewards for grpo/rloo, of
the centred ones for reinforce_plus_plus), `none` not at all, `gdpo` normalises each reward function in its group,
sums them with `--reward_weights` and normalises over the batch. With `--kl_in_reward` each reward first loses
beta x the completion's KL to the reference (sum over its tokens of log pi_old - log pi_ref) and the loss has no KL
term. Here: dynamic sampling's group picking and the joining of rollouts; tests/train/test_grpo_variants.py checks the
formulas on hand-worked numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GrpoVariant:
    """What our GRPO trainer does on top of trl's (defaults resolved from the flags by `methods.grpo_variant`)."""

    estimator: str = "grpo"
    scale: str = "group"
    kl_in_reward: bool = False
    dynamic_sample: bool = False
    max_resample_times: int = 3
    completions_path: Path | None = None  # --log_completions
    seed: int = 42


def pick_groups(invalid_per_round: list[torch.Tensor], wanted: int) -> list[tuple[int, int]]:
    """Which groups to train on, as (round, group) pairs: `wanted` groups, the ones with a reward spread first in
    rollout order, then (when `--max_resample_times` ran out) zero-spread ones of the first round."""
    chosen = [(r, i) for r, invalid in enumerate(invalid_per_round) for i, bad in enumerate(invalid.tolist())
              if not bad][:wanted]
    fill = [(0, i) for i, bad in enumerate(invalid_per_round[0].tolist()) if bad]
    return chosen + fill[:wanted - len(chosen)]


# what each key of trl's rollout output is padded with when rollouts of different widths are joined
LEFT_PADDED = {"prompt_ids", "prompt_mask"}
TENSOR_KEYS_SKIPPED = {"num_items_in_batch"}


def join_rollouts(outputs: list[dict[str, Any]], picks: list[tuple[int, int]], num_generations: int,
                  pad_id: int) -> dict[str, Any]:
    """The rows of the picked groups from several of trl's rollout outputs (dicts of (B, ...) tensors and lists),
    in one output: prompt tensors left-padded, completion tensors right-padded to the widest."""
    import torch
    import torch.nn.functional as F

    rows = [(r, i * num_generations + k) for r, i in picks for k in range(num_generations)]
    joined: dict[str, Any] = {}
    for key, first in outputs[0].items():
        if key in TENSOR_KEYS_SKIPPED:
            continue
        if not isinstance(first, torch.Tensor):
            joined[key] = [outputs[r][key][j] for r, j in rows]
            continue
        if first.dim() == 0:
            joined[key] = first
            continue
        width = max(out[key].shape[1] for out in outputs) if first.dim() > 1 else 0
        parts = []
        for r, j in rows:
            row = outputs[r][key][j:j + 1]
            if first.dim() > 1 and row.shape[1] < width:
                gap = width - row.shape[1]
                value = pad_id if key.endswith("_ids") else 0
                row = F.pad(row, (gap, 0) if key in LEFT_PADDED else (0, gap), value=value)
            parts.append(row)
        joined[key] = torch.cat(parts)
    return joined
