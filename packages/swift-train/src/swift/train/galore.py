"""`--use_galore` (Zhao et al. 2024, GaLore): full training whose AdamW state lives in a rank-r projection of each
target weight's gradient (refreshed by SVD every --galore_update_proj_gap steps), so optimizer memory falls from
2 x the weights to about 2 x r / d of them. The optimizers are galore-torch's (`--galore_quantization`: q-galore-torch's
8-bit one, with the projector quantized and its refresh interval adapted); this module picks the target weights,
builds the param groups and, for `--galore_optim_per_parameter`, steps each weight inside the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from swift.core import ConfigError
from swift.train.optimizers import CombinedOptimizer


def check_galore(galore: Any, train: Any, tuner: Any, world_size: int) -> list[str]:
    """Flag problems before anything loads."""
    import importlib.util

    if not galore.use_galore:
        return []
    problems = []
    if tuner.train_type != "full":
        problems.append(f"--use_galore with --train_type {tuner.train_type}: GaLore projects full weight gradients; "
                        "use --train_type full")
    if train.optimizer:
        problems.append(f"--use_galore with --optimizer {train.optimizer}: GaLore is the optimizer; choose one")
    if train.deepspeed or train.fsdp:
        problems.append("--use_galore with --deepspeed / --fsdp: GaLore projects whole weight matrices, and ZeRO / "
                        "FSDP hand the optimizer flat shards; train with DDP (NPROC_PER_NODE) instead")
    if galore.galore_rank < 1 or galore.galore_update_proj_gap < 1:
        problems.append("--galore_rank and --galore_update_proj_gap must be at least 1")
    if galore.galore_optim_per_parameter and world_size > 1:
        problems.append("--galore_optim_per_parameter steps each weight as soon as its gradient is ready, before DDP "
                        "has averaged it across processes: train it in one process, or drop the flag")
    if galore.galore_quantization:
        if galore.galore_optim_per_parameter:
            problems.append("--galore_quantization with --galore_optim_per_parameter: Q-GaLore steps all weights "
                            "at once; drop one")
        if galore.galore_proj_type != "std":
            problems.append(f"--galore_quantization with --galore_proj_type {galore.galore_proj_type}: Q-GaLore "
                            "projects with std only")
        if not torch.cuda.is_available():
            problems.append("--galore_quantization: q-galore-torch's 8-bit optimizer synchronises CUDA after each "
                            "weight and cannot step on a host without a GPU; drop the flag (plain GaLore runs here)")
    for module in ("galore_torch", *(["q_galore_torch"] if galore.galore_quantization else [])):
        if importlib.util.find_spec(module) is None:
            problems.append(f"--use_galore: {module} is not installed; pip install \"swift-train[galore]\"")
            break
    return problems


def target_weights(model: nn.Module, targets: list[str] | None, with_embedding: bool) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of the trainable Linear weights whose module name contains a --galore_target_modules entry
    (default: every Linear inside the transformer blocks, i.e. attention and MLP; the output head stays on AdamW),
    plus the input embeddings with --galore_with_embedding."""
    embeddings = model.get_input_embeddings() if with_embedding and hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    chosen = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or not weight.requires_grad or weight.ndim != 2:
            continue
        if module is embeddings or (isinstance(module, nn.Linear) and module is not head and (
                any(t in name for t in targets) if targets else ".layers." in f".{name}." or ".h." in f".{name}.")):
            chosen.append((f"{name}.weight", weight))
    if not chosen:
        raise ConfigError("--use_galore: no trainable 2-D weight matches --galore_target_modules "
                          f"{targets or '(attention and MLP linears)'}")
    return chosen


def galore_optimizer(model: nn.Module, training_args: Any, flags: dict, accelerator: Any) -> torch.optim.Optimizer:
    """The run's optimizer: the target weights in one group carrying GaLore's settings, the other trainable
    parameters in AdamW groups split by weight decay (none on biases and norms) as transformers' Trainer does."""
    galore = dict(rank=flags["galore_rank"], update_proj_gap=flags["galore_update_proj_gap"],
                  scale=flags["galore_scale"], proj_type=flags["galore_proj_type"])
    if flags["galore_quantization"]:
        galore |= dict(quant=flags["galore_proj_quant"], quant_n_bit=flags["galore_proj_bits"],
                       quant_group_size=flags["galore_proj_group_size"], cos_threshold=flags["galore_cos_threshold"],
                       gamma_proj=flags["galore_gamma_proj"], queue_size=flags["galore_queue_size"])
        from q_galore_torch import QGaLoreAdamW8bit as optimizer_cls
    else:
        from galore_torch import GaLoreAdamW as optimizer_cls
    targets = target_weights(model, flags.get("galore_target_modules") or None, flags["galore_with_embedding"])
    target_ids = {id(p) for _, p in targets}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in target_ids:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    wd = training_args.weight_decay
    groups = [{"params": [p for _, p in targets], "weight_decay": wd, **galore},
              {"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=training_args.learning_rate, betas=(training_args.adam_beta1, training_args.adam_beta2),
                  eps=training_args.adam_epsilon)
    groups = [g for g in groups if g["params"]]
    if not flags["galore_optim_per_parameter"]:
        return optimizer_cls(groups, **kwargs)
    per_param = [optimizer_cls([{**g, "params": [p]}], **kwargs) for g in groups for p in g["params"]]
    return StepInBackward(per_param, lambda: accelerator.sync_gradients, training_args.max_grad_norm)


class StepInBackward(CombinedOptimizer):
    """One optimizer per weight, each stepped from its gradient hook on the micro-batch that ends an accumulation
    (accelerate's `sync_gradients`), its gradient then freed: the whole model's gradients never exist at once
    (GaLore's layer-wise update). Each weight's gradient is clipped to `max_norm` on its own, since the global norm
    is never formed. The Trainer's `step()` / `zero_grad()` are no-ops; the LR schedule reaches every inner group.
    The hooks sum the squared (unclipped) norms, so `take_grad_norm()` is the global norm the ordinary step would
    have clipped by, for the log."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], syncing: Callable[[], bool], max_norm: float) -> None:
        super().__init__(optimizers)
        self._hooks = []
        self._norm_sq = 0.0
        for optimizer in optimizers:
            for p in _params(optimizer):
                self._hooks.append(p.register_post_accumulate_grad_hook(self._stepper(optimizer, syncing, max_norm)))

    def take_grad_norm(self) -> float:
        """The gradient norm of the step the hooks just took (then reset for the next one)."""
        norm, self._norm_sq = self._norm_sq ** 0.5, 0.0
        return norm

    def _stepper(self, optimizer: torch.optim.Optimizer, syncing: Callable[[], bool], max_norm: float) -> Callable:
        def hook(p: torch.Tensor) -> None:
            if p.grad is None or not syncing():
                return
            norm = torch.nn.utils.clip_grad_norm_([p], max_norm if max_norm and max_norm > 0 else float("inf"))
            self._norm_sq += float(norm) ** 2
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return hook

    def add_param_group(self, group: dict) -> None:
        raise ConfigError("--galore_optim_per_parameter: its optimizers are fixed per weight (no added groups)")

    def step(self, closure: Callable | None = None) -> Any:
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass  # each weight's gradient is freed in its hook; the others are frozen


def _params(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    return (p for g in optimizer.param_groups for p in g["params"])
