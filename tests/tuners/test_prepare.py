"""prepare_model on a tiny random llama: every --train_type trains what it should, adapters are plain PEFT."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

from swift.core import get_model_tokenizer
from swift.core.arguments import parse_args
from swift.core.errors import ConfigError
from swift.tuners import TunerArgs, count_parameters, prepare_model, resolve_target_modules


@dataclass
class TunerCommand:
    tuner: TunerArgs = field(default_factory=TunerArgs)


def tuner(*argv: str) -> TunerArgs:
    return parse_args(TunerCommand, list(argv)).tuner


@pytest.fixture
def model(tiny_llama_dir):
    return get_model_tokenizer(str(tiny_llama_dir))[0]


def test_target_module_forms():
    assert resolve_target_modules(["all-linear"]) == "all-linear"
    assert resolve_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert resolve_target_modules([r".*\.(q|k)_proj"]) == r".*\.(q|k)_proj"


@pytest.mark.parametrize("train_type", ["lora", "ia3", "vera", "boft", "fourierft", "prompt", "prefix"])
def test_peft_family_trains_a_small_part_and_runs(model, train_type):
    _, total = count_parameters(model)
    prepared = prepare_model(model, tuner("--train_type", train_type, "--lora_rank", "4"))
    assert 0 < prepared.trainable < total
    ids = torch.tensor([[1, 2, 3, 4]])
    out = prepared.model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for p in prepared.model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_lora_adapter_is_plain_peft_with_the_user_id(model, tmp_path, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prepared = prepare_model(model, tuner("--lora_rank", "4", "--use_rslora", "true", "--target_modules", "q_proj",
                                          "v_proj"))
    with torch.no_grad():
        for name, p in prepared.model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    prepared.model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir)
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["use_rslora"] is True
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    prepared.model.eval()  # LoRA dropout is on in train mode
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, prepared.model(ids).logits, atol=1e-6)


def test_dora_and_pissa_init(model):
    prepared = prepare_model(model, tuner("--use_dora", "true", "--init_weights", "pissa_niter_2"))
    names = [n for n, p in prepared.model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)
    with pytest.raises(ConfigError, match="--init_weights"):
        prepare_model(model, tuner("--init_weights", "magic"))


def test_full_and_freeze(model):
    prepared = prepare_model(model, tuner("--train_type", "full"))
    assert prepared.trainable == prepared.total
    prepared = prepare_model(model, tuner("--train_type", "freeze", "--freeze_parameters_ratio", "0.5",
                                          "--trainable_parameters", "model.layers.0.mlp"))
    frozen = {n for n, p in prepared.model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("model.layers.0.self_attn") for n in frozen)
    assert not any(n.startswith("model.layers.1.") for n in frozen)
    assert not any(n.startswith("model.layers.0.mlp") for n in frozen)
    with pytest.raises(ConfigError, match="freeze_parameters_ratio"):
        prepare_model(model, tuner("--train_type", "freeze", "--freeze_parameters_ratio", "2"))


def test_llamapro_adds_identity_blocks(model):
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        before = model(ids).logits
    prepared = prepare_model(model, tuner("--train_type", "llamapro", "--llamapro_num_new_blocks", "2"))
    assert prepared.model.config.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.allclose(prepared.model(ids).logits, before, atol=1e-5)
    trainable = {n.split(".")[2] for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "3"}
    with pytest.raises(ConfigError, match="must divide"):
        prepare_model(model, tuner("--train_type", "llamapro", "--llamapro_num_new_blocks", "3"))


def test_lisa_leaves_every_layer_to_the_optimizer_then_switches(model):
    prepared = prepare_model(model, tuner("--train_type", "lisa", "--lisa_activated_layers", "1"))
    (callback,) = prepared.callbacks
    layers = prepared.model.model.layers

    def active() -> list[int]:
        return [i for i, layer in enumerate(layers) if all(p.requires_grad for p in layer.parameters())]

    # The trainer builds its optimizer from the trainable parameters before training begins: every layer is there.
    assert active() == [0, 1]
    callback.on_train_begin(None, None, None)
    assert active() == callback.active
    assert len(active()) == 1
    assert prepared.model.model.embed_tokens.weight.requires_grad
    seen = set()
    for step in range(0, 400, 20):  # re-sampled every --lisa_step_interval (20) steps
        callback.on_step_begin(None, type("State", (), {"global_step": step})(), None)
        assert len(active()) == 1
        seen.add(active()[0])
    assert seen == {0, 1}
    assert len(callback.history) == 20  # the first draw, then one per interval after step 0


def test_unsupported_tuners_say_so(model):
    with pytest.raises(ConfigError, match="adapter"):
        prepare_model(model, tuner("--train_type", "adapter"))
    with pytest.raises(ConfigError, match="nothing would train"):
        prepare_model(model, tuner("--train_type", "freeze", "--freeze_parameters", "model", "lm_head"))


def test_qlora_without_cuda_says_so():
    from swift.tuners import quantization_config

    assert quantization_config(tuner()) is None
    with pytest.raises(ConfigError, match="--quant_bits 4 or 8"):
        quantization_config(tuner("--quant_method", "bnb"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            quantization_config(tuner("--quant_method", "bnb", "--quant_bits", "4"))


def test_qlora_4bit_flags_shape_the_bitsandbytes_config(monkeypatch):
    from swift.tuners import quantization_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the config is built before any GPU work
    default = quantization_config(tuner("--quant_method", "bnb", "--quant_bits", "4"))
    assert (default.bnb_4bit_quant_type, default.bnb_4bit_use_double_quant, default.bnb_4bit_compute_dtype) == (
        "nf4", True, torch.bfloat16)
    chosen = quantization_config(tuner("--quant_method", "bnb", "--quant_bits", "4", "--bnb_4bit_quant_type", "fp4",
                                       "--bnb_4bit_use_double_quant", "false", "--bnb_4bit_compute_dtype",
                                       "float16"))
    assert (chosen.bnb_4bit_quant_type, chosen.bnb_4bit_use_double_quant, chosen.bnb_4bit_compute_dtype) == (
        "fp4", False, torch.float16)


def test_lora_plus_is_refused_with_other_tuners_before_loading():
    from swift.tuners import check_tuner_args

    assert check_tuner_args(tuner("--lorap_lr_ratio", "16")) == []
    assert check_tuner_args(tuner("--train_type", "full", "--lorap_lr_ratio", "16")) == [
        "--lorap_lr_ratio is LoRA+: it needs --train_type lora, not full"]
