"""Errors as OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`), never FastAPI's 422."""

from __future__ import annotations

import logging
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
        return error_response(500, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
