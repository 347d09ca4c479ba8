"""`megatron rlhf --rlhf_type grpo --use_vllm true`: vLLM colocated with the mcore trainer (.venv-vllm) rolls out
what the default engine (transformers' generate on the synced HF model) does, before and after an update: greedy
decoding in fp32 on both sides, and a reward that differs by position inside each group (so the groups have a
spread and the LoRA update at lr 1e-2 changes the greedy answers: vLLM's step-2 answers are the updated policy's only
if the weights were synced into it). Also DP=2, one engine per replica."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SMOLLM2
from tests.with_vllm.conftest import EAGER, VLLM_VENV

pytest.importorskip("megatron.core")

PLUGIN = '''
from swift.core import register_reward

@register_reward("by_position")
def by_position(completions, **kwargs):
    return [float(i % 4) for i in range(len(completions))]
'''


def _grpo(data: Path, plugin: Path, out: Path, *extra: str) -> list[str]:
    return [str(VLLM_VENV / "bin" / "megatron"), "rlhf", "--rlhf_type", "grpo", "--model", SMOLLM2,
            "--dataset", str(data), "--train_iters", "2", "--train_type", "lora", "--lora_dropout", "0", "--lr", "1e-2",
            "--max_length", "256", "--log_interval", "1", "--save", str(out), "--global_batch_size", "8",
            "--micro_batch_size", "4", "--num_generations", "4", "--max_completion_length", "16",
            "--temperature", "0", "--external_plugins", str(plugin), "--reward_funcs", "by_position",
            "--log_completions", "true", "--bf16", "false", "--seed", "5", *extra]


def _completions(out: Path) -> dict[int, list[str]]:
    (path,) = out.glob("v*/completions.jsonl")
    by_step: dict[int, list[str]] = {}
    for row in map(json.loads, path.read_text().splitlines()):
        by_step.setdefault(row["step"], []).append(row["completion"])
    return by_step


@pytest.mark.slow  # ~3 runs of 60-90 s on SmolLM2
def test_colocated_vllm_rolls_out_the_synced_policy(vllm_env, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Name a word that rhymes with {w}."}]}
            for w in ("cat", "tree", "light", "stone", "rain", "sun", "blue", "sea")]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    env = dict(vllm_env, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("NPROC_PER_NODE", None)
    runs = {"hf": (), "vllm": ("--use_vllm", "true", *EAGER)}
    for name, extra in runs.items():
        proc = subprocess.run(_grpo(data, plugin, tmp_path / name, *extra), capture_output=True, text=True, env=env,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    hf, vllm = _completions(tmp_path / "hf"), _completions(tmp_path / "vllm")
    assert hf[1] != hf[2]  # the update changed the greedy answers
    assert vllm == hf
    dp = subprocess.run(_grpo(data, plugin, tmp_path / "dp2", "--use_vllm", "true", *EAGER), capture_output=True,
                        text=True, env=dict(env, NPROC_PER_NODE="2"), timeout=900)
    assert dp.returncode == 0, dp.stderr[-3000:]
    assert _completions(tmp_path / "dp2") == hf  # greedy: the replicas' shares are the one-process answers
