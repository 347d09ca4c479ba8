"""What every route reads: the engine, the served model ids, the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from swift.infer.checkpoint import DEFAULT_ADAPTER
from swift.infer.engine.engine import InferEngine
from swift.infer.engine.errors import UnknownAdapterError
from swift.infer.server.metrics import Metrics


@dataclass
class ServerState:
    engine: InferEngine
    model_name: str  # the served name of the base model (with its default adapter, if any)
    metrics: Metrics = field(default_factory=Metrics)

    def model_ids(self) -> list[str]:
        return [self.model_name, *(name for name in self.engine.adapters if name != DEFAULT_ADAPTER)]

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's `model` names; None for the served model itself (its default adapter)."""
        if model == self.model_name:
            return None
        if model in self.engine.adapters:
            return model
        raise UnknownAdapterError(model, self.model_ids())


def get_state(request: Request) -> ServerState:
    return request.app.state.swift
