"""Built-in datasets: the packaged self-cognition set and a handful of well-known hub datasets (one register call each)."""

from __future__ import annotations

from swift.core.dataset.meta import DatasetMeta, LoadOptions, Row
from swift.core.dataset.preprocess import RowProblem
from swift.core.dataset.registry import register_dataset
from swift.core.errors import ConfigError


def fill_identity(row: Row, options: LoadOptions) -> Row:
    """Self-cognition: put the model's name and author into {{NAME}} / {{AUTHOR}}, in the row's language (`tag`).

    Rows tagged `general` are plain questions with short correct answers, left as they are: trained on identity rows
    alone, a small model answers *every* question with its identity (measured on SmolLM2-135M: "What is the capital
    of France?" -> "I am Nova..."); a few general rows keep it answering other questions, held-out ones included.
    """
    if options.model_name is None or options.model_author is None:
        raise ConfigError("the self-cognition dataset needs --model_name NAME [NAME_ZH] and "
                          "--model_author AUTHOR [AUTHOR_ZH]")
    tag = row.pop("tag", "en")
    if tag == "general":
        return row
    if tag not in ("en", "zh"):
        raise RowProblem("tag", f"must be 'en', 'zh' or 'general', got {tag!r}")
    which = 1 if tag == "zh" else 0
    name, author = options.model_name[which], options.model_author[which]
    for key in ("query", "response"):
        if isinstance(row.get(key), str):
            row[key] = row[key].replace("{{NAME}}", name).replace("{{AUTHOR}}", author)
    return row


register_dataset(DatasetMeta(
    "self-cognition", path="self_cognition.jsonl", hf_id="modelscope/self-cognition", ms_id="swift/self-cognition",
    preprocess=fill_identity, requires_identity=True, tags=("chat", "self-cognition", "en", "zh"),
    help="~100 identity questions and answers (English and Chinese), filled in with --model_name / --model_author, "
         "plus 24 general questions that keep the model answering other questions"))

register_dataset(DatasetMeta(
    "alpaca-gpt4-data-en", hf_id="vicgalle/alpaca-gpt4", ms_id="AI-ModelScope/alpaca-gpt4-data-en",
    tags=("chat", "general", "en"), help="52k alpaca instructions answered by GPT-4"))

register_dataset(DatasetMeta(
    "alpaca-gpt4-data-zh", hf_id="llm-wizard/alpaca-gpt4-data-zh", ms_id="AI-ModelScope/alpaca-gpt4-data-zh",
    tags=("chat", "general", "zh"), help="alpaca instructions in Chinese answered by GPT-4"))

register_dataset(DatasetMeta(
    "ultrachat-200k", hf_id="HuggingFaceH4/ultrachat_200k", ms_id="AI-ModelScope/ultrachat_200k",
    split=("train_sft",), tags=("chat", "multi-turn", "en"), help="200k filtered multi-turn UltraChat dialogues"))

register_dataset(DatasetMeta(
    "ultrafeedback-binarized", hf_id="trl-lib/ultrafeedback_binarized", tags=("rlhf", "dpo", "en"),
    help="UltraFeedback chosen/rejected conversation pairs (DPO, ORPO, reward models)"))

register_dataset(DatasetMeta(
    "shareai-llama3-dpo-zh-en-emoji", hf_id="shareAI/DPO-zh-en-emoji", ms_id="hjh0119/shareAI-Llama3-DPO-zh-en-emoji",
    columns={"answer_zh": "chosen", "answer_en": "rejected"}, tags=("rlhf", "dpo", "zh", "en"),
    help="questions answered in Chinese (chosen) and English (rejected)"))

register_dataset(DatasetMeta(
    "kto-mix-14k", hf_id="trl-lib/kto-mix-14k", tags=("rlhf", "kto", "en"),
    help="prompt / completion message lists with a desirable `label` (KTO)"))

register_dataset(DatasetMeta(
    "gsm8k", hf_id="openai/gsm8k", ms_id="modelscope/gsm8k", subsets=("main", "socratic"),
    columns={"question": "query", "answer": "response"}, tags=("math", "en"),
    help="grade-school math word problems with worked answers"))
