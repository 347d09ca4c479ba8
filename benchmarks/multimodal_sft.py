"""Multimodal LoRA SFT throughput: `swift sft` against a plain transformers.Trainer + peft loop on the same rows.

    .venv/bin/python benchmarks/multimodal_sft.py [--steps 12] [--rows 200] [--packing_steps 3] [--repeats 1]
                                                  [--only NAME ...]

Model: a random Qwen2-VL built from a config with its real processor (the `qwen2_vl` processor of
`tests/fixtures/multimodal.py`: the qwen2_5 tokenizer, Qwen2-VL's chat template, CLIP normalisation): text model
4 layers, hidden 512, intermediate 1408, 8 heads, 2 KV heads, tied 151k vocabulary; vision tower at Qwen2-VL-2B's
width (embed_dim 1280, 16 heads, mlp_ratio 4, patch 14, 2 x 2 merge, temporal patch 2) but 4 blocks instead of 32
(CPU time), and a merger out to 512 (Qwen2VLConfig's vision `hidden_size` is the merger's output, which must equal
the text hidden size). Rows: synthetic PNGs of 112-336 px a side (multiples of 28, kept as they are by the
processor: 16-144 image tokens), one per row, a short question and a 10-40 word answer, as an ms-swift jsonl with an
`images` column. Every variant: same rows, batch 4, lr 1e-4, LoRA r=8/alpha=32/dropout 0.05 on the language model's
linear layers (what `swift sft`'s all-linear covers for a VLM: the vision tower and merger stay frozen), seed 42, no
gradient checkpointing, the same cosine schedule, each in its own process, one after the other; `swift sft` runs
with `--dataset_shuffle false` so that the Trainer's seeded sampler gives it the same batches as (b). Printed per
variant: seconds per step, real (non-padding, image tokens included) tokens per second, peak RSS, first/final/mean
loss, and the ratio of tokens/s to the plain Trainer baseline (b). Packing fills 2048-token bins, so its steps
carry ~10x the tokens: it runs --packing_steps steps, and tokens/s is the figure to compare ("after step 1" leaves
out the first step's warm-up). On a shared machine, --repeats N runs N rounds over the variants and keeps each
variant's fastest run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDES = list(range(112, 337, 28))  # 4-12 merged 28 px cells a side: 16-144 image tokens
MIN_PIXELS, MAX_PIXELS = 56 * 56, 336 * 336
WORDS = [
    "red", "blue", "green", "circle", "square", "stripe", "light", "shadow", "corner", "edge", "centre", "texture",
    "pattern", "colour", "shape", "line", "dot", "bright", "dark", "large", "small", "left", "right", "top", "bottom",
    "noise", "gradient", "frame", "picture", "object",
]
LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def build_model(directory: Path, seed: int = 0) -> None:
    """Save the random Qwen2-VL and its processor (built as the fixture's `qwen2_vl`, at this benchmark's sizes)."""
    import torch
    import transformers as tf

    sys.path.insert(0, str(ROOT))  # run as a script: the fixtures live in the repository's tests package
    from tests.fixtures.multimodal import CLIP_MEAN, CLIP_STD, _tokenizer, template

    tokenizer = _tokenizer("qwen2_vl")
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    text = {
        "vocab_size": len(tokenizer), "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "tie_word_embeddings": True,
        # head_dim 64: the 3-D rope sections (t, h, w) sum to 32, in Qwen2-VL's proportions (16, 24, 24 of 64)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [8, 12, 12]},
    }
    vision = {"depth": 4, "embed_dim": 1280, "hidden_size": 512, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}
    config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    common = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
              "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}  # pixels, not edges
    norm = {"image_mean": CLIP_MEAN, "image_std": CLIP_STD}
    processor = tf.Qwen2VLProcessor(tf.Qwen2VLImageProcessor(**common, **norm), tokenizer,
                                    tf.Qwen2VLVideoProcessor(**common, **norm), chat_template=template("qwen2_vl"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.Qwen2VLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def make_rows(n: int, seed: int, image_dir: Path) -> list[dict]:
    """`n` ms-swift rows, each one synthetic PNG (random size, blocks of colour over noise) + question + answer."""
    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        width, height = rng.choice(SIDES), rng.choice(SIDES)
        pixels = np.random.default_rng(seed * 100_003 + i).integers(0, 256, (height, width, 3), dtype=np.uint8)
        for _ in range(rng.randint(1, 4)):
            x, y = rng.randrange(width), rng.randrange(height)
            pixels[y : y + rng.randint(10, 80), x : x + rng.randint(10, 80)] = [rng.randrange(256) for _ in "rgb"]
        path = image_dir / f"{i:04d}.png"
        Image.fromarray(pixels).save(path)
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40))).capitalize() + "."
        question = rng.choice(["What is in this picture?", "Describe the image.", "Which colours do you see?",
                               f"What is near the {rng.choice(WORDS)}?"])
        rows.append({"messages": [{"role": "user", "content": f"<image>{question}"},
                                  {"role": "assistant", "content": answer}], "images": [str(path)]})
    return rows


BASELINE = r"""
import json, re, resource, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForImageTextToText, AutoProcessor, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)
model_dir, data, out, steps, targets = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l) for l in open(data)]
processor = AutoProcessor.from_pretrained(model_dir)
processor.tokenizer.padding_side = "right"
model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
set_seed(42)  # before the adapters: the Trainer seeds only when it is built, after LoRA's A matrices are drawn
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=targets,
                                         task_type="CAUSAL_LM"))
tok = processor.tokenizer
start = tok.convert_tokens_to_ids("<|im_start|>")
end = tok.convert_tokens_to_ids("<|im_end|>")
assistant = tok.encode("assistant\n", add_special_tokens=False)
collate_seconds = 0.0
def hf_messages(row):  # ms-swift's row -> the processor's chat format: the image as a part, loaded by the processor
    (user, answer), image = row["messages"], row["images"][0]
    question = user["content"].replace("<image>", "")
    return [{"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer["content"]}]}]
def collate(batch):  # one processor call per batch, padded to the longest row; loss on the answer + <|im_end|>
    global collate_seconds
    t0 = time.perf_counter()
    enc = processor.apply_chat_template([hf_messages(r) for r in batch], tokenize=True, return_dict=True,
                                        return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    for i, ids in enumerate(enc["input_ids"].tolist()):
        n = int(enc["attention_mask"][i].sum())
        at = max(j for j in range(n) if ids[j] == start and ids[j + 1 : j + 1 + len(assistant)] == assistant)
        first = at + 1 + len(assistant)
        last = next(j for j in range(first, n) if ids[j] == end)
        labels[i, first : last + 1] = enc["input_ids"][i, first : last + 1]
    enc["labels"] = labels
    collate_seconds += time.perf_counter() - t0
    return dict(enc)
class Counting(Trainer):
    tokens = 0
    def training_step(self, model, inputs, num_items_in_batch=None):
        Counting.tokens += int(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, num_items_in_batch)
class Clock(TrainerCallback):  # (time, tokens) at each logged step, as swift's logging.jsonl measures them
    marks = []
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            Clock.marks.append((time.perf_counter(), Counting.tokens))
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to=[], seed=42, use_cpu=True,
                         remove_unused_columns=False, disable_tqdm=True, gradient_checkpointing=False,
                         lr_scheduler_type="cosine", warmup_steps=0.05)  # swift sft's default schedule
trainer = Counting(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()])
result = trainer.train()
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(json.dumps({"runtime": result.metrics["train_runtime"], "tokens": Counting.tokens, "losses": losses,
                  "collate_seconds": collate_seconds, "trainable": trainable,
                  "steady": [Clock.marks[-1][1] - Clock.marks[0][1], Clock.marks[-1][0] - Clock.marks[0][0]],
                  "tokens_seen": [t for _, t in Clock.marks],
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def run_baseline(model_dir: Path, data: Path, work: Path, steps: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", BASELINE, str(model_dir), str(data), str(work / "b"), str(steps), LORA_TARGETS],
        capture_output=True, text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"baseline failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_swift(model_dir: Path, data: Path, work: Path, steps: int, name: str, *extra: str) -> dict[str, Any]:
    out_dir = work / name
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run folder: logging.jsonl is this run's
    cmd = [
        str(Path(sys.executable).parent / "swift"), "sft", "--model", str(model_dir), "--dataset", str(data),
        "--train_type", "lora", "--max_steps", str(steps), "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-4", "--gradient_checkpointing", "false", "--logging_steps", "1",
        "--save_steps", str(10 * steps), "--report_to", "none", "--dataset_num_proc", "1", "--seed", "42",
        "--dataset_shuffle", "false",  # the Trainer's sampler alone orders the rows: the same batches as (b)
        "--output_dir", str(out_dir), *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    log = next(out_dir.rglob("logging.jsonl"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    end = next(r for r in reversed(rows) if "train_runtime" in r)  # the very last row names the checkpoints
    steps_logged = [r for r in rows if "loss" in r]
    # After the first step: each logged step's tokens over its own window (tokens / tokens_per_second)
    later = list(itertools.pairwise(steps_logged))
    tokens = sum(b["tokens_seen"] - a["tokens_seen"] for a, b in later)
    seconds = sum((b["tokens_seen"] - a["tokens_seen"]) / b["tokens_per_second"] for a, b in later)
    return {"runtime": end["train_runtime"], "tokens": end["tokens_seen"], "wall": wall, "steady": [tokens, seconds],
            "tokens_seen": [r["tokens_seen"] for r in steps_logged],
            "losses": [r["loss"] for r in steps_logged], "peak_rss_gib": end["peak_rss_gib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--packing_steps", type=int, default=3, help="steps of the --packing variant (2048-token bins)")
    parser.add_argument("--only", nargs="*", help="variant names to run (substrings; default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the variants; the best run is kept")
    parser.add_argument("--wait_idle", type=float, default=0.0,
                        help="before each run, wait (up to 15 min) until other processes use under this many cores")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = args.work or Path(tempfile.mkdtemp(prefix="mm-sft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "qwen2-vl-tiny"
    if not (model_dir / "config.json").is_file():
        build_model(model_dir)
    rows = make_rows(args.rows, seed=0, image_dir=work / "images")
    data = work / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cells = [(w // 28) * (h // 28) for w, h in (_size(r["images"][0]) for r in rows)]
    print(f"data: {len(rows)} rows, {min(cells)}-{max(cells)} image tokens (mean {sum(cells) / len(cells):.0f}); "
          f"{args.steps} steps of batch 4 (packing: {args.packing_steps}); CPU threads {os.cpu_count()}; {work}")

    variants = {
        "b: HF Trainer + peft, fp32, pad to longest": lambda: run_baseline(model_dir, data, work, args.steps),
        "a: swift sft defaults (padding-free, bf16)": lambda: run_swift(model_dir, data, work, args.steps, "a"),
        "a: --padding_free false": lambda: run_swift(model_dir, data, work, args.steps, "pad", "--padding_free",
                                                     "false"),
        "a: --packing true --max_length 2048": lambda: run_swift(model_dir, data, work, args.packing_steps, "pk",
                                                                 "--packing", "true", "--max_length", "2048"),
        "a: --bf16 false": lambda: run_swift(model_dir, data, work, args.steps, "f32", "--bf16", "false"),
    }
    chosen = {n: run for n, run in variants.items() if not args.only or any(o in n for o in args.only)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for repeat in range(args.repeats):  # rounds over all variants, so that a busy spell hits each alike
        for name, run in chosen.items():
            steps = args.packing_steps if "packing" in name else args.steps
            if args.wait_idle:
                _wait_idle(args.wait_idle)
            load = os.getloadavg()[0]
            try:
                result = run()
            except (RuntimeError, StopIteration, KeyError, ZeroDivisionError, json.JSONDecodeError) as e:
                print(f"{name:44s} FAILED: {e}", flush=True)
                continue
            result["load"] = (load, os.getloadavg()[0])
            result["tokens_per_second"] = result["tokens"] / result["runtime"]
            result["steady_tokens_per_second"] = result["steady"][0] / result["steady"][1]
            result["seconds_per_step"] = result["runtime"] / steps
            result["steps"] = steps
            runs[name].append(result)
            print(f"[round {repeat + 1}] {_line(name, result)}", flush=True)
    (work / "results.json").write_text(json.dumps(runs, indent=1))
    # Best of the rounds (the least disturbed run): the highest whole-run tokens/s
    results = {n: max(r, key=lambda x: x["tokens_per_second"]) for n, r in runs.items() if r}
    print("\nbest of", args.repeats, "round(s):")
    for name, result in results.items():
        print(_line(name, result))
    base = next((r for n, r in results.items() if n.startswith("b:")), None)
    print("\n| variant | s/step | real tokens/step | real tokens/s | after step 1 | peak RSS "
          "| loss first / final / mean | vs (b) |\n|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        losses = r["losses"]
        ratio = f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}x" if base else "-"
        spread = sorted(x["tokens_per_second"] for x in runs[name])
        spread_text = f" ({spread[0]:.0f}-{spread[-1]:.0f})" if len(spread) > 1 else ""
        print(f"| {name} | {r['seconds_per_step']:.2f} | {r['tokens'] / r['steps']:.0f} | "
              f"{r['tokens_per_second']:.1f}{spread_text} | {r['steady_tokens_per_second']:.1f} | "
              f"{r['peak_rss_gib']:.2f} GiB | {losses[0]:.4f} / {losses[-1]:.4f} / {sum(losses) / len(losses):.4f} | "
              f"{ratio} |")


def _line(name: str, r: dict[str, Any]) -> str:
    losses, steps = r["losses"], r["steps"]
    extra = (f"  (collator {r['collate_seconds'] / steps:.2f} s/step, trainable {r['trainable']:,})"
             if "collate_seconds" in r else "")
    return (f"{name:44s} {r['seconds_per_step']:6.2f} s/step {r['tokens_per_second']:6.1f} tokens/s "
            f"(after step 1: {r['steady_tokens_per_second']:6.1f}) {r['tokens'] / steps:5.0f} tokens/step "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB  loss first {losses[0]:.4f} final {losses[-1]:.4f} "
            f"mean {sum(losses) / len(losses):.4f}  load {r['load'][0]:.1f}-{r['load'][1]:.1f}{extra}")

def _busy_cores(seconds: float = 5.0) -> float:
    """Cores busy over the next `seconds` (all processes, from /proc/stat)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    (total0, idle0), _ = sample(), time.sleep(seconds)
    total1, idle1 = sample()
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def _wait_idle(cores: float, limit: float = 900.0) -> None:
    start = time.perf_counter()
    while (busy := _busy_cores()) >= cores and time.perf_counter() - start < limit:
        print(f"  (waiting: {busy:.1f} cores busy)", flush=True)
        time.sleep(10)


def _size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


if __name__ == "__main__":
    main()
