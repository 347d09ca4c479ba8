"""Distributed strategies against DDP: tokens/s, peak memory per rank and the loss gap to DDP, same global batch.

    .venv/bin/python benchmarks/distributed.py [--nproc 2] [--steps 20] [--model ID] [--strategies ddp fsdp2 zero2 zero3]
                                               [--train_type full] [--bf16 true]

Each strategy is one `NPROC_PER_NODE=N swift sft` run (swift starts torchrun) on the same seeded synthetic chat rows
(max_length 512, per-device batch 4, lr 1e-5). Read back from each run: logging.jsonl (real tokens/s of the last half
of the steps, summed over ranks; `cuda_max_allocated_gib` of rank 0 on GPUs, peak RSS on CPU), env.json (the strategy
and wrapper really used). Made for a GPU machine (nccl, bf16); on CPU it runs too, slowly, with gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = {"ddp": [], "fsdp2": ["--fsdp", "fsdp2"], "fsdp2_offload": ["--fsdp", "fsdp2_offload"],
         "zero1": ["--deepspeed", "zero1"], "zero2": ["--deepspeed", "zero2"], "zero3": ["--deepspeed", "zero3"],
         "zero3_offload": ["--deepspeed", "zero3_offload"]}
WORDS = ["model", "data", "train", "token", "layer", "batch", "loss", "value", "river", "stone", "light", "music", "garden", "window", "paper"]


def write_rows(path: Path, n: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 300)))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Write about {rng.choice(WORDS)} #{i}."},
                                             {"role": "assistant", "content": answer}]}) + "\n")


def run(strategy: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    swift = str(Path(sys.executable).parent / "swift")
    cmd = [swift, "sft", "--model", args.model, "--dataset", str(data), "--train_type", args.train_type,
           "--max_steps", str(args.steps), "--save_steps", str(10 * args.steps), "--logging_steps", "1",
           "--per_device_train_batch_size", "4", "--max_length", "512", "--learning_rate", "1e-5",
           "--report_to", "none", "--bf16", args.bf16, "--output_dir", str(out), *FLAGS[strategy]]
    env = os.environ | {"NPROC_PER_NODE": str(args.nproc)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"strategy": strategy, "error": result.stderr[-800:]}
    run_dir = next(out.glob("v*-*"))
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    late = steps[len(steps) // 2:]
    env_json = json.loads((run_dir / "env.json").read_text())
    memory = max(r.get("cuda_max_allocated_gib", r.get("peak_rss_gib", 0.0)) for r in rows)
    return {"strategy": strategy, "used": env_json["strategy"], "wrapper": env_json["model_wrapper"].split(".")[-1],
            # logging.jsonl is rank 0's: its tokens/s times the ranks is the run's (ranks see equal batches)
            "tokens_per_s": args.nproc * sum(r["tokens_per_second"] for r in late) / len(late),
            "memory_gib": memory, "losses": {r["step"]: r["loss"] for r in steps}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--train_type", default="full")
    parser.add_argument("--bf16", default="true")
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp2", "zero2", "zero3"], choices=list(FLAGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, 64 * args.nproc * 4)
        results = [run(s, args, data, Path(tmp) / s) for s in args.strategies]
    base = next((r for r in results if r["strategy"] == "ddp" and "error" not in r), None)
    print(f"| strategy ({args.nproc} processes, {args.train_type}, bf16 {args.bf16}) | wrapper | tokens/s | vs DDP "
          "| peak memory rank 0 (GiB) | max loss gap to DDP |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['strategy']} | failed: {r['error'][-200:]!r} | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        gap = max(abs(r["losses"][s] - base["losses"][s]) for s in base["losses"]) if base else float("nan")
        print(f"| {r['used']} | {r['wrapper']} | {r['tokens_per_s']:.0f} | {ratio} | {r['memory_gib']:.2f} "
              f"| {gap:.1e} |")


if __name__ == "__main__":
    main()
