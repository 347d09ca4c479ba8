"""Flags of `megatron sft|pt|rlhf|export`: Swift's shared groups plus the Megatron-LM names its users know."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from swift.core import ConfigError, check_data_args, check_rope_flags
from swift.core.arguments import DataArgs, ModelArgs, TemplateArgs, arg
from swift.megatron.options import MegatronCoreArgs, check_core_args
from swift.tuners import TunerArgs

logger = logging.getLogger(__name__)


@dataclass
class MegatronArgs:
    """Megatron"""

    train_iters: int | None = arg(None, "optimizer steps (default: --num_train_epochs of --global_batch_size rows)")
    num_train_epochs: float = arg(1.0, "epochs when --train_iters is not given: train_iters = "
                                       "ceil(epochs x rows / --global_batch_size) (rows after packing)")
    micro_batch_size: int = arg(1, "rows per micro-batch")
    global_batch_size: int = arg(16, "rows per optimizer step across data-parallel ranks")
    lr: float | None = arg(None, "peak learning rate (default 1e-5 full, 1e-4 LoRA)", aliases=["learning_rate"])
    min_lr: float = arg(0.0, "final learning rate")
    lr_warmup_iters: int = arg(0, "warm-up steps")
    lr_warmup_fraction: float | None = arg(None, "warm-up as a fraction of the decay steps (train_iters); "
                                                 "instead of --lr_warmup_iters")
    lr_decay_style: Literal["cosine", "linear", "constant"] = arg("cosine", "learning-rate decay after warm-up")
    weight_decay: float = arg(0.1, "AdamW weight decay (not on biases and norms)")
    clip_grad: float = arg(1.0, "gradient clipping norm", aliases=["max_grad_norm"])
    adam_beta1: float = arg(0.9, "AdamW beta1")
    adam_beta2: float = arg(0.95, "AdamW beta2")
    adam_eps: float = arg(1e-8, "AdamW epsilon")
    optimizer: Literal["adam", "sgd", "muon", "dist_muon"] = arg(
        "adam", "adam (AdamW), sgd (--sgd_momentum), muon (Muon on the decoder's weight matrices, AdamW on the rest; "
                "whole optimizer state on every data-parallel rank) or dist_muon (the same, each rank stepping "
                "whole parameters in turn); --train_type full")
    sgd_momentum: float = arg(0.9, "--optimizer sgd: momentum")
    muon_momentum: float = arg(0.95, "Muon: momentum of its internal SGD")
    muon_use_nesterov: bool = arg(False, "Muon: Nesterov momentum")
    muon_scale_mode: Literal["spectral", "shape_scaling", "unit_rms_norm"] = arg(
        "spectral", "Muon: update scale per matrix, sqrt(max(out, in)) / sqrt(max(1, out/in)) / sqrt(out/in)")
    muon_extra_scale_factor: float = arg(1.0, "Muon: extra factor on the update (0.2 with spectral matches AdamW's "
                                              "update RMS, torch's match_rms_adamw)")
    muon_num_ns_steps: int = arg(5, "Muon: Newton-Schulz iterations")
    muon_split_qkv: bool = arg(True, "Muon: orthogonalise q, k and v separately (else the fused linear_qkv whole)")
    muon_tp_mode: Literal["blockwise", "duplicated"] = arg(
        "blockwise", "Muon under tensor parallelism: each rank's shard on its own (blockwise) or the gathered "
                     "whole matrix (duplicated: the one-process update)")
    bf16: bool | None = arg(None, "bfloat16 weights and compute (default: on CUDA with bf16, off on CPU)")
    save: str | None = arg(None, "output directory: runs go to <save>/v<N>-<timestamp>/", aliases=["output_dir"])
    add_version: bool = arg(True, "put each run in a new v<N>-<timestamp> directory under --save")
    load: str | None = arg(None, "mcore checkpoint to start from (resumes exactly unless --finetune)")
    finetune: bool = arg(False, "with --load: weights only; iteration, optimizer and RNG start afresh")
    no_load_optim: bool = arg(False, "with --load: do not restore the optimizer state")
    no_load_rng: bool = arg(False, "with --load: do not restore the RNG states")
    no_save_optim: bool = arg(False, "checkpoints leave out the optimizer state (--load then restarts it)")
    no_save_rng: bool = arg(False, "checkpoints leave out the RNG states")
    save_safetensors: bool = arg(False, "also write each checkpoint as an HF model (safetensors) in "
                                        "<run>/checkpoint-<step>/ (LoRA: merged unless --merge_lora false)")
    save_total_limit: int | None = arg(None, "keep only the newest N checkpoints (default: all)")
    save_interval: int = arg(500, "checkpoint every N steps (and always at the end)", aliases=["save_steps"])
    log_interval: int = arg(5, "log every N steps (and step 1)", aliases=["logging_steps"])
    eval_interval: int | None = arg(None, "evaluate on the validation split (--val_dataset or "
                                          "--split_dataset_ratio) every N steps and at the end (default: "
                                          "--save_interval)", aliases=["eval_steps"])
    eval_iters: int = arg(-1, "global batches per evaluation (-1: the whole validation split)")
    dataloader_num_workers: int = arg(0, "DataLoader worker processes building the micro-batches (0: in the "
                                         "training process)")
    cached_dataset: list[str] = arg([], "encoded training rows written by swift export --to_cached_dataset true "
                                        "(DIR[#N]), beside or instead of --dataset; checked against this model's "
                                        "template")
    cached_val_dataset: list[str] = arg([], "encoded validation rows (default: the val/ split the --cached_dataset "
                                            "folders carry, if any)")
    group_by_length: bool = arg(False, "put rows of similar length in each global batch (less padding; the "
                                       "batches' order stays random, seeded by --data_seed)")
    seed: int = arg(42, "random seed")
    tensor_model_parallel_size: int = arg(1, "tensor parallel ranks")
    pipeline_model_parallel_size: int = arg(1, "pipeline parallel ranks")
    sequence_parallel: bool = arg(False, "sequence parallelism (with tensor parallelism)")
    context_parallel_size: int = arg(1, "context parallel ranks (needs TransformerEngine)")
    expert_model_parallel_size: int = arg(1, "expert parallel ranks (MoE)")
    use_distributed_optimizer: bool = arg(True, "shard optimizer state across data-parallel ranks")
    overlap_grad_reduce: bool = arg(False, "reduce the data-parallel gradients in buckets during the backward pass "
                                           "(as each bucket's gradients are ready) instead of after it")
    overlap_param_gather: bool = arg(False, "with --use_distributed_optimizer: all-gather the updated parameters in "
                                            "buckets during the next forward pass instead of after the step")
    to_mcore: bool = arg(False, "export: HF (--model) -> mcore checkpoint in --output_dir")
    to_hf: bool = arg(False, "export: mcore (--mcore_model) -> HF model in --output_dir")
    mcore_model: str | None = arg(None, "export: the mcore checkpoint to convert")
    loss_type: str | None = arg(None, "--task_type embedding: infonce (default), cosine_similarity, contrastive, "
                                      "online_contrastive; generative_reranker: pointwise_reranker (default), "
                                      "listwise_reranker; causal_lm: cross_entropy. megatron rlhf --rlhf_type dpo: "
                                      "sigmoid (default), hinge, ipo, robust, exo_pair, sigmoid_norm, nca_pair, "
                                      "sppo_hard, aot, aot_unpaired, apo_zero, apo_down; --rlhf_type grpo: grpo "
                                      "(default), bnpo, dr_grpo, dapo")
    merge_lora: bool = arg(True, "export of a LoRA checkpoint: merged HF model (false: a PEFT adapter)")
    adapters: list[str] = arg([], "export: a LoRA checkpoint to export (an mcore LoRA checkpoint, or a PEFT "
                                  "adapter directory with --model as its base)")
    mcore_adapter: str | None = arg(None, "export: an mcore LoRA checkpoint on --model: --to_hf writes it merged (or "
                                          "as a PEFT adapter), --to_mcore merged into a full mcore checkpoint")
    test_convert_precision: bool = arg(False, "export: compare HF and mcore logits of the converted weights and "
                                              "log the largest difference")


@dataclass
class MegatronArguments:
    """Swift on Megatron-Core."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    tuner: TunerArgs = field(default_factory=TunerArgs)
    megatron: MegatronArgs = field(default_factory=MegatronArgs)
    core: MegatronCoreArgs = field(default_factory=MegatronCoreArgs)


def _reward_funcs() -> dict[str, None]:
    from swift.core import reward_choices

    return reward_choices()


@dataclass
class MegatronRlhfArgs:
    """RLHF"""

    rlhf_type: Literal["dpo", "grpo"] = arg(
        "dpo", "the method: dpo (Direct Preference Optimization on preference rows: messages + rejected_response, or "
               "prompt/chosen/rejected), grpo (Group Relative Policy Optimization on prompts, rewarded by "
               "--reward_funcs)")
    beta: float | None = arg(None, "DPO: how far the policy may move from the reference (for ipo: its "
                                   "regularisation; default 0.1); GRPO: the KL-to-reference coefficient (default "
                                   "0.04; 0: no reference model)")
    rpo_alpha: float | None = arg(None, "DPO: add rpo_alpha x the NLL of the chosen answers (RPO; the paper "
                                        "suggests 1)")
    label_smoothing: float = arg(0.0, "DPO: the share of pairs assumed mislabelled (conservative DPO for sigmoid; "
                                      "robust, exo_pair, aot, aot_unpaired)")
    reference_free: bool = arg(False, "DPO: no reference model (one that gives every answer the same probability)")
    f_divergence_type: Literal["reverse_kl", "js_divergence"] = arg(
        "reverse_kl", "DPO: the divergence the log-ratios are taken under (trl's f-DPO)")
    ref_model: str | None = arg(None, "the reference: an HF model id or directory of the same architecture "
                                      "(default: the policy's initial weights; LoRA: the base without the adapter)")
    ref_load: str | None = arg(None, "the reference: an mcore checkpoint (as --load takes)",
                               aliases=["mcore_ref_model"])
    # GRPO (ms-swift's names; batch sizes count completions, as ms-swift's Megatron GRPO)
    num_generations: int = arg(8, "GRPO: completions per prompt (a group)")
    max_completion_length: int = arg(512, "GRPO: most tokens generated per completion")
    temperature: float = arg(0.9, "GRPO: sampling temperature of the rollouts (0: greedy)")
    top_p: float = arg(1.0, "GRPO: rollout nucleus sampling")
    top_k: int = arg(-1, "GRPO: rollout top-k sampling (-1 or 0: off)")
    repetition_penalty: float = arg(1.0, "GRPO: rollout repetition penalty")
    reward_funcs: list[str] = arg([], "GRPO: reward functions (built in, or registered by --external_plugins)",
                                  choices=_reward_funcs)
    reward_weights: list[float] = arg([], "GRPO: weights of --reward_funcs (default: 1 each)")
    external_plugins: list[str] = arg([], "python files run before the other flags are checked: they register "
                                          "reward functions (this executes their code)", plugin=True)
    epsilon: float = arg(0.2, "GRPO: clip range of the importance ratio")
    epsilon_high: float | None = arg(None, "GRPO: upper clip range (DAPO's clip-higher; default: --epsilon)")
    steps_per_generation: int | None = arg(None, "GRPO: optimizer steps trained on one rollout batch of "
                                                 "steps_per_generation x --global_batch_size completions "
                                                 "(default 1, or --generation_batch_size / --global_batch_size)")
    generation_batch_size: int | None = arg(None, "GRPO: completions per rollout batch (a multiple of "
                                                  "--global_batch_size)")
    num_iterations: int = arg(1, "GRPO: passes over each rollout batch (each pass: --steps_per_generation steps)")
    advantage_estimator: Literal["grpo", "rloo", "reinforce_plus_plus"] = arg(
        "grpo", "GRPO: how rewards become advantages (group mean baseline, leave-one-out, REINFORCE++)")
    scale_rewards: Literal["group", "batch", "none", "gdpo"] | None = arg(
        None, "GRPO: divide the centred rewards by the group's std, the batch's, not at all, or normalise each "
              "reward function in its group first (gdpo); default: group for --advantage_estimator grpo, none for "
              "rloo, batch for reinforce_plus_plus")
    kl_in_reward: bool | None = arg(None, "GRPO: subtract beta x each completion's KL to the reference from its "
                                          "reward (instead of a KL term in the loss); default: rloo and "
                                          "reinforce_plus_plus yes, grpo no")
    overlong_filter: bool = arg(False, "GRPO (DAPO): completions cut by --max_completion_length get no loss")
    dynamic_sample: bool = arg(False, "GRPO (DAPO): groups whose rewards are all equal are replaced by groups of new "
                                      "prompts, rolled out again")
    max_resample_times: int = arg(3, "GRPO with --dynamic_sample: most extra rollout rounds per rollout batch")
    importance_sampling_level: Literal["token", "sequence"] = arg(
        "token", "GRPO: the importance ratio per token, or per completion (GSPO: the exp of its mean log-ratio)")
    delta: float | None = arg(None, "GRPO: two-sided clipping, the unclipped ratio capped at delta (INTELLECT-2; "
                                    "> 1 + epsilon_high)")
    log_completions: bool = arg(False, "GRPO: write each rollout's prompts, completions, rewards and advantages to "
                                       "completions.jsonl in the run directory")
    use_vllm: bool = arg(False, "GRPO: roll out on vLLM colocated with the trainer (one engine per model-parallel "
                                "group, fed the policy's weights before each rollout batch; default: transformers' "
                                "generate on the synced HF model)")
    vllm_mode: Literal["colocate", "server"] = arg("colocate", "GRPO with --use_vllm: colocate (server mode is "
                                                              "swift rlhf's)")
    vllm_gpu_memory_utilization: float | None = arg(None, "GRPO with --use_vllm: vLLM's share of GPU memory")
    vllm_tensor_parallel_size: int = arg(1, "GRPO with --use_vllm: vLLM tensor parallelism (1 here)")
    vllm_max_model_len: int | None = arg(None, "GRPO with --use_vllm: vLLM's longest prompt + completion (default: "
                                               "--max_length + --max_completion_length, capped by the model's)")
    vllm_enforce_eager: bool = arg(False, "GRPO with --use_vllm: no torch.compile / CUDA graphs (starts faster)")
    vllm_enable_prefix_caching: bool = arg(True, "GRPO with --use_vllm: reuse the KV cache of a group's prompt")
    vllm_engine_kwargs: dict | None = arg(None, "GRPO with --use_vllm: JSON of further vLLM engine arguments")
    sleep_level: Literal[0, 1, 2] = arg(0, "GRPO with --use_vllm: vLLM sleeps while the policy trains (1: weights to "
                                           "CPU RAM, 2: discarded; GPU only, nothing to free on a CPU)")


@dataclass
class MegatronRlhfArguments(MegatronArguments):
    """Swift on Megatron-Core: preference (DPO) and reinforcement (GRPO) training."""

    rlhf: MegatronRlhfArgs = field(default_factory=MegatronRlhfArgs)


def loss_type_problems(loss: str, allowed: tuple[str, ...] | dict, refused: dict[str, str], method: str) -> list[str]:
    """`--loss_type` of `megatron rlhf --rlhf_type <method>`: refused ones with their reason, unknown ones with the
    list of those it takes."""
    if loss in refused:
        return [f"--loss_type {loss} is not supported by megatron rlhf: {refused[loss]}"]
    if loss not in allowed:
        return [f"--loss_type {loss}: megatron rlhf --rlhf_type {method} takes {', '.join(allowed)}"]
    return []


DPO_ONLY = ("rpo_alpha", "label_smoothing", "reference_free", "f_divergence_type")


def _check_rlhf_flags(args: MegatronRlhfArguments) -> list[str]:
    """The method's own checks, and any flag of the other method given (it would be ignored)."""
    import dataclasses

    from swift.megatron.grpo import GRPO_FLAGS

    rlhf, defaults = args.rlhf, MegatronRlhfArgs()
    foreign = GRPO_FLAGS if rlhf.rlhf_type == "dpo" else DPO_ONLY
    names = {f.name for f in dataclasses.fields(MegatronRlhfArgs)}
    problems = [f"--{name} is a {'GRPO' if rlhf.rlhf_type == 'dpo' else 'DPO'} flag; --rlhf_type "
                f"{rlhf.rlhf_type} does not use it" for name in foreign
                if name in names and getattr(rlhf, name) != getattr(defaults, name)]
    if rlhf.rlhf_type == "grpo":
        from swift.megatron.grpo import check_grpo_flags

        return problems + check_grpo_flags(args)
    from swift.megatron.dpo import check_dpo_flags

    return problems + check_dpo_flags(args)


def uses_distributed_optimizer(m: MegatronArgs) -> bool:
    """--use_distributed_optimizer, which Muon (whole matrices) turns off."""
    return m.use_distributed_optimizer and m.optimizer not in ("muon", "dist_muon")


def check_train_args(args: MegatronArguments, *, pretrain: bool = False) -> None:
    """Everything checkable before weights load, all problems at once, each naming its flag."""
    m, problems = args.megatron, []
    if not args.model.model and not m.load:
        problems.append("--model is required (a hub id or a local HF directory), or --load an mcore checkpoint")
    if not args.data.dataset and not m.cached_dataset:
        problems.append("--dataset is required (files, folders, hub ids or registered names), or --cached_dataset")
    problems += check_data_args(args.data)
    if args.tuner.train_type not in ("full", "lora"):
        problems.append(f"--train_type {args.tuner.train_type}: megatron trains full or lora")
    from swift.megatron.tasks import check_task_flags

    rlhf = isinstance(args, MegatronRlhfArguments)
    if rlhf:
        problems += _check_rlhf_flags(args)
    problems += check_task_flags(args.model, None if rlhf else m.loss_type, pretrain=pretrain,
                                 packing=args.template.packing, cached=bool(m.cached_dataset or m.cached_val_dataset))
    problems += check_core_args(args.core, pipeline_parallel_size=m.pipeline_model_parallel_size)
    problems += check_rope_flags(args.model.rope_scaling, args.model.max_model_len)
    if m.optimizer in ("muon", "dist_muon"):
        if args.tuner.train_type != "full":
            problems.append(f"--optimizer {m.optimizer} orthogonalises whole weight matrices: use --train_type full "
                            "(swift sft --optimizer muon trains LoRA with it)")
        if m.optimizer == "dist_muon" and m.expert_model_parallel_size > 1:
            problems.append("--optimizer dist_muon with --expert_model_parallel_size > 1 is not supported (experts "
                            "are owned per expert-parallel rank); use --optimizer muon")
        if m.overlap_param_gather:
            problems.append(f"--overlap_param_gather gathers the distributed optimizer's shards; --optimizer "
                            f"{m.optimizer} keeps whole parameters")
        if m.muon_num_ns_steps < 1:
            problems.append(f"--muon_num_ns_steps {m.muon_num_ns_steps}: must be at least 1")
    elif m.overlap_param_gather and not m.use_distributed_optimizer:
        problems.append("--overlap_param_gather needs --use_distributed_optimizer true (it overlaps the all-gather "
                        "of the sharded optimizer's updated parameters)")
    problems += _check_schedule(m)
    for flag in ("micro_batch_size", "global_batch_size", "save_interval", "log_interval",
                 "tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
                 "expert_model_parallel_size"):
        if getattr(m, flag) < 1:
            problems.append(f"--{flag} {getattr(m, flag)}: must be at least 1")
    if m.train_iters is not None and m.train_iters < 1:
        problems.append(f"--train_iters {m.train_iters}: must be at least 1")
    if m.micro_batch_size >= 1 and m.global_batch_size % m.micro_batch_size:
        problems.append(f"--global_batch_size {m.global_batch_size} must be a multiple of --micro_batch_size "
                        f"{m.micro_batch_size} (times the data-parallel size)")
    if m.lr is not None and not 0 < m.lr < 1:
        problems.append(f"--lr {m.lr}: must be within (0, 1)")
    if m.min_lr < 0 or (m.lr is not None and m.min_lr > m.lr):
        problems.append(f"--min_lr {m.min_lr}: must be within [0, --lr]")
    if m.context_parallel_size > 1:
        problems.append("--context_parallel_size > 1 needs TransformerEngine's attention (a CUDA build); "
                        "it is not wired yet")
    if m.sequence_parallel and args.tuner.train_type == "lora" and m.tensor_model_parallel_size > 1:
        # the LoRA A of a column-parallel layer would see the sequence-sharded input, not the gathered one
        problems.append("--sequence_parallel with --train_type lora and --tensor_model_parallel_size > 1 is not "
                        "supported; drop one")
    elif m.sequence_parallel and m.tensor_model_parallel_size == 1:
        logger.warning("--sequence_parallel: splits activations across tensor-parallel ranks; with "
                       "--tensor_model_parallel_size 1 there is nothing to split, it does nothing")
    if args.tuner.lora_rank < 1:
        problems.append(f"--lora_rank {args.tuner.lora_rank}: must be at least 1")
    if m.group_by_length and args.template.packing:
        problems.append("--group_by_length with --packing: packed rows are already full")
    if problems:
        raise ConfigError("\n".join(problems))


def _check_schedule(m: MegatronArgs) -> list[str]:
    problems = []
    if m.num_train_epochs <= 0:
        problems.append(f"--num_train_epochs {m.num_train_epochs}: must be above 0")
    if m.lr_warmup_fraction is not None:
        if not 0 <= m.lr_warmup_fraction < 1:
            problems.append(f"--lr_warmup_fraction {m.lr_warmup_fraction}: must be within [0, 1)")
        if m.lr_warmup_iters:
            problems.append("--lr_warmup_fraction and --lr_warmup_iters both set the warm-up; pass one")
    if m.lr_warmup_iters < 0:
        problems.append(f"--lr_warmup_iters {m.lr_warmup_iters}: must be at least 0")
    if m.eval_interval is not None and m.eval_interval < 1:
        problems.append(f"--eval_interval {m.eval_interval}: must be at least 1")
    if m.eval_iters == 0 or m.eval_iters < -1:
        problems.append(f"--eval_iters {m.eval_iters}: must be at least 1, or -1 (the whole validation split)")
    if m.dataloader_num_workers < 0:
        problems.append(f"--dataloader_num_workers {m.dataloader_num_workers}: must be at least 0")
    if m.save_total_limit is not None and m.save_total_limit < 1:
        problems.append(f"--save_total_limit {m.save_total_limit}: must be at least 1")
    return problems


def check_export_args(args: MegatronArguments) -> None:
    """`megatron export`: one direction, with its input named and present."""
    m = args.megatron
    if m.to_mcore == m.to_hf:
        raise ConfigError("megatron export: pass exactly one of --to_mcore true (with --model) or --to_hf true "
                          "(with --mcore_model)")
    if m.to_mcore and not args.model.model:
        raise ConfigError("--to_mcore true needs --model (a hub id or a local HF directory)")
    if m.to_mcore and m.mcore_adapter and not m.merge_lora:
        raise ConfigError(f"--mcore_adapter {m.mcore_adapter} is an mcore LoRA checkpoint already: --to_mcore "
                          "writes it merged into --model (--merge_lora true)")
    if m.to_hf:
        if not m.mcore_model and not m.adapters and not m.mcore_adapter:
            raise ConfigError("--to_hf true needs --mcore_model DIR (an iter_* folder, or the folder holding them) "
                              "or --adapters (a LoRA checkpoint)")
        if m.mcore_model:
            from swift.megatron.checkpoint import find_checkpoint

            find_checkpoint(m.mcore_model, "--mcore_model")
