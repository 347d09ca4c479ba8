"""`megatron sft --task_type seq_cls|embedding|reranker|generative_reranker`: swift sft's encoder tasks on the mcore
GPTModel.

The rows, the per-row objective and the validation statistics are swift.core's (`TaskEncoder`, `task_batch`,
`task_loss`, `task_metrics`), the ones `swift sft --task_type` trains, so both trainers optimise the same thing.
What is Megatron's here:

- a micro-batch is every sequence of its rows (anchor, positive, negatives; or one (query, document) pair per
  document), right-padded, and padded with empty sequences to the step's largest count, so that the pipeline
  stages agree on the activation shape;
- seq_cls / reranker: the output layer is a classification head (`ScoreHead`, HF's `score.weight`, whole on every
  tensor-parallel rank; trained under LoRA too, and saved with the adapter), read at each sequence's last token;
- embedding / generative_reranker: the output layer passes the last hidden states through (gathered from the
  sequence-parallel split); the loss pools each sequence's last token: an L2-normalised embedding, or
  logit("yes") - logit("no") from the two rows of the (vocab-parallel) output weight, summed over TP ranks;
- the loss is each micro-batch's mean over its rows, weighted by its rows, and mcore divides by the global
  batch's rows (calculate_per_token_loss): the mean over the global batch of the rows' losses.

Embedding and generative-reranker checkpoints stay the causal LM; seq_cls / reranker ones export as
`...ForSequenceClassification` (swift.megatron.convert maps the head). Either way `swift infer` reads them back
with the task the run's args.json records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEGATRON_TASKS = ("seq_cls", "embedding", "reranker", "generative_reranker")
HEAD_TASKS = ("seq_cls", "reranker")


@dataclass(frozen=True)
class MegatronTask:
    task_type: str
    loss_type: str | None = None
    yes_no: tuple[int, int] | None = None
    problem_type: str | None = None  # seq_cls
    num_labels: int | None = None  # seq_cls / reranker: the head's rows

    @property
    def has_head(self) -> bool:
        return self.task_type in HEAD_TASKS

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.task_type == "seq_cls":
            return ("mse",) if self.problem_type == "regression" else ("accuracy",)
        return ("mean_pos", "mean_neg", "margin", "mrr")


def check_task_flags(model: Any, loss_type: str | None, *, pretrain: bool, packing: bool,
                     cached: bool) -> list[str]:
    """--task_type / --loss_type / --num_labels / --problem_type problems of `megatron sft|pt` (`model`: ModelArgs)."""
    from swift.core import TASK_LOSSES, task_type_of

    task, problems = task_type_of(model.task_type), []
    if model.num_labels is not None and task not in HEAD_TASKS:
        problems.append(f"--num_labels is for --task_type seq_cls (the classification head); {task} has none")
    if model.problem_type is not None and task != "seq_cls":
        problems.append(f"--problem_type is for --task_type seq_cls, not {task}")
    if task == "causal_lm":
        if loss_type not in (None, "cross_entropy"):
            problems.append(f"--loss_type {loss_type}: the causal LM trains with cross_entropy; the other losses "
                            "are the embedding / reranker tasks' (--task_type)")
        return problems
    if task not in MEGATRON_TASKS:
        return [*problems, f"--task_type {task}: megatron trains causal_lm, {', '.join(MEGATRON_TASKS)}"]
    allowed = TASK_LOSSES[task]
    if loss_type is not None and loss_type not in allowed:
        takes = f"takes {', '.join(allowed)} (default {allowed[0]})" if allowed else \
            "takes none: its loss follows --problem_type"
        problems.append(f"--loss_type {loss_type}: --task_type {task} {takes}")
    if task == "seq_cls" and model.num_labels is None:
        problems.append("--task_type seq_cls needs --num_labels N (the number of classes; 1 for regression)")
    if model.num_labels is not None and model.num_labels < 1:
        problems.append(f"--num_labels {model.num_labels}: give at least 1")
    if pretrain:
        problems.append(f"--task_type {task}: megatron pt trains causal LMs on raw text; use megatron sft")
    if packing:
        problems.append(f"--packing true with --task_type {task}: each sequence is pooled on its own; drop --packing")
    if cached:
        problems.append(f"--cached_dataset with --task_type {task}: cached rows hold one sequence each; pass the "
                        "rows with --dataset")
    return problems


def row_tokens(row: dict) -> int:
    return sum(len(s) for s in row.get("sequences") or [row["input_ids"]])


def sequence_count(rows: list[dict]) -> int:
    return sum(len(row.get("sequences") or [None]) for row in rows)


def collate_task(rows: list[dict], length: int, count: int, task: MegatronTask) -> dict[str, Any]:
    """Every sequence of `rows` as `count` right-padded rows of `length` tokens (empty ones past the real ones),
    each sequence's last index, the rows' labels and group sizes."""
    import torch

    from swift.core import task_batch

    batch = task_batch(rows, task.task_type, task.problem_type)
    tokens = torch.zeros(count, length, dtype=torch.long)
    last = torch.zeros(count, dtype=torch.long)
    for i, seq in enumerate(batch.sequences):
        tokens[i, :len(seq)] = torch.tensor(seq)
        last[i] = len(seq) - 1
    return {"task": task, "tokens": tokens, "last": last, "task_labels": batch.labels,
            "group_sizes": batch.group_sizes, "rows": len(rows), "attention_mask": None,
            "position_ids": torch.arange(length).unsqueeze(0).expand(count, -1).contiguous()}


def prepare_task_model(gpt: Any, task: MegatronTask, dtype: Any) -> None:
    """Before the weights load: the classification head in place of the LM head (seq_cls / reranker), or an
    output layer that passes the hidden states through (embedding / generative_reranker)."""
    if not getattr(gpt, "post_process", False):
        return
    if task.has_head:
        gpt.output_layer = _score_head(gpt.config.hidden_size, task.num_labels or 1, dtype,
                                       bool(getattr(gpt.output_layer, "sequence_parallel", False)))
    else:
        pass_hidden_states(gpt)


def after_weights_load(gpt: Any, task: MegatronTask) -> None:
    """Once the tuner froze what it freezes: the head trains (LoRA too, as peft's modules_to_save); an untied LM
    head the embedding task never uses is frozen, so no optimizer state is spent on it."""
    if not getattr(gpt, "post_process", False):
        return
    if task.has_head:
        gpt.output_layer.weight.requires_grad_(True)
    elif task.task_type == "embedding" and not gpt.share_embeddings_and_output_weights and \
            getattr(gpt.output_layer, "weight", None) is not None:
        gpt.output_layer.weight.requires_grad_(False)


def _score_head(hidden_size: int, num_labels: int, dtype: Any, sequence_parallel: bool) -> Any:
    import torch

    class ScoreHead(torch.nn.Module):
        """HF's `score` (no bias) as mcore's output layer: [s, b, h] -> ([s, b, labels], None); whole on every
        tensor-parallel rank, which all compute the same logits (so its gradient is counted once in the norm)."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(num_labels, hidden_size, dtype=dtype))
            self.weight.swift_saved_with_adapter = True  # saved in LoRA checkpoints beside the adapter
            self.sequence_parallel = sequence_parallel

        def forward(self, hidden_states, weight=None, runtime_gather_output=None):
            if self.sequence_parallel:
                from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

                hidden_states = gather_from_sequence_parallel_region(hidden_states, tensor_parallel_output_grad=False)
            return torch.nn.functional.linear(hidden_states, self.weight), None

    return ScoreHead()


def pass_hidden_states(gpt: Any) -> None:
    """Make the last stage's output layer return its input (the final hidden states, [s, b, h]): the task's loss
    pools them. Its weights stay (tied to the embedding, and the generative reranker's yes / no rows); an untied
    output layer the embedding task never uses is frozen, so no optimizer state is spent on it."""
    if not getattr(gpt, "post_process", False):
        return
    layer = gpt.output_layer
    sequence_parallel = bool(getattr(layer, "sequence_parallel", False))

    def forward(hidden_states, weight=None, runtime_gather_output=None):
        if sequence_parallel:
            from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

            # every tensor-parallel rank computes the same loss from the whole sequence: its gradient is the
            # rank's own slice (not a sum over ranks)
            hidden_states = gather_from_sequence_parallel_region(hidden_states, tensor_parallel_output_grad=False)
        return hidden_states, None

    layer.forward = forward


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module"):
        model = model.module
    return model


def yes_no_scores(gpt: Any, hidden: Any, yes_no: tuple[int, int]) -> Any:
    """[n, 1] logit("yes") - logit("no") of the last hidden states `hidden` [n, h]: this rank's rows of the
    vocab-parallel output weight, summed over the tensor-parallel ranks (as a column- then row-parallel pair)."""
    import torch

    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import (
        copy_to_tensor_model_parallel_region,
        reduce_from_tensor_model_parallel_region,
    )

    weight = gpt.shared_embedding_or_output_weight() if gpt.share_embeddings_and_output_weights \
        else gpt.output_layer.weight
    start = ps.get_tensor_model_parallel_rank() * weight.shape[0]
    local = torch.tensor([token - start for token in yes_no], device=weight.device)
    here = (local >= 0) & (local < weight.shape[0])
    hidden = copy_to_tensor_model_parallel_region(hidden)
    # every rank multiplies (a zero where the token is another rank's), so that every rank's backward runs the
    # collectives of copy_to / reduce_from
    partial = (hidden @ weight[local.clamp(0, weight.shape[0] - 1)].T) * here.to(hidden.dtype)
    logits = reduce_from_tensor_model_parallel_region(partial).float()
    return logits[:, :1] - logits[:, 1:]


def task_forward_step(batch: dict, model: Any):
    from functools import partial

    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"], attention_mask=None,
                   labels=None)
    return output, partial(task_step_loss, batch, model)


def task_step_loss(batch: dict, model: Any, output: Any):
    """(loss x rows, rows, logged totals and statistics) of one micro-batch from the last stage's hidden states."""
    import torch
    import torch.nn.functional as F

    from swift.core import task_loss

    task: MegatronTask = batch["task"]
    real = sum(batch["group_sizes"])
    last = batch["last"][:real].to(output.device)
    pooled = output[torch.arange(real, device=output.device), last]  # [n, h]
    if task.has_head:
        pooled = pooled.float()  # [n, num_labels] logits
    elif task.task_type == "embedding":
        pooled = F.normalize(pooled.float(), p=2, dim=-1)
    else:
        pooled = yes_no_scores(_unwrap(model), pooled, task.yes_no)
    from megatron.core import parallel_state as ps

    labels = batch["task_labels"].to(output.device)
    group = ps.get_data_parallel_group()
    loss, stats = task_loss(task.task_type, task.loss_type, task.problem_type, pooled, labels, batch["group_sizes"],
                            group=group, gather=True)
    rows = batch["rows"]
    total = loss * rows
    if len(stats) > rows:
        # InfoNCE scored every data-parallel rank's rows: `loss` is theirs, the same on every rank, and each rank's
        # backward already sums all ranks' gradients (swift.core.gather_rows). mcore sums the totals over ranks and
        # divides by their rows: weight each rank's share so that this comes out as that one loss.
        total = loss * len(stats) / ps.get_data_parallel_world_size()
    return total, torch.tensor(rows, dtype=torch.int), {
        "lm loss": torch.stack([total.detach().double(), torch.tensor(float(rows), dtype=torch.float64)]),
        "task stats": stats.detach().cpu(), "task labels": labels.detach().cpu()}


def reduce_metrics(out: list[dict], task: MegatronTask) -> dict[str, float]:
    """The validation statistics of one evaluation (this rank's micro-batches' `task stats`) -> the task's metrics
    over every data-parallel rank's rows, on every rank."""
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps
    from swift.core import task_metrics

    names = task.metric_names
    totals = torch.zeros(len(names) + 1, dtype=torch.float64)  # metric x rows ..., rows
    if ps.is_pipeline_last_stage() and out:
        stats = torch.cat([item["task stats"] for item in out])
        labels = torch.cat([item["task labels"] for item in out])
        metrics = task_metrics(task.task_type, task.problem_type, stats.float().numpy(), labels.numpy())
        totals[:-1] = torch.tensor([metrics[n] for n in names], dtype=torch.float64) * len(stats)
        totals[-1] = len(stats)
        dist.all_reduce(totals, group=ps.get_data_parallel_group(with_context_parallel=True))
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.all_reduce(totals, group=ps.get_pipeline_model_parallel_group())
    rows = max(float(totals[-1]), 1.0)
    return {n: float(totals[i] / rows) for i, n in enumerate(names)}
