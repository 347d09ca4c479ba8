"""A GGUF writer on the `gguf` package (which ships no HF converter): llama, mistral, qwen2 and qwen3 models with
byte-level BPE tokenizers, f32/f16/bf16 and the Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 block types.

What llama.cpp and transformers' reader expect, and we therefore write: llama's q/k rows interleaved per head
(transformers undoes it for the `llama` architecture only, so mistral is written as llama), a tied lm_head left out,
norms and other 1-D tensors in f32, the tokenizer as `gpt2` tokens + merges + token types (control for special added
tokens, user-defined for other added tokens), the pre-tokenizer's llama.cpp name, special ids, add-BOS/EOS and the
chat template.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from swift.core import ConfigError

logger = logging.getLogger(__name__)

# HF model_type -> the gguf architecture written (and read back by transformers)
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_PERMUTED = {"llama"}  # architectures whose q/k rows llama.cpp stores interleaved

_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
               "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1", "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1"}


def permute_rows(weight: Any, n_head: int) -> Any:
    """HF's rotary halves `[h, 2, d/2]` -> llama.cpp's interleaved pairs `[h, d/2, 2]`, per head (rows of q or k)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def pre_tokenizer_name(tokenizer: Any, model_dir: Path | None) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE.

    A model converted from a GGUF (the packaged ones) keeps the name its GGUF gave; otherwise it is recognised from
    tokenizer.json: a split regex transformers' GGUF reader knows, SmolLM's single digits, or plain GPT-2 byte level.
    """
    if model_dir is not None and (model_dir / "swift_packaged.json").is_file():
        source = json.loads((model_dir / "swift_packaged.json").read_text()).get("source")
        if source and Path(source).is_file():
            from gguf import GGUFReader

            field = GGUFReader(source).fields.get("tokenizer.ggml.pre")
            if field is not None:
                return str(field.contents())
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = state.get("pretokenizers", [state])
    for step in steps:
        pattern = (step.get("pattern") or {}).get("Regex")
        if step.get("type") == "Split" and pattern:
            for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
                if split == pattern:
                    return name
            logger.warning("the tokenizer's split pattern is unknown to llama.cpp's names; writing 'default'")
            return "default"
    types = [s.get("type") for s in steps]
    if types == ["Digits", "ByteLevel"]:
        return "smollm"
    if types == ["ByteLevel"]:
        return "gpt2"
    return "default"


def _vocabulary(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id (padded to the model's vocab size), their llama.cpp types and the merges."""
    from gguf import TokenType

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConfigError("--to_gguf: only byte-level BPE tokenizers (llama 3, qwen, smollm, gpt2 style) are written "
                          f"so far; this tokenizer is {model.get('type')}"
                          f"{' with byte fallback (sentencepiece)' if model.get('byte_fallback') else ''}")
    added = {t["id"]: t for t in state.get("added_tokens", [])}
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ConfigError(f"--to_gguf: the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, model_dir: Path | None) -> None:
    tokens, types, merges = _vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, model_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            add(int(token_id))
    probe = tokenizer("a")["input_ids"]  # what the tokenizer adds around text, as llama.cpp should
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id and len(probe) > 1)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _add_hparams(writer: Any, config: Any, arch: str, name: str, quant: str) -> None:
    from gguf import LlamaFileType

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") or getattr(config, "rope_theta", None)
    if theta:
        writer.add_rope_freq_base(float(theta))
    if rope.get("rope_type", "default") not in ("default", None):
        raise ConfigError(f"--to_gguf: rope scaling {rope.get('rope_type')!r} is not written yet; only plain RoPE")
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    elif head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(getattr(LlamaFileType, _FILE_TYPES[quant]))
    writer.add_quantization_version(2)


def _encode_tensor(data: Any, quant: str) -> tuple[Any, Any]:
    """(array, raw dtype or None) for one tensor: 1-D and f32 stay float32; blocks fall back when rows do not fit."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if data.ndim < 2 or quant == "f32":
        return data.astype(np.float32), None
    if quant == "f16":
        return data.astype(np.float16), None
    qtype = getattr(GGMLQuantizationType, quant.upper())
    block = GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        logger.warning("a row of %d values does not fill %s blocks of %d; stored as f16", data.shape[-1], quant, block)
        return data.astype(np.float16), None
    return quants.quantize(data.astype(np.float32), qtype), qtype


def write_gguf(model: Any, tokenizer: Any, path: Path, quant: str, *, name: str, model_dir: Path | None) -> Path:
    """Write `model` + `tokenizer` as one GGUF file at `path` (written under a temporary name, then renamed)."""
    import gguf
    from tqdm import tqdm

    config = model.config
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        raise ConfigError(f"--to_gguf: model type {config.model_type!r} is not written yet; supported: "
                          f"{', '.join(sorted(ARCHITECTURES))}")
    if quant not in _FILE_TYPES:
        raise ConfigError(f"--gguf_quant {quant!r}: choose one of {', '.join(_FILE_TYPES)}")
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    tmp = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _add_hparams(writer, config, arch, name, quant)
        _add_tokenizer(writer, tokenizer, config.vocab_size, model_dir)
        n_head = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_head
        tied = getattr(config, "tie_word_embeddings", False)
        for hf_name, tensor in tqdm(model.state_dict().items(), desc=f"gguf {quant}"):
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd for a tied output
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ConfigError(f"--to_gguf: no GGUF name for tensor {hf_name!r} of {config.model_type}")
            data = tensor.detach().float().cpu().numpy()
            if arch in _PERMUTED and hf_name.endswith("q_proj.weight"):
                data = permute_rows(data, n_head)
            elif arch in _PERMUTED and hf_name.endswith("k_proj.weight"):
                data = permute_rows(data, n_kv)
            array, raw_dtype = _encode_tensor(data, quant)
            writer.add_tensor(gguf_name, array, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(path)
    return path
