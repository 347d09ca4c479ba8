"""swift.train: `swift sft`, `pt`, `rlhf` and `export` on transformers, trl, DeepSpeed and FSDP (names load lazily)."""

from swift.core import lazy_exports

_EXPORTS = {
    "SftArguments": "swift.train.arguments",
    "PtArguments": "swift.train.arguments",
    "RlhfArguments": "swift.train.arguments",
    "ExportArguments": "swift.train.arguments",
    "sft_main": "swift.train.cli",
    "pt_main": "swift.train.cli",
    "rlhf_main": "swift.train.cli",
    "export_main": "swift.train.cli",
    "register_loss": "swift.train.plugins",
    "register_optimizer": "swift.train.plugins",
    "register_callback": "swift.train.plugins",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
