"""The OpenAI-compatible server `swift eval` talks to: ours, started in this process, or the one at --eval_url."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from swift.core import SwiftError
from swift.infer.arguments import DeployArguments

logger = logging.getLogger(__name__)


class EndpointError(SwiftError):
    """The server to evaluate does not answer, or answers without models."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL ending in /v1
    api_key: str | None
    models: list[str]  # what /v1/models lists: the base model first, then named adapters


def normalize_url(url: str) -> str:
    """`http://h:p`, `http://h:p/v1/` or `.../v1/chat/completions` -> `http://h:p/v1`."""
    url = url.strip().rstrip("/").removesuffix("/chat/completions").removesuffix("/completions")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


def list_models(url: str, api_key: str | None, *, timeout: float = 5.0) -> list[str]:
    """GET {url}/models; raise `EndpointError` naming the URL within `timeout` seconds when it does not answer."""
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {api_key or 'EMPTY'}"})
    # A proxy from the environment must not stand between us and a server on this machine.
    local = urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        hint = " (wrong or missing --api_key?)" if e.code in (401, 403) else ""
        raise EndpointError(f"--eval_url {url}: GET /models answered HTTP {e.code}{hint}") from None
    except (OSError, ValueError) as e:
        raise EndpointError(f"--eval_url {url}: no OpenAI-compatible server answers there ({e}); start one "
                            "(e.g. `swift deploy --model ...`) or fix the URL") from None
    models = [card.get("id") for card in body.get("data", []) if isinstance(card, dict) and card.get("id")]
    if not models:
        raise EndpointError(f"--eval_url {url}: GET /models lists no model")
    return models


@contextlib.contextmanager
def own_server(args: DeployArguments) -> Iterator[Endpoint]:
    """`swift deploy`'s app on our engine, on 127.0.0.1 at a free port with a random key, in a background thread."""
    from swift.infer.backends import build_engine
    from swift.infer.checkpoint import resolve_serve_spec

    spec = resolve_serve_spec(args)
    model_name = args.server.served_model_name or spec.model
    with serve_engine(build_engine(args, model_name=model_name), model_name) as endpoint:
        yield endpoint


@contextlib.contextmanager
def serve_engine(engine, model_name: str) -> Iterator[Endpoint]:
    """`swift deploy`'s app on `engine` (built here or given: a model being trained), on 127.0.0.1 at a free port
    with a random key, in a background thread."""
    import uvicorn

    from swift.infer.server.app import ServerOptions, build_app

    api_key = secrets.token_urlsafe(16)
    app = build_app(engine, ServerOptions(model_name=model_name, api_key=api_key, log_interval=0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="swift-eval-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise EndpointError(f"our eval server on {url} did not start")
            time.sleep(0.05)
        yield Endpoint(url, api_key, list_models(url, api_key))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
