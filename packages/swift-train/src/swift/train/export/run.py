"""`run_export`: check the flags, load the model once, export it, measure what it kept, push it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift.core import ConfigError, env
from swift.core.run import model_folder_name
from swift.train.arguments import ExportArguments
from swift.train.export.merge import (
    Source,
    adapter_dirs,
    check_empty,
    default_output,
    load_source,
    merge_lora,
    save_atomic,
)

logger = logging.getLogger(__name__)

_DEFAULT_BITS = {"gptq": 4, "awq": 4, "bnb": 4, "fp8": 8}
_CALIBRATED = ("gptq", "awq")
_HELD_OUT_MAX_LENGTH = 512


@dataclass
class ExportResult:
    output_dir: Path
    files: list[Path] = field(default_factory=list)
    report: dict | None = None
    hub: dict | None = None


def with_recorded_data_args(args: ExportArguments) -> ExportArguments:
    """--load_data_args: the data flags of the run that made the checkpoint (its args.json) where these are unset."""
    import dataclasses

    from swift.core.arguments import recorded_data_args
    from swift.core.run import read_args

    export = args.export
    sources = [*export.adapters[:1], export.ckpt_dir, args.model.model]
    source = next((s for s in sources if s and read_args(s).get("dataset")), None)
    if source is None:
        raise ConfigError("--load_data_args true: no args.json naming a --dataset beside "
                          f"{' / '.join(s for s in sources if s) or 'the checkpoint'} (a checkpoint or merged model "
                          "of swift sft / pt / rlhf has one); pass --dataset instead")
    data, template = recorded_data_args(args.data, args.template, read_args(source))
    logger.info("--load_data_args: data flags of %s (--dataset %s)", source, " ".join(data.dataset))
    return dataclasses.replace(args, data=data, template=template)


def check_flags(args: ExportArguments) -> None:
    """Every problem with the flags at once, before any weights load."""
    export, problems = args.export, []
    if export.to_cached_dataset:
        from swift.train.export.cached import check_cached_export

        if problems := check_cached_export(args):
            raise ConfigError("; ".join(problems))
        return
    method = export.quant_method
    if export.template_mode != "train":
        problems.append(f"--template_mode {export.template_mode}: takes effect only with --to_cached_dataset true")
    if method and (export.to_gguf or export.to_ollama):
        problems.append(f"--quant_method {method} and --to_gguf: choose one (GGUF has its own --gguf_quant)")
    if method and export.merge_lora:
        problems.append(f"--quant_method {method} merges --adapters itself; drop --merge_lora")
    if method and export.quant_bits is not None:
        allowed = (8,) if method == "fp8" else (4, 8)
        if export.quant_bits not in allowed:
            problems.append(f"--quant_bits {export.quant_bits}: --quant_method {method} takes "
                            f"{' or '.join(map(str, allowed))}")
    if not method and export.quant_bits is not None:
        problems.append("--quant_bits needs --quant_method")
    if method in _CALIBRATED and not args.data.dataset:
        problems.append(f"--quant_method {method} needs calibration data: pass --dataset (any format swift reads)")
    if export.quant_n_samples <= 0:
        problems.append(f"--quant_n_samples {export.quant_n_samples}: must be positive")
    if export.quant_batch_size < 1 and export.quant_batch_size != -1:
        problems.append(f"--quant_batch_size {export.quant_batch_size}: must be at least 1, or -1 (all samples "
                        "at once)")
    if export.push_to_hub and not export.hub_model_id:
        problems.append("--push_to_hub needs --hub_model_id user/name")
    if export.push_to_hub and env.hub_offline():
        problems.append("--push_to_hub: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set; unset it to upload")
    if not (method or export.to_gguf or export.to_ollama or export.merge_lora):
        problems.append("nothing to export: pass --quant_method gptq|awq|fp8|bnb, --to_gguf true, --merge_lora true or "
                        "--to_cached_dataset true")
    if problems:
        raise ConfigError("; ".join(problems))


def run_export(args: ExportArguments) -> Path | ExportResult:
    """Run `swift export`; `--merge_lora` alone returns the merged directory, everything else an ExportResult."""
    if args.export.load_data_args:
        args = with_recorded_data_args(args)
    check_flags(args)
    export = args.export
    if export.to_cached_dataset:
        from swift.train.export.cached import export_cached_dataset

        return export_cached_dataset(args)
    if export.merge_lora:
        output = merge_lora(args)
        if export.push_to_hub:
            _push(args, output, "merged")
        return output
    started = time.perf_counter()
    method = export.quant_method
    bits = export.quant_bits or _DEFAULT_BITS.get(method or "", 0)
    kinds = {"fp8": "fp8", "bnb": f"bnb-{'nf4' if bits == 4 else 'int8'}"}
    kind = f"{method}-int{bits}" if method in _CALIBRATED else kinds.get(method or "", f"gguf-{export.gguf_quant}")
    output = default_output(args, kind)
    check_empty(output)
    adapter_dirs(args)  # bad --adapters fail before the model loads
    source = load_source(args)
    from swift.train.export import calibration
    from swift.train.export import report as measure

    texts = calibration.sample_texts(args, source.tokenizer)
    ref = None
    if export.quant_report:
        held_out = calibration.tokenize(texts.held_out, source.tokenizer,
                                        args.template.max_length or _HELD_OUT_MAX_LENGTH)
        ref = measure.reference(source.model, held_out)
    size_before = measure.weights_size(source.base_dir) if source.base_dir and not source.adapters else 0
    size_before = size_before or measure.model_bytes(source.model)
    report: dict[str, Any] = {"model": source.model_id, "output_dir": str(output), "export": kind}
    t0, cpu0 = time.perf_counter(), time.process_time()
    if method:
        report |= _quantize(args, source, texts.calibration, output, method, bits)
    else:
        report |= _gguf(args, source, output)
    # wall and CPU time: on a shared machine the wall clock says more about the neighbours than about the export
    report["seconds_quantize"] = round(time.perf_counter() - t0, 2)
    report["cpu_seconds_quantize"] = round(time.process_time() - cpu0, 2)
    if ref is not None:
        report |= _measure(ref, output)
    report |= {"size_before_bytes": size_before, "size_after_bytes": measure.weights_size(output)}
    report["compression"] = round(report["size_before_bytes"] / max(report["size_after_bytes"], 1), 2)
    if ref is not None:
        report["held_out"] = {"texts": len(ref.batches), "tokens": sum(b.shape[1] for b in ref.batches),
                              "source": texts.held_out_source}
    report["seconds_total"] = round(time.perf_counter() - started, 2)
    measure.write_report(output, report)
    files = sorted(p for p in output.rglob("*") if p.is_file())
    hub = _push(args, output, kind) if export.push_to_hub else None
    logger.info("exported %s to %s", source.model_id, output)
    return ExportResult(output, files, report, hub)


def _push(args: ExportArguments, output: Path, kind: str) -> dict:
    from swift.train.export.hub import push_folder

    return push_folder(output, args.export.hub_model_id, token=args.model.hub_token,
                       private=args.export.hub_private_repo, message=f"swift export ({kind})")


def _quantize(args: ExportArguments, source: Source, calibration_texts: list[str], output: Path, method: str,
              bits: int) -> dict:
    from swift.train.export import calibration
    from swift.train.export.report import texts_digest

    info: dict[str, Any] = {"method": method, "bits": bits}
    if method == "bnb":
        from swift.train.export.bnb import bnb_config, save_bnb

        export = args.export
        config = bnb_config(bits, export.bnb_4bit_quant_type, export.bnb_4bit_use_double_quant)
        info["format"] = "bitsandbytes " + (export.bnb_4bit_quant_type if bits == 4 else "int8")
        if bits == 4:
            info["double_quant"] = export.bnb_4bit_use_double_quant

        def write(work: Path) -> None:
            weights_dir = source.base_dir
            if source.adapters or weights_dir is None:  # bitsandbytes quantizes while loading: save the merge first
                weights_dir = work / ".merged"
                source.model.save_pretrained(weights_dir, safe_serialization=True)
            save_bnb(weights_dir, source.tokenizer, config, work)
            if weights_dir == work / ".merged":
                import shutil

                shutil.rmtree(weights_dir)

        save_atomic(output, write)
        return info
    from swift.train.export import compressed
    from swift.train.export.quantize import (
        QuantSpec,
        batch_samples,
        pick_group_size,
        quantize_model,
        quantized_linears,
    )

    quantized = set(quantized_linears(source.model))
    if method == "fp8":
        scales = compressed.fp8_scales(source.model)
        config, fmt = compressed.fp8_config(source.model, quantized), "float-quantized"
        info |= {"format": "compressed-tensors float-quantized (FP8_DYNAMIC: per-channel weights, per-token "
                           "dynamic activations)"}
    else:
        spec = QuantSpec(bits, pick_group_size(source.model, args.export.group_size))
        samples = calibration.tokenize(calibration_texts, source.tokenizer, args.template.max_length or 2048)
        per_forward = None if args.export.quant_batch_size == -1 else args.export.quant_batch_size
        scales = quantize_model(source.model, batch_samples(samples, per_forward), spec, method)
        config, fmt = compressed.int_config(source.model, spec, quantized), "pack-quantized"
        info |= {"group_size": spec.group_size, "format": f"compressed-tensors pack-quantized (W{bits}A16, symmetric)",
                 "calibration": {"samples": len(samples), "tokens": sum(s.shape[1] for s in samples),
                                 "batch_size": per_forward or len(samples),
                                 "seed": args.data.data_seed, "digest": texts_digest(calibration_texts)}}
    save_atomic(output, lambda work: compressed.save_compressed(source.model, source.tokenizer, scales, config, fmt,
                                                                work))
    return info


def _gguf(args: ExportArguments, source: Source, output: Path) -> dict:
    from swift.core import build_template
    from swift.train.export.gguf_export import write_gguf
    from swift.train.export.ollama import write_modelfile

    quant = args.export.gguf_quant
    name = model_folder_name(source.model_id if not source.adapters else str(source.adapters[0].parent.name))
    filename = f"{name}-{quant}.gguf"

    def write(work: Path) -> None:
        path = write_gguf(source.model, source.tokenizer, work / filename, quant, name=name,
                          model_dir=source.base_dir)
        if args.export.to_ollama:
            template = build_template(args.template, source.tokenizer)
            stops = [*template.stop_words, source.tokenizer.eos_token or ""]
            write_modelfile(path, source.tokenizer, system=args.template.system, stop_words=stops)

    save_atomic(output, write)
    return {"method": "gguf", "gguf_quant": quant, "gguf_file": filename, "format": f"GGUF {quant}",
            "ollama_modelfile": "Modelfile" if args.export.to_ollama else None}


def _measure(ref: Any, output: Path) -> dict:
    """Reload the export the way `swift infer --model DIR` does and compare it with the unquantized logits."""
    from swift.core import get_model_tokenizer
    from swift.train.export.report import compare

    t0 = time.perf_counter()
    model, _ = get_model_tokenizer(str(output), "float32", "cpu")
    found = compare(ref, model.eval())
    found["perplexity_before"] = round(ref.perplexity, 4)
    found["seconds_reload_and_measure"] = round(time.perf_counter() - t0, 2)
    return found
