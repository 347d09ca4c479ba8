"""Megatron-Core on a machine without CUDA (CPU tests and CI only; never active where a CUDA device exists).

megatron-core 0.16.x assumes CUDA in a few places that a CPU run reaches: `device="cuda"` and
`torch.cuda.current_device()` in the pipeline schedules, p2p communication, grad buffers, optimizers, clip_grads,
rotary embeddings and the global memory buffer; `param.type() == "torch.cuda.FloatTensor"` checks in the
(distributed) optimizer and clip_grads; `weight.data.cuda()` in the tied-embedding setup; `torch.cuda.synchronize()`
after p2p. Upstream supports CUDA only (NVIDIA/Megatron-LM has no CPU backend), so these shims are ours:

- every loaded `megatron.core.*` module sees a `torch` proxy whose tensor factories and autocast map the CUDA
  device to the CPU, and whose `torch.cuda.current_device/synchronize/empty_cache` are CPU-safe;
- `Tensor.type()` (no argument) and `Tensor.cuda()` answer as if on CUDA, for callers inside `megatron.*` only.

Independently of CUDA: without TransformerEngine, megatron-core 0.16's `moe_utils` never defines
`te_general_gemm` yet tests `if te_general_gemm is not None` in the router's gating (a NameError on every MoE
forward); `cpu_shims()` defines it as None while active.

Each shim turns what would raise ("Torch not compiled with CUDA enabled") into the CPU equivalent, so a run
inside `cpu_shims()` is the CUDA code path on CPU tensors. `UPSTREAM_MARKERS` lists the upstream lines the shims
exist for; `tests/megatron/test_compat.py` fails when the pinned version changes under them.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

SUPPORTED_VERSIONS = ("0.16.",)

# (module, text that must still be in it): why each shim exists, checked by the tests against the pinned version.
UPSTREAM_MARKERS = (
    ("megatron.core.pipeline_parallel.schedules", 'total_num_tokens = torch.zeros([], dtype=torch.int, device="cuda")'),
    ("megatron.core.pipeline_parallel.p2p_communication", "torch.cuda.synchronize()"),
    ("megatron.core.optimizer.optimizer", "device='cuda'"),
    ("megatron.core.optimizer.clip_grads", "assert param.grad.type() == 'torch.cuda.FloatTensor'"),
    ("megatron.core.optimizer.distrib_optimizer", "elif model_param.type() == 'torch.cuda.FloatTensor':"),
    ("megatron.core.distributed.param_and_grad_buffer", "device=torch.cuda.current_device()"),
    ("megatron.core.models.common.embeddings.rotary_pos_embedding", "torch.cuda.current_device()"),
    ("megatron.core.models.common.language_module.language_module", "weight.data = weight.data.cuda()"),
    ("megatron.core.utils", "device=torch.cuda.current_device()"),
    ("megatron.core.tensor_parallel.random", "return torch.cuda.random.get_rng_state(device=device)"),
    ("megatron.core.transformer.moe.moe_utils", "if te_general_gemm is not None and router_dtype != torch.float64:"),
)

_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint", "zeros_like",
              "ones_like", "empty_like", "full_like", "as_tensor")
_TYPE_NAMES = {"torch.FloatTensor": "torch.cuda.FloatTensor", "torch.HalfTensor": "torch.cuda.HalfTensor",
               "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor"}


def is_cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def _cpu_rng_state() -> Any:
    import torch

    return torch.get_rng_state()


def _cpu_device(device: Any) -> Any:
    import torch

    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


class _CudaShim(types.SimpleNamespace):
    """`torch.cuda` as megatron.core sees it on a CPU machine."""

    def __getattr__(self, name: str) -> Any:
        import torch

        return getattr(torch.cuda, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def synchronize(*_args: Any, **_kwargs: Any) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    # activation recompute forks "the CUDA RNG" around each checkpointed block; on CPU the CPU generator is the one
    # dropout draws from (torch.set_rng_state restores it; the CUDA set is queued by torch and never runs)
    random = types.SimpleNamespace(get_rng_state=lambda device=None: _cpu_rng_state())


class _TorchShim(types.ModuleType):
    """`torch` as megatron.core sees it on a CPU machine: CUDA devices in factories become the CPU."""

    def __init__(self, torch_module: types.ModuleType) -> None:
        super().__init__("torch")
        self._torch = torch_module
        self.cuda = _CudaShim()
        for name in _FACTORIES:
            setattr(self, name, self._on_cpu(getattr(torch_module, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    @staticmethod
    def _on_cpu(fn):
        def call(*args: Any, **kwargs: Any):
            if "device" in kwargs:
                kwargs["device"] = _cpu_device(kwargs["device"])
            kwargs.pop("pin_memory", None)
            return fn(*args, **kwargs)

        return call

    def autocast(self, device_type: str = "cpu", *args: Any, **kwargs: Any):
        return self._torch.autocast("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    def device(self, *args: Any, **kwargs: Any):
        if args and isinstance(args[0], str) and args[0].startswith("cuda"):
            return self._torch.device("cpu")
        return self._torch.device(*args, **kwargs)


def _called_from_megatron() -> bool:
    return sys._getframe(2).f_globals.get("__name__", "").startswith("megatron.")


@contextlib.contextmanager
def cpu_shims() -> Iterator[None]:
    """Run megatron.core's CUDA code paths on CPU tensors (only where no CUDA device exists), and define the
    `te_general_gemm` that MoE routing reads when TransformerEngine is absent."""
    from megatron.core.transformer.moe import moe_utils

    if hasattr(moe_utils, "te_general_gemm"):
        with _cuda_on_cpu():
            yield
        return
    moe_utils.te_general_gemm = None
    try:
        with _cuda_on_cpu():
            yield
    finally:
        del moe_utils.te_general_gemm


@contextlib.contextmanager
def _cuda_on_cpu() -> Iterator[None]:
    if not is_cpu_only():
        yield
        return
    import torch

    _import_megatron_modules()
    shim = _TorchShim(torch)
    swapped = [m for name, m in list(sys.modules.items())
               if name.startswith("megatron.core") and m is not None and getattr(m, "torch", None) is torch]
    tensor_type, tensor_cuda = torch.Tensor.type, torch.Tensor.cuda

    def type_(self, dtype=None, *args, **kwargs):
        name = tensor_type(self, dtype, *args, **kwargs)
        if dtype is None and not args and not kwargs and _called_from_megatron():
            return _TYPE_NAMES.get(name, name)
        return name

    def cuda(self, *args, **kwargs):
        return self if _called_from_megatron() else tensor_cuda(self, *args, **kwargs)

    for module in swapped:
        module.torch = shim
    torch.Tensor.type, torch.Tensor.cuda = type_, cuda
    try:
        yield
    finally:
        torch.Tensor.type, torch.Tensor.cuda = tensor_type, tensor_cuda
        for module in swapped:
            module.torch = torch


def _import_megatron_modules() -> None:
    """Load every module the shims must see before swapping their `torch`."""
    import importlib

    for name, _ in UPSTREAM_MARKERS:
        importlib.import_module(name)
    for name in ("megatron.core.pipeline_parallel", "megatron.core.distributed", "megatron.core.optimizer",
                 "megatron.core.models.gpt", "megatron.core.transformer.moe.moe_layer",
                 "megatron.core.transformer.moe.token_dispatcher", "megatron.core.transformer.moe.router",
                 "megatron.core.transformer.moe.experts", "megatron.core.tensor_parallel"):
        importlib.import_module(name)
