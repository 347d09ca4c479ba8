"""Entry points of `swift web-ui` and `swift app` (registered under `swift.commands`).

Parsing imports nothing heavy (`swift web-ui --help` stays fast); gradio loads only when a page starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import ModelArgs, TemplateArgs, arg
from swift.core.cli.runner import resolve_args
from swift.infer.arguments import InferArgs


@dataclass
class UiArgs:
    """Web UI"""

    server_name: str = arg("127.0.0.1", "address to listen on (0.0.0.0 opens the page to the network: add --auth)",
                           aliases=["host"])
    server_port: int = arg(7860, "port to listen on (0: a free one)", aliases=["port"])
    share: bool = arg(False, "create a public Gradio share link")
    auth: str | None = arg(None, "user:password required to open the page")
    lang: Literal["en", "zh"] | None = arg(None, "interface language (default: SWIFT_UI_LANG, else en)")


@dataclass
class WebUiRunArgs:
    """Runs"""

    runs_dir: str | None = arg(None, "where the runs started from the page are recorded (command, pid, log); "
                                     "default: $SWIFT_CACHE/web-ui/runs")


@dataclass
class WebUiArguments:
    """A web UI for training, inference, evaluation and export."""

    ui: UiArgs = field(default_factory=UiArgs)
    runs: WebUiRunArgs = field(default_factory=WebUiRunArgs)


@dataclass
class ClientArgs:
    """Remote server"""

    base_url: str | None = arg(None, "chat with this OpenAI-compatible server (http://HOST:PORT/v1) instead of "
                                     "loading the model here")
    api_key: str | None = arg(None, "bearer key of --base_url")


@dataclass
class AppArguments:
    """A chat web app on a model."""

    model: ModelArgs = field(default_factory=ModelArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    infer: InferArgs = field(default_factory=InferArgs)
    client: ClientArgs = field(default_factory=ClientArgs)
    ui: UiArgs = field(default_factory=UiArgs)


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
