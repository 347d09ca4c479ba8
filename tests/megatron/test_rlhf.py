"""`megatron rlhf --rlhf_type dpo`: the DPO losses against an independent computation, step 1 at ln 2 (the reference
is the initial policy), the same losses as `swift rlhf --rlhf_type dpo` and under TP / PP / DP, packing, resuming,
bad rows and flags refused before any weights load, and a model that learns the preferences and exports as sft's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.megatron.conftest import check, logged_losses, run_megatron

pytest.importorskip("megatron.core")

LN2 = math.log(2)
QUESTIONS = [("Write a haiku about rain.", "Soft rain taps the roof, puddles hold the grey sky still.", "rain"),
             ("Say hello politely.", "Hello, it is a pleasure to meet you.", "hey"),
             ("Give one tip for sleep.", "Keep a fixed bedtime every night.", "dunno"),
             ("Name a primary colour.", "Red is a primary colour.", "idk lol"),
             ("What is two plus two?", "Two plus two is four.", "five"),
             ("Suggest a name for a cat.", "Whiskers is a friendly name for a cat.", "cat"),
             ("How do I boil an egg?", "Simmer it in water for about nine minutes.", "no"),
             ("Describe the sea in one sentence.", "The sea is a restless blue plain under the wind.", "wet")]


def preference_rows(path: Path, count: int = 8) -> Path:
    """Both row formats swift rlhf takes: messages + rejected_response, and prompt / chosen / rejected."""
    rows = []
    for i, (question, good, bad) in enumerate(QUESTIONS[:count]):
        if i % 2:
            rows.append({"prompt": question, "chosen": good, "rejected": bad})
        else:
            rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": good}],
                         "rejected_response": bad})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _flags(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), "--save", str(out), "--max_length", "96",
            "--log_interval", "1", "--seed", "7", "--lora_dropout", "0", *extra]


def _rows(run_dir: Path) -> list[dict]:
    (log,) = run_dir.glob("**/logging.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ the loss, by hand


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _expected(loss_type: str, beta: float, eps: float, policy, ref, lengths, rpo_alpha, nll) -> float:
    """The mean over pairs of the loss (+ rpo_alpha x nll), in plain floats from the DPO / IPO / cDPO papers."""
    total = 0.0
    for (pc, pr), (rc, rr), (lc, lr) in zip(policy, ref, lengths, strict=True):
        margin = (pc - rc) - (pr - rr)
        if loss_type == "sigmoid":
            value = -(1 - eps) * _logsigmoid(beta * margin) - eps * _logsigmoid(-beta * margin)
        elif loss_type == "hinge":
            value = max(0.0, 1 - beta * margin)
        elif loss_type == "ipo":  # per-token averaged log-ratios, as trl
            value = ((pc - rc) / lc - (pr - rr) / lr - 1 / (2 * beta)) ** 2
        elif loss_type == "robust":
            value = (-(1 - eps) * _logsigmoid(beta * margin) + eps * _logsigmoid(-beta * margin)) / (1 - 2 * eps)
        else:
            raise AssertionError(loss_type)
        total += value
    return total / len(policy) + (rpo_alpha or 0.0) * nll


@pytest.mark.parametrize(("loss_type", "eps", "rpo_alpha"), [
    ("sigmoid", 0.0, None), ("sigmoid", 0.1, None), ("sigmoid", 0.0, 0.5), ("hinge", 0.0, None),
    ("hinge", 0.0, 1.0), ("ipo", 0.0, None), ("ipo", 0.0, 0.3), ("robust", 0.2, None), ("sigmoid", 0.25, 2.0)])
def test_pair_loss_is_the_papers_formula(loss_type, eps, rpo_alpha):
    """Two pairs (4 sequences of 6 positions): per-token log-probabilities in, the mean loss out."""
    import torch

    from swift.megatron.dpo import DpoSettings, pair_loss

    torch.manual_seed(0)
    per_token = torch.rand(4, 6) * 3  # -log p of each position's next token
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0], [0, 0, 1, 1, 0, 0]])
    segments = torch.where(mask > 0, torch.arange(4).unsqueeze(1), -1)
    ref = torch.tensor([-4.0, -9.5, -1.5, -2.0])
    beta = 0.1 if loss_type != "ipo" else 0.5
    settings = DpoSettings(beta=beta, loss_type=loss_type, label_smoothing=eps, rpo_alpha=rpo_alpha)
    total, pairs, logged = pair_loss({"segments": segments, "pairs": 2, "ref_logps": ref}, settings, per_token)

    logp = [-float((per_token[i] * mask[i]).sum()) for i in range(4)]
    lengths = [int(mask[i].sum()) for i in range(4)]
    nll = (-logp[0] - logp[1]) / (lengths[0] + lengths[1])  # the chosen answers' mean NLL per token
    expected = _expected(loss_type, beta, eps, [(logp[0], logp[2]), (logp[1], logp[3])],
                         [(-4.0, -1.5), (-9.5, -2.0)], [(lengths[0], lengths[2]), (lengths[1], lengths[3])],
                         rpo_alpha, nll)
    assert int(pairs) == 2
    assert abs(float(total) / 2 - expected) < 1e-5, (float(total) / 2, expected)
    assert abs(float(logged["lm loss"][0]) / float(logged["lm loss"][1]) - expected) < 1e-5


def test_equal_policy_and_reference_give_ln2_and_zero_rewards():
    import torch

    from swift.megatron.dpo import DpoSettings, dpo_loss

    logps = torch.tensor([-12.0, -3.0, -40.0])
    losses, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1, DpoSettings())
    assert torch.allclose(losses, torch.full((3,), LN2))
    assert chosen.abs().max() == 0
    assert rejected.abs().max() == 0
    # reference_free: the reference gives every answer the same probability, so the margin is the policy's own
    free, chosen, _ = dpo_loss(torch.tensor([-2.0]), torch.tensor([-5.0]), None, None,
                               DpoSettings(beta=0.5, reference_free=True))
    assert abs(float(free[0]) + _logsigmoid(0.5 * 3.0)) < 1e-6
    assert abs(float(chosen[0]) + 1.0) < 1e-6
    # js_divergence: the margin of logsigmoid(log-ratio)s
    js, _, _ = dpo_loss(torch.tensor([-2.0]), torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-4.0]),
                        DpoSettings(f_divergence_type="js_divergence"))
    margin = _logsigmoid(1.0) - _logsigmoid(-1.0)
    assert abs(float(js[0]) + _logsigmoid(0.1 * margin)) < 1e-6


# ------------------------------------------------------------------------------------------ training runs


@pytest.mark.parametrize("train_type", ["full", "lora"])
def test_step_one_is_ln2_and_metrics_are_trls(tiny_untied_dir, tmp_path, train_type):
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl")
    result = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "run", "--train_type", train_type, "--train_iters",
                              "2", "--micro_batch_size", "2", "--global_batch_size", "4", "--lr", "1e-3"))
    rows = _rows(result.run_dir)
    assert abs(rows[0]["loss"] - LN2) < 1e-6
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):
        assert key in rows[0], key
        assert key in rows[1], key
    assert rows[0]["rewards/margins"] == 0
    assert rows[1]["rewards/margins"] != 0
    assert rows[0]["logps/chosen"] < 0
    meta = json.loads((result.last_checkpoint / "swift_mcore.json").read_text())
    assert meta["dpo_reference"] == ({"adapter_off": True} if train_type == "lora" else {"model": str(tiny_untied_dir)})


# two processes take 35-50 s each on 2 cores: all -m slow (the acceptance check runs full TP=2 too)
PARALLEL = [pytest.param("full", "--tensor_model_parallel_size", id="full-tp2", marks=pytest.mark.slow),
            pytest.param("full", "--pipeline_model_parallel_size", id="full-pp2", marks=pytest.mark.slow),
            pytest.param("lora", "--tensor_model_parallel_size", id="lora-tp2", marks=pytest.mark.slow),
            pytest.param("lora", "--pipeline_model_parallel_size", id="lora-pp2", marks=pytest.mark.slow),
            pytest.param("full", None, id="full-dp2", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("train_type", "layout"), PARALLEL)
def test_parallel_layouts_give_the_one_process_losses(tiny_untied_dir, tmp_path, train_type, layout):
    """Three steps in fp32: TP=2 splits the vocabulary (the answers' log-probabilities are summed over ranks by
    mcore's cross-entropy), PP=2 runs the reference pass through the pipeline as well, DP=2 reduces the metrics."""
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl")
    flags = ["--train_type", train_type, "--train_iters", "3", "--micro_batch_size", "1", "--global_batch_size", "2",
             "--lr", "1e-2" if train_type == "lora" else "1e-3", "--bf16", "false"]
    rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "one", *flags))
    extra = [layout, "2"] if layout else []
    check(run_megatron("rlhf", *_flags(tiny_untied_dir, data, tmp_path / "two", *flags, *extra), nproc=2))
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert sorted(two) == [1, 2, 3]
    assert abs(one[1] - LN2) < 1e-6
    assert one[3] != one[1]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one, two)
    metrics_one, metrics_two = _rows(tmp_path / "one")[-1], _rows(tmp_path / "two")[-1]
    assert abs(metrics_one["rewards/margins"] - metrics_two["rewards/margins"]) < 1e-4


# the two trainers' optimizers made the same: Adam(0.9, 0.999), no weight decay, clipping at 1, a constant rate
SAME_OPTIMIZER_MCORE = ("--adam_beta2", "0.999", "--weight_decay", "0", "--clip_grad", "1.0", "--lr", "1e-4",
                        "--lr_decay_style", "constant")
SAME_OPTIMIZER_HF = ("--learning_rate", "1e-4", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
                     "--weight_decay", "0", "--max_grad_norm", "1.0", "--adam_beta2", "0.999")


@pytest.mark.parametrize("loss_flags", [pytest.param((), id="sigmoid"),
                                        pytest.param(("--loss_type", "ipo", "--rpo_alpha", "0.5"), id="ipo-rpo")])
def test_losses_are_swift_rlhfs_on_the_same_rows(tiny_untied_dir, tmp_path, loss_flags):
    """Full training, one global batch of every row (so neither trainer's row order matters), three steps.
    Measured: loss, margins and logps agree within 4e-7 relative at every step (sigmoid: 6e-8 absolute), float
    summation order being the only difference; 1e-5 relative leaves room for another BLAS while any change of the
    objective (beta, the answer mask, the reference, the rpo term) moves the logps or step 2 by far more."""
    from swift.megatron import rlhf_main
    from swift.train import rlhf_main as hf_rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl", count=4)
    rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "mcore", "--train_type", "full", "--train_iters", "3",
                     "--micro_batch_size", "4", "--global_batch_size", "4", *SAME_OPTIMIZER_MCORE, *loss_flags))
    hf_rlhf_main(["--rlhf_type", "dpo", "--model", str(tiny_untied_dir), "--dataset", str(data), "--output_dir",
                  str(tmp_path / "hf"), "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false",
                  "--logging_steps", "1", "--max_steps", "3", "--train_type", "full",
                  "--per_device_train_batch_size", "4", "--max_length", "96", "--split_dataset_ratio", "0",
                  "--seed", "7", "--beta", "0.1", *SAME_OPTIMIZER_HF, *loss_flags])
    ours, theirs = _rows(tmp_path / "mcore"), [r for r in _rows(tmp_path / "hf") if "loss" in r]
    assert [r["step"] for r in theirs] == [1, 2, 3]
    for mine, reference in zip(ours, theirs, strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert abs(mine[key] - reference[key]) < 1e-5 * max(1.0, abs(reference[key])), (key, mine, reference)


def test_packing_gives_the_unpacked_losses(tiny_untied_dir, tmp_path):
    """Every pair in one packed row (each sequence attending to itself) against one unpacked micro-batch of all."""
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl", count=4)
    common = ("--train_type", "full", "--train_iters", "2", "--lr", "1e-3", "--max_length", "512")
    packed = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "packed", *common, "--packing", "true",
                              "--micro_batch_size", "1", "--global_batch_size", "1"))
    plain = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "plain", *common, "--micro_batch_size", "4",
                             "--global_batch_size", "4"))
    assert json.loads((packed.run_dir / "args.json").read_text())["train_rows"] == 1
    for step in (1, 2):
        assert abs(packed.losses[step] - plain.losses[step]) < 1e-5
        assert abs(packed.metrics[step]["logps/chosen"] - plain.metrics[step]["logps/chosen"]) < 1e-3


def test_megatron_sft_on_a_preference_file_trains_the_chosen_side(tiny_untied_dir, tmp_path):
    """As swift sft does (the template's chosen_only): the loss of the chosen conversations alone."""
    from swift.megatron import sft_main

    data = preference_rows(tmp_path / "pref.jsonl", count=4)
    chosen = tmp_path / "chosen.jsonl"
    chosen.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                       {"role": "assistant", "content": good}]}) + "\n"
                              for q, good, _ in QUESTIONS[:4]))
    common = ("--train_type", "full", "--train_iters", "1", "--micro_batch_size", "4", "--global_batch_size", "4")
    pairs = sft_main(_flags(tiny_untied_dir, data, tmp_path / "pairs", *common))
    plain = sft_main(_flags(tiny_untied_dir, chosen, tmp_path / "plain", *common))
    assert abs(pairs.losses[1] - plain.losses[1]) < 1e-6


def test_cached_rlhf_rows_train_as_their_rows(tiny_untied_dir, tmp_path):
    """`swift export --to_cached_dataset --template_mode rlhf` rows give the losses of the rows they came from (one
    global batch of all rows, so the order does not matter), here with the steps collated by a DataLoader worker
    and --group_by_length too."""
    from swift.megatron import rlhf_main
    from swift.train import export_main

    data = preference_rows(tmp_path / "pref.jsonl", count=4)
    export_main(["--model", str(tiny_untied_dir), "--dataset", str(data), "--to_cached_dataset", "true",
                 "--template_mode", "rlhf", "--max_length", "96", "--output_dir", str(tmp_path / "cached")])
    common = ("--train_type", "lora", "--train_iters", "2", "--micro_batch_size", "2", "--global_batch_size", "4",
              "--lr", "1e-2")
    fresh = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "fresh", *common))
    flags = _flags(tiny_untied_dir, data, tmp_path / "cached-run", *common, "--dataloader_num_workers", "1",
                   "--group_by_length", "true", "--cached_dataset", str(tmp_path / "cached"))
    flags.remove("--dataset")
    flags.remove(str(data))
    cached = rlhf_main(flags)
    for step in (1, 2):
        assert abs(cached.losses[step] - fresh.losses[step]) < 1e-6, (cached.losses, fresh.losses)


@pytest.mark.parametrize("train_type", ["full", "lora"])
def test_resuming_keeps_the_reference(tiny_untied_dir, tmp_path, train_type):
    """--load of a DPO checkpoint (not --finetune) keeps the run's reference (recorded as dpo_reference: the HF
    model for full training, not the checkpoint's trained weights; the base for LoRA) and repeats the losses."""
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl")
    common = ("--train_type", train_type, "--train_iters", "4", "--save_interval", "2", "--micro_batch_size", "1",
              "--global_batch_size", "2", "--lr", "1e-3")
    whole = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "whole", *common))
    resumed = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "resumed", *common, "--load",
                               str(whole.run_dir / "iter_0000002")))
    assert sorted(resumed.losses) == [3, 4]
    for step in (3, 4):
        assert abs(resumed.losses[step] - whole.losses[step]) < 1e-6


def test_the_model_learns_the_preferences_and_exports_as_sfts(tiny_untied_dir, tmp_path):
    """12 steps over 4 pairs: the chosen answers' reward margin grows and every pair ends up ranked right; the
    checkpoint converts to HF with megatron export (the --save_safetensors copy's weights) and serves in
    swift infer."""
    import torch
    from safetensors.torch import load_file

    from swift.infer import infer_main
    from swift.megatron import export_main, rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl", count=4)
    result = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "run", "--train_type", "full", "--train_iters", "12",
                              "--micro_batch_size", "4", "--global_batch_size", "4", "--lr", "2e-3",
                              "--lr_decay_style", "constant", "--save_interval", "12", "--save_safetensors", "true"))
    margins = [result.metrics[s]["rewards/margins"] for s in sorted(result.metrics)]
    accuracies = [result.metrics[s]["rewards/accuracies"] for s in sorted(result.metrics)]
    assert margins[-1] > margins[1] > 0
    assert accuracies[-1] == 1.0
    assert result.losses[12] < result.losses[1] - 0.1
    export_main(["--mcore_model", str(result.run_dir), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    exported, copy = load_file(tmp_path / "hf" / "model.safetensors"), load_file(
        result.run_dir / "checkpoint-12" / "model.safetensors")
    assert all(torch.equal(exported[k], copy[k]) for k in exported)
    start = load_file(tiny_untied_dir / "model.safetensors")
    assert any(not torch.equal(exported[k], start[k]) for k in exported)
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hello politely."}]}) + "\n")
    assert infer_main(["--model", str(result.run_dir / "checkpoint-12"), "--val_dataset", str(queries),
                       "--max_new_tokens", "4", "--result_path", str(tmp_path / "out.jsonl")]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["response"]


def test_validation_reports_trls_eval_metrics(tiny_untied_dir, tmp_path):
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl")
    result = rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "run", "--train_type", "lora", "--train_iters", "2",
                              "--micro_batch_size", "1", "--global_batch_size", "2", "--lr", "1e-2",
                              "--val_dataset", str(preference_rows(tmp_path / "val.jsonl", count=2)),
                              "--eval_steps", "2"))
    (evaluation,) = [row for row in _rows(result.run_dir) if "eval_loss" in row]
    assert evaluation["step"] == 2
    assert "eval_rewards/accuracies" in evaluation
    assert "eval_logps/chosen" in evaluation
    assert evaluation["eval_loss"] < LN2  # the pairs are alike: one update already prefers the polite answers


# ------------------------------------------------------------------------------------------ refused before loading


def test_a_row_without_a_rejected_answer_is_named_before_training(tiny_untied_dir, tmp_path):
    from swift.core import DatasetRowError
    from swift.megatron import rlhf_main

    data = preference_rows(tmp_path / "pref.jsonl", count=3)
    with data.open("a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello"}]}) + "\n")
    with pytest.raises(DatasetRowError) as caught:
        rlhf_main(_flags(tiny_untied_dir, data, tmp_path / "run", "--train_iters", "1"))
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(data), 4, "rejected_response")
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(("argv", "needle"), [
    (["--loss_type", "bco_pair"], "--loss_type bco_pair is not supported"),
    (["--loss_type", "sft"], "pass --rpo_alpha"),
    (["--loss_type", "cross_entropy"], "megatron rlhf --rlhf_type dpo takes sigmoid"),
    (["--loss_type", "hinge", "--label_smoothing", "0.1"], "that loss has no label smoothing"),
    (["--label_smoothing", "0.6"], "--label_smoothing 0.6: must be within [0, 0.5)"),
    (["--beta", "0"], "--beta 0.0: must be above 0"),
    (["--f_divergence_type", "js_divergence", "--loss_type", "apo_zero"], "--f_divergence_type js_divergence"),
    (["--ref_model", "a", "--ref_load", "b"], "pass one"),
    (["--reference_free", "true", "--ref_model", "a"], "uses no reference model"),
    (["--loss_scale", "all"], "--loss_scale all"),
    (["--truncation_strategy", "left"], "--truncation_strategy left"),
    (["--task_type", "seq_cls", "--num_labels", "2"], "megatron rlhf trains causal LMs"),
    (["--rlhf_type", "kto"], "--rlhf_type"),
    (["--ref_adapters", "x"], "ref_adapters"),
])
def test_flags_dpo_cannot_honour_are_refused_by_name(tmp_path, argv, needle):
    from swift.core import ConfigError
    from swift.megatron import rlhf_main

    with pytest.raises(ConfigError) as caught:
        rlhf_main(["--model", str(tmp_path), "--dataset", str(tmp_path / "x.jsonl"), *argv])
    assert needle in str(caught.value), str(caught.value)


def test_help_offers_dpo_and_grpo_and_sft_has_no_rlhf_flags():
    from swift.core import ConfigError
    from swift.megatron import sft_main

    result = run_megatron("rlhf", "--help")
    assert result.returncode == 0
    assert "--rlhf_type {dpo,grpo}" in result.stdout
    assert "--num_generations" in result.stdout
    assert "--beta" in result.stdout
    assert "--ref_load" in result.stdout
    with pytest.raises(ConfigError, match="--beta"):
        sft_main(["--model", "m", "--dataset", "d", "--beta", "0.2"])
