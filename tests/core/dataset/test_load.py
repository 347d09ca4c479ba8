"""load_dataset on real files: every file type and format, bad rows located, sampling, subsets, splits, hub errors."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import pytest

from swift.core.dataset import load_dataset, parse_spec
from swift.core.errors import ConfigError, DatasetRowError, MissingBackendError, UnknownDatasetError


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def rows_of(dataset) -> list[dict]:
    return [dict(r) for r in dataset]


def test_each_file_type_loads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    alpaca = [{"instruction": f"Do {i}", "input": "ctx" if i % 2 else "", "output": f"done {i}"} for i in range(3)]
    write_jsonl(tmp_path / "a.jsonl", alpaca)
    (tmp_path / "b.json").write_text(json.dumps([chat(i) for i in range(3)]))
    with (tmp_path / "c.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["query", "response", "system"])
        writer.writeheader()
        writer.writerows([{"query": f"q{i}", "response": f"r{i}", "system": ""} for i in range(3)])
    pq.write_table(pa.Table.from_pylist([{"question": f"q{i}", "answer": f"r{i}"} for i in range(3)]),
                   tmp_path / "d.parquet")
    (tmp_path / "e.txt").write_text("first document\n\nsecond document\n")
    train, val = load_dataset([str(tmp_path / n) for n in ("a.jsonl", "b.json", "c.csv", "d.parquet", "e.txt")])
    rows = rows_of(train)
    assert val is None
    assert len(rows) == 14
    assert rows[1]["messages"] == [{"role": "user", "content": "Do 1\nctx"}, {"role": "assistant", "content": "done 1"}]
    assert rows[3]["messages"][-1] == {"role": "assistant", "content": "a0"}
    assert rows[6]["messages"] == [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "r0"}]
    assert rows[9]["messages"][0]["content"] == "q0"
    assert [r["messages"] for r in rows[12:]] == [[{"role": "assistant", "content": "first document"}],
                                                  [{"role": "assistant", "content": "second document"}]]


def test_columns_of_preference_kto_tools_and_extras_are_kept(tmp_path):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {**chat(0), "rejected_response": "no", "label": True, "solution": "\\boxed{1}", "tools": tools},
        {**chat(1), "rejected_response": "nope", "label": False, "solution": 2},  # solution: another type
    ])
    rows = rows_of(load_dataset([str(path)])[0])
    assert [r["rejected_response"] for r in rows] == ["no", "nope"]
    assert [r["label"] for r in rows] == [True, False]
    assert [r["solution"] for r in rows] == ["\\boxed{1}", 2]
    assert rows[0]["tools"] == tools
    assert rows[1]["tools"] is None
    assert set(rows[0]["messages"][0]) == {"role", "content"}  # no None-filled keys from other rows


def test_columns_differing_between_files_are_joined(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{**chat(0), "id": 1}])
    b = write_jsonl(tmp_path / "b.jsonl", [{**chat(1), "id": "x", "label": True}])
    rows = rows_of(load_dataset([str(a), str(b)])[0])
    assert [(r["id"], r["label"]) for r in rows] == [(1, None), ("x", True)]


BAD_ROWS = {  # file name: (rows, 1-based line, field)
    "badjson.jsonl": ([chat(0), chat(1), '{"messages": [ oops', chat(2)], 3, None),
    "nofields.jsonl": ([chat(0), {"foo": "bar"}, chat(1)], 2, None),
    "badrole.jsonl": ([chat(0), {"messages": [{"role": "wizard", "content": "x"}]}], 2, "messages[0].role"),
    "notlist.jsonl": ([chat(0), chat(1), chat(2), {"messages": "hello"}], 4, "messages"),
    "noanswer.jsonl": ([chat(0), {"messages": [{"role": "user", "content": "only a question"}]}], 2, "messages"),
}


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_a_bad_row_names_file_line_and_field(tmp_path, name):
    rows, line, field = BAD_ROWS[name]
    path = write_jsonl(tmp_path / name, rows)
    with pytest.raises(DatasetRowError) as caught:
        load_dataset([str(path)])
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}:{line}")


def test_json_and_csv_rows_are_numbered(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([chat(0), chat(1), {"messages": 5}], indent=2))
    (tmp_path / "rows.csv").write_text("query,response\nq0,r0\nq1,\n")
    with pytest.raises(DatasetRowError, match=r"rows\.json:3 field 'messages'.*\(row 3\)"):
        load_dataset([str(tmp_path / "rows.json")])
    with pytest.raises(DatasetRowError, match=r"rows\.csv:2 field 'response'.*no assistant answer"):
        load_dataset([str(tmp_path / "rows.csv")])
    (tmp_path / "broken.json").write_text('[\n{"messages": []},\n{oops}\n]')
    with pytest.raises(DatasetRowError, match=r"broken\.json:3: invalid JSON"):
        load_dataset([str(tmp_path / "broken.json")])


def test_strict_false_skips_counts_and_warns_once(tmp_path, caplog):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(0), "{bad", chat(1), {"foo": 1}])
    b = write_jsonl(tmp_path / "b.jsonl", [*[{"messages": "x"}] * 6, chat(2)])
    with caplog.at_level(logging.WARNING, logger="swift.core.dataset"):
        train, _ = load_dataset([str(a), str(b)], strict=False)
    assert len(train) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 8 bad dataset rows" in warnings[0]
    assert f"{a}:2" in warnings[0]
    assert f"{a}:4" in warnings[0]
    assert f"{b}:1" in warnings[0]
    assert "and 3 more" in warnings[0]


def test_sampling_is_reproducible_and_repeats_past_the_end(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(10)])
    firsts = lambda ds: [r["messages"][0]["content"] for r in ds]  # noqa: E731
    a, b = firsts(load_dataset([f"{path}#4"])[0]), firsts(load_dataset([f"{path}#4"])[0])
    assert a == b
    assert len(set(a)) == 4
    assert firsts(load_dataset([f"{path}#4"], seed=1)[0]) != a
    many = firsts(load_dataset([f"{path}#25"])[0])
    assert len(many) == 25
    assert all(many.count(f"q{i}") in (2, 3) for i in range(10))


def test_split_holds_out_a_seeded_fraction(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(20)])
    train, val = load_dataset([str(path)], split_dataset_ratio=0.2)
    _train2, val2 = load_dataset([str(path)], split_dataset_ratio=0.2)
    assert (len(train), len(val)) == (16, 4)
    assert rows_of(val) == rows_of(val2)
    contents = {r["messages"][0]["content"] for r in rows_of(train) + rows_of(val)}
    assert len(contents) == 20


def test_folders_and_subsets(tmp_path):
    (tmp_path / "en").mkdir()
    write_jsonl(tmp_path / "en" / "a.jsonl", [chat(0), chat(1)])
    write_jsonl(tmp_path / "zh.jsonl", [chat(2)])
    (tmp_path / ".hidden").mkdir()
    write_jsonl(tmp_path / ".hidden" / "x.jsonl", [{"junk": 1}])
    assert len(load_dataset([str(tmp_path)])[0]) == 3
    assert len(load_dataset([f"{tmp_path}:en"])[0]) == 2
    assert len(load_dataset([f"{tmp_path}:en/zh#5"])[0]) == 5
    with pytest.raises(ConfigError, match="no sub-folder or file named 'fr'"):
        load_dataset([f"{tmp_path}:fr"])
    with pytest.raises(ConfigError, match="a single file has no subsets"):
        load_dataset([f"{tmp_path / 'zh.jsonl'}:en"])


@pytest.mark.parametrize(("text", "want"), [
    ("data.jsonl", ("data.jsonl", (), None)),
    ("org/name:sub#10", ("org/name", ("sub",), 10)),
    ("gsm8k:main/socratic", ("gsm8k", ("main", "socratic"), None)),
])
def test_parse_spec(text, want):
    assert parse_spec(text) == want


def test_bad_arguments_are_reported_together(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(0)])
    with pytest.raises(ConfigError) as caught:
        load_dataset([str(path)], split_dataset_ratio=1.5, num_proc=0)
    assert "split_dataset_ratio" in str(caught.value)
    assert "num_proc" in str(caught.value)
    with pytest.raises(ConfigError, match="positive row count"):
        load_dataset([f"{path}#all"])


def test_unknown_names_suggest_and_missing_files_say_so(tmp_path):
    with pytest.raises(UnknownDatasetError, match=r"did you mean \['alpaca-gpt4-data-en'"):
        load_dataset(["alpaca-gpt4-data-eng"])
    with pytest.raises(UnknownDatasetError, match="no such file"):
        load_dataset([str(tmp_path / "missing.jsonl")])
    with pytest.raises(UnknownDatasetError, match="has no subset"):
        load_dataset(["gsm8k:nope"])


@pytest.mark.parametrize("name", ["gsm8k", "alpaca-gpt4-data-en", "someone/some-dataset"])
def test_an_unreachable_hub_fails_fast_and_clearly(monkeypatch, name):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    start = time.monotonic()
    with pytest.raises(UnknownDatasetError) as caught:
        load_dataset([name])
    assert time.monotonic() - start < 10
    assert name in str(caught.value)
    assert "Hugging Face hub" in str(caught.value)
    assert "local file" in str(caught.value)


def test_modelscope_hub_needs_its_extra(monkeypatch):
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    try:
        import modelscope  # noqa: F401
    except ImportError:
        with pytest.raises(MissingBackendError, match=r"swift-core\[modelscope\]"):
            load_dataset(["gsm8k"])
    else:
        pytest.skip("modelscope is installed here")


def test_streaming_yields_normalised_rows_lazily(tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(0), "{bad", chat(1), chat(2)])
    train, val = load_dataset([f"{path}#2"], streaming=True, strict=False)
    with caplog.at_level(logging.WARNING, logger="swift.core.dataset"):
        rows = list(train)
    assert val is None
    assert [r["messages"][1]["content"] for r in rows] == ["a0", "a1"]
    strict, _ = load_dataset([str(path)], streaming=True)
    with pytest.raises(DatasetRowError, match=r"d\.jsonl:2"):
        list(strict)


def test_a_dataset_with_no_usable_rows_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="has no usable rows"):
        load_dataset([str(empty)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"foo": 1}, {"bar": 2}])
    with pytest.raises(ConfigError, match="all 2 were bad"):
        load_dataset([str(bad)], strict=False)


def test_columns_flag_renames_raw_columns_in_every_dataset_that_has_them(tmp_path):
    from swift.core.arguments import DataArgs
    from swift.core.builders import load_rows

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"text1": f"q{i}", "text2": f"a{i}"} for i in range(3)])
    csv_path = tmp_path / "more.csv"
    csv_path.write_text("prompt,text2\nq9,a9\n")
    plain = write_jsonl(tmp_path / "plain.jsonl", [chat(5)])
    mapping = {"text1": "query", "text2": "response", "prompt": "query"}
    train, _ = load_rows(DataArgs(dataset=[str(pairs), str(csv_path), str(plain)], columns=mapping,
                                  dataset_shuffle=False))
    assert [r["messages"] for r in rows_of(train)] == [chat(i)["messages"] for i in (0, 1, 2, 9, 5)]
    with pytest.raises(ConfigError, match=r"--columns: 'txt1' is a column of none of the datasets \(their columns: "
                                          r"text1, text2\)"):
        load_dataset([str(pairs)], columns={"txt1": "query"})
    with pytest.raises(DatasetRowError, match=r"pairs\.jsonl"):  # without the mapping the rows are not a format
        load_dataset([str(pairs)])
