"""`megatron export`: HF -> mcore at any TP/PP -> one HF directory, exact; refusing to overwrite."""

from __future__ import annotations

import json

import pytest
import torch

from swift.core.errors import ConfigError

pytest.importorskip("megatron.core")


def test_sharded_export_round_trips_exactly(tiny_untied_dir, tmp_path):
    from swift.megatron import export_main

    export_main(["--model", str(tiny_untied_dir), "--to_mcore", "true", "--output_dir", str(tmp_path / "mcore"),
                 "--tensor_model_parallel_size", "2", "--pipeline_model_parallel_size", "2"])
    iteration = tmp_path / "mcore" / "iter_0000000"
    assert sorted(p.name for p in iteration.glob("mp_rank_*")) == [
        "mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]
    meta = json.loads((iteration / "swift_mcore.json").read_text())
    assert (meta["tp"], meta["pp"], meta["train_type"]) == (2, 2, "full")
    export_main(["--mcore_model", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")("hi").input_ids
    assert json.loads((tmp_path / "hf" / "args.json").read_text())["train_type"] == "full"

    with pytest.raises(ConfigError, match="exists and is not empty"):
        export_main(["--mcore_model", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    assert all(torch.equal(a[k], AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()[k]) for k in a)


def _conversion_diffs(caplog) -> list[float]:
    return [float(r.getMessage().split("logit difference ")[1].split()[0]) for r in caplog.records
            if "--test_convert_precision" in r.getMessage()]


def test_convert_precision_compares_hf_and_mcore_logits(tiny_untied_dir, tmp_path, caplog):
    from swift.megatron import export_main

    with caplog.at_level("INFO", logger="swift.megatron.precision"):
        export_main(["--model", str(tiny_untied_dir), "--to_mcore", "true", "--tensor_model_parallel_size", "2",
                     "--output_dir", str(tmp_path / "mcore"), "--test_convert_precision", "true"])
        export_main(["--mcore_model", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir",
                     str(tmp_path / "hf"), "--test_convert_precision", "true"])
    diffs = _conversion_diffs(caplog)
    assert len(diffs) == 2
    assert all(0 <= d < 1e-4 for d in diffs), diffs


def test_convert_precision_sees_a_broken_conversion(tiny_untied_dir, tmp_path):
    """The check measures something: a checkpoint whose weights were changed after conversion differs."""
    from swift.megatron import export_main
    from swift.megatron.arguments import MegatronArguments
    from swift.megatron.precision import check_conversion

    export_main(["--model", str(tiny_untied_dir), "--to_mcore", "true", "--output_dir", str(tmp_path / "mcore")])
    piece = tmp_path / "mcore" / "iter_0000000" / "mp_rank_00" / "model_optim_rng.pt"
    saved = torch.load(piece, weights_only=False)
    saved["model"]["decoder.final_layernorm.weight"] *= 2
    torch.save(saved, piece)
    from swift.core.arguments import parse_args

    args = parse_args(MegatronArguments, ["--model", str(tiny_untied_dir), "--to_mcore", "true"])
    assert check_conversion(tmp_path / "mcore", args) > 1e-2


@pytest.fixture(scope="module")
def peft_adapter_dir(tiny_untied_dir, tmp_path_factory):
    """A PEFT LoRA adapter on the tiny llama with non-zero B (a trained adapter's shape)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("peft")
    model.save_pretrained(folder)
    merged = {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}
    return folder, merged


def test_adapters_export_the_lora_merged(tiny_untied_dir, peft_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from swift.megatron import export_main

    adapter, merged = peft_adapter_dir
    export_main(["--model", str(tiny_untied_dir), "--adapters", str(adapter), "--to_hf", "true", "--output_dir",
                 str(tmp_path / "hf")])
    export_main(["--model", str(tiny_untied_dir), "--adapters", str(adapter), "--to_mcore", "true",
                 "--tensor_model_parallel_size", "2", "--output_dir", str(tmp_path / "mcore")])
    export_main(["--adapters", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir", str(tmp_path / "back")])
    base = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    assert max((merged[k] - base[k]).abs().max().item() for k in base) > 1e-3  # the adapter changes weights
    for folder in ("hf", "back"):
        got = AutoModelForCausalLM.from_pretrained(tmp_path / folder, dtype=torch.float32).state_dict()
        assert got.keys() == merged.keys()
        assert all(torch.allclose(got[k], merged[k], atol=1e-6) for k in merged), folder
    with pytest.raises(ConfigError, match="--merge_lora true"):
        export_main(["--model", str(tiny_untied_dir), "--adapters", str(adapter), "--to_hf", "true",
                     "--merge_lora", "false", "--output_dir", str(tmp_path / "unmerged")])
