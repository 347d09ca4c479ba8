"""POST /v1/rerank (and /rerank): a query and documents -> each document's relevance, best first, in the shape
Jina's, Cohere's and vLLM's rerank APIs share (`swift deploy --task_type reranker|generative_reranker`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from swift.infer.server.errors import error_response, request_id_of
from swift.infer.server.routes.embeddings import wrong_task
from swift.infer.server.state import get_state

router = APIRouter()


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = None
    return_documents: bool = True


@router.post("/v1/rerank")
@router.post("/rerank")
async def rerank(body: RerankRequest, request: Request) -> JSONResponse:
    if (refusal := wrong_task(request, "reranker|generative_reranker", "/v1/rerank")) is not None:
        return refusal
    state = get_state(request)
    if body.model is not None:
        state.adapter_for(body.model)  # 404 for a model this server does not serve
    if not body.documents:
        return error_response(400, "documents: give at least one document", param="documents")
    if body.top_n is not None and body.top_n < 1:
        return error_response(400, f"top_n {body.top_n}: give at least 1", param="top_n")
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    scores, tokens = await asyncio.to_thread(state.engine.score, body.query, texts)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[:body.top_n]
    results = [{"index": i, "relevance_score": scores[i], **({"document": {"text": texts[i]}}
                                                             if body.return_documents else {})} for i in order]
    state.metrics.add_tokens(tokens, 0)
    return JSONResponse({"id": f"rerank-{request_id_of(request)}", "model": body.model or state.model_name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "results": results})
