"""Real tokenizers for the template tests: every fixture folder plus the packaged SmolLM2, each loaded once."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES

FAMILIES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []
FAMILIES.append("smollm2")


@pytest.fixture(scope="session")
def tokenizer_of(request):
    """`tokenizer_of(family)`: the fixture tokenizer of that folder (or the packaged SmolLM2), cached."""
    from transformers import AutoTokenizer

    cache: dict = {}

    def load(family: str):
        if family not in cache:
            if family == "smollm2":
                cache[family] = request.getfixturevalue("smollm2_tokenizer")
            else:
                cache[family] = AutoTokenizer.from_pretrained(FIXTURES / family)
        return cache[family]

    return load
