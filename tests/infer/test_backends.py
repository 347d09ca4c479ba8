"""The backend registry and `build_engine`: --infer_backend offers the registered names (a plugin file adds one),
builders read the flags (sampling defaults, template flags), --merge_lora folds the adapter into the base."""

from __future__ import annotations

import pytest

from swift.core import ConfigError, DuplicateNameError
from swift.core.arguments import collect_flags, format_help, parse_args
from swift.infer.arguments import InferArguments
from swift.infer.backends import BACKENDS, BackendMeta, build_engine, build_pt, get_backend, register_backend
from swift.infer.protocol import RequestConfig

ASK = [{"messages": [{"role": "user", "content": "Which adapter is this?"}]}]
PLUGIN = '''
from swift.infer import BackendMeta, PtEngine, register_backend


def build_renamed(args, spec, model_name):
    return PtEngine(spec.model, model_name="built by the plugin")


register_backend(BackendMeta("pt-renamed", build_renamed, help="the PyTorch engine under another name"))
'''


@pytest.fixture
def registry():
    """The backend registry, put back as it was after the test."""
    saved = dict(BACKENDS)
    yield BACKENDS
    BACKENDS.clear()
    BACKENDS.update(saved)


def parse(*argv: str) -> InferArguments:
    return parse_args(InferArguments, list(argv), prog="swift infer")


def answer(*argv: str) -> tuple[str, tuple[str, ...]]:
    with build_engine(parse(*argv)) as engine:
        text = engine.infer(ASK)[0].choices[0].message.content
        return text, tuple(engine.adapters)


def test_infer_backend_offers_the_registry_keys(registry):
    flag = collect_flags(InferArguments)["infer_backend"]
    assert flag.choices == tuple(BACKENDS) == ("pt", "vllm", "sglang", "lmdeploy")
    assert "--infer_backend {pt,vllm,sglang,lmdeploy}" in format_help(InferArguments, prog="swift infer")
    with pytest.raises(ConfigError, match="did you mean 'vllm'"):
        parse("--infer_backend", "vlm")
    with pytest.raises(ConfigError, match=r"did you mean \['vllm'\]"):
        get_backend("vlm")


def test_a_name_is_registered_once_unless_replaced(registry):
    with pytest.raises(DuplicateNameError, match="'pt' exists"):
        register_backend(BackendMeta("pt", build_pt))
    register_backend(BackendMeta("pt", build_pt, help="replaced"), replace=True)
    assert get_backend("pt").help == "replaced"


def test_a_plugin_file_registers_a_backend_the_flag_then_accepts(registry, tiny_llama_dir, tmp_path):
    plugin = tmp_path / "my_backend.py"
    plugin.write_text(PLUGIN)
    args = parse("--custom_register_path", str(plugin), "--infer_backend", "pt-renamed", "--model",
                 str(tiny_llama_dir))
    assert "pt-renamed" in collect_flags(InferArguments)["infer_backend"].choices
    with build_engine(args) as engine:
        assert engine.model_name == "built by the plugin"
        assert engine.infer(ASK, RequestConfig(max_tokens=2))[0].usage.completion_tokens == 2


def test_merge_lora_is_refused_up_front_by_a_backend_that_cannot_merge(registry, adapter_dirs):
    built = []
    register_backend(BackendMeta("no-merge", lambda *args: built.append(args)))
    args = parse("--adapters", str(adapter_dirs[0]), "--merge_lora", "true", "--infer_backend", "no-merge")
    with pytest.raises(ConfigError, match="--merge_lora with --infer_backend no-merge"):
        build_engine(args)
    assert built == []


def test_merged_and_unmerged_adapters_answer_alike(adapter_dirs):
    a, _ = adapter_dirs
    flags = ("--adapters", str(a), "--temperature", "0", "--max_new_tokens", "10")
    unmerged, adapters = answer(*flags)
    merged, no_adapters = answer(*flags, "--merge_lora", "true")
    assert adapters == ("default",)
    assert no_adapters == ()
    assert merged == unmerged


def test_sampling_flags_are_the_engine_defaults(tiny_llama_dir):
    args = parse("--model", str(tiny_llama_dir), "--temperature", "0.5", "--top_k", "7", "--max_new_tokens", "3",
                 "--stop_words", "END")
    with build_engine(args) as engine:
        params = engine.sampling_params(RequestConfig(), 10)
        assert (params.temperature, params.top_k, params.max_tokens) == (0.5, 7, 3)
        assert "END" in params.stop
        assert engine.infer(ASK)[0].usage.completion_tokens == 3


def test_template_flags_shape_the_prompts_served(tiny_llama_dir):
    long = [{"messages": [{"role": "user", "content": "word " * 60}]}]
    args = parse("--model", str(tiny_llama_dir), "--max_length", "24", "--truncation_strategy", "left",
                 "--system", "You are a pirate.", "--max_new_tokens", "1")
    with build_engine(args) as engine:
        assert engine.infer(long)[0].usage.prompt_tokens == 24  # cut from the left, the generation prompt kept
        assert "pirate" in engine.tokenizer.decode(engine.template.encode(ASK[0])["input_ids"])
