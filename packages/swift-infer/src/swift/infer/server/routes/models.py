"""GET /v1/models: the served model and its named adapters."""

from __future__ import annotations

from fastapi import APIRouter, Request

from swift.infer.protocol import ModelCard, ModelList
from swift.infer.server.state import get_state

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    state = get_state(request)
    ids = state.model_ids()
    cards = [ModelCard(id=ids[0])] + [ModelCard(id=name, parent=ids[0]) for name in ids[1:]]
    return ModelList(data=cards).model_dump(mode="json")
