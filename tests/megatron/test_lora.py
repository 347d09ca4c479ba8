"""LoRA on mcore layers: only the adapter trains, TP=2 gives TP=1's losses, and the checkpoint exports merged
(plain transformers) or as a PEFT adapter that plain peft loads with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.megatron.conftest import IDENTITY, check, logged_losses, run_megatron

pytest.importorskip("megatron.core")

LORA = ("--dataset", str(IDENTITY), "--train_type", "lora", "--lora_rank", "4", "--lora_alpha", "8",
        "--lora_dropout", "0", "--target_modules", "all-linear", "--micro_batch_size", "1", "--global_batch_size", "2",
        "--max_length", "64", "--lr", "1e-2", "--log_interval", "1", "--seed", "3", "--train_iters", "3")


def _checkpoint(save: Path) -> Path:
    (found,) = save.glob("v*/iter_0000003")
    return found


def test_lora_checkpoint_exports_merged_and_as_peft(tiny_untied_dir, tmp_path):
    from swift.megatron import export_main, sft_main

    sft_main(["--model", str(tiny_untied_dir), *LORA, "--save", str(tmp_path / "lora")])
    losses = logged_losses(tmp_path / "lora")
    assert losses[3] < losses[1]
    ckpt = _checkpoint(tmp_path / "lora")
    saved = torch.load(ckpt / "mp_rank_00" / "model_optim_rng.pt", weights_only=False)["model"]
    assert saved
    assert all(".lora_" in k for k in saved)
    assert json.loads((ckpt / "swift_mcore.json").read_text())["lora"]["rank"] == 4

    export_main(["--mcore_model", str(ckpt), "--to_hf", "true", "--output_dir", str(tmp_path / "m")])
    export_main(["--mcore_model", str(ckpt), "--to_hf", "true", "--merge_lora", "false", "--output_dir",
                 str(tmp_path / "peft")])
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 1000, (1, 16))
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, tmp_path / "peft").eval()(ids).logits
        merged_logits = merged(ids).logits
    assert (adapted - merged_logits).abs().max().item() < 1e-4
    assert (merged_logits - base_logits).abs().max().item() > 1e-3  # the adapter changed the model


def test_lora_checkpoint_through_ms_swift_export_flags(tiny_untied_dir, tmp_path, caplog):
    """--adapters / --mcore_adapter name the LoRA checkpoint: merged HF, merged mcore, and the precision check."""
    from transformers import AutoModelForCausalLM

    from swift.megatron import export_main, sft_main

    sft_main(["--model", str(tiny_untied_dir), *LORA, "--train_iters", "1", "--save", str(tmp_path / "lora")])
    (ckpt,) = (tmp_path / "lora").glob("v*/iter_0000001")
    model = ("--model", str(tiny_untied_dir))
    export_main(["--mcore_model", str(ckpt), "--to_hf", "true", "--output_dir", str(tmp_path / "ref")])
    export_main(["--adapters", str(ckpt), "--to_hf", "true", "--output_dir", str(tmp_path / "adapters")])
    with caplog.at_level("INFO", logger="swift.megatron.precision"):
        export_main([*model, "--mcore_adapter", str(ckpt), "--to_hf", "true", "--test_convert_precision", "true",
                     "--output_dir", str(tmp_path / "mcore_adapter")])
    export_main([*model, "--mcore_adapter", str(ckpt), "--to_mcore", "true", "--tensor_model_parallel_size", "2",
                 "--output_dir", str(tmp_path / "merged_mcore")])
    export_main(["--mcore_model", str(tmp_path / "merged_mcore"), "--to_hf", "true", "--output_dir",
                 str(tmp_path / "merged_back")])
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "ref", dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    assert max((ref[k] - base[k]).abs().max().item() for k in ref) > 1e-4
    for folder in ("adapters", "mcore_adapter", "merged_back"):
        got = AutoModelForCausalLM.from_pretrained(tmp_path / folder, dtype=torch.float32).state_dict()
        assert all(torch.allclose(got[k], ref[k], atol=1e-6) for k in ref), folder
    (line,) = [r.getMessage() for r in caplog.records if "--test_convert_precision" in r.getMessage()]
    assert float(line.split("logit difference ")[1].split()[0]) < 1e-4


@pytest.mark.slow
def test_lora_under_tensor_parallelism_gives_the_one_process_losses(tiny_untied_dir, tmp_path):
    from swift.megatron import export_main, sft_main

    sft_main(["--model", str(tiny_untied_dir), *LORA, "--save", str(tmp_path / "one")])
    check(run_megatron("sft", "--model", str(tiny_untied_dir), *LORA, "--tensor_model_parallel_size", "2",
                       "--save", str(tmp_path / "tp2"), nproc=2))
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "tp2")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    export_main(["--mcore_model", str(tmp_path / "tp2"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf2")])
    export_main(["--mcore_model", str(tmp_path / "one"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf1")])
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "hf1", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "hf2", dtype=torch.float32).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
