"""DPO's reference model in `megatron rlhf`: where it comes from, how it is built, and its forward-only pass.

The reference's log-probabilities are taken before the policy's pass of each step, by the same mcore schedule run
forward-only over the same micro-batches, so tensor and pipeline parallelism need nothing of their own; the last
stage stores each answer's log-probability in its micro-batch dict (`ref_logps`) for the policy's loss to read.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from swift.core import ConfigError


def reference_step(data_iterator, model):
    """mcore's forward step of the reference pass: the same sequences; the last stage stores each answer's
    log-probability in the micro-batch (`ref_logps`) for the policy's pass to read."""
    batch = next(data_iterator)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)

    def store(per_token):
        import torch

        from swift.megatron.dpo import sequence_logps

        batch["ref_logps"] = sequence_logps(per_token, batch)[0].detach()
        return per_token.sum() * 0, torch.tensor(0, dtype=torch.int), {}

    return output, store


@dataclass
class Reference:
    """The frozen model DPO measures the policy against, run forward-only before each step's policy pass: a
    GPTModel piece, or the policy itself with its LoRA adapter switched off (`adapter_off`)."""

    model: Any
    adapter_off: Any = None  # the policy's GPTModel whose adapters the pass switches off
    forward_backward: Any = None
    step: Any = reference_step  # the forward step (GRPO's stores per-token log-probabilities)

    def __call__(self, micro: list[dict], seq_length: int) -> None:
        import torch

        from swift.megatron.lora import adapters_disabled

        context = adapters_disabled(self.adapter_off) if self.adapter_off is not None else nullcontext()
        with torch.no_grad(), context:
            self.forward_backward(forward_step_func=self.step, data_iterator=iter(micro), model=[self.model],
                                  num_microbatches=len(micro), seq_length=seq_length,
                                  micro_batch_size=micro[0]["tokens"].shape[0], forward_only=True)


def reference_plan(args: Any, source: Any, *, lora: bool) -> dict | None:
    """Where the reference comes from: {"adapter_off": true} (a fresh LoRA adapter: the base is the initial model),
    {"copy": true, ...} (a copy of the policy's freshly loaded weights), {"model": HF id}, {"load": mcore
    checkpoint}; None with --reference_free. Checkpoints record it (`dpo_reference` in swift_mcore.json, without
    "copy"), so that a resumed run keeps the reference it started with."""
    rlhf, m = args.rlhf, args.megatron
    if rlhf.reference_free:
        return None
    if rlhf.ref_model:
        return {"model": rlhf.ref_model}
    if rlhf.ref_load:
        return {"load": rlhf.ref_load}
    meta = source.meta or {}
    if source.checkpoint is not None and not m.finetune and meta.get("dpo_reference"):
        return dict(meta["dpo_reference"])
    if lora and meta.get("train_type") != "lora":
        return {"adapter_off": True}
    # the initial weights: the HF model, or the checkpoint this run starts from (with its adapter)
    start = {"load": str(source.checkpoint)} if source.checkpoint is not None else {"model": source.model_id}
    return {"copy": True, **start}


def build_reference_model(plan: dict, args: Any, gpt: Any, hf_config: Any, shape: Any, parallel: Any, config: Any,
                          *, dtype: Any, lora_spec: Any, seed: int) -> Any:
    """This rank's frozen GPTModel piece for a plan other than adapter_off: a copy of the policy's freshly loaded
    weights ({"copy"}: no second load), or the weights of {"model"} / {"load"} sharded like the policy."""
    import copy
    import dataclasses

    import torch

    from swift.megatron.convert import ModelShape
    from swift.megatron.lora import attach_lora
    from swift.megatron.model import build_gpt
    from swift.megatron.train import load_source, load_weights
    from swift.tuners import TunerArgs

    ref_config = copy.copy(config)  # the policy's config gets its DDP hooks later; the reference runs without them
    if plan.get("copy"):
        ref = build_gpt(hf_config, shape, ref_config, tp=parallel.tp)
        if lora_spec is not None:
            attach_lora(ref, dataclasses.replace(lora_spec, dropout=0.0), dtype)
        ref.to(dtype).load_state_dict(gpt.state_dict())
    else:
        ref_args = copy.copy(args)
        ref_args.model = dataclasses.replace(args.model, model=plan.get("model"))
        ref_args.megatron = dataclasses.replace(args.megatron, load=plan.get("load"), finetune=True)
        source = load_source(ref_args)
        if ModelShape.from_hf(source.hf_config) != shape:
            flag = "--ref_model" if plan.get("model") else "--ref_load"
            raise ConfigError(f"{flag} {plan.get('model') or plan.get('load')}: its architecture differs from the "
                              "policy's; the reference must be the same model family and size")
        train_type = "lora" if (source.meta or {}).get("train_type") == "lora" else "full"
        ref = build_gpt(source.hf_config, shape, ref_config, tp=parallel.tp)
        load_weights(ref, source, shape, parallel, TunerArgs(train_type=train_type, lora_dropout=0.0), seed=seed,
                     dtype=dtype)
        ref.to(dtype)
    if torch.cuda.is_available():
        ref.cuda(torch.cuda.current_device())
    return ref.eval().requires_grad_(False)
