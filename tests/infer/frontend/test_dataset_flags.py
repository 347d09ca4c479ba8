"""`swift infer` over a dataset: --load_data_args answers the rows training held out, --write_batch_size appends the
results in chunks (and keeps them when the run stops), --metric scores the answers against the references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swift.core.errors import ConfigError
from swift.infer.cli import infer_main
from swift.infer.frontend import batch

GREEDY = ["--temperature", "0", "--max_new_tokens", "3"]


def write_rows(path: Path, count: int, answer=lambda i: f"Answer {i}.") -> Path:
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                       {"role": "assistant", "content": answer(i)}]})
                              for i in range(count)))
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def split_checkpoint(tiny_llama_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A `swift sft` LoRA checkpoint (1 step) trained with a quarter of its 20 rows held out, seed 7."""
    from swift.train import sft_main

    root = tmp_path_factory.mktemp("split")
    data = write_rows(root / "chat.jsonl", 20)
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), "--split_dataset_ratio", "0.25",
                       "--data_seed", "7", "--max_steps", "1", "--output_dir", str(root / "out"), "--report_to",
                       "none", "--bf16", "false", "--per_device_train_batch_size", "4", "--gradient_checkpointing",
                       "false", "--eval_strategy", "no"])
    return Path(result.last_checkpoint), data


def test_load_data_args_answers_exactly_the_held_out_rows(split_checkpoint, tmp_path):
    from swift.core import load_rows
    from swift.core.arguments import DataArgs

    checkpoint, data = split_checkpoint
    out = tmp_path / "out.jsonl"
    assert infer_main(["--adapters", str(checkpoint), "--load_data_args", "true", "--result_path", str(out),
                       *GREEDY]) == 0
    train, val = load_rows(DataArgs(dataset=[str(data)], split_dataset_ratio=0.25, data_seed=7))
    held_out = [row["messages"][0]["content"] for row in val]
    lines = read_lines(out)
    assert [line["query"] for line in lines] == held_out
    assert len(held_out) == 5
    assert not {line["query"] for line in lines} & {row["messages"][0]["content"] for row in train}
    assert [line["labels"] for line in lines] == [row["messages"][1]["content"] for row in val]


def test_load_data_args_leaves_flags_given_on_the_command_line(split_checkpoint, tmp_path):
    checkpoint, _ = split_checkpoint
    other = write_rows(tmp_path / "other.jsonl", 2, answer=lambda i: "Other.")
    out = tmp_path / "out.jsonl"
    assert infer_main(["--adapters", str(checkpoint), "--load_data_args", "true", "--val_dataset", str(other),
                       "--result_path", str(out), *GREEDY]) == 0
    assert [line["labels"] for line in read_lines(out)] == ["Other.", "Other."]
    with pytest.raises(ConfigError, match="--load_data_args true: the data flags come from"):
        infer_main(["--model", "unused", "--load_data_args", "true"])


@pytest.mark.parametrize(("size", "chunks"), [(3, [3, 3, 1]), (-1, [7])])
def test_results_are_appended_write_batch_size_lines_at_a_time(tiny_llama_dir, tmp_path, monkeypatch, size, chunks):
    data = write_rows(tmp_path / "val.jsonl", 7)
    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []  # (lines appended, lines in the file after the append)
    append = batch.append_lines

    def recording(file, lines):
        count = len(lines)
        append(file, lines)
        if count:
            seen.append((count, len(out.read_text().splitlines())))

    monkeypatch.setattr(batch, "append_lines", recording)
    assert infer_main(["--model", str(tiny_llama_dir), "--val_dataset", str(data), "--result_path", str(out),
                       "--write_batch_size", str(size), *GREEDY]) == 0
    totals = [sum(chunks[:i + 1]) for i in range(len(chunks))]
    assert seen == list(zip(chunks, totals, strict=True))
    assert [line["index"] for line in read_lines(out)] == list(range(7))


def test_an_interrupted_run_keeps_every_answer_made_and_resumes(tiny_llama_dir, tmp_path, monkeypatch):
    data = write_rows(tmp_path / "val.jsonl", 7)
    out = tmp_path / "out.jsonl"
    flags = ["--model", str(tiny_llama_dir), "--val_dataset", str(data), "--result_path", str(out),
             "--write_batch_size", "3", *GREEDY]
    line_of = batch.result_line

    def stop_at_row_4(index, *rest):
        if index == 4:
            raise KeyboardInterrupt
        return line_of(index, *rest)

    monkeypatch.setattr(batch, "result_line", stop_at_row_4)
    with pytest.raises(KeyboardInterrupt):
        infer_main(flags)
    assert [line["index"] for line in read_lines(out)] == [0, 1, 2, 3]  # row 3 was held back, not lost
    monkeypatch.setattr(batch, "result_line", line_of)
    assert infer_main(flags) == 0
    assert [line["index"] for line in read_lines(out)] == list(range(7))
    with pytest.raises(ConfigError, match="--write_batch_size 0"):
        infer_main([*flags, "--write_batch_size", "0"])


def test_metric_scores_the_answers_against_the_references(tiny_llama_dir, tmp_path, capsys):
    probe, out = write_rows(tmp_path / "probe.jsonl", 4), tmp_path / "probe_out.jsonl"
    # the random model's greedy answers are blank; seeded sampling gives words, the same in each run
    base = ["--model", str(tiny_llama_dir), "--temperature", "1", "--seed", "0", "--max_new_tokens", "3"]
    assert infer_main([*base, "--val_dataset", str(probe), "--result_path", str(out)]) == 0
    answers = [line["response"] for line in read_lines(out)]
    assert all(answer.strip() for answer in answers[:2])
    # the same questions, the first two with the model's own answers as references
    data = write_rows(tmp_path / "val.jsonl", 4, answer=lambda i: answers[i] if i < 2 else "zebra quantum")
    capsys.readouterr()
    for metric in ("acc", "rouge"):
        result = tmp_path / f"{metric}.jsonl"
        assert infer_main([*base, "--val_dataset", str(data), "--result_path", str(result), "--metric", metric]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        written = json.loads((tmp_path / f"{metric}.metric.json").read_text())
        assert written == {"metric": metric, **printed}
        if metric == "acc":
            assert printed == {"acc": 0.5, "rows": 4}
        else:  # two exact answers (100) and two sharing nothing with "zebra quantum" (0), unless the model said it
            assert printed["rows"] == 4
            assert printed["rouge-l"] == pytest.approx(50)
            assert printed["rouge-1"] == pytest.approx(50)
            assert printed["bleu-4"] <= 50
    with pytest.raises(ConfigError, match="--metric acc: scores the answers to a dataset"):
        infer_main([*base, "--metric", "acc"])


def test_columns_maps_a_datasets_own_names_for_infer(tiny_llama_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"Question {i}?", "gold": f"Answer {i}."}) for i in range(2)))
    out = tmp_path / "out.jsonl"
    assert infer_main(["--model", str(tiny_llama_dir), "--val_dataset", str(data), "--result_path", str(out),
                       "--columns", '{"question": "query", "gold": "response"}', *GREEDY]) == 0
    lines = read_lines(out)
    assert [line["labels"] for line in lines] == ["Answer 0.", "Answer 1."]
    assert lines[0]["messages"][0] == {"role": "user", "content": "Question 0?"}
