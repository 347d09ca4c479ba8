"""A `megatron sft` run written with ms-swift 4's flags: each flag by its effect on the steps, the learning rate,
the log, the evaluation and the checkpoint folders; then a resume from a checkpoint without optimizer state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.megatron.conftest import IDENTITY

pytest.importorskip("megatron.core")

LR, WARMUP_FRACTION, EPOCHS, GLOBAL_BATCH = 1e-3, 0.5, 2, 4
FLAGS = ("--dataset", str(IDENTITY), "--tuner_type", "full", "--micro_batch_size", "2", "--global_batch_size",
         str(GLOBAL_BATCH), "--max_length", "128", "--learning_rate", str(LR), "--lr_decay_style", "constant",
         "--seed", "7", "--split_dataset_ratio", "0.25", "--num_train_epochs", str(EPOCHS),
         "--lr_warmup_fraction", str(WARMUP_FRACTION), "--logging_steps", "1", "--save_steps", "2",
         "--eval_steps", "3", "--save_total_limit", "2", "--no_save_optim", "true", "--no_save_rng", "true",
         "--save_safetensors", "true", "--dataloader_num_workers", "1", "--group_by_length", "true")


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def flagged_run(tiny_untied_dir, tmp_path_factory):
    from swift.megatron import sft_main

    return sft_main(["--model", str(tiny_untied_dir), *FLAGS, "--output_dir", str(tmp_path_factory.mktemp("ms"))])


def test_epochs_warmup_and_logging(flagged_run):
    run = flagged_run.run_dir
    args = json.loads((run / "args.json").read_text())
    steps = math.ceil(EPOCHS * args["train_rows"] / GLOBAL_BATCH)
    assert args["train_iters"] == steps  # --num_train_epochs 2 over the 75 % left after --split_dataset_ratio
    assert sorted(flagged_run.losses) == list(range(1, steps + 1))
    lrs = {row["step"]: row["lr"] for row in _log(run) if "loss" in row}
    assert sorted(lrs) == list(range(1, steps + 1))  # --logging_steps 1
    warmup = WARMUP_FRACTION * steps
    for step in range(1, steps + 1):  # step k trains at the rate after k - 1 scheduler steps
        expected = LR * min(1.0, (step - 1) / warmup)
        assert lrs[step] == pytest.approx(expected, rel=1e-6), (step, lrs[step], expected)


def test_eval_steps_evaluate_the_held_out_split(flagged_run):
    steps = max(flagged_run.losses)
    evals = {row["step"]: row["eval_loss"] for row in _log(flagged_run.run_dir) if "eval_loss" in row}
    assert sorted(evals) == sorted({s for s in range(1, steps + 1) if s % 3 == 0} | {steps})
    assert evals == pytest.approx(flagged_run.eval_losses)
    assert evals[steps] < evals[3]


def test_checkpoints_keep_the_newest_two_without_optimizer_or_rng(flagged_run):
    run, steps = flagged_run.run_dir, max(flagged_run.losses)
    kept = sorted(p.name for p in run.glob("iter_*"))
    assert kept == [f"iter_{steps - 2:07d}", f"iter_{steps:07d}"]  # --save_steps 2, --save_total_limit 2
    assert sorted(p.name for p in run.glob("checkpoint-*")) == sorted([f"checkpoint-{steps - 2}",
                                                                        f"checkpoint-{steps}"])
    last = run / f"iter_{steps:07d}"
    assert (last / "mp_rank_00" / "model_optim_rng.pt").is_file()
    assert not (last / "rank_state").exists()  # --no_save_optim, --no_save_rng
    meta = json.loads((last / "swift_mcore.json").read_text())
    assert (meta["has_optimizer"], meta["has_rng"]) == (False, False)


def test_save_safetensors_writes_the_hf_model_of_each_checkpoint(flagged_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from swift.megatron import export_main

    run, steps = flagged_run.run_dir, max(flagged_run.losses)
    hf_dir = run / f"checkpoint-{steps}"
    assert (hf_dir / "model.safetensors").is_file()
    export_main(["--mcore_model", str(run / f"iter_{steps:07d}"), "--to_hf", "true", "--output_dir",
                 str(tmp_path / "hf")])
    saved = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).state_dict()
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    assert saved.keys() == exported.keys()
    assert all(torch.equal(saved[k], exported[k]) for k in saved)


def test_resume_without_saved_optimizer_continues_the_iteration(flagged_run, tiny_untied_dir, tmp_path, caplog):
    from swift.megatron import sft_main

    run, steps = flagged_run.run_dir, max(flagged_run.losses)
    flags = [f for f in FLAGS]
    flags[flags.index("--no_save_optim") + 1] = "false"  # this run keeps the optimizer, not the RNG
    with caplog.at_level("INFO", logger="swift.megatron.saving"):
        resumed = sft_main(["--model", str(tiny_untied_dir), *flags, "--load", str(run / f"iter_{steps - 2:07d}"),
                            "--output_dir", str(tmp_path / "resumed")])
    assert sorted(resumed.losses) == [steps - 1, steps]
    assert any("saved with --no_save_optim: the optimizer state starts afresh" in r.getMessage()
               for r in caplog.records)
    state = torch.load(resumed.last_checkpoint / "rank_state" / "rank_00000.pt", weights_only=False)
    assert "optimizer" in state
    assert "rng" not in state


def test_prune_keeps_the_newest(tmp_path):
    from swift.megatron.saving import prune_checkpoints

    for step in (2, 4, 10):
        (tmp_path / f"iter_{step:07d}").mkdir()
        (tmp_path / f"checkpoint-{step}").mkdir()
    removed = prune_checkpoints(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "iter_0000010"]
    assert len(removed) == 4
