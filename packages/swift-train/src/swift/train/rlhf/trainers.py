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

    from swift.core import group_advantages, sequence_kl, total_rewards, zero_std_groups
    from swift.train.rlhf import grpo, layouts

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

        def __init__(self, *args: Any, template: Any = None, rollout_func: Any = None,
                     variant: grpo.GrpoVariant | None = None, **kwargs: Any) -> None:
            self.swift_template = template
            self.swift_rollout = rollout_func
            self.swift_variant = variant or grpo.GrpoVariant()
            self._rows: list[dict] | None = None  # the dataset rows of the prompts being rolled out
            self._media: list[dict] | None = None  # the prompt media of the rows whose log-probs are computed
            self._scored: tuple | None = None  # the last _calculate_rewards call: (prompts, completions, rewards)
            super().__init__(*args, rollout_func=None if rollout_func is None else self._roll_out, **kwargs)

        def _roll_out(self, prompts: list, trainer: Any) -> dict[str, Any]:
            """Our rollout of trl's prompts, each with its row's media and tools (what the template encodes) and
            the row's other columns (what a multi-turn scheduler reads)."""
            rows = self._rows or [{}] * len(prompts)
            out = self.swift_rollout.rollout([{"messages": p, **layouts.media_refs(r), **layouts.row_tools(r)}
                                              for p, r in zip(prompts, rows, strict=True)], trainer,
                                             data=[layouts.data_columns(r) for r in rows])
            self._media = out.pop("media", None)
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._scored = (prompts, completions, rewards)
            return rewards

        def _generate_and_score_completions(self, inputs):
            """trl's rollout and scoring, then the GRPO family's steps (`rlhf/grpo.py`): dynamic sampling, KL in the
            reward, the advantage estimator, the completions log."""
            variant, g = self.swift_variant, self.num_generations
            training = self.model.training
            if not training:
                g = self.num_generations_eval or g
            rounds = [self._scored_rollout(inputs)]
            if variant.dynamic_sample and training:
                wanted = len(inputs) // g
                invalid = [self._zero_std(rounds[0], g)]
                for round_ in range(1, variant.max_resample_times + 1):
                    short = wanted - int((~torch.cat(invalid)).sum())
                    if int(self.accelerator.gather(torch.tensor([max(short, 0)], device=self.accelerator.device))
                           .max()) == 0:
                        break  # every process has its groups (all take the same number of rounds: collectives)
                    rounds.append(self._scored_rollout(self._resample(len(inputs), round_)))
                    invalid.append(self._zero_std(rounds[-1], g))
                self._metrics["train"]["dynamic_sample/rounds"].append(float(len(rounds)))
                self._metrics["train"]["dynamic_sample/zero_std_groups"].append(float(invalid[0].float().mean()))
                pad = self.processing_class.pad_token_id if hasattr(self.processing_class, "pad_token_id") else 0
                output = grpo.join_rollouts(rounds, grpo.pick_groups(invalid, wanted), g, pad or 0)
                mask = output["completion_mask"] * output.get("tool_mask", 1)
                output["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            else:
                output = rounds[0]
            rewards_per_func, kl = output.pop("swift_rewards"), output.pop("swift_kl", None)
            prompts, completions = output.pop("swift_prompts"), output.pop("swift_completions")
            every = self.accelerator.gather(rewards_per_func)
            every_kl = None if kl is None else self.accelerator.gather(kl)
            adv = group_advantages(every, self.reward_weights.to(every.device), g, estimator=variant.estimator,
                                  scale=variant.scale, kl=every_kl, beta=self.beta if variant.kl_in_reward else 0.0)
            rank, n = self.accelerator.process_index, len(completions)
            output["advantages"] = adv[rank * n:(rank + 1) * n]
            if every_kl is not None:
                self._metrics["train" if training else "eval"]["kl_in_reward"].append(float(every_kl.mean()))
            if variant.completions_path is not None and training:
                self._log_completions(prompts, completions, rewards_per_func, output["advantages"])
            return output

        def _scored_rollout(self, inputs):
            """One rollout of `inputs` through trl, with each completion's rewards (and KL, --kl_in_reward) kept."""
            self._rows, self._media = inputs, None
            try:
                output = super()._generate_and_score_completions(inputs)
                prompts, completions, every = self._scored
                rank, n = self.accelerator.process_index, len(completions)
                output |= {"swift_rewards": every[rank * n:(rank + 1) * n], "swift_prompts": list(prompts),
                           "swift_completions": list(completions)}
                if self.swift_variant.kl_in_reward and "ref_per_token_logps" in output:
                    output["swift_kl"] = sequence_kl(self._sampling_logps(output), output["ref_per_token_logps"],
                                                          output["completion_mask"].float())
                if self._media is not None:
                    output["media"] = self._media
                return output
            finally:
                self._rows = self._media = self._scored = None

        def _sampling_logps(self, output):
            """The log-probs of the sampled tokens under the policy that sampled them (trl keeps them only when the
            batch is trained off-policy)."""
            if output.get("old_per_token_logps") is not None:
                return output["old_per_token_logps"]
            from trl.models.utils import disable_gradient_checkpointing

            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, output["completion_ids"].shape[1],
                    batch_size=self.args.per_device_train_batch_size)
            return logps

        def _zero_std(self, output, g):
            return zero_std_groups(total_rewards(output["swift_rewards"],
                                                           self.reward_weights.to(output["swift_rewards"].device)), g)

        def _resample(self, count: int, round_: int) -> list[dict]:
            """`count // num_generations` new prompts from the training rows, each repeated num_generations times
            (trl's sampler lays groups out the same way), drawn by the seed, step, round and process."""
            import random

            g = self.num_generations
            rng = random.Random(f"{self.swift_variant.seed}-{self.state.global_step}-{round_}-"
                                f"{self.accelerator.process_index}")
            picks = rng.sample(range(len(self.train_dataset)), min(count // g, len(self.train_dataset)))
            picks += [rng.randrange(len(self.train_dataset)) for _ in range(count // g - len(picks))]
            return [dict(self.train_dataset[i]) for i in picks for _ in range(g)]

        def _log_completions(self, prompts, completions, rewards_per_func, advantages):
            import json

            from accelerate.utils import gather_object

            from swift.core import completion_records

            records = gather_object(completion_records(self.state.global_step + 1, prompts, completions,
                                                       rewards_per_func.cpu(), list(self.reward_func_names),
                                                       advantages.cpu()))
            if self.accelerator.is_main_process:
                path = self.swift_variant.completions_path
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)

        def _compute_loss(self, model, inputs):
            self._media = inputs.get("media")
            beta = self.beta
            if self.swift_variant.kl_in_reward:
                self.beta = 0.0  # the KL is in the rewards: no KL loss term
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._media, self.beta = None, beta

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


def gkd_trainer_class(sft_alpha: float) -> type:
    """trl's GKDTrainer with ms-swift's `--sft_alpha`: the student's cross-entropy on the labels, times sft_alpha,
    added to the distillation loss of every batch the student did not generate itself (dataset answers, or the
    teacher's with --seq_kd), as ms-swift does."""
    import torch.nn.functional as F
    from trl.experimental.gkd import GKDTrainer

    base = swift_trainer(GKDTrainer)
    if not sft_alpha:
        return base

    class SwiftGKDTrainer(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self._swift_source = "dataset"
            return super().training_step(model, inputs, num_items_in_batch)

        def generate_on_policy_outputs(self, model, inputs, generation_config):
            teacher = next(self.teacher_model.parameters())
            self._swift_source = "teacher" if any(p is teacher for p in model.parameters()) else "student"
            return GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            if getattr(self, "_swift_source", "dataset") != "student":
                logits, labels = outputs.logits[:, :-1, :], inputs["labels"][:, 1:]
                sft = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                      ignore_index=-100)
                loss = loss + sft_alpha * sft
            return (loss, outputs) if return_outputs else loss

    return SwiftGKDTrainer
