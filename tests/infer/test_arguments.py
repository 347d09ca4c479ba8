"""Flags of swift infer / deploy / eval: the API key is a secret that can come from the environment."""

from __future__ import annotations

from swift.core.arguments import format_help, parse_args, to_flat_dict
from swift.infer.arguments import DeployArguments


def test_the_api_key_comes_from_SWIFT_API_KEY_and_never_reaches_args_json(monkeypatch):
    monkeypatch.setenv("SWIFT_API_KEY", "sk-from-the-environment")
    args = parse_args(DeployArguments, ["--model", "m"], prog="swift deploy")
    assert args.server.api_key == "sk-from-the-environment"
    assert to_flat_dict(args)["api_key"] is None
    assert parse_args(DeployArguments, ["--api_key", "sk-flag"], prog="swift deploy").server.api_key == "sk-flag"
    help_text = format_help(DeployArguments, prog="swift deploy")
    assert "SWIFT_API_KEY" in help_text.split("--api_key", 1)[1].split("\n  --", 1)[0]
