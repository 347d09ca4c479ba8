"""The distributed matrix on CPU (gloo, 2 processes): DDP, FSDP2, ZeRO-2, ZeRO-3 and two simulated nodes each give the
losses of one process with the same global batch, say in env.json which strategy and wrapper really ran, write whole
HF / PEFT checkpoints that give one process's logits, and resume from a checkpoint with the losses of an uninterrupted
run. Slow (kept out of the default run for its 20-minute budget): ZeRO-2, DDP (tests/train/test_distributed.py runs it
by default), FSDP2 full, two nodes, the distributed resumes (one process's resume runs by default in test_sft.py),
Slurm srun, Ray. GPU (`-m gpu`): the same with nccl and bf16."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, save_tiny_llama
from tests.train.distributed.runs import (
    baseline_flags,
    child_env,
    free_port,
    logits_of_checkpoint,
    losses,
    read_env,
    run_swift,
    run_two_nodes,
)

STEPS, SAVE = 6, 3
STRATEGIES = {  # name: (flags, strategy in env.json, wrapper class name contains)
    "ddp": ([], "ddp", "DistributedDataParallel"),
    "fsdp2": (["--fsdp", "fsdp2"], "fsdp2", "FSDP"),
    "zero2": (["--deepspeed", "zero2"], "deepspeed_zero2", "DeepSpeedEngine"),
    "zero3": (["--deepspeed", "zero3"], "deepspeed_zero3", "DeepSpeedEngine"),
}
FULL_GAP, LORA_GAP = 1e-5, 1e-5  # fp32 on gloo: measured below 1e-6; the bound leaves room for other CPUs' kernels


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="module")
def tiny(workdir, smollm2_tokenizer) -> Path:
    """A 2-layer llama with untied embeddings (the acceptance check's shape) and SmolLM2's tokenizer."""
    return save_tiny_llama(workdir / "tiny", smollm2_tokenizer, tied=False, max_positions=256)


@pytest.fixture(scope="module")
def rows(workdir) -> Path:
    path = workdir / "rows.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"question {i}: what is {i} + {i}?"},
                           {"role": "assistant", "content": f"{i} + {i} is {2 * i}. " + "ok " * (i % 7)}]}
             for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in lines))
    return path


class Runs:
    """Training runs of this module, made once each and shared by the tests that read them."""

    def __init__(self, workdir: Path, tiny: Path, rows: Path) -> None:
        self.workdir, self.flags, self.done = workdir, baseline_flags(tiny, rows, STEPS, SAVE), {}

    def get(self, key: str, train_type: str, *extra: str, nproc: int = 2, nodes: bool = False) -> Path:
        """The run directory of run `key`, trained now if it has not been yet (global batch 4 in every layout)."""
        if key not in self.done:
            out = self.workdir / key
            flags = [*self.flags, "--train_type", train_type, "--per_device_train_batch_size", str(4 // nproc),
                     "--output_dir", str(out), *extra]
            run_two_nodes(flags) if nodes else run_swift(flags, nproc=nproc)
            self.done[key] = next(out.glob("v*-*"))
        return self.done[key]

    def strategy(self, name: str, train_type: str) -> Path:
        return self.get(f"{name}-{train_type}", train_type, *STRATEGIES[name][0])

    def single(self, train_type: str) -> Path:
        return self.get(f"single-{train_type}", train_type, nproc=1)


@pytest.fixture(scope="module")
def runs(workdir, tiny, rows) -> Runs:
    return Runs(workdir, tiny, rows)


def assert_matches(run: Path, base: Path, gap: float, strategy: str, wrapper: str) -> None:
    got, want = losses(run), losses(base)
    assert sorted(got) == list(range(1, STEPS + 1)), got
    worst = max(abs(got[s] - want[s]) for s in want)
    assert worst <= gap, f"losses differ from one process by {worst:.2e}: {got} vs {want}"
    info = read_env(run)
    assert (info["world_size"], info["backend"], info["strategy"]) == (2, "gloo", strategy), info
    assert wrapper in info["model_wrapper"], info


# LoRA under a sharded strategy runs by default with FSDP2; with ZeRO-3 it is in -m slow (the suite's time budget);
# DDP runs by default in tests/train/test_distributed.py, FSDP2 full only in -m slow (FSDP2 LoRA by default)
@pytest.mark.parametrize(("name", "train_type"), [
    pytest.param("ddp", "full", marks=pytest.mark.slow), pytest.param("fsdp2", "full", marks=pytest.mark.slow),
    ("fsdp2", "lora"), ("zero3", "full"),
    pytest.param("zero3", "lora", marks=pytest.mark.slow), pytest.param("zero2", "full", marks=pytest.mark.slow),
    pytest.param("ddp", "lora", marks=pytest.mark.slow), pytest.param("zero2", "lora", marks=pytest.mark.slow)])
def test_strategy_matches_one_process(runs, name, train_type):
    _, strategy, wrapper = STRATEGIES[name]
    gap = FULL_GAP if train_type == "full" else LORA_GAP
    assert_matches(runs.strategy(name, train_type), runs.single(train_type), gap, strategy, wrapper)


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_two_nodes_match_one_process(runs):
    run = runs.get("nodes-full", "full", nproc=2, nodes=True)
    assert_matches(run, runs.single("full"), FULL_GAP, "ddp", "DistributedDataParallel")
    assert read_env(run)["nnodes"] == 2
    assert read_env(run)["ranks_per_node"] == 1


def test_one_process_env_json(runs):
    info = read_env(runs.single("full"))
    assert (info["world_size"], info["strategy"], info["backend"]) == (1, "single", None), info
    assert info["model_wrapper"].endswith("LlamaForCausalLM"), info


@pytest.mark.parametrize(("name", "train_type"), [pytest.param("fsdp2", "full", marks=pytest.mark.slow),
                                                   ("zero3", "full"), ("fsdp2", "lora"),
                                                   pytest.param("zero3", "lora", marks=pytest.mark.slow)])
def test_sharded_checkpoints_are_whole_hf_and_peft_checkpoints(runs, name, train_type):
    """ZeRO-3 / FSDP2 checkpoints are gathered on rank 0: whole weights that plain transformers loads, or a PEFT
    adapter that plain peft loads, with one process's logits; ZeRO keeps its sharded state to resume from beside."""
    run, base = runs.strategy(name, train_type), runs.single(train_type)
    checkpoint = run / f"checkpoint-{STEPS}"
    weights = ("config.json", "model.safetensors") if train_type == "full" else (
        "adapter_config.json", "adapter_model.safetensors")
    assert all((checkpoint / f).is_file() for f in weights), sorted(p.name for p in checkpoint.iterdir())
    gap = (logits_of_checkpoint(checkpoint) - logits_of_checkpoint(base / f"checkpoint-{STEPS}")).abs().max().item()
    assert gap < 1e-4, gap
    if name == "zero3":
        assert (checkpoint / "latest").is_file()
        assert list(checkpoint.glob("global_step*/*optim_states.pt"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in ("ddp", "fsdp2", "zero3")])
def test_resume_continues_with_the_uninterrupted_losses(runs, name):
    """Continue from checkpoint-SAVE of a run (what a killed run leaves: checkpoints are renamed into place only once
    whole) into a new output directory: steps SAVE+1.. give the losses of the run that went on."""
    first = runs.strategy(name, "full")
    resumed = runs.get(f"{name}-resumed", "full", *STRATEGIES[name][0],
                       "--resume_from_checkpoint", str(first / f"checkpoint-{SAVE}"))
    want, got = losses(first), losses(resumed)
    assert sorted(got) == list(range(SAVE + 1, STEPS + 1)), got
    worst = max(abs(got[s] - want[s]) for s in got)
    assert worst <= 1e-6, f"resumed losses {got} vs uninterrupted {want}"
    assert read_env(resumed)["strategy"] == STRATEGIES[name][1]


@pytest.mark.slow
def test_srun_tasks_train_as_ranks(runs, tiny, rows, workdir):
    """Two tasks of a simulated `srun -n 2` (SLURM_* variables, no torchrun): each becomes one rank."""
    out = workdir / "srun"
    flags = [*baseline_flags(tiny, rows, STEPS, SAVE), "--train_type", "full", "--per_device_train_batch_size", "2",
             "--output_dir", str(out)]
    port = str(free_port())
    procs = [subprocess.Popen(
        [str(BIN / "swift"), "sft", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=child_env() | {"SLURM_PROCID": str(r), "SLURM_LOCALID": str(r), "SLURM_NTASKS": "2", "SLURM_NODEID": "0",
                      "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": port}) for r in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    run = next(out.glob("v*-*"))
    assert_matches(run, runs.single("full"), FULL_GAP, "ddp", "DistributedDataParallel")
    assert read_env(run)["launcher"] == "srun"


@pytest.mark.slow
def test_ray_train_workers_match_one_process(runs):
    run = runs.get("ray-full", "full", "--per_device_train_batch_size", "2", "--use_ray", "true",
                   "--ray_num_workers", "2", nproc=1)
    assert_matches(run, runs.single("full"), FULL_GAP, "ddp", "DistributedDataParallel")
    assert read_env(run)["launcher"] == "ray"


def test_deepspeed_op_cache_lives_in_the_checkout():
    """CI reuses the DeepSpeed op build between tests: TORCH_EXTENSIONS_DIR points into the ignored .swift-cache,
    and the venv's bin comes first on PATH (two different ninja binaries make torch rebuild the op)."""
    env = child_env()
    cache = Path(env["TORCH_EXTENSIONS_DIR"])
    assert cache.is_relative_to(ROOT / ".swift-cache")
    assert subprocess.run(["git", "check-ignore", "-q", str(cache)], cwd=ROOT).returncode == 0
    assert env["PATH"].split(os.pathsep)[0] == str(BIN)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ddp", "fsdp2", "zero2", "zero3"])
def test_gpu_strategy_matches_one_process_in_bf16(runs, name):
    """The same matrix on GPUs: nccl, bf16 (autocast; DeepSpeed in torch_autocast mode). bf16 rounds each rank's
    partial gradients separately, so the bound is bf16's, not fp32's."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    base = runs.get("gpu-single", "full", "--bf16", "true", nproc=1)
    run = runs.get(f"gpu-{name}", "full", "--bf16", "true", *STRATEGIES[name][0])
    got, want = losses(run), losses(base)
    assert max(abs(got[s] - want[s]) for s in want) < 2e-2, (got, want)
    info = read_env(run)
    assert (info["backend"], info["strategy"]) == ("nccl", STRATEGIES[name][1]), info
    assert info["mixed_precision"] != "no", info
