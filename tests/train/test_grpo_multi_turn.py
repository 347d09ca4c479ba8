"""Multi-turn GRPO (swift/train/rlhf/multi_turn.py): a scheduler answers each completion until it is right; the
trajectory's env_mask covers exactly the model's tokens with SmolLM2's real template; the built-in tool_call
scheduler runs a Python tool; a run trains and logs the turns."""

from __future__ import annotations

import json

import pytest

from swift.core import get_template
from swift.core.errors import ConfigError
from swift.train import rlhf_main
from swift.train.rlhf import MultiTurnScheduler, multi_turn, register_multi_turn_scheduler
from swift.train.rlhf.rollout import Rollout
from tests.train.test_rlhf import flags, logged

TRY_AGAIN = "wrong, try again"


@register_multi_turn_scheduler("until_right_test", replace=True)
class UntilRight(MultiTurnScheduler):
    def check_finished(self, infer_request, response_choice, current_turn):
        right = response_choice.message.content.strip() == infer_request.data_dict["solution"]
        return right or super().check_finished(infer_request, response_choice, current_turn)

    def step(self, infer_request, response_choice, current_turn):
        infer_request.messages.append({"role": "user", "content": TRY_AGAIN})
        return {"infer_request": infer_request}


class Scripted(Rollout):
    """A rollout whose engine answers from a script (token ids of the given texts + end of turn), per call."""

    def __init__(self, template, answers: list[list[str]], **kwargs):
        super().__init__(template, max_tokens=16, temperature=1.0, **kwargs)
        self.answers, self.calls = iter(answers), []

    def complete(self, prompt_ids, trainer, *, seed, call, media=None):
        self.calls.append(prompt_ids)
        tok = self.template.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        answers = next(self.answers)
        assert len(answers) == len(prompt_ids), (answers, len(prompt_ids))
        return [[*tok.encode(text, add_special_tokens=False), end] for text in answers]


@pytest.fixture
def template(smollm2_tokenizer):
    return get_template(None, smollm2_tokenizer)


def test_trajectories_end_when_the_answer_is_right_and_mask_the_environment(template):
    scheduler = UntilRight(max_turns=3)
    rollout = Scripted(template, [["5", "4"], ["4"]], scheduler=scheduler)
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    out = rollout.rollout([{"messages": question}] * 2, None, data=[{"solution": "4"}] * 2)
    # first row: 5 (wrong), 4 (right, stop); second: 4 (right at once): the second call completes row 0 only
    assert [len(c) for c in rollout.calls] == [2, 1]
    assert out["messages"][0] == [*question, {"role": "assistant", "content": "5"},
                                  {"role": "user", "content": TRY_AGAIN}, {"role": "assistant", "content": "4"}]
    assert out["messages"][1] == [*question, {"role": "assistant", "content": "4"}]
    tok = template.tokenizer
    prompt = template.encode({"messages": question})["input_ids"]
    assert out["prompt_ids"][0] == prompt
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    model_text = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    env_text = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert model_text == "5<|im_end|>4<|im_end|>"  # the model's turns, each with its end of turn
    assert TRY_AGAIN in env_text
    assert "5" not in env_text
    assert "4" not in env_text
    assert tok.decode(prompt + ids) == tok.decode(template.encode({"messages": out["messages"][0]})["input_ids"])


def test_max_turns_caps_a_trajectory(template):
    rollout = Scripted(template, [["1"], ["2"], ["3"]], scheduler=UntilRight(max_turns=2))
    out = rollout.rollout([{"messages": [{"role": "user", "content": "2 + 2?"}]}], None, data=[{"solution": "4"}])
    assert len(rollout.calls) == 2
    assert [m["content"] for m in out["messages"][0] if m["role"] == "assistant"] == ["1", "2"]
    assert out["messages"][0][-1]["role"] == "assistant"  # no feedback after the last allowed turn


def test_tool_call_scheduler_runs_the_registered_python_tool(template):
    multi_turn.register_tool("add_test", replace=True)(lambda a, b: a + b)
    scheduler = multi_turn.build_scheduler("tool_call", max_turns=3, response_format="hermes")
    call = '<tool_call>\n{"name": "add_test", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    bad = '<tool_call>\n{"name": "add_test", "arguments": {"a": 2}}\n</tool_call>'
    rollout = Scripted(template, [[call, bad], ["It is 5.", "Sorry."]], scheduler=scheduler)
    out = rollout.rollout([{"messages": [{"role": "user", "content": "Add 2 and 3."}]}] * 2, None)
    first, second = out["messages"]
    assert [m["role"] for m in first[1:]] == ["assistant", "tool", "assistant"]
    assert first[2]["content"] == "5"
    assert first[3]["content"] == "It is 5."
    assert second[2]["content"].startswith("error: TypeError")  # wrong arguments: the environment says so


def test_a_scheduler_that_is_no_scheduler_is_refused():
    register_multi_turn_scheduler("not_a_scheduler_test", replace=True)(dict)
    with pytest.raises(ConfigError, match="must subclass"):
        multi_turn.build_scheduler("not_a_scheduler_test", max_turns=None, response_format="plain")


PLUGIN = """
from swift.train.rlhf import MultiTurnScheduler, register_multi_turn_scheduler, register_reward

@register_multi_turn_scheduler('try_again')
class TryAgain(MultiTurnScheduler):
    def check_finished(self, infer_request, response_choice, current_turn):
        # (a cut answer goes on too: a random model's answers all are)
        right = infer_request.data_dict['solution'] in response_choice.message.content
        return right or current_turn >= self.max_turns

    def step(self, infer_request, response_choice, current_turn):
        infer_request.messages.append({'role': 'user', 'content': 'wrong, try again'})
        return {'infer_request': infer_request}

@register_reward('turns')
def turns(completions, messages, **kwargs):
    return [float(sum(m['role'] == 'assistant' for m in conversation)) for conversation in messages]
"""


def test_multi_turn_grpo_trains_and_logs_the_turns(tiny_llama_dir, tmp_path):
    data = tmp_path / "questions.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                          "solution": "never"}) for i in range(4)))
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    result = rlhf_main(flags(tiny_llama_dir, data, tmp_path / "out", "grpo", "--max_steps", "1",
                             "--per_device_train_batch_size", "4", "--num_generations", "4",
                             "--max_completion_length", "6", "--reward_funcs", "turns", "--external_plugins",
                             str(plugin), "--multi_turn_scheduler", "try_again", "--max_turns", "2",
                             "--log_completions", "true"))
    rows = [json.loads(line) for line in (result.run_dir / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # never right: two turns each, the feedback between them in the completion, the reward saw both turns
    assert all(r["rewards"]["turns"] == 2.0 and r["completion"][0]["content"].count(TRY_AGAIN) == 1 for r in rows)
    step = next(r for r in logged(result.run_dir) if "loss" in r)
    assert step["rewards/turns/mean"] == 2.0


def test_multi_turn_flags_are_checked_before_loading(tiny_llama_dir, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    with pytest.raises(ConfigError, match="--max_turns given without --multi_turn_scheduler"):
        rlhf_main(flags(tiny_llama_dir, data, tmp_path / "out", "grpo", "--reward_funcs", "format",
                        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_turns", "2"))
    with pytest.raises(ConfigError, match="multi_turn_scheduler"):
        rlhf_main(flags(tiny_llama_dir, data, tmp_path / "out", "grpo", "--reward_funcs", "format",
                        "--per_device_train_batch_size", "4", "--num_generations", "4",
                        "--multi_turn_scheduler", "no_such_scheduler"))


def test_scheduler_module_stays_light():
    from tests.conftest import run_python

    out = run_python("import sys, swift.train.rlhf.multi_turn; print([m for m in ('torch', 'trl') if m in sys.modules])")
    assert out.stdout.strip() == "[]", out.stderr
