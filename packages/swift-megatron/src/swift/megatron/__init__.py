"""swift.megatron: Swift on Megatron-Core (megatron.core is imported only when a run starts; names load lazily)."""

from swift.core import lazy_exports

_EXPORTS = {
    "MegatronArguments": "swift.megatron.arguments",
    "MegatronArgs": "swift.megatron.arguments",
    "MegatronRlhfArguments": "swift.megatron.arguments",
    "MegatronRlhfArgs": "swift.megatron.arguments",
    "DpoSettings": "swift.megatron.dpo",
    "dpo_loss": "swift.megatron.dpo",
    "sft_main": "swift.megatron.cli",
    "pt_main": "swift.megatron.cli",
    "export_main": "swift.megatron.cli",
    "rlhf_main": "swift.megatron.cli",
    "run_train": "swift.megatron.train",
    "MegatronResult": "swift.megatron.train",
    "ModelShape": "swift.megatron.convert",
    "hf_to_mcore": "swift.megatron.convert",
    "mcore_to_hf": "swift.megatron.convert",
    "shard": "swift.megatron.convert",
    "merge": "swift.megatron.convert",
    "cpu_shims": "swift.megatron.compat",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
