"""GPTQ / AWQ / FP8 exports in compressed-tensors format: plain transformers loads and runs them; calibration is
seeded; our GPTQ beats round-to-nearest where it should."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from swift.core.errors import ConfigError
from swift.train import export_main
from swift.train.export.quantize import QuantSpec, gptq, round_to_nearest
from tests.train.export.conftest import logits_of

IDS = torch.tensor([[1, 20, 300, 4000, 5, 77, 1234, 9]])


def _export(tiny_llama_dir, calib_file, out, *extra):
    return export_main(["--model", str(tiny_llama_dir), "--dataset", str(calib_file), "--quant_n_samples", "8",
                        "--max_length", "64", "--output_dir", str(out), *extra])


@pytest.fixture(scope="module")
def gptq_export(tiny_llama_dir, calib_file, tmp_path_factory):
    return _export(tiny_llama_dir, calib_file, tmp_path_factory.mktemp("gptq") / "out", "--quant_method", "gptq",
                   "--group_size", "32")


def test_gptq_checkpoint_loads_in_plain_transformers(gptq_export, tiny_llama_dir):
    out = gptq_export.output_dir
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == "pack-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 32, True)
    tensors = load_file(out / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.weight_packed"].dtype == torch.int32
    quantized = AutoModelForCausalLM.from_pretrained(out).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    a, b = logits_of(quantized, IDS), logits_of(original, IDS)
    assert torch.isfinite(a).all()
    assert 0 < (a - b).abs().max().item() < 0.5 * b.abs().max().item()  # quantized, not broken


def test_gptq_report_and_calibration_record(gptq_export):
    report = json.loads((gptq_export.output_dir / "quant_report.json").read_text())
    assert report == gptq_export.report
    assert report["method"] == "gptq"
    assert report["bits"] == 4
    assert report["group_size"] == 32
    assert report["calibration"]["samples"] == 8
    assert report["calibration"]["seed"] == 42
    assert report["held_out"]["source"] == "--dataset rows not sampled for calibration"
    assert report["held_out"]["texts"] == 4
    assert 0.0 <= report["next_token_agreement"] <= 1.0
    assert 0.0 <= report["greedy_same"] <= 1.0
    assert 0 <= report["greedy_tokens_before_divergence"] <= report["greedy_tokens"]
    assert report["max_logit_gap"] > 0
    assert report["perplexity_before"] > 1
    assert report["perplexity_after"] > 1
    assert report["size_after_bytes"] < report["size_before_bytes"]
    assert report["seconds_quantize"] > 0
    assert report["seconds_total"] >= report["seconds_quantize"]


def test_calibration_is_seeded(gptq_export, tiny_llama_dir, calib_file, tmp_path):
    again = _export(tiny_llama_dir, calib_file, tmp_path / "again", "--quant_method", "gptq", "--group_size", "32",
                    "--quant_report", "false")
    assert again.report["calibration"]["digest"] == gptq_export.report["calibration"]["digest"]
    first, second = load_file(gptq_export.output_dir / "model.safetensors"), load_file(again.output_dir / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _export(tiny_llama_dir, calib_file, tmp_path / "other", "--quant_method", "gptq", "--group_size", "32",
                    "--data_seed", "7", "--quant_report", "false")
    assert "next_token_agreement" not in other.report  # --quant_report false: nothing measured
    assert other.report["calibration"]["digest"] != gptq_export.report["calibration"]["digest"]


def test_group_size_must_divide_the_layers(tiny_llama_dir, calib_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--group_size 48 does not divide .*sizes that do: \[64, 32, 16\]"):
        _export(tiny_llama_dir, calib_file, tmp_path / "bad", "--quant_method", "gptq", "--group_size", "48")


def test_gptq_reconstructs_correlated_inputs_better_than_round_to_nearest():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(64, 64, generator=generator)
    x = torch.randn(2048, 64, generator=generator) @ mixing  # correlated features, as real activations are
    w = torch.randn(32, 64, generator=generator)
    spec = QuantSpec(4, 16)
    q_gptq, scales = gptq(w, 2 * x.T @ x / x.shape[0], spec)
    q_rtn, _ = round_to_nearest(w, spec)
    error = lambda q: ((x @ (q - w).T) ** 2).mean().item()  # noqa: E731
    assert error(q_gptq) < 0.7 * error(q_rtn)
    # every value sits on its group's integer grid
    grid = q_gptq / scales.repeat_interleave(16, dim=1)
    assert torch.allclose(grid, grid.round(), atol=1e-3)
    assert grid.abs().max() <= 8


def test_awq_and_fp8_load_and_run(tiny_llama_dir, calib_file, tmp_path):
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    awq = _export(tiny_llama_dir, calib_file, tmp_path / "awq", "--quant_method", "awq", "--group_size", "32",
                  "--quant_report", "false")
    fp8 = export_main(["--model", str(tiny_llama_dir), "--quant_method", "fp8", "--output_dir", str(tmp_path / "fp8")])
    config = json.loads((tmp_path / "fp8" / "config.json").read_text())["quantization_config"]
    assert config["format"] == "float-quantized"
    assert config["config_groups"]["group_0"]["input_activations"]["dynamic"] is True
    assert fp8.report["held_out"]["source"].startswith("built-in")
    for result in (awq, fp8):
        model = AutoModelForCausalLM.from_pretrained(result.output_dir).eval()
        assert torch.isfinite(logits_of(model, IDS)).all()
        assert (logits_of(model, IDS) - logits_of(original, IDS)).abs().max().item() > 0
    assert fp8.report["next_token_agreement"] >= 0.9  # 8-bit floats with per-channel scales barely move a model


@pytest.mark.parametrize(("method", "size"), [("gptq", "4"), ("gptq", "-1"), ("awq", "3")])
def test_quant_batch_size_batches_calibration_with_the_same_result(gptq_export, tiny_llama_dir, calib_file, tmp_path,
                                                                   method, size):
    """Padded batches give what one row at a time gives: the padding is masked in attention and left out of the
    statistics (a Hessian of padded tokens would differ by far more than float noise)."""
    one = gptq_export if method == "gptq" else _export(tiny_llama_dir, calib_file, tmp_path / "one", "--quant_method",
                                                       method, "--group_size", "32", "--quant_report", "false")
    batched = _export(tiny_llama_dir, calib_file, tmp_path / "batched", "--quant_method", method, "--group_size", "32",
                      "--quant_report", "false", "--quant_batch_size", size)
    assert batched.report["calibration"]["batch_size"] == (8 if size == "-1" else int(size))
    assert batched.report["calibration"]["digest"] == one.report["calibration"]["digest"]
    first, second = load_file(one.output_dir / "model.safetensors"), load_file(batched.output_dir / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        a, b = first[key].float(), second[key].float()
        if key.endswith("weight_packed"):
            assert (first[key] == second[key]).float().mean() > 0.995, key  # a rare tie may round the other way
        else:
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), key


def test_quant_batch_size_must_be_positive_or_minus_one(tiny_llama_dir, calib_file, tmp_path):
    with pytest.raises(ConfigError, match="--quant_batch_size 0"):
        _export(tiny_llama_dir, calib_file, tmp_path, "--quant_method", "gptq", "--quant_batch_size", "0")


def test_load_data_args_calibrates_on_the_data_of_the_run_that_made_the_model(gptq_export, tiny_llama_dir,
                                                                              calib_file, tmp_path):
    """ms-swift's gptq.sh: `--model MERGED --load_data_args true` takes --dataset and --max_length from the args.json a
    merged model keeps; the calibration rows are those of an export given them on the command line."""
    import shutil

    merged = tmp_path / "merged"
    shutil.copytree(tiny_llama_dir, merged)
    (merged / "args.json").write_text(json.dumps({"model": str(tiny_llama_dir), "dataset": [str(calib_file)],
                                                  "max_length": 64, "data_seed": 42}))
    again = export_main(["--model", str(merged), "--load_data_args", "true", "--quant_n_samples", "8",
                         "--quant_method", "gptq", "--group_size", "32", "--quant_report", "false",
                         "--output_dir", str(tmp_path / "out")])
    assert again.report["calibration"]["digest"] == gptq_export.report["calibration"]["digest"]
    given = export_main(["--model", str(merged), "--load_data_args", "true", "--quant_n_samples", "8",
                         "--quant_method", "gptq", "--group_size", "32", "--quant_report", "false",
                         "--data_seed", "7", "--output_dir", str(tmp_path / "seed7")])
    assert given.report["calibration"]["digest"] != gptq_export.report["calibration"]["digest"]  # a flag given wins
    with pytest.raises(ConfigError, match=r"--load_data_args true: no args.json naming a --dataset beside"):
        export_main(["--model", str(tiny_llama_dir), "--load_data_args", "true", "--quant_method", "gptq",
                     "--output_dir", str(tmp_path / "none")])
