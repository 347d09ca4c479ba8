"""`SwiftTrainer`: transformers.Trainer with atomic checkpoints (args.json in each), token counting, the tuner's
per-parameter learning rates (LoRA+), and a causal-LM loss that computes logits only where a label is.

`SwiftTrainerMixin` carries those behaviours onto any Trainer subclass (trl's DPO/KTO/GRPO... trainers in rlhf). The
overrides of upstream internals it needs live in `swift.train.compat`; here only documented override points are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Trainer

from swift.train.compat import AtomicCheckpoints, FsdpOnCpu, InHookGradNorm


class SwiftTrainerMixin(InHookGradNorm, AtomicCheckpoints, FsdpOnCpu):
    """Checkpoints, token counts and learning-rate factors for any transformers / trl trainer."""

    def __init__(self, *args: Any, lr_ratios: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        self.tokens_seen = 0
        self.lr_ratios = dict(lr_ratios or {})  # parameter-name substring -> factor on the learning rate (LoRA+)
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens_seen += count_tokens(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def create_optimizer(self, model=None):
        """transformers' optimizer (or `--use_galore`'s, swift.train.galore, or `--optimizer NAME`'s, swift.train.
        plugins), with the parameters of each `lr_ratios` entry in groups of their own at lr x factor (the scheduler
        then scales every group alike)."""
        flags = getattr(self, "swift_args", None) or {}
        if flags.get("use_galore") and self.optimizer is None:
            from swift.train.galore import galore_optimizer

            self.optimizer = galore_optimizer(self.model if model is None else model, self.args, flags,
                                              self.accelerator)
        elif flags.get("optimizer") and self.optimizer is None:
            from swift.train.plugins import build_optimizer

            self.optimizer = build_optimizer(flags["optimizer"], self.model if model is None else model, self.args)
        optimizer = super().create_optimizer(model)
        if self.lr_ratios:
            names = {id(p): n for n, p in (self.model if model is None else model).named_parameters()}
            split_by_ratio(optimizer, names, self.lr_ratios)
        return optimizer

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: Any, model: Any = None) -> tuple[Any, dict]:
        """transformers' class and arguments for --optim, with --optim_args applied to every optimizer (transformers
        reads them only for a few, e.g. GaLore's, and drops them silently for AdamW): each entry becomes a keyword
        argument of the class, over transformers' own (eps=... beats --adam_epsilon), and one it does not take is an
        error naming it."""
        from swift.train.optimizers import parse_optim_args, typed_optim_args

        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        if args.optim_args and isinstance(cls, type):
            groups = [g for g in kwargs.get("params", []) if isinstance(g, dict)]
            taken = {k for k in parse_optim_args(args.optim_args) if any(k in g for g in groups)}  # GaLore's rank...
            name = getattr(args.optim, "value", args.optim)  # (an OptimizerNames enum)
            kwargs = {**kwargs, **typed_optim_args(cls, args.optim_args, taken=taken, flag=f"--optim {name}")}
        return cls, kwargs


def _keeps_logits(model: Any) -> bool:
    import inspect

    while hasattr(model, "module"):  # DDP / DeepSpeed wrappers
        model = model.module
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def split_by_ratio(optimizer: Any, names: Mapping[int, str], ratios: Mapping[str, float]) -> None:
    """Move every parameter whose name contains a key of `ratios` into a copy of its group at lr x ratio."""
    for group in list(optimizer.param_groups):
        for key, ratio in ratios.items():
            moved = [p for p in group["params"] if key in names.get(id(p), "")]
            if not moved:
                continue
            group["params"] = [p for p in group["params"] if all(p is not m for m in moved)]
            optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved,
                                       "lr": group["lr"] * ratio})


def count_tokens(inputs: Any) -> int:
    """Non-padding tokens of a batch, whichever layout it has: `attention_mask` (sft, DPO, KTO), the full-sequence
    masks of paired layouts (`chosen_attention_mask`...; CPO/ORPO), `prompt_mask` + `completion_mask` (GRPO)."""
    if not isinstance(inputs, Mapping):  # GRPO's raw prompt rows: counted after generation instead
        return 0
    if (mask := inputs.get("attention_mask")) is not None:
        return int(mask.sum())
    paired = [v for k, v in inputs.items() if k.endswith("_attention_mask") and k != "prompt_attention_mask"]
    if paired:
        return int(sum(int(m.sum()) for m in paired))
    if "completion_mask" in inputs and "prompt_mask" in inputs:
        return int(inputs["prompt_mask"].sum()) + int(inputs["completion_mask"].sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


class SwiftTrainer(SwiftTrainerMixin, Trainer):
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The eval loss, with --predict_with_generate the ROUGE / BLEU of generated answers (swift.train.
        generate_eval) and with --eval_use_evalscope the benchmark scores (swift.train.evalscope) in the same
        metrics: what is logged, what callbacks and best-checkpoint selection see."""
        args = getattr(self, "swift_args", None) or {}
        self._generated = None
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if args.get("predict_with_generate"):
            from swift.train.generate_eval import generated_metrics

            self._generated = generated_metrics(self, dataset, metric_key_prefix, args.get("max_new_tokens") or 64)
        if not args.get("eval_use_evalscope"):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        from swift.train.evalscope import BenchmarksOnly, evalscope_metrics

        scores = evalscope_metrics(self, metric_key_prefix)
        if isinstance(dataset, BenchmarksOnly):  # no validation rows: log and tell the callbacks as transformers does
            self.log(scores)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, scores)
            return scores
        self._generated = {**(self._generated or {}), **scores}
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        if getattr(self, "_generated", None):
            output.metrics.update(self._generated)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Causal-LM loss with logits only where a label is: the output head (vocab-sized matmul and softmax) skips
        prompt and padding positions, which saves compute and the largest activation of small models. With
        --use_liger_kernel the model gets the labels instead: Liger's fused linear cross-entropy never builds the
        logits at all."""
        labels = inputs.get("labels")
        scale = inputs.pop("loss_scale", None)  # per-token weights of a weighting --loss_scale (0 where no label)
        wanted = (getattr(self, "swift_args", None) or {}).get("use_logits_to_keep")
        keeps = wanted is not False and _keeps_logits(model)  # (Qwen2-Audio's forward has no logits_to_keep)
        if (labels is None or return_outputs or labels.dim() != 2 or self.args.use_liger_kernel
                or self.compute_loss_func is not None or (not keeps and scale is None)):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch
        import torch.nn.functional as F

        targets = labels[:, 1:]  # logits at position t predict the token at t + 1
        keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
        rest = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**rest, logits_to_keep=keep) if keeps else model(**rest)
        logits = outputs.logits if keeps else outputs.logits[:, :-1][:, keep]
        picked = targets[:, keep]
        losses = F.cross_entropy(logits.float().flatten(0, 1), picked.flatten(), ignore_index=-100, reduction="none")
        if scale is not None:  # ms-swift's normalisation: the weighted sum over the count of trained tokens
            losses = losses * scale[:, 1:][:, keep].flatten().to(losses.dtype)
        loss = losses.sum()
        aux = getattr(outputs, "aux_loss", None)  # MoE load balancing (--router_aux_loss_coef), added once per step
        aux_coef = (getattr(self, "swift_args", None) or {}).get("router_aux_loss_coef") or 0.0
        extra = aux_coef * aux.to(loss.dtype) if aux is not None and aux_coef else 0.0
        if num_items_in_batch is None:
            self.loss_is_scaled_for_ga = False
            return loss / torch.clamp((picked != -100).sum(), min=1) + extra
        self.loss_is_scaled_for_ga = True  # normalised over the whole accumulated batch already
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss + extra / self.args.gradient_accumulation_steps
