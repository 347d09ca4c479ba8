"""--new_special_tokens: one id per token in the saved tokenizer, embeddings grown to hold them, and LoRA trains
those rows (peft's trainable tokens) in an adapter that plain PEFT loads."""

from __future__ import annotations

import json

import torch

from swift.train import sft_main
from tests.train.test_sft import flags


def test_new_tokens_get_one_id_and_lora_trains_their_rows(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Tag {i}"},
                                                       {"role": "assistant", "content": f"<tag_a> {i} <tag_b>"}]})
                              for i in range(8)))
    (tmp_path / "tokens.txt").write_text("<tag_b>\n")
    result = sft_main(flags(tiny_llama_dir, rows, tmp_path / "run", "--max_steps", "3", "--new_special_tokens",
                            "<tag_a>", str(tmp_path / "tokens.txt")))
    ck = result.last_checkpoint
    tokenizer = AutoTokenizer.from_pretrained(ck)
    ids = tokenizer.convert_tokens_to_ids(["<tag_a>", "<tag_b>"])
    base_vocab = AutoTokenizer.from_pretrained(tiny_llama_dir).__len__()
    assert ids == [base_vocab, base_vocab + 1]
    assert tokenizer("<tag_a> 3 <tag_b>")["input_ids"][0] == ids[0]
    assert json.loads((ck / "adapter_config.json").read_text())["trainable_token_indices"] == {"embed_tokens": ids}
    weights = load_file(ck / "adapter_model.safetensors")
    delta = weights["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]
    assert delta.shape[0] == 2
    assert delta.abs().sum() > 0  # trained (peft starts the delta at zero)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, ck).merge_and_unload()
    before = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).get_input_embeddings().weight
    after = model.get_input_embeddings().weight
    assert after.shape[0] == base_vocab + 2
    assert torch.equal(after[:base_vocab], before)  # the old rows untouched
