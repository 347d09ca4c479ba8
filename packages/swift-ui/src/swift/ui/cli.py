"""Entry points of `swift web-ui` and `swift app` (registered under `swift.commands`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import ModelArgs, TemplateArgs, arg
from swift.core.cli.runner import not_built, resolve_args


@dataclass
class UiArgs:
    """Web UI"""

    server_name: str = arg("127.0.0.1", "address to listen on", aliases=["host"])
    server_port: int = arg(7860, "port to listen on", aliases=["port"])
    share: bool = arg(False, "create a public Gradio share link")
    lang: Literal["en", "zh"] | None = arg(None, "interface language (default: SWIFT_UI_LANG, else en)")


@dataclass
class WebUiArguments:
    """A web UI for training, inference, evaluation and export."""

    ui: UiArgs = field(default_factory=UiArgs)


@dataclass
class AppArguments:
    """A chat web app on a model."""

    model: ModelArgs = field(default_factory=ModelArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    ui: UiArgs = field(default_factory=UiArgs)


def web_ui_main(args: WebUiArguments | Sequence[str] | None = None) -> int:
    resolve_args(WebUiArguments, args, prog="swift web-ui")
    raise not_built("swift web-ui", "issue 9")


def app_main(args: AppArguments | Sequence[str] | None = None) -> int:
    resolve_args(AppArguments, args, prog="swift app")
    raise not_built("swift app", "issue 9")
