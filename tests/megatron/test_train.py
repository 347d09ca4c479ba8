"""`megatron sft|pt` end to end on a tiny llama (gloo on CPU): output layout, exact resume from --load, TP/PP/DP
giving the one-process losses, and the trained checkpoint back to HF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.megatron.conftest import IDENTITY, check, logged_losses, run_megatron

pytest.importorskip("megatron.core")

COMMON = ("--dataset", str(IDENTITY), "--train_type", "full", "--micro_batch_size", "1", "--global_batch_size", "2",
          "--max_length", "64", "--lr", "1e-3", "--lr_decay_style", "constant", "--log_interval", "1", "--seed", "7")


def _run_dir(save: Path) -> Path:
    (run,) = [p for p in save.iterdir() if p.is_dir() and p.name.startswith("v")]
    return run


def test_one_process_run_layout_resume_and_export(tiny_untied_dir, tmp_path):
    model = ("--model", str(tiny_untied_dir))
    check(run_megatron("sft", *model, *COMMON, "--train_iters", "4", "--save_interval", "2",
                       "--save", str(tmp_path / "full")))
    run = _run_dir(tmp_path / "full")
    args = json.loads((run / "args.json").read_text())
    assert args["command"] == "megatron sft"
    assert args["tensor_model_parallel_size"] == 1
    assert (run / "images" / "train_loss.png").is_file()
    assert (run / "latest_checkpointed_iteration.txt").read_text() == "4"
    assert (run / "iter_0000002" / "mp_rank_00" / "model_optim_rng.pt").is_file()
    full = logged_losses(tmp_path / "full")
    assert sorted(full) == [1, 2, 3, 4]
    assert full[4] < full[1]

    # resume from the step-2 checkpoint: steps 3 and 4 repeat the uninterrupted run's losses
    check(run_megatron("sft", *model, *COMMON, "--train_iters", "4", "--load", str(run / "iter_0000002"),
                       "--save", str(tmp_path / "resumed")))
    resumed = logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert abs(resumed[step] - full[step]) < 1e-6, (step, resumed[step], full[step])

    # the last checkpoint back to HF: plain transformers loads it, and training moved the weights
    check(run_megatron("export", "--mcore_model", str(run), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")))
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    moved = max((before[k] - after[k]).abs().max().item() for k in before)
    assert 0 < moved < 1


def test_tensor_parallel_two_processes_gives_the_one_process_losses(tiny_untied_dir, tmp_path):
    model = ("--model", str(tiny_untied_dir), "--train_iters", "3", "--save_interval", "3")
    check(run_megatron("sft", *model, *COMMON, "--save", str(tmp_path / "tp1")))
    check(run_megatron("sft", *model, *COMMON, "--tensor_model_parallel_size", "2", "--save", str(tmp_path / "tp2"),
                       nproc=2))
    one, two = logged_losses(tmp_path / "tp1"), logged_losses(tmp_path / "tp2")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    assert (_run_dir(tmp_path / "tp2") / "iter_0000003" / "mp_rank_01" / "model_optim_rng.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "nproc"), [
    (("--pipeline_model_parallel_size", "2"), 2),
    (("--use_distributed_optimizer", "true"), 2),  # DP=2, optimizer state sharded over the two ranks
    (("--use_distributed_optimizer", "false"), 2),
    (("--tensor_model_parallel_size", "2", "--pipeline_model_parallel_size", "2"), 4),
    (("--tensor_model_parallel_size", "2", "--sequence_parallel", "true"), 2),
])
def test_parallel_layouts_give_the_one_process_losses(tiny_untied_dir, tmp_path, flags, nproc):
    model = ("--model", str(tiny_untied_dir), "--train_iters", "3", "--save_interval", "3")
    check(run_megatron("sft", *model, *COMMON, "--save", str(tmp_path / "one")))
    check(run_megatron("sft", *model, *COMMON, *flags, "--save", str(tmp_path / "many"), nproc=nproc))
    one, many = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "many")
    assert sorted(many) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - many[step]) < 1e-4, (flags, step, one[step], many[step])


@pytest.mark.slow
def test_tied_embeddings_under_pipeline_parallelism_convert_back(tiny_llama_dir, tmp_path):
    """The conftest tiny llama ties its embeddings: PP=2 keeps a copy on the last stage, synced by mcore."""
    model = ("--model", str(tiny_llama_dir), "--train_iters", "2", "--save_interval", "2")
    check(run_megatron("sft", *model, *COMMON, "--save", str(tmp_path / "one")))
    check(run_megatron("sft", *model, *COMMON, "--pipeline_model_parallel_size", "2", "--save", str(tmp_path / "pp"),
                       nproc=2))
    one, pp = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "pp")
    assert all(abs(one[s] - pp[s]) < 1e-4 for s in one)
    check(run_megatron("export", "--mcore_model", str(tmp_path / "pp"), "--to_hf", "true", "--output_dir",
                       str(tmp_path / "hf")))
    check(run_megatron("export", "--mcore_model", str(tmp_path / "one"), "--to_hf", "true", "--output_dir",
                       str(tmp_path / "hf1")))
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "hf1", dtype=torch.float32).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_pt_trains_on_every_token(tiny_untied_dir, tmp_path):
    check(run_megatron("pt", "--model", str(tiny_untied_dir), *COMMON, "--train_iters", "1", "--packing", "true",
                       "--save", str(tmp_path / "pt")))
    args = json.loads((_run_dir(tmp_path / "pt") / "args.json").read_text())
    assert args["command"] == "megatron pt"
    assert logged_losses(tmp_path / "pt")[1] > 0


@pytest.mark.parametrize(("argv", "needle"), [
    (("sft", "--dataset", str(IDENTITY)), "--model is required"),
    (("sft", "--model", "x", "--dataset", "./nope.jsonl"), "--dataset ./nope.jsonl: no such file"),
    (("sft", "--model", "x", "--dataset", str(IDENTITY), "--global_batch_size", "3", "--micro_batch_size", "2"),
     "--global_batch_size 3 must be a multiple of --micro_batch_size 2"),
    (("sft", "--model", "x", "--dataset", str(IDENTITY), "--train_type", "adalora"), "--train_type adalora"),
    (("sft", "--model", "x", "--dataset", str(IDENTITY), "--tensor_model_paralel_size", "2"),
     "tensor_model_parallel_size"),
    (("export", "--model", "x"), "exactly one of --to_mcore true"),
    (("export", "--to_hf", "true", "--mcore_model", "/nonexistent"), "--mcore_model /nonexistent: no mcore checkpoint"),
    (("rlhf", "--rlhf_type", "dpo"), "does not run yet"),
])
def test_bad_input_is_named(argv, needle):
    result = run_megatron(*argv)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr[-2000:]


def test_tensor_parallel_size_must_divide_the_heads(tiny_untied_dir, tmp_path):
    result = run_megatron("export", "--model", str(tiny_untied_dir), "--to_mcore", "true",
                          "--tensor_model_parallel_size", "4", "--output_dir", str(tmp_path / "x"))
    assert result.returncode != 0
    assert "does not divide this model" in result.stderr
