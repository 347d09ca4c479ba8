"""`Gate`: the ASGI middleware every request passes: the API key (401), the concurrency limit (429), metrics.

Pure ASGI rather than FastAPI's `@app.middleware`: a streamed answer counts as running until its last byte is
sent, and the 401 / 429 bodies are written before any route (or body validation) runs.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from swift.infer.server.errors import error_body
from swift.infer.server.metrics import Metrics

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


class Gate:
    def __init__(self, app: Any, *, api_key: str | None, max_concurrency: int | None, metrics: Metrics) -> None:
        self.app, self.api_key, self.max_concurrency, self.metrics = app, api_key, max_concurrency, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), 500

        async def send_and_watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_key is not None and not self._authorized(scope):
                status = 401
                await _send_json(send, 401, error_body(401, "Incorrect or missing API key: send it as "
                                                       "'Authorization: Bearer <key>'", code="invalid_api_key"),
                                 {"www-authenticate": "Bearer"})
                return
            if path not in GENERATION_PATHS or scope["method"] != "POST":
                await self.app(scope, receive, send_and_watch)
                return
            if self.max_concurrency is not None and self.metrics.running >= self.max_concurrency:
                status = 429
                await _send_json(send, 429, error_body(
                    429, f"the server is busy: {self.metrics.running} requests running, at most "
                         f"{self.max_concurrency} at once (--max_concurrency); retry later"), {"retry-after": "1"})
                return
            self.metrics.running += 1
            try:
                await self.app(scope, receive, send_and_watch)
            finally:
                self.metrics.running -= 1
        finally:
            self.metrics.observe_request(path, status, time.perf_counter() - start)

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                          self.api_key.encode())
        return False


async def _send_json(send: Any, status: int, body: dict, headers: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})
