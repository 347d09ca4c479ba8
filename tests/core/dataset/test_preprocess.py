"""Every known row format normalised to `messages`, and every kind of bad row named by its field."""

from __future__ import annotations

import pickle

import pytest

from swift.core.dataset import RowProblem, normalize_row

U, A = "user", "assistant"


def m(role: str, content: str, **rest) -> dict:
    return {"role": role, "content": content, **rest}


FORMATS = {
    "messages": ({"messages": [m(U, "hi"), m(A, "yo")]}, [m(U, "hi"), m(A, "yo")]),
    "messages_system_field": ({"system": "be brief", "messages": [m(U, "hi"), m(A, "yo")]},
                              [m("system", "be brief"), m(U, "hi"), m(A, "yo")]),
    "sharegpt": ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"},
                                    {"from": "gpt", "value": "yo"}]}, [m("system", "s"), m(U, "hi"), m(A, "yo")]),
    "sharegpt_role_keys": ({"conversations": [m("user", "hi"), m("assistant", "yo")]}, [m(U, "hi"), m(A, "yo")]),
    "alpaca": ({"instruction": "Add", "input": "1 and 2", "output": "3"}, [m(U, "Add\n1 and 2"), m(A, "3")]),
    "alpaca_empty_input": ({"instruction": "Add", "input": "", "output": "3"}, [m(U, "Add"), m(A, "3")]),
    "query_response_history": (
        {"system": "s", "history": [["q1", "r1"]], "query": "q2", "response": "r2"},
        [m("system", "s"), m(U, "q1"), m(A, "r1"), m(U, "q2"), m(A, "r2")]),
    "question_answer": ({"question": "2+2?", "answer": 4}, [m(U, "2+2?"), m(A, "4")]),
    "trl_prompt_completion": ({"prompt": [m(U, "hi")], "completion": [m(A, "yo")]}, [m(U, "hi"), m(A, "yo")]),
    "pretraining_text": ({"text": "Once upon a time."}, [m(A, "Once upon a time.")]),
    "csv_json_messages": ({"messages": '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]'},
                          [m(U, "hi"), m(A, "yo")]),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_becomes_messages(name):
    row, want = FORMATS[name]
    assert normalize_row(row)["messages"] == want


def test_extra_keys_of_messages_are_kept_as_written():
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": "x"}}}
    row = {"messages": [m(U, "q"), {"role": "assistant", "content": None, "tool_calls": [call]},
                        m("tool", "result", name="lookup"), m(A, "done", reasoning_content="think")]}
    out = normalize_row(row)["messages"]
    assert out[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert out[2]["name"] == "lookup"
    assert out[3]["reasoning_content"] == "think"


def test_sharegpt_agent_turns_become_tool_calls_and_tool_messages():
    row = {"tools": '[{"name": "lookup", "parameters": {}}]', "conversations": [
        {"from": "user", "value": "define x"},
        {"from": "function_call", "value": '{"name": "lookup", "arguments": {"word": "x"}}'},
        {"from": "function_call", "value": '{"name": "lookup", "arguments": {"word": "y"}}'},
        {"from": "observation", "value": "a letter"},
        {"from": "assistant", "value": "x is a letter"}]}
    out = normalize_row(row)
    assert [msg["role"] for msg in out["messages"]] == [U, A, "tool", A]
    assert [c["function"]["arguments"] for c in out["messages"][1]["tool_calls"]] == [{"word": "x"}, {"word": "y"}]
    assert out["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]


@pytest.mark.parametrize("row", [
    {"messages": [m(U, "q"), m(A, "good")], "rejected_response": "bad"},
    {"prompt": "q", "chosen": "good", "rejected": "bad"},
    {"chosen": [m(U, "q"), m(A, "good")], "rejected": [m(U, "q"), m(A, "bad")]},
    {"prompt": [m(U, "q")], "chosen": [m(A, "good")], "rejected": [m(A, "bad")]},
    {"question": "q", "chosen": "good", "rejected": "bad", "messages": [m(U, "q"), m(A, "good")]},
], ids=["rejected_response", "strings", "message_lists", "trl_prompt", "with_messages_copy"])
def test_preference_rows_become_messages_and_rejected_response(row):
    out = normalize_row(row)
    assert out["messages"] == [m(U, "q"), m(A, "good")]
    assert out["rejected_response"] == "bad"


@pytest.mark.parametrize(("label", "want"), [(True, True), (0, False), ("true", True), ("False", False)])
def test_kto_label_is_a_bool(label, want):
    assert normalize_row({"messages": [m(U, "q"), m(A, "a")], "label": label})["label"] is want


def test_unknown_columns_are_kept_and_images_become_a_list():
    out = normalize_row({"query": "q", "response": "a", "solution": "42", "id": 7, "images": "cat.png"})
    assert out["solution"] == "42"
    assert out["id"] == 7
    assert out["images"] == ["cat.png"]


def test_prompts_without_answer_pass_when_no_answer_is_required():
    out = normalize_row({"problem": "2+2?", "solution": "4"}, require_answer=False)
    assert out == {"messages": [m(U, "2+2?")], "solution": "4"}


BAD = {
    "no_known_fields": ({"foo": "bar"}, None, "no known fields"),
    "unknown_role": ({"messages": [m("wizard", "x"), m(A, "y")]}, "messages[0].role", "unknown role 'wizard'"),
    "messages_not_list": ({"messages": "hello"}, "messages", "must be a list"),
    "message_not_object": ({"messages": ["hello"]}, "messages[0]", "must be an object"),
    "no_answer": ({"messages": [m(U, "only a question")]}, "messages", "no assistant answer"),
    "ends_with_user": ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                                          {"from": "human", "value": "c"}]}, "conversations", "no assistant answer"),
    "empty_messages": ({"messages": []}, "messages", "has no messages"),
    "missing_content": ({"messages": [{"role": "user"}, m(A, "y")]}, "messages[0].content", "missing"),
    "content_object": ({"messages": [m(U, "q"), {"role": "assistant", "content": {"x": 1}}]},
                       "messages[1].content", "must be a string"),
    "sharegpt_bad_from": ({"conversations": [{"from": "narrator", "value": "x"}]}, "conversations[0].from",
                          "unknown role"),
    "bad_tool_call": ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{no"}]},
                      "conversations[1].value", "tool call must be JSON"),
    "bad_label": ({"messages": [m(U, "q"), m(A, "a")], "label": "maybe"}, "label", "true or false"),
    "bad_history": ({"query": "q", "response": "r", "history": [["only one"]]}, "history[0]", "pair"),
    "chosen_without_prompt": ({"chosen": "good", "rejected": "bad"}, "chosen", "no prompt"),
    "chosen_rejected_differ": ({"chosen": [m(U, "q1"), m(A, "a")], "rejected": [m(U, "q2"), m(A, "b")]},
                               "rejected", "same conversation"),
    "bad_tools": ({"messages": [m(U, "q"), m(A, "a")], "tools": 3}, "tools", "tool schemas"),
    "text_not_string": ({"text": ["a"]}, "text", "must be a string"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_rows_name_the_field(name):
    row, field, reason = BAD[name]
    with pytest.raises(RowProblem) as caught:
        normalize_row(row)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_row_problem_pickles_for_worker_processes():
    problem = pickle.loads(pickle.dumps(RowProblem("messages", "bad")))
    assert (problem.field, problem.reason) == ("messages", "bad")
