"""The chat part of `swift app` and of web-ui's chat tab: an OpenAI client streaming from a server.

The server is either the one at --base_url or `swift deploy`'s own app started in this process on our engine
(127.0.0.1, a free port, a random key), so both paths stream through the same client code, with reasoning
(`reasoning_content`) shown folded and tool calls shown as their own messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from swift.ui.i18n import t

logger = logging.getLogger(__name__)


@dataclass
class ChatBackend:
    base_url: str
    api_key: str | None
    model: str  # the name requests carry

    def client(self) -> Any:
        import httpx
        from openai import OpenAI

        local = any(host in self.base_url for host in ("//127.0.0.1", "//localhost"))
        # A proxy from the environment must not stand between us and a server on this machine.
        http_client = httpx.Client(trust_env=not local, timeout=httpx.Timeout(600, connect=10))
        return OpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY", http_client=http_client)


def sampling(temperature: float | None, top_p: float | None, max_new_tokens: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if temperature is not None:
        out["temperature"] = float(temperature)
    if top_p is not None:
        out["top_p"] = float(top_p)
    if max_new_tokens:
        out["max_tokens"] = int(max_new_tokens)
    return out


def display(conversation: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    """OpenAI messages -> Chatbot messages: reasoning folded under "Thinking", each tool call its own message."""
    shown: list[dict[str, Any]] = []
    for message in conversation:
        if message["role"] == "system":
            continue
        if message.get("reasoning_content"):
            shown.append({"role": "assistant", "content": message["reasoning_content"],
                          "metadata": {"title": t("thinking", lang), "status": "done"}})
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            shown.append({"role": "assistant", "content": f"```json\n{fn.get('arguments', '')}\n```",
                          "metadata": {"title": t("tool_call", lang, name=fn.get("name", "?"))}})
        content = message.get("content")
        if isinstance(content, list):  # a user turn with an uploaded image: the picture, then the text
            for part in content:
                if part.get("type") == "image_url" and part.get("_path"):
                    shown.append({"role": message["role"], "content": {"path": part["_path"]}})
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if content:
            shown.append({"role": message["role"], "content": content})
    return shown


def user_message(text: str, image: str | None) -> dict[str, Any]:
    """The user's turn: plain text, or OpenAI parts with the uploaded image as a data: URI (`_path` is for the page
    only and never sent)."""
    if not image:
        return {"role": "user", "content": text}
    import base64
    import mimetypes
    from pathlib import Path

    mime = mimetypes.guess_type(image)[0] or "image/png"
    url = f"data:{mime};base64," + base64.b64encode(Path(image).read_bytes()).decode()
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}, "_path": image},
                                        {"type": "text", "text": text}]}


def _sendable(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}
    if isinstance(out.get("content"), list):
        out["content"] = [{k: v for k, v in part.items() if not k.startswith("_")} for part in out["content"]]
    return out


def stream_reply(backend: ChatBackend, conversation: list[dict[str, Any]], system: str | None,
                 options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the assistant message as it grows: {"role", "content", "reasoning_content", "tool_calls"}."""
    messages = ([{"role": "system", "content": system}] if system else []) + [_sendable(m) for m in conversation]
    reply: dict[str, Any] = {"role": "assistant", "content": "", "reasoning_content": "", "tool_calls": []}
    calls: dict[int, dict[str, Any]] = {}
    stream = backend.client().chat.completions.create(model=backend.model, messages=messages, stream=True,
                                                      **options)
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reply["content"] += delta.content or ""
        reply["reasoning_content"] += (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": call.id, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            if call.function is not None:
                entry["function"]["name"] += call.function.name or ""
                entry["function"]["arguments"] += call.function.arguments or ""
        reply["tool_calls"] = [calls[i] for i in sorted(calls)]
        yield reply


def pretty_arguments(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def build_chat(gr: Any, get_backend: Any, lang: str, *, prefix: str = "", defaults: dict[str, Any] | None = None,
               system: str | None = None) -> None:
    """The chat widgets and their events; `get_backend()` returns the `ChatBackend` to use (or raises)."""
    defaults = defaults or {}
    conversation = gr.State([])
    chatbot = gr.Chatbot(label=t("chatbot", lang), elem_id=f"{prefix}chatbot", height=420)
    with gr.Row():
        chat_input = gr.Textbox(label=t("chat_input", lang), elem_id=f"{prefix}chat_input", scale=8, lines=1)
        send = gr.Button(t("send", lang), elem_id=f"{prefix}send", variant="primary", scale=1)
        clear = gr.Button(t("clear", lang), elem_id=f"{prefix}clear", scale=1)
    # Vision models: an image sent with the next message (a text model's server answers that it takes none).
    image = gr.Image(label=t("image", lang), type="filepath", elem_id=f"{prefix}image", height=160,
                     sources=["upload", "clipboard"])
    with gr.Accordion(t("sampling", lang), open=False):
        system_box = gr.Textbox(label=t("system", lang), value=system or "", elem_id=f"{prefix}system", lines=2)
        with gr.Row():
            temperature = gr.Slider(0, 2, value=defaults.get("temperature", 0.7), step=0.05,
                                    label=t("temperature", lang), elem_id=f"{prefix}temperature")
            top_p = gr.Slider(0.01, 1, value=defaults.get("top_p", 1.0), step=0.01, label=t("top_p", lang),
                              elem_id=f"{prefix}top_p")
            max_new = gr.Number(value=defaults.get("max_new_tokens", 512), precision=0,
                                label=t("max_new_tokens", lang), elem_id=f"{prefix}max_new_tokens")

    def respond(message: str, picture: str | None, history: list[dict[str, Any]], system_prompt: str, temp: float,
                p: float, max_tokens: int | None) -> Iterator[tuple[Any, ...]]:
        if not message or not message.strip():
            yield "", picture, history, display(history, lang)
            return
        history = [*history, user_message(message, picture)]
        yield "", None, history, display(history, lang)
        reply: dict[str, Any] = {"role": "assistant", "content": ""}
        try:
            backend = get_backend()
            for reply in stream_reply(backend, history, system_prompt.strip() or None,
                                      sampling(temp, p, max_tokens)):
                yield "", None, history, display([*history, reply], lang)
        except Exception as e:  # noqa: BLE001 -- shown on the page; the page must survive a failed request
            logger.warning("chat request failed: %s", e)
            error = {"role": "assistant", "content": t("error", lang, error=str(e))}
            yield "", None, history, display([*history, error], lang)
            return
        final = {k: v for k, v in reply.items() if v}
        yield "", None, [*history, final], display([*history, final], lang)

    inputs = [chat_input, image, conversation, system_box, temperature, top_p, max_new]
    outputs = [chat_input, image, conversation, chatbot]
    replies = [chat_input.submit(respond, inputs, outputs), send.click(respond, inputs, outputs)]
    # Clear also stops an answer still streaming: otherwise its next chunk would write the old turn back.
    clear.click(lambda: ("", None, [], []), None, outputs, cancels=replies)
