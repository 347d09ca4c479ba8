"""Errors as OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`), never FastAPI's 422.

The client's faults (400, 401, 404, 429) say what to fix. A failure of ours (500) says nothing but the request's id:
exception messages carry paths, shapes and model internals. The id is also the `x-request-id` header of every
response, and the server log has the traceback under it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from swift.infer.engine.errors import EngineError, RequestError, UnknownAdapterError
from swift.infer.protocol import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


def error_body(status: int, message: str, *, param: str | None = None, code: Any = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(message=message, type=_TYPES.get(status, "server_error"), param=param,
                                         code=code)).model_dump()


def error_response(status: int, message: str, *, param: str | None = None, code: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code), status_code=status, headers=headers)


def internal_error(request_id: str) -> dict[str, Any]:
    """The body of every 500: the request id, nothing of the exception."""
    return error_body(500, f"the server failed on this request; its log has the details under request id "
                           f"{request_id}")


def request_id_of(request: Request) -> str:
    """The id `RequestIds` gave this request."""
    return request.state.request_id


class RequestIds:
    """The outermost ASGI middleware: every HTTP request gets an id (the `x-request-id` response header, part of
    its engine request ids and of its log lines), and an exception nothing else handled becomes a 500 naming only
    that id, its traceback logged here once (Starlette's last-resort handler would re-raise it for uvicorn to log a
    second time)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("request %s: unexpected error serving %s", request_id, scope["path"])
            if not started:  # else the answer is half sent: the connection just ends
                await JSONResponse(internal_error(request_id), status_code=500)(scope, receive, send_with_id)


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "bytes", "dict", "list"}


def field_path(loc: tuple | list) -> str:
    """pydantic's location ("body", "messages", 0, "role") -> "messages[0].role"; union member tags such as
    "str" or "list[TextPart]" (which name a type, not a field) are left out."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" not in str(part) and str(part) not in _TYPE_TAGS:
            out += ("." if out else "") + str(part)
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {errors[0].get('msg')}")
        parts, first = [], None
        for error in errors[:5]:
            path = field_path(error.get("loc", ()))
            first = first or path
            parts.append(f"{path or 'body'}: {error.get('msg')}")
        return error_response(400, "; ".join(parts) or "invalid request", param=first or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(400, str(exc), param=exc.param)

    @app.exception_handler(UnknownAdapterError)
    async def unknown_model(request: Request, exc: UnknownAdapterError) -> JSONResponse:
        return error_response(404, f"The model `{exc.name}` does not exist; served here: {exc.known}",
                              param="model", code="model_not_found")

    @app.exception_handler(EngineError)
    async def engine_failed(request: Request, exc: EngineError) -> JSONResponse:
        request_id = request_id_of(request)
        log_engine_error(request_id, exc)
        return JSONResponse(internal_error(request_id), status_code=500)


def log_engine_error(request_id: str, exc: EngineError) -> None:
    # One line: the engine logged the traceback where it caught the failure, under an id that contains this one.
    logger.error("request %s failed in the engine: %s", request_id, exc)
