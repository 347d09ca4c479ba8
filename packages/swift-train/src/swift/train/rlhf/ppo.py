"""PPO (`--rlhf_type ppo`): trl 1.x has no PPO trainer any more, so this module is ours, on transformers' Trainer.

One optimizer step of the Trainer is one PPO minibatch update, as GRPO counts them, so `--max_steps`, checkpoints,
logging.jsonl and resume work as for every other method:

    rollout batch  = per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches prompts (per rank)
    rollout        GRPO's engine (`methods.grpo_rollout`: swift-infer's PyTorch engine on the policy, or vLLM)
    score          --reward_funcs (weighted by --reward_weights with the reward models) + --reward_model, minus
                   --missing_eos_penalty for a completion cut at --max_completion_length
    per token      old log-probs, reference log-probs (LoRA: the adapter off; full: a frozen copy / --ref_model),
                   values (--value_model: a sequence-classification model's score head on every position)
    reward         -kl_coef x (logp - logp_ref) on every completion token, + the score on the last one
    advantages     GAE(--gamma, --lam), whitened over the batch; returns = advantages + values
    then           --num_ppo_epochs x --num_mini_batches optimizer steps on it: the clipped policy loss
                   (--cliprange) + --vf_coef x the clipped value loss (--cliprange_value)

The model the Trainer trains is `PolicyAndValue` (both, so one optimizer, one gradient clip); a checkpoint holds the
policy as every method writes it (PEFT adapter or full weights, what `swift infer --adapters` loads) and the value
model under `value_model/`. Unlike trl's old PPOTrainer the score is added at the last completion token (trl put it
one past it) and values are taken on the completion tokens only. Dropout is off in the policy and value models (as
trl did): the ratio of the first update is exactly 1.

Non-public Trainer methods overridden here (pinned by `tests/train/test_ppo.py`): `_prepare_inputs` (the rollout
buffer, as trl's GRPO/RLOO trainers do) and `_load_from_checkpoint` (resume loads two models).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from swift.train.arguments import PpoArgs, RlhfArguments
    from swift.train.recipe import Run

logger = logging.getLogger(__name__)

VALUE_DIR = "value_model"  # the value model's folder inside a checkpoint
COMPLETIONS_FILE = "completions.jsonl"  # --num_sample_generations writes here, in the run directory
TUNERS = ("lora", "full")


# ----- the PPO arithmetic, on [B, T] completion-token tensors (mask: 1 on a completion's tokens, 0 after) -----

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance, as trl's); `shift_mean=False` keeps the mean.
    Fewer than two entries: nothing to scale by, x comes back centred (or as it is)."""
    import torch

    count = mask.sum()
    mean = masked_mean(x, mask)
    if count < 2:
        return ((x - mean) if shift_mean else x) * mask
    var = ((x - mean) ** 2 * mask).sum() / (count - 1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_shaped_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token KL): -kl_coef x (logp - logp_ref) on each completion token, the sequence's
    score added on its last token."""
    import torch

    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, with
    V = 0 after a completion's last token. Returns (advantages, returns = advantages + values)."""
    import torch

    rewards, values = rewards * mask, values * mask  # right padding: every term past the end is 0
    width = rewards.shape[1]
    running = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> dict[str, torch.Tensor]:
    """The clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = exp(logp - logp_old).
    Also: the share of tokens where the clipped term is the larger (clipfrac), approx KL 0.5 E[(log r)^2], E[r]."""
    import torch

    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return {"loss": masked_mean(torch.maximum(unclipped, clipped), mask),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
            "approxkl": (0.5 * masked_mean(log_ratio**2, mask)).detach(),
            "ratio": masked_mean(ratio, mask).detach()}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> dict[str, torch.Tensor]:
    """0.5 x mean over tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2), and the share where the clipped
    term is the larger."""
    import torch

    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    return {"loss": 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach()}


# ----- batches and models -----

def rollout_tensors(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> dict[str, Any]:
    """Prompts left-padded, completions right-padded, in one [B, P + C] row each: `input_ids`, `attention_mask`,
    `position_ids` (counted over the real tokens, so left padding does not shift them) and `completion_mask` [B, C]."""
    import torch

    prompt_width = max(len(p) for p in prompt_ids)
    width = max(len(c) for c in completion_ids)
    ids, mask, completion_mask = [], [], []
    for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
        left, right = prompt_width - len(prompt), width - len(completion)
        ids.append([pad_id] * left + list(prompt) + list(completion) + [pad_id] * right)
        mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_mask.append([1] * len(completion) + [0] * right)
    attention_mask = torch.tensor(mask)
    return {"input_ids": torch.tensor(ids), "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0),
            "completion_mask": torch.tensor(completion_mask, dtype=torch.float32)}


def score_head(model: Any) -> tuple[Any, Any]:
    """(backbone, head) of a sequence-classification model (a PEFT one too: LoRA sits inside the backbone, the head
    is peft's trainable copy), so that the head can score every position, not only the last."""
    from swift.core import ConfigError

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = getattr(base, "score", None) or getattr(base, "classifier", None)
    if backbone is None or head is None:
        raise ConfigError(f"{type(base).__name__}: PPO's value and reward models need a transformer backbone and a "
                          "`score` head (a *ForSequenceClassification model)")
    return backbone, head


def token_scores(model: Any, batch: dict[str, Any], start: int, width: int) -> torch.Tensor:
    """The score head on positions start .. start + width - 1: [B, width] (fp32)."""
    backbone, head = score_head(model)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    return head(hidden[:, start:start + width]).squeeze(-1).float()


def completion_logits(policy: Any, batch: dict[str, Any], width: int, *, keep_logits: bool) -> torch.Tensor:
    """The policy's logits that predict the last `width` tokens (the completion): [B, width, V]."""
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    if keep_logits:  # the output head only where a completion token is predicted
        return policy(**kwargs, use_cache=False, logits_to_keep=width + 1).logits[:, :-1]
    return policy(**kwargs, use_cache=False).logits[:, -width - 1:-1]


@functools.cache
def _torch_classes() -> Any:
    """The classes that need torch and transformers (built on first use: `swift rlhf --help` imports neither)."""
    import torch
    from torch.utils.data import DataLoader, Sampler
    from transformers import Trainer, TrainerCallback

    class PolicyAndValue(torch.nn.Module):
        """What the Trainer trains: the policy and the value model, one optimizer over both. `forward` gives the
        policy's completion logits [B, C, V] and the values on the same positions [B, C]."""

        def __init__(self, policy: Any, value: Any, *, keep_logits: bool) -> None:
            super().__init__()
            self.policy, self.value, self.keep_logits = policy, value, keep_logits

        def forward(self, input_ids, attention_mask, position_ids, completion_width: int):
            batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
            logits = completion_logits(self.policy, batch, completion_width, keep_logits=self.keep_logits)
            values = token_scores(self.value, batch, input_ids.shape[1] - completion_width - 1, completion_width)
            return logits, values

        def activation_checkpointing_enable(self, **kwargs):
            for model in (self.policy, self.value):
                model.activation_checkpointing_enable(**kwargs)

    class RolloutSampler(Sampler):
        """Batches of this rank's prompts for one rollout each, every batch given `repeats` times: once per
        micro-batch the trainer trains on it (its rows are rolled out once, on the first)."""

        def __init__(self, size: int, batch: int, repeats: int, *, shuffle: bool, seed: int, rank: int,
                     world: int) -> None:
            self.size, self.batch, self.repeats, self.shuffle, self.seed = size, batch, repeats, shuffle, seed
            self.rank, self.world, self.epoch = rank, world, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.size // (self.batch * self.world) * self.repeats

        def __iter__(self):
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist() if self.shuffle else range(self.size)
            step = self.batch * self.world  # every rank draws from the same order, its own slice of each step
            for start in range(0, self.size - step + 1, step):
                mine = list(order[start + self.rank * self.batch:start + (self.rank + 1) * self.batch])
                for _ in range(self.repeats):
                    yield mine

    class RolloutLoader(DataLoader):
        def set_epoch(self, epoch: int) -> None:  # (the Trainer calls it at each epoch)
            self.batch_sampler.set_epoch(epoch)

    class SampleGenerations(TrainerCallback):
        """--num_sample_generations: sampled completions of the first validation prompts, N times over the run."""

        def __init__(self, trainer: Any, times: int) -> None:
            self.trainer, self.times = trainer, times

        def on_step_end(self, args, state, control, **kwargs):
            every = max(1, state.max_steps // self.times)
            if (state.global_step - 1) % every == 0:
                self.trainer.write_sample_generations()

    return _namespace(PolicyAndValue=PolicyAndValue, RolloutSampler=RolloutSampler, RolloutLoader=RolloutLoader,
                      SampleGenerations=SampleGenerations, Trainer=Trainer)


def _namespace(**items: Any) -> Any:
    import types

    return types.SimpleNamespace(**items)


def identity(rows: list[dict]) -> list[dict]:
    return rows


@dataclass
class Scorer:
    """The score of a completion: --reward_funcs (None: no opinion) and the reward models' last-token score, each
    weighted (--reward_weights), summed; `names` in that order (the logged `rewards/<name>/mean`)."""

    funcs: list[Any]
    models: list[Any]
    names: list[str]
    weights: list[float]

    def rule_scores(self, rows: list[dict], texts: list[str], completion_ids: list[list[int]],
                    state: Any) -> torch.Tensor:
        """[B, funcs]: each function's reward per completion, NaN where it gave None."""
        import torch

        columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != "prompt"}
        completions = [[{"role": "assistant", "content": text}] for text in texts]
        out = torch.full((len(rows), len(self.funcs)), math.nan)
        for i, (func, name) in enumerate(zip(self.funcs, self.names, strict=False)):
            values = func(prompts=[row["prompt"] for row in rows], completions=completions,
                          completion_ids=completion_ids, trainer_state=state, **columns)
            if len(values) != len(rows):
                raise ValueError(f"reward function {name!r} gave {len(values)} rewards for {len(rows)} completions")
            out[:, i] = torch.tensor([math.nan if v is None else float(v) for v in values])
        return out

    def total(self, per_reward: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.nansum(per_reward * torch.tensor(self.weights, dtype=per_reward.dtype), dim=1)


@dataclass
class PpoSettings:
    """What the trainer needs besides the PPO flags: the resolved sampling and batch sizes."""

    ppo: PpoArgs
    temperature: float
    max_tokens: int
    pad_id: int
    stop_ids: tuple[int, ...]
    micro_batch: int  # --per_device_train_batch_size
    accumulation: int  # --gradient_accumulation_steps
    shuffle: bool

    @property
    def rollout_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.ppo.num_mini_batches

    @property
    def repeats(self) -> int:  # micro-batches trained per rollout batch
        return self.ppo.num_ppo_epochs * self.ppo.num_mini_batches * self.accumulation


class _PolicyView:
    """What the rollout engines read from a trainer (`model_wrapped`, `accelerator`, `args`, `state`), with the
    policy as the model (the trainer's module holds the policy and the value model): the vLLM rollouts sync its
    weights; PtRollout generates with it (a PEFT policy through its base model: rollout.PtRollout.complete)."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    @property
    def model_wrapped(self) -> Any:
        return self._trainer.accelerator.unwrap_model(self._trainer.model_wrapped).policy

    def __getattr__(self, name: str) -> Any:  # accelerator, args, state
        return getattr(self._trainer, name)


# ----- the trainer -----

def ppo_trainer_class() -> type:
    return _trainer_class()


@functools.cache
def _trainer_class() -> type:
    import torch
    from trl.trainer.utils import disable_dropout_in_model, selective_log_softmax, selective_log_softmax_and_entropy

    from swift.train.trainer import SwiftTrainerMixin

    classes = _torch_classes()

    class SwiftPPOTrainer(SwiftTrainerMixin, classes.Trainer):
        """PPO on transformers' Trainer: each optimizer step trains one minibatch of the current rollout batch,
        which `_prepare_inputs` rolls out and scores on its first micro-batch (see the module docstring)."""

        def __init__(self, *, model: Any, ref_model: Any, scorer: Scorer, rollout: Any, settings: PpoSettings,
                     **kwargs: Any) -> None:
            super().__init__(model=model, data_collator=identity, **kwargs)
            self.ref_model, self.scorer, self.swift_rollout, self.settings = ref_model, scorer, rollout, settings
            for module in (model.policy, model.value, ref_model, *scorer.models):
                if module is not None:
                    disable_dropout_in_model(module)
            self._view = _PolicyView(self)
            self._step = 0  # micro-batches trained
            self._rollouts = 0
            self._episodes = 0  # completions rolled out, all ranks
            self._buffer: list[dict] | None = None
            self._metrics: dict[str, list[float]] = defaultdict(list)  # training micro-batches since the last log
            self._rollout_logs: list[dict[str, float]] = []  # rollouts since the last log
            self._last_rollout: dict[str, float] = {}
            if self.eval_dataset is not None and settings.ppo.num_sample_generations > 0:
                self.add_callback(classes.SampleGenerations(self, settings.ppo.num_sample_generations))

        @property
        def parts(self) -> Any:
            return self.accelerator.unwrap_model(self.model_wrapped)

        def get_train_dataloader(self):
            settings, world = self.settings, self.accelerator.num_processes
            sampler = classes.RolloutSampler(len(self.train_dataset), settings.rollout_batch, settings.repeats,
                                             shuffle=settings.shuffle, seed=self.args.seed,
                                             rank=self.accelerator.process_index, world=world)
            return classes.RolloutLoader(self.train_dataset, batch_sampler=sampler, collate_fn=identity,
                                         num_workers=self.args.dataloader_num_workers)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._step += 1
            return loss

        def _prepare_inputs(self, rows):
            if self._buffer is None or self._step % self.settings.repeats == 0:
                self._buffer = self._minibatches(self._experience(rows))
            return self._buffer[self._step % self.settings.repeats]

        # -- rollout: generate, score, per-token log-probs and values, GAE --

        def _generate(self, rows: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
            from swift.train.rlhf.layouts import media_refs

            out = self.swift_rollout.rollout([{"messages": row["prompt"], **media_refs(row)} for row in rows],
                                             self._view)
            stop = self.settings.stop_ids[0] if self.settings.stop_ids else self.settings.pad_id
            completions = [list(ids[:self.settings.max_tokens]) or [stop] for ids in out["completion_ids"]]
            return out["prompt_ids"], completions

        def _score(self, rows: list[dict], batch: dict, completions: list[list[int]]) -> tuple[Any, Any, Any]:
            """(scores [B], rewards per function/model [B, F + M], whether each completion ended)."""
            texts = self.processing_class.batch_decode(completions, skip_special_tokens=True)
            per_reward = [self.scorer.rule_scores(rows, texts, completions, self.state)] if self.scorer.funcs else []
            if self.scorer.models:
                last = batch["input_ids"].shape[1] - 1 - (1 - batch["completion_mask"]).sum(1).long()
                model_scores = []
                for model in self.scorer.models:
                    full = self._chunked(lambda b, m=model: token_scores(m, b, 0, b["input_ids"].shape[1]), batch)
                    model_scores.append(full[torch.arange(len(rows), device=last.device), last])
                per_reward.append(torch.stack(model_scores, dim=1).cpu())  # (beside the functions' rewards)
            per_reward = torch.cat(per_reward, dim=1)
            scores = self.scorer.total(per_reward)
            stops = set(self.settings.stop_ids)
            ended = torch.tensor([len(c) < self.settings.max_tokens or c[-1] in stops for c in completions])
            if self.settings.ppo.missing_eos_penalty is not None:
                scores = scores - self.settings.ppo.missing_eos_penalty * (~ended).float()
            return scores, per_reward, ended

        def _chunked(self, forward: Any, batch: dict) -> torch.Tensor:
            size = self.settings.ppo.local_rollout_forward_batch_size
            rows = batch["input_ids"].shape[0]
            with torch.no_grad(), self.accelerator.autocast():
                return torch.cat([forward({k: v[i:i + size] for k, v in batch.items()}).float()
                                  for i in range(0, rows, size)])

        def _logprobs(self, policy: Any, batch: dict) -> torch.Tensor:
            width = batch["completion_mask"].shape[1]
            logits = completion_logits(policy, batch, width, keep_logits=self.parts.keep_logits)
            return selective_log_softmax(logits.float() / self.settings.temperature, batch["input_ids"][:, -width:])

        def _experience(self, rows: list[dict]) -> dict[str, torch.Tensor]:
            ppo, parts = self.settings.ppo, self.parts
            prompts, completions = self._generate(rows)
            device = self.accelerator.device
            batch = {k: v.to(device) for k, v in rollout_tensors(prompts, completions, self.settings.pad_id).items()}
            mask, width = batch["completion_mask"], batch["completion_mask"].shape[1]
            logprobs = self._chunked(lambda b: self._logprobs(parts.policy, b), batch)
            ref_logprobs = logprobs
            if ppo.kl_coef > 0:
                ref_logprobs = self._chunked(self._ref_logprobs, batch)
            values = self._chunked(
                lambda b: token_scores(parts.value, b, b["input_ids"].shape[1] - width - 1, width), batch)
            scores, per_reward, ended = self._score(rows, batch, completions)
            scores = scores.to(device)
            rewards, kl = kl_shaped_rewards(logprobs, ref_logprobs, scores, mask, ppo.kl_coef)
            if ppo.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, values * mask, mask, gamma=ppo.gamma, lam=ppo.lam)
            advantages = masked_whiten(advantages, mask)
            self._rollouts += 1
            self._log_rollout(scores, per_reward, kl, logprobs, mask, ended, len(rows))
            return {**batch, "logprobs": logprobs, "values": values * mask, "advantages": advantages,
                    "returns": returns}

        def _ref_logprobs(self, batch: dict) -> torch.Tensor:
            if self.ref_model is not None:
                return self._logprobs(self.ref_model, batch)
            with self.parts.policy.disable_adapter():  # LoRA: the base model is the reference
                return self._logprobs(self.parts.policy, batch)

        def _log_rollout(self, scores, per_reward, kl, logprobs, mask, ended, rows: int) -> None:
            non_score = (-self.settings.ppo.kl_coef * kl).sum(1).mean().item()
            # (--kl_coef 0 runs no reference forward: there is no KL to report)
            logs = {"objective/kl": kl.sum(1).mean().item()} if self.settings.ppo.kl_coef > 0 else {}
            logs |= {"objective/entropy": (-logprobs * mask).sum(1).mean().item(),
                     "objective/non_score_reward": non_score,
                     "objective/rlhf_reward": scores.mean().item() + non_score,
                     "objective/scores": scores.mean().item(),
                     "completions/mean_length": mask.sum(1).mean().item(),
                     "val/num_eos_tokens": float(ended.sum())}
            for i, name in enumerate(self.scorer.names):
                column = per_reward[:, i]
                logs[f"rewards/{name}/mean"] = column.nanmean().item() if (~column.isnan()).any() else math.nan
            self._episodes += rows * self.accelerator.num_processes
            self._rollout_logs.append(logs)
            self._last_rollout = logs

        def _minibatches(self, experience: dict) -> list[dict]:
            """The rollout batch as the micro-batches of `num_ppo_epochs` shuffled passes, in training order
            (every `accumulation` consecutive ones make one minibatch), each cut to its own padding."""
            settings = self.settings
            generator = torch.Generator().manual_seed(self.args.seed + self._rollouts)
            rows = experience["input_ids"].shape[0]
            out = []
            for _ in range(settings.ppo.num_ppo_epochs):
                for index in torch.randperm(rows, generator=generator).split(settings.micro_batch):
                    out.append(_trim({k: v[index.to(v.device)] for k, v in experience.items()}))
            return out

        # -- training --

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ppo, mask = self.settings.ppo, inputs["completion_mask"]
            width = mask.shape[1]
            logits, values = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   position_ids=inputs["position_ids"], completion_width=width)
            logprobs, entropy = selective_log_softmax_and_entropy(
                logits.float(), inputs["input_ids"][:, -width:], entropy_requires_grad=False,
                temperature=self.settings.temperature)
            policy = policy_loss(logprobs, inputs["logprobs"], inputs["advantages"], mask, ppo.cliprange)
            value = value_loss(values.float(), inputs["values"], inputs["returns"], mask, ppo.cliprange_value)
            loss = policy["loss"] + ppo.vf_coef * value["loss"]
            if model.training:
                self.tokens_seen += int(inputs["attention_mask"].sum())
                for key, metric in (("loss/policy_avg", policy["loss"]), ("loss/value_avg", value["loss"]),
                                    ("policy/clipfrac_avg", policy["clipfrac"]),
                                    ("policy/approxkl_avg", policy["approxkl"]),
                                    ("policy/entropy_avg", masked_mean(entropy, mask)),
                                    ("val/clipfrac_avg", value["clipfrac"]), ("val/ratio", policy["ratio"]),
                                    ("val/vpred", masked_mean(values.float(), mask))):
                    self._metrics[key].append(float(metric.detach()))
            self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides it by the accumulation
            return (loss, (logits, values)) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # a training step's log: PPO's own metrics beside loss and learning rate
                metrics = {k: sum(v) / len(v) for k, v in self._metrics.items() if v}
                ratios = self._metrics.get("val/ratio") or []
                if ratios:
                    metrics["val/ratio_var"] = float(torch.tensor(ratios).var(unbiased=False))
                rollouts = self._rollout_logs or ([self._last_rollout] if self._last_rollout else [])
                for key in rollouts[0] if rollouts else ():
                    values = [r[key] for r in rollouts if not math.isnan(r[key])]
                    metrics[key] = sum(values) / len(values) if values else None
                metrics["episode"] = self._episodes
                logs.update(self._mean_over_ranks(metrics))
                self._metrics.clear()
                self._rollout_logs = []
            super().log(logs, start_time)

        def _mean_over_ranks(self, metrics: dict[str, float | None]) -> dict[str, float | None]:
            if self.accelerator.num_processes == 1:
                return metrics
            keys = sorted(metrics)
            values = torch.tensor([math.nan if metrics[k] is None else float(metrics[k]) for k in keys],
                                  device=self.accelerator.device)
            gathered = self.accelerator.gather(values[None]).nanmean(0).tolist()
            return {k: None if math.isnan(v) else v for k, v in zip(keys, gathered, strict=True)}

        # -- evaluation: sampled completions of the validation prompts, scored --

        def _sample_scores(self, rows: list[dict]) -> tuple[list[list[int]], Any, Any]:
            prompts, completions = self._generate(rows)
            batch = {k: v.to(self.accelerator.device)
                     for k, v in rollout_tensors(prompts, completions, self.settings.pad_id).items()}
            scores, per_reward, _ = self._score(rows, batch, completions)
            return completions, scores, per_reward

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            dataset = self.eval_dataset if eval_dataset is None else eval_dataset
            size = self.args.per_device_eval_batch_size
            scores, per_reward, lengths = [], [], []
            for start in range(0, len(dataset), size):
                rows = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
                completions, batch_scores, batch_rewards = self._sample_scores(rows)
                scores.append(batch_scores)
                per_reward.append(batch_rewards)
                lengths += [len(c) for c in completions]
            all_rewards = torch.cat(per_reward)
            metrics = {f"{metric_key_prefix}_objective/scores": torch.cat(scores).mean().item(),
                       f"{metric_key_prefix}_completions/mean_length": sum(lengths) / max(len(lengths), 1)}
            for i, name in enumerate(self.scorer.names):
                metrics[f"{metric_key_prefix}_rewards/{name}/mean"] = all_rewards[:, i].nanmean().item()
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def write_sample_generations(self) -> None:
            rows = [self.eval_dataset[i] for i in range(min(self.args.per_device_eval_batch_size,
                                                            len(self.eval_dataset)))]
            completions, scores, per_reward = self._sample_scores(rows)
            if not self.is_world_process_zero():
                return
            texts = self.processing_class.batch_decode(completions, skip_special_tokens=True)
            with (Path(self.args.output_dir) / COMPLETIONS_FILE).open("a", encoding="utf-8") as f:
                for row, text, score, rewards in zip(rows, texts, scores.tolist(), per_reward.tolist(), strict=True):
                    f.write(json.dumps({"step": self.state.global_step, "prompt": row["prompt"], "completion": text,
                                        "score": score, **dict(zip(self.scorer.names, rewards, strict=True))},
                                       ensure_ascii=False, default=str) + "\n")

        # -- checkpoints: the policy as every method saves it, the value model in value_model/ --

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if not self.args.should_save:
                return
            output = Path(output_dir or self.args.output_dir)
            output.mkdir(parents=True, exist_ok=True)
            parts = self.parts
            parts.policy.save_pretrained(output)
            parts.value.save_pretrained(output / VALUE_DIR)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output)
                self.processing_class.save_pretrained(output / VALUE_DIR)
            torch.save(self.args, output / "training_args.bin")

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Resume: the policy from the checkpoint, the value model from its value_model/ (transformers' own
            loader would look for one model's weights)."""
            parts = self.parts
            load_weights(parts.policy, Path(resume_from_checkpoint))
            load_weights(parts.value, Path(resume_from_checkpoint) / VALUE_DIR)

    return SwiftPPOTrainer


def _trim(batch: dict) -> dict:
    """A micro-batch without the columns that are padding in all its rows (left of the prompts, right of the
    completions)."""
    attention = batch["attention_mask"]
    lead = int((attention.cumsum(1) == 0).sum(1).min())
    width = int(batch["completion_mask"].sum(1).max())
    full = attention.shape[1]
    tail = batch["completion_mask"].shape[1] - width  # right padding every row has
    out = {}
    for key, value in batch.items():
        if value.shape[1] == full:  # [b, P + C]
            out[key] = value[:, lead:full - tail]
        else:  # [b, C]
            out[key] = value[:, :width]
    return out


def load_weights(model: Any, directory: Path) -> None:
    """Load a checkpoint's weights into a model in place: a PEFT adapter, or full (possibly sharded) weights."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(directory / "adapter_model.safetensors"))
        return
    if (directory / "model.safetensors.index.json").is_file():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, str(directory), strict=False)
        return
    result = model.load_state_dict(load_file(directory / "model.safetensors"), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{directory}: weights the model does not have: {result.unexpected_keys[:5]}")


# ----- flags and the build -----

# the --rlhf_type ppo flags of RlhfArgs (the rest belong to other methods and are refused when given)
USED_RLHF_FLAGS = ("rlhf_type", "ref_model", "reward_model", "max_completion_length", "temperature", "top_p", "top_k",
                   "repetition_penalty", "stop_words", "reward_funcs", "reward_weights", "use_vllm")
HINTS = {
    "epsilon": "GRPO's clip range; PPO's is --cliprange (and --cliprange_value for the value)",
    "beta": "PPO's KL weight is --kl_coef",
    "num_generations": "PPO samples one completion per prompt and learns a value baseline instead of a group",
    "num_iterations": "PPO's passes over a rollout batch are --num_ppo_epochs",
    "scale_rewards": "PPO whitens its advantages; --whiten_rewards scales the rewards",
    "multi_turn_scheduler": "PPO rolls out single-turn completions",
    **dict.fromkeys(("sleep_level", "offload_model", "offload_optimizer"),
                    "GRPO's GPU-memory options of colocated vLLM; not wired for PPO's value model"),
}


def check_ppo(args: RlhfArguments) -> list[str]:
    """Flag problems of --rlhf_type ppo, before anything loads."""
    from swift.train.arguments import RlhfArgs
    from swift.train.rlhf.methods import reward_flag_problems, vllm_problems

    rlhf, ppo, train, template = args.rlhf, args.ppo, args.train, args.template
    problems = reward_flag_problems(args, "ppo", learns="; PPO learns a value model against it")
    defaults = RlhfArgs()
    for field in fields(RlhfArgs):
        name = field.name
        if name in USED_RLHF_FLAGS or name.startswith("vllm_") or getattr(rlhf, name) == getattr(defaults, name):
            continue
        problems.append(f"--{name}: not a --rlhf_type ppo flag ({HINTS.get(name, 'it belongs to another method')})")
    problems += vllm_problems(args)
    if rlhf.temperature <= 0:
        problems.append(f"--temperature {rlhf.temperature:g}: PPO takes the log-probabilities at the sampling "
                        "temperature, so it must be > 0 (--top_k 1 samples greedily)")
    for flag, low in (("num_ppo_epochs", 1), ("num_mini_batches", 1), ("local_rollout_forward_batch_size", 1),
                      ("num_sample_generations", 0)):
        if getattr(ppo, flag) < low:
            problems.append(f"--{flag} {getattr(ppo, flag)}: must be at least {low}")
    for flag in ("kl_coef", "vf_coef"):
        if getattr(ppo, flag) < 0:
            problems.append(f"--{flag} {getattr(ppo, flag):g}: must be >= 0")
    for flag in ("cliprange", "cliprange_value"):
        if getattr(ppo, flag) <= 0:
            problems.append(f"--{flag} {getattr(ppo, flag):g}: must be > 0")
    for flag in ("gamma", "lam"):
        if not 0 <= getattr(ppo, flag) <= 1:
            problems.append(f"--{flag} {getattr(ppo, flag):g}: must be within [0, 1]")
    if rlhf.ref_model and ppo.kl_coef == 0:
        problems.append("--ref_model with --kl_coef 0: PPO uses the reference only for the KL penalty")
    if ppo.response_length is not None and ppo.response_length < 1:
        problems.append(f"--response_length {ppo.response_length}: must be at least 1")
    if (ppo.response_length is not None and rlhf.max_completion_length != defaults.max_completion_length
            and ppo.response_length != rlhf.max_completion_length):
        problems.append(f"--response_length {ppo.response_length} and --max_completion_length "
                        f"{rlhf.max_completion_length}: one flag, two values (response_length is ms-swift's older "
                        "name); give one")
    has_val = bool(args.data.val_dataset) or args.data.split_dataset_ratio > 0
    if ppo.num_sample_generations != 10 and ppo.num_sample_generations and not has_val:
        problems.append("--num_sample_generations samples completions of validation prompts: give --val_dataset or "
                        "--split_dataset_ratio")
    if args.tuner.train_type not in TUNERS:
        problems.append(f"--train_type {args.tuner.train_type} with --rlhf_type ppo: PPO is built for "
                        f"{' and '.join(TUNERS)} (the value model takes the policy's tuner)")
    if train.deepspeed or train.fsdp:
        problems.append(f"--{'deepspeed' if train.deepspeed else 'fsdp'} with --rlhf_type ppo: PPO trains the policy "
                        "and the value model as one module whose checkpoints are written part by part, which is "
                        "not built for sharded weights; train with DDP (NPROC_PER_NODE)")
    refused = {
        "--packing": template.packing, "--streaming": args.data.streaming, "--lazy_tokenize": args.data.lazy_tokenize,
        "--group_by_length": train.group_by_length, "--neftune_noise_alpha": train.neftune_noise_alpha is not None,
        "--router_aux_loss_coef": train.router_aux_loss_coef != 0, "--use_galore": args.galore.use_galore,
        "--load_best_model_at_end": train.load_best_model_at_end, "--label_names": bool(train.label_names),
        "--loss_scale": template.loss_scale != "default", "--max_new_tokens": train.max_new_tokens != 64,
    }
    for flag, given in refused.items():
        if given:
            problems.append(f"{flag} with --rlhf_type ppo: PPO trains on completions it samples from prompts "
                            "(rolled out and scored a batch at a time), so the flag has nothing to act on")
    wants_metric = train.save_strategy == "best" or train.early_stop_interval
    if wants_metric and not train.metric_for_best_model:
        problems.append("--save_strategy best / --early_stop_interval with --rlhf_type ppo: PPO's evaluation has no "
                        "loss; name its metric, e.g. --metric_for_best_model objective/scores")
    return problems


def build_ppo(run: Run) -> tuple[Any, int]:
    from swift.core import ConfigError, processing_class, resolve_rewards
    from swift.train.recipe import prepare_tuner, trainer_kwargs, training_arguments
    from swift.train.rlhf import layouts
    from swift.train.rlhf.methods import grpo_rollout, load_frozen
    from swift.tuners import prepare_model

    rlhf, ppo, targs = run.args.rlhf, run.args.ppo, run.args.train
    max_tokens = ppo.response_length or rlhf.max_completion_length
    train = layouts.prompt_rows(run.train_rows)
    val = None if run.val_rows is None else layouts.prompt_rows(run.val_rows)
    settings = PpoSettings(ppo, rlhf.temperature, max_tokens, run.template.pad_id, (), targs.per_device_train_batch_size,
                           targs.gradient_accumulation_steps, run.args.data.dataset_shuffle)
    steps = ppo_steps(run, len(train), settings)

    funcs = resolve_rewards(rlhf.reward_funcs, max_completion_length=max_tokens)
    reward_models = [_same_vocabulary(run, "--reward_model", path, *load_frozen(run, path, num_labels=1))
                     for path in rlhf.reward_model]
    names = [*rlhf.reward_funcs, *(Path(p).name for p in rlhf.reward_model)]
    scorer = Scorer(funcs, reward_models, names, list(rlhf.reward_weights) or [1.0] * len(names))
    source = ppo.value_model or (rlhf.reward_model[0] if rlhf.reward_model else run.args.model.model)
    value, _ = load_frozen(run, source, num_labels=1)
    _same_vocabulary(run, "--value_model", source, value, _)
    score_head(value)  # (a clear error now for a model without one)
    ref = None
    if rlhf.ref_model:
        ref = load_frozen(run, rlhf.ref_model)[0]
    elif ppo.kl_coef > 0 and run.args.tuner.train_type == "full":
        ref = load_frozen(run, run.args.model.model)[0]  # full training: a frozen copy of the starting policy
    prepare_tuner(run, steps)
    value = prepare_model(value, run.args.tuner, total_steps=steps, seed=targs.seed,
                          learning_rate=run.learning_rate).model
    value.config.use_cache = False
    # the checkpointing rule's micro-batch: prompts + completions, through two models (policy and value)
    longest = 2 * targs.per_device_train_batch_size * (_longest_prompt(run, train) + max_tokens)
    config = training_arguments(run, steps, has_eval=val is not None, micro_batch_tokens=longest)
    resolved = replace(run.args, rlhf=replace(rlhf, max_completion_length=max_tokens))
    rollout = grpo_rollout(replace(run, args=resolved))
    if rollout is None:
        raise ConfigError("--rlhf_type ppo rolls out on swift-infer's engines: pip install swift-infer")
    if hasattr(rollout, "max_batch_size"):  # the PyTorch engine: completions decoded at once
        rollout.max_batch_size = ppo.local_rollout_forward_batch_size
    settings.stop_ids = rollout.stops
    keep_logits = targs.use_logits_to_keep is not False and _takes_logits_to_keep(run.model)
    model = _torch_classes().PolicyAndValue(run.model, value, keep_logits=keep_logits)
    trainer = ppo_trainer_class()(
        model=model, ref_model=ref, scorer=scorer, rollout=rollout, settings=settings, args=config,
        train_dataset=train, eval_dataset=val, processing_class=processing_class(run.tokenizer), **trainer_kwargs(run))
    return trainer, len(train)


def ppo_steps(run: Run, n_rows: int, settings: PpoSettings) -> int:
    """Optimizer steps of the run: --max_steps, else epochs x (whole rollout batches x num_ppo_epochs x
    num_mini_batches). A rollout batch that the rows cannot fill is dropped."""
    from swift.core import ConfigError, env

    per_step = settings.rollout_batch * env.world_size()
    if n_rows < per_step:
        raise ConfigError(f"--rlhf_type ppo: a rollout batch is --per_device_train_batch_size x "
                          f"--gradient_accumulation_steps x --num_mini_batches x processes = {per_step} prompts, and "
                          f"the training split has {n_rows}; lower them or add rows")
    targs = run.args.train
    if targs.max_steps > 0:
        return targs.max_steps
    per_epoch = n_rows // per_step * settings.ppo.num_ppo_epochs * settings.ppo.num_mini_batches
    return max(1, math.ceil(per_epoch * targs.num_train_epochs))


def _longest_prompt(run: Run, rows: Any, sample: int = 1000) -> int:
    """Tokens of the longest prompt among the first `sample` rows (for the gradient-checkpointing rule: a PPO
    micro-batch is prompts + completions, not --max_length rows)."""
    longest = max((len(run.template.encode({"messages": row["prompt"]})["input_ids"])
                   for row in rows.select(range(min(sample, len(rows))))), default=0)
    return min(longest, run.max_length)


def _same_vocabulary(run: Run, flag: str, path: str, model: Any, tokenizer: Any) -> Any:
    """PPO scores the policy's token ids as they are: a reward / value model must read them the same way."""
    from swift.core import ConfigError

    if tokenizer is not None and tokenizer.get_vocab() != run.tokenizer.get_vocab():
        raise ConfigError(f"{flag} {path}: its tokenizer is not the policy's; PPO scores the policy's token ids "
                          "directly, so the reward and value models must share the policy's vocabulary (as in "
                          "ms-swift)")
    return model


def _takes_logits_to_keep(model: Any) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
