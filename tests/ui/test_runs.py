"""Runs: own process group, recorded on disk (found again by a fresh lookup), stopped as a group."""

from __future__ import annotations

import json
import os
import sys
import time

from swift.ui.runs import Run, list_runs, start_run


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_finished_run_records_its_log_and_exit_code(tmp_path):
    run = start_run(tmp_path / "runs", "sft", [sys.executable, "-c", "print('hello from the run')"],
                    output_dir=None, cwd=tmp_path)
    assert wait_for(lambda: run.exit_code() is not None)
    assert run.exit_code() == 0
    assert run.status() == "finished"
    assert "hello from the run" in run.log_tail()
    assert json.loads((run.dir / "command.json").read_text())["argv"][-1] == "print('hello from the run')"


def test_stop_ends_the_whole_process_group_and_runs_are_found_again(tmp_path):
    # The run starts a grandchild; Stop must end it too (it is in the run's process group).
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);" \
           " print('started', flush=True); time.sleep(300)"
    run = start_run(tmp_path / "runs", "sft", [sys.executable, "-c", code], output_dir=None, cwd=tmp_path)
    assert wait_for(lambda: "started" in run.log_tail())
    found = list_runs(tmp_path / "runs", "sft")  # as a restarted UI sees it: from disk only
    assert [r.id for r in found] == [run.id]
    again = Run(found[0].dir)
    assert again.is_running()
    pgid = again.pid()
    assert again.stop(grace=5)
    assert wait_for(lambda: not _group_exists(pgid), timeout=10)
    assert again.status() == "stopped"
    assert list_runs(tmp_path / "runs", "rlhf") == []


def test_loss_points_come_from_the_runs_logging_jsonl(tmp_path):
    run = start_run(tmp_path / "runs", "sft", ["true"], output_dir=str(tmp_path / "out"), cwd=tmp_path)
    (tmp_path / "out" / "m" / "v0").mkdir(parents=True)
    rows = [{"step": 1, "loss": 2.5}, {"step": 2, "eval_loss": 9}, {"step": 2, "loss": 2.0}]
    (tmp_path / "out" / "m" / "v0" / "logging.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert run.loss_points() == [(1, 2.5), (2, 2.0)]


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
