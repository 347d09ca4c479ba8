"""ms-swift's trainer flags by their effect: evaluation and checkpoint selection, early stopping, the last batch,
length grouping, checkpointing kwargs, NEFTune and logits_to_keep."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from swift.core import ConfigError
from swift.train import export_main, sft_main
from tests.train.test_sft import flags, losses


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Who is number {i}?"},
                          {"role": "assistant", "content": f"Number {i} is " + "very " * (i % 7) + "fine."}]}
            for i in range(20)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]


def test_best_checkpoint_is_chosen_by_eval_loss_kept_and_recorded(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--max_steps", "6", "--split_dataset_ratio", "0.2",
                            "--eval_strategy", "steps", "--eval_steps", "2", "--save_steps", "2",
                            "--save_total_limit", "1", "--load_best_model_at_end", "true"))
    evals = {r["step"]: r["eval_loss"] for r in log_rows(result.run_dir) if "eval_loss" in r}
    assert sorted(evals) == [2, 4, 6]
    best_step = min(evals, key=evals.get)
    assert result.best_checkpoint == result.run_dir / f"checkpoint-{best_step}"
    assert result.best_checkpoint.is_dir()  # kept although --save_total_limit 1
    final = log_rows(result.run_dir)[-1]
    assert final["best_model_checkpoint"] == str(result.best_checkpoint)
    assert final["best_metric"] == pytest.approx(evals[best_step])
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(result.best_checkpoint)


def test_eval_strategy_no_skips_evaluation_and_steps_needs_a_split(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--max_steps", "2", "--split_dataset_ratio", "0.2",
                            "--eval_strategy", "no", "--eval_steps", "1"))
    assert not [r for r in log_rows(result.run_dir) if "eval_loss" in r]
    with pytest.raises(ConfigError, match="--eval_strategy steps: there is no validation split"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--eval_strategy", "steps"))
    with pytest.raises(ConfigError, match="--save_steps 3 must be a multiple of --eval_steps 2"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--split_dataset_ratio", "0.2", "--eval_steps", "2",
                       "--save_steps", "3", "--load_best_model_at_end", "true"))


def test_early_stop_interval_stops_when_the_metric_stops_improving(tiny_llama_dir, rows_file, tmp_path):
    # Eval loss falls while the model learns; declaring "greater is better" makes every evaluation after the first
    # a non-improvement, so --early_stop_interval 2 stops at the third evaluation (step 3 of 10).
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--max_steps", "10", "--split_dataset_ratio",
                            "0.2", "--eval_steps", "1", "--save_steps", "1", "--early_stop_interval", "2",
                            "--metric_for_best_model", "loss", "--greater_is_better", "true"))
    evals = [r["eval_loss"] for r in log_rows(result.run_dir) if "eval_loss" in r]
    assert evals[1] < evals[0]
    assert evals[2] < evals[0]
    assert max(losses(result.run_dir)) == 3
    assert result.last_checkpoint.name == "checkpoint-3"


def test_dataloader_drop_last_drops_the_short_batch(tiny_llama_dir, rows_file, tmp_path):
    seen = {}
    for drop in ("false", "true"):
        result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / drop, "--num_train_epochs", "1",
                                "--per_device_train_batch_size", "3", "--dataloader_drop_last", drop))
        seen[drop] = (max(losses(result.run_dir)), log_rows(result.run_dir)[-2]["epoch"])
    assert seen["false"][0] == 7  # 20 rows in batches of 3: 6 full and one of 2
    assert seen["true"][0] == 6  # and exactly one epoch, not a seventh step that starts the next
    assert seen["true"][1] == pytest.approx(1.0)


def test_group_by_length_batches_rows_of_similar_length(tiny_llama_dir, rows_file, tmp_path, monkeypatch):
    from swift.train import recipe

    spread: dict[str, list[int]] = {"false": [], "true": []}
    call = recipe.Collator.__call__
    mode = {"now": "false"}

    def recording(self, rows):
        lengths = [len(r["input_ids"]) for r in rows]
        spread[mode["now"]].append(max(lengths) - min(lengths))
        return call(self, rows)

    monkeypatch.setattr(recipe.Collator, "__call__", recording)
    for grouped in ("false", "true"):
        mode["now"] = grouped
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path / grouped, "--num_train_epochs", "1",
                       "--per_device_train_batch_size", "4", "--group_by_length", grouped, "--seed", "3"))
    assert sum(spread["true"]) < sum(spread["false"])
    with pytest.raises(ConfigError, match="--group_by_length with --packing"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--group_by_length", "true", "--packing", "true"))


def test_gradient_checkpointing_kwargs_reach_torch_checkpoint(tiny_llama_dir, rows_file, tmp_path, monkeypatch):
    import transformers.modeling_utils as mu

    calls = []
    original = mu.checkpoint

    def recording(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(function, *args, **kwargs)

    monkeypatch.setattr(mu, "checkpoint", recording)  # what transformers binds into each layer
    sft_main([*flags(tiny_llama_dir, rows_file, tmp_path, "--max_steps", "1"), "--gradient_checkpointing", "true",
              "--gradient_checkpointing_kwargs", '{"use_reentrant": true}'])
    assert calls
    assert set(calls) == {True}


def test_neftune_noise_changes_the_training_loss_only(tiny_llama_dir, rows_file, tmp_path):
    plain = losses(sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "a", "--max_steps", "1")).run_dir)
    noisy = losses(sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "b", "--max_steps", "1",
                                  "--neftune_noise_alpha", "50")).run_dir)
    assert noisy[1] != pytest.approx(plain[1], abs=1e-4)


def test_use_logits_to_keep_false_computes_every_position_with_the_same_loss(tiny_llama_dir, rows_file, tmp_path,
                                                                            monkeypatch):
    from transformers import LlamaForCausalLM

    kept = []
    forward = LlamaForCausalLM.forward

    @functools.wraps(forward)  # keeps the signature that says the model takes logits_to_keep
    def recording(self, *args, **kwargs):
        kept.append(kwargs.get("logits_to_keep", 0))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recording)
    default = losses(sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "a", "--max_steps", "2")).run_dir)
    assert all(isinstance(k, torch.Tensor) for k in kept), kept
    kept.clear()
    full = losses(sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "b", "--max_steps", "2",
                                 "--use_logits_to_keep", "false")).run_dir)
    assert set(kept) == {0}
    assert full == pytest.approx(default, rel=1e-4)


def test_streams_shuffle_within_their_buffer_and_max_epochs_ends_the_run(tiny_llama_dir, rows_file, tmp_path):
    first_eight = tmp_path / "eight.jsonl"
    first_eight.write_text("\n".join(rows_file.read_text().splitlines()[:8]))
    stream = ("--streaming", "true", "--max_steps", "50", "--per_device_train_batch_size", "4")

    def step_one(name: str, *extra: str) -> float:
        return losses(sft_main(flags(tiny_llama_dir, first_eight, tmp_path / name, *stream, "--max_epochs", "1",
                                     *extra)).run_dir)[1]

    in_order = step_one("in_order", "--dataset_shuffle", "false")
    assert step_one("buffer_1", "--shuffle_buffer_size", "1") == pytest.approx(in_order, rel=1e-6)  # a 1-row buffer
    assert step_one("buffer_8", "--shuffle_buffer_size", "8") != pytest.approx(in_order, rel=1e-3)

    result = sft_main(flags(tiny_llama_dir, first_eight, tmp_path / "epochs", *stream, "--max_epochs", "2"))
    assert sorted(losses(result.run_dir)) == [1, 2, 3, 4]  # 8 rows, batch 4: two steps an epoch, not 50
    assert result.last_checkpoint.name == "checkpoint-4"


def test_rope_scaling_trains_and_the_adapter_is_served_and_merged_with_it(tiny_llama_dir, rows_file, tmp_path):
    """--rope_scaling yarn --max_model_len: the trained model ran scaled (its losses differ from the plain run's),
    args.json records it, and serving or merging the adapter loads the base with the same scaling."""
    from swift.core.arguments import parse_args
    from swift.infer.arguments import InferArguments
    from swift.infer.checkpoint import resolve_serve_spec

    positions = json.loads((tiny_llama_dir / "config.json").read_text())["max_position_embeddings"]
    common = flags(tiny_llama_dir, rows_file, tmp_path / "plain", "--max_steps", "2", "--lora_rank", "4")
    plain = sft_main(common)
    scaled = sft_main([*flags(tiny_llama_dir, rows_file, tmp_path / "yarn", "--max_steps", "2", "--lora_rank", "4"),
                       "--rope_scaling", "yarn", "--max_model_len", str(4 * positions)])
    assert log_rows(scaled.run_dir)[0]["loss"] != pytest.approx(log_rows(plain.run_dir)[0]["loss"], abs=1e-6)
    recorded = json.loads((scaled.run_dir / "args.json").read_text())
    assert (recorded["rope_scaling"], recorded["max_model_len"]) == ("yarn", 4 * positions)
    spec = resolve_serve_spec(parse_args(InferArguments, ["--adapters", str(scaled.last_checkpoint)]))
    assert (spec.rope_scaling, spec.max_model_len) == ("yarn", 4 * positions)
    merged = export_main(["--adapters", str(scaled.last_checkpoint), "--merge_lora", "true", "--output_dir",
                          str(tmp_path / "merged")])
    config = json.loads((merged / "config.json").read_text())
    assert config["max_position_embeddings"] == 4 * positions
    assert (config["rope_parameters"]["rope_type"], config["rope_parameters"]["factor"]) == ("yarn", 4.0)


def test_adam_betas_and_epsilon_reach_the_optimizer(tiny_llama_dir, rows_file, tmp_path):
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(rows_file), "--output_dir", str(tmp_path),
                       "--report_to", "none", "--max_steps", "1", "--save_steps", "1", "--adam_beta1", "0.8",
                       "--adam_beta2", "0.95", "--adam_epsilon", "1e-6"])
    group = torch.load(result.last_checkpoint / "optimizer.pt", weights_only=False)["param_groups"][0]
    assert (tuple(group["betas"]), group["eps"]) == ((0.8, 0.95), 1e-6)
