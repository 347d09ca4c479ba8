"""Entry points of swift infer|deploy|eval|rollout|sample: commands not built yet say so, and stop at once."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import BIN, HEAVY, run_python


@pytest.mark.parametrize("command", ["rollout", "sample"])
def test_an_unbuilt_command_says_so_atop_its_help_and_stops_right_after_parsing(command):
    swift = str(BIN / "swift")
    shown = subprocess.run([swift, command, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "Not built yet" in "\n".join(shown.stdout.splitlines()[:3])
    refused = subprocess.run([swift, command, "--model", "m"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0
    assert "does not run yet" in refused.stderr
    assert "Traceback" not in refused.stderr
    # in process: refused after parsing, before anything heavy is imported
    done = run_python(f"import sys\nfrom swift.infer.cli import {command}_main\n"
                      f"try:\n    {command}_main(['--model', 'm', '--infer_backend', 'vllm'])\n"
                      f"except Exception as e:\n    print(type(e).__name__)\n"
                      f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert done.stdout.split() == ["NotImplementedYetError", "[]"], done.stderr
