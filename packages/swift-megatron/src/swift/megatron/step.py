"""One step's forward and per-token loss as mcore's schedules call them, the loss reduced over ranks, and the
validation loss of `--eval_steps`."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from swift.megatron.data import step_microbatches

logger = logging.getLogger(__name__)


def forward_step(data_iterator, model):
    batch = next(data_iterator)
    if "task" in batch:
        from swift.megatron.tasks import task_forward_step

        return task_forward_step(batch, model)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)
    return output, partial(token_loss, batch["loss_mask"])


def token_loss(loss_mask, per_token):
    """Sum over label tokens; mcore divides by the global batch's label-token count (calculate_per_token_loss),
    which is what `swift sft` (transformers' num_items_in_batch) does too."""
    import torch

    loss_mask = loss_mask.to(per_token.device)
    total = (per_token.float() * loss_mask).sum()
    count = loss_mask.sum().to(torch.int)
    return total, count, {"lm loss": torch.stack([total.detach(), count.detach().float()])}


def reduce_loss(out: list[dict]) -> float:
    totals = reduce_totals(out)
    return float(totals[0] / max(totals[1], 1.0))


def reduce_totals(out: list[dict], *, key: str = "lm loss", size: int = 2):
    """The `key` totals of a step on every rank (default: loss sum, label tokens): summed over micro-batches and
    data-parallel ranks on the last stage, then shared along the pipeline."""
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps

    totals = torch.zeros(size, dtype=torch.float64)
    if ps.is_pipeline_last_stage():
        for item in out:
            totals += item[key].detach().cpu().double()
        dist.all_reduce(totals, group=ps.get_data_parallel_group(with_context_parallel=True))
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.all_reduce(totals, group=ps.get_pipeline_model_parallel_group())
    return totals


@dataclass(frozen=True)
class Objective:
    """What the steps train: mcore's forward step (default: the token loss of sft / pt / the tasks), what runs over
    a step's micro-batches before it (`prepare(micro, seq_length)`: DPO's reference pass), and the metrics logged
    beside the loss (`metrics(out)`: the same on every rank). `megatron rlhf`'s are swift.megatron.dpo's and
    swift.megatron.grpo_run's (whose `batches` are its rollouts)."""

    forward_step: Any = forward_step
    prepare: Any = None
    metrics: Any = None
    batches: Any = None  # (start, stop) -> each step's (micro-batches, seq_length), in place of the rows' (GRPO)
    step_tokens: Any = None  # step -> the global batch's tokens, in place of the rows' count (GRPO)


@dataclass
class Evaluator:
    """The validation loss (mean over every label token of `batches` global batches; a task's: over its rows) and
    a task's metrics, every `interval` steps."""

    interval: int
    batches: int
    rows: list[dict]
    plan: Any
    model: Any
    forward_backward: Any
    objective: Objective = Objective()

    def __call__(self) -> dict[str, float]:
        """{"eval_loss": ..., "eval_<metric>": ... (tasks, DPO)}."""
        import torch

        totals, outs = torch.zeros(2, dtype=torch.float64), []
        self.model.eval()
        with torch.no_grad():
            for step in range(self.batches):
                micro, seq_length = step_microbatches(self.rows, step, self.plan)
                if self.objective.prepare is not None:
                    self.objective.prepare(micro, seq_length)
                out = self.forward_backward(forward_step_func=self.objective.forward_step, data_iterator=iter(micro),
                                            model=[self.model], num_microbatches=len(micro), seq_length=seq_length,
                                            micro_batch_size=micro[0]["tokens"].shape[0], forward_only=True)
                totals += reduce_totals(out)
                outs += out
        self.model.train()
        result = {"eval_loss": float(totals[0] / max(totals[1], 1.0))}
        if self.objective.metrics is not None:
            result |= {f"eval_{k}": v for k, v in self.objective.metrics(outs).items()}
        if self.plan.task is not None:
            from swift.megatron.tasks import reduce_metrics

            result |= {f"eval_{k}": v for k, v in reduce_metrics(outs, self.plan.task).items()}
        return result


def make_evaluator(m, val_rows: list[dict] | None, plan, model, forward_backward,
                   objective: Objective = Objective()) -> Evaluator | None:
    """ms-swift's rule: evaluate every --eval_steps (default --save_steps) when a validation split exists, over
    --eval_iters global batches (-1: all full ones; none when the split is smaller than a global batch)."""
    if not val_rows:
        if m.eval_interval is not None:
            logger.warning("--eval_steps %d: no validation split (--val_dataset or --split_dataset_ratio); nothing "
                           "is evaluated", m.eval_interval)
        return None
    batches = m.eval_iters if m.eval_iters > 0 else len(val_rows) // m.global_batch_size
    if batches == 0:
        logger.warning("the validation split has %d rows, fewer than --global_batch_size %d: nothing is evaluated",
                       len(val_rows), m.global_batch_size)
        return None
    return Evaluator(m.eval_interval or m.save_interval, batches, val_rows, dataclasses.replace(plan, seed=0, lengths=None),
                     model, forward_backward, objective)
