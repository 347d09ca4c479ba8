"""Entry points of swift infer|deploy|eval|rollout|sample: commands not built yet say so, and stop at once."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import BIN, HEAVY, run_python


@pytest.mark.parametrize(("command", "bad", "says"), [
    ("rollout", ["--infer_backend", "pt"], "--infer_backend"),
    ("rollout", ["--vllm_use_async_engine", "true"], "--vllm_use_async_engine"),
    ("sample", ["--dataset", "d.jsonl", "--prm_model", "x/y"], "--prm_model"),
    ("sample", ["--dataset", "d.jsonl", "--sampler_type", "mcts"], "not built yet"),
    ("sample", ["--dataset", "d.jsonl", "--orm_model", "nonesuch"], "--orm_model nonesuch"),
    ("sample", ["--dataset", "d.jsonl", "--output_file", "a/b.jsonl"], "--output_file"),
    ("sample", ["--dataset", "d.jsonl", "--infer_backend", "vllm", "--sampler_engine", "lmdeploy"],
     "--infer_backend vllm and --sampler_engine lmdeploy: give one engine"),
    ("sample", ["--dataset", "d.jsonl", "--result_path", "r.jsonl"], "--result_path: swift sample writes"),
])
def test_rollout_and_sample_refuse_bad_flags_before_anything_heavy_loads(command, bad, says):
    refused = subprocess.run([str(BIN / "swift"), command, "--model", "m", *bad], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0
    assert says in refused.stderr
    assert "Traceback" not in refused.stderr
    done = run_python(f"import sys\nfrom swift.infer.cli import {command}_main\n"
                      f"try:\n    {command}_main(['--model', 'm', *{bad!r}])\n"
                      f"except BaseException as e:\n    print(type(e).__name__)\n"
                      f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert done.stdout.split()[-1] == "[]", done.stderr
