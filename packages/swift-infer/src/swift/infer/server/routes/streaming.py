"""Shared by the generation endpoints: Server-Sent Events, and cancelling work when the client goes away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from swift.core import SwiftError
from swift.infer.engine.errors import EngineError
from swift.infer.server.errors import error_body, internal_error, log_engine_error

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (its generation stops too)."""
    task = asyncio.ensure_future(work)

    async def wait_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone()
    return task.result()


async def sse(chunks: AsyncIterator[BaseModel], request_id: str, on_chunk: Callable[[Any], None] | None = None,
              drop_usage_only: bool = False) -> AsyncIterator[str]:
    """`data: {json}` events, then `data: [DONE]`. An error after the stream started becomes an error event (a
    failure of ours names only `request_id`, as a 500 does).

    `on_chunk` sees every chunk (usage accounting); `drop_usage_only` leaves out the final usage chunk that was
    asked for internally but not by the client.
    """
    try:
        async for chunk in chunks:
            if on_chunk is not None:
                on_chunk(chunk)
            if drop_usage_only and not chunk.choices and chunk.usage is not None:
                continue
            yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    except EngineError as e:
        log_engine_error(request_id, e)
        yield f"data: {_json(internal_error(request_id))}\n\n"
    except SwiftError as e:  # the request's fault, found late: say what to fix
        yield f"data: {_json(error_body(400, str(e)))}\n\n"
    except Exception:  # the stream has started: report it in the stream, the server goes on
        logger.exception("request %s: the stream failed", request_id)
        yield f"data: {_json(internal_error(request_id))}\n\n"
    yield "data: [DONE]\n\n"


def _json(body: dict) -> str:
    import json

    return json.dumps(body, ensure_ascii=False)
