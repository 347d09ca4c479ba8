"""Encoding throughput: `Template.encode` (ids + labels) against `tokenizer.apply_chat_template` (ids only).

    .venv/bin/python benchmarks/encode_throughput.py                      # qwen2_5 fixture tokenizer, 20k rows
    .venv/bin/python benchmarks/encode_throughput.py --tokenizer llama3 --rows 5000
    .venv/bin/python benchmarks/encode_throughput.py --tokenizer smollm2   # the packaged SmolLM2 tokenizer

Both run in the same process over the same synthetic conversations (single and multi-turn, with and without a
system prompt, some with tool calls), so the ratio compares like with like. Prints rows/s, tokens/s, the ratio and
the peak RSS of the process. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the", "model", "reads", "a", "short", "question", "and", "gives", "a", "clear", "answer", "about", "rain",
         "rivers", "code", "tests", "tokens", "weather", "cities", "numbers", "music", "history", "science", "light",
         "sound", "time", "space", "data", "order")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def conversation(rng: random.Random, with_tools: bool) -> dict:
    messages = [{"role": "system", "content": sentence(rng, 5, 15)}] if rng.random() < 0.5 else []
    if with_tools:
        city = rng.choice(["Paris", "Lima", "Oslo"])
        call = {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
        messages += [{"role": "user", "content": f"Weather in {city}?"},
                     {"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call00001", "content": sentence(rng, 3, 8)},
                     {"role": "assistant", "content": sentence(rng, 10, 40)}]
        return {"messages": messages, "tools": [WEATHER]}
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        messages += [{"role": "user", "content": sentence(rng, 5, 30)},
                     {"role": "assistant", "content": " ".join(sentence(rng, 8, 25) for _ in range(rng.randint(1, 6)))}]
    return {"messages": messages}


def load_tokenizer(name: str):
    if name == "smollm2":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("SWIFT_CACHE", str(ROOT / ".swift-cache"))
        from swift.core import get_model_tokenizer

        return get_model_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct", load_model=False)[1]
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT))  # run as a script: the fixtures' unpacker lives in the repository's tests package
    from tests.fixtures import tokenizers

    fixtures = tokenizers()
    return AutoTokenizer.from_pretrained(fixtures / name if (fixtures / name).is_dir() else name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="qwen2_5", help="fixture folder name, a tokenizer path, or smollm2")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--tool_share", type=float, default=0.1, help="fraction of rows with a tool call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from swift.core.template import get_template

    tokenizer = load_tokenizer(args.tokenizer)
    template = get_template(None, tokenizer)
    rng = random.Random(args.seed)
    rows = [conversation(rng, rng.random() < args.tool_share) for _ in range(args.rows)]

    start = time.perf_counter()
    baseline_tokens = sum(len(tokenizer.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=True,
                                                            return_dict=False)) for row in rows)
    baseline_s = time.perf_counter() - start

    start = time.perf_counter()
    encoded = [template.encode(row) for row in rows]
    ours_s = time.perf_counter() - start
    tokens = sum(len(row["input_ids"]) for row in encoded)
    trained = sum(label != -100 for row in encoded for label in row["labels"])

    result = {
        "tokenizer": args.tokenizer, "template": template.name, "rows": len(rows),
        "baseline_rows_per_s": round(len(rows) / baseline_s, 1),
        "baseline_tokens_per_s": round(baseline_tokens / baseline_s),
        "encode_rows_per_s": round(len(rows) / ours_s, 1),
        "encode_tokens_per_s": round(tokens / ours_s),
        "ratio_encode_to_baseline": round(baseline_s / ours_s, 3),
        "same_tokens": tokens == baseline_tokens, "trained_token_share": round(trained / tokens, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
