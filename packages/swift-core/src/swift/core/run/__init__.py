"""What every training command shares around its loop: the run directory and args.json, rank 0's decisions given
to every rank, loss plots, and the relaunch under torchrun / srun (`NPROC_PER_NODE=2 swift sft ...`)."""

from swift.core.run.launch import relaunch_under_torchrun, slurm_worker_env, threads_per_process
from swift.core.run.layout import (
    ARGS_FILE,
    CONVERTED_ADAPTER,
    adapter_for_base,
    is_rank0,
    model_folder_name,
    new_run_dir,
    on_rank0,
    read_args,
    write_json_atomic,
)
from swift.core.run.plot import plot_losses, read_log

__all__ = [
    "ARGS_FILE",
    "CONVERTED_ADAPTER",
    "adapter_for_base",
    "is_rank0",
    "model_folder_name",
    "new_run_dir",
    "on_rank0",
    "plot_losses",
    "read_args",
    "read_log",
    "relaunch_under_torchrun",
    "slurm_worker_env",
    "threads_per_process",
    "write_json_atomic",
]
