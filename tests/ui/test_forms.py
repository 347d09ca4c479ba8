"""Forms come from the CLI's argument dataclasses; the command box is the exact line the CLI parses back."""

from __future__ import annotations

import shlex

from swift.core.arguments import collect_flags, parse_args
from swift.infer.arguments import EvalArguments
from swift.ui.forms import command_argv, command_line, display_value, form_fields


def values_with(fields, **changed):
    values = [display_value(f.flag, f.flag.default) for f in fields]
    for i, f in enumerate(fields):
        if f.flag.name in changed:
            values[i] = changed[f.flag.name]
    return values


def test_every_flag_of_the_dataclass_is_a_field_named_by_its_flag():
    fields = form_fields(EvalArguments)
    canonical = {flag.name for flag in collect_flags(EvalArguments).values()}
    assert {f.flag.name for f in fields} == canonical
    assert all(f.elem_id == f.flag.name for f in fields)
    assert {f.elem_id for f in form_fields(EvalArguments, prefix="eval-")} == {f"eval-{n}" for n in canonical}


def test_untouched_form_is_the_bare_command():
    fields = form_fields(EvalArguments)
    assert command_argv(["eval"], fields, values_with(fields)) == ["swift", "eval"]


def test_changed_fields_become_flags_that_the_cli_parses_back_to_the_same_values(tmp_path):
    fields = form_fields(EvalArguments)
    values = values_with(fields, model="my model", eval_dataset="general_mcq 'a b'", eval_limit="5",
                         dataset_args='{"general_mcq": {"local_path": "/d"}}', infer_backend="vllm",
                         merge_lora=True, eval_num_proc=3.0, temperature="0")
    argv = command_argv(["eval"], fields, values)
    assert argv[:2] == ["swift", "eval"]
    assert "--eval_num_proc" in argv
    assert argv[argv.index("--eval_num_proc") + 1] == "3"
    parsed = parse_args(EvalArguments, shlex.split(command_line(argv))[2:], prog="swift eval")
    assert parsed.model.model == "my model"
    assert parsed.eval.eval_dataset == ["general_mcq", "a b"]
    assert parsed.eval.eval_limit == 5
    assert parsed.eval.dataset_args == {"general_mcq": {"local_path": "/d"}}
    assert parsed.infer.infer_backend == "vllm"
    assert parsed.infer.merge_lora is True
    assert parsed.eval.eval_num_proc == 3
    assert parsed.infer.temperature == 0.0


def test_optional_booleans_stay_unset_until_chosen():
    flag = next(f.flag for f in form_fields(EvalArguments) if f.flag.name == "stream")
    assert display_value(flag, flag.default) == ""
    fields = [f for f in form_fields(EvalArguments) if f.flag.name == "stream"]
    assert command_argv(["eval"], fields, [""]) == ["swift", "eval"]
    assert command_argv(["eval"], fields, ["false"]) == ["swift", "eval", "--stream", "false"]


def test_secrets_typed_on_the_page_travel_in_the_environment_only(tmp_path):
    from swift.ui.forms import secret_env
    from swift.ui.runs import start_run

    fields = form_fields(EvalArguments)
    values = values_with(fields, model="m", hub_token="hf_page_secret")
    argv = command_argv(["eval"], fields, values)
    assert argv == ["swift", "eval", "--model", "m"]
    secrets = secret_env(fields, values)
    assert secrets == {"HF_TOKEN": "hf_page_secret"}
    assert command_line(argv, secrets) == "HF_TOKEN=*** swift eval --model m"
    run = start_run(tmp_path, "eval", ["bash", "-c", 'echo "token of ${#HF_TOKEN} characters"'],
                    output_dir=None, env={"PATH": "/usr/bin:/bin", **secrets})
    import time

    for _ in range(100):
        if "characters" in (run.dir / "log.txt").read_text():
            break
        time.sleep(0.1)
    assert "token of 14 characters" in (run.dir / "log.txt").read_text()
    assert "hf_page_secret" not in (run.dir / "command.json").read_text()
