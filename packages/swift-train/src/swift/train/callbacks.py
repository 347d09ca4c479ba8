"""Trainer callbacks: metrics to logging.jsonl (loss, lr, grad norm, tokens/s, memory), plots on save and at the end,
a final checkpoint whatever --save_steps says, and --early_stop_interval."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from swift.core.run import plot_losses


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024**3 if sys.platform == "darwin" else 1024**2)


class JsonlLogger(TrainerCallback):
    """Appends one JSON object per logging step to <run>/logging.jsonl (rank 0 only)."""

    def __init__(self, run_dir: Path, token_counter) -> None:
        self.path = run_dir / "logging.jsonl"
        self.tokens = token_counter  # callable -> tokens seen so far (non-padding)
        self.last_time = self.last_tokens = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_tokens = time.perf_counter(), self.tokens()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now, tokens = time.perf_counter(), self.tokens()
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        if "loss" in logs and self.last_time is not None and now > self.last_time:
            row["tokens_per_second"] = round((tokens - self.last_tokens) / (now - self.last_time), 2)
            self.last_time, self.last_tokens = now, tokens
        row["tokens_seen"] = tokens
        row["peak_rss_gib"] = round(peak_rss_gib(), 3)
        import torch

        if torch.cuda.is_available():
            row["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 3)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")


class PlotOnSave(TrainerCallback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(self.run_dir)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(self.run_dir)


class SaveAtEnd(TrainerCallback):
    """The last step always leaves a checkpoint (HF saves only on multiples of save_steps)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class EarlyStop(TrainerCallback):
    """Stops training when the best-model metric has not improved for `interval` evaluations in a row."""

    def __init__(self, interval: int) -> None:
        self.interval, self.best, self.stale = interval, None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        key = name if name.startswith("eval_") else f"eval_{name}"
        if not metrics or key not in metrics:
            return
        value = metrics[key]
        better = args.greater_is_better if args.greater_is_better is not None else not name.endswith("loss")
        if self.best is None or (value > self.best if better else value < self.best):
            self.best, self.stale = value, 0
            return
        self.stale += 1
        if self.stale >= self.interval:
            control.should_training_stop = True
            state.swift_early_stopped = True


class MaxEpochs(TrainerCallback):
    """--max_epochs: the run ends (with a checkpoint) at the end of that many passes over the data."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.seen = epochs, 0

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seen += 1
        if self.seen >= self.epochs:
            control.should_training_stop = control.should_save = True


def log_final(run_dir: Path, **fields) -> None:
    """The run's last line of logging.jsonl: last and best checkpoint (as ms-swift writes them)."""
    with (run_dir / "logging.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(fields, default=float) + "\n")


class VisionCheckpointing(TrainerCallback):
    """--vit_gradient_checkpointing: set after the trainer has enabled (or not) checkpointing for the whole model."""

    def __init__(self, enabled: bool, kwargs: dict | None) -> None:
        self.enabled, self.kwargs = enabled, kwargs

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from swift.train.memory import vision_checkpointing

        vision_checkpointing(model, self.enabled, self.kwargs)
