"""`megatron sft|pt` end to end on a tiny llama (gloo on CPU): output layout, exact resume from --load, TP/PP/DP
giving the one-process losses, and the trained checkpoint back to HF.

One-process runs go through the Python API in this process (megatron.core's import costs ~15 s of CPU per
process); multi-process runs go through the `megatron` command with NPROC_PER_NODE, as users start them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.megatron.conftest import IDENTITY, check, logged_losses, run_megatron

pytest.importorskip("megatron.core")

COMMON = ("--dataset", str(IDENTITY), "--train_type", "full", "--micro_batch_size", "1", "--global_batch_size", "2",
          "--max_length", "64", "--lr", "1e-3", "--lr_decay_style", "constant", "--log_interval", "1", "--seed", "7",
          "--train_iters", "4", "--save_interval", "2")


def _run_dir(save: Path) -> Path:
    (run,) = [p for p in save.iterdir() if p.is_dir() and p.name.startswith("v")]
    return run


@pytest.fixture(scope="module")
def one_process(tiny_untied_dir, tmp_path_factory) -> Path:
    """4 steps in one process, checkpoints at steps 2 and 4: the reference every layout is compared with."""
    from swift.megatron import sft_main

    save = tmp_path_factory.mktemp("one-process")
    result = sft_main(["--model", str(tiny_untied_dir), *COMMON, "--save", str(save)])
    assert result.run_dir.parent == save
    return save


def test_run_layout_resume_and_export(tiny_untied_dir, one_process, tmp_path):
    from swift.megatron import export_main, sft_main

    run = _run_dir(one_process)
    args = json.loads((run / "args.json").read_text())
    assert args["command"] == "megatron sft"
    assert args["tensor_model_parallel_size"] == 1
    assert (run / "images" / "train_loss.png").is_file()
    assert (run / "latest_checkpointed_iteration.txt").read_text() == "4"
    assert (run / "iter_0000002" / "mp_rank_00" / "model_optim_rng.pt").is_file()
    full = logged_losses(one_process)
    assert sorted(full) == [1, 2, 3, 4]
    assert full[4] < full[1]

    # resume from the step-2 checkpoint: steps 3 and 4 repeat the uninterrupted run's losses
    sft_main(["--model", str(tiny_untied_dir), *COMMON, "--load", str(run / "iter_0000002"),
              "--save", str(tmp_path / "resumed")])
    resumed = logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert abs(resumed[step] - full[step]) < 1e-6, (step, resumed[step], full[step])

    # the last checkpoint back to HF: plain transformers loads it, and training moved the weights
    export_main(["--mcore_model", str(run), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    moved = max((before[k] - after[k]).abs().max().item() for k in before)
    assert 0 < moved < 1


def test_tensor_parallel_two_processes_gives_the_one_process_losses(tiny_untied_dir, one_process, tmp_path):
    check(run_megatron("sft", "--model", str(tiny_untied_dir), *COMMON, "--tensor_model_parallel_size", "2",
                       "--save", str(tmp_path / "tp2"), nproc=2))
    one, two = logged_losses(one_process), logged_losses(tmp_path / "tp2")
    assert sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    assert (_run_dir(tmp_path / "tp2") / "iter_0000004" / "mp_rank_01" / "model_optim_rng.pt").is_file()


def test_overlapped_gradient_reduce_and_parameter_gather_give_the_one_process_losses_and_weights(
        tiny_untied_dir, one_process, tmp_path):
    """DP=2 with --overlap_grad_reduce and --overlap_param_gather (the distributed optimizer): the bucketed
    all-reduce in the backward and the all-gather in the next forward change nothing, and a checkpoint holds the
    gathered parameters (the step leaves them to the next forward's hooks)."""
    from swift.megatron import export_main

    check(run_megatron("sft", "--model", str(tiny_untied_dir), *COMMON, "--overlap_grad_reduce", "true",
                       "--overlap_param_gather", "true", "--save", str(tmp_path / "dp2"), nproc=2))
    one, two = logged_losses(one_process), logged_losses(tmp_path / "dp2")
    assert all(abs(one[s] - two[s]) < 1e-4 for s in one), (one, two)
    for name, run in (("one", _run_dir(one_process)), ("two", _run_dir(tmp_path / "dp2"))):
        export_main(["--mcore_model", str(run / "iter_0000002"), "--to_hf", "true", "--output_dir",
                     str(tmp_path / name)])
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "one", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "two", dtype=torch.float32).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "nproc"), [
    (("--pipeline_model_parallel_size", "2"), 2),
    (("--use_distributed_optimizer", "true"), 2),  # DP=2, optimizer state sharded over the two ranks
    (("--use_distributed_optimizer", "false"), 2),
    (("--tensor_model_parallel_size", "2", "--pipeline_model_parallel_size", "2"), 4),
])
def test_parallel_layouts_give_the_one_process_losses(tiny_untied_dir, one_process, tmp_path, flags, nproc):
    check(run_megatron("sft", "--model", str(tiny_untied_dir), *COMMON, *flags, "--save", str(tmp_path / "many"),
                       nproc=nproc))
    one, many = logged_losses(one_process), logged_losses(tmp_path / "many")
    assert sorted(many) == [1, 2, 3, 4]
    for step in one:
        assert abs(one[step] - many[step]) < 1e-4, (flags, step, one[step], many[step])


@pytest.mark.slow
def test_resume_under_two_processes_repeats_the_losses(tiny_untied_dir, tmp_path):
    flags = ("--model", str(tiny_untied_dir), *COMMON, "--pipeline_model_parallel_size", "2")
    check(run_megatron("sft", *flags, "--save", str(tmp_path / "full"), nproc=2))
    check(run_megatron("sft", *flags, "--load", str(_run_dir(tmp_path / "full") / "iter_0000002"), "--save",
                       str(tmp_path / "resumed"), nproc=2))
    full, resumed = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    assert all(abs(resumed[s] - full[s]) < 1e-6 for s in (3, 4)), (full, resumed)


@pytest.mark.slow
def test_tied_embeddings_under_pipeline_parallelism_convert_back(tiny_llama_dir, tmp_path):
    """The conftest tiny llama ties its embeddings (2 layers): PP=2 keeps a copy on the last stage, synced by mcore."""
    from swift.megatron import export_main, sft_main

    model = ("--model", str(tiny_llama_dir))
    sft_main([*model, *COMMON, "--save", str(tmp_path / "one")])
    check(run_megatron("sft", *model, *COMMON, "--pipeline_model_parallel_size", "2", "--save", str(tmp_path / "pp"),
                       nproc=2))
    one, pp = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "pp")
    assert all(abs(one[s] - pp[s]) < 1e-4 for s in one), (one, pp)
    export_main(["--mcore_model", str(tmp_path / "pp"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    export_main(["--mcore_model", str(tmp_path / "one"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf1")])
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "hf1", dtype=torch.float32).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_pt_with_packing_trains_on_every_token(tiny_untied_dir, tmp_path):
    from swift.megatron import pt_main

    result = pt_main(["--model", str(tiny_untied_dir), *COMMON, "--train_iters", "1", "--packing", "true",
                      "--max_length", "256", "--save", str(tmp_path / "pt")])
    args = json.loads((result.run_dir / "args.json").read_text())
    assert args["command"] == "megatron pt"
    assert result.losses[1] > 0


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
    (("rlhf", "--rlhf_type", "dpo", "--dataset", str(IDENTITY)), "--model is required"),
    (("train",), "unknown megatron command 'train'"),
])
def test_bad_input_is_named(argv, needle, capsys):
    from swift.megatron.cli import main

    assert main(list(argv)) != 0
    assert needle in capsys.readouterr().err


def test_bad_input_fails_before_megatron_loads():
    from tests.conftest import run_python

    result = run_python("import sys; from swift.megatron.cli import main; "
                        "code = main(['sft', '--dataset', 'a.jsonl']); "
                        "print(code, [m for m in ('torch', 'megatron.core') if m in sys.modules])")
    assert result.stdout.strip() == "2 []", result.stderr


def test_sequence_parallel_without_transformer_engine_is_refused(tiny_untied_dir, tmp_path):
    from swift.core.errors import ConfigError
    from swift.megatron import sft_main

    if torch.cuda.is_available():
        pytest.skip("CPU-only refusal")
    with pytest.raises(ConfigError, match="--sequence_parallel needs TransformerEngine"):
        sft_main(["--model", str(tiny_untied_dir), *COMMON, "--tensor_model_parallel_size", "2",
                  "--sequence_parallel", "true", "--save", str(tmp_path / "sp")])


def test_tensor_parallel_size_must_divide_the_heads(tiny_untied_dir, tmp_path):
    from swift.core.errors import ConfigError
    from swift.megatron import export_main

    with pytest.raises(ConfigError, match="does not divide this model"):
        export_main(["--model", str(tiny_untied_dir), "--to_mcore", "true", "--tensor_model_parallel_size", "4",
                     "--output_dir", str(tmp_path / "x")])


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    from tests.megatron.conftest import save_tiny, tiny_config

    return save_tiny(tmp_path_factory.mktemp("tiny-moe"), tiny_config("qwen3_moe", len(smollm2_tokenizer)),
                     smollm2_tokenizer)


@pytest.mark.slow
def test_moe_trains_and_converts_back(tiny_moe_dir, tmp_path):
    """Qwen3-MoE in one process (EP > 1 needs CUDA streams; its layout is covered by test_convert)."""
    from swift.megatron import export_main, sft_main

    result = sft_main(["--model", str(tiny_moe_dir), *COMMON, "--save", str(tmp_path / "one")])
    assert result.losses[4] < result.losses[1]
    export_main(["--mcore_model", str(tmp_path / "one"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_moe_dir, dtype=torch.float32).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    assert 0 < max((before[k] - after[k]).abs().max().item() for k in before) < 1
    if not torch.cuda.is_available():
        from swift.core.errors import ConfigError

        with pytest.raises(ConfigError, match="--expert_model_parallel_size > 1 needs CUDA"):
            sft_main(["--model", str(tiny_moe_dir), *COMMON, "--expert_model_parallel_size", "2"])


@pytest.mark.slow
@pytest.mark.parametrize(("which", "last_stage_layers"), [("last", {"0"}), ("first", {"0", "1", "2"})])
def test_uneven_pipeline_stages_give_the_one_process_losses(tiny_untied_dir, one_process, tmp_path, which,
                                                            last_stage_layers):
    from swift.megatron import export_main

    check(run_megatron("sft", "--model", str(tiny_untied_dir), *COMMON, "--pipeline_model_parallel_size", "2",
                       f"--decoder_{which}_pipeline_num_layers", "1", "--save", str(tmp_path / "uneven"), nproc=2))
    one, uneven = logged_losses(one_process), logged_losses(tmp_path / "uneven")
    assert all(abs(one[s] - uneven[s]) < 1e-4 for s in one), (one, uneven)
    run = _run_dir(tmp_path / "uneven")
    assert json.loads((run / "iter_0000004" / "swift_mcore.json").read_text())[f"{which}_stage_layers"] == 1
    last_stage = torch.load(run / "iter_0000004" / "mp_rank_00_001" / "model_optim_rng.pt", weights_only=False)
    assert {k.split(".")[2] for k in last_stage["model"] if k.startswith("decoder.layers.")} == last_stage_layers
    export_main(["--mcore_model", str(run), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_cached_dataset_trains_like_the_rows_it_was_exported_from(tiny_untied_dir, one_process, tmp_path):
    """`swift export --to_cached_dataset` then `megatron sft --cached_dataset`: no tokenising, the same losses."""
    from swift.megatron import sft_main
    from swift.train import export_main

    export_main(["--model", str(tiny_untied_dir), "--dataset", str(IDENTITY), "--to_cached_dataset", "true",
                 "--max_length", "64", "--output_dir", str(tmp_path / "cached")])
    flags = list(COMMON)
    del flags[flags.index("--dataset"):flags.index("--dataset") + 2]
    sft_main(["--model", str(tiny_untied_dir), *flags, "--cached_dataset", str(tmp_path / "cached"), "--save",
              str(tmp_path / "from-cache")])
    cached, fresh = logged_losses(tmp_path / "from-cache"), logged_losses(one_process)
    assert sorted(cached) == [1, 2, 3, 4]
    for step in cached:
        assert abs(cached[step] - fresh[step]) < 1e-6, (step, cached[step], fresh[step])
