"""`swift export` flag checks: every problem at once, named by flag, before any weights load."""

from __future__ import annotations

import pytest

from swift.core.errors import ConfigError
from swift.train import export_main


def test_conflicting_and_missing_flags_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as e:
        export_main(["--model", str(tmp_path), "--quant_method", "gptq", "--to_gguf", "true", "--quant_bits", "3",
                     "--push_to_hub", "true"])
    message = str(e.value)
    assert "--to_gguf" in message
    assert "--quant_bits 3" in message
    assert "--dataset" in message  # gptq needs calibration data
    assert "--hub_model_id" in message


def test_nothing_to_export_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="nothing to export"):
        export_main(["--model", str(tmp_path)])


def test_fp8_takes_8_bits_only(tmp_path):
    with pytest.raises(ConfigError, match="--quant_bits 4: --quant_method fp8 takes 8"):
        export_main(["--model", str(tmp_path), "--quant_method", "fp8", "--quant_bits", "4"])


def test_non_empty_output_dir_is_refused(tiny_llama_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"--output_dir .* is not empty"):
        export_main(["--model", str(tiny_llama_dir), "--to_gguf", "true", "--output_dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_bad_adapter_dir_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"--adapters .*no adapter_config\.json"):
        export_main(["--adapters", str(tmp_path), "--to_gguf", "true"])
