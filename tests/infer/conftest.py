"""Fixtures for swift.infer: engines on the tiny random llama, LoRA adapters, a scripted backend, live servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from swift.infer.engine.types import GenerationOutput, GenerationRequest


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds (generous: CPUs here are shared)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_engine(tiny_llama_dir):
    from swift.infer.engine import PtEngine

    engine = PtEngine(str(tiny_llama_dir), max_batch_size=8)
    yield engine
    engine.close()


def make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so that it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out)
    (out / "args.json").write_text(json.dumps({"model": str(base_dir), "template_name": "smollm2"}))
    return out


@pytest.fixture(scope="session")
def adapter_dirs(tiny_llama_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_llama_dir, root / "a", 1), make_adapter(tiny_llama_dir, root / "b", 2)


@pytest.fixture(scope="session")
def sft_checkpoint(tiny_llama_dir, tmp_path_factory) -> Path:
    """A real `swift sft` LoRA checkpoint (2 steps) of the tiny llama: adapter files and args.json."""
    from swift.train import sft_main

    root = tmp_path_factory.mktemp("sft")
    data = root / "chat.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                       {"role": "assistant", "content": f"Answer {i}."}]})
                              for i in range(16)))
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), "--max_steps", "2", "--output_dir",
                       str(root / "out"), "--report_to", "none", "--bf16", "false", "--per_device_train_batch_size",
                       "4", "--gradient_checkpointing", "false"])
    return Path(result.last_checkpoint)


class ScriptedGenerator:
    """A backend that 'generates' a fixed text, a few characters per step: for tool calls and server plumbing."""

    def __init__(self, text: str, *, chunk: int = 3, delay: float = 0.0, adapters: Sequence[str] = ()) -> None:
        self.text, self.chunk, self.delay = text, chunk, delay
        self._adapters = tuple(adapters)
        self.started = 0
        self.cancelled = 0
        self.fail_next: Exception | None = None

    @property
    def adapters(self) -> Sequence[str]:
        return self._adapters

    @property
    def max_model_len(self) -> int | None:
        return 4096

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        self.started += 1
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        pieces = [self.text[i:i + self.chunk] for i in range(0, len(self.text), self.chunk)] or [""]
        try:
            for n, piece in enumerate(pieces, 1):
                if self.delay:
                    await asyncio.sleep(self.delay)
                done = n == len(pieces)
                yield GenerationOutput(piece, [n], len(request.prompt_ids), n, "stop" if done else None)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    def close(self) -> None:
        pass


@pytest.fixture
def scripted_engine(smollm2_tokenizer):
    """An InferEngine whose backend writes a Hermes tool call (ChatML template: tools render, calls parse)."""
    from swift.core import get_template
    from swift.infer.engine.engine import InferEngine

    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    generator = ScriptedGenerator("Let me check. " + call)
    return InferEngine(generator, get_template("chatml", smollm2_tokenizer), model_name="scripted")


@contextlib.contextmanager
def live_server(engine, **options) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 (a free port) in a thread; yields the /v1 base URL."""
    import uvicorn

    from swift.infer.server.app import ServerOptions, build_app

    options = {"model_name": engine.model_name, "log_interval": 0, "close_engine": False, **options}
    app = build_app(engine, ServerOptions(**options))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
