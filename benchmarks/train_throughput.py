"""LoRA SFT throughput: `swift sft` against a plain transformers.Trainer + peft loop on the same data.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--rows 400] [--msswift /path/to/venv/bin/swift]

Same model (the packaged SmolLM2-135M-Instruct), same rows (400 chat rows of 30-400 tokens, seeded), batch 4,
max_length 512, LoRA r=8/alpha=32 on all linear layers, lr 1e-4, same seed. Each variant runs in its own process so
that peak RSS is its own. Printed per variant: seconds per step, real (non-padding) tokens per second, peak RSS, the
final loss, and the ratio of tokens/s to the plain Trainer baseline (b).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WORDS = [
    "model",
    "data",
    "train",
    "token",
    "layer",
    "batch",
    "loss",
    "value",
    "river",
    "stone",
    "light",
    "music",
    "garden",
    "window",
    "paper",
    "number",
    "city",
    "forest",
    "cloud",
    "engine",
    "signal",
    "memory",
    "answer",
    "question",
    "story",
    "market",
    "system",
]


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.randint(20, 300)  # ~30-400 tokens with the chat template around them
        answer = " ".join(rng.choice(WORDS) for _ in range(words))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Write note {i} about {rng.choice(WORDS)}."},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


BASELINE = r"""
import json, resource, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(l) for l in open(data)]
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
def collate(batch):  # pad to the longest row of the batch
    width = max(len(r["input_ids"]) for r in batch)
    ids = [r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]
    labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in batch]
    mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
class Counting(Trainer):
    tokens = 0
    def training_step(self, model, inputs, num_items_in_batch=None):
        Counting.tokens += int(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, num_items_in_batch)
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to=[], seed=42, use_cpu=True,
                         remove_unused_columns=False, disable_tqdm=True)
trainer = Counting(model=model, args=args, train_dataset=rows, data_collator=collate)
result = trainer.train()
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
print(json.dumps({"runtime": result.metrics["train_runtime"], "tokens": Counting.tokens, "losses": losses,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def run_baseline(model_dir: Path, encoded: Path, work: Path, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, str(model_dir), str(encoded), str(work / "b"), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_swift(data: Path, work: Path, steps: int, name: str, *extra: str, swift: str | None = None) -> dict:
    swift = swift or str(Path(sys.executable).parent / "swift")
    out_dir = work / name
    cmd = [
        swift,
        "sft",
        "--model",
        MODEL,
        "--dataset",
        str(data),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "512",
        "--lora_rank",
        "8",
        "--lora_alpha",
        "32",
        "--learning_rate",
        "1e-4",
        "--logging_steps",
        "1",
        "--save_steps",
        str(10 * steps),
        "--report_to",
        "none",
        "--output_dir",
        str(out_dir),
        "--dataset_num_proc",
        "1",
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{err[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # the largest child so far
    log = next(out_dir.rglob("logging.jsonl"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    end = next(r for r in reversed(rows) if "train_runtime" in r)  # the very last row names the checkpoints
    return {
        "runtime": end["train_runtime"],
        "tokens": end["tokens_seen"],
        "wall": wall,
        "losses": [r["loss"] for r in rows if "loss" in r],
        "peak_rss_gib": end.get("peak_rss_gib", peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--curves", help="write the loss curves (PNG) here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from swift.core import get_model_tokenizer, get_template

    _, tokenizer = get_model_tokenizer(MODEL, load_model=False)
    model_dir = tokenizer.swift_model_info.model_dir
    if not (model_dir / "model.safetensors").is_file():
        get_model_tokenizer(MODEL)  # convert the packaged weights once, outside the timed runs
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    rows = make_rows(args.rows, seed=0)
    data = work / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    template = get_template(None, tokenizer, max_length=512, truncation_strategy="right")
    encoded = work / "encoded.jsonl"
    encoded.write_text("\n".join(json.dumps(template.encode(r)) for r in rows))
    lengths = [len(template.encode(r)["input_ids"]) for r in rows]
    print(
        f"data: {len(rows)} rows, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
        f"{args.steps} steps of batch 4; CPU threads {os.cpu_count()}"
    )

    nogc = ("--gradient_checkpointing", "false")
    variants = {
        "b: HF Trainer + peft, fp32, pad to longest": lambda: run_baseline(model_dir, encoded, work, args.steps),
        "a: swift sft defaults": lambda: run_swift(data, work, args.steps, "a"),
        "a: ... --gradient_checkpointing true": lambda: run_swift(data, work, args.steps, "gc",
                                                               "--gradient_checkpointing", "true"),
        "a: ... --packing true": lambda: run_swift(data, work, args.steps, "pk", "--packing", "true", *nogc),
        "a: ... --bf16 false": lambda: run_swift(data, work, args.steps, "pf32", "--bf16", "false", *nogc),
        # (b)'s schedule and row order (linear, no warm-up, rows in file order under the same sampler seed): what is
        # left of the loss gap is bf16 (first) or the LoRA init and the numerics (second)
        "a: ... (b)'s schedule and order": lambda: run_swift(data, work, args.steps, "same", *SAME_AS_BASELINE),
        "a: ... (b)'s schedule and order, --bf16 false": lambda: run_swift(data, work, args.steps, "same32",
                                                                          *SAME_AS_BASELINE, "--bf16", "false"),
        "a: ... --padding_free false": lambda: run_swift(data, work, args.steps, "pad", "--padding_free", "false",
                                                         *nogc),
    }
    results = {}
    for name, run in variants.items():
        if args.only and not any(o in name for o in args.only):
            continue
        result = run()
        result["tokens_per_second"] = result["tokens"] / result["runtime"]
        result["seconds_per_step"] = result["runtime"] / args.steps
        results[name] = result
        print(
            f"{name:48s} {result['seconds_per_step']:6.2f} s/step {result['tokens_per_second']:7.1f} tokens/s "
            f"peak RSS {result['peak_rss_gib']:.2f} GiB  final loss {result['losses'][-1]:.4f}",
            flush=True,
        )
    base = next((r for n, r in results.items() if n.startswith("b:")), None)
    peak = bf16_matmul_tflops()
    print(f"\nthis CPU's bf16 matmul peak (2048^3, measured now): {peak:.2f} TFLOPS; a LoRA step costs "
          f"~{GFLOP_PER_TOKEN} GFLOP per token (0.85 with checkpointing)")
    for name, result in results.items():
        ratio = result["tokens_per_second"] / base["tokens_per_second"] if base else float("nan")
        limit = peak * 1e3 / GFLOP_PER_TOKEN
        print(f"  {name:48s} {ratio:.2f}x of (b); {100 * result['tokens_per_second'] / limit:.1f} % of the "
              f"machine's limit ({limit:.0f} tokens/s)")
    if args.curves:
        write_curves(results, Path(args.curves))


SAME_AS_BASELINE = ("--lr_scheduler_type", "linear", "--warmup_ratio", "0", "--dataset_shuffle", "false")
GFLOP_PER_TOKEN = 0.57  # SmolLM2-135M LoRA forward + backward (2N + 2N for activations' grads), per token


def bf16_matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def write_curves(results: dict, out: Path) -> None:
    """Loss per step of each variant, side by side (one panel each plus an overlay), and the largest relative gap
    of each curve to the baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((r["losses"] for n, r in results.items() if n.startswith("b:")), None)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, result in results.items():
        axes[0].plot(range(1, len(result["losses"]) + 1), result["losses"], label=name, linewidth=1)
        if base is not None and not name.startswith("b:"):
            gaps = [(a - b) / b for a, b in zip(result["losses"], base, strict=False)]
            axes[1].plot(range(1, len(gaps) + 1), [100 * g for g in gaps], label=name, linewidth=1)
            tail = gaps[len(gaps) // 2:]
            print(f"  {name:48s} loss vs (b): max |gap| {100 * max(map(abs, gaps)):.2f} %, mean gap over the "
                  f"second half {100 * sum(tail) / len(tail):+.2f} %")
    axes[0].set(xlabel="step", ylabel="training loss", title="loss per step")
    axes[1].set(xlabel="step", ylabel="% gap to (b)", title="relative gap to the fp32 HF baseline")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"curves: {out}")


if __name__ == "__main__":
    main()
