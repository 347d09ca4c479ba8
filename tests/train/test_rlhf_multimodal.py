"""swift rlhf on image rows with tiny random vision models and their real processors: DPO and KTO learn answers that
only the image tells apart (a text-only model cannot: see each test), the reference model sees the same pixels (the
first DPO step is log 2), the batch carries each prompt's image and the answer's log-prob follows it; LLaVA trains
DPO too; GRPO rolls out with the image and scores the completions with it; the text-only methods refuse image rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor

from swift.core.errors import ConfigError
from swift.train import rlhf_main
from tests.fixtures.multimodal import sample_image, save_tiny

COLOURS = {"red": (200, 30, 30), "blue": (30, 40, 200)}
QUESTION = "<image>What colour is this image?"


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory) -> Path:
    return save_tiny("qwen2_vl", tmp_path_factory.mktemp("qwen2_vl"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Rows whose right answer is the image's colour, alternating red / blue (batches of 2 hold one of each)."""
    folder = tmp_path_factory.mktemp("vl-rlhf-data")
    for name, rgb in COLOURS.items():
        sample_image(rgb).save(folder / f"{name}.png")
    preference, kto, prompts = [], [], []
    for i in range(8):
        colour, other = ("red", "blue") if i % 2 == 0 else ("blue", "red")
        user = {"role": "user", "content": QUESTION}
        preference.append({"messages": [user, {"role": "assistant", "content": colour}], "rejected_response": other,
                           "images": [f"{colour}.png"]})
        prompts.append({"messages": [user], "images": [f"{colour}.png"], "solution": colour})
    for answer in ("red", "blue", "red", "blue"):  # each batch: one answer, desirable for one image, not the other
        for colour in (answer, "blue" if answer == "red" else "red"):
            kto.append({"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": answer}],
                        "label": colour == answer, "images": [f"{colour}.png"]})
    for name, rows in (("preference", preference), ("kto", kto), ("prompts", prompts)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def flags(model: Path, data: Path, out: Path, kind: str, *extra: str) -> list[str]:
    return ["--rlhf_type", kind, "--model", str(model), "--dataset", str(data), "--output_dir", str(out),
            "--max_length", "128", "--logging_steps", "1", "--report_to", "none", "--bf16", "false",
            "--gradient_checkpointing", "false", "--lora_rank", "8", "--dataset_shuffle", "false",
            "--per_device_train_batch_size", "2", "--warmup_ratio", "0", "--lr_scheduler_type", "constant", *extra]


def steps(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if "loss" in row}


def test_dpo_learns_what_the_image_shows_and_the_reference_sees_it_too(qwen2_vl, data, tmp_path):
    """Each batch pairs a red image (chosen "red", rejected "blue") with a blue one (the reverse), under the same
    text: without the pixels the two margins are opposite, so the mean loss could not go below log 2."""
    result = rlhf_main(flags(qwen2_vl, data / "preference.jsonl", tmp_path, "dpo", "--max_steps", "3",
                             "--learning_rate", "2e-3", "--beta", "1", "--save_steps", "3"))
    logged = steps(result.run_dir)
    assert logged[1]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the reference forward had the same pixels
    assert logged[3]["loss"] < logged[2]["loss"] < math.log(2) - 0.05
    assert logged[3]["rewards/margins"] > logged[2]["rewards/margins"] > 0.1
    assert type(AutoProcessor.from_pretrained(result.last_checkpoint)).__name__ == "Qwen2VLProcessor"  # saved too


def test_the_dpo_batch_carries_each_prompts_image(qwen2_vl, data):
    """The collated batch (chosen block, then rejected block) holds each row's image for both of its sequences,
    `mm_token_type_ids` marks exactly the image tokens, and the answer's log-prob changes with the pixels."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from swift.core import get_model_tokenizer, get_template
    from swift.train.rlhf import layouts

    model, tokenizer = get_model_tokenizer(str(qwen2_vl))
    template = get_template(None, tokenizer)
    lines = (data / "preference.jsonl").read_text().splitlines()[:2]  # red, then blue
    rows = [{**row, "images": [str(data / image) for image in row["images"]]} for row in map(json.loads, lines)]
    encoded = [layouts.preference_row(template, row) for row in rows]
    collate = layouts.MediaCollator(DataCollatorForPreference(pad_token_id=template.pad_id), template, copies=2)
    batch = collate(encoded)
    assert batch["input_ids"].shape[0] == 4
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 4
    is_image = batch["input_ids"] == model.config.image_token_id
    assert torch.equal(batch["mm_token_type_ids"] == 1, is_image)
    assert int(is_image.sum()) == 16
    pixels = batch["pixel_values"].view(4, 16, -1)
    assert torch.equal(pixels[0], pixels[2])
    assert torch.equal(pixels[1], pixels[3])
    assert not torch.equal(pixels[0], pixels[1])

    def answer_logps(batch: dict) -> torch.Tensor:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "completion_mask"}).logits[:, :-1].float()
        token_logps = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)

    swapped = {**batch, "pixel_values": pixels[[1, 0, 3, 2]].reshape(64, -1)}
    assert (answer_logps(batch) - answer_logps(swapped)).abs().min() > 1e-4


def test_dpo_trains_llava_on_image_rows(data, tmp_path):
    model = save_tiny("llava", tmp_path / "llava")
    result = rlhf_main(flags(model, data / "preference.jsonl", tmp_path / "out", "dpo", "--max_steps", "3",
                             "--learning_rate", "2e-3", "--beta", "1", "--save_steps", "3"))
    logged = steps(result.run_dir)
    assert logged[1]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert logged[3]["loss"] < math.log(2) - 0.1  # (as for Qwen2-VL: only the image tells the pairs apart)
    assert type(AutoProcessor.from_pretrained(result.last_checkpoint)).__name__ == "LlavaProcessor"


def test_kto_learns_what_the_image_shows(qwen2_vl, data, tmp_path):
    """Each batch holds one answer, desirable for one image and undesirable for the other: without the pixels the
    two KTO terms add up to 1 whatever the policy does, so the mean loss could not go below 0.5."""
    result = rlhf_main(flags(qwen2_vl, data / "kto.jsonl", tmp_path, "kto", "--max_steps", "4",
                             "--learning_rate", "3e-3", "--beta", "1"))
    logged = steps(result.run_dir)
    assert logged[1]["loss"] == pytest.approx(0.5, abs=1e-4)  # policy = reference, both with the pixels
    assert all(logged[step]["loss"] < 0.49 and logged[step]["rewards/margins"] > 0 for step in (3, 4))


def test_grpo_rolls_out_and_scores_with_the_image(qwen2_vl, data, tmp_path, monkeypatch):
    """The rollout prefills each prompt with its image (4 image tokens in its ids), the policy's log-prob forwards
    get the images of the whole batch over prompt + completion, and a rule reward scores the completions."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    from swift.core.rewards import completion_text
    from swift.infer.engine import PtGenerator
    from swift.train.rlhf import register_reward

    requests, forwards, scored = [], [], []
    generate, forward = PtGenerator.generate, modeling_qwen2_vl.Qwen2VLModel.forward

    def spy_generate(self, request):
        requests.append(request)
        return generate(self, request)

    def spy_forward(self, input_ids=None, pixel_values=None, mm_token_type_ids=None, **kwargs):
        if pixel_values is not None and input_ids.shape[0] > 1:
            forwards.append((tuple(input_ids.shape), pixel_values.shape[0], int(mm_token_type_ids.sum())))
        return forward(self, input_ids=input_ids, pixel_values=pixel_values, mm_token_type_ids=mm_token_type_ids,
                       **kwargs)

    @register_reward("names_the_colour", replace=True)
    def names_the_colour(completions, solution, prompt_images, **kwargs):
        """1 for naming the image's colour, plus a little for ASCII (so that random completions differ)."""
        texts = [completion_text(c) for c in completions]
        scored.append((texts, list(prompt_images)))
        return [float(s in t.lower()) + sum(ch.isascii() for ch in t) / (10 * max(len(t), 1))
                for t, s in zip(texts, solution, strict=True)]

    monkeypatch.setattr(PtGenerator, "generate", spy_generate)
    monkeypatch.setattr(modeling_qwen2_vl.Qwen2VLModel, "forward", spy_forward)
    result = rlhf_main(flags(qwen2_vl, data / "prompts.jsonl", tmp_path, "grpo", "--max_steps", "2",
                             "--per_device_train_batch_size", "4", "--num_generations", "4",
                             "--max_completion_length", "6", "--reward_funcs", "names_the_colour"))
    logged = steps(result.run_dir)
    assert sorted(logged) == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in logged.values())
    assert all(row["reward_std"] > 0 for row in logged.values())  # the completions differ, so they train
    assert any(row["grad_norm"] > 0 for row in logged.values())
    image_pad = 151655
    assert len(requests) == 8
    assert all(r.media is not None and r.prompt_ids.count(image_pad) == 4 for r in requests)
    assert all(r.media["pixel_values"].shape == (16, 1176) for r in requests)
    # a batch of 4 rows with their 4 images, over prompt + completion (wider than the prompt's ids)
    assert any(shape[0] == 4 and shape[1] > len(requests[0].prompt_ids) and rows == 64 and marked == 16
               for shape, rows, marked in forwards)
    assert len(scored) == 2
    assert all(len(c) == 4 and all(p[0].endswith(".png") for p in images) for c, images in scored)


def test_left_padded_prompts_with_images_score_as_they_would_alone(qwen2_vl, data):
    """GRPO's log-prob forward: prompts of different lengths (image, image later in the text, text only) left-padded
    in one batch, with `layouts.media_inputs`, give each completion the log-probs it has alone (M-RoPE included)."""
    from swift.core import get_model_tokenizer, get_template
    from swift.train.rlhf import layouts

    model, tokenizer = get_model_tokenizer(str(qwen2_vl))
    template = get_template(None, tokenizer)
    rows = [{"messages": [{"role": "user", "content": QUESTION}], "images": [str(data / "red.png")]},
            {"messages": [{"role": "user", "content": "Look, and with care, at <image> this."}],
             "images": [str(data / "blue.png")]},
            {"messages": [{"role": "user", "content": "No image here."}]}]
    prompts = [{"input_ids": e["input_ids"]} | {k: v for k, v in e.items() if k not in ("input_ids", "labels")
                                               and v is not None} for e in map(template.encode, rows)]
    completion = tokenizer.encode("It is red.", add_special_tokens=False)
    width = max(len(p["input_ids"]) for p in prompts)

    def completion_logps(prompts: list[dict], width: int) -> torch.Tensor:
        ids = torch.tensor([[0] * (width - len(p["input_ids"])) + p["input_ids"] + completion for p in prompts])
        mask = torch.tensor([[0] * (width - len(p["input_ids"])) + [1] * (len(p["input_ids"]) + len(completion))
                             for p in prompts])
        media = layouts.media_inputs(template, prompts, ids.shape[1], prompt_width=width)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, **media).logits[:, -len(completion) - 1:-1].float()
        return logits.log_softmax(-1).gather(-1, ids[:, -len(completion):, None])[..., 0]

    batched = completion_logps(prompts, width)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(batched[row], completion_logps([prompt], len(prompt["input_ids"]))[0])


def test_text_only_methods_and_vllm_rollouts_refuse_image_rows(qwen2_vl, data, tmp_path):
    with pytest.raises(ConfigError, match=r"--rlhf_type cpo.*text only.*dpo, kto, grpo"):
        rlhf_main(flags(qwen2_vl, data / "preference.jsonl", tmp_path / "a", "cpo", "--max_steps", "1"))
    with pytest.raises(ConfigError, match=r"--use_vllm true.*images"):
        rlhf_main(flags(qwen2_vl, data / "prompts.jsonl", tmp_path / "b", "grpo", "--max_steps", "1",
                        "--per_device_train_batch_size", "4", "--num_generations", "4", "--reward_funcs",
                        "accuracy", "--use_vllm", "true", "--vllm_mode", "server"))
