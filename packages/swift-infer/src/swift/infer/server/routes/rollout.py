"""`swift rollout`'s routes for a GRPO trainer in another process (`--use_vllm true --vllm_mode server`).

Token ids in, token ids out, and weights in, so that the trainer needs neither vLLM nor our template on the wire:
- `GET  /rollout/info`: what the trainer must know before it sends (model, dtype, LoRA on or off, weight version).
- `POST /rollout/generate`: `{"prompt_ids": [[...]], "max_tokens", "temperature", "top_p", "top_k",
  "repetition_penalty", "stop_token_ids", "stop", "seed"}` -> `{"completion_ids": [[...]]}`, one completion per prompt
  (the trainer repeats each prompt num_generations times), seeded per prompt (`seed + i`).
- `POST /rollout/update_weights`: a safetensors file as the body (HF checkpoint names; only the tensors that
  changed), loaded into vLLM's model between two decoding steps.
- `POST /rollout/update_adapter`: the trainer's LoRA adapter (safetensors body, its adapter_config.json as the
  `X-Adapter-Config` header), served as adapter `policy` from then on (`swift rollout --vllm_enable_lora true`).
Bodies are plain HTTP, so this works across machines; transfers are measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from swift.infer.engine.types import GenerationRequest, SamplingParams
from swift.infer.server.state import get_state

router = APIRouter(prefix="/rollout")
POLICY = "policy"  # the adapter name the trainer's LoRA is served under


class GenerateRequest(BaseModel):
    prompt_ids: list[list[int]] = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = 0
    repetition_penalty: float = Field(1.0, gt=0)
    stop_token_ids: list[int] = []
    stop: list[str] = []
    seed: int | None = None


class RolloutState:
    """What the rollout routes keep between requests: the adapter directory and the weight version."""

    def __init__(self) -> None:
        self.weight_version = 0
        self.adapter: str | None = None
        self.previous: Path | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="swift-rollout-")
        self.lock = asyncio.Lock()

    def adapter_dir(self) -> Path:
        return Path(self._dir.name) / f"policy-{self.weight_version + 1}"


def _rollout(request: Request) -> RolloutState:
    return request.app.state.swift_rollout


def _engine(request: Request) -> Any:
    engine = get_state(request).engine
    if not hasattr(engine, "between_steps"):
        raise HTTPException(400, "this server's engine takes no weight updates (swift rollout serves vLLM)")
    return engine


@router.get("/info")
async def info(request: Request) -> dict:
    engine = get_state(request).engine
    rollout = _rollout(request)
    backend = getattr(engine, "backend", None)
    engine_args = getattr(backend, "_engine_args", None)
    return {"model": get_state(request).model_name, "max_model_len": engine.generator.max_model_len,
            "dtype": str(getattr(engine_args, "dtype", "auto")),
            "lora": bool(getattr(engine_args, "enable_lora", False)), "weight_version": rollout.weight_version}


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> dict:
    engine, rollout = get_state(request).engine, _rollout(request)
    vocab = len(engine.tokenizer)
    for i, ids in enumerate(body.prompt_ids):
        if not ids or min(ids) < 0 or max(ids) >= vocab:
            raise HTTPException(400, f"prompt_ids[{i}]: token ids must be in [0, {vocab})")
    adapter = rollout.adapter
    base = dict(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                repetition_penalty=body.repetition_penalty, stop_token_ids=tuple(body.stop_token_ids),
                stop=tuple(s for s in body.stop if s))
    call, batch = rollout.weight_version, uuid.uuid4().hex[:12]

    async def one(i: int, ids: list[int]) -> list[int]:
        seed = None if body.seed is None else body.seed + i
        params = SamplingParams(**base, seed=seed)
        out: list[int] = []
        async for piece in engine.generator.generate(GenerationRequest(f"rollout-{batch}-{i}", ids, params,
                                                                       adapter=adapter)):
            out.extend(piece.token_ids)
        return out

    completions = await asyncio.gather(*(one(i, ids) for i, ids in enumerate(body.prompt_ids)))
    return {"completion_ids": list(completions), "weight_version": call}


@router.post("/update_weights")
async def update_weights(request: Request) -> dict:
    from safetensors.torch import load

    engine, rollout = _engine(request), _rollout(request)
    tensors = load(await request.body())
    if not tensors:
        raise HTTPException(400, "update_weights: the body holds no tensors")

    async with rollout.lock:
        await engine.update_weights(tensors.items())
        rollout.weight_version += 1
    return {"weight_version": rollout.weight_version, "tensors": len(tensors)}


@router.post("/update_adapter")
async def update_adapter(request: Request) -> dict:
    engine, rollout = _engine(request), _rollout(request)
    config = request.headers.get("x-adapter-config")
    if not config:
        raise HTTPException(400, "update_adapter: send the adapter_config.json as the X-Adapter-Config header")
    try:
        json.loads(config)
    except ValueError as e:
        raise HTTPException(400, f"update_adapter: X-Adapter-Config is not JSON ({e})") from e
    async with rollout.lock:
        directory = rollout.adapter_dir()
        directory.mkdir(parents=True)
        (directory / "adapter_config.json").write_text(config, encoding="utf-8")
        (directory / "adapter_model.safetensors").write_bytes(await request.body())
        backend = engine.backend
        await engine.between_steps(lambda _: backend.add_lora(POLICY, directory))
        if rollout.previous is not None:
            shutil.rmtree(rollout.previous, ignore_errors=True)  # vLLM read it when it was added
        rollout.previous, rollout.adapter = directory, POLICY
        rollout.weight_version += 1
    return {"weight_version": rollout.weight_version, "adapter": POLICY}
