"""Encoded rows on disk: --load_from_cache_file reuses an earlier encoding, swift export --to_cached_dataset writes
a folder that swift sft --cached_dataset trains on without tokenising, and a mismatch is named."""

from __future__ import annotations

import json

import pytest

from swift.core import ConfigError
from swift.train import export_main, sft_main
from tests.conftest import save_tiny_llama
from tests.train.test_sft import flags, losses


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def count_encodes(monkeypatch):
    from swift.core.template import Template

    calls = []
    encode = Template.encode

    def counting(self, row, *args, **kwargs):
        calls.append(1)
        return encode(self, row, *args, **kwargs)

    monkeypatch.setattr(Template, "encode", counting)
    return calls


def test_load_from_cache_file_encodes_once_and_then_reads_the_cache(tiny_llama_dir, rows_file, tmp_path,
                                                                    monkeypatch, count_encodes):
    monkeypatch.setenv("SWIFT_CACHE", str(tmp_path / "cache"))
    first = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "a", "--max_steps", "2", "--load_from_cache_file",
                           "true"))
    assert len(count_encodes) == 12
    assert len(list((tmp_path / "cache" / "encoded").iterdir())) == 1
    second = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "b", "--max_steps", "2", "--load_from_cache_file",
                            "true"))
    assert len(count_encodes) == 12  # nothing encoded again
    assert losses(second.run_dir) == pytest.approx(losses(first.run_dir))
    sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "c", "--max_steps", "1", "--load_from_cache_file", "true",
                   "--max_length", "64"))  # another max length: another encoding
    assert len(count_encodes) == 24
    sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "d", "--max_steps", "1"))  # false: always encodes
    assert len(count_encodes) == 36
    assert len(list((tmp_path / "cache" / "encoded").iterdir())) == 2


def without_dataset(argv: list[str]) -> list[str]:
    i = argv.index("--dataset")
    return argv[:i] + argv[i + 2:]


def test_cached_dataset_trains_like_the_rows_it_was_exported_from(tiny_llama_dir, rows_file, tmp_path,
                                                                 count_encodes):
    export_main(["--model", str(tiny_llama_dir), "--dataset", str(rows_file), "--to_cached_dataset", "true",
                 "--split_dataset_ratio", "0.25", "--output_dir", str(tmp_path / "cached")])
    info = json.loads((tmp_path / "cached" / "cached_dataset.json").read_text())
    assert info["rows"] == {"train": 9, "val": 3}
    encoded = len(count_encodes)
    run = sft_main([*without_dataset(flags(tiny_llama_dir, rows_file, tmp_path / "from_cache", "--max_steps", "3",
                                           "--eval_steps", "3")), "--cached_dataset", str(tmp_path / "cached")])
    assert len(count_encodes) == encoded  # trained without tokenising
    rows = [json.loads(line) for line in (run.run_dir / "logging.jsonl").read_text().splitlines()]
    assert [r for r in rows if "eval_loss" in r]  # the folder's val split became the validation set
    fresh = sft_main(flags(tiny_llama_dir, rows_file, tmp_path / "fresh", "--max_steps", "3", "--eval_steps", "3",
                           "--split_dataset_ratio", "0.25"))
    assert losses(run.run_dir) == pytest.approx(losses(fresh.run_dir))  # the same rows, split and order
    # #N samples rows from the folder
    sampled = sft_main([*without_dataset(flags(tiny_llama_dir, rows_file, tmp_path / "sampled", "--num_train_epochs",
                                               "1")), "--cached_dataset", f"{tmp_path / 'cached'}#4"])
    assert sampled.train_rows == 4


def test_a_cached_dataset_of_another_tokenizer_is_refused_by_name(tiny_llama_dir, rows_file, tmp_path,
                                                                 smollm2_tokenizer):
    export_main(["--model", str(tiny_llama_dir), "--dataset", str(rows_file), "--to_cached_dataset", "true",
                 "--output_dir", str(tmp_path / "cached")])
    other = save_tiny_llama(tmp_path / "other", smollm2_tokenizer)
    (other / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                                               "{% endfor %}")
    with pytest.raises(ConfigError, match=r"--cached_dataset .*cached: encoded with chat_template_sha256"):
        sft_main(["--model", str(other), "--cached_dataset", str(tmp_path / "cached"), "--output_dir",
                  str(tmp_path / "run"), "--max_steps", "1"])
    with pytest.raises(ConfigError, match="not a cached dataset folder"):
        sft_main(["--model", str(other), "--cached_dataset", str(tmp_path), "--max_steps", "1"])
    with pytest.raises(ConfigError, match=r"--output_dir .* not empty"):
        export_main(["--model", str(tiny_llama_dir), "--dataset", str(rows_file), "--to_cached_dataset", "true",
                     "--output_dir", str(tmp_path / "cached")])
