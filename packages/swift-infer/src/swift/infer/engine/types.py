"""The narrow messages between the chat layer (`InferEngine`) and a backend (`Generator`): token ids in, text out.

The chat layer renders conversations into prompt ids, resolves sampling defaults and parses answers; a backend only
generates. Every backend (PyTorch, vLLM, SGLang, LMDeploy) speaks these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling settings of one generation (no None left: the chat layer filled the defaults)."""

    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: no top-k cut
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    json_mode: bool = False  # the answer must be one JSON object

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None  # a LoRA adapter name the backend loaded; None: the base model
    # A multimodal prompt's processor outputs besides its ids (pixel_values, image_grid_thw, mm_token_type_ids...),
    # for backends whose generator has `accepts_media = True`.
    media: dict[str, Any] | None = None


@dataclass
class TokenLogprobInfo:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first


@dataclass
class GenerationOutput:
    """What one request gained since its last output (a backend sends one per decoding step, or fewer)."""

    text: str  # new text, stop tokens and stop strings excluded
    token_ids: list[int]  # new token ids (the stop token included)
    prompt_tokens: int
    completion_tokens: int  # generated so far
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprobInfo] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Generator(Protocol):
    """A backend: generates from prompt ids. `generate` is cancelled (its iterator closed) to abort a request."""

    @property
    def adapters(self) -> Sequence[str]:
        """Names of the LoRA adapters a request may pick."""
        ...

    @property
    def max_model_len(self) -> int | None:
        """The longest prompt + answer, in tokens (None: unknown)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]: ...

    def close(self) -> None: ...
