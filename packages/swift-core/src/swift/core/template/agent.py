"""`--agent_template`: tools, tool calls and tool results written in one agent format (ms-swift's agent templates).

Rows come as OpenAI messages (`tools`, assistant `tool_calls`, `tool` results) or ms-swift's (`tool_call` /
`tool_response` roles with JSON content); `normalize_messages` makes the first of the second.

When the format is the tokenizer's own (`--agent_template hermes` for Qwen2.5, `llama3` for Llama 3.x, `mistral`,
`glm4`), the tokenizer's chat template renders the tools as it does at serving time, so nothing changes. Otherwise
`apply` writes them as text into plain messages, which any chat template renders:

- the tool list into the system prompt (Llama 3: the first user message);
- an assistant turn's calls into its content;
- results either as a user turn (Hermes, Mistral, GLM-4, Llama 3) or, for the ReAct-like formats (react_en/zh,
  qwen_en/zh), inside the assistant's turn after `Observation:` / `✿RESULT✿:`, continued by the next answer. Those
  results are the tool's words, not the model's: `apply` returns where they sit, and they carry no loss.
"""

from __future__ import annotations

import ast
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swift.core.errors import DuplicateNameError, UnknownTemplateError
from swift.core.template.errors import TemplateError
from swift.core.template.meta import ResponseFormat


@dataclass(frozen=True)
class AgentTemplate:
    """One agent format. `format_tools(tools, system)` -> the system text (with `tools_in_user`: the text put
    before the first user message's); `format_call(name, arguments)` -> one call; `format_result(text)` -> one
    tool result as a user turn's text (consecutive results join with newlines). `inline` formats put results in
    the assistant's turn instead, after the calls' `calls_suffix` (`Observation:`)."""

    name: str
    response_format: ResponseFormat
    format_tools: Callable[[list[dict], str | None], str]
    format_call: Callable[[str, Any], str]
    format_result: Callable[[str], str]
    call_separator: str = "\n"
    calls_prefix: str = ""
    calls_suffix: str = ""
    inline: bool = False
    tools_in_user: bool = False
    uses_default_system: bool = True  # False: the tool prompt replaces the family's default system (ReAct)
    description: str = ""


AGENT_TEMPLATES: dict[str, AgentTemplate] = {}


def register_agent_template(meta: AgentTemplate, *, replace: bool = False) -> None:
    if meta.name in AGENT_TEMPLATES and not replace:
        raise DuplicateNameError(f"agent template {meta.name!r} exists; pass replace=True to override it")
    AGENT_TEMPLATES[meta.name] = meta


def get_agent_template(name: str) -> AgentTemplate:
    if name not in AGENT_TEMPLATES:
        hint = difflib.get_close_matches(name, AGENT_TEMPLATES, n=3)
        raise UnknownTemplateError(f"--agent_template {name!r} is unknown" + (f"; did you mean {hint}?" if hint
                                                                              else "") + "; choose one of "
                                   + ", ".join(AGENT_TEMPLATES))
    return AGENT_TEMPLATES[name]


def agent_template_choices() -> dict[str, str | None]:
    return dict.fromkeys(AGENT_TEMPLATES)


# ---------------------------------------------------------------- rows


def normalize_messages(messages: list[dict]) -> list[dict]:
    """ms-swift's `tool_call` turns -> assistant `tool_calls` (an answer before them keeps its text in the same turn),
    `tool_response` -> `tool`."""
    out: list[dict] = []
    for message in messages:
        role = message["role"]
        if role == "tool_response":
            out.append({**message, "role": "tool"})
        elif role == "tool_call":
            call = _loads(message.get("content"))
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise TemplateError("a 'tool_call' message's content must be JSON {\"name\", \"arguments\"}")
            arguments = call.get("arguments", call.get("parameters", {}))
            call = {"type": "function", "function": {"name": call["name"], "arguments": arguments}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                out[-1] = {**last, "tool_calls": [*(last.get("tool_calls") or []), call]}
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif (role == "assistant" and out and out[-1]["role"] == "assistant" and message.get("tool_calls")
              and not message.get("content") and not out[-1].get("tool_calls")):
            out[-1] = {**out[-1], "tool_calls": list(message["tool_calls"])}  # an answer, then its calls: one turn
        else:
            out.append(message)
    return out


@dataclass
class AgentMessages:
    """`apply`'s result: plain messages, each one's index in the input (`origin`; -1: the tools' system prompt,
    -2: a results turn), and per assistant message the ranges of its content written from which input assistant
    message (`pieces`). Inline formats' tool results lie between pieces: no loss there."""

    messages: list[dict]
    origin: list[int]
    pieces: dict[int, list[tuple[int, int, int]]]


def apply(agent: AgentTemplate, messages: list[dict], tools: list | None, *, default_system: str | None) -> AgentMessages:
    """Tools, calls and results of `messages` written as `agent`'s text in plain system/user/assistant messages."""
    out: list[dict] = []
    origin: list[int] = []
    holes: dict[int, list[tuple[int, int]]] = {}
    pieces: dict[int, list[tuple[int, int, int]]] = {}
    has_system = bool(messages) and messages[0]["role"] == "system"
    system = messages[0].get("content") if has_system else default_system if agent.uses_default_system else None
    body = list(enumerate(messages))[1 if has_system else 0:]
    if tools:
        text = agent.format_tools(list(tools), system if isinstance(system, str) else None)
        if agent.tools_in_user:
            if has_system:
                out.append(dict(messages[0]))
                origin.append(0)
            first_user = next((k for k, (_, m) in enumerate(body) if m["role"] == "user"), None)
            if first_user is not None:
                index, message = body[first_user]
                body[first_user] = (index, {**message, "content": text + str(message.get("content") or "")})
        else:
            out.append({"role": "system", "content": text})
            origin.append(0 if has_system else -1)
    elif has_system:
        out.append(dict(messages[0]))
        origin.append(0)
    after_calls = False  # an inline format's first result follows its calls' own `Observation:`
    for index, message in body:
        role = message["role"]
        if role == "tool":
            result = _text(message.get("content"))
            if agent.inline and out and out[-1]["role"] == "assistant":
                at, content = len(out) - 1, out[-1]["content"]
                suffix = agent.calls_suffix
                lead = "" if after_calls else suffix.lstrip("\n") if content.endswith("\n") or not content else suffix
                text = lead + result + ("" if result.endswith("\n") else "\n")
                holes.setdefault(at, []).append((len(content), len(content) + len(text)))
                out[at] = {**out[at], "content": content + text}
                after_calls = False
                continue
            if out and out[-1]["role"] == "user" and origin[-1] == -2:  # consecutive results: one user turn
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + agent.format_result(result)}
                continue
            out.append({"role": "user", "content": agent.format_result(result)})
            origin.append(-2)
            continue
        after_calls = False
        if role != "assistant":
            out.append(message)
            origin.append(index)
            continue
        content = _text(message.get("content"))
        calls = [_call(c) for c in message.get("tool_calls") or []]
        if calls:
            written = agent.call_separator.join(agent.format_call(name, arguments) for name, arguments in calls)
            written = agent.calls_prefix + written + agent.calls_suffix
            content = content + "\n" + written if content and not content.endswith("\n") else content + written
            after_calls = agent.inline
        plain = {k: v for k, v in message.items() if k not in ("tool_calls", "content")}
        if agent.inline and out and out[-1]["role"] == "assistant" and holes.get(len(out) - 1):
            at, before = len(out) - 1, out[-1]["content"]  # the answer after an observation continues the turn
            pieces[at].append((len(before), len(before) + len(content), index))
            out[at] = {**out[at], **plain, "content": before + content}
            continue
        out.append({**plain, "content": content})
        origin.append(index)
        pieces[len(out) - 1] = [(0, len(content), index)]
    return AgentMessages(out, origin, pieces)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _loads(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None


def _call(call: Any) -> tuple[str, Any]:
    function = (call.get("function") or call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise TemplateError(f"a tool call must be {{'function': {{'name', 'arguments'}}}}, got {call!r}")
    arguments = function.get("arguments", {})
    parsed = _loads(arguments) if isinstance(arguments, str) else arguments
    return function["name"], parsed if parsed is not None else arguments


def _json(value: Any, **kwargs: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, **kwargs)


def _wrap(tool: dict) -> dict:
    return tool if "function" in tool else {"type": "function", "function": tool}


def _unwrap(tool: dict) -> dict:
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


def _with_system(system: str | None, text: str) -> str:
    return f"{system}\n\n{text}" if system else text


# ---------------------------------------------------------------- formats (texts as ms-swift's agent templates)

_HERMES_TOOLS = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                 "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n"
                 "</tools>\n\nFor each function call, return a json object with function name and arguments within "
                 "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
                 "<args-json-object>}}\n</tool_call>")


def _hermes_tools(tools: list[dict], system: str | None) -> str:
    return _with_system(system, _HERMES_TOOLS.format(tools="\n".join(_json(_wrap(t)) for t in tools)))


register_agent_template(AgentTemplate(
    name="hermes",
    response_format="hermes",
    format_tools=_hermes_tools,
    format_call=lambda name, arguments: "<tool_call>\n" + _json({"name": name, "arguments": arguments})
    + "\n</tool_call>",
    format_result=lambda text: f"<tool_response>\n{text}\n</tool_response>",
    description="Hermes / Qwen2.5 / Qwen3: <tool_call> JSON blocks, results in <tool_response> user turns",
))


def _react_tools(lang: str) -> Callable[[list[dict], str | None], str]:
    def format_tools(tools: list[dict], system: str | None) -> str:
        descriptions, names = [], []
        for tool in map(_unwrap, tools):
            name, about = tool.get("name"), tool.get("description", "")
            parameters = _json(tool.get("parameters") or {})
            names.append(name)
            if lang == "zh":
                descriptions.append(f"{name}: 调用此工具与 {name} API 进行交互。{name} 有什么用？{about} "
                                    f"输入参数：{parameters} 此工具的输入应为JSON对象。")
            else:
                descriptions.append(f"{name}: Call this tool to interact with the {name} API. What is the {name} "
                                    f"API useful for? {about} Parameters: {parameters} Format the arguments as a "
                                    "JSON object.")
        listed = "\n\n".join(descriptions)
        if lang == "zh":
            text = (f"尽可能地回答以下问题。你可以使用以下工具:\n\n{listed}\n\n请按照以下格式进行:\n\n"
                    "Question: 需要你回答的输入问题\nThought: 你应该总是思考该做什么\n"
                    f"Action: 需要使用的工具，应该是[{','.join(names)}]中的一个\nAction Input: 传入工具的内容\n"
                    "Observation: 行动的结果\n... (这个Thought/Action/Action Input/Observation可以重复N次)\n"
                    "Thought: 我现在知道最后的答案\nFinal Answer: 对原始输入问题的最终答案\n\n现在开始！\n")
        else:
            text = (f"Answer the following questions as best you can. You have access to the following tools:\n\n"
                    f"{listed}\n\nUse the following format:\n\nQuestion: the input question you must answer\n"
                    "Thought: you should always think about what to do\n"
                    f"Action: the action to take, should be one of [{','.join(names)}]\n"
                    "Action Input: the input to the action\nObservation: the result of the action\n"
                    "... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n"
                    "Thought: I now know the final answer\n"
                    "Final Answer: the final answer to the original input question\n\nBegin!\n")
        return _with_system(system, text)

    return format_tools


def _register_inline(family: str, tools: Callable[[str], Callable], name_line: str, arguments_line: str,
                     result: str, description: str, **options: Any) -> None:
    """An English and a Chinese agent format whose calls are two lines in the answer and whose tool output follows
    `result` in the same turn (ReAct, Qwen-Agent)."""
    for lang in ("en", "zh"):
        register_agent_template(AgentTemplate(
            name=f"{family}_{lang}", response_format=family, format_tools=tools(lang),
            format_call=lambda name, arguments: f"{name_line} {name}\n{arguments_line} {_json(arguments)}",
            format_result=lambda text: f"{result} {text}", calls_suffix=f"\n{result}", inline=True,
            description=description, **options))


_register_inline("react", _react_tools, "Action:", "Action Input:", "Observation:", uses_default_system=False,
                 description="ReAct: Action / Action Input lines; the tool's output follows Observation: in the same "
                             "turn")


def _qwen_tools(lang: str) -> Callable[[list[dict], str | None], str]:
    def format_tools(tools: list[dict], system: str | None) -> str:
        descriptions, names = [], []
        for tool in map(_unwrap, tools):
            name, about = tool.get("name"), tool.get("description", "")
            parameters = _json(tool.get("parameters") or {})
            names.append(name)
            descriptions.append(f"### {name}\n\n{name}: {about} 输入参数：{parameters} 此工具的输入应为JSON对象。"
                                if lang == "zh" else
                                f"### {name}\n\n{name}: {about} Parameters: {parameters} Format the arguments as a "
                                "JSON object.")
        listed = "\n\n".join(descriptions)
        if lang == "zh":
            text = (f"# 工具\n\n## 你拥有如下工具：\n\n{listed}\n\n## 你可以在回复中插入零次、一次或多次以下命令以调用工具："
                    f"\n\n✿FUNCTION✿: 工具名称，必须是[{','.join(names)}]之一。\n✿ARGS✿: 工具输入\n✿RESULT✿: 工具结果\n"
                    "✿RETURN✿: 根据工具结果进行回复，需将图片用![](url)渲染出来")
        else:
            text = (f"# Tools\n\n## You have access to the following tools:\n\n{listed}\n\n## When you need to call a "
                    "tool, please insert the following command in your reply, which can be called zero or multiple "
                    f"times according to your needs:\n\n✿FUNCTION✿: The tool to use, should be one of "
                    f"[{','.join(names)}]\n✿ARGS✿: The input of the tool\n✿RESULT✿: Tool results\n"
                    "✿RETURN✿: Reply based on tool results. Images need to be rendered as ![](url)")
        return _with_system(system, text)

    return format_tools


_register_inline("qwen", _qwen_tools, "✿FUNCTION✿:", "✿ARGS✿:", "✿RESULT✿:",
                 description="Qwen-Agent: ✿FUNCTION✿ / ✿ARGS✿ lines; the tool's output follows ✿RESULT✿: in the "
                             "same turn")


def _glm4_tools(tools: list[dict], system: str | None) -> str:
    # GLM-4's own template puts a blank line before each tool (ms-swift joins them with one newline)
    listed = "\n\n".join(f"## {_unwrap(t).get('name')}\n\n{_json(_unwrap(t), indent=4)}\n"
                       "在调用上述函数时，请使用 Json 格式表示调用的参数。" for t in tools)
    return _with_system(system, f"# 可用工具\n\n{listed}")


register_agent_template(AgentTemplate(
    name="glm4",
    response_format="glm4",
    format_tools=_glm4_tools,
    format_call=lambda name, arguments: f"{name}\n{_json(arguments)}",
    format_result=lambda text: text,
    description="GLM-4 (0414): the function name on one line, its JSON arguments on the next",
))


def _llama3_tools(tools: list[dict], system: str | None) -> str:
    listed = "\n\n".join(_json(t, indent=4) for t in tools)
    return ("Given the following functions, please respond with a JSON for a function call with its proper arguments "
            "that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": "
            f"dictionary of argument name and its value}}.Do not use variables.\n\n{listed}\n\n")  # Llama's own text


register_agent_template(AgentTemplate(
    name="llama3",
    response_format="llama3_json",
    format_tools=_llama3_tools,
    format_call=lambda name, arguments: _json({"name": name, "parameters": arguments}),
    format_result=lambda text: text,
    tools_in_user=True,
    description="Llama 3.x: tools in the first user message, a call is JSON {name, parameters}",
))

register_agent_template(AgentTemplate(
    name="mistral",
    response_format="mistral",
    format_tools=lambda tools, system: (system or "") + "[AVAILABLE_TOOLS]" + _json(
        [_wrap(t) for t in tools]) + "[/AVAILABLE_TOOLS]",  # a JSON list, as Mistral's template writes it
    format_call=lambda name, arguments: _json({"name": name, "arguments": arguments}),
    format_result=lambda text: "[TOOL_RESULTS]" + _json({"content": text}) + "[/TOOL_RESULTS]",
    call_separator=", ",
    calls_prefix="[TOOL_CALLS][",
    calls_suffix="]",
    description="Mistral: [AVAILABLE_TOOLS], [TOOL_CALLS] with a JSON list, [TOOL_RESULTS]",
))
