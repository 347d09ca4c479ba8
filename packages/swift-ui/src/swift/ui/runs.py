"""Runs started from the web UI: a process group per run, recorded on disk so a restarted UI finds them again.

Each run is a directory under the runs root: `command.json` (argv, where it writes, when it started), `pid` (the
leader of its process group), `log.txt` (stdout and stderr) and, once it ends, `exit_code`. A small shell wrapper
writes the exit code, so a run that outlives the UI still records how it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Runs the command, then records its exit status; `exec` is avoided so the wrapper survives to write it.
_WRAPPER = 'cd "$1" && shift && "$@"; echo $? > "$RUN_DIR/exit_code"'


@dataclass(frozen=True)
class Run:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    def info(self) -> dict[str, Any]:
        return json.loads((self.dir / "command.json").read_text(encoding="utf-8"))

    def pid(self) -> int | None:
        try:
            return int((self.dir / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def exit_code(self) -> int | None:
        try:
            return int((self.dir / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and self.exit_code() is None and _group_alive(pid)

    def status(self) -> str:
        if self.is_running():
            return "running"
        if (self.dir / "stopped").exists():
            return "stopped"
        code = self.exit_code()
        return "finished" if code == 0 else f"failed (exit {code})" if code is not None else "gone"

    def log_tail(self, max_chars: int = 20000) -> str:
        path = self.dir / "log.txt"
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - max_chars))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> bool:
        """SIGTERM to the whole process group, SIGKILL after `grace` seconds; True when something was running."""
        pid = self.pid()
        if pid is None or not self.is_running():
            return False
        (self.dir / "stopped").touch()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return True

    def loss_points(self) -> list[tuple[int, float]]:
        """(step, loss) from the newest logging.jsonl the run wrote under its output directory."""
        files = [p for root in self.output_roots() for p in root.glob("**/logging.jsonl")]
        started = self.info().get("started", 0)
        files = [p for p in files if p.stat().st_mtime >= started - 1]
        if not files:
            return []
        points = []
        for line in max(files, key=lambda p: p.stat().st_mtime).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if "loss" in row and "step" in row:
                    points.append((int(row["step"]), float(row["loss"])))
        return points

    def output_roots(self) -> list[Path]:
        info = self.info()
        out = info.get("output_dir")
        return [Path(info["cwd"], out)] if out else [Path(info["cwd"], "output")]


def _group_alive(pid: int) -> bool:
    """Whether any process of the group led by `pid` is alive (reaping the leader first if it is our own child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_run(runs_dir: Path, kind: str, argv: list[str], *, output_dir: str | None, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> Run:
    """Start `argv` in its own process group, writing into a new run directory; return at once."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = runs_dir / (f"{kind}-{stamp}" if n == 0 else f"{kind}-{stamp}-{n}")
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    cwd = Path(cwd or Path.cwd()).resolve()
    info = {"kind": kind, "argv": argv, "output_dir": output_dir, "cwd": str(cwd), "started": time.time()}
    (run_dir / "command.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    log = (run_dir / "log.txt").open("ab")
    run_env = {**(env or os.environ), "RUN_DIR": str(run_dir.resolve()), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(["bash", "-c", _WRAPPER, "swift-run", str(cwd), *executable_argv(argv)], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=run_env,
                               start_new_session=True)
    log.close()
    (run_dir / "pid").write_text(str(process.pid), encoding="utf-8")
    return Run(run_dir)


def executable_argv(argv: list[str]) -> list[str]:
    """`swift ...` runs the `swift` of this environment, also when its bin directory is not on PATH."""
    beside = Path(sys.executable).parent / "swift"
    if argv and argv[0] == "swift" and beside.is_file():
        return [str(beside), *argv[1:]]
    return list(argv)


def list_runs(runs_dir: Path, kind: str | None = None) -> list[Run]:
    """Every recorded run, newest first."""
    if not runs_dir.is_dir():
        return []
    runs = [Run(p) for p in runs_dir.iterdir() if (p / "command.json").is_file()]
    if kind is not None:
        runs = [r for r in runs if r.info().get("kind") == kind]
    return sorted(runs, key=lambda r: r.info().get("started", 0), reverse=True)
