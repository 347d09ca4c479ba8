"""One Megatron-Core session: the process group (gloo on CPU, nccl on CUDA), mcore's parallel groups and seeds."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator

from swift.megatron.compat import cpu_shims, is_cpu_only
from swift.megatron.model import Parallel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def megatron_session(parallel: Parallel, *, seed: int = 42) -> Iterator[None]:
    """Initialise torch.distributed (from torchrun's variables, else a one-process group on 127.0.0.1) and
    mcore's tensor/pipeline/expert groups; tear down what this call created on exit."""
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state, tensor_parallel
    from swift.core import env

    with cpu_shims():
        created = not dist.is_initialized()
        if created:
            backend = "gloo" if is_cpu_only() else "nccl"
            if env.world_size() > 1:
                dist.init_process_group(backend)  # torchrun's env:// variables
            else:
                dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        if not is_cpu_only():
            torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
        world = dist.get_world_size()
        model_parallel = parallel.tp * parallel.pp * parallel.cp
        if world % model_parallel or (world // (parallel.tp * parallel.pp)) % parallel.ep:
            from swift.core import ConfigError

            raise ConfigError(f"{world} processes cannot hold --tensor_model_parallel_size {parallel.tp} x "
                              f"--pipeline_model_parallel_size {parallel.pp} x --context_parallel_size "
                              f"{parallel.cp} (and --expert_model_parallel_size {parallel.ep}); set NPROC_PER_NODE "
                              "to a multiple of their product")
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel.tp, pipeline_model_parallel_size=parallel.pp,
            context_parallel_size=parallel.cp, expert_model_parallel_size=parallel.ep,
            expert_tensor_parallel_size=1)
        seed_everything(seed)
        tensor_parallel.model_parallel_cuda_manual_seed(seed, inference_rng_tracker=is_cpu_only())
        try:
            yield
        finally:
            parallel_state.destroy_model_parallel()
            if created and dist.is_initialized():  # a colocated vLLM engine's close may have taken it down
                dist.destroy_process_group()
