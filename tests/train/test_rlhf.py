"""swift rlhf: every method trains a LoRA checkpoint on a tiny random llama; DPO starts at log(2); resume is exact;
GRPO rewards are right on hand-written completions and its rollouts run on swift-infer's PyTorch engine."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from swift.core import rewards
from swift.core.errors import ConfigError
from swift.train import rlhf_main
from swift.train.rlhf.layouts import preference_ids, split_answer

PAIRS = [("Write a haiku about rain.", "Soft rain on the roof, the street breathes again.", "rain"),
         ("Say hello politely.", "Hello, it is a pleasure to meet you.", "hey"),
         ("Give one tip for sleep.", "Keep a fixed bedtime every night.", "dunno"),
         ("Name a primary colour.", "Red is a primary colour.", "car"),
         ("What is 2 + 2?", "2 + 2 = 4.", "5"),
         ("Describe the sea in three words.", "Vast, blue, restless.", "water"),
         ("Suggest a name for a cat.", "Whiskers would suit a curious cat.", "dog"),
         ("How do you greet someone in French?", "You can say bonjour.", "hi")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("rlhf-data"))


def write_data(root: Path) -> Path:
    """preference.jsonl, kto.jsonl and math.jsonl (GRPO prompts with a `solution`) under `root`."""
    preference, kto, math_rows = [], [], []
    for question, good, bad in PAIRS:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": good}]
        preference.append({"messages": messages, "rejected_response": bad})
        kto.append({"messages": messages, "label": True})
        kto.append({"messages": [messages[0], {"role": "assistant", "content": bad}], "label": False})
    for a, b in [(3, 4), (12, 30), (7, 8), (5, 5)]:
        math_rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}? Answer in \\boxed{{}}."}],
                          "solution": f"\\boxed{{{a + b}}}"})
    for name, rows in (("preference", preference), ("kto", kto), ("math", math_rows)):
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def flags(model: Path, data: Path, out: Path, kind: str, *extra: str) -> list[str]:
    return ["--rlhf_type", kind, "--model", str(model), "--dataset", str(data), "--output_dir", str(out),
            "--max_length", "128", "--logging_steps", "1", "--report_to", "none", "--bf16", "false",
            "--gradient_checkpointing", "false", "--lora_rank", "4", *extra]


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]


METHODS = {
    "dpo": ("preference", ["--per_device_train_batch_size", "2"]),
    "cpo": ("preference", ["--per_device_train_batch_size", "2"]),
    "simpo": ("preference", ["--per_device_train_batch_size", "2"]),
    "orpo": ("preference", ["--per_device_train_batch_size", "2"]),
    "rm": ("preference", ["--per_device_train_batch_size", "2"]),
    "kto": ("kto", ["--per_device_train_batch_size", "2"]),
    "gkd": ("preference", ["--per_device_train_batch_size", "2", "--lmbda", "0.5", "--max_completion_length", "8"]),
    "grpo": ("math", ["--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length",
                      "8", "--reward_funcs", "accuracy", "format"]),
}


@pytest.mark.parametrize("kind", list(METHODS))
def test_every_method_trains_a_peft_checkpoint(kind, tiny_llama_dir, data_dir, tmp_path):
    from safetensors.torch import load_file

    data, extra = METHODS[kind]
    if kind == "gkd":
        extra = [*extra, "--teacher_model", str(tiny_llama_dir)]
    result = rlhf_main(flags(tiny_llama_dir, data_dir / f"{data}.jsonl", tmp_path, kind, "--max_steps", "2",
                             "--save_steps", "2", *extra))
    checkpoint = result.run_dir / "checkpoint-2"
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir)
    assert config["task_type"] == ("SEQ_CLS" if kind == "rm" else "CAUSAL_LM")
    weights = load_file(checkpoint / "adapter_model.safetensors")
    assert any("lora_A" in name for name in weights)
    if kind == "rm":  # the score head is trained and saved with the adapter
        assert any("score" in name for name in weights)
    args = json.loads((checkpoint / "args.json").read_text())
    assert args["rlhf_type"] == kind
    assert args["command"] == f"rlhf {kind}"
    steps = [row for row in logged(result.run_dir) if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(math.isfinite(row["loss"]) and row["tokens_seen"] > 0 for row in steps)
    if kind == "grpo":
        assert {"reward", "rewards/accuracy/mean", "rewards/format/mean", "kl", "completions/mean_length"} <= \
            steps[0].keys()
    assert (result.run_dir / "images" / "train_loss.png").is_file()


def test_dpo_first_step_is_log2_and_resume_continues_exactly(tiny_llama_dir, data_dir, tmp_path):
    data = data_dir / "preference.jsonl"
    common = ["--per_device_train_batch_size", "2", "--max_steps", "4", "--save_steps", "2",
              "--learning_rate", "5e-3", "--warmup_ratio", "0"]
    full = rlhf_main(flags(tiny_llama_dir, data, tmp_path / "full", "dpo", *common))
    losses = {row["step"]: row["loss"] for row in logged(full.run_dir) if "loss" in row}
    assert losses[1] == pytest.approx(math.log(2), abs=1e-4)  # a fresh adapter is the reference: no margin yet
    assert losses[4] < losses[1]  # and training moves it
    resumed = rlhf_main(flags(tiny_llama_dir, data, tmp_path / "resumed", "dpo", *common,
                              "--resume_from_checkpoint", str(full.run_dir / "checkpoint-2")))
    again = {row["step"]: row["loss"] for row in logged(resumed.run_dir) if "loss" in row}
    assert sorted(again) == [3, 4]
    assert again[3] == pytest.approx(losses[3], rel=1e-5)
    assert again[4] == pytest.approx(losses[4], rel=1e-5)


def test_loss_weights_weigh_each_dpo_loss_type(tiny_llama_dir, data_dir, tmp_path):
    result = rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "dpo",
                             "--per_device_train_batch_size", "2", "--max_steps", "1", "--loss_type", "sigmoid", "ipo",
                             "--loss_weights", "1", "0.01"))
    step = next(row for row in logged(result.run_dir) if "loss" in row)
    # no margin yet (the fresh adapter is the reference): sigmoid gives log 2, IPO (0 - 1 / (2 beta))^2 = 25 at beta 0.1
    assert step["loss"] == pytest.approx(math.log(2) + 0.01 * 25, rel=1e-4)
    with pytest.raises(ConfigError, match=r"--loss_weights: 1 weights for 2 --loss_type \(sigmoid ipo\)"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "dpo", "--loss_type", "sigmoid",
                        "ipo", "--loss_weights", "1"))


def test_an_explicit_reference_model_is_used(tiny_llama_dir, data_dir, tmp_path):
    result = rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "dpo", "--max_steps", "1",
                             "--per_device_train_batch_size", "2", "--ref_model", str(tiny_llama_dir)))
    first = next(row for row in logged(result.run_dir) if "loss" in row)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the same weights as the untouched policy
    with pytest.raises(ConfigError, match="--ref_model"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "orpo", "--ref_model",
                        str(tiny_llama_dir)))


def test_grpo_rollouts_run_on_the_pytorch_engine(tiny_llama_dir, data_dir, tmp_path, monkeypatch):
    from swift.infer.engine.pt import scheduler

    seen = []
    original = scheduler.PtGenerator.generate

    def spy(self, request):
        seen.append(request.prompt_ids)
        return original(self, request)

    monkeypatch.setattr(scheduler.PtGenerator, "generate", spy)
    rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--max_steps", "1",
                    "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "4",
                    "--reward_funcs", "accuracy"))
    assert len(seen) == 4
    assert len({tuple(ids) for ids in seen}) == 1


def test_stop_words_end_each_grpo_completion_at_the_token_that_completes_one(tiny_llama_dir, data_dir, tmp_path,
                                                                             smollm2_tokenizer):
    """--stop_words e on the PyTorch engine: no completion holds an `e` before its last token, and the random model's
    completions (which would run to --max_completion_length) stop early."""
    seen = tmp_path / "completions.jsonl"
    plugin = tmp_path / "record.py"
    plugin.write_text("import json\nfrom swift.train.rlhf import register_reward\n\n"
                      "@register_reward('record')\n"
                      "def record(completions, completion_ids, **kwargs):\n"
                      f"    with open({str(seen)!r}, 'a') as f:\n"
                      "        f.write(json.dumps(completion_ids) + '\\n')\n"
                      "    return [0.0 for _ in completions]\n")
    rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path / "out", "grpo", "--max_steps", "1",
                    "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "16",
                    "--temperature", "1.0", "--reward_funcs", "record", "--external_plugins", str(plugin),
                    "--stop_words", "e"))
    completions = [ids for line in seen.read_text().splitlines() for ids in json.loads(line)]
    assert len(completions) == 4
    for ids in completions:
        assert "e" not in smollm2_tokenizer.decode(ids[:-1]), ids
    stopped = [ids for ids in completions if len(ids) < 16 and "e" in smollm2_tokenizer.decode(ids[-1:])]
    assert stopped, [smollm2_tokenizer.decode(ids) for ids in completions]


def test_reward_plugin_from_a_file_is_used(tiny_llama_dir, data_dir, tmp_path):
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text("from swift.train.rlhf import register_reward\n\n"
                      "@register_reward('length_bonus')\n"
                      "def length_bonus(completions, solution, **kwargs):\n"
                      "    assert all(s.startswith('\\\\boxed') for s in solution)\n"
                      "    return [0.25 for _ in completions]\n")
    result = rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path / "out", "grpo", "--max_steps", "1",
                             "--per_device_train_batch_size", "4", "--num_generations", "4",
                             "--max_completion_length", "4", "--reward_funcs", "length_bonus",
                             "--external_plugins", str(plugin)))
    step = next(row for row in logged(result.run_dir) if "loss" in row)
    assert step["rewards/length_bonus/mean"] == pytest.approx(0.25)


def test_method_flags_are_checked_before_loading(tiny_llama_dir, data_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--num_generations", "3",
                        "--per_device_train_batch_size", "4", "--loss_type", "nonsense"))
    text = str(e.value)
    assert "--reward_funcs" in text
    assert "--num_generations (3)" in text
    assert "--loss_type nonsense" in text
    with pytest.raises(ConfigError, match="PPO"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "ppo"))
    with pytest.raises(ConfigError, match="--teacher_model"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path, "gkd"))
    with pytest.raises(ConfigError, match="--group_by_length with --rlhf_type kto"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "kto.jsonl", tmp_path, "kto", "--group_by_length", "true"))
    with pytest.raises(ConfigError, match=r"--reward_funcs must be one of .*did you mean .accuracy."):
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--reward_funcs", "accuracyy",
                        "--per_device_train_batch_size", "8"))
    with pytest.raises(ConfigError, match=r"--external_plugins .*missing\.py"):
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--reward_funcs", "accuracy",
                        "--external_plugins", str(tmp_path / "missing.py"), "--per_device_train_batch_size", "8"))


@pytest.mark.parametrize(("extra", "says"), [
    (["--temperature", "0"], "--temperature 0: GRPO"),
    (["--use_vllm", "true"], "vLLM is not installed in this environment"),
    (["--vllm_mode", "server"], "--vllm_mode given without --use_vllm true"),
    (["--vllm_server_port", "9000"], "--vllm_server_port given without --use_vllm true"),
    (["--use_vllm", "true", "--vllm_mode", "server", "--vllm_enforce_eager", "true"],
     "--vllm_enforce_eager: colocate-mode flags with --vllm_mode server"),
    (["--use_vllm", "true", "--vllm_server_host", "h"], "server-mode flags with --vllm_mode colocate"),
    (["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_port", "1", "--vllm_server_timeout", "1"],
     "no swift rollout server answered at http://127.0.0.1:1 within 1 s"),
])
def test_grpo_vllm_flags_are_checked_before_weights_load(tiny_llama_dir, data_dir, tmp_path, extra, says):
    from swift.core import SwiftError

    with pytest.raises(SwiftError, match=re.escape(says)):
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--reward_funcs", "accuracy",
                        "--per_device_train_batch_size", "8", *extra))


def test_dpo_on_plain_conversations_says_what_rows_it_needs(tiny_llama_dir, tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}))
    with pytest.raises(ConfigError, match="rejected"):
        rlhf_main(flags(tiny_llama_dir, plain, tmp_path / "out", "dpo", "--max_steps", "1"))


def test_preference_rows_split_at_the_last_answer(smollm2_tokenizer):
    from swift.core import get_template

    template = get_template(None, smollm2_tokenizer)
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Capital of France?"},
                        {"role": "assistant", "content": "Paris."}], "rejected_response": "London."}
    ids = preference_ids(template.encode(row))
    decode = smollm2_tokenizer.decode
    assert decode(ids["prompt_ids"]).endswith("Capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert decode(ids["chosen_ids"]) == "Paris.<|im_end|>"
    assert decode(ids["rejected_ids"]) == "London.<|im_end|>"
    chosen = template.encode({"messages": row["messages"]})["input_ids"]
    assert chosen[:len(ids["prompt_ids"]) + len(ids["chosen_ids"])] == ids["prompt_ids"] + ids["chosen_ids"]
    assert split_answer([1, 2, 3, 4], [-100, -100, -100, -100]) == ([1, 2, 3, 4], [])


def test_builtin_rewards_on_handwritten_completions():
    solution = ["\\boxed{42}", "\\boxed{\\frac{1}{2}}", "7", "\\boxed{10}", None]
    completions = ["so it is \\boxed{42}.", "half: \\boxed{0.5}", "I think \\boxed{ 7 }", "\\boxed{1{0}", "42"]
    assert rewards.accuracy(completions, solution=solution) == [1.0, 1.0, 1.0, 0.0, None]
    chat = [[{"role": "assistant", "content": "\\boxed{42}"}]]  # trl's shape for chat prompts
    assert rewards.accuracy(chat, solution=["42"]) == [1.0]
    assert rewards.last_boxed("a \\boxed{x^{2}} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"

    assert rewards.format_reward(["<think>hmm</think><answer>4</answer>", "<think>x</think>\n<answer>4</answer>\n",
                                  "<answer>4</answer>", "<think>x</think><answer>4</answer> extra"]) == \
        [1.0, 1.0, 0.0, 0.0]

    right, wrong = "\\boxed{4}", "\\boxed{5}"
    short, long = [[1] * 10], [[1] * 100]
    r = {(c, n): rewards.cosine([c], solution=["4"], completion_ids=ids, max_length=100)[0]
         for c in (right, wrong) for n, ids in (("short", short), ("long", long))}
    assert r[right, "short"] > r[right, "long"] == pytest.approx(0.5)  # correct: shorter is better
    assert r[wrong, "short"] < r[wrong, "long"] == pytest.approx(0.0)  # wrong: punished less when it kept thinking
    assert r[wrong, "short"] == pytest.approx(0.5 * -0.5 * (1 + math.cos(math.pi * 0.1)))

    assert rewards.repetition(["a b c d e f", "go go go go go go"]) == [0.0, pytest.approx(-0.75)]
    lengths = [[0] * n for n in (50, 75, 90, 100, 130)]
    assert rewards.soft_overlong([""] * 5, completion_ids=lengths, max_length=100, cache_length=20) == \
        [0.0, 0.0, pytest.approx(-0.5), pytest.approx(-1.0), -1.0]


def test_gkd_sft_alpha_adds_the_cross_entropy_of_dataset_batches_only(tiny_llama_dir, data_dir, tmp_path):
    from swift.train import sft_main

    def first_loss(out, *extra, command=rlhf_main, kind="gkd"):
        base = flags(tiny_llama_dir, data_dir / "preference.jsonl", tmp_path / out, kind, "--max_steps", "1",
                     "--per_device_train_batch_size", "2", "--seed", "5", *extra)
        if command is sft_main:
            base = base[2:]  # (no --rlhf_type)
        result = command(base)
        return next(row["loss"] for row in logged(result.run_dir) if "loss" in row)

    teacher = ("--teacher_model", str(tiny_llama_dir), "--max_completion_length", "8")
    pure = first_loss("a", *teacher, "--lmbda", "0")
    mixed = first_loss("b", *teacher, "--lmbda", "0", "--sft_alpha", "0.5")
    # the student is the teacher: the distillation loss is 0 and what is left is 0.5 x the SFT loss of the answers
    sft = first_loss("c", command=sft_main)
    assert pure == pytest.approx(0.0, abs=1e-6)
    assert mixed == pytest.approx(0.5 * sft, rel=1e-3)
    # the student's own generations (lmbda 1) get no SFT term
    assert first_loss("d", *teacher, "--lmbda", "1", "--sft_alpha", "0.5") == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="--sft_alpha: the SFT term of GKD"):
        first_loss("e", "--sft_alpha", "0.5", kind="dpo")
