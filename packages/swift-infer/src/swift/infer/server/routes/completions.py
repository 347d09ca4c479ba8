"""POST /v1/completions: raw text in, raw text out (no chat template), whole or streamed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from swift.infer.engine.errors import RequestError
from swift.infer.protocol import CompletionRequest, CompletionResponse, CompletionStreamResponse
from swift.infer.server.errors import request_id_of
from swift.infer.server.routes.streaming import ClientGone, sse, until_disconnect
from swift.infer.server.state import get_state

router = APIRouter()


def _prompts(body: CompletionRequest) -> list[str | list[int]]:
    if isinstance(body.prompt, str):
        return [body.prompt]
    if all(isinstance(p, int) for p in body.prompt):
        return [list(body.prompt)]  # type: ignore[arg-type]
    return list(body.prompt)  # type: ignore[arg-type]


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    adapter = state.adapter_for(body.model)
    config = body.request_config()
    # Every prompt is encoded and checked (token ids inside the vocabulary) before any starts: a bad one is a 400
    # that never reaches the model, and leaves no other prompt of the request generating.
    prompts = [state.engine.encode_prompt(prompt) for prompt in _prompts(body)]
    request_id = request_id_of(request)
    engine_id = f"cmpl-{request_id}"
    if body.stream:
        if len(prompts) > 1:
            raise RequestError("stream one prompt at a time (several prompts need stream=false)", param="prompt")
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = state.engine.complete_stream(prompts[0], config, adapter=adapter, include_usage=True,
                                              request_id=engine_id)

        def count(chunk: CompletionStreamResponse) -> None:
            if chunk.usage is not None:
                state.metrics.add_tokens(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)

        return StreamingResponse(sse(chunks, request_id, count, drop_usage_only=not wants_usage),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def run_all() -> CompletionResponse:
        # one engine request per prompt, each with an id of its own (a backend aborts and reports by id)
        ids = [engine_id] if len(prompts) == 1 else [f"{engine_id}-{i}" for i in range(len(prompts))]
        parts = await asyncio.gather(*(state.engine.complete_async(prompt, config, adapter=adapter, request_id=part_id)
                                       for prompt, part_id in zip(prompts, ids, strict=True)))
        merged = parts[0].model_copy(update={"id": engine_id, "choices": [], "usage": None})
        for part in parts:
            offset = len(merged.choices)
            merged.choices += [c.model_copy(update={"index": offset + c.index}) for c in part.choices]
            merged.usage = part.usage if merged.usage is None else merged.usage.add(part.usage)
        return merged

    try:
        response = await until_disconnect(request, run_all())
    except ClientGone:
        state.metrics.aborted += 1
        return Response(status_code=499)
    if response.usage is not None:
        state.metrics.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
    return JSONResponse(response.model_dump(mode="json"))
