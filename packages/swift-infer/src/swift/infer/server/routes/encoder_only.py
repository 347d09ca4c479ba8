"""Chat and completion routes of an encoder-task server (embedding, reranker, seq_cls): a 400 saying what it serves
instead of a 404, so a client pointed at the wrong server learns why."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from swift.infer.server.errors import error_response
from swift.infer.server.state import get_state

router = APIRouter()

_ROUTES = {"embedding": "POST /v1/embeddings", "reranker": "POST /v1/rerank", "generative_reranker": "POST /v1/rerank"}


@router.post("/v1/chat/completions")
@router.post("/v1/completions")
async def no_generation(request: Request) -> JSONResponse:
    task = get_state(request).engine.task_type
    use = _ROUTES.get(task, "swift infer --val_dataset FILE (seq_cls checkpoints are scored in batches)")
    return error_response(400, f"this server serves a --task_type {task} model, which does not generate text: "
                               f"use {use}; chat needs swift deploy of a causal_lm model")
