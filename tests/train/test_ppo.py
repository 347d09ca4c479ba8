"""swift rlhf --rlhf_type ppo: the PPO arithmetic against numbers worked out by hand, the trainer's wiring of every
PPO flag, and runs on a tiny random llama (checkpoint that swift infer loads, logging.jsonl, flag effects); the
packaged SmolLM2 learns a rule reward in the slow test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from swift.core.errors import ConfigError
from swift.train import rlhf_main
from swift.train.rlhf import ppo
from swift.train.rlhf.ppo import gae, kl_shaped_rewards, masked_whiten, policy_loss, rollout_tensors, value_loss

PROMPTS = [(3, 4), (12, 30), (7, 8), (5, 5), (1, 2), (9, 9), (4, 4), (6, 1)]


PLUGIN = """from swift.core import register_reward


@register_reward("ppo_length")
def ppo_length(completions, completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


@register_reward("ppo_short")
def ppo_short(completions, **kwargs):  # 1 for a one-word answer, down to 0 at 11 words and more
    return [max(0.0, 1.0 - (len(c[-1]["content"].split()) - 1) / 10) for c in completions]
"""


@pytest.fixture(scope="session")
def plugin(tmp_path_factory) -> Path:
    """Reward functions of the tests, one file (a plugin file runs once per process, whichever test loads it)."""
    path = tmp_path_factory.mktemp("ppo-plugin") / "ppo_rewards.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture(scope="module")
def math_rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ppo-data") / "math.jsonl"
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
                                          "solution": f"\\boxed{{{a + b}}}"}) for a, b in PROMPTS))
    return path


def flags(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--rlhf_type", "ppo", "--model", str(model), "--dataset", str(data), "--output_dir", str(out),
            "--max_length", "64", "--logging_steps", "1", "--report_to", "none", "--bf16", "false",
            "--gradient_checkpointing", "false", "--lora_rank", "4", "--per_device_train_batch_size", "4",
            "--max_completion_length", "6", "--reward_funcs", "format", *extra]


def near(tensor: torch.Tensor, expected: list, tol: float = 1e-6) -> None:
    torch.testing.assert_close(tensor.float(), torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=1e-5)


def logged(run_dir: Path) -> list[dict]:
    return [row for row in map(json.loads, (run_dir / "logging.jsonl").read_text().splitlines()) if "loss" in row]


# ----- the arithmetic, against hand-worked numbers -----

def test_gae_on_a_hand_worked_three_step_episode():
    """gamma 0.9, lambda 0.8 (gamma lambda = 0.72). Row 0 (3 tokens): r = 0, 0, 1; V = 0.5, 0.4, 0.6; V after the
    end = 0.
        delta_2 = 1 + 0.9 x 0 - 0.6 = 0.4               A_2 = 0.4
        delta_1 = 0 + 0.9 x 0.6 - 0.4 = 0.14            A_1 = 0.14 + 0.72 x 0.4 = 0.428
        delta_0 = 0 + 0.9 x 0.4 - 0.5 = -0.14           A_0 = -0.14 + 0.72 x 0.428 = 0.16816
        returns = A + V = 0.66816, 0.828, 1.0
    Row 1 (2 tokens): r = 0.2, 1.0; V = 0.3, 0.1:
        delta_1 = 1.0 - 0.1 = 0.9                       A_1 = 0.9
        delta_0 = 0.2 + 0.9 x 0.1 - 0.3 = -0.01         A_0 = -0.01 + 0.72 x 0.9 = 0.638
        returns = 0.938, 1.0
    Whatever sits in the padding (5, 7, ...) must not leak in."""
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.2, 1.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 7.0], [0.3, 0.1, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    near(advantages, [[0.16816, 0.428, 0.4, 0.0], [0.638, 0.9, 0.0, 0.0]])
    near(returns, [[0.66816, 0.828, 1.0, 0.0], [0.938, 1.0, 0.0, 0.0]])
    # gamma = lambda = 1: the advantage is the return to go minus the value (Monte Carlo)
    advantages, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert advantages[0, :3].tolist() == pytest.approx([1 - 0.5, 1 - 0.4, 1 - 0.6])


def test_kl_shaped_reward_penalises_each_token_and_adds_the_score_on_the_last():
    """kl_coef 0.1. Row 0: logp - logp_ref = 0.2, -0.5, 0 -> -0.02, +0.05, 0 + score 2.0 on token 3.
    Row 1 (2 tokens): 0.1, 0 -> -0.01, 0 + score -1.0 on token 2."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 9.0], [-0.3, -0.1, 9.0, 9.0]])
    ref = torch.tensor([[-1.2, -1.5, -0.5, -3.0], [-0.4, -0.1, -3.0, -3.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    rewards, kl = kl_shaped_rewards(logprobs, ref, torch.tensor([2.0, -1.0]), mask, kl_coef=0.1)
    near(kl, [[0.2, -0.5, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]])
    near(rewards, [[-0.02, 0.05, 2.0, 0.0], [-0.01, -1.0, 0.0, 0.0]])
    rewards, _ = kl_shaped_rewards(logprobs, ref, torch.tensor([2.0, -1.0]), mask, kl_coef=0.0)
    near(rewards, [[0, 0, 2.0, 0], [0, -1.0, 0, 0]])


def test_clipped_policy_loss_inside_and_outside_the_clip_range():
    """cliprange 0.2, loss per token max(-A r, -A clip(r, 0.8, 1.2)):
        A  1, r 1.1 (inside)          -1.1   (not clipped)
        A  1, r 1.5 (above)           max(-1.5, -1.2) = -1.2   clipped
        A -1, r 0.5 (below)           max(0.5, 0.8) = 0.8      clipped
        A -1, r 1.5 (above)           max(1.5, 1.2) = 1.5      (the pessimistic side: not clipped)
        A  2, r 0.5 (below)           max(-1.0, -1.6) = -1.0   (not clipped)
    mean (-1.1 - 1.2 + 0.8 + 1.5 - 1.0) / 5 = -0.2; clipfrac 2/5; the padding token (r 9) is ignored. The gradient
    wrt log r of an unclipped token is -A r / 5, of a clipped one 0."""
    ratios = torch.tensor([[1.1, 1.5, 0.5, 1.5, 0.5, 9.0]])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0, 3.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 1, 0]])
    logprobs = ratios.log().requires_grad_(True)
    out = policy_loss(logprobs, torch.zeros_like(logprobs), advantages, mask, cliprange=0.2)
    assert out["loss"].item() == pytest.approx(-0.2)
    assert out["clipfrac"].item() == pytest.approx(0.4)
    assert out["ratio"].item() == pytest.approx((1.1 + 1.5 + 0.5 + 1.5 + 0.5) / 5)
    assert out["approxkl"].item() == pytest.approx(0.5 * sum(math.log(r) ** 2 for r in (1.1, 1.5, 0.5, 1.5, 0.5)) / 5)
    out["loss"].backward()
    assert logprobs.grad.tolist()[0] == pytest.approx([-1.1 / 5, 0.0, 0.0, 1.5 / 5, -1.0 / 5, 0.0])
    wide = policy_loss(ratios.log(), torch.zeros_like(ratios), advantages, mask, cliprange=10.0)
    assert wide["clipfrac"].item() == 0.0
    assert wide["loss"].item() == pytest.approx((-1.1 - 1.5 + 0.5 + 1.5 - 1.0) / 5)


def test_clipped_value_loss():
    """cliprange_value 0.2 around the rollout value 0.5 (so clipped predictions lie in [0.3, 0.7]):
        V 0.6, R 1.0 (inside)          (0.6 - 1)^2 = 0.16
        V 1.0 -> 0.7, R 1.0            max(0, 0.09) = 0.09    clipped
        V 0.0 -> 0.3, R 0.0            max(0, 0.09) = 0.09    clipped
        V 1.0 -> 0.7, R 0.0            max(1.0, 0.49) = 1.0   (not clipped)
    loss 0.5 x (0.16 + 0.09 + 0.09 + 1.0) / 4 = 0.1675; clipfrac 2/4."""
    values = torch.tensor([[0.6, 1.0, 0.0, 1.0, 4.0]])
    old = torch.full_like(values, 0.5)
    returns = torch.tensor([[1.0, 1.0, 0.0, 0.0, -4.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    out = value_loss(values, old, returns, mask, cliprange_value=0.2)
    assert out["loss"].item() == pytest.approx(0.1675)
    assert out["clipfrac"].item() == pytest.approx(0.5)
    assert value_loss(values, old, returns, mask, 10.0)["loss"].item() == pytest.approx(0.5 * (0.16 + 1.0) / 4)


def test_whitening_over_the_masked_tokens():
    """1, 2, 3, 4 (the 100 is padding): mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3."""
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 100.0]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 0]])
    std = math.sqrt(5 / 3)
    expected = [[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 1.5 / std, 0.0]]
    near(masked_whiten(x, mask), expected)
    kept = masked_whiten(x, mask, shift_mean=False)  # --whiten_rewards: scaled, mean kept
    near(kept, [[-1.5 / std + 2.5, -0.5 / std + 2.5, 0.0], [0.5 / std + 2.5, 1.5 / std + 2.5, 0.0]])


def test_rollout_rows_are_left_padded_prompts_and_right_padded_completions():
    batch = rollout_tensors([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 8, 0, 0], [0, 7, 9, 10, 11]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 2, 2], [0, 0, 1, 2, 3]]
    assert batch["completion_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    one = ppo._trim({k: v[:1] for k, v in batch.items()})  # row 0 alone: its two trailing pads go
    assert one["input_ids"].tolist() == [[5, 6, 8]]
    assert one["completion_mask"].tolist() == [[1]]
    other = ppo._trim({k: v[1:] for k, v in batch.items()})  # row 1 alone: its leading pad goes
    assert other["input_ids"].tolist() == [[7, 9, 10, 11]]
    assert other["position_ids"].tolist() == [[0, 1, 2, 3]]


def test_the_trainer_internals_ppo_overrides_still_look_the_same():
    """ppo.py overrides three non-public Trainer methods; pin the calls they rely on (transformers 5.24)."""
    import inspect

    from transformers import Trainer

    assert "self._load_from_checkpoint(resume_from_checkpoint)" in inspect.getsource(Trainer.train)
    assert list(inspect.signature(Trainer._load_from_checkpoint).parameters) == ["self", "resume_from_checkpoint",
                                                                                 "model"]
    assert "inputs = self._prepare_inputs(inputs)" in inspect.getsource(Trainer.training_step)
    assert "self.save_model(output_dir, _internal_call=True)" in inspect.getsource(Trainer._save_checkpoint)
    assert "loss_is_scaled_for_ga" in inspect.getsource(Trainer.training_step)


# ----- flags checked before anything loads -----

@pytest.mark.parametrize(("extra", "says"), [
    (["--reward_funcs"], "--rlhf_type ppo needs a reward"),
    (["--epsilon", "0.3"], "--epsilon: not a --rlhf_type ppo flag (GRPO's clip range; PPO's is --cliprange"),
    (["--num_generations", "4"], "--num_generations: not a --rlhf_type ppo flag"),
    (["--beta", "0.1"], "PPO's KL weight is --kl_coef"),
    (["--gamma", "1.5"], "--gamma 1.5: must be within [0, 1]"),
    (["--num_ppo_epochs", "0"], "--num_ppo_epochs 0: must be at least 1"),
    (["--temperature", "0"], "--temperature 0: PPO"),
    (["--response_length", "8", "--max_completion_length", "16"], "--response_length 8 and --max_completion_length"),
    (["--train_type", "ia3"], "--train_type ia3 with --rlhf_type ppo"),
    (["--packing", "true"], "--packing with --rlhf_type ppo"),
    (["--fsdp", "fsdp2"], "--fsdp with --rlhf_type ppo"),
    (["--num_sample_generations", "3"], "--num_sample_generations samples completions of validation prompts"),
    (["--reward_weights", "1", "2"], "--reward_weights: 2 weights for 1 reward"),
    (["--ref_model", "x", "--kl_coef", "0"], "--ref_model with --kl_coef 0"),
])
def test_flags_that_do_not_apply_are_refused_by_name(tiny_llama_dir, math_rows, tmp_path, extra, says):
    argv = flags(tiny_llama_dir, math_rows, tmp_path, *extra)
    if extra == ["--reward_funcs"]:  # no reward at all
        argv = argv[:argv.index("--reward_funcs")] + argv[argv.index("--reward_funcs") + 2:-1]
    with pytest.raises(ConfigError) as e:
        rlhf_main(argv)
    assert says in str(e.value)


# ----- the trainer's wiring, on one built trainer -----

@pytest.fixture(scope="module")
def trainer(tiny_llama_dir, math_rows, plugin, tmp_path_factory):
    from swift.core import load_reward_plugins
    from swift.core.arguments import parse_args
    from swift.train import RlhfArguments
    from swift.train.recipe import start_run

    load_reward_plugins([str(plugin)])
    argv = flags(tiny_llama_dir, math_rows, tmp_path_factory.mktemp("ppo-built"), "--reward_funcs", "format",
                 "ppo_length", "--external_plugins", str(plugin))
    run = start_run(parse_args(RlhfArguments, argv), "rlhf ppo", require_answer=False)
    trainer, rows = ppo.build_ppo(run)
    assert rows == len(PROMPTS)
    return trainer


@pytest.fixture
def fixed(trainer, monkeypatch):
    """The trainer, with the rollout replaced by fixed completions (one of them ends with <|im_end|>) and its
    settings restored after the test."""
    settings = trainer.settings
    end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    rows = [trainer.train_dataset[i] for i in range(4)]
    prompt = trainer.swift_rollout.template.encode({"messages": rows[0]["prompt"]})["input_ids"]
    completions = [[11, 12, 13, 14, 15, 16], [21, 22, end], [31, 32, 33, 34, 35, 36], [41, end]]
    monkeypatch.setattr(trainer, "_generate", lambda rows: ([prompt] * len(rows), completions))
    yield trainer, rows
    trainer.settings = settings


def with_flags(trainer, **changes):
    import dataclasses

    trainer.settings = dataclasses.replace(trainer.settings, ppo=dataclasses.replace(trainer.settings.ppo, **changes))


def test_the_rollout_batch_is_scored_as_the_flags_say(fixed):
    trainer, rows = fixed
    with_flags(trainer, missing_eos_penalty=None)
    trainer._experience(rows)
    plain = trainer._last_rollout
    with_flags(trainer, missing_eos_penalty=0.5)
    trainer._experience(rows)
    penalised = trainer._last_rollout
    # two of the four completions hit --max_completion_length 6 without ending: the mean score drops by 0.25
    assert penalised["val/num_eos_tokens"] == 2
    assert penalised["objective/scores"] == pytest.approx(plain["objective/scores"] - 0.25)
    # the plugin reward `ppo_length` is the completion's length in tokens; format gives 0 to all
    assert plain["rewards/ppo_length/mean"] == pytest.approx((6 + 3 + 6 + 2) / 4)
    assert plain["objective/scores"] == pytest.approx(plain["rewards/ppo_length/mean"])


def test_gamma_lambda_whitening_and_kl_reach_the_advantages(fixed, monkeypatch):
    trainer, rows = fixed
    seen = {}
    real_gae, real_kl = ppo.gae, ppo.kl_shaped_rewards
    monkeypatch.setattr(ppo, "gae", lambda r, v, m, **kw: seen.update(gae=kw, rewards=r.clone()) or real_gae(r, v, m,
                                                                                                           **kw))
    monkeypatch.setattr(ppo, "kl_shaped_rewards", lambda *a: seen.update(kl_coef=a[-1]) or real_kl(*a))
    references = []
    monkeypatch.setattr(trainer, "_ref_logprobs", lambda b: references.append(1) or trainer._logprobs(
        trainer.parts.policy, b))
    with_flags(trainer, gamma=0.9, lam=0.7, kl_coef=0.3, whiten_rewards=False)
    out = trainer._experience(rows)
    assert seen["gae"] == {"gamma": 0.9, "lam": 0.7}
    assert seen["kl_coef"] == 0.3
    assert references
    raw = seen["rewards"]
    assert raw[0, 5].item() == pytest.approx(6.0)  # the score (ppo_length: 6 tokens) on the last token, KL 0 there
    mask = out["completion_mask"]
    near(masked_whiten(out["advantages"], mask), out["advantages"].tolist(), tol=1e-5)  # whitened already
    with_flags(trainer, whiten_rewards=True, kl_coef=0.0)
    references.clear()
    trainer._experience(rows)
    assert not references  # --kl_coef 0: no reference forward at all
    whitened = seen["rewards"]
    assert ppo.masked_mean(whitened, mask).item() == pytest.approx(ppo.masked_mean(raw, mask).item(), rel=1e-4)
    assert ((whitened - ppo.masked_mean(whitened, mask)) ** 2 * mask).sum().item() / (mask.sum().item() - 1) == \
        pytest.approx(1.0, rel=1e-3)


def test_forward_batch_size_chunks_the_scoring_passes(fixed, monkeypatch):
    trainer, rows = fixed
    widths = []
    real = ppo.token_scores
    monkeypatch.setattr(ppo, "token_scores", lambda m, b, *a: widths.append(b["input_ids"].shape[0]) or real(m, b, *a))
    with_flags(trainer, local_rollout_forward_batch_size=3)
    trainer._experience(rows)
    assert widths == [3, 1]  # the value model over 4 rows, 3 at a time
    # and the PyTorch engine decodes that many at once (GRPO's rollout would take max(batch, num_generations) = 8)
    assert trainer.swift_rollout.max_batch_size == 64


def test_loss_is_the_clipped_policy_loss_plus_vf_coef_times_the_value_loss(fixed):
    trainer, rows = fixed
    with_flags(trainer, vf_coef=0.5, cliprange=0.05, cliprange_value=0.2)
    batch = trainer._minibatches(trainer._experience(rows))[0]
    model = trainer.model.train()
    trainer._metrics.clear()
    loss = trainer.compute_loss(model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics.items()}
    assert metrics["val/ratio"] == pytest.approx(1.0, abs=1e-6)  # fp32, dropout off: the first pass is on-policy
    assert metrics["policy/clipfrac_avg"] == 0.0
    assert loss.item() == pytest.approx(metrics["loss/policy_avg"] + 0.5 * metrics["loss/value_avg"], rel=1e-5)
    shifted = dict(batch, logprobs=batch["logprobs"] - 0.1 * batch["completion_mask"])  # ratio e^0.1 = 1.105
    trainer.compute_loss(model, shifted)
    assert trainer._metrics["policy/clipfrac_avg"][-1] > 0  # outside 1 +- 0.05 wherever the advantage is > 0
    with_flags(trainer, cliprange=0.2)
    trainer.compute_loss(model, shifted)
    assert trainer._metrics["policy/clipfrac_avg"][-1] == 0.0  # inside 1 +- 0.2
    with_flags(trainer, vf_coef=0.0)
    assert trainer.compute_loss(model, batch).item() == pytest.approx(metrics["loss/policy_avg"], abs=1e-6)


def test_minibatches_follow_epochs_mini_batches_and_accumulation(fixed):
    trainer, rows = fixed
    experience = trainer._experience(rows)
    with_flags(trainer, num_ppo_epochs=3)
    batches = trainer._minibatches(experience)
    assert len(batches) == 3
    assert all(b["input_ids"].shape[0] == 4 for b in batches)
    trainer.settings.micro_batch = 2
    try:
        assert [b["input_ids"].shape[0] for b in trainer._minibatches(experience)] == [2] * 6
    finally:
        trainer.settings.micro_batch = 4


# ----- runs -----

def test_ppo_trains_a_lora_checkpoint_that_swift_infer_loads(tiny_llama_dir, math_rows, tmp_path):
    from safetensors.torch import load_file

    from swift.infer import infer_main

    result = rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path / "out", "--max_steps", "2", "--save_steps", "2",
                             "--reward_funcs", "accuracy", "format"))
    checkpoint = result.run_dir / "checkpoint-2"
    assert json.loads((checkpoint / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert any("lora_A" in k for k in load_file(checkpoint / "adapter_model.safetensors"))
    value = checkpoint / ppo.VALUE_DIR
    assert json.loads((value / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert any("score" in k for k in load_file(value / "adapter_model.safetensors"))  # the new value head trains
    assert json.loads((checkpoint / "args.json").read_text())["command"] == "rlhf ppo"
    steps = logged(result.run_dir)
    assert [s["step"] for s in steps] == [1, 2]
    for key in ("loss/policy_avg", "loss/value_avg", "objective/kl", "objective/entropy", "objective/scores",
                "objective/rlhf_reward", "policy/clipfrac_avg", "val/clipfrac_avg", "policy/entropy_avg",
                "learning_rate", "rewards/accuracy/mean", "tokens_seen"):
        assert all(key in s for s in steps), key
    assert steps[0]["val/ratio"] == pytest.approx(1.0)
    assert (result.run_dir / "images" / "train_loss.png").is_file()
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 1 + 1?"}]}))
    answers = tmp_path / "answers.jsonl"
    assert infer_main(["--adapters", str(checkpoint), "--val_dataset", str(queries), "--result_path", str(answers),
                       "--max_new_tokens", "4"]) == 0
    assert len(answers.read_text().splitlines()) == 1


def test_reward_model_scores_and_value_model_initialises(tiny_llama_dir, math_rows, smollm2_tokenizer, tmp_path):
    """--reward_model: a sequence-classification model's score at the last token is the reward; --value_model: the
    critic starts from that checkpoint (here one whose head is zero: the first values are exactly 0)."""
    from transformers import LlamaForSequenceClassification

    dirs = {}
    for name, scale in (("rm", 1.0), ("critic", 0.0)):
        torch.manual_seed(1)
        model = LlamaForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1)
        with torch.no_grad():
            model.score.weight.mul_(scale)
        dirs[name] = tmp_path / name
        model.save_pretrained(dirs[name])
        smollm2_tokenizer.save_pretrained(dirs[name])
    argv = flags(tiny_llama_dir, math_rows, tmp_path / "out", "--max_steps", "1", "--reward_model", str(dirs["rm"]),
                 "--value_model", str(dirs["critic"]))
    argv = argv[:argv.index("--reward_funcs")] + argv[argv.index("--reward_funcs") + 2:]
    step = logged(rlhf_main(argv).run_dir)[0]
    assert step["rewards/rm/mean"] != 0
    assert step["objective/scores"] == pytest.approx(step["rewards/rm/mean"])
    assert step["val/vpred"] == 0.0


def test_full_training_saves_both_models_and_penalises_against_a_frozen_copy(tiny_llama_dir, math_rows, tmp_path):
    result = rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path, "--train_type", "full", "--max_steps", "2",
                             "--save_steps", "2", "--num_ppo_epochs", "1", "--learning_rate", "1e-3",
                             "--warmup_ratio", "0"))
    checkpoint = result.run_dir / "checkpoint-2"
    assert (checkpoint / "model.safetensors").is_file()
    assert json.loads((checkpoint / ppo.VALUE_DIR / "config.json").read_text())["architectures"] == \
        ["LlamaForSequenceClassification"]
    steps = logged(result.run_dir)
    assert steps[0]["objective/kl"] == 0  # the frozen copy is the starting policy
    assert steps[1]["objective/kl"] != 0  # the second rollout comes from the trained one


def test_epochs_kl_coef_and_sample_generations_take_effect(tiny_llama_dir, math_rows, tmp_path):
    """--num_ppo_epochs 2: two optimizer steps per rollout batch (4 steps: 2 rollouts of 4 prompts, 8 episodes)
    against one (4 rollouts, 16). --kl_coef > 0 makes the RLHF reward differ from the score once the policy moved;
    at 0 they are equal. With a validation split: --num_sample_generations 2 writes two batches of scored samples,
    --eval_steps 2 evaluates the sampled completions' scores at steps 2 and 4."""
    common = ("--max_steps", "4", "--save_steps", "4", "--learning_rate", "5e-2", "--warmup_ratio", "0")
    two = logged(rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path / "a", *common, "--num_ppo_epochs", "2",
                                 "--kl_coef", "0.5")).run_dir)
    result = rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path / "b", *common, "--num_ppo_epochs", "1",
                             "--kl_coef", "0", "--val_dataset", str(math_rows), "--eval_steps", "2",
                             "--per_device_eval_batch_size", "2", "--num_sample_generations", "2"))
    one = logged(result.run_dir)
    assert [s["episode"] for s in two] == [4, 4, 8, 8]
    assert [s["episode"] for s in one] == [4, 8, 12, 16]
    assert two[2]["objective/kl"] != 0  # the second rollout comes from the updated policy
    assert two[2]["objective/rlhf_reward"] == pytest.approx(two[2]["objective/scores"] - 0.5 * two[2]["objective/kl"])
    assert all(s["objective/rlhf_reward"] == s["objective/scores"] and "objective/kl" not in s for s in one)
    assert two[1]["val/ratio"] != pytest.approx(1.0, abs=1e-6)  # the second pass over a batch is off-policy
    assert all(s["val/ratio"] == pytest.approx(1.0, abs=1e-6) for s in one)  # every step trains a fresh rollout
    evaluations = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()]
    evaluations = [row for row in evaluations if "eval_objective/scores" in row]
    assert [row["step"] for row in evaluations] == [2, 4]
    assert {"eval_rewards/format/mean", "eval_completions/mean_length"} <= evaluations[0].keys()
    samples = [json.loads(line) for line in (result.run_dir / ppo.COMPLETIONS_FILE).read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 1, 3, 3]
    assert {"prompt", "completion", "score", "format"} <= samples[0].keys()


def test_a_checkpoint_loads_back_into_policy_and_value(trainer, tmp_path):
    parts = trainer.parts
    trained = {n: p.detach().clone() for n, p in parts.named_parameters() if p.requires_grad}
    trainer.save_model(str(tmp_path / "checkpoint"))
    with torch.no_grad():
        for _, p in parts.named_parameters():
            if p.requires_grad:
                p.add_(1.0)
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint"))
    back = {n: p.detach() for n, p in parts.named_parameters() if p.requires_grad}
    assert any(n.startswith("value.") and "score" in n for n in back)  # the value head is among them
    for name, value in trained.items():
        torch.testing.assert_close(back[name], value, msg=name)


def test_resume_continues_from_the_checkpoint(tiny_llama_dir, math_rows, tmp_path):
    """The resumed run starts at step 3, its first rollout from the checkpoint's policy: a fresh LoRA adapter (B = 0)
    would be the reference itself, with a KL of exactly 0."""
    common = ("--max_steps", "4", "--save_steps", "2", "--num_ppo_epochs", "1", "--learning_rate", "5e-2",
              "--warmup_ratio", "0", "--lr_scheduler_type", "constant")
    full = rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path / "full", *common))
    resumed = rlhf_main(flags(tiny_llama_dir, math_rows, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                              str(full.run_dir / "checkpoint-2")))
    before, after = logged(full.run_dir), logged(resumed.run_dir)
    assert [s["step"] for s in before] == [1, 2, 3, 4]
    assert [s["step"] for s in after] == [3, 4]
    assert before[0]["objective/kl"] == 0
    assert after[0]["objective/kl"] != 0


@pytest.mark.slow
def test_a_rule_reward_rises_on_the_packaged_model(plugin, tmp_path):
    """SmolLM2, LoRA, reward `ppo_short` (a plugin: shorter answers score higher) on 8 arithmetic prompts: the mean
    score of the last rollouts beats the first ones'."""
    data = tmp_path / "math.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}]})
                              for a, b in PROMPTS))
    result = rlhf_main(["--rlhf_type", "ppo", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--dataset",
                        str(data), "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--logging_steps",
                        "1", "--max_steps", "20", "--save_steps", "20", "--per_device_train_batch_size", "4",
                        "--num_ppo_epochs", "2", "--max_completion_length", "24", "--learning_rate", "2e-3",
                        "--warmup_ratio", "0", "--reward_funcs", "ppo_short", "--external_plugins", str(plugin),
                        "--temperature", "1.0", "--seed", "0"])
    scores = [s["objective/scores"] for s in logged(result.run_dir)]
    first, last = sum(scores[:4]) / 4, sum(scores[-4:]) / 4
    assert last > first + 0.1, scores


@pytest.mark.slow
def test_ddp_rolls_out_each_rank_its_own_prompts(tiny_llama_dir, math_rows, tmp_path):
    """NPROC_PER_NODE=2 (gloo): DDP wraps policy and value together; each rank rolls out 2 prompts of the 4-prompt
    global batch."""
    import os
    import subprocess

    from tests.conftest import BIN

    env = {**os.environ, "NPROC_PER_NODE": "2"}
    argv = flags(tiny_llama_dir, math_rows, tmp_path, "--max_steps", "2", "--save_steps", "2",
                 "--per_device_train_batch_size", "2", "--num_ppo_epochs", "1")
    done = subprocess.run([str(BIN / "swift"), "rlhf", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(tmp_path.glob("v*"))
    assert json.loads((run_dir / "env.json").read_text())["strategy"] == "ddp"
    assert [s["episode"] for s in logged(run_dir)] == [4, 8]
    assert (run_dir / "checkpoint-2" / ppo.VALUE_DIR / "adapter_model.safetensors").is_file()

