"""Multi-turn GRPO (`--multi_turn_scheduler NAME --max_turns N`): a scheduler answers each completion with the next
user or tool turn, or ends the trajectory; the loss covers the model's own turns only.

A scheduler is a class registered under a name (`@register_multi_turn_scheduler("name")` in an `--external_plugins`
file), with ms-swift's method names so that a plugin ports by changing its import:

- `check_finished(infer_request, response_choice, current_turn) -> bool`: stop here? (default: the completion was
  cut by --max_completion_length, or --max_turns is reached);
- `step(infer_request, response_choice, current_turn) -> {"infer_request": ...}`: the request of the next turn, i.e.
  `infer_request.messages` with the environment's reply appended (the model's turn is appended already).

`infer_request` has `messages` (the conversation so far) and `data_dict` (the dataset row's other columns, e.g.
`solution`); `response_choice` has `message.content` and `finish_reason` ("stop" or "length"), as in ms-swift.

Every turn of every trajectory still active is completed in one engine call (PtEngine, vLLM colocate or server:
`Rollout.complete`). At the end each trajectory is encoded by our template as one conversation: its prompt is the
first turn's prompt, its completion everything after it, and `env_mask` (trl's name) is 1 on the tokens of the
model's turns and 0 on the environment's, so that only the model's tokens get the loss. The model's turns are
re-encoded from their text, as ms-swift does; the trainer computes every log-prob it trains with from these ids. Reward
functions get the trajectory as `messages`; `completions.jsonl` (--log_completions) shows every turn.

Built in: `tool_call`, which runs the Python functions registered with `@register_tool("name")` on the model's tool
calls, parsed the way the template parses answers (its `--agent_template`, else the model family's format), and
feeds back their results as tool turns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swift.core import ConfigError, add_entry, choices_of, find_entry

logger = logging.getLogger(__name__)

SCHEDULERS: dict[str, type] = {}
TOOLS: dict[str, Callable[..., Any]] = {}


def register_multi_turn_scheduler(name: str, *, replace: bool = False) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        add_entry(SCHEDULERS, name, cls, kind="multi-turn scheduler", replace=replace)
        return cls
    return decorate


def register_tool(name: str, *, replace: bool = False) -> Callable[[Callable], Callable]:
    """A Python function the `tool_call` scheduler runs when the model calls `name` (keyword arguments: the call's
    arguments; the return value, as a string, is the tool turn)."""
    def decorate(fn: Callable) -> Callable:
        add_entry(TOOLS, name, fn, kind="tool", replace=replace)
        return fn
    return decorate


def scheduler_choices() -> dict[str, str | None]:
    return choices_of(SCHEDULERS)


def get_scheduler(name: str) -> type:
    return find_entry(SCHEDULERS, name, flag="--multi_turn_scheduler")


@dataclass
class InferRequest:
    messages: list[dict]
    data_dict: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatMessage:
    content: str
    role: str = "assistant"


@dataclass
class ResponseChoice:
    message: ChatMessage
    finish_reason: str  # "stop" or "length"
    token_ids: list[int] = field(default_factory=list)


class MultiTurnScheduler:
    """The base of every scheduler: ends on a cut completion or at `max_turns`; `step` is the environment."""

    def __init__(self, max_turns: int | None = None, **kwargs: Any) -> None:
        self.max_turns = max_turns

    def check_finished(self, infer_request: InferRequest, response_choice: ResponseChoice, current_turn: int) -> bool:
        if response_choice.finish_reason == "length":
            return True
        return bool(self.max_turns) and current_turn >= self.max_turns

    def step(self, infer_request: InferRequest, response_choice: ResponseChoice, current_turn: int) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.step: return {{'infer_request': ...}} with the next turn")


@register_multi_turn_scheduler("tool_call")
class ToolCallScheduler(MultiTurnScheduler):
    """Runs the registered Python tools (`register_tool`) on the model's tool calls; a turn without a call ends the
    trajectory."""

    def __init__(self, max_turns: int | None = None, response_format: str = "hermes", **kwargs: Any) -> None:
        super().__init__(max_turns)
        self.response_format = response_format

    def calls(self, text: str) -> list[dict]:
        from swift.core.template import parse_response

        return [call["function"] for call in parse_response(text, self.response_format)["tool_calls"] or ()]

    def check_finished(self, infer_request: InferRequest, response_choice: ResponseChoice, current_turn: int) -> bool:
        return super().check_finished(infer_request, response_choice, current_turn) or not self.calls(
            response_choice.message.content)

    def step(self, infer_request: InferRequest, response_choice: ResponseChoice, current_turn: int) -> dict:
        for call in self.calls(response_choice.message.content):
            name, arguments = call.get("name"), call.get("arguments") or {}
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    arguments = {}
            tool = TOOLS.get(name)
            try:
                result = f"unknown tool {name!r}" if tool is None else tool(**arguments)
            except Exception as e:  # noqa: BLE001  (any error of the tool is its answer: the model learns from it)
                result = f"error: {type(e).__name__}: {e}"
            infer_request.messages.append({"role": "tool", "content": str(result)})
        return {"infer_request": infer_request}


def build_scheduler(name: str, *, max_turns: int | None, response_format: str) -> MultiTurnScheduler:
    """`response_format`: how the template parses the model's answers (its --agent_template's, else the family's)."""
    cls = get_scheduler(name)
    scheduler = cls(max_turns=max_turns, response_format=response_format)
    if not isinstance(scheduler, MultiTurnScheduler):
        raise ConfigError(f"--multi_turn_scheduler {name}: {cls.__name__} must subclass "
                          "swift.train.rlhf.MultiTurnScheduler")
    return scheduler


def run_trajectories(rows: list[dict], scheduler: MultiTurnScheduler, encode: Callable[[dict], dict],
                     complete: Callable[[list[list[int]]], list[list[int]]], decode: Callable[[list[int]], str],
                     max_tokens: int, stops: frozenset[int]) -> list[dict]:
    """Roll each row's conversation out turn by turn: `complete` takes the prompt ids of every active trajectory at
    once. Returns per row: `messages` (the whole conversation) and `turns` (the model's)."""
    requests = [InferRequest([dict(m) for m in row["messages"]], {k: v for k, v in row.items() if k != "messages"})
                for row in rows]
    active, turns = list(range(len(rows))), [0] * len(rows)
    while active:
        prompts = [encode({**rows[i], "messages": requests[i].messages})["input_ids"] for i in active]
        outputs = complete(prompts)
        still = []
        for i, ids in zip(active, outputs, strict=True):
            turns[i] += 1
            finished_by_stop = bool(ids) and ids[-1] in stops
            text = decode([t for t in ids if t not in stops])
            choice = ResponseChoice(ChatMessage(text), "stop" if finished_by_stop or len(ids) < max_tokens
                                    else "length", list(ids))
            requests[i].messages.append({"role": "assistant", "content": text})
            if scheduler.check_finished(requests[i], choice, turns[i]):
                continue
            result = scheduler.step(requests[i], choice, turns[i])
            requests[i] = result["infer_request"]
            if requests[i].messages[-1]["role"] == "assistant":  # the environment added nothing: done
                continue
            still.append(i)
        active = still
    return [{"messages": r.messages, "turns": t} for r, t in zip(requests, turns, strict=True)]


def trajectory_ids(encoded: dict, prompt_len: int) -> tuple[list[int], list[int]]:
    """A whole trajectory encoded by the template (labels on the model's turns) -> completion ids after the first
    prompt, and the env_mask: 1 on the model's tokens."""
    ids, labels = list(encoded["input_ids"]), list(encoded["labels"])
    return ids[prompt_len:], [int(label != -100) for label in labels[prompt_len:]]
