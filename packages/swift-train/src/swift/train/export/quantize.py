"""GPTQ and AWQ on CPU or GPU, layer by layer: our own short implementations, no quantization library.

GPTQ (Frantar et al. 2022): per linear layer, the Hessian H = 2 X^T X of its calibration inputs; columns are
quantized left to right and each column's rounding error is pushed onto the columns not yet quantized through the
Cholesky factor of H^-1. AWQ (Lin et al. 2023): per group of linears sharing an input, a per-channel scale
s = mean|x|^a (a searched on a grid) is multiplied into the weights and divided out of the op before them, which
protects the channels that carry large activations; then round-to-nearest. Both quantize symmetric integer groups
along the input dimension, so the result is one (dequantized weight, scale) pair per linear.

Layers are processed in order, each fed the outputs of the already-quantized layers before it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

from swift.core import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1  # symmetric: [-2^(b-1), 2^(b-1)-1], scale maps |w|max to qmax


def group_scales(w: Any, spec: QuantSpec) -> Any:
    """Scales `[out, in / group]` of symmetric groups: each group's |w| max maps to qmax."""
    out_features, in_features = w.shape
    groups = w.reshape(out_features, in_features // spec.group_size, spec.group_size)
    return (groups.abs().amax(dim=-1) / spec.qmax).clamp(min=1e-8)


def quantize_with(w: Any, scale: Any, spec: QuantSpec) -> Any:
    """Round `w` `[out, k]` to the grid of `scale` `[out, 1]` or `[out, k]`; returns the dequantized values."""
    return (w / scale).round().clamp(-spec.qmax - 1, spec.qmax) * scale


def round_to_nearest(w: Any, spec: QuantSpec) -> tuple[Any, Any]:
    scale = group_scales(w, spec)
    expanded = scale.repeat_interleave(spec.group_size, dim=1)
    return quantize_with(w, expanded, spec), scale


def gptq(w: Any, hessian: Any, spec: QuantSpec, *, damp: float = 0.1) -> tuple[Any, Any]:
    """GPTQ one weight `[out, in]` given the Hessian `[in, in]` of its inputs; returns (dequantized, scales).

    `damp` (times the mean diagonal, added to H): the paper's 1 % overfits small calibration sets. On SmolLM2 with 16
    chat rows (~840 tokens, mostly one system prompt) 1 % kept 86 % of next tokens but broke greedy answers
    ("Lux Languis, la France, la France..."); 10 % answers "The capital of France is Paris." like the original.
    """
    import torch

    w = w.detach().clone().float()
    h = hessian.clone()
    dead = torch.diag(h) == 0  # inputs that were always zero: their columns cannot matter
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], device=h.device)
    # The upper Cholesky factor of H^-1 gives, row by row, how a column's error spreads over the later columns.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    wt = w.T.contiguous()  # [in, out]: each column of w is a contiguous row, which the loop below walks
    q = torch.zeros_like(wt)
    columns, group = wt.shape[0], spec.group_size
    scales = torch.zeros(columns // group, wt.shape[1], device=w.device)
    block = group * max(1, 128 // group)  # groups never straddle a block
    scale = None
    for start in range(0, columns, block):
        end = min(start + block, columns)
        w1, hinv1 = wt[start:end].clone(), hinv[start:end, start:end]
        errors = torch.zeros_like(w1)
        for i in range(end - start):
            if i % group == 0:  # the group's scale from its weights as updated so far
                scale = (w1[i:i + group].abs().amax(dim=0) / spec.qmax).clamp(min=1e-8)
                scales[(start + i) // group] = scale
            row = w1[i]
            quantized = (row / scale).round_().clamp_(-spec.qmax - 1, spec.qmax).mul_(scale)
            q[start + i] = quantized
            error = (row - quantized).div_(hinv1[i, i])
            w1[i:].sub_(torch.outer(hinv1[i, i:], error))
            errors[i] = error
        wt[end:] -= hinv[start:end, end:].T @ errors
    return q.T.contiguous(), scales.T.contiguous()


@contextlib.contextmanager
def one_thread():
    """GPTQ's column loop is thousands of tiny ops: with several threads on busy cores each op waits on the others
    (23 s against 0.4 s for one 576x576 weight, measured on 2 shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder blocks (the ModuleList as long as config.num_hidden_layers)."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ConfigError(f"--quant_method: cannot find the {n} decoder layers of {type(model).__name__}")


def quantized_linears(model: Any) -> dict[str, Any]:
    """Every nn.Linear inside the decoder layers, by full name (lm_head and embeddings stay unquantized)."""
    import torch

    layers = decoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    prefix = names[id(layers)]
    return {n: m for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, torch.nn.Linear)}


def pick_group_size(model: Any, requested: int | None) -> int:
    """--group_size, checked against every quantized layer; default the largest of 128, 64, 32 dividing them all."""
    sizes = {m.in_features for m in quantized_linears(model).values()}
    if requested is not None:
        if requested <= 0 or any(s % requested for s in sizes):
            bad = sorted(s for s in sizes if requested <= 0 or s % requested)
            fits = [g for g in (256, 128, 64, 32, 16) if all(s % g == 0 for s in sizes)]
            raise ConfigError(f"--group_size {requested} does not divide the input size of every quantized layer "
                              f"({', '.join(map(str, bad))}); sizes that do: {fits or 'none'}")
        return requested
    for g in (128, 64, 32, 16):
        if all(s % g == 0 for s in sizes):
            return g
    return math.gcd(*sizes)


class _Stop(Exception):
    """Raised by the hook on the first layer once its inputs are captured."""


def batch_samples(samples: list[Any], batch_size: int | None) -> list[tuple[Any, Any]]:
    """`[1, T]` calibration samples as (ids, mask) batches of `batch_size` (None: all in one), right-padded to the
    batch's longest; the mask is None for a batch of one (nothing to pad)."""
    import torch

    size = batch_size or len(samples)
    out = []
    for start in range(0, len(samples), size):
        part = samples[start:start + size]
        if len(part) == 1:
            out.append((part[0], None))
            continue
        width = max(s.shape[1] for s in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        mask = torch.zeros(len(part), width, dtype=torch.long)
        for row, s in enumerate(part):
            ids[row, :s.shape[1]], mask[row, :s.shape[1]] = s[0], 1
        out.append((ids, mask))
    return out


def capture_first_layer_inputs(model: Any, batches: list[tuple[Any, Any]]) -> list[tuple[tuple, dict, Any]]:
    """What the first decoder layer receives for each (ids, mask) batch: (args, kwargs, real-token mask or None),
    so layers can be replayed alone and their hooks see the real tokens only."""
    import torch

    layer = decoder_layers(model)[0]
    captured: list[tuple[tuple, dict, Any]] = []
    keep = None

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        captured.append((args, kwargs, keep))
        raise _Stop

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for ids, mask in batches:
                keep = None if mask is None else mask.to(device).bool()
                with contextlib.suppress(_Stop):
                    model(input_ids=ids.to(device), attention_mask=None if mask is None else mask.to(device),
                          use_cache=False)
    finally:
        handle.remove()
    return captured


def _real_tokens(x: Any, keep: Any) -> Any:
    """A linear's input as [tokens, in] without the padding of its batch."""
    return (x.reshape(-1, x.shape[-1]) if keep is None else x[keep]).detach().float()


def _layer_output(layer: Any, args: tuple, kwargs: dict) -> Any:
    out = layer(*args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _with_hidden(args: tuple, kwargs: dict, hidden: Any) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _run_layer(layer: Any, inputs: list[tuple[tuple, dict, Any]], current: dict) -> None:
    """Replay the layer on every captured batch; `current["keep"]` tells the hooks which tokens are real."""
    import torch

    with torch.no_grad():
        for args, kwargs, keep in inputs:
            current["keep"] = keep
            layer(*args, **kwargs)


def _gptq_layer(layer: Any, linears: dict[str, Any], inputs: list, spec: QuantSpec) -> dict[str, Any]:
    import torch

    hessians = {n: torch.zeros(m.in_features, m.in_features, device=m.weight.device) for n, m in linears.items()}
    counts = dict.fromkeys(linears, 0)
    current: dict = {}

    def accumulate(name: str):
        def hook(_module: Any, args: tuple, _out: Any) -> None:
            x = _real_tokens(args[0], current["keep"])  # [tokens, in]
            seen, new = counts[name], x.shape[0]
            hessians[name] *= seen / (seen + new)  # a running mean of 2 x^T x over all tokens
            counts[name] = seen + new
            x = math.sqrt(2 / (seen + new)) * x
            hessians[name] += x.T @ x
        return hook

    handles = [m.register_forward_hook(accumulate(n)) for n, m in linears.items()]
    try:
        _run_layer(layer, inputs, current)
    finally:
        for h in handles:
            h.remove()
    scales = {}
    for name, module in linears.items():
        with one_thread():
            q, scale = gptq(module.weight.data, hessians[name], spec)
        module.weight.data = q.to(module.weight.dtype)
        scales[name] = scale
    return scales


# AWQ's scale groups for llama-style blocks: (op before, linears that read its output).
_AWQ_GROUPS = [
    ("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
    ("self_attn.v_proj", ["self_attn.o_proj"]),
    ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
    ("mlp.up_proj", ["mlp.down_proj"]),
]


def _awq_layer(layer: Any, linears: dict[str, Any], inputs: list, spec: QuantSpec, *,
               grid: int = 20, max_rows: int = 4096) -> dict[str, Any]:
    import torch

    modules = dict(layer.named_modules())
    groups = [(prev, names) for prev, names in _AWQ_GROUPS
              if prev in modules and all(n in linears for n in names)
              and (not isinstance(modules[prev], torch.nn.Linear)
                   or modules[prev].out_features == linears[names[0]].in_features)]
    captured: dict[str, list] = {names[0]: [] for _, names in groups}
    current: dict = {}

    def keep(name: str):
        def hook(_module: Any, args: tuple, _out: Any) -> None:
            rows = sum(x.shape[0] for x in captured[name])
            if rows < max_rows:
                captured[name].append(_real_tokens(args[0], current["keep"]))
        return hook

    handles = [linears[n].register_forward_hook(keep(n)) for n in captured]
    try:
        _run_layer(layer, inputs, current)
    finally:
        for h in handles:
            h.remove()
    # Scaling is exact before rounding, and a per-row factor commutes with row-wise groups, so every group's
    # search can use the inputs captured from the unscaled layer.
    for prev, names in groups:
        x = torch.cat(captured[names[0]])[:max_rows]  # [rows, in]
        weight = torch.cat([linears[n].weight.data.float() for n in names])  # [sum of outs, in]
        reference = x @ weight.T
        magnitude = x.abs().mean(dim=0)
        best, best_error = None, float("inf")
        for step in range(grid):
            s = magnitude.pow(step / grid).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            scaled, _ = round_to_nearest(weight * s, spec)
            error = ((x @ (scaled / s).T - reference) ** 2).mean().item()
            if error < best_error:
                best, best_error = s, error
        op = modules[prev]
        if isinstance(op, torch.nn.Linear):
            op.weight.data /= best.view(-1, 1).to(op.weight.dtype)
            if op.bias is not None:
                op.bias.data /= best.to(op.bias.dtype)
        else:
            op.weight.data /= best.to(op.weight.dtype)
        for n in names:
            linears[n].weight.data *= best.to(linears[n].weight.dtype)
    scales = {}
    for name, module in linears.items():
        q, scale = round_to_nearest(module.weight.data.float(), spec)
        module.weight.data = q.to(module.weight.dtype)
        scales[name] = scale
    return scales


def quantize_model(model: Any, batches: list[tuple[Any, Any]], spec: QuantSpec, method: str) -> dict[str, Any]:
    """Quantize every decoder linear in place (weights become their dequantized values); returns scales by name.
    `batches`: (ids, mask) from `batch_samples` (--quant_batch_size samples per forward)."""
    import torch
    from tqdm import tqdm

    inputs = capture_first_layer_inputs(model, batches)
    if not inputs:
        raise ConfigError(f"--quant_method {method}: no calibration tokens (check --dataset and --max_length)")
    names = {id(m): n for n, m in model.named_modules()}
    scales: dict[str, Any] = {}
    for layer in tqdm(decoder_layers(model), desc=f"{method} int{spec.bits}"):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        found = _gptq_layer(layer, linears, inputs, spec) if method == "gptq" else \
            _awq_layer(layer, linears, inputs, spec)
        prefix = names[id(layer)]
        scales.update({f"{prefix}.{n}": s for n, s in found.items()})
        with torch.no_grad():  # the next layer sees what this quantized layer really outputs
            inputs = [(*_with_hidden(a, k, _layer_output(layer, a, k)), keep) for a, k, keep in inputs]
    return scales
