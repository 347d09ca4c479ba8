"""Flags of `swift web-ui` and `swift app` (light: `--help` imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import ModelArgs, TemplateArgs, arg
from swift.infer import InferArgs


@dataclass
class UiArgs:
    """Web UI"""

    server_name: str = arg("127.0.0.1", "address to listen on (0.0.0.0 opens the page to the network: add --auth)",
                           aliases=["host"])
    server_port: int = arg(7860, "port to listen on (0: a free one)", aliases=["port"])
    share: bool = arg(False, "create a public Gradio share link")
    auth: str | None = arg(None, "user:password required to open the page", secret=True, env="SWIFT_UI_AUTH")
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
    api_key: str | None = arg(None, "bearer key of --base_url", secret=True, env="SWIFT_API_KEY")


@dataclass
class AppArguments:
    """A chat web app on a model."""

    model: ModelArgs = field(default_factory=ModelArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    infer: InferArgs = field(default_factory=InferArgs)
    client: ClientArgs = field(default_factory=ClientArgs)
    ui: UiArgs = field(default_factory=UiArgs)
