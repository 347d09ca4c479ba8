"""`build_engine`: flags -> an engine; --merge_lora folds the adapter into the base (same answers, no adapter)."""

from __future__ import annotations

from swift.core.arguments import parse_args
from swift.infer.arguments import InferArguments
from swift.infer.build import build_engine
from swift.infer.protocol import RequestConfig

ASK = [{"messages": [{"role": "user", "content": "Which adapter is this?"}]}]


def answer(*argv: str) -> tuple[str, tuple[str, ...]]:
    with build_engine(parse_args(InferArguments, list(argv), prog="swift infer")) as engine:
        text = engine.infer(ASK)[0].choices[0].message.content
        return text, tuple(engine.adapters)


def test_merged_and_unmerged_adapters_answer_alike(adapter_dirs):
    a, _ = adapter_dirs
    flags = ("--adapters", str(a), "--temperature", "0", "--max_new_tokens", "10")
    unmerged, adapters = answer(*flags)
    merged, no_adapters = answer(*flags, "--merge_lora", "true")
    assert adapters == ("default",)
    assert no_adapters == ()
    assert merged == unmerged


def test_sampling_flags_are_the_engine_defaults(tiny_llama_dir):
    args = parse_args(InferArguments, ["--model", str(tiny_llama_dir), "--temperature", "0.5", "--top_k", "7",
                                       "--max_new_tokens", "3", "--stop_words", "END"], prog="swift infer")
    with build_engine(args) as engine:
        params = engine.sampling_params(RequestConfig(), 10)
        assert (params.temperature, params.top_k, params.max_tokens) == (0.5, 7, 3)
        assert "END" in params.stop
        assert engine.infer(ASK)[0].usage.completion_tokens == 3
