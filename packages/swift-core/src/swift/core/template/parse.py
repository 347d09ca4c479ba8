"""Model answers back into OpenAI message fields: content, reasoning_content and tool_calls.

Tool calls come back in the OpenAI wire form, `{"type": "function", "function": {"name", "arguments"}}` with
`arguments` a JSON string (plus `id` where the model writes one). A call whose JSON does not parse stays in the
content, so nothing the model said is lost.
"""

from __future__ import annotations

import json
import re
from typing import Any

from swift.core.template.meta import ResponseFormat

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_INTERNLM2 = re.compile(r"<\|action_start\|>\s*<\|plugin\|>\s*(.*?)\s*<\|action_end\|>", re.DOTALL)
_DEEPSEEK_CALL = re.compile(
    r"<｜tool▁call▁begin｜>\s*(?:function)?\s*<｜tool▁sep｜>\s*(.+?)\s*```(?:json)?\s*(.*?)\s*```\s*<｜tool▁call▁end｜>",
    re.DOTALL)
_DEEPSEEK_BLOCK = re.compile(r"<｜tool▁calls▁begin｜>.*?(?:<｜tool▁calls▁end｜>|$)", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
# ReAct and Qwen-Agent: a call is "<action> name" then "<input> arguments", up to the next keyword or the end
_KEYWORDS = {
    "react": re.compile(r"Action:[ \t]*(.+?)[ \t]*\n[ \t]*Action Input:[ \t]*(.*?)\s*(?=Action:|Observation:|$)",
                        re.DOTALL),
    "qwen": re.compile(r"✿FUNCTION✿:[ \t]*(.+?)[ \t]*\n[ \t]*✿ARGS✿:[ \t]*(.*?)\s*(?=✿FUNCTION✿:|✿RESULT✿:|$)",
                       re.DOTALL),
}


def parse_response(text: str, response_format: ResponseFormat = "plain") -> dict[str, Any]:
    """`{"content", "reasoning_content", "tool_calls"}` of one answer (None where the answer has none)."""
    reasoning, content = split_reasoning(text)
    tool_calls: list[dict] = []
    if response_format == "hermes":
        content = _take_calls(_HERMES, content, tool_calls)
    elif response_format == "internlm2":
        content = _take_calls(_INTERNLM2, content, tool_calls)
    elif response_format == "llama3_json":
        content = _take_llama3(content, tool_calls)
    elif response_format == "mistral":
        content = _take_mistral(content, tool_calls)
    elif response_format == "deepseek":
        content = _take_deepseek(content, tool_calls)
    elif response_format == "glm4":
        content = _take_glm4(content, tool_calls)
    elif response_format in _KEYWORDS:
        content = _take_keyword_calls(_KEYWORDS[response_format], content, tool_calls)
    return {"content": content.strip(), "reasoning_content": reasoning, "tool_calls": tool_calls or None}


def split_reasoning(text: str) -> tuple[str | None, str]:
    """`(reasoning, rest)` of a `<think>...</think>` answer; the opening tag may sit in the prompt (DeepSeek-R1)."""
    if "</think>" in text:
        reasoning, content = text.split("</think>", 1)
        head = reasoning.lstrip()
        if head.startswith("<think>"):
            reasoning = head[len("<think>"):]
        return reasoning.strip("\n"), content.lstrip("\n")
    if text.lstrip().startswith("<think>"):  # cut off while thinking
        return text.lstrip()[len("<think>"):].strip("\n"), ""
    return None, text


def _call(name: str, arguments: Any, call_id: str | None = None) -> dict:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id:
        call["id"] = call_id
    return call


def _call_from_json(obj: Any) -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    return _call(obj["name"], arguments, obj.get("id"))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _take_calls(pattern: re.Pattern, content: str, calls: list[dict]) -> str:
    def take(match: re.Match) -> str:
        call = _call_from_json(_loads(match.group(1)))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    return pattern.sub(take, content)


def _take_llama3(content: str, calls: list[dict]) -> str:
    body = content.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith(("{", "[")):
        return content
    parsed = _loads(body)
    if parsed is None and ";" in body:  # several calls joined by ';'
        parsed = [_loads(part) for part in body.split(";")]
    items = parsed if isinstance(parsed, list) else [parsed]
    found = [_call_from_json(item) for item in items]
    if not found or any(call is None for call in found):
        return content
    calls.extend(found)
    return ""


def _take_mistral(content: str, calls: list[dict]) -> str:
    at = content.find("[TOOL_CALLS]")
    if at < 0:
        return content
    payload = content[at + len("[TOOL_CALLS]"):].strip()
    try:
        parsed, _ = json.JSONDecoder().raw_decode(payload)
    except ValueError:
        return content
    items = parsed if isinstance(parsed, list) else [parsed]
    found = [_call_from_json(item) for item in items]
    if not found or any(call is None for call in found):
        return content
    calls.extend(found)
    return content[:at]


def _take_deepseek(content: str, calls: list[dict]) -> str:
    found = []
    for name, arguments in _DEEPSEEK_CALL.findall(content):
        parsed = _loads(arguments)
        found.append(_call(name.strip(), parsed if parsed is not None else arguments))
    if not found:
        return content
    calls.extend(found)
    return _DEEPSEEK_BLOCK.sub("", content)


def _take_glm4(content: str, calls: list[dict]) -> str:
    name, _, arguments = content.strip().partition("\n")
    if not _NAME.fullmatch(name.strip()):
        return content
    parsed = _loads(arguments.strip())
    if not isinstance(parsed, dict):
        return content
    calls.append(_call(name.strip(), parsed))
    return ""


def _take_keyword_calls(pattern: re.Pattern, content: str, calls: list[dict]) -> str:
    """ReAct-like calls; arguments that are not JSON (a Python dict, plain text) are kept as JSON text."""
    import ast

    matches = list(pattern.finditer(content))
    for match in matches:
        arguments = _loads(match.group(2))
        if arguments is None:
            try:
                arguments = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                arguments = match.group(2)
        calls.append(_call(match.group(1).strip(), arguments))
    return content[:matches[0].start()] if matches else content
