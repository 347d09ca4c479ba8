"""`megatron sft --optimizer muon|dist_muon`: torch.optim.Muon's update on each HF matrix (swift sft's Muon gives the
same losses), the same under tensor parallelism with --muon_tp_mode duplicated and with dist_muon's sharded state,
and each flag by its effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.megatron.conftest import check, logged_losses, run_megatron

pytest.importorskip("megatron.core")

ROWS = [{"messages": [{"role": "user", "content": f"What is {w}?"},
                      {"role": "assistant", "content": f"{w.capitalize()} is a word with {len(w)} letters."}]}
        for w in ("apple", "river", "stone", "cloud")]
COMMON = ("--train_type", "full", "--micro_batch_size", "4", "--global_batch_size", "4", "--max_length", "64",
          "--lr", "1e-3", "--lr_decay_style", "constant", "--log_interval", "1", "--seed", "7", "--bf16", "false",
          "--weight_decay", "0", "--adam_beta2", "0.999", "--train_iters", "3", "--save_interval", "100")
# torch.optim.Muon as swift sft configures it: Nesterov, 0.2·sqrt(max(out, in)) ("match_rms_adamw"), whole matrices
AS_TORCH = ("--optimizer", "muon", "--muon_use_nesterov", "true", "--muon_scale_mode", "spectral",
            "--muon_extra_scale_factor", "0.2", "--muon_tp_mode", "duplicated")


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("muon") / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    return path


@pytest.fixture(scope="module")
def one_process(tiny_untied_dir, rows, tmp_path_factory) -> dict[int, float]:
    from swift.megatron import sft_main

    save = tmp_path_factory.mktemp("muon-one")
    sft_main(["--model", str(tiny_untied_dir), "--dataset", str(rows), *COMMON, *AS_TORCH, "--save", str(save)])
    return logged_losses(save)


def test_muon_trains_as_swift_sft_muon_does(tiny_untied_dir, rows, one_process, tmp_path):
    from swift.train import sft_main

    sft_main(["--model", str(tiny_untied_dir), "--dataset", str(rows), "--output_dir", str(tmp_path / "hf"),
              "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--logging_steps", "1",
              "--max_steps", "3", "--train_type", "full", "--per_device_train_batch_size", "4", "--max_length", "64",
              "--split_dataset_ratio", "0", "--optimizer", "muon", "--learning_rate", "1e-3", "--weight_decay", "0",
              "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--save_steps", "100"])
    (log,) = (tmp_path / "hf").glob("**/logging.jsonl")
    reference = {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r}
    assert sorted(one_process) == [1, 2, 3]
    for step in one_process:  # bf16 Newton-Schulz in both: agreement to its rounding
        assert abs(one_process[step] - reference[step]) < 2e-3, (step, one_process, reference)
    assert one_process[3] < one_process[1]


@pytest.mark.parametrize(("name", "flags"), [
    ("tp2", ("--tensor_model_parallel_size", "2")),
    ("dist_muon", ("--optimizer", "dist_muon")),
    pytest.param("tp2_blockwise", ("--tensor_model_parallel_size", "2", "--muon_tp_mode", "blockwise"),
                 marks=pytest.mark.slow)])
def test_two_processes_give_the_one_process_losses(tiny_untied_dir, rows, one_process, tmp_path, name, flags):
    """TP=2 gathers each split matrix before Newton-Schulz (duplicated); dist_muon on DP=2 steps each parameter on its
    owner and broadcasts it. Blockwise (mcore's default) orthogonalises each rank's shard: another update."""
    check(run_megatron("sft", "--model", str(tiny_untied_dir), "--dataset", str(rows), *COMMON, *AS_TORCH, *flags,
                       "--micro_batch_size", "2" if name == "dist_muon" else "4", "--save", str(tmp_path / name),
                       nproc=2))
    two = logged_losses(tmp_path / name)
    if name == "tp2_blockwise":
        assert two[1] == pytest.approx(one_process[1], abs=1e-5)
        assert abs(two[3] - one_process[3]) > 1e-4
        assert two[3] < two[1]
        return
    for step in one_process:
        assert abs(one_process[step] - two[step]) < 1e-4, (step, one_process, two)


def test_the_muon_flags_change_the_update(tiny_untied_dir, rows, one_process, tmp_path):
    from swift.megatron import sft_main

    for name, flags in (("adam", ("--optimizer", "adam")),
                        ("split", (*AS_TORCH, "--muon_split_qkv", "false")),
                        ("scale", (*AS_TORCH, "--muon_extra_scale_factor", "0.1"))):
        sft_main(["--model", str(tiny_untied_dir), "--dataset", str(rows), *COMMON, *flags,
                  "--save", str(tmp_path / name)])
        other = logged_losses(tmp_path / name)
        assert other[1] == pytest.approx(one_process[1], abs=1e-6)  # the same start
        assert abs(other[3] - one_process[3]) > 1e-4, (name, other, one_process)


def test_orthogonalised_update_of_a_split_qkv_is_per_hf_matrix():
    """The update of a fused linear_qkv is the one of q, k and v each (mcore's group interleaving undone)."""
    from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, _zeropower_via_newtonschulz

    from swift.megatron.convert import ModelShape, _qkv_to_hf, _qkv_to_mcore
    from swift.megatron.muon import MuonSettings, MuonWithAdamW, scale_factor

    shape = ModelShape("llama", 1, 64, 4, 2, 16, 96, 256, False, False, False)
    q, k, v = torch.randn(64, 64), torch.randn(32, 64), torch.randn(32, 64)
    fused = _qkv_to_mcore(q, k, v, shape)
    param = torch.nn.Parameter(torch.zeros_like(fused))
    opt = MuonWithAdamW([{"params": [param], "use_muon": True, "split": "qkv", "tp_dim": None, "wd_mult": 1.0}],
                        lr=1.0, shape=shape, settings=MuonSettings(momentum=0.0))
    got = opt._orthogonalised(fused, "qkv", None)
    want = _qkv_to_mcore(*(_zeropower_via_newtonschulz(m, (DEFAULT_A, DEFAULT_B, DEFAULT_C), 5, 1e-7).float()
                           * scale_factor(*m.shape, "spectral") for m in (q, k, v)), shape)
    assert torch.allclose(got, want)
    whole = _zeropower_via_newtonschulz(fused, (DEFAULT_A, DEFAULT_B, DEFAULT_C), 5, 1e-7).float()
    assert not torch.allclose(_qkv_to_hf(got, shape)[1], _qkv_to_hf(whole * 128 ** 0.5, shape)[1], atol=1e-3)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--optimizer", "muon", "--train_type", "lora"], "use --train_type full"),
    (["--optimizer", "dist_muon", "--expert_model_parallel_size", "2"], "--optimizer dist_muon with"),
    (["--optimizer", "muon", "--muon_num_ns_steps", "0"], "--muon_num_ns_steps 0"),
])
def test_muon_flag_problems_are_named(argv, needle):
    from swift.core import ConfigError
    from swift.core.arguments import parse_args
    from swift.megatron.arguments import MegatronArguments, check_train_args
    from tests.megatron.conftest import IDENTITY

    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_train_args(parse_args(MegatronArguments, ["--model", "x", "--dataset", str(IDENTITY), *argv]))


def test_resuming_restores_the_muon_and_adamw_state(tiny_untied_dir, rows, tmp_path):
    """Without the saved state (--no_load_optim) step 4 differs by 5.6e-3: the momentum buffers and Adam moments
    are what carry over."""
    from swift.megatron import sft_main

    flags = ["--model", str(tiny_untied_dir), "--dataset", str(rows), *COMMON, *AS_TORCH, "--train_iters", "4",
             "--save_interval", "2"]
    sft_main([*flags, "--save", str(tmp_path / "whole")])
    (run,) = (tmp_path / "whole").iterdir()
    sft_main([*flags, "--load", str(run / "iter_0000002"), "--save", str(tmp_path / "resumed")])
    whole, resumed = logged_losses(tmp_path / "whole"), logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert abs(whole[step] - resumed[step]) < 1e-6, (step, whole, resumed)
