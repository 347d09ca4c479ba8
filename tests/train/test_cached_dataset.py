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


@pytest.mark.parametrize(("method", "mode", "data"), [("dpo", "rlhf", "preference"), ("orpo", "rlhf", "preference"),
                                                      ("kto", "kto", "kto")])
def test_rlhf_trains_on_a_cached_dataset_like_on_its_rows(method, mode, data, tiny_llama_dir, tmp_path,
                                                          count_encodes):
    """swift export --to_cached_dataset --template_mode rlhf|kto, then swift rlhf --cached_dataset: no tokenising and
    the losses of the rows themselves (ORPO rebuilds its paired-labels layout from the exported DPO ids)."""
    from swift.train import rlhf_main
    from tests.train.test_rlhf import PAIRS

    rows = tmp_path / "rows.jsonl"
    lines = []
    for question, good, bad in PAIRS:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": good}]
        if data == "kto":
            lines += [{"messages": messages, "label": True},
                      {"messages": [messages[0], {"role": "assistant", "content": bad}], "label": False}]
        else:
            lines.append({"messages": messages, "rejected_response": bad})
    rows.write_text("\n".join(json.dumps(r) for r in lines))
    export_main(["--model", str(tiny_llama_dir), "--dataset", str(rows), "--to_cached_dataset", "true",
                 "--template_mode", mode, "--max_length", "128", "--output_dir", str(tmp_path / "cached")])
    assert json.loads((tmp_path / "cached" / "cached_dataset.json").read_text())["template_mode"] == mode
    common = ["--rlhf_type", method, "--model", str(tiny_llama_dir), "--max_length", "128", "--logging_steps", "1",
              "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--lora_rank", "4",
              "--per_device_train_batch_size", "2", "--max_steps", "3", "--dataloader_num_workers", "0"]
    encoded = len(count_encodes)
    cached = rlhf_main([*common, "--cached_dataset", str(tmp_path / "cached"), "--output_dir", str(tmp_path / "a")])
    assert len(count_encodes) == encoded  # trained without tokenising
    fresh = rlhf_main([*common, "--dataset", str(rows), "--output_dir", str(tmp_path / "b")])
    assert losses(cached.run_dir) == pytest.approx(losses(fresh.run_dir))
    assert len(losses(cached.run_dir)) == 3


def test_a_cached_dataset_of_another_template_mode_is_refused_by_name(tiny_llama_dir, rows_file, tmp_path):
    from swift.train import rlhf_main

    export_main(["--model", str(tiny_llama_dir), "--dataset", str(rows_file), "--to_cached_dataset", "true",
                 "--output_dir", str(tmp_path / "cached")])
    with pytest.raises(ConfigError, match=r"exported with --template_mode train .* export it again with "
                                          r"--template_mode rlhf"):
        rlhf_main(["--rlhf_type", "dpo", "--model", str(tiny_llama_dir), "--cached_dataset", str(tmp_path / "cached"),
                   "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none"])
    with pytest.raises(ConfigError, match="--rlhf_type grpo trains on rows it generates"):
        rlhf_main(["--rlhf_type", "grpo", "--model", str(tiny_llama_dir), "--cached_dataset", str(tmp_path / "cached"),
                   "--reward_funcs", "accuracy", "--output_dir", str(tmp_path / "run"), "--max_steps", "1"])
    with pytest.raises(ConfigError, match="--template_mode kto: takes effect only with --to_cached_dataset true"):
        export_main(["--model", str(tiny_llama_dir), "--template_mode", "kto", "--output_dir", str(tmp_path / "x")])
