"""Flag and --config parsing into grouped dataclasses."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import pytest

from swift.core.arguments import DataArgs, ModelArgs, arg, format_help, parse_args, to_flat_dict
from swift.core.errors import ConfigError


@dataclass
class RunArgs:
    """Run"""

    train_type: Literal["lora", "full"] = arg("lora", "what to train", aliases=["tuner_type"], deprecated=["sft_type"])
    lora_rank: int = arg(8, "rank")
    learning_rate: float | None = arg(None, "lr", aliases=["lr"])
    target_modules: list[str] = arg(["all-linear"], "modules")
    gradient_checkpointing: bool = arg(True, "recompute")
    loss_weights: list[float] = arg([], "weights")


@dataclass
class Command:
    """A test command."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    run: RunArgs = field(default_factory=RunArgs)


def test_values_parse_as_users_expect():
    args = parse_args(Command, ["--model", "org/m", "--dataset", "a.jsonl", "b.jsonl#100", "--target_modules",
                                "all-linear", "--gradient_checkpointing", "false", "--lora_rank=16", "--lr", "-1e-4",
                                "--streaming", "--loss_weights", "1", "0.5"])
    assert args.model.model == "org/m"
    assert args.data.dataset == ["a.jsonl", "b.jsonl#100"]
    assert args.run.target_modules == ["all-linear"]
    assert args.run.gradient_checkpointing is False
    assert args.run.lora_rank == 16
    assert args.run.learning_rate == -1e-4
    assert args.data.streaming is True  # a bare boolean flag means true
    assert args.run.loss_weights == [1.0, 0.5]


def test_defaults_are_fresh_per_instance():
    a, b = parse_args(Command, []), parse_args(Command, [])
    a.run.target_modules.append("x")
    assert b.run.target_modules == ["all-linear"]


def test_aliases_are_one_flag_and_old_names_warn(caplog):
    assert parse_args(Command, ["--tuner_type", "full"]).run.train_type == "full"
    with caplog.at_level(logging.WARNING):
        assert parse_args(Command, ["--sft_type", "full"]).run.train_type == "full"
        assert parse_args(Command, ["--model_id_or_path", "org/m"]).model.model == "org/m"
    warnings = [r.getMessage() for r in caplog.records]
    assert "--sft_type is deprecated; use --train_type" in warnings
    assert "--model_id_or_path is deprecated; use --model" in warnings


def test_config_file_merges_and_flags_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: org/from-yaml\nlora_rank: 4\ndataset: [x.jsonl, y.jsonl]\nlr: 0.001\n"
                      "gradient_checkpointing: false\n")
    args = parse_args(Command, ["--config", str(config), "--lora_rank", "32"])
    assert args.model.model == "org/from-yaml"
    assert args.run.lora_rank == 32  # the command line wins over the file
    assert args.data.dataset == ["x.jsonl", "y.jsonl"]
    assert args.run.learning_rate == 0.001
    assert args.run.gradient_checkpointing is False
    # the order on the command line does not matter: flags still win
    assert parse_args(Command, ["--lora_rank", "32", "--config", str(config)]).run.lora_rank == 32


def test_config_errors_name_the_file_and_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("modle: org/m\nlora_rank: many\n")
    with pytest.raises(ConfigError) as e:
        parse_args(Command, ["--config", str(config)])
    message = str(e.value)
    assert f"--config {config} key 'modle': unknown flag --modle; did you mean --model?" in message
    assert f"--config {config} key 'lora_rank'" in message
    assert "INT" in message
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        parse_args(Command, ["--config", str(broken)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(Command, ["--config", str(tmp_path / "missing.yaml")])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        parse_args(Command, ["--lora_rank", "x", "--train_type", "lroa", "--strict", "maybe", "--modle", "m"])
    lines = str(e.value).splitlines()
    assert len(lines) == 4
    assert any("--train_type must be one of lora, full; got 'lroa' (did you mean 'lora'?)" in line for line in lines)
    assert any("--strict takes true or false" in line for line in lines)


def test_stray_values_and_missing_values_are_errors():
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_args(Command, ["sft.yaml"])
    with pytest.raises(ConfigError, match="--model needs a value"):
        parse_args(Command, ["--model"])


def test_help_is_grouped_with_defaults(capsys):
    text = format_help(Command, prog="swift test")
    assert text.index("Model:") < text.index("Data:") < text.index("Run:")
    assert "--train_type, --tuner_type {lora,full}" in text
    assert "(default: lora)" in text
    assert "[deprecated: --sft_type]" in text
    with pytest.raises(SystemExit) as e:
        parse_args(Command, ["-h"])
    assert e.value.code == 0
    assert "--lora_rank INT" in capsys.readouterr().out


def test_flat_dict_has_every_flag():
    flat = to_flat_dict(parse_args(Command, ["--model", "m"]))
    assert flat["model"] == "m"
    assert flat["lora_rank"] == 8
    assert "dataset" in flat


KINDS: dict[str, str | None] = {"alpha": None, "beta": None, "gamma": "needs a device we do not have"}


@dataclass
class PluginArgs:
    """Plugins"""

    kind: str = arg("alpha", "a registry-backed choice", choices=lambda: KINDS)
    plugins: list[str] = arg([], "files that register kinds", plugin=True)
    port: int = arg(8000, "a typed flag with an environment fallback", env="SWIFT_API_KEY")


@dataclass
class PluginCommand:
    model: ModelArgs = field(default_factory=ModelArgs)
    extra: PluginArgs = field(default_factory=PluginArgs)


def test_registry_choices_are_checked_and_unbuilt_ones_refused(capsys):
    assert parse_args(PluginCommand, ["--kind", "beta"]).extra.kind == "beta"
    with pytest.raises(ConfigError, match=r"--kind must be one of alpha, beta, gamma; got 'bta' \(did you mean"):
        parse_args(PluginCommand, ["--kind", "bta"])
    with pytest.raises(ConfigError, match=r"--kind gamma: not built yet \(needs a device we do not have\)"):
        parse_args(PluginCommand, ["--kind", "gamma"])
    assert "[not built yet: gamma]" in format_help(PluginCommand, prog="x")


def test_plugin_files_run_before_the_flags_that_choose_what_they_register(tmp_path):
    plugin = tmp_path / "more_kinds.py"
    plugin.write_text(f"import {__name__} as t\nt.KINDS['delta'] = None\n")
    # the plugin flag comes after the choice on the command line, and still runs first
    assert parse_args(PluginCommand, ["--kind", "delta", "--plugins", str(plugin)]).extra.kind == "delta"
    KINDS.pop("delta")


def test_secrets_stay_out_of_flat_dicts_and_fall_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    parsed = parse_args(PluginCommand, [])
    assert parsed.model.hub_token == "hf_from_env"
    assert to_flat_dict(parse_args(PluginCommand, ["--hub_token", "hf_given"]))["hub_token"] is None
    assert parse_args(PluginCommand, ["--hub_token", "hf_given"]).model.hub_token == "hf_given"  # the flag wins
    monkeypatch.setenv("SWIFT_API_KEY", "9000")
    assert parse_args(PluginCommand, []).extra.port == 9000  # converted like a flag value
    monkeypatch.setenv("SWIFT_API_KEY", "nine")
    with pytest.raises(ConfigError, match=r"\$SWIFT_API_KEY \(for --port\) takes INT"):
        parse_args(PluginCommand, [])
