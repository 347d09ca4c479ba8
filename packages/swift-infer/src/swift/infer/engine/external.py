"""What the engines over serving libraries (vLLM, SGLang, LMDeploy) share. Each library binds its engine to the
event loop it starts on, so it runs as a `LoopBackend` on a loop thread of its own; `BridgedGenerator` makes that a
`Generator` usable from any other loop, and `ExternalEngine` puts the chat API on top. A library's module then holds
only what is its own: how to start it, how to ask it for tokens, how to stop it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from swift.core import get_model_tokenizer, get_template, require_backend
from swift.core.template import Template
from swift.infer.engine.engine import InferEngine
from swift.infer.engine.loop import LoopBridge
from swift.infer.engine.types import GenerationOutput, GenerationRequest
from swift.infer.protocol import RequestConfig

T = TypeVar("T")


class LoopBackend(Protocol):
    """A serving library on its own event loop. The constructor runs on the caller's thread (imports, options);
    `start` and `shutdown` run on the loop's thread and `generate` on its loop. `adapters` and `max_model_len` are
    read once `start` has run."""

    adapters: Sequence[str]
    max_model_len: int | None

    def start(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]: ...

    def shutdown(self) -> None: ...


class BridgedGenerator:
    """A `Generator` over a `LoopBackend` started on a `LoopBridge` thread; closing a request's stream cancels it
    on the backend's loop (which aborts the request in every library)."""

    def __init__(self, name: str, backend: LoopBackend) -> None:
        self.backend = backend
        self._bridge = LoopBridge(name)
        try:
            self._bridge.call(backend.start)
        except BaseException:
            self._bridge.close()
            raise
        self.max_model_len: int | None = backend.max_model_len

    @property
    def adapters(self) -> Sequence[str]:
        return tuple(self.backend.adapters)  # a backend may add adapters while it serves (swift rollout)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        return self._bridge.stream(lambda: self.backend.generate(request))

    async def run_on_backend(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the backend's loop, from any other loop."""
        return await asyncio.wrap_future(self._bridge.thread.submit(coro))

    def close(self) -> None:
        self._bridge.call(self.backend.shutdown)
        self._bridge.close()


MakeBackend = Callable[[str, Mapping[str, "str | Path"], dict[str, Any]], LoopBackend]


class ExternalEngine(InferEngine):
    """The chat API over a serving library: our template renders the prompt ids, the library generates, our parser
    reads the answers. A subclass names the library's package (`module`, installed by `extra`) and its backend.

    `model`: a model id or local directory. `template`: a `Template`, a template name, or None for the model
    family's. `adapters`: name -> LoRA checkpoint. `engine_kwargs`: the library's own engine options (see the
    subclass).
    """

    module: ClassVar[str]
    extra: ClassVar[str]
    backend_class: ClassVar[MakeBackend]

    def __init__(self, model: str, *, template: Template | str | None = None,
                 adapters: Mapping[str, str | Path] | None = None, default_adapter: str | None = None,
                 default_config: RequestConfig | None = None, model_name: str | None = None,
                 engine_kwargs: dict[str, Any] | None = None) -> None:
        require_backend(self.module, extra=self.extra)  # before anything loads
        engine_kwargs = dict(engine_kwargs or {})
        template, model_dir = _template_and_dir(model, template,
                                                trust_remote_code=bool(engine_kwargs.get("trust_remote_code")))
        backend = self.backend_class(model_dir, dict(adapters or {}), engine_kwargs)
        super().__init__(BridgedGenerator(f"swift-{self.module}", backend), template, model_name=model_name or model,
                         default_adapter=default_adapter, default_config=default_config,
                         generation_config=read_generation_config(model_dir))


def _template_and_dir(model: str, template: Template | str | None, *,
                      trust_remote_code: bool) -> tuple[Template, str]:
    """The template and the local model directory; the tokenizer loads only when they do not come given."""
    if isinstance(template, Template) and Path(model).is_dir():
        return template, str(model)
    tokenizer, model_dir = load_tokenizer(model, trust_remote_code=trust_remote_code)
    return (template if isinstance(template, Template) else get_template(template, tokenizer)), model_dir


def load_tokenizer(model: str, *, trust_remote_code: bool = False) -> tuple[Any, str]:
    """(tokenizer, local model directory): the id resolved as `get_model_tokenizer` does, weights not read."""
    _, tokenizer = get_model_tokenizer(model, load_model=False, trust_remote_code=trust_remote_code)
    return tokenizer, str(tokenizer.swift_model_info.model_dir)


def read_generation_config(model_dir: str) -> dict[str, Any]:
    path = Path(model_dir) / "generation_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
