"""The GRPO family (swift/train/rlhf/grpo.py + the trainer in rlhf/trainers.py): advantage estimators, KL in the
reward and GDPO on hand-worked numbers; clip-higher, GSPO and the two-sided clip by their effect on trl's loss;
dynamic sampling, the overlong filter and the completions log by what a run trains on and writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from swift.core import group_advantages, sequence_kl, zero_std_groups
from swift.core.errors import ConfigError
from swift.train import rlhf_main
from swift.train.rlhf import grpo
from tests.train.test_rlhf import flags, logged, write_data

ONE = torch.tensor([1.0])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("rlhf-data"))


def adv(rewards, g, **kw):
    rows = torch.tensor(rewards, dtype=torch.float32).reshape(-1, 1)
    return group_advantages(rows, ONE, g, **kw).tolist()


def test_grpo_advantages_are_the_group_normalised_rewards():
    # one group [1, 0, 0, 1]: mean 0.5, sample std sqrt(1/3) = 0.57735
    assert adv([1, 0, 0, 1], 4) == pytest.approx([0.5 / 0.57745, -0.5 / 0.57745, -0.5 / 0.57745, 0.5 / 0.57745],
                                                 abs=1e-4)
    assert adv([1, 0, 0, 1], 4, scale="none") == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # two groups, batch scaling: centred [.5 -.5 -.5 .5 | 0 0 0 0] over the std of the raw rewards
    # [1 0 0 1 2 2 2 2]: mean 1.25, squared deviations 5.5, / 7 -> std 0.886405
    assert adv([1, 0, 0, 1, 2, 2, 2, 2], 4, scale="batch")[:2] == pytest.approx([0.5 / 0.886505, -0.5 / 0.886505],
                                                                                abs=1e-5)
    # equal rewards: advantage 0, not a division by zero
    assert adv([2, 2, 2, 2], 4) == [0.0] * 4


def test_rloo_is_the_reward_minus_the_mean_of_the_others():
    # r0 - mean(0, 0, 1) = 2/3; r1 - mean(1, 0, 1) = -2/3
    assert adv([1, 0, 0, 1], 4, estimator="rloo", scale="none") == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert adv([3, 1], 2, estimator="rloo", scale="none") == pytest.approx([2.0, -2.0])


def test_reinforce_plus_plus_scales_by_the_batch_std_of_the_centred_rewards():
    # centred [.5 -.5 -.5 .5 0 0 0 0]: sum of squares 1, / 7 -> std 0.377964 (GRPO's batch std would be 0.886)
    out = adv([1, 0, 0, 1, 2, 2, 2, 2], 4, estimator="reinforce_plus_plus", scale="batch")
    assert out[:2] == pytest.approx([0.5 / 0.378064, -0.5 / 0.378064], abs=1e-5)
    assert out[4:] == [0.0] * 4


def test_kl_in_reward_is_subtracted_before_the_baseline():
    # rewards [1 0 0 1] - 0.5 x KL [1 0 0 0] = [.5 0 0 1]; RLOO: .5 - mean(0, 0, 1), 0 - mean(.5, 0, 1), ...
    out = adv([1, 0, 0, 1], 4, estimator="rloo", scale="none", kl=torch.tensor([1.0, 0, 0, 0]), beta=0.5)
    assert out == pytest.approx([0.5 - 1 / 3, -0.5, -0.5, 1 - 0.5 / 3])
    kl = sequence_kl(torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -1.0]]),
                          torch.tensor([[1.0, 1.0, 0.0]]))
    assert kl.tolist() == [0.5]  # (-1 + 1.5) + (-2 + 2); the padded third token does not count


def test_gdpo_normalises_each_reward_function_in_its_group_before_summing():
    rewards = torch.tensor([[1.0, 10.0], [0.0, 30.0], [1.0, 20.0], [0.0, 20.0]])
    weights = torch.tensor([1.0, 2.0])
    out = group_advantages(rewards, weights, 4, scale="gdpo")
    by_hand = []
    for col, w in zip(rewards.T.tolist(), weights.tolist(), strict=True):
        mean = sum(col) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in col) / 3)
        by_hand.append([w * (x - mean) / (std + 1e-4) for x in col])
    summed = [a + b for a, b in zip(*by_hand, strict=True)]
    mean = sum(summed) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in summed) / 3)
    assert out.tolist() == pytest.approx([(x - mean) / (std + 1e-4) for x in summed], abs=1e-5)


def test_unscored_completions_get_no_advantage_and_stay_out_of_the_group_mean():
    assert adv([1, float("nan"), 0, 1], 4, scale="none") == pytest.approx([1 / 3, 0.0, -2 / 3, 1 / 3])


def test_dynamic_sampling_keeps_groups_with_a_reward_spread_first():
    rewards = torch.tensor([1.0, 1, 1, 1, 1, 0, 1, 1, float("nan"), 1, float("nan"), float("nan")])
    assert zero_std_groups(rewards, 4).tolist() == [True, False, True]
    first, second = torch.tensor([True, False, True]), torch.tensor([False, True, True])
    assert grpo.pick_groups([first, second], 3) == [(0, 1), (1, 0), (0, 0)]  # (round, group); then the first round's
    assert grpo.pick_groups([torch.tensor([False, False])], 2) == [(0, 0), (0, 1)]


def test_rollouts_of_different_widths_join_left_and_right_padded():
    a = {"prompt_ids": torch.tensor([[5, 6], [7, 8]]), "prompt_mask": torch.ones(2, 2, dtype=torch.long),
         "completion_ids": torch.tensor([[1], [2]]), "completion_mask": torch.ones(2, 1, dtype=torch.long),
         "swift_prompts": ["p0", "p1"], "num_items_in_batch": torch.tensor(2)}
    b = {"prompt_ids": torch.tensor([[9], [4]]), "prompt_mask": torch.ones(2, 1, dtype=torch.long),
         "completion_ids": torch.tensor([[3, 3, 3], [4, 4, 4]]), "completion_mask": torch.ones(2, 3, dtype=torch.long),
         "swift_prompts": ["q0", "q1"], "num_items_in_batch": torch.tensor(6)}
    out = grpo.join_rollouts([a, b], [(1, 1), (0, 0)], 1, pad_id=0)
    assert out["prompt_ids"].tolist() == [[0, 4], [5, 6]]  # q1 left-padded to width 2
    assert out["prompt_mask"].tolist() == [[0, 1], [1, 1]]
    assert out["completion_ids"].tolist() == [[4, 4, 4], [1, 0, 0]]
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["swift_prompts"] == ["q1", "p0"]
    assert "num_items_in_batch" not in out  # recounted by the trainer over every process


def grpo_trainer(model: Path, data: Path, out: Path, *extra: str):
    """The GRPO trainer `swift rlhf` builds, without training."""
    from swift.core.cli import resolve_args
    from swift.train.arguments import RlhfArguments
    from swift.train.recipe import start_run
    from swift.train.rlhf.registry import get_method
    from swift.train.rlhf.run import check_rlhf_args

    argv = flags(model, data, out, "grpo", "--per_device_train_batch_size", "4", "--num_generations", "4",
                 "--max_completion_length", "8", "--reward_funcs", "format", "--beta", "0", *extra)
    args = resolve_args(RlhfArguments, argv, prog="swift rlhf")
    check_rlhf_args(args)
    run = start_run(args, "rlhf grpo", require_answer=False)
    trainer = get_method("grpo").build(run)[0]
    trainer.current_gradient_accumulation_steps = 1  # (set by Trainer's training loop)
    return trainer


def clipped_loss(trainer, ratios: list[float], advantage: float = 1.0) -> tuple[float, float]:
    """trl's GRPO loss of one 2-token completion whose tokens had `ratios` (policy / old policy), and the gradient
    norm it gives."""
    model = trainer.model
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    inputs = {"prompt_ids": ids[:, :3], "prompt_mask": torch.ones(1, 3, dtype=torch.long),
              "completion_ids": ids[:, 3:], "completion_mask": torch.ones(1, 2, dtype=torch.long),
              "advantages": torch.tensor([advantage]), "num_items_in_batch": torch.tensor(2.0)}
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(model, ids, torch.ones_like(ids), 2)[0]
    inputs["old_per_token_logps"] = logps - torch.tensor([ratios]).log()
    model.zero_grad()
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    grad = sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)
    return float(loss), grad


def test_clip_higher_and_sequence_level_ratios_change_the_loss(tiny_llama_dir, data_dir, tmp_path):
    math_rows = data_dir / "math.jsonl"
    base = grpo_trainer(tiny_llama_dir, math_rows, tmp_path / "a")
    # ratio 1.25 on both tokens, positive advantage: clipped at 1 + epsilon (0.2) -> no gradient ...
    loss, grad = clipped_loss(base, [1.25, 1.25])
    assert loss == pytest.approx(-1.2, abs=1e-5)
    assert grad == 0
    higher = grpo_trainer(tiny_llama_dir, math_rows, tmp_path / "b", "--epsilon_high", "0.28")
    loss, grad = clipped_loss(higher, [1.25, 1.25])  # ... inside DAPO's clip-higher range: the ratio trains
    assert loss == pytest.approx(-1.25, abs=1e-5)
    assert grad > 0
    # token ratios 1.5 and 1/1.5: per token min(r, clip(r)) = 1.2 and 0.667 -> loss -(1.2 + 0.667) / 2 ...
    assert clipped_loss(base, [1.5, 1 / 1.5])[0] == pytest.approx(-(1.2 + 1 / 1.5) / 2, abs=1e-5)
    gspo = grpo_trainer(tiny_llama_dir, math_rows, tmp_path / "c", "--importance_sampling_level", "sequence")
    # ... GSPO's sequence ratio exp(mean log r) = 1: loss -1
    assert clipped_loss(gspo, [1.5, 1 / 1.5])[0] == pytest.approx(-1.0, abs=1e-5)
    # two-sided clipping: a negative advantage at ratio 3 is bounded by delta
    two_sided = grpo_trainer(tiny_llama_dir, math_rows, tmp_path / "d", "--delta", "2")
    assert clipped_loss(two_sided, [3.0, 3.0], advantage=-1.0)[0] == pytest.approx(2.0, abs=1e-5)
    assert clipped_loss(base, [3.0, 3.0], advantage=-1.0)[0] == pytest.approx(3.0, abs=1e-5)


SPREAD_REWARD = """
from swift.train.rlhf import register_reward

@register_reward('spread_if_asked', replace=True)  # (loaded by several tests of one process)
def spread_if_asked(completions, spread, **kwargs):
    # distinct rewards in the groups of rows marked spread, all-equal ones in the others
    return [float(i) if s else 0.0 for i, s in enumerate(spread)]
"""


@pytest.fixture
def spread_data(tmp_path) -> tuple[Path, Path]:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}], "spread": i % 2 == 1} for i in range(8)]
    data = tmp_path / "spread.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    plugin = tmp_path / "spread_reward.py"
    plugin.write_text(SPREAD_REWARD)
    return data, plugin


def completions_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]


def test_dynamic_sampling_trains_only_on_groups_with_a_reward_spread(tiny_llama_dir, spread_data, tmp_path):
    data, plugin = spread_data
    common = ("--max_steps", "3", "--per_device_train_batch_size", "8", "--num_generations", "4",
              "--max_completion_length", "4", "--reward_funcs", "spread_if_asked", "--external_plugins", str(plugin),
              "--log_completions", "true", "--seed", "3")
    plain = rlhf_main(flags(tiny_llama_dir, data, tmp_path / "plain", "grpo", *common))
    rows = completions_log(plain.run_dir)
    assert len(rows) == 3 * 8
    assert {r["step"] for r in rows} == {1, 2, 3}
    assert {"prompt", "completion", "rewards", "advantage"} <= rows[0].keys()
    # without dynamic sampling some trained groups had all-equal rewards: advantage 0
    assert any(r["rewards"]["spread_if_asked"] == 0 and r["advantage"] == 0 for r in rows)
    dynamic = rlhf_main(flags(tiny_llama_dir, data, tmp_path / "dyn", "grpo", *common, "--dynamic_sample", "true",
                              "--max_resample_times", "6"))
    rows = completions_log(dynamic.run_dir)
    assert len(rows) == 3 * 8
    groups = [rows[i:i + 4] for i in range(0, len(rows), 4)]
    assert all(len({r["rewards"]["spread_if_asked"] for r in g}) == 4 for g in groups)  # every group has a spread
    steps = [r for r in logged(dynamic.run_dir) if "loss" in r]
    assert max(r["dynamic_sample/rounds"] for r in steps) > 1  # it resampled
    assert min(r["dynamic_sample/rounds"] for r in steps) >= 1


def test_overlong_filter_drops_cut_completions_from_the_loss(tiny_llama_dir, spread_data, tmp_path):
    # 2-token completions of a random model are all cut by the limit: with the filter no token trains
    _, plugin = spread_data
    data = tmp_path / "all_spread.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"}], "spread": True})
                              for i in range(4)))
    common = ("--max_steps", "1", "--per_device_train_batch_size", "8", "--num_generations", "4",
              "--max_completion_length", "2", "--reward_funcs", "spread_if_asked", "--external_plugins", str(plugin),
              "--beta", "0", "--loss_type", "dapo", "--seed", "3")
    steps = {}
    for name, extra in (("kept", ()), ("filtered", ("--overlong_filter", "true"))):
        result = rlhf_main(flags(tiny_llama_dir, data, tmp_path / name, "grpo", *common, *extra))
        steps[name] = next(r for r in logged(result.run_dir) if "loss" in r)
    assert steps["kept"]["completions/clipped_ratio"] == steps["filtered"]["completions/clipped_ratio"] == 1.0
    assert steps["kept"]["grad_norm"] > 0
    assert steps["filtered"]["grad_norm"] == 0


def test_kl_in_reward_runs_rloo_with_the_kl_logged(tiny_llama_dir, data_dir, tmp_path):
    result = rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--max_steps", "1",
                             "--per_device_train_batch_size", "4", "--num_generations", "4",
                             "--max_completion_length", "4", "--reward_funcs", "format",
                             "--advantage_estimator", "rloo"))
    step = next(r for r in logged(result.run_dir) if "loss" in r)
    assert step["kl_in_reward"] == pytest.approx(0.0, abs=1e-5)  # step 1: the policy is the reference
    assert "kl" not in step  # no KL loss term (trl logs it when it adds one)
    args = json.loads((result.run_dir / "args.json").read_text())
    assert args["advantage_estimator"] == "rloo"


@pytest.mark.parametrize(("extra", "says"), [
    (("--kl_in_reward", "true", "--beta", "0"), "no KL to subtract"),
    (("--max_resample_times", "2"), "without --dynamic_sample"),
    (("--tau_pos", "2"), "--loss_type sapo"),
    (("--delta", "1.1"), "--delta 1.1"),
    (("--top_entropy_quantile", "0"), "quantile"),
    (("--steps_per_generation", "1"), "--steps_per_generation (4)"),
    (("--kl_in_reward", "true", "--scale_rewards", "gdpo"), "GDPO"),
])
def test_grpo_family_flags_are_checked_before_loading(tiny_llama_dir, data_dir, tmp_path, extra, says):
    with pytest.raises(ConfigError) as e:  # (8 completions per rollout: whole groups of 8)
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--reward_funcs", "format",
                        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                        "--num_generations", "8", *extra))
    assert says in str(e.value)


def test_offloaded_keeps_the_tensors_the_optimizer_holds():
    from swift.train.rlhf.rollout import offloaded

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    before = [p.detach().clone() for p in model.parameters()]
    state = optimizer.state[model.weight]["exp_avg"]
    with offloaded(model, optimizer):
        assert all(p.device.type == "cpu" for p in model.parameters())
    assert optimizer.state[model.weight]["exp_avg"] is state
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.gpu
def test_offloaded_moves_cuda_weights_and_optimizer_state_to_ram_and_back():
    from swift.train.rlhf.rollout import offloaded

    model = torch.nn.Linear(256, 256).cuda()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 256, device="cuda")).sum().backward()
    optimizer.step()
    used = torch.cuda.memory_allocated()
    with offloaded(model, optimizer):
        assert model.weight.device.type == "cpu"
        assert optimizer.state[model.weight]["exp_avg"].device.type == "cpu"
        assert torch.cuda.memory_allocated() < used
    assert model.weight.device.type == "cuda"
    assert optimizer.state[model.weight]["exp_avg"].device.type == "cuda"
    optimizer.step()  # the optimizer still trains the same tensors


@pytest.mark.parametrize(("extra", "says"), [
    (("--sleep_level", "1"), "--sleep_level given without --use_vllm true"),
    (("--offload_model", "true"), "--offload_model given without --use_vllm true"),
])
def test_vllm_memory_flags_need_colocated_vllm(tiny_llama_dir, data_dir, tmp_path, extra, says):
    with pytest.raises(ConfigError) as e:
        rlhf_main(flags(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "grpo", "--reward_funcs", "format",
                        "--per_device_train_batch_size", "4", "--num_generations", "4", *extra))
    assert says in str(e.value)


def test_lora_rollouts_sample_from_the_policy_not_the_base(tiny_llama_dir, data_dir, tmp_path):
    trainer = grpo_trainer(tiny_llama_dir, data_dir / "math.jsonl", tmp_path, "--top_k", "1")
    model = trainer.model
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # an adapter that changes the answers
    ids = trainer.swift_template.encode({"messages": [{"role": "user", "content": "What is 3 + 4?"}]})["input_ids"]
    rolled = trainer.swift_rollout.complete([ids], trainer, seed=0, call=0)[0]
    prompt = torch.tensor([ids])
    model.eval()  # (the rollout samples in eval mode too: no dropout)
    with torch.no_grad():
        policy = model.generate(prompt, do_sample=False, max_new_tokens=len(rolled))[0, len(ids):].tolist()
        with model.disable_adapter():
            base = model.generate(prompt, do_sample=False, max_new_tokens=len(rolled))[0, len(ids):].tolist()
    assert base != policy  # (else the test could not tell them apart)
    assert rolled == policy
