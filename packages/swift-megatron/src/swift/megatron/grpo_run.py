"""`megatron rlhf --rlhf_type grpo`: GRPO on the mcore GPTModel, `megatron sft`'s recipe whose batches are rollouts.

Every `steps_per_generation x num_iterations` steps (ms-swift's schedule; sizes count completions):

1. the policy's weights are gathered over each model-parallel group (TP x PP) into an HF model of the same
   checkpoint on the group's first rank, LoRA merged (`sync.py`);
2. each data-parallel replica takes its share of the rollout batch's prompts (`generation_batch_size /
   num_generations`, in the dataset's seeded epoch order) and samples `num_generations` completions of each with
   transformers' `generate` (swift.megatron may not import swift-infer), seeded by step and replica, then scores
   them with `--reward_funcs`; the group's other ranks receive them, and every rank gathers every replica's;
3. swift-core's `group_advantages` turns the rewards into advantages over the whole batch (identical on every
   rank), which is cut into `steps_per_generation` global batches of prompt + completion sequences (labels on the
   completion);
4. forward-only passes of the same schedule store each completion token's log-probability under the reference
   (`--beta` != 0: the base with the adapter off, or a frozen copy of the initial weights / --ref_model /
   --ref_load) and, when a batch is trained more than once, under the rollout policy (the ratio's denominator;
   otherwise the policy's own detached log-probabilities, ratio 1, as trl).

The loss is trl's clipped GRPO loss (`grpo.py`). Logged per step beside it: the trained batch's `reward`,
`reward_std` (mean of the groups' stds), `rewards/<func>/mean|std`, `frac_reward_zero_std`,
`completions/mean_length|min_length|max_length|clipped_ratio`, `kl` (beta != 0) and `clip_ratio/region_mean`;
`--log_completions` appends every rollout to completions.jsonl.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from swift.megatron.grpo import GrpoSettings, generate_rollouts, logps_step, policy_step, reduce_metrics

logger = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class RolloutContext:
    """What the rollouts need of the run: the model's shape and layout, the HF side, the batch plan (micro-batch
    size, data-parallel rank) and where completions.jsonl goes."""

    shape: Any
    parallel: Any
    lora_spec: Any
    hf_config: Any
    tokenizer: Any
    plan: Any  # swift.megatron.data.BatchPlan of the training steps
    seed: int
    run_dir: Path
    dtype: Any
    gathered: Any = nullcontext  # () -> a context in which the parameters are up to date (--overlap_param_gather)
    vllm: Any = None  # --use_vllm: () -> grpo_vllm.VllmRollouts (built on each model-parallel group's first rank)


@dataclass
class Chunk:
    """One step's share of a rollout batch on this rank: its micro-batches, their length, the logged rollout
    metrics and the global batch's tokens."""

    micro: list[dict]
    seq_length: int
    metrics: dict[str, float]
    tokens: int


@dataclass
class GrpoRun:
    """A run's GRPO: its settings, prompt rows and reference (`plan` as DPO's: None with --beta 0; `reference` the
    frozen model, None for the adapter-off base)."""

    settings: GrpoSettings
    prompts: list[dict]
    plan: dict | None
    reference: Any = None

    @property
    def meta(self) -> dict:
        recorded = None if self.plan is None else {k: v for k, v in self.plan.items() if k != "copy"}
        return {"rlhf_type": "grpo", "dpo_reference": recorded}

    def objective(self, model: Any, gpt: Any, forward_backward: Any, context: RolloutContext):
        from swift.megatron.step import Objective

        roller = Roller(self, model, gpt, forward_backward, context)
        return Objective(forward_step=partial(policy_step, settings=self.settings.loss), metrics=roller.metrics,
                         batches=roller.batches, step_tokens=roller.step_tokens)


def prepare_grpo(settings: GrpoSettings, prompts: list[dict], args: Any, source: Any, gpt: Any, shape: Any,
                 parallel: Any, config: Any, *, lora_spec: Any) -> GrpoRun:
    """The reference of a run whose policy `gpt` holds its starting weights (before DDP and the first step)."""
    from swift.megatron.dpo_reference import build_reference_model, reference_plan

    plan = None if settings.loss.beta == 0 else reference_plan(args, source, lora=lora_spec is not None)
    reference = None
    if plan is not None and not plan.get("adapter_off"):
        reference = build_reference_model(plan, args, gpt, source.hf_config, shape, parallel, config,
                                          dtype=config.params_dtype, lora_spec=lora_spec, seed=args.megatron.seed)
    return GrpoRun(settings, prompts, plan, reference)


@dataclass
class Roller:
    """The steps' batches of a GRPO run: rollouts every `steps_per_generation x num_iterations` steps."""

    run: GrpoRun
    model: Any  # the policy's DDP wrapper
    gpt: Any
    forward_backward: Any
    context: RolloutContext
    engine: Any = None  # the rollout engine (HfRollouts / VllmRollouts), on each model-parallel group's first rank
    buffer: list[Chunk] = field(default_factory=list)
    generation: int | None = None
    current: Chunk | None = None

    def __post_init__(self) -> None:
        from swift.core import resolve_rewards

        self.rewards = resolve_rewards(list(self.run.settings.reward_funcs),
                                       max_completion_length=self.run.settings.loss.max_completion_length)

    # ------------------------------------------------------------------------------------------------ schedule

    def batches(self, start: int, stop: int):
        s = self.run.settings
        every = s.steps_per_generation * s.num_iterations
        for step in range(start, stop):
            generation, offset = divmod(step, every)
            if generation != self.generation:
                if offset:
                    logger.warning("resumed inside a rollout batch (step %d of %d): its rollouts are drawn again with "
                                   "the resumed weights", offset + 1, every)
                self.buffer, self.generation = self.rollout(generation, first_step=generation * every + 1), generation
            self.current = self.buffer[offset % s.steps_per_generation]
            yield self.current.micro, self.current.seq_length
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def metrics(self, out: list[dict]) -> dict[str, float]:
        return self.current.metrics | reduce_metrics(out, self.run.settings.loss)

    def step_tokens(self, step: int) -> int:
        return self.current.tokens

    # ------------------------------------------------------------------------------------------------ rollout

    def rollout(self, generation: int, *, first_step: int) -> list[Chunk]:
        import torch
        import torch.distributed as dist

        from megatron.core import parallel_state as ps
        from swift.core import group_advantages
        from swift.megatron.data import BatchPlan, global_batch_indices
        from swift.megatron.sync import gather_hf_state

        s, ctx = self.run.settings, self.context
        indices = global_batch_indices(len(self.run.prompts), generation,
                                       BatchPlan(s.prompts_per_generation, 1, 1, 0, seed=ctx.plan.seed))
        group = ps.get_model_parallel_group()
        src = dist.get_process_group_ranks(group)[0]
        generates = dist.get_rank() == src
        if generates and self.engine is None:
            self.engine = ctx.vllm() if ctx.vllm is not None else HfRollouts(ctx.hf_config, ctx.dtype)
        fused = bool(generates and getattr(self.engine, "fused_experts", False))
        fused = _agree(fused, group, src)
        with ctx.gathered():
            state = gather_hf_state(self.model, ctx.shape, ctx.parallel, lora_spec=ctx.lora_spec, dst=src,
                                    fused_experts=fused)
        if generates:
            self.engine.load(state)
            del state
        records = self.roll(indices, generation, 0, group=group, src=src)
        rounds = 1
        if s.dynamic_sample:
            records, rounds = self.resample(records, generation, group=group, src=src)
        rewards = torch.tensor([r["rewards"] for r in records], dtype=torch.float32).view(len(records), -1)
        advantages = group_advantages(rewards, torch.tensor(s.reward_weights), s.num_generations,
                                      estimator=s.estimator, scale=s.scale)
        if s.log_completions and dist.get_rank() == 0:
            self.log_completions(first_step, records, rewards, advantages)
        size = len(records) // s.steps_per_generation
        chunks = [self.chunk(records[c * size:(c + 1) * size], rewards[c * size:(c + 1) * size],
                             advantages[c * size:(c + 1) * size]) for c in range(s.steps_per_generation)]
        if s.dynamic_sample:
            for chunk in chunks:
                chunk.metrics["dynamic_sample/rounds"] = float(rounds)
        return chunks

    def roll(self, indices: list[int], generation: int, round_: int, *, group: Any, src: int) -> list[dict]:
        """The scored completions of the prompts `indices` (every replica rolls out its share), on every rank in
        the prompts' order."""
        import torch.distributed as dist

        from megatron.core import parallel_state as ps
        from swift.megatron.grpo import broadcast_rollouts

        s, ctx = self.run.settings, self.context
        dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        share = indices[len(indices) * dp_rank // dp: len(indices) * (dp_rank + 1) // dp]
        records = None
        if dist.get_rank() == src:
            prompts = [self.run.prompts[i]["prompt_ids"] for i in share]
            completions = [] if not prompts else self.engine.generate(
                prompts, num_generations=s.num_generations, max_tokens=s.loss.max_completion_length,
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, repetition_penalty=s.repetition_penalty,
                stop_token_ids=s.stop_token_ids, seed=ctx.seed + 1_000_003 * round_ + generation * dp + dp_rank)
            records = self.score([i for i in share for _ in range(s.num_generations)], completions)
        records = broadcast_rollouts(records, src=src, group=group)
        parts: list = [None] * dp
        dist.all_gather_object(parts, records, group=ps.get_data_parallel_group())
        return [r for part in parts for r in part]

    def resample(self, records: list[dict], generation: int, *, group: Any, src: int) -> tuple[list[dict], int]:
        """DAPO's dynamic sampling: groups whose rewards are all equal (no signal) are replaced by groups of new
        prompts (seeded draws from the dataset), for up to --max_resample_times more rounds; groups still missing
        after those are filled with zero-spread ones, as ms-swift does. Returns (records, rounds rolled out)."""
        import random

        import torch

        from swift.core import total_rewards, zero_std_groups

        s, g = self.run.settings, self.run.settings.num_generations
        weights = torch.tensor(s.reward_weights)

        def split(rows: list[dict]) -> tuple[list[list[dict]], list[list[dict]]]:
            rewards = torch.tensor([r["rewards"] for r in rows], dtype=torch.float32).view(len(rows), -1)
            flat = zero_std_groups(total_rewards(rewards, weights), g).tolist()
            groups = [rows[i * g:(i + 1) * g] for i in range(len(flat))]
            return [x for x, bad in zip(groups, flat, strict=True) if not bad], \
                [x for x, bad in zip(groups, flat, strict=True) if bad]

        wanted = len(records) // g
        valid, spare = split(records)
        rounds = 1
        rng = random.Random(f"{self.context.plan.seed}-{generation}")
        while len(valid) < wanted and rounds <= s.max_resample_times:
            indices = [rng.randrange(len(self.run.prompts)) for _ in range(wanted)]
            more_valid, more_spare = split(self.roll(indices, generation, rounds, group=group, src=src))
            valid += more_valid
            spare += more_spare
            rounds += 1
        return [r for chunk in (valid + spare)[:wanted] for r in chunk], rounds

    def score(self, owners: list[int], completions: list[list[int]]) -> list[dict]:
        """Each completion's record: its prompt (index), ids, text, whether it ended, and every reward (NaN: the
        function has no opinion)."""
        s, tokenizer = self.run.settings, self.context.tokenizer
        texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        rows = [self.run.prompts[i] for i in owners]
        columns = sorted({k for row in rows for k in row["data"]} - {"prompt", "completions", "completion_ids"})
        extra = {k: [row["data"].get(k) for row in rows] for k in columns}
        values = []
        for func in self.rewards:
            got = list(func(texts, prompts=[row["messages"] for row in rows], completion_ids=completions, **extra))
            if len(got) != len(texts):
                from swift.core import ConfigError

                raise ConfigError(f"--reward_funcs {func.__name__}: returned {len(got)} rewards for {len(texts)} "
                                  "completions")
            values.append([math.nan if v is None else float(v) for v in got])
        stops = set(s.stop_token_ids)
        return [{"prompt": owner, "ids": ids, "text": text, "ended": bool(ids) and ids[-1] in stops,
                 "rewards": [column[i] for column in values]}
                for i, (owner, ids, text) in enumerate(zip(owners, completions, texts, strict=True))]

    def chunk(self, records: list[dict], rewards, advantages) -> Chunk:
        """One step's global batch of `records` as this rank's micro-batches, with the stored log-probabilities
        the loss needs and the batch's logged metrics."""

        from swift.megatron.data import collate

        s, plan = self.run.settings, self.context.plan
        sequences = []
        for record in records:
            prompt, completion = self.run.prompts[record["prompt"]]["prompt_ids"], record["ids"]
            kept = not (s.overlong_filter and not record["ended"])
            sequences.append({"input_ids": prompt + completion,
                              "labels": [IGNORE] * len(prompt) + (completion if kept else [IGNORE] * len(completion))})
        length = max(len(q["input_ids"]) for q in sequences)
        length = -(-length // plan.pad_multiple) * plan.pad_multiple
        per_rank = len(sequences) // plan.data_parallel_size
        first = plan.data_parallel_rank * per_rank
        micro = []
        for j in range(first, first + per_rank, plan.micro_batch_size):
            batch = collate(sequences[j:j + plan.micro_batch_size], length)
            batch["advantages"] = advantages[j:j + plan.micro_batch_size].clone()
            micro.append(batch)
        self.store_logps(micro, length)
        return Chunk(micro, length, rollout_metrics(records, rewards, s), sum(len(q["input_ids"]) for q in sequences))

    def store_logps(self, micro: list[dict], length: int) -> None:
        """The reference's log-probabilities (beta != 0) and, when the batch is trained more than once, the rollout
        policy's, into each micro-batch (on the last pipeline stage)."""
        import torch

        from swift.megatron.dpo_reference import Reference

        run = self.run
        if run.settings.reuses_rollouts:
            self.model.eval()
            with torch.no_grad():
                self.forward_backward(forward_step_func=logps_step("old_logps"), data_iterator=iter(micro),
                                      model=[self.model], num_microbatches=len(micro), seq_length=length,
                                      micro_batch_size=micro[0]["tokens"].shape[0], forward_only=True)
            self.model.train()
        if run.plan is not None:
            reference = Reference(self.model, self.gpt, self.forward_backward, step=logps_step("ref_logps")) \
                if run.reference is None else Reference(run.reference, None, self.forward_backward,
                                                        step=logps_step("ref_logps"))
            reference(micro, length)

    def log_completions(self, step: int, records: list[dict], rewards, advantages) -> None:
        from swift.core import completion_records

        prompts = [self.run.prompts[r["prompt"]]["messages"] for r in records]
        rows = completion_records(step, prompts, [r["text"] for r in records], rewards,
                                  list(self.run.settings.reward_funcs), advantages)
        path = self.context.run_dir / "completions.jsonl"
        with path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)


def rollout_metrics(records: list[dict], rewards, settings: GrpoSettings) -> dict[str, float]:
    """trl's rollout metrics of one step's batch (whole groups of `num_generations`)."""
    import torch

    from swift.core import total_rewards, zero_std_groups

    g = settings.num_generations
    totals = total_rewards(rewards, torch.tensor(settings.reward_weights))
    lengths = torch.tensor([len(r["ids"]) for r in records], dtype=torch.float32)
    out = {"reward": _finite(totals.nanmean()),
           "reward_std": _finite(torch.nanmean(_group_std(totals.view(-1, g)))),
           "frac_reward_zero_std": float(zero_std_groups(totals, g).float().mean())}
    for i, name in enumerate(settings.reward_funcs):
        column = rewards[:, i]
        out[f"rewards/{name}/mean"] = _finite(column.nanmean())
        out[f"rewards/{name}/std"] = _finite(_group_std(column.view(1, -1))[0])
    out |= {"completions/mean_length": float(lengths.mean()), "completions/min_length": float(lengths.min()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": sum(not r["ended"] for r in records) / len(records)}
    return out


def _group_std(values):
    """Each row's sample std ignoring NaN (NaN where fewer than two values)."""
    import torch

    count = (~torch.isnan(values)).sum(dim=1)
    mean = torch.nanmean(values, dim=1, keepdim=True)
    squares = torch.nansum((values - mean) ** 2, dim=1)
    return torch.where(count > 1, (squares / (count - 1).clamp(min=1)).sqrt(), torch.nan)


def _finite(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _agree(value: bool, group: Any, src: int) -> bool:
    """`src`'s value on every rank of `group` (the gather's layout must be the same everywhere)."""
    import torch.distributed as dist

    if dist.get_world_size(group) == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, group=group)
    return bool(box[0])


class HfRollouts:
    """The default rollout engine: an HF causal LM of the policy's architecture (weights from each sync) sampling
    with transformers' `generate` (`grpo.generate_rollouts`)."""

    def __init__(self, hf_config: Any, dtype: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
        if torch.cuda.is_available():
            model.cuda(torch.cuda.current_device())
        self.model = model.eval().requires_grad_(False)
        from swift.megatron.sync import has_fused_experts

        self.fused_experts = has_fused_experts(self.model)
        self.pad_token_id = getattr(hf_config, "pad_token_id", None)

    def load(self, hf_state: dict) -> None:
        from swift.megatron.sync import load_into_hf

        load_into_hf(self.model, hf_state)

    def generate(self, prompts: list[list[int]], *, num_generations: int, max_tokens: int, temperature: float,
                 top_p: float, top_k: int, repetition_penalty: float, stop_token_ids: tuple[int, ...],
                 seed: int) -> list[list[int]]:
        pad = self.pad_token_id if self.pad_token_id is not None else (stop_token_ids[0] if stop_token_ids else 0)
        return generate_rollouts(self.model, prompts, num_generations=num_generations,
                                 max_completion_length=max_tokens, temperature=temperature, seed=seed,
                                 pad_token_id=pad, eos_token_id=list(stop_token_ids), top_p=top_p, top_k=top_k,
                                 repetition_penalty=repetition_penalty)

    def close(self) -> None:
        self.model = None
