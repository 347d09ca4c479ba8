"""From `RlhfArguments` to a trained checkpoint: the method registry's trainer, in the layout of `swift sft`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from swift.train.arguments import RlhfArguments
from swift.train.recipe import TrainResult, add_callbacks, check_args, finish, start_run
from swift.train.rlhf.registry import get_method

if TYPE_CHECKING:
    from swift.train.recipe import Run
    from swift.train.rlhf.registry import RlhfMethod


def rlhf_problems(args: RlhfArguments) -> list[str]:
    """Flag problems of the chosen method, before anything loads (the common training ones come from check_args)."""
    from swift.core import ConfigError

    rlhf = args.rlhf
    try:
        method = get_method(rlhf.rlhf_type)
    except ConfigError as e:
        return [str(e)]
    if method.not_built:
        return [f"--rlhf_type {method.name}: not built yet ({method.not_built})"]
    problems = []
    if (args.train.cached_dataset or args.train.cached_val_dataset) and method.cached_mode is None:
        problems.append(f"--cached_dataset: --rlhf_type {method.name} trains on rows it generates from prompts, "
                        "not on encoded answers (ms-swift's cached datasets leave out gkd, ppo and grpo too); "
                        "pass --dataset")
    if args.train.loss_type and not method.loss_types:
        problems.append(f"--loss_type: --rlhf_type {method.name} has no loss variants")
    for loss in args.train.loss_type if method.loss_types else ():
        if loss not in method.loss_types:
            problems.append(f"--loss_type {loss}: not a {method.name} loss (choose from {', '.join(method.loss_types)})")
    if len(args.train.loss_type) > method.max_losses:
        problems.append(f"--loss_type: {method.name} takes {method.max_losses} loss type, got {len(args.train.loss_type)}")
    if args.train.eval_use_evalscope:
        problems.append("--eval_use_evalscope: swift sft's benchmark evaluation; swift rlhf evaluates its method's "
                        "loss (score a checkpoint with swift eval --adapters)")
    if args.train.predict_with_generate:
        problems.append("--predict_with_generate: swift sft's evaluation by generated answers; swift rlhf evaluates "
                        "its method's loss (GRPO logs its rewards)")
    if rlhf.loss_weights and method.name != "dpo":
        problems.append(f"--loss_weights: weights DPO's several --loss_type; --rlhf_type {method.name} has one loss")
    elif rlhf.loss_weights and len(rlhf.loss_weights) != len(args.train.loss_type or ["sigmoid"]):
        problems.append(f"--loss_weights: {len(rlhf.loss_weights)} weights for {len(args.train.loss_type or [1])} "
                        f"--loss_type ({' '.join(args.train.loss_type or ['sigmoid'])})")
    if rlhf.sft_alpha and method.name != "gkd":
        problems.append(f"--sft_alpha: the SFT term of GKD; --rlhf_type {method.name} has none")
    if rlhf.ref_model and not method.uses_ref_model:
        problems.append(f"--ref_model: --rlhf_type {method.name} uses no reference model")
    if rlhf.max_completion_length < 1:
        problems.append(f"--max_completion_length {rlhf.max_completion_length}: must be at least 1")
    return problems + (method.check(args) if method.check else [])


def check_media(method: RlhfMethod, run: Run) -> None:
    """Rows with images, videos or audio only for the methods that take them (their layouts refuse them row by row
    too, for media given as message parts)."""
    from swift.core import ConfigError
    from swift.train.rlhf.layouts import has_media
    from swift.train.rlhf.registry import METHODS

    if method.media or not run.template.is_multimodal or not has_media(run.train_rows):
        return
    takes = ", ".join(name for name, m in METHODS.items() if m.media)
    raise ConfigError(f"--rlhf_type {method.name}: the rows have images, videos or audio, and its trl trainer takes "
                      f"text only; rows with media train with --rlhf_type {takes}")


def check_rlhf_args(args: RlhfArguments) -> None:
    from swift.core import load_reward_plugins

    load_reward_plugins(args.train.external_plugins)  # (the CLI ran them already; the Python API may not have)
    check_args(args, problems=rlhf_problems(args))


def run_rlhf(args: RlhfArguments) -> TrainResult:
    check_rlhf_args(args)
    method = get_method(args.rlhf.rlhf_type)
    run = start_run(args, f"rlhf {method.name}", require_answer=method.answers, num_labels=method.num_labels)
    check_media(method, run)
    trainer, n_rows = method.build(run)
    add_callbacks(trainer, run)
    return finish(trainer, run, n_rows)
