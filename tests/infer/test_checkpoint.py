"""What to serve from --model / --adapters / --ckpt_dir and the checkpoints' args.json; flag errors all at once."""

from __future__ import annotations

import pytest

from swift.core.arguments import parse_args
from swift.core.errors import ConfigError
from swift.infer.arguments import InferArguments
from swift.infer.checkpoint import DEFAULT_ADAPTER, resolve_serve_spec


def spec_of(*argv: str):
    return resolve_serve_spec(parse_args(InferArguments, list(argv), prog="swift infer"))


def test_an_sft_checkpoint_names_its_base_model_and_template(sft_checkpoint, tiny_llama_dir):
    spec = spec_of("--adapters", str(sft_checkpoint))
    assert spec.model == str(tiny_llama_dir)
    assert spec.template == "smollm2"
    assert spec.adapters == {DEFAULT_ADAPTER: str(sft_checkpoint)}
    assert spec.default_adapter == DEFAULT_ADAPTER
    assert spec_of("--ckpt_dir", str(sft_checkpoint)).adapters == spec.adapters
    assert spec_of("--adapters", str(sft_checkpoint), "--template", "chatml", "--system", "Be terse.").system == \
        "Be terse."


def test_named_adapters_are_served_side_by_side(adapter_dirs):
    a, b = adapter_dirs
    spec = spec_of("--adapters", f"a={a}", f"b={b}")
    assert spec.adapters == {"a": str(a), "b": str(b)}
    assert spec.default_adapter is None
    assert spec_of("--adapters", str(a), "--merge_lora", "true").merge == [str(a)]


def test_a_full_weights_checkpoint_is_the_model(tiny_llama_dir):
    assert spec_of("--ckpt_dir", str(tiny_llama_dir)).model == str(tiny_llama_dir)


def test_every_flag_problem_is_reported_at_once(tmp_path, adapter_dirs):
    with pytest.raises(ConfigError) as caught:
        spec_of("--adapters", str(tmp_path / "missing"), "--temperature", "5", "--max_new_tokens", "0")
    message = str(caught.value)
    for flag in ("--adapters", "--temperature", "--max_new_tokens", "--model"):
        assert flag in message
    a, b = adapter_dirs
    with pytest.raises(ConfigError, match="without a name"):
        spec_of("--adapters", str(a), str(b))
