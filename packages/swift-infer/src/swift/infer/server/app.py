"""`build_app`: the FastAPI application over an engine: routes, OpenAI error bodies, the key / limit gate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from swift.infer.engine.engine import InferEngine
from swift.infer.server.errors import RequestIds, install_error_handlers
from swift.infer.server.gate import Gate
from swift.infer.server.metrics import Metrics
from swift.infer.server.routes import chat, completions, embeddings, encoder_only, health, models, rerank
from swift.infer.server.state import ServerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """The server flags an app needs (`ServerArgs` minus where to listen)."""

    model_name: str
    api_key: str | None = None
    max_concurrency: int | None = None
    log_interval: int = 20  # seconds between throughput log lines; 0: none
    close_engine: bool = True  # close the engine when the app shuts down
    rollout: bool = False  # swift rollout: the /rollout routes a GRPO trainer drives


def build_app(engine: InferEngine, options: ServerOptions) -> FastAPI:
    state = ServerState(engine, options.model_name, Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reporter = asyncio.create_task(_log_throughput(state.metrics, options.log_interval))
        try:
            yield
        finally:
            reporter.cancel()
            if options.close_engine:
                await asyncio.to_thread(engine.close)

    app = FastAPI(title="swift deploy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.swift = state
    install_error_handlers(app)
    # An encoder-task engine (TaskEngine: embedding, reranker, seq_cls) does not generate: its chat routes say so.
    generation = (chat, completions) if getattr(engine, "task_type", "causal_lm") == "causal_lm" else (encoder_only,)
    for module in (*generation, models, health, embeddings, rerank):
        app.include_router(module.router)
    if options.rollout:
        from swift.infer.server.routes import rollout

        app.state.swift_rollout = rollout.RolloutState()
        app.include_router(rollout.router)
    app.add_middleware(Gate, api_key=options.api_key, max_concurrency=options.max_concurrency,
                       metrics=state.metrics)
    app.add_middleware(RequestIds)  # added last: the outermost, so that even the gate's answers carry the id
    return app


async def _log_throughput(metrics: Metrics, interval: int) -> None:
    if interval <= 0:
        return
    last = metrics.generation_tokens
    while True:
        await asyncio.sleep(interval)
        now = metrics.generation_tokens
        if now != last or metrics.running:
            logger.info("%.1f tokens/s generated over the last %ds, %d requests running",
                        (now - last) / interval, interval, metrics.running)
        last = now
