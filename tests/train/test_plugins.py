"""`--external_plugins` on sft: a plugin file's loss (`--loss_type`), optimizer (`--optimizer`) and callback
(`--callbacks`) are what the run uses; the built-in `--optimizer muon` trains, checkpoints and resumes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from swift.core import ConfigError
from swift.train import sft_main
from tests.train.test_sft import flags, losses

PLUGIN = textwrap.dedent('''
    import json, os
    import torch
    import torch.nn.functional as F
    from transformers import TrainerCallback
    from swift.train import register_callback, register_loss, register_optimizer

    @register_loss("doubled_ce")
    def doubled_ce(outputs, labels, num_items_in_batch=None):
        logits, targets = outputs.logits[:, :-1].float(), labels[:, 1:]
        total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        return 2 * total / (num_items_in_batch or (targets != -100).sum())

    @register_optimizer("recorded_sgd")
    def recorded_sgd(model, args):
        params = [p for p in model.parameters() if p.requires_grad]
        with open(os.environ["PLUGIN_LOG"], "a") as f:
            f.write(json.dumps({"optimizer_params": len(params), "lr": args.learning_rate}) + "\\n")
        return torch.optim.SGD(params, lr=args.learning_rate)

    @register_callback("step_log")
    class StepLog(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            with open(os.environ["PLUGIN_LOG"], "a") as f:
                f.write(json.dumps({"step": state.global_step}) + "\\n")
''')


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Who is number {i}?"},
                          {"role": "assistant", "content": f"Number {i} is " + "very " * (i % 5) + "fine."}]}
            for i in range(16)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_a_plugins_loss_optimizer_and_callback_are_used(tiny_llama_dir, rows_file, tmp_path, monkeypatch):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    log = tmp_path / "plugin_log.jsonl"
    monkeypatch.setenv("PLUGIN_LOG", str(log))
    common = ("--max_steps", "2", "--dataset_shuffle", "false", "--lora_rank", "4")
    base = losses(sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "base", *common)).run_dir)
    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "plugin", *common, "--external_plugins",
                            str(plugin), "--loss_type", "doubled_ce", "--optimizer", "recorded_sgd", "--callbacks",
                            "step_log"))
    got = losses(result.run_dir)
    assert got[1] == pytest.approx(2 * base[1], rel=1e-4)  # same weights at step 1: the plugin's loss, doubled
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"optimizer_params": 2 * 7 * 2, "lr": 1e-3}  # lora A and B of 7 linears in 2 layers
    assert [line["step"] for line in lines[1:]] == [1, 2]
    args = json.loads((result.last_checkpoint / "args.json").read_text())
    assert (args["optimizer"], args["callbacks"], args["loss_type"]) == ("recorded_sgd", ["step_log"], ["doubled_ce"])


def test_unknown_plugin_names_are_refused_before_loading(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match="--optimizer"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--optimizer", "adamw_but_better"))
    with pytest.raises(ConfigError, match="--loss_type focal: --task_type causal_lm takes cross_entropy"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--loss_type", "focal"))
    with pytest.raises(ConfigError, match="--optimizer muon with --deepspeed / --fsdp"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--optimizer", "muon", "--fsdp", "fsdp2"))
    with pytest.raises(ConfigError, match="--callbacks"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--callbacks", "nothing_registered"))


def test_muon_trains_full_weights_and_resumes_exactly(tiny_llama_dir, rows_file, tmp_path):
    common = ("--max_steps", "4", "--save_steps", "2", "--train_type", "full", "--dataset_shuffle", "false",
              "--optimizer", "muon", "--learning_rate", "2e-3", "--lr_scheduler_type", "linear")
    whole = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "whole", *common))
    reference = losses(whole.run_dir)
    assert reference[4] < reference[1]
    state = torch.load(whole.run_dir / "checkpoint-2" / "optimizer.pt", weights_only=False)
    muon, adamw = state["optimizers"]
    assert muon["param_groups"][0]["use_muon"]
    assert muon["param_groups"][0]["adjust_lr_fn"] == "match_rms_adamw"
    assert not adamw["param_groups"][0]["use_muon"]
    n_muon, n_adamw = len(muon["param_groups"][0]["params"]), len(adamw["param_groups"][0]["params"])
    assert n_muon == 7 * 2  # the linears of 2 layers; embeddings, head and norms with AdamW
    assert n_adamw >= 3
    assert muon["param_groups"][0]["lr"] < 2e-3  # the linear schedule reached Muon's group too

    resumed = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                             str(whole.run_dir / "checkpoint-2")))
    after = losses(resumed.run_dir)
    assert sorted(after) == [3, 4]
    for step, loss in after.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), step
