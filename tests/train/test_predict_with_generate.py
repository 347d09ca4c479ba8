"""`--predict_with_generate`: evaluations generate each validation answer and score it (ROUGE / BLEU) beside the
eval loss; the scores are those of the checkpoint's own greedy answers, and they pick the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swift.core import ConfigError, score_rouge
from swift.train import sft_main
from tests.train.test_sft import flags

ANSWER = "the answer is always the same"


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": ANSWER}]}
            for i in range(24)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_generated_answers_are_scored_and_select_the_best_checkpoint(tiny_llama_dir, rows_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--max_steps", "12", "--learning_rate", "2e-2",
                            "--split_dataset_ratio", "0.25", "--eval_steps", "4", "--save_steps", "4",
                            "--predict_with_generate", "true", "--max_new_tokens", "12",
                            "--load_best_model_at_end", "true", "--lora_rank", "8"))
    rows = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval_rouge-l" in r}
    assert sorted(evals) == [4, 8, 12]
    assert all("eval_loss" in r and "eval_bleu-4" in r and r["eval_generated_rows"] == 6 for r in evals.values())
    assert evals[12]["eval_rouge-l"] > evals[4]["eval_rouge-l"]  # it learns the answer
    best = max(evals, key=lambda s: evals[s]["eval_rouge-l"])
    assert result.best_checkpoint == result.run_dir / f"checkpoint-{best}"  # rouge-l, greater is better

    # the logged scores are the final checkpoint's own greedy answers to the held-out questions
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                      result.run_dir / "checkpoint-12").eval()
    from swift.core import DataArgs, load_rows

    _, held_out = load_rows(DataArgs(dataset=[str(rows_file)], split_dataset_ratio=0.25))  # training's split
    pairs = []
    for row in held_out:
        question = row["messages"][:1]
        ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        pairs.append((tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip(), ANSWER))
    assert len(pairs) == 6
    assert score_rouge(pairs)["rouge-l"] == pytest.approx(evals[12]["eval_rouge-l"], abs=1e-6)


def test_predict_with_generate_needs_a_validation_split(tiny_llama_dir, rows_file, tmp_path):
    with pytest.raises(ConfigError, match="--predict_with_generate generates the validation answers"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--predict_with_generate", "true"))
