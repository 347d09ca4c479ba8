"""`megatron rlhf --rlhf_type grpo`: the loss reduced as mcore reduces a step equals trl's step loss; flags refused
before any weights load; a run logs trl's rollout metrics and completions.jsonl whose advantages are the group
z-scores of the logged rewards; TP=2 gives the one-process run; rollout batches trained over several steps
(--steps_per_generation) use the rollout policy's log-probabilities (the ratio leaves 1, so tokens clip); the
overlong filter removes cut completions from the loss; and a model learns a length reward.

The tiny model is a random llama with SmolLM2's tokenizer whose EOS row of the output layer is set so that about
half of the 8-token completions end early: lengths vary, so a length reward has a signal to learn from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.megatron.conftest import check, run_megatron, save_tiny, tiny_config

pytest.importorskip("megatron.core")

PLUGIN = '''
from swift.core import register_reward

@register_reward("brief")
def brief(completions, completion_ids, **kwargs):
    """1 for an answer of one token, 0 for one cut at 8 tokens."""
    return [1 - len(ids) / 8 for ids in completion_ids]

@register_reward("low_ids")
def low_ids(completions, completion_ids, **kwargs):
    """The share of the completion's tokens in the lower half of the vocabulary (spread in every group)."""
    return [sum(t < 24576 for t in ids) / len(ids) for ids in completion_ids]

@register_reward("odd_only")
def odd_only(completions, completion_ids, solution, **kwargs):
    """A spread only for the odd-numbered prompts: the even ones' groups carry no signal."""
    return [sum(t < 24576 for t in ids) / len(ids) if int(s) % 2 else 0.0
            for ids, s in zip(completion_ids, solution)]

@register_reward("echo_solution")
def echo_solution(completions, solution, **kwargs):
    """Whether the dataset column reached the reward (1 per completion of a row that has it)."""
    return [1.0 if s is not None else None for s in solution]
'''


@pytest.fixture(scope="module")
def grpo_files(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("grpo")
    tokenizer = smollm2_tokenizer
    config = tiny_config("llama", len(tokenizer), tied=False)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    plain = save_tiny(root / "plain", config, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32)
    with torch.no_grad():  # logit of EOS = 0.6 x sum(hidden): some completions end after a few tokens
        model.lm_head.weight[tokenizer.eos_token_id] = 0.6
    model.save_pretrained(root / "eos")
    tokenizer.save_pretrained(root / "eos")
    rows = [{"messages": [{"role": "user", "content": f"Tell me about the number {i}."},
                          {"role": "assistant", "content": "left out: GRPO generates the answer"}],
             "solution": str(i)} for i in range(16)]
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plugin = root / "plugin.py"
    plugin.write_text(PLUGIN)
    return {"plain": plain, "eos": root / "eos", "data": data, "plugin": plugin}


def _flags(files: dict, out: Path, *extra: str, model: str = "eos") -> list[str]:
    return ["--rlhf_type", "grpo", "--model", str(files[model]), "--dataset", str(files["data"]), "--save", str(out),
            "--external_plugins", str(files["plugin"]), "--num_generations", "4", "--global_batch_size", "8",
            "--micro_batch_size", "2", "--max_completion_length", "8", "--max_length", "128", "--log_interval", "1",
            "--temperature", "1.0", "--lora_dropout", "0", "--seed", "3", *extra]


def _log(out: Path) -> list[dict]:
    (path,) = out.glob("v*/logging.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _completions(out: Path) -> list[dict]:
    (path,) = out.glob("v*/completions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ the loss's reduction


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_mcore_reduction_of_the_micro_batches_is_trls_step_loss(loss_type):
    """4 micro-batches (2 data-parallel ranks x 2 accumulation steps, or one rank x 4): sum of numerators / sum of
    counts = trl's loss summed over the accumulation steps (its normaliser: 4 micro-batches; dapo: the step's
    completion tokens)."""
    import torch

    from swift.megatron.grpo import GrpoLoss, loss_share, per_token_terms
    from tests.megatron.test_grpo import reduce_tokens

    settings = GrpoLoss(loss_type, 0.2, 0.28, 0.04, max_completion_length=7)
    generator = torch.Generator().manual_seed(1)
    micro = []
    for _ in range(4):
        policy = -torch.rand(3, 7, generator=generator, dtype=torch.float64) * 2
        old = policy + (torch.rand(3, 7, generator=generator, dtype=torch.float64) - 0.5) * 0.6
        ref = policy + (torch.rand(3, 7, generator=generator, dtype=torch.float64) - 0.5)
        mask = (torch.rand(3, 7, generator=generator) > 0.3).double()
        adv = torch.randn(3, generator=generator, dtype=torch.float64)
        micro.append((per_token_terms(policy, old, adv, settings, ref_logps=ref)[0], mask))
    tokens = float(sum(m.sum() for _, m in micro))
    expected = sum(reduce_tokens(t, m, settings, num_items=tokens, accumulation=4).item() for t, m in micro)
    shares = [loss_share(t, m, settings) for t, m in micro]
    got = sum(n.item() for n, _ in shares) / sum(int(c) for _, c in shares)
    assert got == pytest.approx(expected, rel=1e-12)


def test_sequence_level_ratio_and_two_sided_clipping_are_trls():
    """GSPO: every token of a completion shares exp(mean log-ratio over its completion tokens); --delta caps the
    unclipped ratio (for positive advantages the clipped side wins anyway; for negative ones the cap bounds the
    loss)."""
    import math

    import torch

    from swift.megatron.grpo import GrpoLoss, importance_ratio, per_token_terms

    policy = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.3, -4.0]], dtype=torch.float64)
    old = torch.tensor([[-1.2, -2.5, -9.0], [-0.9, -0.3, -4.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    gspo = GrpoLoss(importance_sampling_level="sequence", beta=0.0)
    ratio = importance_ratio(policy, old, gspo, mask)
    assert ratio.shape == (2, 1)
    assert ratio[0, 0].item() == pytest.approx(math.exp((0.2 + 0.5) / 2))
    assert ratio[1, 0].item() == pytest.approx(math.exp(0.7 / 3))
    adv = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    loss, _ = per_token_terms(policy, old, adv, gspo, mask=mask)
    r0, r1 = math.exp(0.35), math.exp(0.7 / 3)
    assert loss.shape == (2, 1)  # one term per completion, spread over its tokens by the mask (as trl)
    assert loss[0, 0].item() == pytest.approx(-min(-r0, -1.2))  # negative advantage: the unclipped ratio wins
    assert loss[1, 0].item() == pytest.approx(-min(2 * r1, 2 * 1.2))
    capped, _ = per_token_terms(policy, old, adv, GrpoLoss(importance_sampling_level="sequence", beta=0.0,
                                                           delta=1.3), mask=mask)
    assert capped[0, 0].item() == pytest.approx(1.3)  # -min(-1.3, -1.2): the cap bounds a negative advantage


# ------------------------------------------------------------------------------------------ flags


@pytest.mark.parametrize(("argv", "needle"), [
    (["--reward_funcs", "format", "--use_vllm", "true", "--vllm_mode", "server"], "--vllm_mode server: megatron"),
    (["--reward_funcs", "format", "--use_vllm", "true", "--vllm_tensor_parallel_size", "2"],
     "--vllm_tensor_parallel_size 2: megatron rlhf runs one vLLM engine"),
    (["--reward_funcs", "format", "--sleep_level", "1"], "--sleep_level configures vLLM rollouts: add --use_vllm"),
    (["--reward_funcs", "format", "--use_vllm", "true", "--pipeline_model_parallel_size", "2"],
     "--use_vllm true with --tensor_model_parallel_size / --pipeline_model_parallel_size > 1 is not built"),
    (["--reward_funcs", "nonexistent"], "--reward_funcs must be one of accuracy, format"),
    ([], "needs --reward_funcs"),
    (["--reward_funcs", "format", "--global_batch_size", "6"], "must be a multiple of --num_generations 4"),
    (["--reward_funcs", "format", "--num_generations", "1"], "it needs at least 2"),
    (["--reward_funcs", "format", "--rpo_alpha", "1"], "--rpo_alpha is a DPO flag"),
    (["--reward_funcs", "format", "--packing", "true"], "--packing: GRPO trains on its own rollouts"),
    (["--reward_funcs", "format", "--split_dataset_ratio", "0.1"], "has no evaluation"),
    (["--reward_funcs", "format", "--kl_in_reward", "true"], "--kl_in_reward true is not built"),
    (["--reward_funcs", "format", "--loss_type", "cispo"], "--loss_type cispo is not supported"),
    (["--reward_funcs", "format", "--generation_batch_size", "12"], "--generation_batch_size 12 must be"),
    (["--reward_funcs", "format", "--reward_weights", "1", "2"], "2 weights for 1 --reward_funcs"),
    (["--reward_funcs", "format", "--epsilon_high", "0.1"], "--epsilon_high 0.1: must be at least"),
    (["--reward_funcs", "format", "--max_resample_times", "5"], "add --dynamic_sample true"),
])
def test_grpo_flag_problems_are_named_before_loading(argv, needle):
    from swift.core import ConfigError
    from swift.core.arguments import parse_args
    from swift.megatron.arguments import MegatronRlhfArguments, check_train_args
    from tests.megatron.conftest import IDENTITY

    base = ["--rlhf_type", "grpo", "--model", "x", "--dataset", str(IDENTITY), "--num_generations", "4",
            "--global_batch_size", "8"]
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_train_args(parse_args(MegatronRlhfArguments, [*base, *argv]))


def test_use_vllm_without_vllm_installed_says_how_to_get_it():
    """The dev environment has no vLLM (it lives in .venv-vllm: tests/with_vllm/test_vllm_megatron_grpo.py)."""
    import importlib.util

    from swift.core import ConfigError
    from swift.core.arguments import parse_args
    from swift.megatron.arguments import MegatronRlhfArguments, check_train_args
    from tests.megatron.conftest import IDENTITY

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this environment")
    with pytest.raises(ConfigError, match="vLLM is not installed here"):
        check_train_args(parse_args(MegatronRlhfArguments, [
            "--rlhf_type", "grpo", "--model", "x", "--dataset", str(IDENTITY), "--num_generations", "4",
            "--global_batch_size", "8", "--reward_funcs", "format", "--use_vllm", "true"]))


def test_a_grpo_flag_given_to_dpo_is_refused():
    from swift.core import ConfigError
    from swift.core.arguments import parse_args
    from swift.megatron.arguments import MegatronRlhfArguments, check_train_args
    from tests.megatron.conftest import IDENTITY

    with pytest.raises(ConfigError, match="--num_generations is a GRPO flag; --rlhf_type dpo does not use it"):
        check_train_args(parse_args(MegatronRlhfArguments, ["--model", "x", "--dataset", str(IDENTITY),
                                                            "--num_generations", "4"]))


def test_generation_schedule_follows_ms_swift():
    from types import SimpleNamespace

    from swift.megatron.grpo import generation_schedule

    def flags(batch, steps):
        return SimpleNamespace(generation_batch_size=batch, steps_per_generation=steps)

    assert generation_schedule(flags(None, None), 8) == (8, 1)
    assert generation_schedule(flags(None, 3), 8) == (24, 3)
    assert generation_schedule(flags(32, None), 8) == (32, 4)


# ------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def lora_run(grpo_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpo-lora")
    check(run_megatron("rlhf", *_flags(grpo_files, out, "--train_type", "lora", "--train_iters", "2",
                                       "--reward_funcs", "brief", "echo_solution", "--reward_weights", "1", "0.5",
                                       "--log_completions", "true", "--save_interval", "1")))
    return out


def test_a_run_logs_rewards_and_completions_with_their_advantages(lora_run):
    rows = _log(lora_run)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("reward", "reward_std", "rewards/brief/mean", "rewards/echo_solution/mean", "kl",
                    "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio",
                    "clip_ratio/region_mean"):
            assert key in row, key
        assert row["grad_norm"] > 0
        assert row["rewards/echo_solution/mean"] == 1.0  # the `solution` column reached the reward function
        assert row["reward"] == pytest.approx(row["rewards/brief/mean"] + 0.5, abs=1e-6)
    assert rows[0]["kl"] == 0.0
    assert rows[1]["kl"] > 0
    assert rows[0]["loss"] == pytest.approx(0.0, abs=1e-6)  # ratio 1 and mean advantage 0 per group
    completions = _completions(lora_run)
    assert [r["step"] for r in completions] == [1] * 8 + [2] * 8
    for start in range(0, 16, 4):  # a group: 4 completions of one prompt, advantages the z-scores of the rewards
        group = completions[start:start + 4]
        assert len({json.dumps(r["prompt"]) for r in group}) == 1
        assert group[0]["prompt"][-1]["role"] == "user"  # the dataset's answer is not part of the prompt
        totals = [r["rewards"]["brief"] + 0.5 * r["rewards"]["echo_solution"] for r in group]
        mean = sum(totals) / 4
        std = (sum((t - mean) ** 2 for t in totals) / 3) ** 0.5
        for record, total in zip(group, totals, strict=True):
            assert record["advantage"] == pytest.approx((total - mean) / (std + 1e-4), abs=1e-5)
    lengths = [8 * (1 - r["rewards"]["brief"]) for r in completions[:8]]
    assert rows[0]["completions/mean_length"] == pytest.approx(sum(lengths) / 8, abs=1e-5)
    (checkpoint,) = lora_run.glob("v*/iter_0000002")
    assert json.loads((checkpoint / "swift_mcore.json").read_text())["rlhf_type"] == "grpo"


def test_tensor_parallel_run_gives_the_one_process_run(grpo_files, lora_run, tmp_path):
    """TP=2: the weights gathered for the rollouts are the one-process run's, so the same completions are drawn
    (the same rewards at step 2, after an update) and the losses and gradient norms agree."""
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path, "--train_type", "lora", "--train_iters", "2",
                                       "--reward_funcs", "brief", "echo_solution", "--reward_weights", "1", "0.5",
                                       "--tensor_model_parallel_size", "2"), nproc=2))
    one, two = _log(lora_run), _log(tmp_path)
    for a, b in zip(one, two, strict=True):
        assert b["reward"] == a["reward"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-3, abs=1e-8)


@pytest.mark.slow
def test_pipeline_parallel_run_and_a_resumed_run_give_the_one_process_run(grpo_files, lora_run, tmp_path):
    """PP=2, and a run resumed from the step-1 checkpoint (its step-2 rollouts drawn with the resumed weights and
    the same seed): the one-process run's rewards, losses and gradient norms."""
    lora = ["--train_type", "lora", "--train_iters", "2", "--reward_funcs", "brief", "echo_solution",
            "--reward_weights", "1", "0.5"]
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path / "pp", *lora, "--pipeline_model_parallel_size", "2"),
                       nproc=2))
    (first,) = lora_run.glob("v*/iter_0000001")
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path / "resumed", *lora, "--load", str(first))))
    one = _log(lora_run)
    for rows in (_log(tmp_path / "pp"), [one[0], *_log(tmp_path / "resumed")]):
        for a, b in zip(one, rows, strict=True):
            assert b["reward"] == a["reward"]
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_a_rollout_batch_trained_over_two_steps_uses_the_rollout_policy(grpo_files, tmp_path):
    """--steps_per_generation 2: one rollout batch of 16 completions per 2 steps; the second step's ratio is taken
    against the rollout policy's log-probabilities, so its loss leaves 0 and, after a large update, tokens clip
    there, never on a fresh batch. --beta 0: no KL is computed (no reference model)."""
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path, "--train_type", "full", "--train_iters", "4",
                                       "--reward_funcs", "low_ids", "--steps_per_generation", "2", "--beta", "0",
                                       "--lr", "1e-2", "--log_completions", "true", model="plain")))
    rows = _log(tmp_path)
    assert [r["step"] for r in _completions(tmp_path)] == [1] * 16 + [3] * 16
    assert all("kl" not in r for r in rows)
    for fresh in (rows[0], rows[2]):  # ratio 1 and a mean advantage of 0 in every group: loss 0, nothing clips
        assert fresh["loss"] == pytest.approx(0.0, abs=1e-6)
        assert fresh["clip_ratio/region_mean"] == 0.0
    for reused in (rows[1], rows[3]):
        assert abs(reused["loss"]) > 1e-4
    assert rows[1]["clip_ratio/region_mean"] > 0


def test_dynamic_sampling_replaces_groups_without_a_reward_spread(grpo_files, tmp_path):
    """--dynamic_sample: the even-numbered prompts' groups score 0 throughout; they are replaced by groups of newly
    drawn prompts, so the trained batch holds odd-numbered prompts only and no zero-spread group."""
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path, "--train_type", "lora", "--train_iters", "2",
                                       "--reward_funcs", "odd_only", "--dynamic_sample", "true",
                                       "--max_resample_times", "4", "--log_completions", "true", model="plain")))
    rows = _log(tmp_path)
    assert all(r["frac_reward_zero_std"] == 0.0 for r in rows)
    assert max(r["dynamic_sample/rounds"] for r in rows) >= 2  # half the prompts are even: some batch resampled
    numbers = [int(r["prompt"][0]["content"].rsplit(" ", 1)[1].rstrip(".")) for r in _completions(tmp_path)]
    assert len(numbers) == 16
    assert all(n % 2 for n in numbers)


@pytest.mark.slow
def test_the_overlong_filter_trains_nothing_on_cut_completions(grpo_files, tmp_path):
    """The plain random model never emits EOS in 8 tokens: every completion is cut, so --overlong_filter leaves
    no token in the loss and no gradient."""
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path, "--train_type", "full", "--train_iters", "1",
                                       "--reward_funcs", "brief", "--overlong_filter", "true", "--beta", "0",
                                       model="plain")))
    (row,) = _log(tmp_path)
    assert row["completions/clipped_ratio"] == 1.0
    assert row["grad_norm"] == 0.0


@pytest.mark.slow
def test_the_policy_learns_a_length_reward(grpo_files, tmp_path):
    """Full training against a frozen copy of the initial weights (beta 0.04): the mean reward for short answers
    rises from below 0.3 to above 0.6 within 3 steps, and the KL to the reference grows."""
    check(run_megatron("rlhf", *_flags(grpo_files, tmp_path, "--train_type", "full", "--train_iters", "3",
                                       "--reward_funcs", "brief", "--lr", "1e-3")))
    rows = _log(tmp_path)
    assert rows[0]["reward"] < 0.3
    assert rows[2]["reward"] > 0.6
    assert rows[2]["kl"] > rows[0]["kl"] == 0.0
