"""`megatron sft --optimizer muon|dist_muon`: Muon (Jordan et al. 2024) on the decoder's weight matrices, AdamW on
the rest, with megatron-core's flags and their meaning (`--muon_momentum`, `--muon_use_nesterov`,
`--muon_scale_mode`, `--muon_extra_scale_factor`, `--muon_num_ns_steps`, `--muon_split_qkv`, `--muon_tp_mode`).

megatron-core's own Muon needs the `emerging_optimizers` package (Python >= 3.12, not installable beside this
project's Python 3.11); this one needs only torch and takes torch.optim.Muon's Newton-Schulz iteration:

- with --muon_split_qkv (default) each of q, k, v is orthogonalised on its own (mcore's per-group interleaving of
  `linear_qkv` undone); `linear_fc1` is always cut into gate and up, the two HF matrices it fuses;
- --muon_tp_mode blockwise (default, as mcore) orthogonalises each tensor-parallel rank's shard; duplicated gathers
  the whole matrix over the TP group first (the same update as one process);
- the update is scaled per matrix by --muon_scale_mode (spectral: sqrt(max(out, in)); shape_scaling:
  sqrt(max(1, out / in)); unit_rms_norm: sqrt(out / in)) times --muon_extra_scale_factor, with decoupled weight
  decay, as emerging_optimizers does (spectral with 0.2 is torch's "match_rms_adamw", what `swift sft --optimizer
  muon` uses);
- embeddings, output layer, norms and biases step with AdamW (--adam_beta1/2, --adam_eps; no weight decay on 1-D
  tensors, as Megatron);
- `muon` keeps every parameter's state on every data-parallel rank (the distributed optimizer's sharding is off);
  `dist_muon` gives each data-parallel rank whole parameters in turn: the owner steps them and broadcasts the
  result, so optimizer state is split across ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

MUON_OPTIMIZERS = ("muon", "dist_muon")
_COLUMN = ("linear_qkv", "linear_fc1")
_ROW = ("linear_proj", "linear_fc2")


def _kind(name: str) -> tuple[str, int | None] | None:
    """(how the matrix splits into HF matrices, its TP-split dim) of a hidden matrix, None for AdamW's params."""
    if not name.endswith(".weight") or ".lora_" in name or "decoder.layers." not in name:
        return None
    leaf = name.rsplit(".", 2)[-2]
    expert = "local_experts" in name  # experts are whole on every TP rank
    if leaf in _COLUMN:
        return ("qkv" if leaf == "linear_qkv" else "fc1"), (None if expert else 0)
    if leaf in _ROW:
        return "whole", (None if expert else 1)
    if leaf == "router":
        return "whole", None
    return None


def param_groups(model: Any, weight_decay: float) -> list[dict]:
    """Muon groups (one per split kind and TP dim) and AdamW groups (with / without weight decay)."""
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        kind = _kind(name)
        if kind is not None:
            key = ("muon", *kind)
            group = groups.setdefault(key, {"params": [], "use_muon": True, "split": kind[0], "tp_dim": kind[1],
                                            "wd_mult": 1.0})
        else:
            decay = param.ndim > 1 and not name.endswith(".bias")
            group = groups.setdefault(("adamw", decay), {"params": [], "use_muon": False, "wd_mult": 1.0 if decay
                                                          else 0.0})
        group["params"].append(param)
    return [g | {"weight_decay": weight_decay * g["wd_mult"]} for g in groups.values()]


class MuonWithAdamW(torch.optim.Optimizer):
    """The inner optimizer megatron-core's FP32Optimizer / Float16OptimizerWithFloat16Params wrap."""

    def __init__(self, groups: list[dict], *, lr: float, shape: Any, settings: MuonSettings,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, distributed: bool = False) -> None:
        super().__init__(groups, dict(lr=lr, weight_decay=0.0, momentum=settings.momentum,
                                      nesterov=settings.nesterov, betas=betas, eps=eps))
        self.shape, self.settings, self.distributed = shape, settings, distributed

    def _owner(self) -> tuple[int, int]:
        """(this data-parallel rank, the number of ranks) among which dist_muon deals the parameters out."""
        if not self.distributed:
            return 0, 1
        from megatron.core import parallel_state as ps

        return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()

    @torch.no_grad()
    def step(self, closure=None):
        rank, world = self._owner()
        params = [(param, group) for group in self.param_groups for param in group["params"]]
        for index, (param, group) in enumerate(params):
            if param.grad is None or index % world != rank:
                continue
            if group["use_muon"]:
                self._muon(param, group)
            else:
                self._adamw(param, group)
        if self.distributed:
            self._broadcast([param for param, _ in params])
        return None

    def _muon(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        buf = state.setdefault("momentum_buffer", torch.zeros_like(param))
        grad = param.grad
        buf.lerp_(grad, 1 - group["momentum"])
        update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
        update = self._orthogonalised(update, group["split"], group["tp_dim"])
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update.to(param.dtype), alpha=-group["lr"])

    def _adamw(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        lr, step = group["lr"], state["step"]
        param.mul_(1 - lr * group["weight_decay"])
        state["exp_avg"].lerp_(param.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** step)).add_(group["eps"])
        param.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** step))

    def _orthogonalised(self, update: torch.Tensor, split: str, tp_dim: int | None) -> torch.Tensor:
        """Newton-Schulz of each matrix inside `update` (this rank's piece), each times its scale factor."""
        from swift.megatron.convert import _qkv_to_hf, _qkv_to_mcore

        settings = self.settings
        dim = tp_dim if settings.tp_mode == "duplicated" else None  # blockwise: this rank's shard as it is
        if split == "qkv" and settings.split_qkv:
            whole = _gather(update, dim)
            local_shape = self.shape if dim is not None else _local_qkv_shape(self.shape, tp_dim)
            q, k, v = (self._scaled(m) for m in _qkv_to_hf(whole, local_shape))
            return _slice(_qkv_to_mcore(q, k, v, local_shape), dim)
        if split == "fc1":
            gate, up = (self._scaled(_gather(m, dim)) for m in update.chunk(2, dim=0))
            return torch.cat([_slice(gate, dim), _slice(up, dim)])
        return _slice(self._scaled(_gather(update, dim)), dim)

    def _scaled(self, matrix: torch.Tensor) -> torch.Tensor:
        from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, _zeropower_via_newtonschulz

        s = self.settings
        ortho = _zeropower_via_newtonschulz(matrix.float(), (DEFAULT_A, DEFAULT_B, DEFAULT_C), s.ns_steps, 1e-7)
        return ortho.float() * scale_factor(*matrix.shape, s.scale_mode) * s.extra_scale_factor

    def _broadcast(self, params: list[torch.Tensor]) -> None:
        """Parameter i from its owner, data-parallel rank i mod the ranks, to the others."""
        import torch.distributed as dist

        from megatron.core import parallel_state as ps

        group = ps.get_data_parallel_group()
        ranks = dist.get_process_group_ranks(group)
        for index, param in enumerate(params):
            dist.broadcast(param.data, src=ranks[index % len(ranks)], group=group)


@dataclass(frozen=True)
class MuonSettings:
    momentum: float = 0.95
    nesterov: bool = False
    scale_mode: str = "spectral"
    extra_scale_factor: float = 1.0
    ns_steps: int = 5
    split_qkv: bool = True
    tp_mode: str = "blockwise"


def scale_factor(size_out: int, size_in: int, mode: str) -> float:
    """emerging_optimizers' (megatron-core's) scale of an orthogonalised update."""
    if mode == "spectral":
        return max(size_out, size_in) ** 0.5
    if mode == "shape_scaling":
        return max(1.0, size_out / size_in) ** 0.5
    return (size_out / size_in) ** 0.5  # unit_rms_norm


def _local_qkv_shape(shape: Any, tp_dim: int | None) -> Any:
    """The model shape of one TP rank's qkv shard (its query groups), for blockwise splitting."""
    import dataclasses

    size, _, _ = _tp()
    if tp_dim is None or size == 1:
        return shape
    return dataclasses.replace(shape, num_heads=shape.num_heads // size, num_kv_heads=shape.num_kv_heads // size)


def _tp() -> tuple[int, int, Any]:
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():  # (outside a run: one process)
        return 1, 0, None
    return (ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank(),
            ps.get_tensor_model_parallel_group())


def _gather(local: torch.Tensor, dim: int | None) -> torch.Tensor:
    import torch.distributed as dist

    size, _, group = _tp()
    if dim is None or size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def _slice(whole: torch.Tensor, dim: int | None) -> torch.Tensor:
    size, rank, _ = _tp()
    if dim is None or size == 1:
        return whole
    return whole.chunk(size, dim=dim)[rank]


def build(model: Any, config: Any, shape: Any, settings: MuonSettings, *, name: str, lr: float,
          weight_decay: float) -> Any:
    """The run's optimizer: MuonWithAdamW inside megatron-core's FP32 / bf16 wrapper (main-grad copies, clipping,
    the TP-aware gradient norm)."""
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params, FP32Optimizer

    inner = MuonWithAdamW(param_groups(model, weight_decay), lr=lr, shape=shape, settings=settings,
                          betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                          distributed=name == "dist_muon")
    if config.bf16 or config.fp16:
        return Float16OptimizerWithFloat16Params(inner, config, None, lambda opt, config=None: None)
    return FP32Optimizer(inner, config, lambda opt, config=None: None)
