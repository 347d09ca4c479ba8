"""Launching `swift sft` the way users do (one process, NPROC_PER_NODE, two nodes) and reading what runs leave."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import BIN, ROOT

TIMEOUT = 900  # seconds per launch; a 6-step run takes 10-20 s on two quiet cores, minutes on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment of launched runs: one OpenMP thread per process (2 processes on 2 cores), the DeepSpeed op
    build cached in the checkout's ignored .swift-cache (built once, ~1-2 min), the venv's ninja first on PATH."""
    return os.environ | {
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "TORCH_EXTENSIONS_DIR": str(ROOT / ".swift-cache" / "torch_extensions"),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }


def baseline_flags(model: Path, data: Path, steps: int, save: int) -> list[str]:
    """fp32 (bf16 rounds each rank's partial gradients on its own), LoRA without dropout (each layout draws other
    masks), one log line per step."""
    return ["--model", str(model), "--dataset", str(data), "--max_steps", str(steps), "--save_steps", str(save),
            "--logging_steps", "1", "--learning_rate", "5e-3", "--max_length", "64", "--seed", "7",
            "--report_to", "none", "--bf16", "false", "--lora_dropout", "0", "--lora_rank", "4"]


def run_swift(flags: list[str], *, nproc: int = 1, env: dict[str, str] | None = None) -> str:
    """`swift sft flags` as one process or, with nproc > 1, as NPROC_PER_NODE=nproc (swift starts torchrun)."""
    extra = {"NPROC_PER_NODE": str(nproc)} if nproc > 1 else {}
    result = subprocess.run([str(BIN / "swift"), "sft", *flags], capture_output=True, text=True,
                            env=child_env() | extra | (env or {}), timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stderr


def run_two_nodes(flags: list[str]) -> None:
    """Two simulated nodes of one process each: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=127.0.0.1, as on a cluster."""
    port = str(free_port())
    procs = [subprocess.Popen([str(BIN / "swift"), "sft", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=child_env() | {"NNODES": "2", "NODE_RANK": str(rank), "NPROC_PER_NODE": "1",
                                                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for rank in range(2)]
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + "\n----\n" + outputs[1][-3000:]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {r["step"]: float(r["loss"]) for r in rows if "loss" in r}


def read_env(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "env.json").read_text())


def logits_of_checkpoint(checkpoint: Path):
    """Logits of a checkpoint loaded by plain transformers (full weights) or plain PEFT (an adapter)."""
    import torch
    from transformers import AutoModelForCausalLM

    if (checkpoint / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(torch.arange(1, 33)[None]).logits


__all__ = ["baseline_flags", "child_env", "free_port", "logits_of_checkpoint", "losses", "read_env",
           "run_swift", "run_two_nodes"]
