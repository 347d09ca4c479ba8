"""Quantized checkpoints in the compressed-tensors format, which transformers (with the light `compressed-tensors`
package) and vLLM both load: int4/int8 groups as `pack-quantized` (GPTQ, AWQ), FP8 as `float-quantized`.

We compute the weights and scales ourselves (quantize.py) and let compressed-tensors only lay them out: it rounds
`weight / weight_scale` again, which reproduces our integers exactly because the weights hold their dequantized values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swift.core import MissingBackendError, processing_class
from swift.train.export.quantize import QuantSpec, quantized_linears

_FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _require() -> None:
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as e:
        raise MissingBackendError("compressed-tensors", extra="swift-train[quant]") from e


def _config(weights: Any, activations: Any, ignore: list[str]) -> Any:
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus

    scheme = QuantizationScheme(targets=["Linear"], weights=weights, input_activations=activations)
    return QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore,
                              quantization_status=QuantizationStatus.FROZEN)


def _unquantized(model: Any, quantized: set[str]) -> list[str]:
    import torch

    return sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in quantized)


def int_config(model: Any, spec: QuantSpec, quantized: set[str]) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    weights = QuantizationArgs(num_bits=spec.bits, type="int", symmetric=True, strategy="group",
                               group_size=spec.group_size, dynamic=False)
    return _config(weights, None, _unquantized(model, quantized))


def fp8_scales(model: Any) -> dict[str, Any]:
    """FP8_DYNAMIC: one scale per output channel (|w|max -> 448); activations are scaled per token at run time."""
    return {name: (m.weight.detach().float().abs().amax(dim=1, keepdim=True) / _FP8_MAX).clamp(min=1e-12)
            for name, m in quantized_linears(model).items()}


def fp8_config(model: Any, quantized: set[str]) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    weights = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="channel", dynamic=False)
    activations = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True)
    return _config(weights, activations, _unquantized(model, quantized))


def save_compressed(model: Any, tokenizer: Any, scales: dict[str, Any], config: Any, fmt: str, work: Path) -> None:
    """Attach `scales` to the model's linears under `config`, compress them into `fmt` and save into `work`."""
    import torch

    _require()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    apply_quantization_config(model, config, show_progress=False)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, scale in scales.items():
            module = modules[name]
            module.weight_scale.data = scale.to(module.weight_scale.dtype).reshape(module.weight_scale.shape)
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.data.zero_()
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model.save_pretrained(work, safe_serialization=True)
    compressor.update_config(str(work))
    processing_class(tokenizer).save_pretrained(work)
