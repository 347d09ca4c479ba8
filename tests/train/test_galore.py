"""`--use_galore` trains full weights with GaLore's projected optimizer state; `--galore_optim_per_parameter` steps
each weight in its gradient hook and trains the same weights as the ordinary step; `--optim_args` reaches the
optimizer (or names the key it does not take)."""

from __future__ import annotations

import json

import pytest
import torch

from swift.core import ConfigError
from swift.train import sft_main
from tests.train import test_plugins
from tests.train.test_sft import flags, losses

pytest.importorskip("galore_torch")
rows_file = test_plugins.rows_file  # the fixture: 16 short numbered chats


GALORE = ("--train_type", "full", "--use_galore", "true", "--galore_rank", "4", "--galore_update_proj_gap", "2",
          "--dataset_shuffle", "false", "--max_steps", "3", "--save_steps", "3", "--lr_scheduler_type", "constant",
          "--warmup_ratio", "0", "--max_grad_norm", "0")


def test_galore_keeps_adam_state_in_the_projection(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, *GALORE, "--galore_target_modules", "q_proj",
                            "mlp"))
    got = losses(result.run_dir)
    assert got[3] < got[1]
    state = torch.load(result.last_checkpoint / "optimizer.pt", weights_only=False)
    galore_group = state["param_groups"][0]
    assert (galore_group["rank"], galore_group["update_proj_gap"], galore_group["proj_type"]) == (4, 2, "std")
    assert len(galore_group["params"]) == 2 * (1 + 3)  # q_proj and the 3 MLP linears of 2 layers
    for index in galore_group["params"]:
        moments = state["state"][index]["exp_avg"]
        assert 4 in moments.shape, moments.shape  # rank 4, not the full matrix
        assert moments.numel() <= 4 * 128, moments.shape
    other = state["state"][state["param_groups"][1]["params"][0]]["exp_avg"]
    assert 4 not in other.shape  # the rest keeps full AdamW moments


def test_per_parameter_steps_in_the_backward_hook_equal_the_ordinary_step(tiny_llama_dir, rows_file, tmp_path):
    accumulated = ("--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2")
    plain = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "plain", *GALORE, *accumulated))
    hooked = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "hooked", *GALORE, *accumulated,
                            "--galore_optim_per_parameter", "true"))
    reference, got = losses(plain.run_dir), losses(hooked.run_dir)
    assert sorted(got) == [1, 2, 3]
    for step in got:  # weights stepped at the end of each accumulation, with the same update as one optimizer
        assert got[step] == pytest.approx(reference[step], rel=1e-4), step
    norms = [{r["step"]: r["grad_norm"] for r in map(json.loads, (run.run_dir / "logging.jsonl").read_text()
                                                     .splitlines()) if "grad_norm" in r} for run in (plain, hooked)]
    assert norms[1] == pytest.approx(norms[0], rel=1e-3)  # the hooks' norm: what the ordinary step measured
    assert all(n > 0 for n in norms[1].values())
    from safetensors.torch import load_file

    a = load_file(plain.last_checkpoint / "model.safetensors")
    b = load_file(hooked.last_checkpoint / "model.safetensors")
    base = load_file(tiny_llama_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(b[name], base[name])
    torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_optim_args_reach_the_optimizer(tiny_llama_dir, rows_file, tmp_path):
    common = ("--max_steps", "1", "--save_steps", "1", "--lora_rank", "4")
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "adamw", *common, "--optim_args",
                            "amsgrad=true,eps=1e-6"))
    group = torch.load(result.last_checkpoint / "optimizer.pt", weights_only=False)["param_groups"][0]
    assert (group["amsgrad"], group["eps"]) == (True, 1e-6)
    muon = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "muon", *common, "--optimizer", "muon",
                          "--optim_args", "momentum=0.8,ns_steps=3"))
    inner = torch.load(muon.last_checkpoint / "optimizer.pt", weights_only=False)  # LoRA: only matrices, Muon alone
    assert inner["param_groups"][0]["use_muon"]
    assert (inner["param_groups"][0]["momentum"], inner["param_groups"][0]["ns_steps"]) == (0.8, 3)
    with pytest.raises(ConfigError, match=r"--optim_args qk_clip=1: --optim adamw_torch \(AdamW\) takes no"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "bad", *common, "--optim_args", "qk_clip=1"))
    with pytest.raises(ConfigError, match="is not key=value"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "bad2", *common, "--optim_args", "amsgrad"))


def test_galore_refusals_name_the_flags(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match="--use_galore with --train_type lora"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--use_galore", "true"))
    with pytest.raises(ConfigError, match="--use_galore with --optimizer muon"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, *GALORE, "--optimizer", "muon"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--galore_quantization: q-galore-torch"):
            sft_main(flags(tiny_llama_dir, rows_file, tmp_path, *GALORE, "--galore_quantization", "true"))
    with pytest.raises(ConfigError, match="no trainable 2-D weight matches --galore_target_modules"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, *GALORE, "--galore_target_modules", "nothing_here"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Q-GaLore's 8-bit optimizer needs CUDA")
def test_q_galore_trains_on_a_gpu(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, *GALORE, "--galore_quantization", "true",
                            "--galore_proj_quant", "true"))
    got = losses(result.run_dir)
    assert got[3] < got[1]
