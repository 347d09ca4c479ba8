"""Row normalisation: every known dataset format becomes one `messages` row with OpenAI roles.

The normalised row has:
- `messages`: a list of {"role", "content", ...} with roles system / user / assistant / tool. Keys other than role and
  content (`tool_calls`, `name`, `reasoning_content`, `loss`...) are kept as given.
- `tools` (list of OpenAI tool schemas), `rejected_response` (str), `label` (bool), `images` / `videos` / `audios`
  (lists of references, `swift.core.media`) where the row has them, and every column that no format consumed (`id`,
  `solution`...), unchanged. Local media paths are made absolute (relative to the dataset file) and checked by the
  loader (`check_media`), which also matches `<image>`-style tags against the media.

Formats, detected per row in this order:
- preference: `chosen` + `rejected` (strings with a prompt field, or message lists) -> messages + rejected_response.
- messages: `messages` (+ `system`, `rejected_response`, `label` for KTO).
- sharegpt: `conversations` of {from, value}, from = human / gpt / system / function_call / observation.
- query/response: `instruction` (+ `input`, appended after a newline) / `query` / `question` / `prompt` / `problem`,
  answered by `output` / `response` / `answer` / `completion`, with optional `system` and `history` ([q, r] pairs).
  A `prompt` / `completion` may also be a message list (TRL's conversational format).
- pre-training text: `text` becomes ONE assistant message, `[{"role": "assistant", "content": text}]`, so that
  `swift pt` encodes it with the same template code and takes the loss on all of it.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from swift.core.dataset.meta import DatasetMeta, LoadOptions, Row
from swift.core.media import COLUMNS, MediaError, check_row_media, has_media

MEDIA_COLUMNS = tuple(COLUMNS.values())

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                "observation": "tool", "function": "tool", "tool_response": "tool"}
TOOL_CALL_ROLES = ("function_call", "tool_call")  # sharegpt / ms-swift agent turns: a JSON {name, arguments}
QUERY_KEYS = ("instruction", "query", "question", "prompt", "problem")
RESPONSE_KEYS = ("output", "response", "answer", "completion")
FORMAT_HINT = ("expected one of: messages, conversations (sharegpt), instruction/output (alpaca), query/response, "
               "chosen/rejected, text")


class RowProblem(ValueError):
    """One row cannot be used; `field` is the field at fault (`messages[1].role`), None for the row as a whole.

    The loader turns it into a `DatasetRowError` naming the file and line.
    """

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(field, reason)  # both in args, so that it pickles across dataset worker processes
        self.field, self.reason = field, reason

    def __str__(self) -> str:
        return (f"field {self.field!r}: " if self.field else "") + self.reason


def prepare_row(raw: Row, meta: DatasetMeta | None, options: LoadOptions) -> Row:
    """A raw row renamed (--columns, then its `DatasetMeta`) and preprocessed, then normalised; raises `RowProblem`."""
    if options.columns:
        raw = {options.columns.get(k, k): v for k, v in raw.items()}
    if meta is not None and meta.columns:
        raw = {meta.columns.get(k, k): v for k, v in raw.items()}
    if meta is not None and meta.preprocess is not None:
        raw = meta.preprocess(dict(raw), options)
    return normalize_row(raw, require_answer=options.require_answer)


def normalize_row(row: Row, *, require_answer: bool = True) -> Row:
    """One raw row of any known format as a normalised `messages` row; raises `RowProblem` for a bad row.

    `require_answer=False` accepts conversations that do not end with an assistant answer (prompts for GRPO).
    """
    row = {k: v for k, v in row.items() if v is not None}
    if "chosen" in row and "rejected" in row:
        messages, rejected = _from_preference(row)
        row["rejected_response"] = rejected
        answer_field = "chosen"
    elif "messages" in row:
        messages = _convert_messages(_as_list(row.pop("messages"), "messages"), "messages")
        answer_field = "messages"
    elif "conversations" in row or "conversation" in row:
        key = "conversations" if "conversations" in row else "conversation"
        messages = _convert_messages(_as_list(row.pop(key), key), key, sharegpt=True)
        answer_field = key
    elif any(row.get(k) is not None for k in QUERY_KEYS):
        messages, answer_field = _from_query(row)
    elif "text" in row:
        text = row.pop("text")
        if not isinstance(text, str):
            raise RowProblem("text", f"must be a string, got {type(text).__name__}")
        messages, answer_field = [{"role": "assistant", "content": text}], "text"
    else:
        raise RowProblem(None, f"no known fields (the row has {sorted(row)}); {FORMAT_HINT}")
    messages = _with_system(messages, row.pop("system", None))
    if require_answer and messages[-1]["role"] != "assistant":
        raise RowProblem(answer_field, f"the conversation has no assistant answer to train on (it ends with a "
                                       f"{messages[-1]['role']!r} message)")
    return {"messages": messages, **_common_fields(row), **row}


def _from_preference(row: Row) -> tuple[list[dict], str]:
    chosen, rejected = _maybe_json(row.pop("chosen")), _maybe_json(row.pop("rejected"))
    row.pop("messages", None)  # some sets (HuggingFaceH4/ultrafeedback_binarized) repeat `chosen` as `messages`
    prompt = _prompt_messages(row) if any(row.get(k) is not None for k in QUERY_KEYS) else []
    if isinstance(chosen, str) and not prompt:
        raise RowProblem("chosen", "chosen/rejected are plain answers but the row has no prompt "
                                   f"(add one of {list(QUERY_KEYS)}) or give them as message lists")
    chosen_messages = prompt + _answer_messages(chosen, "chosen")
    rejected_messages = prompt + _answer_messages(rejected, "rejected")
    for messages, field in ((chosen_messages, "chosen"), (rejected_messages, "rejected")):
        if messages[-1]["role"] != "assistant":
            raise RowProblem(field, "must end with an assistant answer")
    if chosen_messages[:-1] != rejected_messages[:-1]:
        raise RowProblem("rejected", "chosen and rejected must be the same conversation up to the last answer")
    rejected_answer = rejected_messages[-1]["content"]
    if not isinstance(rejected_answer, str):
        raise RowProblem("rejected", "the rejected answer must be text")
    return chosen_messages, rejected_answer


def _from_query(row: Row) -> tuple[list[dict], str]:
    missing_answer = "output" if row.get("instruction") is not None else "response"
    messages = _prompt_messages(row)
    key = next((k for k in RESPONSE_KEYS if row.get(k) is not None), None)
    if key is not None:
        messages += _answer_messages(_maybe_json(row.pop(key)), key)
    return messages, key or missing_answer


def _prompt_messages(row: Row) -> list[dict]:
    """system + history + the query of a query/response or alpaca row (the fields used are removed from `row`)."""
    messages = _history(row.pop("history")) if row.get("history") is not None else []
    key = next(k for k in QUERY_KEYS if row.get(k) is not None)
    query = _maybe_json(row.pop(key))
    if isinstance(query, list):
        return messages + _convert_messages(query, key)
    query = _text(query, key)
    if key == "instruction" and row.get("input") is not None:
        extra = _text(row.pop("input"), "input")
        query = f"{query}\n{extra}" if extra else query
    return [*messages, {"role": "user", "content": query}]


def _history(history: Any) -> list[dict]:
    messages = []
    for i, turn in enumerate(_as_list(history, "history")):
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise RowProblem(f"history[{i}]", "must be a [query, response] pair")
        messages.append({"role": "user", "content": _text(turn[0], f"history[{i}][0]")})
        messages.append({"role": "assistant", "content": _text(turn[1], f"history[{i}][1]")})
    return messages


def _answer_messages(value: Any, field: str) -> list[dict]:
    if isinstance(value, list):
        return _convert_messages(value, field)
    return [{"role": "assistant", "content": _text(value, field)}]


def _convert_messages(items: list, field: str, *, sharegpt: bool = False) -> list[dict]:
    """Messages (or sharegpt turns) with OpenAI roles; tool-call turns become assistant `tool_calls`."""
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    messages: list[dict] = []
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise RowProblem(where, f"must be an object with {role_key!r} and {content_key!r}, "
                                    f"got {type(item).__name__}")
        if role_key not in item and "role" in item:  # sharegpt files written with role/content keys
            role_key, content_key = "role", "content"
        role = item.get(role_key)
        if not isinstance(role, str):
            raise RowProblem(f"{where}.{role_key}", "is missing" if role is None else "must be a string")
        role = role.strip().lower()
        rest = {k: v for k, v in item.items() if k not in (role_key, content_key)}
        if role in TOOL_CALL_ROLES:
            call = _tool_call(item.get(content_key), f"{where}.{content_key}")
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            continue
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            raise RowProblem(f"{where}.{role_key}", f"unknown role {item.get(role_key)!r}; expected one of "
                                                    f"{', '.join(ROLES)} (or human, gpt, function_call, observation)")
        content = item.get(content_key)
        if content is None and role == "assistant" and rest.get("tool_calls"):
            content = ""
        messages.append({"role": role, "content": _content(content, f"{where}.{content_key}"), **rest})
    if not messages:
        raise RowProblem(field, "has no messages")
    return messages


def _tool_call(value: Any, field: str) -> dict:
    call = value
    if isinstance(value, str):
        try:
            call = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowProblem(field, f"a tool call must be JSON {{\"name\", \"arguments\"}}: {e.msg}") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise RowProblem(field, "a tool call must be an object with a \"name\" and \"arguments\"")
    arguments = call.get("arguments", call.get("parameters", {}))
    return {"type": "function", "function": {"name": call["name"], "arguments": arguments}}


def _common_fields(row: Row) -> Row:
    """tools, rejected_response, label and media columns, checked and taken out of `row`."""
    out: Row = {}
    if "tools" in row:
        tools = _maybe_json(row.pop("tools"), objects=True)
        tools = [tools] if isinstance(tools, dict) else tools
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise RowProblem("tools", "must be a list of tool schemas (objects), or their JSON text")
        if tools:
            out["tools"] = [t if "type" in t else {"type": "function", "function": t} for t in tools]
    if "rejected_response" in row:
        out["rejected_response"] = _text(row.pop("rejected_response"), "rejected_response")
    if "label" in row:
        out["label"] = _label(row.pop("label"))
    for column in MEDIA_COLUMNS:
        if column not in row:
            continue
        refs = _maybe_json(row.pop(column))
        refs = [refs] if isinstance(refs, (str, dict)) else refs
        if not isinstance(refs, list):
            raise RowProblem(column, f"must be a list of paths, URLs or data: URIs, got {type(refs).__name__}")
        if refs:
            out[column] = [_media_json(ref, f"{column}[{i}]") for i, ref in enumerate(refs)]
    return out


def _media_json(ref: Any, field: str) -> Any:
    """A media reference as JSON (rows are stored as JSON): `{"bytes"}` objects and PIL images become data URIs."""
    if isinstance(ref, (str, list)):
        return ref
    if isinstance(ref, dict) and ref.get("bytes") is None:
        ref = ref.get("path") or ref.get("url")
        if isinstance(ref, str):
            return ref
        raise RowProblem(field, "a media object needs a 'path', 'url' or 'bytes'")
    if isinstance(ref, dict):
        return "data:;base64," + base64.b64encode(bytes(ref["bytes"])).decode()
    if hasattr(ref, "save"):  # a PIL image (the datasets Image feature decoded)
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    raise RowProblem(field, f"must be a path, URL or data: URI, got {type(ref).__name__}")


def check_media(row: Row, base_dir: Path | None) -> Row:
    """Media paths made absolute (relative to `base_dir`, the dataset file's folder) and checked, image headers
    read, tags matched against media; raises `RowProblem` naming the field."""
    if not any(row.get(column) for column in MEDIA_COLUMNS) and not has_media(row):
        return row
    try:
        return check_row_media(row, base_dir)
    except MediaError as e:
        raise RowProblem(e.field, e.reason) from None


def _label(value: Any) -> bool | int | float | list:
    """true/false (KTO), else a number or a list of numbers as given (--task_type seq_cls: a class index, a score
    for regression, the classes of a multi-label row; embedding pairs: a similarity)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number or (isinstance(value, list) and all(isinstance(v, int | float) for v in value)):
        return value
    raise RowProblem("label", "must be true or false (KTO: is the answer desirable?), or a number / list of "
                              f"numbers (--task_type seq_cls, embedding), got {value!r}")


def _with_system(messages: list[dict], system: Any) -> list[dict]:
    if system is None or messages[0]["role"] == "system":
        return messages
    system = _text(system, "system")
    return [{"role": "system", "content": system}, *messages] if system else messages


def _as_list(value: Any, field: str) -> list:
    value = _maybe_json(value)
    if not isinstance(value, list):
        raise RowProblem(field, f"must be a list of messages, got {type(value).__name__} {_short(value)}")
    return value


def _maybe_json(value: Any, *, objects: bool = False) -> Any:
    """A JSON list (or object) written as text, as CSV files hold them, decoded; any other value unchanged."""
    if isinstance(value, str) and value.lstrip()[:1] in (("[", "{") if objects else ("[",)):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, dict) or (isinstance(decoded, list) and all(isinstance(x, (dict, list)) for x in decoded)):
            return decoded
    return value


def _text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowProblem(field, f"must be a string, got {type(value).__name__} {_short(value)}")


def _content(value: Any, field: str) -> Any:
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return value  # multimodal content parts ({"type": "text", ...}, {"type": "image_url", ...})
    if value is None:
        raise RowProblem(field, "is missing")
    return _text(value, field)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
