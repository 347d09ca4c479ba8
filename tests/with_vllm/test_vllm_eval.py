"""`swift eval --infer_backend vllm` from .venv-vllm: our server on vLLM in process, EvalScope in its child, on the
MCQ rows that ship in tests/fixtures/data/mcq."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, SMOLLM2
from tests.with_vllm.conftest import EAGER, VLLM_SWIFT


@pytest.mark.slow  # 45 s: out of the default suite's 20-minute budget
def test_swift_eval_scores_a_vllm_served_model(vllm_env, tmp_path):
    mcq = ROOT / "tests" / "fixtures" / "data" / "mcq"
    done = subprocess.run(
        [str(VLLM_SWIFT), "eval", "--model", SMOLLM2, "--infer_backend", "vllm", *EAGER, "--eval_dataset",
         "general_mcq", "--dataset_args", json.dumps({"general_mcq": {"local_path": str(mcq),
                                                                      "subset_list": ["capitals"]}}),
         "--eval_limit", "4", "--eval_output_dir", str(tmp_path)], capture_output=True, text=True, env=vllm_env,
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = tmp_path.glob("*/results.json")
    (row,) = json.loads(results.read_text())
    assert (row["dataset"], row["subset"], row["num"]) == ("general_mcq", "capitals", 4)
    assert 0.0 <= row["score"] <= 1.0
    assert "general_mcq | capitals" in done.stdout
