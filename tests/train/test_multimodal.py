"""swift sft on image (and audio) rows, per family, with tiny random models and their real processors: LoRA trains
and saves a checkpoint that loads with its processor; the freeze flags and the parts' learning rates act on the
weights; all-linear means the LLM's linears unless the vision tower is unfrozen; padding-free and packed rows give
the padded loss (Qwen2-VL's M-RoPE included); a merged VL LoRA gives the PEFT model's logits on an image prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from swift.core.errors import ConfigError
from swift.train import export_main, sft_main
from tests.fixtures.multimodal import FAMILIES, sample_audio, sample_image, save_tiny

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vl-data")
    (folder / "img").mkdir()
    rows = []
    for i in range(12):
        name = list(COLOURS)[i % 3]
        sample_image(COLOURS[name]).save(folder / "img" / f"{i}.png")
        question = "<image>What colour is this image?" if i % 4 else "Which colour? <image>"
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": f"It is {name}."}], "images": [f"img/{i}.png"]})
    rows.append({"messages": [{"role": "user", "content": "A text-only row between image rows."},
                              {"role": "assistant", "content": "Fine."}]})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def audio_data(tmp_path_factory) -> Path:
    import soundfile

    folder = tmp_path_factory.mktemp("audio-data")
    rows = []
    for i in range(4):
        soundfile.write(folder / f"{i}.wav", sample_audio(0.5 + 0.25 * i), 16000)
        rows.append({"messages": [{"role": "user", "content": "<audio>What do you hear?"},
                                  {"role": "assistant", "content": f"A tone, {i}."}], "audios": [f"{i}.wav"]})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory) -> Path:
    return save_tiny("qwen2_vl", tmp_path_factory.mktemp("qwen2_vl"))


def flags(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--per_device_train_batch_size",
            "4", "--logging_steps", "1", "--report_to", "none", "--learning_rate", "1e-3", "--bf16", "false",
            "--gradient_checkpointing", "false", "--dataset_shuffle", "false", *extra]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def adapted_modules(checkpoint: Path) -> set[str]:
    """The modules a LoRA checkpoint holds weights for (peft saves target_modules shortened to suffixes)."""
    from safetensors.torch import load_file

    return {key.split(".lora_")[0] for key in load_file(str(checkpoint / "adapter_model.safetensors"))}


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (Qwen2-VL saves the original layout: `visual.*`, `model.layers.*`, `lm_head`)."""
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


VISION, ALIGNER, LLM = "visual.blocks.", "visual.merger.", "model.layers."


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_every_family_and_the_checkpoint_keeps_the_processor(family, image_data, audio_data, tmp_path):
    from transformers import AutoProcessor

    model = save_tiny(family, tmp_path / "model")
    data = audio_data if family == "qwen2_audio" else image_data
    result = sft_main(flags(model, data, tmp_path / "out", "--max_steps", "2", "--lora_rank", "4"))
    assert all(loss > 0 for loss in losses(result.run_dir).values())
    checkpoint = result.last_checkpoint
    adapted = adapted_modules(checkpoint)
    # all-linear on a multimodal model: the language model's linears only (vision tower and aligner frozen)
    assert [m for m in adapted if ".language_model." in m or ".text_model." in m]
    towers = ("visual", "vision_tower", "vision_model", "audio_tower", "multi_modal_projector", "connector", "merger")
    assert not [m for m in adapted if any(f".{part}." in m for part in towers)]
    assert type(AutoProcessor.from_pretrained(checkpoint)).__name__.endswith("Processor")


def test_full_training_freezes_the_vision_tower_and_aligner_by_default(qwen2_vl, image_data, tmp_path):
    before = weights(qwen2_vl)
    result = sft_main(flags(qwen2_vl, image_data, tmp_path / "a", "--max_steps", "2", "--train_type", "full"))
    after = weights(result.last_checkpoint)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved, "nothing trained"
    assert not [n for n in moved if n.startswith("visual.")]  # tower and merger (the aligner) frozen
    assert [n for n in moved if n.startswith(LLM)]

    result = sft_main(flags(qwen2_vl, image_data, tmp_path / "b", "--max_steps", "2", "--train_type", "full",
                            "--freeze_vit", "false", "--freeze_llm", "true"))
    moved = {name for name, value in weights(result.last_checkpoint).items() if not torch.equal(before[name], value)}
    assert [n for n in moved if n.startswith(VISION)]
    assert not [n for n in moved if n.startswith((LLM, ALIGNER))]


def test_vit_lr_and_aligner_lr_set_those_parts_learning_rates(qwen2_vl, image_data, tmp_path):
    before = weights(qwen2_vl)

    def change(run_flags, prefix):
        after = weights(sft_main(flags(qwen2_vl, image_data, tmp_path / prefix, "--max_steps", "1", "--train_type",
                                       "full", "--freeze_vit", "false", "--freeze_aligner", "false", "--warmup_steps",
                                       "0", *run_flags)).last_checkpoint)
        return {part: max(float((after[n] - before[n]).abs().max()) for n in before if n.startswith(part))
                for part in (VISION, ALIGNER, LLM)}

    # AdamW's first step moves every weight by about lr: the parts' learning rates show in the weights
    delta = change(["--vit_lr", "1e-6", "--aligner_lr", "1e-2", "--lr_scheduler_type", "constant"], "lr")
    assert delta[VISION] < 5e-6
    assert 5e-3 < delta[ALIGNER] < 5e-2
    assert 2e-4 < delta[LLM] < 5e-3  # --learning_rate 1e-3
    with pytest.raises(ConfigError, match=r"--vit_lr .* the vision is frozen"):
        sft_main(flags(qwen2_vl, image_data, tmp_path / "bad", "--max_steps", "1", "--vit_lr", "1e-4"))


def test_unfrozen_vision_gets_lora_adapters(qwen2_vl, image_data, tmp_path):
    result = sft_main(flags(qwen2_vl, image_data, tmp_path, "--max_steps", "1", "--freeze_vit", "false"))
    adapted = adapted_modules(result.last_checkpoint)
    assert [m for m in adapted if ".visual.blocks." in m]
    assert [m for m in adapted if ".language_model." in m]
    assert not [m for m in adapted if ".merger." in m]  # the aligner stays frozen


def test_padding_free_and_packing_give_the_padded_loss(qwen2_vl, image_data, tmp_path):
    common = ("--max_steps", "1", "--lora_rank", "4", "--per_device_train_batch_size", "13")
    padded = losses(sft_main(flags(qwen2_vl, image_data, tmp_path / "a", *common, "--padding_free", "false")).run_dir)
    flat = losses(sft_main(flags(qwen2_vl, image_data, tmp_path / "b", *common, "--padding_free", "true")).run_dir)
    assert flat[1] == pytest.approx(padded[1], rel=1e-5)
    packed = sft_main(flags(qwen2_vl, image_data, tmp_path / "c", *common, "--packing", "true", "--max_length",
                            "2048"))
    assert packed.train_rows == 1  # every row in one bin: the whole set in one step, as the padded batch had it
    assert losses(packed.run_dir)[1] == pytest.approx(padded[1], rel=1e-5)


def test_merged_vl_lora_gives_the_peft_logits_on_an_image_prompt(qwen2_vl, image_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    result = sft_main(flags(qwen2_vl, image_data, tmp_path, "--max_steps", "2", "--lora_rank", "4",
                            "--freeze_vit", "false"))
    merged = export_main(["--adapters", str(result.last_checkpoint), "--merge_lora", "true"])
    processor = AutoProcessor.from_pretrained(merged)
    messages = [{"role": "user", "content": [{"type": "image", "image": sample_image((30, 180, 40))},
                                             {"type": "text", "text": "What colour is this image?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    plain = AutoModelForImageTextToText.from_pretrained(merged).eval()
    peft_model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(qwen2_vl),
                                           result.last_checkpoint).eval()
    with torch.no_grad():
        assert torch.allclose(plain(**inputs).logits, peft_model(**inputs).logits, atol=1e-5)


@pytest.mark.slow  # two Qwen2-VL runs (~40 s on a quiet machine)
def test_vit_gradient_checkpointing_checkpoints_the_vision_blocks_alone(qwen2_vl, image_data, tmp_path, monkeypatch):
    import functools

    import transformers.modeling_utils as mu
    from transformers import AutoConfig

    calls: list[str] = []
    original = mu.checkpoint

    @functools.wraps(original)
    def recording(function, *args, **kwargs):
        owner = function.args[0] if isinstance(function, functools.partial) and function.args else None
        calls.append(type(owner).__name__)  # transformers checkpoints partial(forward, block, ...)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(mu, "checkpoint", recording)
    config = AutoConfig.from_pretrained(qwen2_vl)
    vision_blocks = config.vision_config.depth
    base = flags(qwen2_vl, image_data, tmp_path / "vit", "--max_steps", "1", "--freeze_vit", "false",
                 "--per_device_train_batch_size", "1")
    sft_main([*base, "--gradient_checkpointing", "false", "--vit_gradient_checkpointing", "true"])
    assert calls
    assert len(calls) % vision_blocks == 0  # every vision block of each forward, nothing of the LLM
    assert {c for c in calls} == {"Qwen2VLVisionBlock"}
    calls.clear()
    sft_main([*flags(qwen2_vl, image_data, tmp_path / "llm", "--max_steps", "1", "--freeze_vit", "false",
                     "--per_device_train_batch_size", "1"), "--gradient_checkpointing", "true",
              "--vit_gradient_checkpointing", "false"])
    assert calls
    assert {c for c in calls} == {"Qwen2VLDecoderLayer"}
