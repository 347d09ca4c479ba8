"""`megatron export --test_convert_precision true`: the HF model and the mcore checkpoint of one conversion run
the same tokens; the largest logit difference is logged (and returned)."""

from __future__ import annotations

import logging
from pathlib import Path

from swift.core import ConfigError
from swift.megatron.arguments import MegatronArguments

logger = logging.getLogger(__name__)

PROBE_TEXT = "Swift converts weights between Hugging Face and Megatron-Core; the logits must agree."


def check_conversion(output: Path, args: MegatronArguments) -> float:
    """--to_hf: `output` is the HF folder, --mcore_model (or --adapters) the checkpoint; --to_mcore: `output` is
    the checkpoint, --model (with --adapters merged) the HF model. Both run in float32 on the CPU."""
    from swift.core import load_model
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.export import checkpoint_flag, merge_peft, peft_adapter

    m = args.megatron
    if m.to_hf:
        source, flag = checkpoint_flag(m)
        if source is None or (m.adapters and peft_adapter(m.adapters, "--to_hf true", merge_lora=True)):
            raise ConfigError("--test_convert_precision compares an mcore checkpoint with its HF export; "
                              "--adapters naming a PEFT adapter has no mcore side")
        checkpoint = ckpt.find_checkpoint(source, flag)
        if ckpt.read_meta(checkpoint).get("lora") and not m.merge_lora:
            raise ConfigError("--test_convert_precision with --merge_lora false: the export is an adapter; compare "
                              "the merged export (--merge_lora true)")
        hf, tokenizer = load_model(args.model, model=str(output), torch_dtype="float32", device_map="cpu",
                                   model_type=None, model_revision=None)
    else:
        if m.mcore_adapter:
            raise ConfigError("--test_convert_precision with --to_mcore --mcore_adapter: no HF model holds that "
                              "adapter to compare with; test the merged checkpoint's --to_hf export instead")
        checkpoint = ckpt.find_checkpoint(output, "--output_dir")
        hf, tokenizer = load_model(args.model, torch_dtype="float32", device_map="cpu")
        if m.adapters:
            hf = merge_peft(hf, peft_adapter(m.adapters, "--to_mcore true", merge_lora=True))
    diff = max_logit_difference(hf.eval(), checkpoint, tokenizer, args)
    logger.info("--test_convert_precision: max |HF - mcore| logit difference %.3g (%s vs %s)", diff,
                hf.config._name_or_path or "HF", checkpoint)
    return diff


def max_logit_difference(hf, checkpoint: Path, tokenizer, args: MegatronArguments) -> float:
    import torch

    ids = tokenizer(PROBE_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf(ids).logits.float()
    got = mcore_logits(checkpoint, ids, args)
    return (got[..., : expected.shape[-1]] - expected).abs().max().item()


def mcore_logits(checkpoint: Path, ids, args: MegatronArguments):
    """Logits of the checkpoint's weights (any saved layout, merged; LoRA merged into its base) on one process."""
    import torch
    from transformers import AutoConfig

    from swift.core import load_model
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.convert import ModelShape, Stages, hf_to_mcore, merge, shard
    from swift.megatron.lora import LoraSpec, merge_lora_full
    from swift.megatron.model import Parallel, build_gpt, load_local, transformer_config
    from swift.megatron.parallel import megatron_session

    meta = ckpt.read_meta(checkpoint)
    hf_config = AutoConfig.from_pretrained(checkpoint / "hf")
    shape = ModelShape.from_hf(hf_config)
    full = merge(ckpt.read_pieces(checkpoint), shape, tp=meta["tp"], pp=meta["pp"], ep=meta.get("ep", 1),
                 stages=Stages.from_meta(meta))
    if meta.get("lora"):
        base, _ = load_model(args.model, model=args.model.model or meta["model"], torch_dtype="float32",
                             device_map="cpu")
        spec = LoraSpec(**{k: meta["lora"][k] for k in ("rank", "alpha", "dropout")},
                        targets=tuple(meta["lora"]["targets"]))
        full = merge_lora_full(hf_to_mcore(base.state_dict(), shape) | full, spec)
    full = {k: v.float() for k, v in full.items()}
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        if name in full:
            full[name] = full[name][: shape.vocab_size]  # rows padded for the saved TP size
    parallel = Parallel()
    with megatron_session(parallel, seed=0):
        gpt = build_gpt(hf_config, shape, transformer_config(hf_config, shape, parallel, dtype=torch.float32), tp=1)
        load_local(gpt, shard(full, shape))
        gpt.eval()
        with torch.no_grad():
            positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
            return gpt(input_ids=ids, position_ids=positions, attention_mask=None).float()
