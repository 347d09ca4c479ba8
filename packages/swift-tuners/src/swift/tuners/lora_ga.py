"""`--init_weights lora-ga` (Wang et al. 2024, LoRA-GA): A and B start as the top singular vectors of the weights'
gradient on a few training batches, so the first steps move like full fine-tuning.

peft computes it (`preprocess_loraga`, then `get_peft_model` with `init_lora_weights="lora_ga"`); the base weights
become W - s·B0·A0 so that the initial model is unchanged. An adapter trained on that residual base is not the
change to the *original* base, so each checkpoint also gets `converted/default/`, the rank-2r adapter
[B, -B0]·[A; A0] = BA - B0A0 that goes on the original base (ms-swift's layout; peft's
`path_initial_model_for_weight_conversion`). `swift infer`, `deploy` and `export` pick it up
(`swift.core.adapter_for_base`). The checkpoint's own adapter records `init_lora_weights: true`, so that resuming
(which repeats the same seeded estimate) loads it onto the same residual base.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from swift.core import ConfigError

logger = logging.getLogger(__name__)

INITIAL_DIR = "lora_ga_initial"  # <run>/lora_ga_initial/initial_lora: the adapter as initialised (A0, B0)
INITIAL_NAME = "initial_lora"  # peft loads it under this adapter name while converting: not "default"
# Collated keys that are not model inputs (the trainer consumes them).
_NOT_INPUTS = ("loss_scale",)


def estimate_gradients(model: Any, config: Any, args: Any,
                       sample_batches: Callable[[int, int, int], Iterable[dict]] | None) -> None:
    """peft's gradient estimate for LoRA-GA over --lora_ga_iters batches of --lora_ga_batch_size training rows
    (each cut to --lora_ga_max_length tokens)."""
    from peft import preprocess_loraga

    if sample_batches is None:
        raise ConfigError("--init_weights lora-ga estimates gradients on training rows; this command passes none "
                          "to the tuner")

    def train_step() -> None:
        for batch in sample_batches(args.lora_ga_batch_size, args.lora_ga_max_length, args.lora_ga_iters):
            inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()
                      if k not in _NOT_INPUTS}
            model(**inputs).loss.backward()

    # peft expands all-linear inside get_peft_model, after this estimate: expand it first (the same helper, so the
    # layers estimated are the layers adapted; pinned by tests/tuners/test_lora_ga.py)
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    config.target_modules = _maybe_include_all_linear_layers(config, model).target_modules
    preprocess_loraga(model, config, train_step)
    logger.info("--init_weights lora-ga: gradients of %d batch(es) of %d rows (at most %d tokens each)",
                args.lora_ga_iters, args.lora_ga_batch_size, args.lora_ga_max_length)


def converter(peft_model: Any) -> Any:
    """After `get_peft_model`: keep the initial adapter, record it as a plain LoRA init for later loads, and return
    the callback that writes `converted/default` beside each checkpoint."""
    from peft import get_peft_model_state_dict

    config = peft_model.peft_config["default"]
    config.init_lora_weights = True  # the layers exist: a load (resume) must not estimate again on its own
    initial = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    return _callback_class()(initial, copy.deepcopy(config))


def _callback_class() -> type:
    from transformers import TrainerCallback

    class ConvertedAdapter(TrainerCallback):
        """Writes `<checkpoint>/converted/default`: the trained adapter as a change to the original base."""

        def __init__(self, initial: dict, config: Any) -> None:
            self.initial, self.config = initial, config

        def on_save(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero or model is None:
                return
            from swift.core import CONVERTED_ADAPTER

            run = Path(args.output_dir)
            initial = run / INITIAL_DIR / INITIAL_NAME
            if not (initial / "adapter_model.safetensors").is_file():
                from safetensors.torch import save_file

                initial.mkdir(parents=True, exist_ok=True)
                self.config.save_pretrained(str(initial))
                save_file(self.initial, str(initial / "adapter_model.safetensors"))
            while hasattr(model, "module"):
                model = model.module
            out = run / f"checkpoint-{state.global_step}" / CONVERTED_ADAPTER
            model.save_pretrained(str(out), path_initial_model_for_weight_conversion=str(initial))
            logger.info("LoRA-GA: the adapter for the original base is %s", out)

    return ConvertedAdapter
