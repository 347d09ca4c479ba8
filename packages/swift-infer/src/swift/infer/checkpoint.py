"""What `swift infer` / `swift deploy` serve: the base model, adapters and template, from flags and checkpoints.

A LoRA checkpoint written by `swift sft` carries args.json (base model, template, system prompt, agent template,
response prefix); flags given on the command line win over it. Every problem is reported at once, naming the flag.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from swift.core import ConfigError
from swift.core.arguments import recorded_data_args
from swift.core.run import adapter_for_base, read_args
from swift.infer.arguments import InferArguments

DEFAULT_ADAPTER = "default"  # the name an unnamed --adapters DIR is loaded under


@dataclass
class ServeSpec:
    """The resolved model to serve."""

    model: str
    template: str | None = None
    system: str | None = None
    agent_template: str | None = None  # the format tools and calls were trained in (answers are parsed in it)
    response_prefix: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)  # name -> checkpoint dir, served per request
    default_adapter: str | None = None  # what requests naming no adapter get
    merge: list[str] = field(default_factory=list)  # checkpoint dirs merged into the base before serving
    rope_scaling: str | None = None  # --rope_scaling / --max_model_len, else the training run's (its args.json)
    max_model_len: int | None = None


def _split_adapter(entry: str) -> tuple[str | None, str]:
    name, sep, path = entry.partition("=")
    if sep and name and "/" not in name and not Path(entry).exists():
        return name, path
    return None, entry


def resolve_serve_spec(args: InferArguments) -> ServeSpec:
    """--model / --adapters [name=]DIR ... / --ckpt_dir DIR (+ their args.json) -> `ServeSpec`."""
    problems: list[str] = []
    named: dict[str, str] = {}
    unnamed: list[str] = []
    entries = [("--adapters", entry) for entry in args.infer.adapters]
    full_model_dir = None
    if args.infer.ckpt_dir:
        ckpt = Path(args.infer.ckpt_dir)
        if not ckpt.is_dir():
            problems.append(f"--ckpt_dir {ckpt}: no such directory")
        elif (ckpt / "adapter_config.json").is_file():
            entries.append(("--ckpt_dir", str(ckpt)))
        else:
            full_model_dir = str(ckpt)  # full weights
    for flag, entry in entries:
        name, path = _split_adapter(entry)
        if not (Path(path) / "adapter_config.json").is_file():
            problems.append(f"{flag} {entry}: no adapter_config.json in {path} (is it a LoRA checkpoint?)")
        elif name is None:
            unnamed.append(path)
        elif name in named:
            problems.append(f"{flag} {entry}: adapter name {name!r} is given twice")
        else:
            named[name] = path
    sources = [*unnamed, *named.values()]  # args.json is the checkpoint's, beside the adapter it converted
    unnamed = [str(adapter_for_base(p)) for p in unnamed]
    named = {k: str(adapter_for_base(p)) for k, p in named.items()}
    if len(unnamed) > 1 and not args.infer.merge_lora:
        problems.append(f"--adapters: {len(unnamed)} adapters without a name; name them (name=DIR) to serve them "
                        "side by side, or pass --merge_lora true to merge them into the base")
    source = next(iter([*sources, *([full_model_dir] if full_model_dir else []),
                        *([model_checkpoint(args.model.model)] if model_checkpoint(args.model.model) else [])]), None)
    recorded = read_args(source) if source else {}
    model = args.model.model or full_model_dir or recorded.get("model") or _adapter_base(source)
    if model is None:
        problems.append("--model: which model? Pass --model ID_OR_DIR, or --adapters / --ckpt_dir with a checkpoint "
                        "that names its base model")
    if full_model_dir and args.model.model and args.model.model != full_model_dir:
        problems.append(f"--ckpt_dir {full_model_dir} holds full weights: leave out --model {args.model.model}")
    problems += check_sampling_flags(args) + check_dataset_flags(args)
    if problems:
        raise ConfigError("; ".join(problems))
    spec = ServeSpec(str(model), template=args.template.template or recorded.get("template_name")
                     or recorded.get("template"), system=args.template.system if args.template.system is not None
                     else recorded.get("system"), adapters=named,
                     agent_template=args.template.agent_template or recorded.get("agent_template"),
                     response_prefix=args.template.response_prefix if args.template.response_prefix is not None
                     else recorded.get("response_prefix"),
                     rope_scaling=args.model.rope_scaling or recorded.get("rope_scaling"),
                     max_model_len=args.model.max_model_len or recorded.get("max_model_len"))
    if args.infer.merge_lora:
        spec.merge = unnamed
    elif unnamed:
        spec.adapters = {DEFAULT_ADAPTER: unnamed[0], **named}
        spec.default_adapter = DEFAULT_ADAPTER
    return spec


def _adapter_base(source: str | None) -> str | None:
    if source is None:
        return None
    config = Path(source) / "adapter_config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    return None


def check_sampling_flags(args: InferArguments) -> list[str]:
    infer, problems = args.infer, []
    if infer.temperature is not None and not 0 <= infer.temperature <= 2:
        problems.append(f"--temperature {infer.temperature}: give a value from 0 (greedy) to 2")
    if infer.top_p is not None and not 0 < infer.top_p <= 1:
        problems.append(f"--top_p {infer.top_p}: give a value in (0, 1]")
    if infer.top_k is not None and infer.top_k < -1:
        problems.append(f"--top_k {infer.top_k}: give -1 or 0 (off) or a positive count")
    if infer.repetition_penalty is not None and infer.repetition_penalty <= 0:
        problems.append(f"--repetition_penalty {infer.repetition_penalty}: give a positive value (1: off)")
    if infer.max_new_tokens is not None and infer.max_new_tokens < 1:
        problems.append(f"--max_new_tokens {infer.max_new_tokens}: give at least 1")
    if infer.max_batch_size < 1:
        problems.append(f"--max_batch_size {infer.max_batch_size}: give at least 1")
    return problems


def check_dataset_flags(args: InferArguments) -> list[str]:
    infer, problems = args.infer, []
    if infer.write_batch_size == 0 or infer.write_batch_size < -1:
        problems.append(f"--write_batch_size {infer.write_batch_size}: give a positive count of answers, or -1 "
                        "(all at the end)")
    if infer.load_data_args and not (infer.adapters or infer.ckpt_dir):
        problems.append("--load_data_args true: the data flags come from the args.json of --adapters or --ckpt_dir; "
                        "pass the checkpoint (or give --val_dataset instead)")
    if infer.metric and not (args.data.val_dataset or args.data.dataset or infer.load_data_args):
        problems.append(f"--metric {infer.metric}: scores the answers to a dataset; pass --val_dataset FILE (or "
                        "--load_data_args true with a checkpoint)")
    return problems


def model_checkpoint(model: str | None) -> str | None:
    """--model when it is a checkpoint of ours (a local directory with its own args.json: megatron's HF copies,
    merged exports), else None."""
    return model if model and (Path(model).expanduser() / "args.json").is_file() else None


def checkpoint_dir(args: InferArguments) -> str | None:
    """The first checkpoint served (--ckpt_dir, else the first --adapters, else a --model checkpoint), whose
    args.json describes the run."""
    if args.infer.ckpt_dir:
        return args.infer.ckpt_dir
    if args.infer.adapters:
        return _split_adapter(args.infer.adapters[0])[1]
    return model_checkpoint(args.model.model)


def with_checkpoint_data_args(args: InferArguments) -> tuple[InferArguments, bool]:
    """--load_data_args: `args` with the data flags of the checkpoint's args.json where the command line left them at
    their defaults, and whether training required rows to end with an answer (rows it dropped are not in its split,
    so the validation rows come out the same only with the same rule)."""
    source = checkpoint_dir(args)
    recorded = read_args(source) if source else {}
    if not recorded.get("dataset") and not recorded.get("val_dataset"):
        raise ConfigError(f"--load_data_args true: {source} has no args.json naming a --dataset (is it a checkpoint "
                          "of swift sft / pt / rlhf?); pass --val_dataset instead")
    data, template = recorded_data_args(args.data, args.template, recorded)
    # swift sft of a chat model and swift pt drop rows without an answer; encoder tasks and GRPO prompts keep them
    require_answer = recorded.get("task_type") in (None, "causal_lm") and recorded.get("command") != "rlhf grpo"
    return dataclasses.replace(args, data=data, template=template), require_answer


