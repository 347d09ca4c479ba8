"""The packaged self-cognition dataset, filled in with the model's name and author in both languages."""

from __future__ import annotations

import pytest

from swift.core.dataset import load_dataset
from swift.core.errors import ConfigError


def answers(dataset) -> list[str]:
    return [r["messages"][-1]["content"] for r in dataset]


def test_names_are_filled_in_per_language():
    train, _ = load_dataset(["self-cognition"], model_name=["Nova", "诺瓦"], model_author=["Acme", "艾克米"])
    texts = answers(train)
    assert 110 <= len(texts) <= 140
    assert not any("{{" in t for t in texts)
    general = [t for t in texts if not any(n in t for n in ("Nova", "诺瓦", "Acme", "艾克米"))]
    assert "The capital of France is Paris." in general  # general rows keep the model answering other questions
    assert 15 <= len(general) <= 30
    identity = [t for t in texts if t not in general]
    english = [t for t in identity if t.isascii()]
    chinese = [t for t in identity if not t.isascii()]
    assert len(english) >= 40
    assert len(chinese) >= 40
    assert all("Nova" in t and "诺瓦" not in t for t in english)
    assert all("诺瓦" in t and "Nova" not in t for t in chinese)
    assert sum("Acme" in t for t in english) >= 40
    assert sum("艾克米" in t for t in chinese) >= 40
    questions = [r["messages"][0]["content"] for r in train]
    assert len(set(questions)) == len(questions)
    assert set(train.column_names) == {"messages"}


def test_one_name_serves_both_languages_and_n_samples():
    train, _ = load_dataset(["self-cognition#500"], model_name="Nova", model_author=["Acme"])
    texts = answers(train)
    assert len(texts) == 500
    assert sum("Nova" in t for t in texts) >= 300
    assert not any("{{" in t for t in texts)


def test_without_names_it_asks_for_the_flags():
    with pytest.raises(ConfigError, match=r"--model_name NAME .*--model_author AUTHOR"):
        load_dataset(["self-cognition"])
    with pytest.raises(ConfigError, match="--model_name NAME"):
        load_dataset(["swift/self-cognition"], model_name=["Nova"])  # its hub id finds the packaged copy
