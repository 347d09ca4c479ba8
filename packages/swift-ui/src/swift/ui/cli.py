"""Entry points of `swift web-ui` and `swift app` (registered under `swift.commands`).

Parsing imports nothing heavy (`swift web-ui --help` stays fast); gradio loads only when a page starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from swift.core.cli import resolve_args
from swift.ui.arguments import AppArguments, WebUiArguments


def web_ui_main(args: WebUiArguments | Sequence[str] | None = None) -> int:
    """`swift web-ui`: forms for sft/pt, rlhf, infer, export and eval that run the `swift` CLI."""
    parsed = resolve_args(WebUiArguments, args, prog="swift web-ui")
    from swift.ui.launch import launch
    from swift.ui.web_ui import build_web_ui

    return launch(lambda lang: build_web_ui(parsed, lang), parsed.ui)


def app_main(args: AppArguments | Sequence[str] | None = None) -> int:
    """`swift app`: a chat page on a model loaded here, or on a running server (--base_url)."""
    parsed = resolve_args(AppArguments, args, prog="swift app")
    from swift.ui.app import build_app, chat_backend
    from swift.ui.launch import launch

    with chat_backend(parsed) as backend:
        return launch(lambda lang: build_app(parsed, backend, lang), parsed.ui)
