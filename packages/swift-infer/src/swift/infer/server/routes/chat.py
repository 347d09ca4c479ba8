"""POST /v1/chat/completions: a chat answer, whole or streamed (SSE, with tool calls and reasoning as deltas)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from swift.infer.protocol import ChatCompletionRequest, ChatCompletionStreamResponse
from swift.infer.server.errors import request_id_of
from swift.infer.server.routes.streaming import ClientGone, sse, until_disconnect
from swift.infer.server.state import get_state

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    adapter = state.adapter_for(body.model)
    infer_request, config = body.infer_request(), body.request_config()
    request_id = request_id_of(request)
    engine_id = f"chatcmpl-{request_id}"
    if body.stream:
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = state.engine.stream(infer_request, config, adapter=adapter, include_usage=True, request_id=engine_id)

        def count(chunk: ChatCompletionStreamResponse) -> None:
            if chunk.usage is not None:
                state.metrics.add_tokens(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)

        return StreamingResponse(sse(chunks, request_id, count, drop_usage_only=not wants_usage),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})
    try:
        response = await until_disconnect(request, state.engine.infer_async(infer_request, config, adapter=adapter,
                                                                            request_id=engine_id))
    except ClientGone:
        state.metrics.aborted += 1
        return Response(status_code=499)
    state.metrics.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
    return JSONResponse(response.model_dump(mode="json"))
