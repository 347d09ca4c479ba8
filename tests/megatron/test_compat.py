"""The CPU shims exist for specific upstream lines: fail loudly when the pinned megatron-core changes under them."""

from __future__ import annotations

import importlib
import inspect

import pytest

pytest.importorskip("megatron.core")


def test_pinned_version_and_the_lines_the_shims_exist_for():
    import megatron.core

    from swift.megatron.compat import SUPPORTED_VERSIONS, UPSTREAM_MARKERS

    assert megatron.core.__version__.startswith(SUPPORTED_VERSIONS), (
        f"megatron-core {megatron.core.__version__} is not the pinned 0.16.x: re-check swift/megatron/compat.py")
    for module, text in UPSTREAM_MARKERS:
        source = inspect.getsource(importlib.import_module(module))
        assert text in source, f"{module} no longer contains {text!r}: re-check the CPU shims in compat.py"


def test_shims_map_cuda_to_cpu_inside_megatron_only_and_restore_on_exit():
    import torch
    from megatron.core.pipeline_parallel import schedules

    from swift.megatron.compat import cpu_shims, is_cpu_only

    if not is_cpu_only():
        pytest.skip("the shims are inactive where CUDA exists")
    with cpu_shims():
        assert schedules.torch.zeros([], dtype=torch.int, device="cuda").device.type == "cpu"
        assert schedules.torch.cuda.current_device() == "cpu"
        assert torch.zeros(1).type() == "torch.FloatTensor"  # callers outside megatron see the truth
    assert schedules.torch is torch
    assert torch.Tensor.type.__qualname__ == "TensorBase.type" or torch.Tensor.type is torch._C.TensorBase.type
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1, device="cuda")
