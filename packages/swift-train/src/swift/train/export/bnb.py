"""bitsandbytes exports: int8 (LLM.int8) or nf4, saved before any forward pass.

bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks nf4 weights in place at the first forward, and a save_pretrained
after that writes a corrupt checkpoint (0 % agreement on reload; the in-memory model is broken too). So the model is
quantized while loading, saved at once, and everything that runs it (the quality report) reloads the saved copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swift.core import ConfigError, MissingBackendError, processing_class


def bnb_config(bits: int, quant_type: str = "nf4", double_quant: bool = True) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingBackendError("bitsandbytes", extra="swift-train[quant]") from e
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                  bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=torch.float32)
    raise ConfigError(f"--quant_method bnb --quant_bits {bits}: choose 4 (nf4 / fp4) or 8 (int8)")


def save_bnb(weights_dir: Path, tokenizer: Any, config: Any, work: Path) -> None:
    """Load `weights_dir` quantized by bitsandbytes (`bnb_config(...)`) and save it into `work` before it ever runs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(weights_dir, quantization_config=config, device_map="cpu")
    model.save_pretrained(work, safe_serialization=True)
    processing_class(tokenizer).save_pretrained(work)
