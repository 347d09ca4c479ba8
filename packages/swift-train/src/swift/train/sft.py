"""`swift sft` / `swift pt`: the recipe (`recipe.py`) with transformers' Trainer on template-encoded rows."""

from __future__ import annotations

import logging

from swift.train.arguments import SftArguments
from swift.train.recipe import (
    Collator,
    TrainResult,
    add_callbacks,
    check_args,
    check_not_empty,
    encoded_splits,
    finish,
    longest_micro_batch,
    prepare_tuner,
    start_run,
    total_steps,
    trainer_kwargs,
    training_arguments,
)

logger = logging.getLogger(__name__)


def run_sft(args: SftArguments, *, pretrain: bool = False) -> TrainResult:
    from swift.core import processing_class, task_type_of
    from swift.core.dataset import pack_dataset
    from swift.train.memory import frozen_weights_in_bf16
    from swift.train.tasks import check_task_args, run_task
    from swift.train.trainer import SwiftTrainer

    if task_type_of(args.model.task_type) != "causal_lm" and not pretrain:
        return run_task(args)  # seq_cls, embedding, reranker: their own rows, collator and loss (tasks.py)
    check_args(args, problems=check_task_args(args, pretrain=pretrain))
    run = start_run(args, "pt" if pretrain else "sft", pretrain=pretrain)
    data, tmpl = args.data, args.template
    # Preference rows train on their chosen answer, as ms-swift's sft does.
    train_set, val_set = encoded_splits(run, chosen_only=True)
    check_not_empty(run, train_set)
    if tmpl.packing and run.padding_free:
        train_set = pack_dataset(train_set, run.max_length, num_proc=data.dataset_num_proc,
                                 row_batched=run.template.row_batched_keys)
    if run.padding_free:
        from swift.train.varlen import use_varlen_attention

        use_varlen_attention(run.model)  # each packed sequence attends to itself only, at its own cost
    steps = total_steps(args, None if data.streaming else len(train_set))
    prepare_tuner(run, steps, train_set=train_set)
    config = training_arguments(run, steps, has_eval=val_set is not None or args.train.eval_use_evalscope,
                                micro_batch_tokens=longest_micro_batch(run, train_set))
    frozen_weights_in_bf16(run.model, bf16=config.bf16, sharded=bool(args.train.deepspeed or args.train.fsdp))
    logger.info("run directory %s; %s rows%s; bf16=%s padding_free=%s", run.run_dir,
                "streamed" if data.streaming else len(train_set), " (packed)" if tmpl.packing else "",
                config.bf16, run.padding_free)
    if val_set is None and args.train.eval_use_evalscope:
        from swift.train.evalscope import BenchmarksOnly

        val_set = BenchmarksOnly()
    trainer = SwiftTrainer(model=run.model, args=config, train_dataset=train_set, eval_dataset=val_set,
                           data_collator=Collator(run.template, run.padding_free), processing_class=processing_class(run.tokenizer),
                           compute_loss_func=custom_loss(args), **trainer_kwargs(run))
    add_callbacks(trainer, run)
    return finish(trainer, run, 0 if data.streaming else len(train_set))


def custom_loss(args: SftArguments):
    """The `--loss_type NAME` an --external_plugins file registered (transformers calls it with the model's outputs
    and the labels), else None: the built-in cross-entropy."""
    from swift.train.plugins import get_loss

    names = [n for n in args.train.loss_type if n != "cross_entropy"]
    return get_loss(names[0]) if names else None
