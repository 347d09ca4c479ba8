"""The dataset registry: duplicates refused, unknown names get suggestions, every built-in entry is well-formed."""

from __future__ import annotations

import re

import pytest

from swift.core.dataset import DATASETS, DatasetMeta, find_dataset_meta, get_dataset_meta, register_dataset
from swift.core.dataset import registry as registry_module
from swift.core.errors import ConfigError, DuplicateNameError, UnknownDatasetError
from tests.conftest import HEAVY, run_python


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "DATASETS", dict(registry_module.DATASETS))
    monkeypatch.setattr(registry_module, "_BY_ID", dict(registry_module._BY_ID))
    return registry_module


def test_duplicates_are_refused_unless_replaced(scratch_registry):
    register_dataset(DatasetMeta("mine", hf_id="me/mine"))
    with pytest.raises(DuplicateNameError, match="replace=True"):
        register_dataset(DatasetMeta("mine", hf_id="me/other"))
    with pytest.raises(DuplicateNameError, match="registered under 'mine'"):
        register_dataset(DatasetMeta("yours", hf_id="ME/MINE"))
    register_dataset(DatasetMeta("mine", hf_id="me/other"), replace=True)
    assert find_dataset_meta("me/other").name == "mine"
    assert find_dataset_meta("me/mine") is None


def test_an_entry_needs_a_source(scratch_registry):
    with pytest.raises(ConfigError, match="needs a source"):
        register_dataset(DatasetMeta("nowhere"))


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownDatasetError, match=r"did you mean \['gsm8k'\]"):
        get_dataset_meta("gsm8x")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_entries_are_well_formed(name):
    meta = DATASETS[name]
    assert meta.name == name
    assert get_dataset_meta(name) is meta
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id) for hub_id in meta.ids)
    assert meta.path or meta.ids
    assert meta.help
    assert meta.split


def test_importing_the_package_loads_no_heavy_module():
    result = run_python(f"import sys, swift.core.dataset; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_packaged_data_file_ships_with_the_package():
    from swift.core.dataset.load import PACKAGED_DATA

    assert (PACKAGED_DATA / DATASETS["self-cognition"].path).is_file()
