"""swift.tuners: LoRA and the PEFT family, LLaMA-Pro, LISA, full and freeze training (names load on first use).

Every `--train_type` is one entry of the tuner registry (`registry.py`; the built-in ones in `builtin.py`).
"""

from swift.core import lazy_exports

_EXPORTS = {
    "TunerArgs": "swift.tuners.arguments",
    "prepare_model": "swift.tuners.prepare",
    "check_tuner_args": "swift.tuners.prepare",
    "PreparedModel": "swift.tuners.prepare",
    "count_parameters": "swift.tuners.prepare",
    "quantization_config": "swift.tuners.prepare",
    "resolve_target_modules": "swift.tuners.targets",
    "TUNERS": "swift.tuners.registry",
    "TunerMeta": "swift.tuners.registry",
    "TunerContext": "swift.tuners.registry",
    "Tuned": "swift.tuners.registry",
    "register_tuner": "swift.tuners.registry",
    "get_tuner": "swift.tuners.registry",
    "only_train": "swift.tuners.freeze",
    "decoder_layers": "swift.tuners.freeze",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
