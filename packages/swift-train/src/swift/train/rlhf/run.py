"""From `RlhfArguments` to a trained checkpoint: one trl trainer per `--rlhf_type`, all in the layout of `swift sft`.

| rlhf_type | trl trainer | rows |
|---|---|---|
| dpo | DPOTrainer (`--loss_type` sigmoid, ipo, hinge, robust...; `--rpo_alpha` adds the NLL term) | preference |
| cpo, simpo | CPOTrainer (simpo: loss_type simpo, `--simpo_gamma`, `--cpo_alpha`) | preference |
| orpo | ORPOTrainer | preference |
| kto | KTOTrainer (`--desirable_weight`, `--undesirable_weight`) | messages + label |
| rm | RewardTrainer on a sequence-classification head | preference |
| gkd | GKDTrainer with `--teacher_model` | messages |
| grpo | GRPOTrainer, rollouts on swift-infer's PyTorch engine, `--reward_funcs` | prompts (+ columns) |

With LoRA the reference model is the base with the adapter switched off (trl does that): no second copy.
"""

from __future__ import annotations

import logging
from typing import Any

from swift.core.errors import ConfigError
from swift.train.arguments import RlhfArguments
from swift.train.rlhf import data as rows
from swift.train.sft import (
    TrainResult,
    add_callbacks,
    check_args,
    check_not_empty,
    encode_rows,
    finish,
    prepare_tuner,
    start_run,
    total_steps,
    training_arguments,
)

logger = logging.getLogger(__name__)

PREFERENCE = ("dpo", "cpo", "simpo", "orpo", "rm")
DEFAULT_BETA = {"dpo": 0.1, "cpo": 0.1, "simpo": 2.0, "orpo": 0.1, "kto": 0.1, "gkd": 0.5, "grpo": 0.04}
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
CPO_LOSSES = ("sigmoid", "hinge", "ipo", "simpo", "alphapo")
GRPO_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


def check_rlhf_args(args: RlhfArguments) -> None:
    """Method-specific flag problems, all at once, before anything loads."""
    r = args.rlhf
    problems = []
    if r.rlhf_type == "ppo":
        problems.append("--rlhf_type ppo: trl 1.x, which `swift rlhf` runs on, no longer ships a PPO trainer; "
                        "GRPO (--rlhf_type grpo) trains from reward functions or a --reward_model without a value "
                        "model and is what trl recommends instead")
    losses = {"dpo": DPO_LOSSES, "cpo": CPO_LOSSES, "simpo": ("simpo",), "grpo": GRPO_LOSSES}.get(r.rlhf_type)
    if r.loss_type and losses is None:
        problems.append(f"--loss_type: --rlhf_type {r.rlhf_type} has no loss variants")
    for loss in r.loss_type if losses else ():
        if loss not in losses:
            problems.append(f"--loss_type {loss}: not a {r.rlhf_type} loss (choose from {', '.join(losses)})")
    if r.rlhf_type in ("cpo", "simpo", "grpo") and len(r.loss_type) > 1:
        problems.append(f"--loss_type: {r.rlhf_type} takes one loss type, got {len(r.loss_type)}")
    if r.ref_model and r.rlhf_type not in ("dpo", "kto"):
        problems.append(f"--ref_model: --rlhf_type {r.rlhf_type} uses no reference model (dpo and kto do)")
    if r.rlhf_type == "gkd" and not r.teacher_model:
        problems.append("--rlhf_type gkd needs --teacher_model (a model with the same vocabulary)")
    if r.rlhf_type == "grpo":
        if not r.reward_funcs and not r.reward_model:
            problems.append("--rlhf_type grpo needs --reward_funcs (accuracy, format, cosine, repetition, "
                            "soft_overlong or your own from --external_plugins) or --reward_model")
        n_rewards = len(r.reward_funcs) + len(r.reward_model)
        if r.reward_weights and len(r.reward_weights) != n_rewards:
            problems.append(f"--reward_weights: {len(r.reward_weights)} weights for {n_rewards} reward functions/models")
        if r.num_generations < 2:
            problems.append(f"--num_generations {r.num_generations}: GRPO compares at least 2 completions per prompt")
        batch = args.train.per_device_train_batch_size * args.train.gradient_accumulation_steps
        if batch % r.num_generations:
            problems.append(f"--per_device_train_batch_size x --gradient_accumulation_steps ({batch}) must be a "
                            f"multiple of --num_generations ({r.num_generations}): each batch holds whole groups")
        if r.use_vllm:
            problems.append("--use_vllm: vLLM rollouts need a GPU machine with `swift-infer[vllm]`; they are not "
                            "wired up yet (the PyTorch engine rollout is the default)")
    if r.rlhf_type == "kto" and args.train.per_device_train_batch_size < 2:
        problems.append("--per_device_train_batch_size: KTO estimates its KL term within a batch; give at least 2")
    if r.max_completion_length < 1:
        problems.append(f"--max_completion_length {r.max_completion_length}: must be at least 1")
    if problems:
        raise ConfigError("\n".join(problems))


def run_rlhf(args: RlhfArguments) -> TrainResult:
    from swift.train.rlhf.rewards import load_plugins, resolve_rewards

    r = args.rlhf
    check_args(args)
    check_rlhf_args(args)
    load_plugins(r.external_plugins)
    kind = r.rlhf_type
    if kind == "grpo":  # unknown reward names fail before any weights load
        resolve_rewards(r.reward_funcs, max_completion_length=r.max_completion_length)
    run = start_run(args, f"rlhf {kind}", require_answer=kind != "grpo", num_labels=1 if kind == "rm" else None)
    builder = {"dpo": _dpo, "cpo": _paired, "simpo": _paired, "orpo": _paired, "kto": _kto, "rm": _reward,
               "gkd": _gkd, "grpo": _grpo}[kind]
    trainer, n_rows = builder(run)
    add_callbacks(trainer, run, run.prepared)
    return finish(trainer, run, n_rows)


def _encode(run: Any, encode: Any) -> tuple[Any, Any]:
    train = encode_rows(run, run.train_rows, encode)
    val = encode_rows(run, run.val_rows, encode)
    if not run.args.data.streaming:
        train = train.filter(rows.has_answer)
        val = None if val is None else val.filter(rows.has_answer)
    check_not_empty(run, train)
    return train, val


def _beta(run: Any) -> float:
    r = run.args.rlhf
    return r.beta if r.beta is not None else DEFAULT_BETA[r.rlhf_type]


def _setup(run: Any, n_rows: int | None, config_cls: Any, has_eval: bool, **extra: Any) -> Any:
    steps = total_steps(run.args, n_rows)
    run.prepared = prepare_tuner(run, steps)
    return training_arguments(run, steps, config_cls=config_cls, has_eval=has_eval, **extra)


def _train_on(run: Any, row_fn: Any, config_cls: Any, trainer_cls: Any, config: dict[str, Any],
              **trainer_kwargs: Any) -> tuple[Any, int]:
    """The path every offline method shares: encode rows with `row_fn`, apply the tuner, build trl's config (our
    training flags + `config`) and the trainer (with `trainer_kwargs`: ref/teacher model, collator)."""
    train, val = _encode(run, rows.encoder(row_fn, run.template))
    args = _setup(run, len(train), config_cls, val is not None, dataset_num_proc=None, **config)
    trainer = trainer_cls(model=run.model, args=args, train_dataset=train, eval_dataset=val,
                          processing_class=run.tokenizer, swift_args=run.flat, **trainer_kwargs)
    return trainer, len(train)


def _load_frozen(run: Any, model_id: str) -> Any:
    """A reference or teacher model, with the policy's dtype and hub flags, frozen."""
    from swift.core import get_model_tokenizer

    margs = run.args.model
    model, _ = get_model_tokenizer(model_id, margs.torch_dtype, use_hf=margs.use_hf, token=margs.hub_token,
                                   trust_remote_code=margs.trust_remote_code)
    return model.eval().requires_grad_(False)


def _ref_model(run: Any) -> Any:
    """--ref_model, loaded frozen; None lets trl use the base without the adapter (LoRA) or a frozen copy (full)."""
    return _load_frozen(run, run.args.rlhf.ref_model) if run.args.rlhf.ref_model else None


def _dpo(run: Any) -> tuple[Any, int]:
    from trl import DPOConfig

    from swift.train.rlhf.trainers import dpo_trainer_class

    r = run.args.rlhf
    losses = list(r.loss_type) or ["sigmoid"]
    weights = None
    if r.rpo_alpha is not None:  # RPO: the DPO loss plus rpo_alpha x the NLL of the chosen answer
        weights = [1.0] * len(losses) + [r.rpo_alpha]
        losses.append("sft")
    return _train_on(run, rows.preference_row, DPOConfig, dpo_trainer_class(),
                     dict(beta=_beta(run), loss_type=losses, loss_weights=weights, max_length=run.max_length),
                     ref_model=_ref_model(run))


def _paired(run: Any) -> tuple[Any, int]:
    from swift.train.rlhf.trainers import paired_trainer_class

    r = run.args.rlhf
    config = dict(max_length=run.max_length, max_completion_length=r.max_completion_length, beta=_beta(run))
    if r.rlhf_type == "orpo":
        from trl.experimental.orpo import ORPOConfig as config_cls
    else:
        from trl.experimental.cpo import CPOConfig as config_cls

        loss = "simpo" if r.rlhf_type == "simpo" else (r.loss_type[0] if r.loss_type else "sigmoid")
        config |= dict(loss_type=loss, cpo_alpha=r.cpo_alpha, simpo_gamma=r.simpo_gamma)
    return _train_on(run, rows.paired_labels_row, config_cls, paired_trainer_class(r.rlhf_type), config)


def _kto(run: Any) -> tuple[Any, int]:
    from trl import KTOConfig

    from swift.train.rlhf.trainers import kto_trainer_class

    r = run.args.rlhf
    return _train_on(run, rows.kto_row, KTOConfig, kto_trainer_class(),
                     dict(beta=_beta(run), max_length=run.max_length, desirable_weight=r.desirable_weight,
                          undesirable_weight=r.undesirable_weight),
                     ref_model=_ref_model(run))


def _reward(run: Any) -> tuple[Any, int]:
    from trl import RewardConfig

    from swift.train.rlhf.trainers import reward_trainer_class

    return _train_on(run, rows.reward_row, RewardConfig, reward_trainer_class(), dict(max_length=run.max_length))


def _gkd(run: Any) -> tuple[Any, int]:
    from trl.experimental.gkd import GKDConfig

    from swift.train.rlhf.trainers import gkd_trainer_class

    r = run.args.rlhf
    return _train_on(run, rows.distill_row, GKDConfig, gkd_trainer_class(),
                     dict(beta=_beta(run), lmbda=r.lmbda, temperature=r.temperature,
                          max_new_tokens=r.max_completion_length, seq_kd=r.seq_kd, max_length=run.max_length),
                     teacher_model=_load_frozen(run, r.teacher_model),
                     data_collator=rows.DistillCollator(run.template.pad_id))


def _grpo(run: Any) -> tuple[Any, int]:
    from trl import GRPOConfig

    from swift.core import get_model_tokenizer
    from swift.train.rlhf.rewards import resolve_rewards
    from swift.train.rlhf.rollout import PtRollout, pt_engine_available
    from swift.train.rlhf.trainers import grpo_trainer_class

    r, targs = run.args.rlhf, run.args.train
    train = rows.prompt_rows(run.train_rows)
    val = None if run.val_rows is None else rows.prompt_rows(run.val_rows)
    funcs: list[Any] = resolve_rewards(r.reward_funcs, max_completion_length=r.max_completion_length)
    reward_tokenizers: list[Any] = [None] * len(funcs)
    for path in r.reward_model:
        model, tokenizer = get_model_tokenizer(path, run.args.model.torch_dtype, num_labels=1,
                                               use_hf=run.args.model.use_hf, token=run.args.model.hub_token)
        funcs.append(model.eval())
        reward_tokenizers.append(tokenizer)
    n_rows = None if run.args.data.streaming else len(train)
    rows_per_step = r.num_generations  # each prompt becomes num_generations completions of the batch
    steps = total_steps(run.args, n_rows, rows_per_step)
    run.prepared = prepare_tuner(run, steps)
    config = training_arguments(
        run, steps, config_cls=GRPOConfig, has_eval=val is not None, beta=_beta(run),
        num_generations=r.num_generations, max_completion_length=r.max_completion_length,
        temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, repetition_penalty=r.repetition_penalty,
        epsilon=r.epsilon, num_iterations=r.num_iterations, reward_weights=r.reward_weights or None,
        loss_type=r.loss_type[0] if r.loss_type else "grpo", scale_rewards=r.scale_rewards,
        log_completions=False, shuffle_dataset=run.args.data.dataset_shuffle)
    rollout = None
    if pt_engine_available():
        rollout = PtRollout(run.template, max_tokens=r.max_completion_length, temperature=r.temperature,
                            top_p=r.top_p, top_k=r.top_k, repetition_penalty=r.repetition_penalty, seed=targs.seed,
                            max_batch_size=max(targs.per_device_train_batch_size, r.num_generations))
    else:
        logger.warning("swift-infer is not installed: GRPO rollouts use transformers' generate "
                       "(pip install swift-infer for continuous batching)")
    trainer = grpo_trainer_class()(
        model=run.model, reward_funcs=funcs, args=config, train_dataset=train, eval_dataset=val,
        processing_class=run.tokenizer, reward_processing_classes=reward_tokenizers if r.reward_model else None,
        rollout_func=rollout, template=run.template, swift_args=run.flat)
    return trainer, n_rows or 0
