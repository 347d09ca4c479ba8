"""swift.tuners: LoRA and the PEFT family, LLaMA-Pro, LISA, full and freeze training (names load on first use)."""

from swift.core.lazy import lazy_exports

_EXPORTS = {"TunerArgs": "swift.tuners.arguments"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
