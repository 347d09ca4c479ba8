"""Hub datasets are normalised with Dataset.map: tested on an in-memory dataset standing in for the download."""

from __future__ import annotations

import pytest

from swift.core.dataset import DatasetMeta, load_dataset, register_dataset
from swift.core.dataset import load as load_module
from swift.core.errors import DatasetRowError


@pytest.fixture
def fake_hub(monkeypatch):
    """Serve `datasets.Dataset`s from a dict keyed by (hub id, subset, split); records the calls."""
    from datasets import Dataset

    tables: dict[tuple, list[dict]] = {}
    calls: list[tuple] = []

    def load_hub(hub_id, subset, split, options, *, use_modelscope, label):
        calls.append((hub_id, subset, split, use_modelscope))
        return Dataset.from_list(tables[(hub_id, subset, split)])

    monkeypatch.setattr(load_module, "load_hub", load_hub)
    return tables, calls


def test_registered_columns_and_subsets_apply_to_hub_rows(fake_hub):
    tables, calls = fake_hub
    tables[("openai/gsm8k", "main", "train")] = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(4)]
    tables[("openai/gsm8k", "socratic", "train")] = [{"question": "s", "answer": "t"}]
    train, _ = load_dataset(["gsm8k"])
    assert calls == [("openai/gsm8k", "main", "train", False)]
    assert train[0]["messages"] == [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]
    assert len(load_dataset(["gsm8k:main/socratic"])[0]) == 5


def test_hub_rows_keep_extras_and_bad_rows_are_located(fake_hub, caplog):
    tables, _ = fake_hub
    rows = [{"problem": f"p{i}", "solution": f"s{i}", "messages": None} for i in range(6)]
    rows[4] = {"problem": None, "solution": "s4", "messages": "oops"}
    tables[("org/math", None, "train")] = rows
    with pytest.raises(DatasetRowError, match=r"org/math \[train\]:5 field 'messages'"):
        load_dataset(["org/math"], require_answer=False)
    train, _ = load_dataset(["org/math"], require_answer=False, strict=False, num_proc=2)
    assert [r["solution"] for r in train] == ["s0", "s1", "s2", "s3", "s5"]
    assert train[0]["messages"] == [{"role": "user", "content": "p0"}]
    assert "skipped 1 bad dataset row" in caplog.text


def test_registered_hub_dataset_prefers_modelscope_when_asked(fake_hub, monkeypatch):
    tables, calls = fake_hub
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    tables[("AI-ModelScope/alpaca-gpt4-data-en", None, "train")] = [{"instruction": "i", "input": "", "output": "o"}]
    assert len(load_dataset(["alpaca-gpt4-data-en"])[0]) == 1
    assert calls == [("AI-ModelScope/alpaca-gpt4-data-en", None, "train", True)]


def test_a_preprocessor_sees_the_load_options(fake_hub, monkeypatch):
    from swift.core.dataset import registry

    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    monkeypatch.setattr(registry, "_BY_ID", dict(registry._BY_ID))
    tables, _ = fake_hub
    tables[("org/shout", None, "dev")] = [{"q": "hi", "r": "yo"}]

    def shout(row, options):
        return {"query": row["query"], "response": row["response"].upper() + str(options.seed)}

    register_dataset(DatasetMeta("shout", hf_id="org/shout", split=("dev",), columns={"q": "query", "r": "response"},
                                 preprocess=shout))
    train, _ = load_dataset(["org/shout"], seed=7)  # found by its hub id too
    assert train[0]["messages"][-1]["content"] == "YO7"
