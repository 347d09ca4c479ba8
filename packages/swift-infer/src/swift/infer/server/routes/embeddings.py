"""POST /v1/embeddings: OpenAI's embeddings API over an embedding checkpoint (`swift deploy --task_type embedding`).

`input` is a text, a list of texts, or token ids (one list, or a list of lists: pooled as given, no template);
`encoding_format` float or base64 (little-endian float32, what the `openai` client asks for by default);
`dimensions` keeps the first N components, normalised again (Matryoshka-style truncation).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from swift.infer.server.errors import error_response
from swift.infer.server.state import get_state

router = APIRouter()


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def wrong_task(request: Request, wanted: str, route: str) -> JSONResponse | None:
    """A 400 when this server's model is not for `route` (a chat model, or another encoder task)."""
    engine = get_state(request).engine
    task = getattr(engine, "task_type", "causal_lm")
    if task in wanted.split("|"):
        return None
    what = "a chat model (causal_lm)" if task == "causal_lm" else f"a --task_type {task} model"
    hint = {"causal_lm": "POST /v1/chat/completions", "embedding": "POST /v1/embeddings"}.get(task, "POST /v1/rerank")
    return error_response(400, f"this server serves {what}: {route} needs swift deploy --task_type "
                               f"{wanted.split('|')[0]} with such a checkpoint; here use {hint}")


def _truncate(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is None:
        return vector
    vector = vector[:dimensions]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


@router.post("/v1/embeddings")
@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    if (refusal := wrong_task(request, "embedding", "/v1/embeddings")) is not None:
        return refusal
    state = get_state(request)
    state.adapter_for(body.model)  # 404 for a model this server does not serve
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or any(isinstance(x, str) and not x for x in inputs):
        return error_response(400, "input: give a non-empty text or a list of non-empty texts", param="input")
    if inputs and isinstance(inputs[0], int):
        inputs = [inputs]  # one sequence of token ids
    if body.dimensions is not None and body.dimensions < 1:
        return error_response(400, f"dimensions {body.dimensions}: give at least 1", param="dimensions")
    engine = state.engine
    if isinstance(inputs[0], str):
        vectors, tokens = await asyncio.to_thread(engine.embed, inputs)
    else:
        outputs, tokens = await asyncio.to_thread(engine.forward, inputs)
        vectors = outputs.tolist()
    if body.dimensions is not None and body.dimensions > len(vectors[0]):
        return error_response(400, f"dimensions {body.dimensions}: the model's embeddings have {len(vectors[0])}",
                              param="dimensions")
    data = []
    for index, vector in enumerate(vectors):
        vector = _truncate(vector, body.dimensions)
        value: list[float] | str = vector
        if body.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    state.metrics.add_tokens(tokens, 0)
    return JSONResponse({"object": "list", "data": data, "model": body.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
