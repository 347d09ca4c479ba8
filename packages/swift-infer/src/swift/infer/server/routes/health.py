"""GET /health (200 while the engine serves) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from swift.infer.server.state import get_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(get_state(request).metrics.render(), media_type="text/plain; version=0.0.4")
