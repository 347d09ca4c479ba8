"""`swift infer` without a dataset: an interactive chat in a terminal, one answer per line of a pipe otherwise.

Answers go to stdout and nothing else does (logs go to stderr), so `echo "Who are you?" | swift infer ...` can be
used in scripts. Lines of a pipe are submitted as soon as they are read, so queries that arrive together are
batched, and each answer is printed in order as soon as it and the ones before it are done.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from concurrent.futures import Future
from typing import TextIO

from swift.core import SwiftError
from swift.infer.engine.engine import InferEngine
from swift.infer.protocol import ChatCompletionResponse, ChatMessage, InferRequest, RequestConfig

logger = logging.getLogger(__name__)

COMMANDS_HELP = "commands: `clear` forgets the conversation, `reset-system` sets a new system prompt, `exit` quits"


def answer_text(response: ChatCompletionResponse) -> str:
    """What a pipe prints for one answer: the content, or the tool calls as JSON when the model calls tools."""
    message = response.choices[0].message
    if message.tool_calls:
        calls = [call.function.model_dump() for call in message.tool_calls]
        return ((message.content or "") + "\n" + json.dumps(calls, ensure_ascii=False)).strip()
    return message.content or ""


def run_pipe(engine: InferEngine, config: RequestConfig, system: str | None, stdin: TextIO, stdout: TextIO, *,
             media: dict[str, list[str]] | None = None) -> int:
    """Each non-empty line of `stdin` is a single-turn query (with `media`, --image...: the same for every line);
    answers are printed in order. 1 if any failed."""
    pending: queue.Queue[Future | None] = queue.Queue()
    failures = 0

    def printer() -> None:
        nonlocal failures
        while (future := pending.get()) is not None:
            try:
                text = answer_text(future.result())
            except SwiftError as e:
                print(f"error: {e}", file=sys.stderr)
                text, failures = "", failures + 1
            print(text, file=stdout, flush=True)

    thread = threading.Thread(target=printer, name="swift-infer-printer", daemon=True)
    thread.start()
    try:
        for line in stdin:
            query = line.strip()
            if not query:
                continue
            try:
                pending.put(engine.submit(_single_turn(query, system, media), config))
            except SwiftError as e:  # a query the template refuses: an empty answer line, and go on
                future: Future = Future()
                future.set_exception(e)
                pending.put(future)
    finally:
        pending.put(None)
        thread.join()
    return 1 if failures else 0


def _single_turn(query: str, system: str | None, media: dict[str, list[str]] | None = None) -> InferRequest:
    messages = [ChatMessage(role="system", content=system)] if system else []
    return InferRequest(messages=[*messages, ChatMessage(role="user", content=query)], **(media or {}))


def run_interactive(engine: InferEngine, config: RequestConfig, system: str | None, *, stream: bool = True,
                    media: dict[str, list[str]] | None = None) -> int:
    """A multi-turn chat on the terminal, streamed. `media` (--image...) goes with the first query; a query with
    `<image>` tags and no image to place asks for a path or URL for each (as ms-swift does)."""
    print(COMMANDS_HELP, file=sys.stderr)
    history: list[ChatMessage] = []
    pending_media = {k: list(v) for k, v in (media or {}).items()}  # what the conversation's turns carry so far
    conversation_media: dict[str, list[str]] = {}
    while True:
        try:
            query = input("<<< ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if query in ("exit", "quit"):
            return 0
        if query == "clear":
            history, conversation_media = [], {}
            print("(conversation cleared)", file=sys.stderr)
            continue
        if query == "reset-system":
            system = input("System: ").strip() or None
            history = []
            continue
        if not query:
            continue
        turn_media = _ask_for_tagged_media(query, pending_media)
        pending_media = {}
        history.append(ChatMessage(role="user", content=query))
        messages = ([ChatMessage(role="system", content=system)] if system else []) + history
        carried = {k: conversation_media.get(k, []) + turn_media.get(k, []) for k in ("images", "videos", "audios")}
        try:
            reply = _chat_turn(engine, InferRequest(messages=messages, **carried), config, stream=stream)
        except KeyboardInterrupt:  # stop this answer, keep the chat
            print("\n(interrupted)", file=sys.stderr)
            history.pop()
            continue
        except SwiftError as e:
            print(f"error: {e}", file=sys.stderr)
            history.pop()
            continue
        history.append(ChatMessage(role="assistant", content=reply))
        conversation_media = carried


def _ask_for_tagged_media(query: str, given: dict[str, list[str]]) -> dict[str, list[str]]:
    """The media of one query: what was given (--image on the first query), plus a path asked for each `<image>` /
    `<video>` / `<audio>` tag beyond those. Given media without tags are put before the query's text."""
    out = {k: list(v) for k, v in given.items()}
    for kind, column in (("image", "images"), ("video", "videos"), ("audio", "audios")):
        missing = query.count(f"<{kind}>") - len(out.get(column, []))
        for _ in range(max(0, missing)):
            out.setdefault(column, []).append(input(f"Input an {kind} path or URL <<< ").strip())
    return out


def _chat_turn(engine: InferEngine, request: InferRequest, config: RequestConfig, *, stream: bool) -> str:
    if not stream:
        text = answer_text(engine.infer([request], config)[0])
        print(">>> " + text, flush=True)
        return text

    async def consume() -> str:
        content, thinking = [], False
        print(">>> ", end="", flush=True)
        async for chunk in engine.stream(request, config):
            for choice in chunk.choices:
                delta = choice.delta
                if delta.reasoning_content:
                    if not thinking:
                        print("<think>\n", end="")
                        thinking = True
                    print(delta.reasoning_content, end="", flush=True)
                if delta.content:
                    if thinking:
                        print("\n</think>\n", end="")
                        thinking = False
                    content.append(delta.content)
                    print(delta.content, end="", flush=True)
                for call in delta.tool_calls or []:
                    print(f"\n[tool call] {call.function.name}({call.function.arguments})", end="", flush=True)
        print(flush=True)
        return "".join(content)

    return engine.run(consume())
