"""`swift app`: one chat page on a model served in this process, or on a running server (--base_url)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from swift.core import ConfigError, MissingBackendError
from swift.ui.arguments import AppArguments
from swift.ui.chat import ChatBackend, build_chat
from swift.ui.i18n import t


@contextlib.contextmanager
def chat_backend(args: AppArguments) -> Iterator[ChatBackend]:
    """--base_url: that server (the model from --model, else the first it lists); else our engine, in process."""
    if args.client.base_url:
        from swift.infer import list_models, normalize_url

        url = normalize_url(args.client.base_url)
        listed = list_models(url, args.client.api_key)
        yield ChatBackend(url, args.client.api_key, args.model.model or listed[0])
        return
    if args.model.model is None and not args.infer.adapters and not args.infer.ckpt_dir:
        raise ConfigError("--model: which model? Pass --model ID_OR_DIR (or --adapters / --ckpt_dir), or "
                          "--base_url URL of a running server")
    try:
        from swift.infer import DeployArguments, own_server
    except ImportError as e:
        raise MissingBackendError("swift.infer", extra="swift-infer") from e
    deploy = DeployArguments(model=args.model, template=args.template, infer=args.infer)
    with own_server(deploy) as endpoint:
        yield ChatBackend(endpoint.url, endpoint.api_key, endpoint.models[0])


def build_app(args: AppArguments, backend: ChatBackend, lang: str) -> Any:
    from swift.ui.launch import import_gradio

    gr = import_gradio()
    infer = args.infer
    defaults = {"temperature": infer.temperature if infer.temperature is not None else 0.7,
                "top_p": infer.top_p if infer.top_p is not None else 1.0,
                "max_new_tokens": infer.max_new_tokens or 512}
    with gr.Blocks(title=t("app_title", lang)) as demo:
        gr.Markdown(f"## {t('app_title', lang)} · `{backend.model}`")
        build_chat(gr, lambda: backend, lang, defaults=defaults, system=args.template.system)
    return demo
