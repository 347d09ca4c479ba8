"""`InferEngine`: OpenAI-style chat on top of a backend `Generator`, the same for every backend.

It renders conversations with the template, fills sampling defaults (request > engine defaults > the model's
generation config), runs `n` choices, and parses answers into content / reasoning_content / tool_calls. Backends
(`PtEngine`, `VllmEngine`, ...) only provide the `Generator` and the template.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from swift.core.template import Template, TemplateError
from swift.infer.engine.answer import AnswerParser, AnswerStream
from swift.infer.engine.errors import EngineError, RequestError, UnknownAdapterError
from swift.infer.engine.loop import LoopThread, merge_streams
from swift.infer.engine.types import GenerationOutput, GenerationRequest, Generator, SamplingParams
from swift.infer.protocol import (
    ChatCompletionChoice,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionResponse,
    CompletionStreamResponse,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    InferRequest,
    RequestConfig,
    ResponseMessage,
    TokenLogprob,
    TopLogprob,
    UsageInfo,
)
from swift.infer.protocol.response import CompletionLogprobs, ResponseFunctionCall, ResponseToolCall, new_id

logger = logging.getLogger(__name__)
T = TypeVar("T")

_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}


@dataclass
class _Job:
    """One request, rendered and resolved, ready for the backend."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    n: int
    adapter: str | None
    parser: AnswerParser | None  # None: a raw completion, returned as generated
    media: dict[str, Any] | None = None  # a multimodal prompt's processor outputs (pixel_values...)

    def generation(self, index: int) -> GenerationRequest:
        params = self.params
        if params.seed is not None and index:
            params = replace(params, seed=params.seed + index)  # n choices from one seed must differ
        return GenerationRequest(f"{self.request_id}-{index}", self.prompt_ids, params, self.adapter, self.media)


@dataclass
class _Choice:
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list = field(default_factory=list)


class InferEngine:
    """Chat completions from a `Generator` backend and a template.

    `infer` is synchronous (a list of requests in, responses out, all batched together); `infer_async` and
    `stream` serve one request each and may be called concurrently: the backend batches what runs at once.
    """

    def __init__(self, generator: Generator, template: Template, *, model_name: str,
                 default_adapter: str | None = None, default_config: RequestConfig | None = None,
                 generation_config: dict[str, Any] | None = None) -> None:
        """`default_adapter`: the adapter requests use when they name none. `default_config`: sampling defaults
        for fields a request leaves unset (the CLI flags). `generation_config`: the model's generation_config.json
        values, the last fallback."""
        self.generator, self.template, self.model_name = generator, template, model_name
        self.tokenizer = template.tokenizer
        if default_adapter is not None and default_adapter not in generator.adapters:
            raise UnknownAdapterError(default_adapter, list(generator.adapters))
        self.default_adapter = default_adapter
        self.default_config = default_config or RequestConfig()
        self.generation_config = generation_config or {}
        self._stop_words = tuple(template.stop_words)
        self._stop_token_ids, self._stop_strings = self._split_stop_words()
        self._loop: LoopThread | None = None

    # ----- public API -----

    @property
    def adapters(self) -> Sequence[str]:
        return self.generator.adapters

    def infer(self, requests: Sequence[InferRequest | dict], request_config: RequestConfig | None = None, *,
              adapter: str | None = None) -> list[ChatCompletionResponse]:
        """Answer every request (batched together); raises the first request's error."""
        jobs = [self._prepare_chat(request, request_config, adapter) for request in requests]

        async def run_all() -> list[ChatCompletionResponse]:
            return list(await asyncio.gather(*(self._run_chat(job) for job in jobs)))

        return self._loop_thread().run(run_all())

    def submit(self, request: InferRequest | dict, request_config: RequestConfig | None = None, *,
               adapter: str | None = None) -> concurrent.futures.Future[ChatCompletionResponse]:
        """Start one request now (it joins the running batch) and return a future of its response."""
        job = self._prepare_chat(request, request_config, adapter)
        return self._loop_thread().submit(self._run_chat(job))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that uses this engine (`stream`, `infer_async`) on the engine's own event loop."""
        return self._loop_thread().run(coro)

    async def infer_async(self, request: InferRequest | dict, request_config: RequestConfig | None = None, *,
                          adapter: str | None = None, request_id: str | None = None) -> ChatCompletionResponse:
        return await self._run_chat(self._prepare_chat(request, request_config, adapter, request_id))

    def stream(self, request: InferRequest | dict, request_config: RequestConfig | None = None, *,
               adapter: str | None = None, include_usage: bool = False,
               request_id: str | None = None) -> AsyncIterator[ChatCompletionStreamResponse]:
        """Chunks of one request's answer. The request is checked now (errors raise here, before any chunk);
        closing the iterator early cancels the generation."""
        job = self._prepare_chat(request, request_config, adapter, request_id)
        return self._stream_chat(job, include_usage)

    async def complete_async(self, prompt: str | Sequence[int], request_config: RequestConfig | None = None, *,
                             adapter: str | None = None, request_id: str | None = None) -> CompletionResponse:
        """A raw completion of `prompt` (text or token ids), without the chat template."""
        job = self._prepare_completion(prompt, request_config, adapter, request_id)
        choices = await asyncio.gather(*(self._collect(job, index) for index in range(job.n)))
        return CompletionResponse(id=job.request_id, model=self.model_name, usage=self._usage(job, choices), choices=[
            CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason,
                             logprobs=self._completion_logprobs(c.logprobs) if job.params.logprobs else None)
            for i, c in enumerate(choices)])

    def complete_stream(self, prompt: str | Sequence[int], request_config: RequestConfig | None = None, *,
                        adapter: str | None = None, include_usage: bool = False,
                        request_id: str | None = None) -> AsyncIterator[CompletionStreamResponse]:
        job = self._prepare_completion(prompt, request_config, adapter, request_id)
        return self._stream_completion(job, include_usage)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        self.generator.close()

    def __enter__(self) -> InferEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- preparing requests -----

    def _loop_thread(self) -> LoopThread:
        if self._loop is None:
            self._loop = LoopThread("swift-infer-sync")
        return self._loop

    def _resolve_adapter(self, adapter: str | None) -> str | None:
        if adapter is None:
            return self.default_adapter
        if adapter in ("", self.model_name):
            return None  # the base model, by name
        if adapter not in self.generator.adapters:
            raise UnknownAdapterError(adapter, [self.model_name, *self.generator.adapters])
        return adapter

    def _prepare_chat(self, request: InferRequest | dict, config: RequestConfig | None, adapter: str | None,
                      request_id: str | None = None) -> _Job:
        request = request if isinstance(request, InferRequest) else InferRequest.model_validate(request)
        config = config or RequestConfig()
        if request.has_media and not getattr(self.generator, "accepts_media", False):
            raise RequestError(f"this engine ({type(self.generator).__name__}) does not take images, videos or "
                               "audio yet; serve the model with --infer_backend pt", param="messages")
        try:
            encoded = self.template.encode(request.template_row())
        except TemplateError as e:
            raise RequestError(str(e), param="messages") from e
        prompt_ids = list(encoded["input_ids"])
        media = {k: v for k, v in encoded.items() if k not in ("input_ids", "labels") and v is not None}
        if not any(not key.endswith("token_type_ids") for key in media):
            media = None  # a text prompt of a multimodal model: decoded like any text prompt
        opens_think = self.template.decode(prompt_ids[-4:]).rstrip().endswith("<think>")
        parser = AnswerParser.for_template(self.template, has_tools=bool(request.tools), opens_think=opens_think)
        job = self._job(request_id or new_id("chatcmpl"), prompt_ids, config, adapter, parser, chat=True)
        job.media = media
        if request.tools and (stop := _agent_stop(self.template)) is not None:
            job.params = replace(job.params, stop=(*job.params.stop, stop))
        return job

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        """The token ids of a raw completion's prompt (text, or ids checked against the vocabulary)."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        prompt_ids = [int(token) for token in prompt]
        if not prompt_ids:
            raise RequestError("the prompt is empty", param="prompt")
        # An id outside the embedding fails the model's forward: on CPU for every request prefilled with it, on CUDA
        # as a device-side assert that breaks the engine until a restart. Refused here, before the backend.
        vocab = len(self.tokenizer)
        if (bad := next((t for t in prompt_ids if not 0 <= t < vocab), None)) is not None:
            raise RequestError(f"the prompt's token id {bad} is outside the vocabulary: token ids go from 0 to "
                               f"{vocab - 1} (vocabulary size {vocab})", param="prompt")
        return prompt_ids

    def _prepare_completion(self, prompt: str | Sequence[int], config: RequestConfig | None, adapter: str | None,
                            request_id: str | None) -> _Job:
        return self._job(request_id or new_id("cmpl"), self.encode_prompt(prompt), config or RequestConfig(), adapter,
                         None, chat=False)

    def _job(self, request_id: str, prompt_ids: list[int], config: RequestConfig, adapter: str | None,
             parser: AnswerParser | None, *, chat: bool) -> _Job:
        adapter_name = self._resolve_adapter(adapter)
        params = self.sampling_params(config, len(prompt_ids), chat=chat)
        return _Job(request_id, prompt_ids, params, config.n, adapter_name, parser)

    def sampling_params(self, config: RequestConfig, prompt_tokens: int, *, chat: bool = True) -> SamplingParams:
        """Request values, else the engine's defaults, else the model's generation config."""
        default, gen = self.default_config, self.generation_config

        def pick(name: str) -> Any:
            for value in (getattr(config, name), getattr(default, name)):
                if value is not None:
                    return value
            if name == "temperature" and not gen.get("do_sample", False):
                return 0.0  # the model's config says greedy
            return gen.get(name) if gen.get(name) is not None else _SAMPLING_DEFAULTS.get(name)

        limit = self.generator.max_model_len
        if limit is not None and prompt_tokens >= limit:
            raise RequestError(f"the prompt is {prompt_tokens} tokens; this model takes at most {limit} tokens "
                               "(prompt and answer together)", param="messages" if chat else "prompt")
        max_tokens = config.max_tokens or default.max_tokens or gen.get("max_new_tokens")
        room = (limit - prompt_tokens) if limit is not None else None
        max_tokens = min(max_tokens, room) if max_tokens and room else (max_tokens or room or 2048)
        top_logprobs = config.top_logprobs if config.top_logprobs is not None else (default.top_logprobs or 0)
        stop = tuple(config.stop if config.stop is not None else (default.stop or ()))
        return SamplingParams(
            max_tokens=max_tokens, temperature=float(pick("temperature")), top_p=float(pick("top_p")),
            top_k=int(pick("top_k") or 0), repetition_penalty=float(pick("repetition_penalty")),
            presence_penalty=float(config.presence_penalty or default.presence_penalty or 0.0),
            frequency_penalty=float(config.frequency_penalty or default.frequency_penalty or 0.0),
            stop=stop + (self._stop_strings if chat else ()), stop_token_ids=self._stop_token_ids,
            seed=config.seed if config.seed is not None else default.seed,
            logprobs=bool(config.logprobs or default.logprobs or top_logprobs), top_logprobs=top_logprobs,
            json_mode=config.is_json or default.is_json)

    def _split_stop_words(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """Stop words that are one token stop on that token; longer ones are matched as text. EOS ids always stop."""
        ids: list[int] = []
        eos = self.generation_config.get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
        if isinstance(self.tokenizer.eos_token_id, int):
            ids.append(self.tokenizer.eos_token_id)
        strings = []
        for word in self._stop_words:
            encoded = self.tokenizer.encode(word, add_special_tokens=False)
            if len(encoded) == 1:
                ids.append(encoded[0])
            else:
                strings.append(word)
        return tuple(dict.fromkeys(ids)), tuple(strings)

    # ----- running -----

    async def _generate(self, job: _Job, index: int) -> AsyncIterator[GenerationOutput]:
        try:
            async for output in self.generator.generate(job.generation(index)):
                yield output
        except (RequestError, UnknownAdapterError, EngineError, asyncio.CancelledError):
            raise
        except Exception as e:
            # The one place a backend's own bug is logged, with its traceback under the request id (which is all the
            # HTTP client gets); the error goes on chained to it, for Python callers.
            logger.exception("request %s failed in the engine", job.request_id)
            raise EngineError(f"the engine failed on request {job.request_id}: {type(e).__name__}: {e}") from e

    async def _collect(self, job: _Job, index: int) -> _Choice:
        choice = _Choice()
        async for output in self._generate(job, index):
            choice.text += output.text
            choice.completion_tokens = output.completion_tokens
            choice.finish_reason = output.finish_reason
            choice.logprobs += output.logprobs or []
        return choice

    async def _run_chat(self, job: _Job) -> ChatCompletionResponse:
        choices = await asyncio.gather(*(self._collect(job, index) for index in range(job.n)))
        assert job.parser is not None
        out = []
        for index, choice in enumerate(choices):
            answer = job.parser.parse(choice.text)
            calls = [ResponseToolCall(id=call["id"], function=ResponseFunctionCall(**call["function"]))
                     for call in answer.tool_calls or []]
            message = ResponseMessage(content=None if calls and not answer.content else answer.content,
                                      reasoning_content=answer.reasoning_content, tool_calls=calls or None)
            out.append(ChatCompletionChoice(
                index=index, message=message, finish_reason=_finish_reason(choice.finish_reason, bool(calls)),
                logprobs=self._chat_logprobs(choice.logprobs) if job.params.logprobs else None))
        return ChatCompletionResponse(id=job.request_id, model=self.model_name, choices=out,
                                      usage=self._usage(job, choices))

    async def _stream_chat(self, job: _Job, include_usage: bool) -> AsyncIterator[ChatCompletionStreamResponse]:
        assert job.parser is not None
        streams = [AnswerStream(job.parser) for _ in range(job.n)]
        tokens = [0] * job.n

        def chunk(choices: list[ChatCompletionStreamChoice], usage: UsageInfo | None = None):
            return ChatCompletionStreamResponse(id=job.request_id, model=self.model_name, choices=choices, usage=usage)

        yield chunk([ChatCompletionStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(job.n)])
        async for index, output in merge_streams([self._generate(job, i) for i in range(job.n)]):
            tokens[index] = output.completion_tokens
            reasoning, content = streams[index].feed(output.text)
            calls = None
            if output.finished:
                last_reasoning, last_content, calls = streams[index].finish()
                reasoning, content = reasoning + last_reasoning, content + last_content
            delta = DeltaMessage(content=content or None, reasoning_content=reasoning or None,
                                 tool_calls=[DeltaToolCall(index=k, id=call["id"], type="function",
                                                           function=DeltaFunctionCall(**call["function"]))
                                             for k, call in enumerate(calls or [])] or None)
            logprobs = self._chat_logprobs(output.logprobs) if job.params.logprobs and output.logprobs else None
            if delta.is_empty() and not output.finished and logprobs is None:
                continue
            finish = _finish_reason(output.finish_reason, bool(calls)) if output.finished else None
            yield chunk([ChatCompletionStreamChoice(index=index, delta=delta, finish_reason=finish,
                                                    logprobs=logprobs)])
        if include_usage:
            yield chunk([], self._usage(job, [_Choice(completion_tokens=t) for t in tokens]))

    async def _stream_completion(self, job: _Job, include_usage: bool) -> AsyncIterator[CompletionStreamResponse]:
        tokens = [0] * job.n
        async for index, output in merge_streams([self._generate(job, i) for i in range(job.n)]):
            tokens[index] = output.completion_tokens
            if not output.text and not output.finished:
                continue
            logprobs = self._completion_logprobs(output.logprobs) if job.params.logprobs and output.logprobs else None
            yield CompletionStreamResponse(id=job.request_id, model=self.model_name, choices=[CompletionChoice(
                index=index, text=output.text, finish_reason=output.finish_reason, logprobs=logprobs)])
        if include_usage:
            yield CompletionStreamResponse(id=job.request_id, model=self.model_name, choices=[],
                                           usage=self._usage(job, [_Choice(completion_tokens=t) for t in tokens]))

    # ----- response pieces -----

    @staticmethod
    def _usage(job: _Job, choices: Sequence[_Choice]) -> UsageInfo:
        completion = sum(choice.completion_tokens for choice in choices)
        prompt = len(job.prompt_ids)
        return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def _token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _chat_logprobs(self, infos: list) -> ChoiceLogprobs:
        content = []
        for info in infos:
            token = self._token(info.token_id)
            content.append(TokenLogprob(token=token, logprob=info.logprob, bytes=list(token.encode()), top_logprobs=[
                TopLogprob(token=(t := self._token(i)), logprob=lp, bytes=list(t.encode())) for i, lp in info.top]))
        return ChoiceLogprobs(content=content)

    def _completion_logprobs(self, infos: list) -> CompletionLogprobs:
        out = CompletionLogprobs(top_logprobs=[])
        offset = 0
        for info in infos:
            token = self._token(info.token_id)
            out.tokens.append(token)
            out.token_logprobs.append(info.logprob)
            out.text_offset.append(offset)
            offset += len(token)
            out.top_logprobs.append({self._token(i): lp for i, lp in info.top})
        return out


def _agent_stop(template: Template) -> str | None:
    """ReAct-like agent formats (react_en, qwen_en...): the tool's result follows `Observation:` / `✿RESULT✿:` in
    the answer's own turn, so the answer stops there (the caller runs the tool) instead of inventing the result."""
    agent = getattr(template, "agent", None)
    suffix = agent.calls_suffix.strip() if agent is not None and agent.inline else ""
    return suffix or None


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    return "tool_calls" if has_calls and reason == "stop" else reason
