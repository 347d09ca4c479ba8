"""`swift sft --task_type seq_cls|embedding|reranker|generative_reranker`: the recipe (`recipe.py`) with a trainer
whose loss is the task's, on ms-swift's rows (docs/tasks.md):

    seq_cls              {"messages", "label"}: an int class, a float (regression) or a list of classes (multi-label)
    embedding            {"messages", "positive_messages": [[...]], "negative_messages": [[...], ...], "label"?}
    reranker, generative {"messages" (the query), "positive_messages", "negative_messages"} (documents)

    check_task_args(args)  -> run = start_run(...) -> encode(run, rows, TaskEncoder) -> TaskTrainer -> finish

Heads, prompts and the pooled forward are swift.core's (`task_forward`), so `swift infer` / `deploy` score a
checkpoint exactly as it was trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from swift.core import TASK_LOSSES, task_type_of
from swift.train.arguments import SftArguments

logger = logging.getLogger(__name__)


def check_task_args(args: SftArguments, *, pretrain: bool = False) -> list[str]:
    """--task_type / --num_labels / --problem_type / --loss_type problems, before anything loads."""
    model, losses = args.model, args.train.loss_type
    task = task_type_of(model.task_type)
    problems = []
    allowed = TASK_LOSSES[task]
    if task == "causal_lm":  # (sft and pt)
        from swift.train.plugins import loss_choices

        allowed = (*allowed, *loss_choices())
    for loss in losses:
        if loss not in allowed:
            takes = f"takes {', '.join(allowed)} (default {allowed[0]})" if allowed else \
                "takes none: its loss follows --problem_type"
            problems.append(f"--loss_type {loss}: --task_type {task} {takes}")
    if len(losses) > 1 and task != "causal_lm":
        problems.append(f"--loss_type {' '.join(losses)}: --task_type {task} trains with one loss")
    if task != "causal_lm" and args.train.eval_use_evalscope:
        problems.append(f"--eval_use_evalscope: --task_type {task} answers with a head, not the generated text "
                        "EvalScope scores")
    if task != "causal_lm" and args.train.predict_with_generate:
        problems.append(f"--predict_with_generate: --task_type {task} answers with a head, not generated text")
    if task != "causal_lm" and pretrain:
        problems.append(f"--task_type {task}: swift pt trains causal LMs on raw text; use swift sft")
    if task == "seq_cls" and model.num_labels is None:
        problems.append("--task_type seq_cls needs --num_labels N (the number of classes; 1 for regression)")
    if model.num_labels is not None and model.num_labels < 1:
        problems.append(f"--num_labels {model.num_labels}: give at least 1")
    if model.num_labels is not None and task not in ("seq_cls", "reranker"):
        problems.append(f"--num_labels is for --task_type seq_cls (the classification head); {task} has none")
    if model.problem_type is not None and task != "seq_cls":
        problems.append(f"--problem_type is for --task_type seq_cls, not {task}")
    if task != "causal_lm" and args.template.packing:
        problems.append(f"--packing true with --task_type {task}: each row is pooled on its own; drop --packing")
    return problems


class TaskCollator:
    """Pads a batch (right). Multi-sequence rows are flattened into one batch, with each row's `group_sizes`."""

    def __init__(self, pad_id: int, task_type: str, problem_type: str | None) -> None:
        self.pad_id, self.task_type, self.problem_type = pad_id, task_type, problem_type

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        from swift.core import task_batch

        batch = task_batch(rows, self.task_type, self.problem_type)
        longest = max(len(s) for s in batch.sequences)
        input_ids = torch.full((len(batch.sequences), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch.sequences), longest), dtype=torch.long)
        for i, seq in enumerate(batch.sequences):
            input_ids[i, :len(seq)] = torch.tensor(seq)
            attention_mask[i, :len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "task_labels": batch.labels,
                "group_sizes": torch.tensor(batch.group_sizes)}


@dataclass(frozen=True)
class TaskLoss:
    """The loss and the evaluation statistics of one task."""

    task_type: str
    loss_type: str | None
    problem_type: str | None = None
    yes_no: tuple[int, int] | None = None

    def outputs(self, model: Any, batch: dict) -> Any:
        from swift.core import task_forward

        return task_forward(model, batch["input_ids"], batch["attention_mask"], self.task_type, self.yes_no)

    def __call__(self, model: Any, batch: dict) -> tuple[Any, Any]:
        """(loss, [rows, k] statistics for the metrics)."""
        from swift.core import task_loss

        return task_loss(self.task_type, self.loss_type, self.problem_type, self.outputs(model, batch),
                         batch["task_labels"], batch["group_sizes"].tolist(), gather=True)

    def metrics(self, prediction: Any) -> dict[str, float]:
        from swift.core import task_metrics

        return task_metrics(self.task_type, self.problem_type, prediction.predictions, prediction.label_ids)


def zero_new_head(model: Any) -> bool:
    """Zero a classification head the checkpoint did not have (transformers draws it at random), so the first steps
    fit a linear read-out of the pretrained features: a random head's logits are as large as the signal, and with
    LoRA the backbone then bends towards the random head instead (the packaged SmolLM2 on ms-swift's sentiment
    check: 12/16 held-out words with the random head). Returns whether it did."""
    import torch

    architectures = getattr(model.config, "architectures", None) or []
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None or any(a.endswith("ForSequenceClassification") for a in architectures):
        return False
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()
    return True


def pool_hidden_states(model: Any, task: str) -> None:
    """embedding / generative_reranker: the model's forward returns the final hidden states (`pass_hidden_states`),
    so that DDP's gradient hooks see it; an untied LM head the embedding task never reads is frozen."""
    import os

    from swift.core import ConfigError, pass_hidden_states

    if not pass_hidden_states(model):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"--task_type {task} on several processes: this model soft-caps its logits (Gemma 2/3), "
                              "so its forward cannot hand over the hidden states; train it in one process")
        return
    head = model.get_output_embeddings()
    if task == "embedding" and head.weight is not model.get_input_embeddings().weight:
        head.weight.requires_grad_(False)


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    from swift.train.trainer import SwiftTrainerMixin

    class TaskTrainer(SwiftTrainerMixin, Trainer):
        """A Trainer whose loss is the task's (`TaskLoss`); evaluation returns its statistics as predictions."""

        loss_is_scaled_for_ga = False  # a mean over the micro-batch: the Trainer divides by accumulation steps

        def __init__(self, *args: Any, task_loss: TaskLoss, **kwargs: Any) -> None:
            self.task_loss = task_loss
            super().__init__(*args, compute_metrics=task_loss.metrics, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, stats = self.task_loss(model, inputs)
            return (loss, stats) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss, stats = self.task_loss(model, inputs)
            if self.task_loss.task_type == "seq_cls":
                return loss.detach(), stats, inputs["task_labels"]
            return loss.detach(), stats, torch.zeros(len(stats), device=stats.device)

    return TaskTrainer


def run_task(args: SftArguments) -> Any:
    """`swift sft` for an encoder task: the shared recipe, the task's encoder, collator and loss."""
    from swift.core import (
        TaskEncoder,
        head_labels,
        processing_class,
        resolve_problem_type,
        write_json_atomic,
        yes_no_ids,
    )
    from swift.core.run import ARGS_FILE, is_rank0
    from swift.train.recipe import (
        add_callbacks,
        check_args,
        check_not_empty,
        encode,
        finish,
        prepare_tuner,
        start_run,
        total_steps,
        trainer_kwargs,
        training_arguments,
    )

    check_args(args, problems=check_task_args(args))
    task = args.model.task_type
    run = start_run(args, "sft", require_answer=False, num_labels=head_labels(task, args.model.num_labels))
    problem_type = resolve_problem_type(args.model.problem_type, args.model.num_labels,
                                        run.train_rows) if task == "seq_cls" else None
    if task == "seq_cls":
        run.model.config.problem_type = problem_type
        run.flat["problem_type"] = args.model.problem_type = problem_type
        if is_rank0():  # args.json records what infer / deploy need to read the head back
            write_json_atomic(run.run_dir / ARGS_FILE, run.flat)
    if task in ("seq_cls", "reranker"):
        zero_new_head(run.model)
    else:
        pool_hidden_states(run.model, task)
    encoder = TaskEncoder(task, problem_type, args.model.num_labels)
    train_set, val_set = encode(run, run.train_rows, encoder), encode(run, run.val_rows, encoder)
    check_not_empty(run, train_set)
    steps = total_steps(args, None if args.data.streaming else len(train_set))
    prepare_tuner(run, steps)
    config = training_arguments(run, steps, has_eval=val_set is not None)
    yes_no = yes_no_ids(run.tokenizer) if task == "generative_reranker" else None
    task_loss = TaskLoss(task, (args.train.loss_type or [None])[0], problem_type, yes_no)
    logger.info("--task_type %s: %d rows, run directory %s", task, len(train_set), run.run_dir)
    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else run.tokenizer.eos_token_id
    trainer = _trainer_class()(model=run.model, args=config, train_dataset=train_set, eval_dataset=val_set,
                               data_collator=TaskCollator(pad_id, task, problem_type),
                               processing_class=processing_class(run.tokenizer), task_loss=task_loss,
                               **trainer_kwargs(run))
    add_callbacks(trainer, run)
    return finish(trainer, run, len(train_set))
