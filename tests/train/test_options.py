"""Every offered training option does what its help says, tested by its effect: the weights that changed, the
learning rates in the optimizer's param groups, the steps taken; and options that cannot work are refused before
anything heavy loads."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swift.core import ConfigError
from swift.train import export_main, sft_main
from tests.conftest import BIN, save_tiny_llama
from tests.train.test_sft import flags, losses


@pytest.fixture(scope="module")
def six_layer_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """6 layers with untied embeddings: LISA needs layers to draw from."""
    return save_tiny_llama(tmp_path_factory.mktemp("six-layers"), smollm2_tokenizer, layers=6, tied=False)


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Who is number {i}?"},
                          {"role": "assistant", "content": f"Number {i} is " + "very " * (i % 5) + "fine."}]}
            for i in range(20)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out |= load_file(file)
    return out


def changed_layers(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[int]:
    import re

    return {int(m.group(1)) for name, value in before.items()
            if (m := re.search(r"layers\.(\d+)\.", name)) and not torch.equal(value, after[name])}


def test_lisa_trains_exactly_the_layers_it_activates(six_layer_dir, rows_file, tmp_path):
    from swift.tuners.lisa import LisaCallback

    result = sft_main(flags(six_layer_dir, rows_file, tmp_path, "--train_type", "lisa", "--lisa_activated_layers",
                            "1", "--lisa_step_interval", "2", "--max_steps", "12", "--seed", "7",
                            "--per_device_train_batch_size", "2", "--learning_rate", "1e-2"))
    changed = changed_layers(weights(six_layer_dir), weights(result.last_checkpoint))
    # The same seed draws the same layers: one draw when training begins, then at steps 2, 4, 6, 8 and 10.
    from transformers import AutoModelForCausalLM

    replay = LisaCallback(AutoModelForCausalLM.from_pretrained(six_layer_dir), 1, 2, seed=7)
    for _ in range(6):
        replay.switch()
    drawn = {layer for draw in replay.history for layer in draw}
    assert 1 < len(drawn) < 6  # the check below tests both directions
    assert changed == drawn


def test_lora_plus_puts_b_at_ratio_times_the_learning_rate(tiny_llama_dir):
    from transformers import TrainingArguments

    from swift.core import get_model_tokenizer
    from swift.core.arguments import parse_args
    from swift.train import SftArguments
    from swift.train.trainer import SwiftTrainer
    from swift.tuners import prepare_model

    model, _ = get_model_tokenizer(str(tiny_llama_dir))
    args = parse_args(SftArguments, ["--lorap_lr_ratio", "16"])
    prepared = prepare_model(model, args.tuner)
    trainer = SwiftTrainer(model=prepared.model, args=TrainingArguments("/tmp/unused", learning_rate=1e-3,
                                                                        use_cpu=True, report_to=[]),
                           lr_ratios=prepared.lr_ratios)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = [(n, p) for n, p in prepared.model.named_parameters() if p.requires_grad]
    assert sorted({lr_of[id(p)] for n, p in named if "lora_B" in n}) == pytest.approx([1.6e-2])
    assert sorted({lr_of[id(p)] for n, p in named if "lora_A" in n}) == pytest.approx([1e-3])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)  # every parameter once


def test_lora_plus_moves_b_further_in_training(tiny_llama_dir, rows_file, tmp_path):
    def b_norm(ratio: list[str]) -> float:
        result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / str(len(ratio)), "--max_steps", "3", *ratio))
        return sum(v.norm().item() for k, v in weights(result.last_checkpoint).items() if "lora_B" in k)

    assert b_norm(["--lorap_lr_ratio", "16"]) > 4 * b_norm([])


def test_streaming_needs_max_steps_and_then_trains_them(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match="--max_steps"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--streaming", "true"))
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--streaming", "true", "--max_steps", "3"))
    assert sorted(losses(result.run_dir)) == [1, 2, 3]


def test_packing_works_on_a_stream(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--streaming", "true", "--packing", "true",
                            "--max_length", "256", "--max_steps", "2", "--per_device_train_batch_size", "1"))
    log = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()]
    assert sorted(losses(result.run_dir)) == [1, 2]
    # one packed row per step holds several conversations (one conversation is ~30 tokens)
    assert next(r["tokens_seen"] for r in log if r["step"] == 1) > 100


def test_packing_with_lazy_tokenize_is_refused_naming_both(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--packing true with --lazy_tokenize true"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--packing", "true", "--lazy_tokenize", "true"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_only_options_are_refused_before_loading_on_cpu(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--init_weights loftq: .*CUDA"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--init_weights", "loftq"))
    with pytest.raises(ConfigError, match="--use_liger_kernel"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--use_liger_kernel", "true"))


@pytest.mark.gpu
def test_loftq_initialises_both_lora_matrices(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--init_weights", "loftq", "--quant_bits", "4",
                            "--max_steps", "1", "--learning_rate", "1e-9"))
    lora = weights(result.last_checkpoint)
    assert all(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # plain LoRA starts B at zero


@pytest.mark.gpu
def test_liger_computes_the_loss_from_the_labels(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--use_liger_kernel", "true", "--max_steps", "2"))
    assert sorted(losses(result.run_dir)) == [1, 2]


def test_prompt_tuning_pads_instead_of_flattening(tiny_llama_dir, caplog):
    """peft's prompt tuning drops position_ids: rows flattened into one would attend to each other. So the recipe
    pads for it (with a notice); the flattened batch really does leak, which is why."""
    from peft import PromptTuningConfig, get_peft_model

    from swift.core.arguments import parse_args
    from swift.train import SftArguments
    from swift.train.recipe import padding_free
    from swift.tuners import get_tuner

    with caplog.at_level(logging.WARNING):
        assert padding_free(parse_args(SftArguments, ["--train_type", "prompt"]), get_tuner("prompt")) is False
    assert "padding-free batches turned off" in caplog.text
    assert padding_free(parse_args(SftArguments, []), get_tuner("lora")) is True

    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    first, second = torch.tensor([[5, 6, 7]]), torch.tensor([[8, 9, 10, 11]])
    with torch.no_grad():
        alone = model(input_ids=second).logits[0, -4:]
        flat = model(input_ids=torch.cat([first, second], 1), position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3]]))
    assert not torch.allclose(flat.logits[0, -4:], alone, atol=1e-4)


def test_unbuilt_choices_are_offered_as_such_and_refused_when_parsed():
    from swift.core.arguments import collect_flags, format_help, parse_args
    from swift.train import RlhfArguments, SftArguments
    from swift.train.rlhf import METHODS
    from swift.tuners import TUNERS

    assert collect_flags(SftArguments)["train_type"].choices == tuple(TUNERS)
    assert collect_flags(RlhfArguments)["rlhf_type"].choices == tuple(METHODS)
    assert "[not built yet: adapter, reft]" in format_help(SftArguments, prog="swift sft")
    for argv, name in ((["--train_type", "adapter"], "adapter"), (["--train_type", "reft"], "reft")):
        with pytest.raises(ConfigError, match=f"--train_type {name}: not built yet"):
            parse_args(SftArguments, argv)
    rlhf_help = format_help(RlhfArguments, prog="swift rlhf").split("--rlhf_type", 1)[1].split("\n  --", 1)[0]
    assert "ppo" in rlhf_help
    assert "not built" not in rlhf_help


def test_a_missing_dataset_is_reported_before_anything_heavy_loads(tmp_path):
    code = ("import sys\nfrom swift.core import ConfigError\nfrom swift.train.cli import sft_main\n"
            "try:\n    sft_main(['--model', 'x', '--dataset', '/nonexistent/rows.jsonl'])\n"
            "except ConfigError as e:\n    print(e)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'trl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["--dataset /nonexistent/rows.jsonl: no such file or folder", "[]"]


def test_a_tuner_from_a_plugin_file_trains_what_it_says(tiny_llama_dir, rows_file, tmp_path):
    plugin = tmp_path / "head_only.py"
    plugin.write_text(
        "from swift.tuners import TunerMeta, only_train, register_tuner\n\n\n"
        "def apply(model, args, context):\n"
        "    only_train(model, ['model.norm'])\n"
        "    return model\n\n\n"
        "register_tuner(TunerMeta('norm_only', apply, 'the final norm alone', full_weights=True))\n")
    with pytest.raises(ConfigError, match="--train_type must be one of"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--train_type", "norm_only"))
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--custom_register_path", str(plugin),
                            "--train_type", "norm_only", "--max_steps", "2", "--learning_rate", "1e-2"))
    before, after = weights(tiny_llama_dir), weights(result.last_checkpoint)
    moved = {name for name, value in before.items() if not torch.equal(value, after[name])}
    assert moved == {"model.norm.weight"}
    assert json.loads((result.run_dir / "args.json").read_text())["learning_rate"] == 1e-2


def test_secrets_never_reach_the_disk(tiny_llama_dir, rows_file, tmp_path, monkeypatch):
    token = "hf_SECRETtoken" + str(random.randrange(10**9))
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "run", "--max_steps", "1", "--hub_token", token))
    merged = export_main(["--adapters", str(result.last_checkpoint), "--merge_lora", "true",
                          "--output_dir", str(tmp_path / "merged")])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert [p for p in files if token.encode() in p.read_bytes()] == []
    assert json.loads((result.run_dir / "args.json").read_text())["hub_token"] is None
    assert Path(merged).is_dir()

    from swift.core.arguments import parse_args
    from swift.train import SftArguments

    monkeypatch.setenv("HF_TOKEN", token)
    assert parse_args(SftArguments, []).model.hub_token == token  # from the environment: out of `ps`
    help_text = subprocess.run([str(BIN / "swift"), "sft", "--help"], capture_output=True, text=True).stdout
    assert "(default: $HF_TOKEN)" in help_text
