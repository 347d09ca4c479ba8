"""Advantages of group-sampled completions (GRPO and its variants), tensor in, tensor out: what `swift rlhf` and
`megatron rlhf` share.

| estimator | advantage of completion i in a group of G (before scaling) |
|---|---|
| grpo | r_i - mean(r) |
| rloo | r_i - mean of the other G-1 = G/(G-1) (r_i - mean(r)) |
| reinforce_plus_plus | r_i - mean(r), scaled by the batch std of these centred rewards (scale "batch") |

Scale "group" divides by the group's reward std, "batch" by the batch's (of the raw rewards for grpo/rloo, of the
centred ones for reinforce_plus_plus), "none" not at all, "gdpo" normalises each reward function in its group, sums
them with the weights and normalises over the batch. With a KL (`kl`, `beta`), each reward first loses beta x the
completion's KL to the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus")
# --scale_rewards and --kl_in_reward follow the estimator unless given (ms-swift's defaults)
DEFAULT_REWARD_SCALE = {"grpo": "group", "rloo": "none", "reinforce_plus_plus": "batch"}
DEFAULT_KL_IN_REWARD = {"grpo": False, "rloo": True, "reinforce_plus_plus": True}
EPS = 1e-4  # trl's: a group whose rewards are all equal gets advantage 0, not a division by 0

def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The sample standard deviation ignoring NaN (trl's nanstd), over `dim` or everything."""
    import torch

    mean = torch.nanmean(x, dim=dim, keepdim=dim is not None)
    count = (~torch.isnan(x)).sum(dim=dim) if dim is not None else (~torch.isnan(x)).sum()
    var = torch.nansum((x - mean) ** 2, dim=dim) / (count - 1).clamp(min=1)
    return var.sqrt()


def total_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, F) rewards, NaN where a function does not apply -> (N,) weighted sums; NaN where none applies."""
    import torch

    total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    return total.masked_fill(torch.isnan(rewards_per_func).all(dim=1), float("nan"))


def group_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int, *,
               estimator: str = "grpo", scale: str = "group", kl: torch.Tensor | None = None,
               beta: float = 0.0) -> torch.Tensor:
    """One advantage per completion (N,), rows in groups of `num_generations` consecutive completions of a prompt.

    `kl` (N,): per-completion KL to the reference, subtracted from the reward x `beta` (--kl_in_reward). A completion
    no reward function scored gets advantage 0 and stays out of its group's statistics.
    """
    import torch

    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"advantage estimator {estimator!r}: choose from {', '.join(ADVANTAGE_ESTIMATORS)}")
    g = num_generations
    if scale == "gdpo":  # each reward function normalised in its group, then the weighted sum over the batch
        grouped = rewards_per_func.view(-1, g, rewards_per_func.shape[1])
        normed = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (_nanstd(grouped, dim=1).unsqueeze(1) + EPS)
        rewards = total_rewards(normed.view_as(rewards_per_func), weights)
        adv = (rewards - torch.nanmean(rewards)) / (_nanstd(rewards) + EPS)
        return torch.nan_to_num(adv, nan=0.0)
    rewards = total_rewards(rewards_per_func, weights)
    if kl is not None and beta:
        rewards = rewards - beta * kl
    grouped = rewards.view(-1, g)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if estimator == "rloo":
        valid = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
        centred = centred * valid / (valid - 1).clamp(min=1)
    if scale == "group":
        centred = centred / (_nanstd(grouped, dim=1).unsqueeze(1) + EPS)
    elif scale == "batch":
        centred = centred / (_nanstd(centred if estimator == "reinforce_plus_plus" else grouped) + EPS)
    elif scale != "none":
        raise ValueError(f"--scale_rewards {scale!r}: choose group, batch, none or gdpo")
    return torch.nan_to_num(centred.reshape(-1), nan=0.0)


def sequence_kl(policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log-probs of the sampled tokens -> (B,) KL estimate per completion: sum of log pi - log pi_ref."""
    return ((policy_logps - ref_logps) * mask).sum(dim=1)


def zero_std_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(N,) total rewards -> (N / G,) True for groups whose rewards are all equal (no learning signal: DAPO drops
    them). A group with fewer than two scored completions counts as such too."""
    import torch

    grouped = rewards.view(-1, num_generations)
    scored = (~torch.isnan(grouped)).sum(dim=1)
    spread = torch.nan_to_num(grouped.nan_to_num(float("inf")).amin(dim=1) - grouped.nan_to_num(-float("inf"))
                              .amax(dim=1), nan=0.0)
    return (scored < 2) | torch.isclose(spread, torch.zeros_like(spread))


def completion_records(step: int, prompts: list, completions: list, rewards_per_func: torch.Tensor,
                       names: list[str], advantages_: torch.Tensor) -> list[dict]:
    """`completions.jsonl` rows (`--log_completions`): the step, the prompt, the completion, each reward and the
    advantage it trained with."""
    import math

    out = []
    for prompt, completion, rewards, adv in zip(prompts, completions, rewards_per_func.tolist(),
                                                advantages_.tolist(), strict=True):
        out.append({"step": step, "prompt": prompt, "completion": completion,
                    "rewards": {n: None if math.isnan(v) else v for n, v in zip(names, rewards, strict=True)},
                    "advantage": adv})
    return out
