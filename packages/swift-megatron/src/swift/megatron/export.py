"""`megatron export --to_mcore true` (HF -> mcore checkpoint, any TP/PP/EP) and `--to_hf true` (an mcore
checkpoint of any layout -> one HF directory, or a PEFT adapter for LoRA with `--merge_lora false`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from swift.core import ConfigError
from swift.core.arguments import ModelArgs
from swift.core.run import ARGS_FILE, read_args, write_json_atomic
from swift.megatron.arguments import MegatronArguments

logger = logging.getLogger(__name__)


def run_export(args: MegatronArguments) -> Path:
    m = args.megatron
    if m.to_mcore == m.to_hf:
        raise ConfigError("megatron export: pass exactly one of --to_mcore true (with --model) or --to_hf true "
                          "(with --mcore_model)")
    output = to_mcore(args) if m.to_mcore else to_hf(args)
    if m.test_convert_precision:
        from swift.megatron.precision import check_conversion

        check_conversion(output, args)
    return output


def _empty_output(path: Path, flag: str = "--output_dir") -> Path:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{flag} {path} exists and is not empty; choose another or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _dtype(name: str | None):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(name or "float32", torch.float32)


def to_mcore(args: MegatronArguments) -> Path:
    import torch

    from swift.core import load_model
    from swift.core.run import model_folder_name
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.convert import ModelShape, hf_to_mcore, pad_vocab, padded_vocab_size, shard

    m = args.megatron
    if not args.model.model:
        raise ConfigError("--to_mcore true needs --model (a hub id or a local HF directory)")
    output = _empty_output(Path(m.save or f"{model_folder_name(args.model.model)}-mcore"))
    dtype = _dtype(args.model.torch_dtype)
    model, tokenizer = load_model(args.model, torch_dtype="float32", device_map="cpu")
    if m.adapters:
        model = merge_peft(model, peft_adapter(m.adapters, "--to_mcore true", merge_lora=m.merge_lora))
    shape = ModelShape.from_hf(model.config)
    tp, pp, ep = m.tensor_model_parallel_size, m.pipeline_model_parallel_size, m.expert_model_parallel_size
    if shape.num_layers % pp or shape.num_kv_heads % tp or (shape.num_experts and shape.num_experts % ep):
        raise ConfigError(f"tp={tp} pp={pp} ep={ep} does not divide this model (KV heads {shape.num_kv_heads}, "
                          f"layers {shape.num_layers}, experts {shape.num_experts})")
    full = hf_to_mcore({k: v.detach().to(dtype) for k, v in model.state_dict().items()}, shape)
    if m.mcore_adapter:
        full = _merge_mcore_adapter(full, m.mcore_adapter, shape)
    full = pad_vocab(full, padded_vocab_size(shape.vocab_size, tp), head=bool(shape.head))
    stage = ckpt.staging_dir(output, 0)
    shutil.rmtree(stage, ignore_errors=True)
    for tp_rank in range(tp):
        for pp_rank in range(pp):
            for ep_rank in range(ep):
                folder = stage / ckpt.rank_dir_name(tp_rank, pp_rank, ep_rank, pp=pp, ep=ep)
                folder.mkdir(parents=True)
                piece = shard(full, shape, tp=tp, pp=pp, ep=ep, tp_rank=tp_rank, pp_rank=pp_rank, ep_rank=ep_rank)
                torch.save({"model": piece, "iteration": 0}, folder / ckpt.MODEL_FILE)
    ckpt.write_hf_files(stage / "hf", model.config, tokenizer)
    ckpt.write_meta(stage, {"iteration": 0, "tp": tp, "pp": pp, "ep": ep, "train_type": "full",
                            "model": args.model.model, "adapters": list(m.adapters) + ([m.mcore_adapter] if m.mcore_adapter else []), "family": shape.family, "has_optimizer": False, "lora": None})
    final = ckpt.publish(output, 0)
    logger.info("HF %s -> mcore %s (tp=%d pp=%d ep=%d)", args.model.model, final, tp, pp, ep)
    return output


def to_hf(args: MegatronArguments) -> Path:
    """--mcore_model (or --adapters naming an mcore LoRA checkpoint) -> one HF directory; --adapters naming a PEFT
    adapter -> the HF model of --model with it merged."""
    from swift.megatron import checkpoint as ckpt

    m = args.megatron
    if m.adapters and (adapter := peft_adapter(m.adapters, "--to_hf true", merge_lora=m.merge_lora)) is not None:
        return _peft_to_hf(args, adapter)
    source, flag = checkpoint_flag(m)
    if not source:
        raise ConfigError("--to_hf true needs --mcore_model DIR (an iter_* folder, or the folder holding them)")
    checkpoint = ckpt.find_checkpoint(source, flag)
    return convert_to_hf(checkpoint, Path(m.save or f"{checkpoint}-hf"), args.model, merge_lora=m.merge_lora)


def checkpoint_flag(m) -> tuple[str | None, str]:
    """The mcore checkpoint --to_hf converts, and the flag that named it."""
    for flag in ("mcore_model", "mcore_adapter"):
        if getattr(m, flag):
            return getattr(m, flag), f"--{flag}"
    return (m.adapters[0], "--adapters") if m.adapters else (None, "--mcore_model")


def _merge_mcore_adapter(full: dict, adapter: str, shape) -> dict:
    """Whole mcore base weights with an mcore LoRA checkpoint (any layout) merged in."""
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.convert import Stages, merge
    from swift.megatron.lora import LoraSpec, merge_lora_full

    checkpoint = ckpt.find_checkpoint(adapter, "--mcore_adapter")
    meta = ckpt.read_meta(checkpoint)
    if not meta.get("lora"):
        raise ConfigError(f"--mcore_adapter {checkpoint}: not a LoRA checkpoint (train_type "
                          f"{meta.get('train_type')}); convert it with --mcore_model --to_hf true")
    lora = merge(ckpt.read_pieces(checkpoint), shape, tp=meta["tp"], pp=meta["pp"], ep=meta.get("ep", 1),
                 stages=Stages.from_meta(meta))
    spec = LoraSpec(**{k: meta["lora"][k] for k in ("rank", "alpha", "dropout")}, targets=tuple(meta["lora"]["targets"]))
    merged = merge_lora_full(full | {k: v.to(next(iter(full.values())).dtype) for k, v in lora.items()}, spec)
    return merged


def convert_to_hf(checkpoint: Path, output: Path, model_args: ModelArgs, *, merge_lora: bool = True,
                  replace: bool = False) -> Path:
    """An mcore checkpoint of any layout -> one HF directory at `output` (LoRA: merged into its base, or a PEFT
    adapter with merge_lora=False), written beside it and renamed into place. `replace` overwrites `output`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from swift.megatron import checkpoint as ckpt
    from swift.megatron.convert import ModelShape, Stages, mcore_to_hf, merge

    meta = ckpt.read_meta(checkpoint)
    if replace:
        shutil.rmtree(output, ignore_errors=True)
    output = _empty_output(output)
    hf_config = AutoConfig.from_pretrained(checkpoint / "hf")
    shape = ModelShape.from_hf(hf_config)
    full = merge(ckpt.read_pieces(checkpoint), shape, tp=meta["tp"], pp=meta["pp"], ep=meta.get("ep", 1),
                 stages=Stages.from_meta(meta))
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        if meta.get("lora"):
            _lora_to_hf(model_args, meta, full, shape, work, merge_lora=merge_lora)
        else:
            from transformers import AutoModelForSequenceClassification

            auto = AutoModelForSequenceClassification if shape.head else AutoModelForCausalLM
            model = auto.from_config(hf_config, dtype=torch.float32)
            fused = any(k.endswith("mlp.experts.gate_up_proj") for k in model.state_dict())
            _load_exact(model, mcore_to_hf(full, shape, fused_experts=fused))
            dtype = next(iter(full.values())).dtype
            model.to(_dtype(model_args.torch_dtype) if model_args.torch_dtype else dtype).save_pretrained(work)
        AutoTokenizer.from_pretrained(checkpoint / "hf").save_pretrained(work)
        # the run's args.json (task type, template, data flags: what infer --load_data_args reads), for this model
        record = read_args(checkpoint) | {"model": str(output.resolve()), "megatron_checkpoint": str(checkpoint.resolve()),
                                          "base_model": meta.get("model"), "train_type": meta.get("train_type")}
        write_json_atomic(work / ARGS_FILE, record)
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("mcore %s -> HF %s", checkpoint, output)
    return output


def peft_adapter(adapters: list[str], direction: str, *, merge_lora: bool) -> Path | None:
    """The PEFT adapter folder that --adapters names, or None when it names an mcore LoRA checkpoint."""
    if len(adapters) != 1:
        raise ConfigError(f"--adapters takes one LoRA checkpoint here; got {len(adapters)}")
    path = Path(adapters[0]).expanduser()
    if not (path / "adapter_config.json").is_file():
        if direction == "--to_mcore true":
            raise ConfigError(f"--adapters {path}: with --to_mcore true it names a PEFT adapter folder "
                              "(adapter_config.json); an mcore LoRA checkpoint is mcore already")
        return None
    if not merge_lora:
        raise ConfigError(f"--adapters {path} is a PEFT adapter: {direction} writes it merged into --model "
                          "(--merge_lora true); unmerged it stays as it is (q/k/v's separate LoRA A matrices have "
                          "no single linear_qkv A)")
    return path


def merge_peft(model, adapter: Path):
    """`model` with the PEFT adapter at `adapter` merged into its weights."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def _peft_to_hf(args: MegatronArguments, adapter: Path) -> Path:
    from swift.core import load_model

    base = args.model.model or json.loads((adapter / "adapter_config.json").read_text()).get(
        "base_model_name_or_path")
    if not base:
        raise ConfigError(f"--adapters {adapter}: its adapter_config.json names no base model; pass --model")
    output = _empty_output(Path(args.megatron.save or f"{adapter}-merged"))
    model, tokenizer = load_model(args.model, model=base, torch_dtype=args.model.torch_dtype or "float32",
                                  device_map="cpu")
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        merged = merge_peft(model, adapter)
        if getattr(merged, "hf_quantizer", None) is not None:
            merged.hf_quantizer.remove_quantization_config(merged)
        merged.save_pretrained(work)
        tokenizer.save_pretrained(work)
        write_json_atomic(work / ARGS_FILE, {"model": str(output.resolve()), "base_model": base,
                                             "adapters": [str(adapter)], "train_type": "lora"})
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("HF %s + adapter %s -> HF %s", base, adapter, output)
    return output


def _load_exact(model, state: dict) -> None:
    mine = set(model.state_dict())
    missing, surplus = sorted(mine - set(state)), sorted(set(state) - mine)
    if missing or surplus:
        raise ConfigError(f"converted weights do not fit {type(model).__name__}: missing {missing[:4]}, "
                          f"unexpected {surplus[:4]}")
    model.load_state_dict(state, strict=True)


def _lora_to_hf(model_args: ModelArgs, meta: dict, lora_full: dict, shape, work: Path, *,
                merge_lora: bool) -> None:
    """A LoRA checkpoint: merged into its base (default) or written as a PEFT adapter (`--merge_lora false`)."""
    import torch

    from swift.core import load_model
    from swift.megatron.convert import hf_to_mcore, mcore_to_hf
    from swift.megatron.lora import LoraSpec, merge_lora_full, peft_targets, to_peft

    spec_dict = meta["lora"]
    spec = LoraSpec(spec_dict["rank"], spec_dict["alpha"], spec_dict["dropout"], tuple(spec_dict["targets"]))
    base_id = model_args.model or meta["model"]
    if not merge_lora:
        from safetensors.torch import save_file

        tensors = to_peft(lora_full, shape)
        if shape.head:  # the head trained beside the adapter: peft's modules_to_save
            tensors["base_model.model.score.weight"] = lora_full["output_layer.weight"]
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(work / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "task_type": "SEQ_CLS" if shape.head else "CAUSAL_LM", "r": spec.rank,
                  "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "target_modules": peft_targets(spec),
                  "bias": "none", "base_model_name_or_path": base_id, "fan_in_fan_out": False,
                  "inference_mode": True, "modules_to_save": ["score"] if shape.head else None}
        (work / "adapter_config.json").write_text(json.dumps(config, indent=2))
        return
    model, _ = load_model(model_args, model=base_id, model_type=None, model_revision=None, torch_dtype="float32",
                          device_map="cpu", num_labels=shape.head or None)
    full = hf_to_mcore({k: v.detach() for k, v in model.state_dict().items()}, shape) | lora_full
    merged = mcore_to_hf(merge_lora_full(full, spec), shape,
                         fused_experts=any(k.endswith("mlp.experts.gate_up_proj") for k in model.state_dict()))
    _load_exact(model, merged)
    if hasattr(model, "hf_quantizer") and model.hf_quantizer is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.to(torch.float32).save_pretrained(work)
