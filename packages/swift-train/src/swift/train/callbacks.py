"""Trainer callbacks: metrics to logging.jsonl (loss, lr, grad norm, tokens/s, memory), plots on save and at the end,
and a final checkpoint whatever --save_steps says."""

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
