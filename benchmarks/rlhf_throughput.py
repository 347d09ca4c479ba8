"""RLHF throughput: `swift rlhf` against trl's own trainers used directly, on the same data, model and settings.

    .venv/bin/python benchmarks/rlhf_throughput.py [--dpo_steps 10] [--grpo_steps 4] [--ppo_steps 8]
        [--only dpo grpo grpo_vllm ppo grpo_dynamic megatron_grpo]

Model: the packaged SmolLM2-135M-Instruct, LoRA r=8/alpha=32 on all linear layers, fp32, lr 1e-5, seed 42, optimizer
adamw_torch and no gradient checkpointing on both sides (trl's configs default to checkpointing on). DPO: 64
synthetic preference rows (answers of 20-120 words), batch 4. GRPO: 32 arithmetic prompts, batch 8 = 2 prompts x 4
generations, 64 new tokens at most, rewards `accuracy` + `format`. Each variant runs in its own process. Printed:
seconds per step, steps per second, peak RSS, and the ratio of ours to trl's.

ppo: trl 1.x has no PPO trainer to compare with, so `swift rlhf --rlhf_type ppo` runs against a plain loop written
here (`REF_PPO`: the same model, LoRA on the policy and on a value model made from it, HF `generate`, the same KL-shaped
rewards, GAE, whitening and clipped losses, AdamW): 4 prompts per rollout, 4 PPO epochs (4 optimizer steps per rollout
batch), 64 new tokens at most, temperature 0.9, rewards `accuracy` + `format`. Printed besides: trained tokens per
second (prompt + completion tokens of every optimizer step) and peak RSS.

megatron_grpo: `megatron rlhf --rlhf_type grpo` (mcore model, one process; rollouts with transformers' generate on
the synced HF model) against trl's GRPOTrainer and `swift rlhf --rlhf_type grpo` on the GRPO setup above (batch 8 =
2 prompts x 4 generations, LoRA r=8/alpha=32 without dropout, as trl disables it). Megatron's seconds per step come
from its logging.jsonl (each step's tokens / tokens per second), so they leave out start-up as the others do. With
.venv-vllm present, also `megatron rlhf --use_vllm true` (vLLM colocated, eager).

grpo_vllm (needs .venv-vllm, `make setup-vllm`; vLLM eager, bf16, a 2 GiB KV cache): trl's GRPOTrainer with
use_vllm=True (colocate), `swift rlhf --use_vllm true` colocated, and against a `swift rollout` server (the trainer in
.venv, without vLLM); and the PyTorch-engine run of `grpo` again, whose per-step loss and reward curves are printed
beside the vLLM runs' (same seed; the sampling streams differ, so they agree within noise, not exactly).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WORDS = ["river", "stone", "light", "music", "garden", "window", "paper", "number", "city", "forest", "cloud",
         "engine", "signal", "memory", "answer"]

TRL_DPO = r"""
import json, resource, sys, time, torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(l) for l in open(data)]
ds = Dataset.from_list([{"prompt": r["messages"][:-1], "chosen": r["messages"][-1:],
                         "rejected": [{"role": "assistant", "content": r["rejected_response"]}]} for r in rows])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
config = DPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-5,
                   logging_steps=1, save_strategy="no", report_to=[], seed=42, use_cpu=True, bf16=False,
                   gradient_checkpointing=False, optim="adamw_torch", max_length=512, beta=0.1, disable_tqdm=True)
peft = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft)
result = trainer.train()
print(json.dumps({"runtime": result.metrics["train_runtime"],
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""

TRL_GRPO = r"""
import json, resource, sys, time, torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from swift.core.rewards import accuracy, format_reward
model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(l) for l in open(data)]
ds = Dataset.from_list([{"prompt": r["messages"], "solution": r["solution"]} for r in rows])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
config = GRPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=64, temperature=0.9, learning_rate=1e-5, beta=0.04, logging_steps=1,
                    save_strategy="no", report_to=[], seed=42, use_cpu=True, bf16=False, disable_tqdm=True,
                    gradient_checkpointing=False, optim="adamw_torch", log_completions=False)
peft = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = GRPOTrainer(model=model, reward_funcs=[accuracy, format_reward], args=config, train_dataset=ds,
                      processing_class=tok, peft_config=peft)
result = trainer.train()
lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
print(json.dumps({"runtime": result.metrics["train_runtime"], "mean_completion": sum(lengths) / len(lengths),
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


REF_PPO = r"""
import json, resource, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from swift.core.rewards import accuracy, format_reward
model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.manual_seed(42)
rows = [json.loads(l) for l in open(data)]
tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
lora = dict(r=8, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                        LoraConfig(task_type="CAUSAL_LM", **lora))
value = get_peft_model(AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32),
                       LoraConfig(task_type="SEQ_CLS", **lora))
params = [p for m in (policy, value) for p in m.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)
B, EPOCHS, TEMP, NEW, KL, VF, CLIP, CLIPV, GAMMA, LAM = 4, 4, 0.9, 64, 0.05, 0.1, 0.2, 0.2, 1.0, 0.95

def logprobs(ids, mask, pos, width):
    logits = policy(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -width - 1:-1].float() / TEMP
    return torch.log_softmax(logits, -1).gather(-1, ids[:, -width:, None]).squeeze(-1)

def values(ids, mask, pos, width):
    base = value.get_base_model()
    hidden = base.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
    return base.score(hidden[:, -width - 1:-1]).squeeze(-1)

step, tokens, cursor, start = 0, 0, 0, time.perf_counter()
while step < steps:
    batch = [rows[(cursor + k) % len(rows)] for k in range(B)]
    cursor += B
    enc = tok.apply_chat_template([r["messages"] for r in batch], add_generation_prompt=True, padding=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = policy.generate(**enc, do_sample=True, temperature=TEMP, top_k=0, top_p=1.0, max_new_tokens=NEW,
                              pad_token_id=tok.pad_token_id)
    width = ids.shape[1] - enc["input_ids"].shape[1]
    ends = ids[:, -width:] == tok.eos_token_id
    last = torch.where(ends.any(1), ends.int().argmax(1), width - 1)
    cmask = (torch.arange(width)[None] <= last[:, None]).float()
    mask = torch.cat([enc["attention_mask"], cmask.long()], 1)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        old = logprobs(ids, mask, pos, width)
        with policy.disable_adapter():
            ref = logprobs(ids, mask, pos, width)
        old_values = values(ids, mask, pos, width) * cmask
    texts = tok.batch_decode([c[:n] for c, n in zip(ids[:, -width:].tolist(), (last + 1).tolist())],
                             skip_special_tokens=True)
    chat = [[{"role": "assistant", "content": t}] for t in texts]
    solutions = [r["solution"] for r in batch]
    scores = torch.tensor([sum(v or 0.0 for v in vs) for vs in zip(accuracy(chat, solution=solutions),
                                                                    format_reward(chat))])
    rewards = -KL * (old - ref) * cmask
    rewards[torch.arange(B), last] += scores
    advantages, running = torch.zeros_like(rewards), torch.zeros(B)
    for t in reversed(range(width)):
        next_value = old_values[:, t + 1] if t + 1 < width else torch.zeros(B)
        running = rewards[:, t] + GAMMA * next_value - old_values[:, t] + GAMMA * LAM * running
        advantages[:, t] = running
    returns = (advantages + old_values) * cmask
    real = advantages[cmask.bool()]
    advantages = (advantages - real.mean()) / (real.std() + 1e-8) * cmask
    for _ in range(EPOCHS):
        if step >= steps:
            break
        ratio = torch.exp(logprobs(ids, mask, pos, width) - old)
        pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - CLIP, 1 + CLIP))
        v = values(ids, mask, pos, width)
        clipped = torch.clamp(v, old_values - CLIPV, old_values + CLIPV)
        vf = 0.5 * torch.max((v - returns) ** 2, (clipped - returns) ** 2)
        n = cmask.sum()
        loss = (pg * cmask).sum() / n + VF * (vf * cmask).sum() / n
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        step, tokens = step + 1, tokens + int(mask.sum())
runtime = time.perf_counter() - start
print(json.dumps({"runtime": runtime, "tokens": tokens,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""

TRL_GRPO_VLLM = TRL_GRPO.replace("log_completions=False)", "log_completions=False, use_vllm=True, "
                                  "vllm_mode='colocate', vllm_enable_sleep_mode=False, vllm_max_model_length=1024)")
VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def make_data(work: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    prefs, prompts = [], []
    for i in range(64):
        good = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        prefs.append({"messages": [{"role": "user", "content": f"Write note {i}."},
                                   {"role": "assistant", "content": good}], "rejected_response": bad})
    for _ in range(32):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        prompts.append({"messages": [{"role": "user", "content": f"What is {a} + {b}? Put the answer in \\boxed{{}}."}],
                        "solution": f"\\boxed{{{a + b}}}"})
    pref_file, math_file = work / "prefs.jsonl", work / "math.jsonl"
    pref_file.write_text("\n".join(json.dumps(r) for r in prefs))
    math_file.write_text("\n".join(json.dumps(r) for r in prompts))
    return pref_file, math_file


def run_trl(code: str, model_dir: Path, data: Path, out: Path, steps: int, python: str = sys.executable) -> dict:
    proc = subprocess.run([python, "-c", code, str(model_dir), str(data), str(out), str(steps)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_swift(kind: str, data: Path, out: Path, steps: int, *extra: str, python: str = sys.executable) -> dict:
    cmd = [str(Path(python).parent / "swift"), "rlhf", "--rlhf_type", kind, "--model", MODEL,
           "--dataset", str(data), "--max_steps", str(steps), "--learning_rate", "1e-5", "--lora_rank", "8",
           "--lora_alpha", "32", "--max_length", "512", "--logging_steps", "1", "--save_steps", str(10 * steps),
           "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--output_dir", str(out),
           "--dataset_shuffle", "false", "--warmup_ratio", "0", "--lr_scheduler_type", "linear", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rows = [json.loads(line) for line in next(out.rglob("logging.jsonl")).read_text().splitlines()]
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    end = next(r for r in reversed(rows) if "train_runtime" in r)  # the very last row names the checkpoints
    return {"runtime": end["train_runtime"], "peak_rss_gib": end["peak_rss_gib"],
            "mean_completion": sum(lengths) / len(lengths) if lengths else None,
            "tokens": max((r.get("tokens_seen", 0) for r in rows), default=0),
            "loss": [r["loss"] for r in rows if "loss" in r], "reward": [r["reward"] for r in rows if "reward" in r]}


def run_swift_server(data: Path, out: Path, steps: int, *extra: str) -> dict:
    """`swift rollout` from .venv-vllm on a free port, the trainer from this environment (no vLLM in it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (out.parent / "rollout.log").open("w")
    server = subprocess.Popen([str(VLLM_PYTHON.parent / "swift"), "rollout", "--model", MODEL, "--port", str(port),
                               "--log_interval", "0", "--vllm_enforce_eager", "true"], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        return run_swift("grpo", data, out, steps, *extra, "--use_vllm", "true", "--vllm_mode", "server",
                         "--vllm_server_port", str(port))
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dpo_steps", type=int, default=10)
    parser.add_argument("--grpo_steps", type=int, default=4)
    parser.add_argument("--ppo_steps", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=["dpo", "grpo"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from swift.core import get_model_tokenizer

    _, tokenizer = get_model_tokenizer(MODEL, load_model=False)
    model_dir = tokenizer.swift_model_info.model_dir
    if not (model_dir / "model.safetensors").is_file():
        get_model_tokenizer(MODEL)  # convert the packaged weights once, outside the timed runs
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    prefs, prompts = make_data(work)
    print(f"model {MODEL}; CPU threads {os.cpu_count()}; work dir {work}")
    plans = {
        "dpo": (args.dpo_steps, lambda: run_trl(TRL_DPO, model_dir, prefs, work / "trl-dpo", args.dpo_steps),
                lambda: run_swift("dpo", prefs, work / "swift-dpo", args.dpo_steps, "--per_device_train_batch_size",
                                  "4", "--beta", "0.1")),
        "grpo": (args.grpo_steps, lambda: run_trl(TRL_GRPO, model_dir, prompts, work / "trl-grpo", args.grpo_steps),
                 lambda: run_swift("grpo", prompts, work / "swift-grpo", args.grpo_steps,
                                   "--per_device_train_batch_size", "8", "--num_generations", "4",
                                   "--max_completion_length", "64", "--temperature", "0.9", "--beta", "0.04",
                                   "--reward_funcs", "accuracy", "format")),
    }
    grpo_flags = ("--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "64",
                  "--temperature", "0.9", "--beta", "0.04", "--reward_funcs", "accuracy", "format")
    if "grpo_vllm" in args.only:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        steps = args.grpo_steps
        # + repetition: the 135M model never boxes a right sum here, so accuracy/format alone are all 0 and the
        # loss with them; repetition's reward varies per completion, so the loss curves below say something
        vllm_flags = (*grpo_flags, "repetition")
        runs = {
            "trl use_vllm": lambda: run_trl(TRL_GRPO_VLLM, model_dir, prompts, work / "trl-grpo-vllm", steps,
                                            python=str(VLLM_PYTHON)),
            "swift pt": lambda: run_swift("grpo", prompts, work / "swift-grpo-pt", steps, *vllm_flags),
            "swift colocate": lambda: run_swift("grpo", prompts, work / "swift-grpo-colocate", steps, *vllm_flags,
                                                "--use_vllm", "true", "--vllm_enforce_eager", "true",
                                                python=str(VLLM_PYTHON)),
            "swift server": lambda: run_swift_server(prompts, work / "swift-grpo-server", steps, *vllm_flags),
        }
        results = {}
        for who, run in runs.items():
            try:
                results[who] = run()
            except RuntimeError as e:
                print(f"grpo_vllm {who}: failed: {str(e)[-600:]}", flush=True)
                continue
            r = results[who]
            print(f"grpo_vllm {who:15s}: {r['runtime'] / steps:6.2f} s/step {steps / r['runtime']:.3f} steps/s "
                  f"peak RSS {r['peak_rss_gib']:.2f} GiB (trainer process)", flush=True)
        for who in ("swift pt", "swift colocate", "swift server"):
            if who in results:
                r = results[who]
                print(f"  {who:15s} loss {[round(x, 4) for x in r['loss']]} reward {[round(x, 3) for x in r['reward']]}")
        if "swift pt" in results:
            for who in ("trl use_vllm", "swift colocate", "swift server"):
                if who in results:
                    print(f"grpo_vllm: {who} is {results['swift pt']['runtime'] / results[who]['runtime']:.2f}x "
                          "the PyTorch-engine rollout run's speed")
    if "ppo" in args.only:
        run_ppo(model_dir, prompts, work, args.ppo_steps)
    if "grpo_dynamic" in args.only:
        run_grpo_dynamic(prompts, work, args.grpo_steps, grpo_flags)
    if "megatron_grpo" in args.only:
        run_megatron_grpo(model_dir, prompts, work, args.grpo_steps, grpo_flags)
    for name in [n for n in args.only if n not in ("grpo_vllm", "ppo", "grpo_dynamic", "megatron_grpo")]:
        steps, trl_run, swift_run = plans[name]
        results = {}
        for who, run in (("trl", trl_run), ("swift", swift_run)):
            start = time.perf_counter()
            result = run()
            result["wall"] = time.perf_counter() - start
            results[who] = result
            extra = f" mean completion {result['mean_completion']:.1f} tokens" if result.get("mean_completion") else ""
            print(f"{name} {who:5s}: {result['runtime'] / steps:6.2f} s/step {steps / result['runtime']:.3f} steps/s "
                  f"peak RSS {result['peak_rss_gib']:.2f} GiB{extra}", flush=True)
        ratio = results["trl"]["runtime"] / results["swift"]["runtime"]
        print(f"{name}: swift is {ratio:.2f}x trl's speed (steps/s ratio)", flush=True)


def run_ppo(model_dir: Path, prompts: Path, work: Path, steps: int) -> None:
    """`swift rlhf --rlhf_type ppo` against REF_PPO, the plain loop, on the same model, prompts and settings."""
    results = {}
    flags = ("--per_device_train_batch_size", "4", "--num_ppo_epochs", "4", "--max_completion_length", "64",
             "--temperature", "0.9", "--reward_funcs", "accuracy", "format")
    runs = (("ref", lambda: run_trl(REF_PPO, model_dir, prompts, work / "ref-ppo", steps)),
            ("swift", lambda: run_swift("ppo", prompts, work / "swift-ppo", steps, *flags)),
            # swift's default where the CPU multiplies bf16 natively: bf16 autocast (the rollouts stay fp32)
            ("swift bf16", lambda: run_swift("ppo", prompts, work / "swift-ppo-bf16", steps, *flags, "--bf16", "true")))
    for who, run in runs:
        r = results[who] = run()
        print(f"ppo {who:10s}: {r['runtime'] / steps:6.2f} s/step {steps / r['runtime']:.3f} steps/s "
              f"{r['tokens'] / r['runtime']:7.1f} trained tokens/s peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    for who in ("swift", "swift bf16"):
        print(f"ppo: {who} is {results['ref']['runtime'] / results[who]['runtime']:.2f}x the plain fp32 loop's speed "
              "(steps/s ratio)", flush=True)


def run_megatron(data: Path, out: Path, steps: int, *extra: str, python: str = sys.executable) -> dict:
    """`megatron rlhf --rlhf_type grpo` on the packaged model; seconds per step from its logging.jsonl."""
    cmd = [str(Path(python).parent / "megatron"), "rlhf", "--rlhf_type", "grpo", "--model", MODEL,
           "--dataset", str(data), "--train_iters", str(steps), "--lr", "1e-5", "--min_lr", "1e-5",
           "--train_type", "lora", "--lora_rank", "8", "--lora_alpha", "32", "--lora_dropout", "0",
           "--max_length", "512", "--log_interval", "1", "--save", str(out), "--save_interval", str(10 * steps),
           "--bf16", "false", "--seed", "42", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rows = [json.loads(line) for line in next(out.rglob("logging.jsonl")).read_text().splitlines()]
    previous, runtime = 0, 0.0
    for row in rows:
        runtime += (row["tokens_seen"] - previous) / row["tokens_per_second"]
        previous = row["tokens_seen"]
    return {"runtime": runtime, "peak_rss_gib": max(r["peak_rss_gib"] for r in rows),
            "mean_completion": sum(r["completions/mean_length"] for r in rows) / len(rows)}


def run_megatron_grpo(model_dir: Path, prompts: Path, work: Path, steps: int, grpo_flags: tuple[str, ...]) -> None:
    """megatron rlhf's GRPO against trl's GRPOTrainer and swift rlhf's, the same prompts, model and settings."""
    flags = ("--global_batch_size", "8", "--micro_batch_size", "8", "--num_generations", "4",
             "--max_completion_length", "64", "--temperature", "0.9", "--beta", "0.04", "--reward_funcs", "accuracy",
             "format")
    runs = (("trl", lambda: run_trl(TRL_GRPO, model_dir, prompts, work / "trl-grpo-m", steps)),
            ("swift rlhf", lambda: run_swift("grpo", prompts, work / "swift-grpo-m", steps, *grpo_flags)),
            ("megatron", lambda: run_megatron(prompts, work / "megatron-grpo", steps, *flags)))
    if VLLM_PYTHON.is_file():  # .venv-vllm (make setup-vllm): the same run rolling out on a colocated vLLM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        runs += (("megatron vllm", lambda: run_megatron(prompts, work / "megatron-grpo-vllm", steps, *flags,
                                                         "--use_vllm", "true", "--vllm_enforce_eager", "true",
                                                         python=str(VLLM_PYTHON))),)
    results = {}
    for who, run in runs:
        r = results[who] = run()
        extra = f" mean completion {r['mean_completion']:.1f} tokens" if r.get("mean_completion") else ""
        print(f"megatron_grpo {who:10s}: {r['runtime'] / steps:6.2f} s/step peak RSS {r['peak_rss_gib']:.2f} GiB"
              f"{extra}", flush=True)
    for who in [w for w in ("swift rlhf", "megatron", "megatron vllm") if w in results]:
        print(f"megatron_grpo: {who} is {results['trl']['runtime'] / results[who]['runtime']:.2f}x trl's speed "
              "(steps/s ratio)", flush=True)


def run_grpo_dynamic(prompts: Path, work: Path, steps: int, grpo_flags: tuple[str, ...]) -> None:
    """The cost of DAPO's --dynamic_sample: the same GRPO run without and with it, for two reward mixes. With
    accuracy + format alone the 135M model scores 0 on every completion, so every group is zero-spread and each step
    rolls out 1 + --max_resample_times batches (the worst case); with repetition added the rewards vary inside a
    group and resampling is rare (the usual case)."""
    mixes = {"worst case (accuracy format)": (), "usual case (+ repetition)": ("repetition",)}
    for label, extra in mixes.items():
        times = {}
        for who, flags in (("plain", ()), ("dynamic", ("--dynamic_sample", "true", "--max_resample_times", "3"))):
            out = work / f"grpo-dyn-{len(extra)}-{who}"
            r = run_swift("grpo", prompts, out, steps, *grpo_flags, *extra, *flags)
            rows = [json.loads(line) for line in next(out.rglob("logging.jsonl")).read_text().splitlines()]
            rounds = [row["dynamic_sample/rounds"] for row in rows if "dynamic_sample/rounds" in row]
            times[who] = r["runtime"] / steps
            print(f"grpo_dynamic {label} {who:8s}: {times[who]:6.2f} s/step peak RSS {r['peak_rss_gib']:.2f} GiB"
                  + (f", rollout rounds per step {sum(rounds) / len(rounds):.2f}" if rounds else ""), flush=True)
        print(f"grpo_dynamic {label}: --dynamic_sample costs {times['dynamic'] / times['plain']:.2f}x the time per "
              "step", flush=True)


if __name__ == "__main__":
    main()
