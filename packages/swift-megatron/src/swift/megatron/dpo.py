"""`megatron rlhf --rlhf_type dpo`: Direct Preference Optimization on the mcore GPTModel, `megatron sft`'s recipe with
another objective.

- Rows: the preference rows `swift rlhf --rlhf_type dpo` takes (`messages` + `rejected_response`, or `prompt` /
  `chosen` / `rejected`), encoded by swift-core's template into prompt / chosen / rejected ids
  (`swift.core.preference_ids`: the answer is the last assistant turn). A row without a rejected answer is refused
  before any weights load, by file, row and field.
- A micro-batch of n rows is 2n sequences, the n chosen ones then the n rejected ones (prompt + answer, labels on
  the answer only), through the policy in one forward; `--packing` puts whole pairs in bins of --max_length tokens
  (each sequence attends to itself). The per-token cross-entropy of mcore's (vocab-parallel) output gives each
  answer's summed log-probability.
- The reference's log-probabilities are taken before the policy's pass of each step, by the same schedule run
  forward-only (so tensor and pipeline parallelism need nothing of their own): the base with the LoRA adapter
  switched off (no second copy), or a frozen second GPTModel sharded like the policy (full training: the initial
  weights; `--ref_model` / `--ref_load`), none with `--reference_free` (`dpo_reference.py`). They land in each
  micro-batch dict as `ref_logps` on the last pipeline stage, where the loss is taken.
- The loss (`dpo_loss`: trl's DPO losses; label smoothing as ms-swift's, conservative DPO for sigmoid) is each
  pair's, plus `--rpo_alpha` x the NLL of the micro-batch's chosen answers (per token, as trl's "sft" term); mcore
  divides by the global batch's pairs (calculate_per_token_loss). Logged beside it, reduced over data- and
  pipeline-parallel ranks: trl's rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
  logps/chosen, logps/rejected (and nll_loss with --rpo_alpha).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from swift.core import ConfigError, DatasetRowError

logger = logging.getLogger(__name__)

IGNORE = -100

# --loss_type: name -> (takes --label_smoothing, takes --f_divergence_type); trl's formulas
DPO_LOSSES: dict[str, tuple[bool, bool]] = {
    "sigmoid": (True, True), "hinge": (False, True), "ipo": (False, True), "robust": (True, True),
    "exo_pair": (True, True), "sigmoid_norm": (False, True), "nca_pair": (False, False),
    "sppo_hard": (False, False), "aot": (True, False), "aot_unpaired": (True, False), "apo_zero": (False, False),
    "apo_down": (False, False)}
REFUSED_LOSSES = {
    "bco_pair": "it keeps a running mean of the rewards across steps, which checkpoints here do not carry",
    "discopop": "its temperature (trl's discopop_tau) has no flag here",
    "sft": "pass --rpo_alpha W for DPO plus W x the NLL of the chosen answer"}
DEFAULT_BETA = 0.1
F_DIVERGENCES = ("reverse_kl", "js_divergence")
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected", "nll_loss")


@dataclass(frozen=True)
class DpoSettings:
    """The DPO objective of a run: `--beta`, `--loss_type`, `--label_smoothing`, `--rpo_alpha`,
    `--reference_free`, `--f_divergence_type`."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float | None = None
    reference_free: bool = False
    f_divergence_type: str = "reverse_kl"

    @classmethod
    def of(cls, rlhf: Any, loss_type: str | None) -> DpoSettings:
        return cls(DEFAULT_BETA if rlhf.beta is None else rlhf.beta, loss_type or "sigmoid", rlhf.label_smoothing,
                   rlhf.rpo_alpha, rlhf.reference_free, rlhf.f_divergence_type)


def check_dpo_flags(args: Any) -> list[str]:
    """The problems of `megatron rlhf`'s own flags and of the sft flags DPO cannot honour, before anything loads."""
    from swift.megatron.arguments import loss_type_problems

    rlhf, m = args.rlhf, args.megatron
    loss = m.loss_type or "sigmoid"
    problems = loss_type_problems(loss, DPO_LOSSES, REFUSED_LOSSES, "dpo")
    smoothing, divergence = DPO_LOSSES.get(loss, (True, True))
    if rlhf.beta is not None and not rlhf.beta > 0:
        problems.append(f"--beta {rlhf.beta}: must be above 0")
    if not 0 <= rlhf.label_smoothing < 0.5:
        problems.append(f"--label_smoothing {rlhf.label_smoothing}: must be within [0, 0.5)")
    elif rlhf.label_smoothing and not smoothing:
        takes = ", ".join(k for k, (s, _) in DPO_LOSSES.items() if s)
        problems.append(f"--label_smoothing with --loss_type {loss}: that loss has no label smoothing "
                        f"({takes} have)")
    if rlhf.f_divergence_type != "reverse_kl" and not divergence:
        problems.append(f"--f_divergence_type {rlhf.f_divergence_type} with --loss_type {loss}: trl defines the "
                        "f-divergences for the losses of the chosen-minus-rejected score only "
                        f"({', '.join(k for k, (_, d) in DPO_LOSSES.items() if d)})")
    if rlhf.rpo_alpha is not None and rlhf.rpo_alpha < 0:
        problems.append(f"--rpo_alpha {rlhf.rpo_alpha}: must be at least 0")
    if rlhf.ref_model and rlhf.ref_load:
        problems.append("--ref_model and --ref_load both name the reference model; pass one")
    if rlhf.reference_free and (rlhf.ref_model or rlhf.ref_load):
        problems.append("--reference_free true uses no reference model: drop --ref_model / --ref_load")
    if args.model.task_type not in (None, "causal_lm"):
        problems.append(f"--task_type {args.model.task_type}: megatron rlhf trains causal LMs")
    if args.template.truncation_strategy == "left":
        problems.append("--truncation_strategy left would cut the chosen and rejected conversations by different "
                        "amounts, so that their prompts no longer match; use delete (the default: long rows are "
                        "dropped) or right (the answers' ends are cut)")
    if args.template.loss_scale not in ("default", "last_round"):
        problems.append(f"--loss_scale {args.template.loss_scale}: DPO scores the last answer of each side whole, "
                        "by its summed log-probability (no per-token weights); use default or last_round")
    return problems


# ---------------------------------------------------------------------------------------------------- rows


def encode_pair(template: Any, row: dict) -> dict[str, list[int]]:
    """prompt_ids / chosen_ids / rejected_ids of one preference row, by the template."""
    from swift.core import preference_ids

    return preference_ids(template.encode(row))


def check_preference_rows(rows: Any, data: Any, flag: str = "--dataset") -> None:
    """Every row has a rejected answer; otherwise the first one without is named (file, row, field) before any
    weights load."""
    if rows is None:
        return
    values = _rejected(rows)
    missing = sum(value is None for value in values)
    if not missing:
        return
    from swift.core import load_dataset

    specs = data.dataset if flag == "--dataset" else data.val_dataset
    for spec in specs:  # rows are shuffled (and sampled by #N): find the row in its own file, in file order
        found, _ = load_dataset([spec.partition("#")[0]], strict=data.strict, seed=data.data_seed,
                                columns=data.columns, model_name=data.model_name or None,
                                model_author=data.model_author or None)
        first = next((i for i, value in enumerate(_rejected(found)) if value is None), None)
        if first is not None:
            raise DatasetRowError(spec.partition("#")[0], first + 1, "rejected_response",
                                  f"DPO trains on preference rows, and this one has no rejected answer ({missing} of "
                                  f"{len(values)} rows have none): give `rejected_response` beside `messages`, or "
                                  "`chosen` and `rejected`")
    raise ConfigError(f"{flag}: {missing} of {len(values)} rows have no rejected answer (`rejected_response`, or "
                      "`chosen` + `rejected`); DPO trains on preference rows")


def _rejected(rows: Any) -> list:
    """Each row's rejected answer (None where it has none), by column where the rows are a datasets.Dataset."""
    names = getattr(rows, "column_names", None)
    if hasattr(rows, "__len__") and names is not None:
        return rows["rejected_response"] if "rejected_response" in names else [None] * len(rows)
    return [row.get("rejected_response") for row in rows]


def has_answers(row: dict) -> bool:
    """Whether both answers survived truncation (an empty one has no log-probability to compare)."""
    return len(row["chosen_ids"]) > 0 and len(row["rejected_ids"]) > 0


def pair_length(row: dict) -> int:
    """The padded width a row needs: its longer side (unpacked), or all its pairs' sequences (a packed row)."""
    if "pairs" in row:
        return sum(2 * len(p) + len(c) + len(r) for p, c, r in row["pairs"])
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def pair_tokens(row: dict) -> int:
    """Tokens the policy reads for a row: both sequences of every pair."""
    pairs = row["pairs"] if "pairs" in row else [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])]
    return sum(2 * len(p) + len(c) + len(r) for p, c, r in pairs)


def pack_pairs(rows: list[dict], max_length: int) -> list[dict]:
    """--packing: whole pairs (both sequences) in bins of at most `max_length` tokens, best-fit decreasing; a pair
    longer than a bin is dropped (counted in one warning)."""
    from swift.core.dataset import plan_bins

    lengths = [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    fitting = [i for i, n in enumerate(lengths) if n <= max_length]
    if len(fitting) < len(rows):
        logger.warning("--packing: dropped %d of %d pairs whose two sequences together exceed --max_length %d",
                       len(rows) - len(fitting), len(rows), max_length)
    bins = plan_bins([lengths[i] for i in fitting], max_length)
    return [{"pairs": [(rows[fitting[i]]["prompt_ids"], rows[fitting[i]]["chosen_ids"],
                        rows[fitting[i]]["rejected_ids"]) for i in sorted(b)]} for b in bins]


def collate_pairs(rows: Sequence[dict], length: int) -> dict[str, Any]:
    """The micro-batch of `rows`: unpacked, 2n right-padded sequences (the n chosen, then the n rejected); packed,
    one row of tokens per packed row, each pair's chosen then rejected sequence. `segments` [B, L] gives the answer
    sequence each label position belongs to (pair i: i chosen, n + i rejected; -1 elsewhere)."""
    import torch

    from swift.megatron.data import collate

    if any("pairs" in row for row in rows):
        return _collate_packed(rows, length)
    sequences = [(r["prompt_ids"], r["chosen_ids"]) for r in rows] + [(r["prompt_ids"], r["rejected_ids"])
                                                                      for r in rows]
    batch = collate([{"input_ids": list(p) + list(a), "labels": [IGNORE] * len(p) + list(a)} for p, a in sequences],
                    length)
    index = torch.arange(len(sequences)).unsqueeze(1).expand(-1, length)
    batch["segments"] = torch.where(batch["loss_mask"] > 0, index, -1)
    batch["pairs"] = len(rows)
    return batch


def _collate_packed(rows: Sequence[dict], length: int) -> dict[str, Any]:
    import torch

    from swift.megatron.data import collate

    n = sum(len(row["pairs"]) for row in rows)
    flat, owners, pair = [], [], 0
    for row in rows:
        ids, labels, positions, owner = [], [], [], []
        for prompt, chosen, rejected in row["pairs"]:
            for side, answer in ((pair, chosen), (n + pair, rejected)):
                ids += list(prompt) + list(answer)
                labels += [IGNORE] * len(prompt) + list(answer)
                positions += list(range(len(prompt) + len(answer)))
                owner += [side] * (len(prompt) + len(answer))
            pair += 1
        flat.append({"input_ids": ids, "labels": labels, "position_ids": positions})
        owners.append(owner + [-1] * (length - len(owner)))
    batch = collate(flat, length)  # block-diagonal mask; a sequence's last token predicts nothing
    batch["segments"] = torch.where(batch["loss_mask"] > 0, torch.tensor(owners), -1)
    batch["pairs"] = n
    return batch


# ---------------------------------------------------------------------------------------------------- loss


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, settings: DpoSettings, *,
             chosen_lengths=None, rejected_lengths=None):
    """(per-pair losses [n], chosen rewards [n], rejected rewards [n]) from each answer's summed log-probability
    under the policy and the reference (None: --reference_free, a reference giving every answer the same
    probability). The rewards are beta x (log pi - log pi_ref), detached. `*_lengths`: answer tokens, for the
    per-token averages of ipo and sigmoid_norm (as trl 1.x).

    Label smoothing eps is ms-swift's: sigmoid is conservative DPO, -(1-eps) logsig(z) - eps logsig(-z); robust,
    exo_pair (eps 0 taken as 1e-3, the EXO paper's), aot and aot_unpaired use it as trl does."""
    import torch
    import torch.nn.functional as F

    beta, eps, loss_type = settings.beta, settings.label_smoothing, settings.loss_type
    if ref_chosen_logps is None:
        ref_chosen_logps, ref_rejected_logps = torch.zeros_like(chosen_logps), torch.zeros_like(rejected_logps)
    chosen_ratio, rejected_ratio = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    if settings.f_divergence_type == "js_divergence":  # f'(t) = log(2t / (t + 1))
        chosen_score = math.log(2) + F.logsigmoid(chosen_ratio)
        rejected_score = math.log(2) + F.logsigmoid(rejected_ratio)
    else:
        chosen_score, rejected_score = chosen_ratio, rejected_ratio
    if loss_type in ("ipo", "sigmoid_norm"):
        delta = chosen_score / chosen_lengths.clamp(min=1) - rejected_score / rejected_lengths.clamp(min=1)
    else:
        delta = chosen_score - rejected_score
    z = beta * delta

    def smoothed(x):
        return -(1 - eps) * F.logsigmoid(beta * x) - eps * F.logsigmoid(-beta * x)

    if loss_type in ("sigmoid", "sigmoid_norm"):
        losses = smoothed(delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    elif loss_type == "ipo":
        losses = (delta - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    elif loss_type == "exo_pair":
        e = eps or 1e-3
        losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log(1 - e)) + torch.sigmoid(-z) * (
            F.logsigmoid(-z) - math.log(e))
    elif loss_type == "nca_pair":
        chosen, rejected = beta * chosen_ratio, beta * rejected_ratio
        losses = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    elif loss_type == "sppo_hard":
        losses = (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2
    elif loss_type == "aot":
        losses = smoothed(torch.sort(chosen_logps - rejected_logps)[0]
                          - torch.sort(ref_chosen_logps - ref_rejected_logps)[0])
    elif loss_type == "aot_unpaired":
        losses = smoothed(torch.sort(chosen_ratio)[0] - torch.sort(rejected_ratio)[0])
    elif loss_type == "apo_zero":
        losses = 1 - torch.sigmoid(beta * chosen_ratio) + torch.sigmoid(beta * rejected_ratio)
    elif loss_type == "apo_down":
        losses = torch.sigmoid(beta * chosen_ratio) + 1 - torch.sigmoid(beta * (chosen_ratio - rejected_ratio))
    else:
        raise ConfigError(f"--loss_type {loss_type}: not a DPO loss here ({', '.join(DPO_LOSSES)})")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def sequence_logps(per_token, batch: dict):
    """([2n] summed log-probabilities, [2n] label tokens) of the micro-batch's answer sequences, from mcore's
    per-token cross-entropy [B, L]."""
    import torch

    segments = batch["segments"].to(per_token.device)
    here = segments >= 0
    count = 2 * batch["pairs"]
    logps = torch.zeros(count, dtype=torch.float32, device=per_token.device).index_add(
        0, segments[here], -per_token.float()[here])
    lengths = torch.zeros(count, dtype=torch.float32, device=per_token.device).index_add(
        0, segments[here], torch.ones_like(per_token, dtype=torch.float32)[here])
    return logps, lengths


def forward_step(data_iterator, model, *, settings: DpoSettings):
    """mcore's forward step of the policy: the 2n sequences, then `pair_loss` on the last stage."""
    batch = next(data_iterator)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)
    return output, partial(pair_loss, batch, settings)


def pair_loss(batch: dict, settings: DpoSettings, per_token):
    """(the micro-batch's summed pair losses, its pairs, logged totals): mcore sums them over the global batch and
    divides by its pairs."""
    import torch

    n = batch["pairs"]
    logps, lengths = sequence_logps(per_token, batch)
    ref = batch.get("ref_logps")
    if ref is None and not settings.reference_free:
        raise RuntimeError("the reference pass left no ref_logps in the micro-batch")
    ref = None if ref is None else ref.to(logps.device)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        logps[:n], logps[n:], None if ref is None else ref[:n], None if ref is None else ref[n:], settings,
        chosen_lengths=lengths[:n], rejected_lengths=lengths[n:])
    total = losses.sum()
    nll = torch.zeros((), dtype=total.dtype, device=total.device)
    if settings.rpo_alpha is not None:
        # trl's "sft" term: the mean NLL over the micro-batch's chosen answer tokens, weighted as one pair loss
        nll = -logps[:n].sum() / lengths[:n].sum().clamp(min=1)
        total = total + settings.rpo_alpha * nll * n
    stats = torch.stack([chosen_rewards.sum(), rejected_rewards.sum(),
                         (chosen_rewards > rejected_rewards).float().sum(), (chosen_rewards - rejected_rewards).sum(),
                         logps[:n].detach().sum(), logps[n:].detach().sum(), nll.detach() * n])
    pairs = torch.tensor(float(n), dtype=torch.float64)
    return total, torch.tensor(n, dtype=torch.int), {
        "lm loss": torch.stack([total.detach().double().cpu(), pairs]),
        "dpo stats": torch.cat([stats.detach().double().cpu(), pairs.view(1)])}


def reduce_metrics(out: list[dict], settings: DpoSettings) -> dict[str, float]:
    """trl's DPO metrics of one step (the means over every data-parallel rank's pairs), on every rank."""
    from swift.megatron.step import reduce_totals

    totals = reduce_totals(out, key="dpo stats", size=len(METRICS) + 1)
    pairs = max(float(totals[-1]), 1.0)
    names = METRICS if settings.rpo_alpha is not None else METRICS[:-1]
    return {name: float(totals[i]) / pairs for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------------- run


@dataclass
class DpoRun:
    """A run's DPO: its settings, where its reference comes from (`reference_plan`) and the frozen reference model
    (None: the policy with its adapter switched off, or --reference_free)."""

    settings: DpoSettings
    plan: dict | None
    reference: Any = None

    @property
    def meta(self) -> dict:
        """What each checkpoint's swift_mcore.json records, so that a resumed run keeps its reference."""
        recorded = None if self.plan is None else {k: v for k, v in self.plan.items() if k != "copy"}
        return {"rlhf_type": "dpo", "dpo_reference": recorded}

    def objective(self, model: Any, gpt: Any, forward_backward: Any):
        """DPO as the training loop's `Objective` (swift.megatron.step); `model` is the policy's DDP wrapper of
        `gpt`."""
        from swift.megatron.dpo_reference import Reference
        from swift.megatron.step import Objective

        reference = None
        if self.plan is not None:
            reference = Reference(model, gpt, forward_backward) if self.reference is None else Reference(
                self.reference, None, forward_backward)
        return Objective(forward_step=partial(forward_step, settings=self.settings), prepare=reference,
                         metrics=partial(reduce_metrics, settings=self.settings))


def prepare_dpo(settings: DpoSettings, args: Any, source: Any, gpt: Any, shape: Any, parallel: Any, config: Any, *,
                lora_spec: Any) -> DpoRun:
    """The reference of a run whose policy `gpt` holds its starting weights (before DDP and the first step)."""
    from swift.megatron.dpo_reference import build_reference_model, reference_plan

    plan = reference_plan(args, source, lora=lora_spec is not None)
    reference = None
    if plan is not None and not plan.get("adapter_off"):
        reference = build_reference_model(plan, args, gpt, source.hf_config, shape, parallel, config,
                                          dtype=config.params_dtype, lora_spec=lora_spec, seed=args.megatron.seed)
    return DpoRun(settings, plan, reference)
