"""trl's trainers with our behaviours (atomic checkpoints, args.json, token counts, LoRA+) and our tokenization.

Every trainer takes datasets that `swift.train.rlhf.layouts` already tokenized with our template; `compat.pretokenized`
stops trl from tokenizing them a second time with its own rendering of the chat template. DPO and KTO rows with media
need no trainer change (`layouts.MediaCollator` adds them to the batch, and trl's forwards pass every batch key to
the model); GRPO's do (`grpo_trainer_class`).
"""

from __future__ import annotations

import functools
from typing import Any

from swift.train.compat import pretokenized
from swift.train.trainer import SwiftTrainerMixin, count_tokens


def swift_trainer(base: type) -> type:
    """`base` (a trl trainer class) with SwiftTrainerMixin, taking our pre-tokenized rows."""
    return type(f"Swift{base.__name__}", (SwiftTrainerMixin, pretokenized(base)), {})


def grpo_trainer_class() -> type:
    import torch
    from trl import GRPOTrainer

    from swift.train.rlhf import layouts

    class SwiftGRPOTrainer(SwiftTrainerMixin, pretokenized(GRPOTrainer)):
        """GRPO whose prompts are rendered by our template, whose tokens are counted after generation (the raw
        batch is a list of prompt rows), and whose prompts may carry images, videos or audio.

        Media, the one place trl's GRPOTrainer is patched for them (trl would render and process an `images` column
        with its own processor call, and its log-prob forward passes a fixed set of image keys): the batch's media
        references (`prompt_images`... columns) go with the prompts to our rollout, which encodes each prompt with
        them and returns its processor outputs; every log-prob forward then gets its rows' outputs, batched by the
        template (`layouts.media_inputs`: per-token keys such as `mm_token_type_ids` over the left-padded prompt,
        0 over the completion). The overridden internals: `_generate_and_score_completions` (the rollout, then the
        old and reference log-probs of the whole batch, in prompt order; its output keeps the media as a `media`
        list, which trl shuffles and splits with the rows), `_compute_loss` (the policy's log-probs of a
        micro-batch) and `_get_per_token_logps_and_entropies` (the forward they all call).
        """

        def __init__(self, *args: Any, template: Any = None, rollout_func: Any = None, **kwargs: Any) -> None:
            self.swift_template = template
            self.swift_rollout = rollout_func
            self._media_refs: list[dict] | None = None  # the media columns of the prompts being rolled out
            self._media: list[dict] | None = None  # the prompt media of the rows whose log-probs are computed
            super().__init__(*args, rollout_func=None if rollout_func is None else self._roll_out, **kwargs)

        def _roll_out(self, prompts: list, trainer: Any) -> dict[str, Any]:
            refs = self._media_refs or [{}] * len(prompts)
            out = self.swift_rollout.rollout([{"messages": p, **r} for p, r in zip(prompts, refs, strict=True)],
                                             trainer)
            self._media = out.pop("media", None)
            return out

        def _generate_and_score_completions(self, inputs):
            self._media_refs = [layouts.media_refs(row) for row in inputs]
            self._media = None
            try:
                output = super()._generate_and_score_completions(inputs)
                if self._media is not None:
                    output["media"] = self._media
                return output
            finally:
                self._media_refs = self._media = None

        def _compute_loss(self, model, inputs):
            self._media = inputs.get("media")
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._media = None

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, **kwargs):
            media = self._media
            if media is None:
                return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                                  batch_size, **kwargs)
            if len(media) != input_ids.shape[0]:
                raise RuntimeError(f"GRPO batch of {input_ids.shape[0]} rows with media for {len(media)}")
            width, size = input_ids.shape[1], batch_size or input_ids.shape[0]
            parts = []
            for start in range(0, input_ids.shape[0], size):
                rows = slice(start, start + size)
                extra = layouts.media_inputs(self.swift_template, media[rows], width,
                                             prompt_width=width - logits_to_keep)
                extra = {k: v.to(input_ids.device) for k, v in extra.items()}
                parts.append(super()._get_per_token_logps_and_entropies(
                    functools.partial(model, **extra), input_ids[rows], attention_mask[rows], logits_to_keep,
                    **kwargs))
            logps, entropies, aux = zip(*parts, strict=True)
            return (torch.cat(logps), None if entropies[0] is None else torch.cat(entropies),
                    None if aux[0] is None else torch.stack(aux).mean())

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.tokens_seen += count_tokens(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SwiftGRPOTrainer
