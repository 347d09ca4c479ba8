"""`megatron export`: HF -> mcore at any TP/PP -> one HF directory, exact; refusing to overwrite."""

from __future__ import annotations

import json

import pytest
import torch

from swift.core.errors import ConfigError

pytest.importorskip("megatron.core")


def test_sharded_export_round_trips_exactly(tiny_untied_dir, tmp_path):
    from swift.megatron import export_main

    export_main(["--model", str(tiny_untied_dir), "--to_mcore", "true", "--output_dir", str(tmp_path / "mcore"),
                 "--tensor_model_parallel_size", "2", "--pipeline_model_parallel_size", "2"])
    iteration = tmp_path / "mcore" / "iter_0000000"
    assert sorted(p.name for p in iteration.glob("mp_rank_*")) == [
        "mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]
    meta = json.loads((iteration / "swift_mcore.json").read_text())
    assert (meta["tp"], meta["pp"], meta["train_type"]) == (2, 2, "full")
    export_main(["--mcore_model", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = AutoModelForCausalLM.from_pretrained(tiny_untied_dir, dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")("hi").input_ids
    assert json.loads((tmp_path / "hf" / "args.json").read_text())["train_type"] == "full"

    with pytest.raises(ConfigError, match="exists and is not empty"):
        export_main(["--mcore_model", str(tmp_path / "mcore"), "--to_hf", "true", "--output_dir", str(tmp_path / "hf")])
    assert all(torch.equal(a[k], AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()[k]) for k in a)
