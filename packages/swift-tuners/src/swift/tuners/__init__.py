"""swift.tuners: LoRA and the PEFT family, LLaMA-Pro, LISA, full and freeze training (names load on first use)."""

from swift.core.lazy import lazy_exports

_EXPORTS = {
    "TunerArgs": "swift.tuners.arguments",
    "prepare_model": "swift.tuners.prepare",
    "PreparedModel": "swift.tuners.prepare",
    "count_parameters": "swift.tuners.prepare",
    "quantization_config": "swift.tuners.prepare",
    "resolve_target_modules": "swift.tuners.targets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
