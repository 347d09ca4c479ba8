"""Flags of `swift sft`, `swift pt`, `swift rlhf` and `swift export`, as groups composed per command.

Training flag names are HF `TrainingArguments`' (and ms-swift's), so existing scripts keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import DataArgs, ModelArgs, TemplateArgs, arg
from swift.tuners import TunerArgs


def _rlhf_types() -> dict[str, str | None]:
    from swift.train.rlhf.registry import method_choices

    return method_choices()


def _optimizers() -> dict[str, None]:
    from swift.train.plugins import optimizer_choices

    return optimizer_choices()


def _callbacks() -> dict[str, None]:
    from swift.train.plugins import callback_choices

    return callback_choices()


def _schedulers() -> dict[str, str | None]:
    from swift.train.rlhf.multi_turn import scheduler_choices

    return scheduler_choices()


def _reward_funcs() -> dict[str, None]:
    from swift.core import reward_choices

    return reward_choices()


@dataclass
class TrainArgs:
    """Training"""

    output_dir: str | None = arg(None, "where runs go; default output/<model-name>/v<N>-<timestamp>/")
    add_version: bool = arg(True, "put each run in a new v<N>-<timestamp> directory under --output_dir")
    num_train_epochs: float = arg(1.0, "epochs over the training set")
    max_steps: int = arg(-1, "stop after this many optimizer steps (overrides epochs when > 0)")
    per_device_train_batch_size: int = arg(1, "rows per device per step", aliases=["batch_size"])
    per_device_eval_batch_size: int = arg(1, "rows per device per evaluation step")
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step")
    learning_rate: float | None = arg(None, "peak learning rate; default 1e-4 for adapters, 1e-5 for full training",
                                      aliases=["lr"])
    lr_scheduler_type: str = arg("cosine", "learning-rate schedule (transformers names: cosine, linear, constant...)")
    warmup_ratio: float = arg(0.05, "fraction of the steps spent warming up")
    warmup_steps: int = arg(0, "warm-up steps (overrides --warmup_ratio when > 0)")
    weight_decay: float = arg(0.1, "AdamW weight decay")
    max_grad_norm: float = arg(1.0, "gradient clipping norm")
    adam_beta1: float = arg(0.9, "Adam(W) beta1")
    adam_beta2: float = arg(0.999, "Adam(W) beta2")
    adam_epsilon: float = arg(1e-8, "Adam(W) epsilon")
    optim: str = arg("adamw_torch", "optimizer (transformers names)")
    optim_args: str | None = arg(None, "the optimizer's own arguments as k=v,k2=v2 (e.g. amsgrad=true for "
                                       "adamw_torch; momentum=0.9,ns_steps=5 for --optimizer muon; an "
                                       "--external_plugins optimizer reads training_args.optim_args); a key the "
                                       "optimizer does not take is an error")
    seed: int = arg(42, "random seed")
    bf16: bool | None = arg(None, "bfloat16 mixed precision (default: on where the hardware supports it)")
    fp16: bool | None = arg(None, "float16 mixed precision")
    gradient_checkpointing: bool | None = arg(None, "recompute activations in the backward pass to save memory "
                                                    "(default: on when the longest micro-batch's estimated "
                                                    "activations exceed half the free memory)")
    logging_steps: int = arg(5, "log metrics every N steps")
    save_steps: int = arg(500, "checkpoint every N steps")
    save_total_limit: int | None = arg(None, "keep only the N newest checkpoints (older ones are deleted as new ones "
                                             "are written)")
    eval_steps: int | None = arg(None, "evaluate every N steps (default: --save_steps)")
    eval_strategy: Literal["no", "steps", "epoch"] | None = arg(
        None, "when to evaluate on the validation split: steps (every --eval_steps), epoch, no (default: steps when "
              "there is a validation split, else no)", aliases=["evaluation_strategy"])
    save_strategy: Literal["no", "steps", "epoch", "best"] = arg(
        "steps", "when to checkpoint: steps (every --save_steps), epoch, best (whenever --metric_for_best_model "
                 "improves), no (only the final checkpoint)")
    metric_for_best_model: str | None = arg(None, "evaluation metric that picks the best checkpoint: loss, or a "
                                                  "metric's name (acc, rouge-l...) (default: loss when a best "
                                                  "checkpoint is asked for)")
    greater_is_better: bool | None = arg(None, "whether a larger --metric_for_best_model is better (default: false "
                                               "for metrics named *loss, else true)")
    load_best_model_at_end: bool = arg(False, "end the run with the best checkpoint's weights (by "
                                              "--metric_for_best_model); needs --eval_strategy = --save_strategy")
    early_stop_interval: int | None = arg(None, "stop when --metric_for_best_model has not improved for N "
                                                "evaluations in a row")
    save_only_model: bool = arg(False, "checkpoints without optimizer state (cannot resume exactly)")
    cached_dataset: list[str] = arg([], "encoded training rows written by swift export --to_cached_dataset true "
                                        "(folders, each as DIR[#N]); instead of or besides --dataset")
    cached_val_dataset: list[str] = arg([], "encoded validation rows: cached dataset folders (their train split), "
                                            "as --cached_dataset")
    resume_from_checkpoint: str | None = arg(None, "checkpoint directory to continue from exactly")
    report_to: list[str] = arg(["tensorboard"], "metric sinks: tensorboard, wandb, swanlab, none")
    dataloader_num_workers: int = arg(0, "data loader worker processes")
    dataloader_drop_last: bool = arg(False, "drop the last incomplete batch of each epoch")
    group_by_length: bool = arg(False, "batch rows of similar length together (less padding; order is random "
                                       "between groups)")
    vit_gradient_checkpointing: bool | None = arg(None, "multimodal models: checkpoint the vision tower's blocks "
                                                        "(default: as --gradient_checkpointing when --freeze_vit "
                                                        "false, else off: a frozen tower has nothing to recompute)")
    gradient_checkpointing_kwargs: dict | None = arg(None, "JSON passed to torch.utils.checkpoint, e.g. "
                                                           "'{\"use_reentrant\": false}' (the default)")
    label_names: list[str] = arg([], "batch keys that hold the labels, for evaluation (default: labels)")
    use_logits_to_keep: bool | None = arg(None, "compute the output head only where a label is (default: when the "
                                                "model's forward takes logits_to_keep); false: logits everywhere")
    neftune_noise_alpha: float | None = arg(None, "NEFTune: add uniform noise of this scale to the input "
                                                  "embeddings while training")
    deepspeed: str | None = arg(None, "zero0|zero1|zero2|zero3|zero2_offload|zero3_offload or a DeepSpeed JSON")
    fsdp: str | None = arg(None, "fsdp2|fsdp1|fsdp2_offload or an FSDP JSON config")
    use_ray: bool = arg(False, "run the training on Ray Train workers (pip install \"swift-train[ray]\")")
    ray_num_workers: int | None = arg(None, "Ray Train workers (default: one per GPU of the Ray cluster)")
    ray_address: str | None = arg(None, "Ray cluster to join, e.g. ray://head:10001 or auto (default: a local Ray)")
    loss_type: list[str] = arg([], "loss variant(s). sft/pt: cross_entropy (default) or a loss an --external_plugins file "
                                   "registers; --task_type embedding: "
                                   "infonce (default), cosine_similarity, contrastive, online_contrastive; reranker: "
                                   "pointwise_reranker (default), listwise_reranker; rlhf: DPO sigmoid, ipo, hinge, "
                                   "robust... (several combine), CPO sigmoid, hinge, ipo, GRPO grpo, bnpo, dr_grpo, dapo")
    external_plugins: list[str] = arg([], "python files run before the other flags are checked: they register "
                                          "losses (--loss_type), optimizers (--optimizer), callbacks (--callbacks), "
                                          "reward functions, RLHF methods, models, templates and datasets (this "
                                          "executes their code)", plugin=True)
    optimizer: str | None = arg(None, "an optimizer by name in place of --optim: muon (Muon on the hidden weight "
                                      "matrices, AdamW on the rest), or one an --external_plugins file registers",
                                choices=_optimizers)
    callbacks: list[str] = arg([], "trainer callbacks registered by --external_plugins files, by name",
                               choices=_callbacks)
    max_epochs: int | None = arg(None, "stop at the end of this many passes over the training data, with a "
                                       "checkpoint (a --streaming run has no length: --max_steps bounds it, this "
                                       "ends it at the stream's end)")
    ddp_find_unused_parameters: bool | None = arg(None, "DDP: look for parameters without a gradient after each "
                                                        "backward (needed when a step skips some; slower); default: "
                                                        "transformers' (off under gradient checkpointing)")
    predict_with_generate: bool = arg(False, "sft: at each evaluation also generate every validation row's last "
                                             "answer (greedy, up to --max_new_tokens) and score it against the row's "
                                             "answer: eval_rouge-1/-2/-l and eval_bleu-4 beside eval_loss; "
                                             "--metric_for_best_model then defaults to rouge-l")
    max_new_tokens: int = arg(64, "--predict_with_generate: the longest generated answer")
    eval_use_evalscope: bool = arg(False, "sft: at each evaluation also score the model on EvalScope benchmarks "
                                          "(--eval_dataset, as swift eval takes them), logged as "
                                          "eval_<dataset>_<metric> (swift-train[eval])")
    eval_dataset: list[str] = arg([], "--eval_use_evalscope: the benchmarks, e.g. gsm8k general_qa")
    eval_dataset_args: dict | None = arg(None, "--eval_use_evalscope: JSON of per-benchmark options, e.g. "
                                               '{"gsm8k": {"few_shot_num": 0}} or a local_path')
    eval_limit: int | None = arg(None, "--eval_use_evalscope: rows per benchmark subset (default: all)")
    eval_generation_config: dict | None = arg(None, "--eval_use_evalscope: JSON of generation options (default: "
                                                    '{"temperature": 0, "max_tokens": 512})')
    router_aux_loss_coef: float = arg(0.0, "MoE models: weight of the router's load-balancing loss added to the "
                                           "training loss (0: none)")
    use_liger_kernel: bool = arg(False, "fused Liger kernels for RMSNorm, RoPE, SwiGLU and chunked cross-entropy "
                                        "(CUDA; pip install \"swift-train[liger]\")")


@dataclass
class GaloreArgs:
    """GaLore"""

    use_galore: bool = arg(False, "full training with GaLore: AdamW's state kept in a rank --galore_rank projection "
                                  "of each target weight's gradient (pip install \"swift-train[galore]\")")
    galore_target_modules: list[str] = arg([], "module-name substrings of the Linear weights GaLore projects "
                                               "(default: every Linear of the transformer blocks: attention and MLP)")
    galore_rank: int = arg(128, "rank of the gradient projection")
    galore_update_proj_gap: int = arg(50, "optimizer steps between refreshes of the projection (an SVD of the "
                                          "gradient)")
    galore_scale: float = arg(1.0, "scale of the projected-back update")
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = arg(
        "std", "which side of the gradient is projected (std: the smaller one)")
    galore_optim_per_parameter: bool = arg(False, "step each weight from its gradient hook on the micro-batch that "
                                                  "ends an accumulation and free its gradient (the whole model's "
                                                  "gradients never exist at once); --max_grad_norm then clips each "
                                                  "weight's gradient on its own. One process only")
    galore_with_embedding: bool = arg(False, "project the input embeddings' gradient too")
    galore_quantization: bool = arg(False, "Q-GaLore: q-galore-torch's 8-bit AdamW with an adaptive projection "
                                           "refresh (CUDA only)")
    galore_proj_quant: bool = arg(False, "Q-GaLore: store the projection matrices quantized")
    galore_proj_bits: int = arg(4, "Q-GaLore: bits of the quantized projection")
    galore_proj_group_size: int = arg(256, "Q-GaLore: quantization group size of the projection")
    galore_cos_threshold: float = arg(0.4, "Q-GaLore: when the mean cosine similarity of successive projections "
                                           "reaches this, the refresh interval grows")
    galore_gamma_proj: int = arg(2, "Q-GaLore: factor by which the refresh interval grows")
    galore_queue_size: int = arg(5, "Q-GaLore: successive projections compared")


@dataclass
class RlhfArgs:
    """RLHF"""

    rlhf_type: str = arg("dpo", "preference / RL method (the method registry's names)", choices=_rlhf_types)
    ref_model: str | None = arg(None, "reference model (default: the base without the adapter)")
    reward_model: list[str] = arg([], "reward model(s) for PPO / GRPO")
    teacher_model: str | None = arg(None, "teacher model for GKD")
    beta: float | None = arg(None, "KL / preference strength (method default when unset)")
    rpo_alpha: float | None = arg(None, "weight of the NLL term in DPO (RPO)")
    loss_weights: list[float] = arg([], "DPO with several --loss_type: the weight of each, in order (default 1 each)")
    simpo_gamma: float = arg(1.0, "SimPO target reward margin")
    cpo_alpha: float = arg(1.0, "weight of the NLL term in CPO")
    desirable_weight: float = arg(1.0, "KTO weight of desirable rows")
    undesirable_weight: float = arg(1.0, "KTO weight of undesirable rows")
    num_generations: int = arg(8, "GRPO completions per prompt")
    max_completion_length: int = arg(512, "GRPO / PPO / GKD completion length")
    temperature: float = arg(0.9, "sampling temperature of rollouts (GRPO, PPO) and of the distillation (GKD)")
    top_p: float = arg(1.0, "GRPO rollout nucleus sampling")
    top_k: int = arg(0, "GRPO rollout top-k sampling (0: off)")
    repetition_penalty: float = arg(1.0, "GRPO rollout repetition penalty")
    stop_words: list[str] = arg([], "GRPO rollouts: strings that end a completion besides the template's end-of-turn "
                                    "tokens (the completion keeps the token that completes one), e.g. "
                                    "Observation: for ReAct tool calls")
    scale_rewards: Literal["group", "batch", "none", "gdpo"] | None = arg(
        None, "GRPO advantage scaling: by the group's reward std, the batch's, none (Dr. GRPO), or gdpo (each reward "
        "function normalised in its group, then summed and normalised over the batch); default: group for "
        "--advantage_estimator grpo, none for rloo, batch for reinforce_plus_plus")
    advantage_estimator: Literal["grpo", "rloo", "reinforce_plus_plus"] = arg(
        "grpo", "GRPO advantage baseline: the group mean (grpo), the mean of the other completions (rloo), or the "
        "group mean with the batch std of the centred rewards (reinforce_plus_plus)")
    kl_in_reward: bool | None = arg(None, "GRPO: subtract beta x each completion's KL to the reference from its reward "
                                          "instead of a KL loss term (default: false for grpo, true for rloo and "
                                          "reinforce_plus_plus)")
    epsilon_high: float | None = arg(None, "GRPO upper clip range (DAPO's clip-higher; default: --epsilon)")
    delta: float | None = arg(None, "GRPO two-sided clipping: the ratio's upper bound for negative advantages "
                                    "(INTELLECT-2; > 1 + epsilon)")
    importance_sampling_level: Literal["token", "sequence"] = arg(
        "token", "GRPO importance ratio per token, or per sequence (the mean log-ratio of its tokens: GSPO)")
    tau_pos: float = arg(1.0, "SAPO (--loss_type sapo): gate temperature of positive advantages")
    tau_neg: float = arg(1.05, "SAPO: gate temperature of negative advantages")
    steps_per_generation: int | None = arg(None, "GRPO: optimizer micro-steps trained per rollout batch (default: "
                                                 "--gradient_accumulation_steps)")
    dynamic_sample: bool = arg(False, "GRPO (DAPO): drop groups whose completions all got the same reward and roll "
                                      "out new prompts in their place")
    max_resample_times: int = arg(3, "--dynamic_sample: rollout rounds of new prompts at most per batch")
    overlong_filter: bool = arg(False, "GRPO (DAPO): completions cut by --max_completion_length get no loss")
    top_entropy_quantile: float = arg(1.0, "GRPO: train only the tokens in this top quantile of entropy (1: all)")
    multi_turn_scheduler: str | None = arg(None, "multi-turn GRPO: the scheduler that answers each completion with "
                                                 "the next user/tool turn or ends the trajectory (built in: "
                                                 "tool_call; yours: --external_plugins)", choices=_schedulers)
    max_turns: int | None = arg(None, "multi-turn GRPO: the model's turns per trajectory at most (default: until "
                                      "the scheduler stops)")
    log_completions: bool = arg(False, "GRPO: write each rollout's prompts, completions, rewards and advantages to "
                                       "completions.jsonl in the run directory")
    lmbda: float = arg(0.5, "GKD: share of steps trained on the student's own generations (on-policy)")
    seq_kd: bool = arg(False, "GKD: also train on the teacher's generations (sequence-level KD)")
    sft_alpha: float = arg(0.0, "GKD: loss = distillation loss + sft_alpha x the student's cross-entropy on the "
                                "answers of batches that are not its own generations (the dataset's or the "
                                "teacher's)")
    epsilon: float = arg(0.2, "GRPO clip range of the ratio (PPO: --cliprange)")
    num_iterations: int = arg(1, "GRPO updates per batch of rollouts")
    reward_funcs: list[str] = arg([], "GRPO reward functions (built in, or registered by --external_plugins)",
                                  choices=_reward_funcs)
    reward_weights: list[float] = arg([], "weights of --reward_funcs")
    use_vllm: bool = arg(False, "GRPO rollouts on vLLM (default: swift-infer's PyTorch engine on the policy itself)")
    vllm_mode: Literal["colocate", "server"] = arg("colocate", "colocate: vLLM in this process (needs vLLM here); "
                                                               "server: a `swift rollout` server (needs only HTTP)")
    vllm_server_host: str | None = arg(None, "server mode: host of the `swift rollout` server")
    vllm_server_port: int = arg(8000, "server mode: its port")
    vllm_server_base_url: str | None = arg(None, "server mode: its URL, e.g. http://10.0.0.2:8000 (instead of "
                                                 "host and port)")
    vllm_server_timeout: float = arg(240.0, "server mode: seconds to wait for the server to answer at start")
    vllm_enable_lora: bool = arg(False, "LoRA training: sync the adapter into vLLM's LoRA (colocate; a server "
                                        "started with --vllm_enable_lora true) rather than merged weights")
    vllm_gpu_memory_utilization: float | None = arg(None, "colocate: vLLM's share of GPU memory (on a CPU: of "
                                                          "RAM; unset there: a VLLM_CPU_KVCACHE_SPACE GiB KV cache)")
    vllm_tensor_parallel_size: int = arg(1, "colocate: vLLM tensor parallelism")
    vllm_max_model_len: int | None = arg(None, "colocate: vLLM's longest prompt + completion (default: the "
                                               "model's, capped at max_length + max_completion_length)")
    vllm_enforce_eager: bool = arg(False, "colocate: vLLM without torch.compile / CUDA graphs (starts faster)")
    vllm_enable_prefix_caching: bool = arg(True, "colocate: reuse the KV cache of the repeated prompts of a group")
    vllm_engine_kwargs: dict | None = arg(None, "colocate: JSON of further vLLM engine arguments")
    sleep_level: Literal[0, 1, 2] = arg(0, "colocate: vLLM sleeps while the policy trains: 1 moves its weights to "
                                           "CPU RAM and frees its KV cache, 2 discards the weights too (synced "
                                           "again before the next rollout); 0: never (GPU only)")
    offload_model: bool = arg(False, "colocate: the policy's weights wait in CPU RAM while vLLM rolls out (GPU only)")
    offload_optimizer: bool = arg(False, "colocate: the optimizer state waits in CPU RAM while vLLM rolls out (GPU "
                                         "only)")


@dataclass
class PpoArgs:
    """PPO"""

    value_model: str | None = arg(None, "PPO's value model (critic): a sequence-classification checkpoint whose score "
                                        "head gives a value per token; trained with the policy's --train_type "
                                        "(default: a copy of --reward_model, else --model with a new scalar head)")
    num_ppo_epochs: int = arg(4, "PPO passes over each batch of rollouts (each pass: --num_mini_batches optimizer "
                                 "steps)")
    num_mini_batches: int = arg(1, "PPO: optimizer steps per pass over a rollout batch; a rollout batch holds "
                                   "--per_device_train_batch_size x --gradient_accumulation_steps x this many prompts")
    whiten_rewards: bool = arg(False, "PPO: scale the per-token rewards of a rollout batch to unit variance (mean "
                                      "kept) before GAE")
    kl_coef: float = arg(0.05, "PPO: weight of the per-token KL penalty against the reference model in the reward "
                               "(0: no reference forward)")
    cliprange: float = arg(0.2, "PPO: clip range of the policy ratio")
    vf_coef: float = arg(0.1, "PPO: weight of the value loss")
    cliprange_value: float = arg(0.2, "PPO: clip range of the value prediction around its rollout value")
    gamma: float = arg(1.0, "PPO: discount factor of GAE")
    lam: float = arg(0.95, "PPO: lambda of GAE")
    local_rollout_forward_batch_size: int = arg(64, "PPO: rows per forward pass while scoring rollouts (policy, "
                                                    "reference, value and reward models) and the most completions "
                                                    "the PyTorch engine decodes at once")
    missing_eos_penalty: float | None = arg(None, "PPO: subtracted from the score of a completion that hit "
                                                  "--max_completion_length without ending")
    response_length: int | None = arg(None, "PPO: ms-swift's older name of --max_completion_length (wins when given)")
    num_sample_generations: int = arg(10, "PPO with a validation split: this many times over the run, sample "
                                          "completions of the first --per_device_eval_batch_size validation prompts, "
                                          "score them and append them to <run>/completions.jsonl (0: never)")


@dataclass
class ExportArgs:
    """Export"""

    adapters: list[str] = arg([], "LoRA checkpoint(s); merged into their base first (base and template from args.json)")
    ckpt_dir: str | None = arg(None, "checkpoint directory (adapter or full weights)")
    merge_lora: bool = arg(False, "merge the adapters into the base and save a plain transformers model")
    load_data_args: bool = arg(False, "the data flags (--dataset, --split_dataset_ratio, --max_length...) of the "
                                      "args.json beside --adapters / --ckpt_dir / a local --model (a merged model "
                                      "keeps its run's): calibration or cached rows from the training data; flags "
                                      "given here win")
    output_dir: str | None = arg(None, "where the export goes (default: beside the checkpoint, or output/<model>-<kind>)")
    quant_method: Literal["gptq", "awq", "fp8", "bnb"] | None = arg(
        None, "quantize: gptq / awq (int4|int8 weights, compressed-tensors), fp8 (dynamic, no calibration), "
              "bnb (bitsandbytes int8 / nf4)")
    quant_bits: int | None = arg(None, "weight bits: 4 or 8 (gptq, awq, bnb); fp8 is always 8")
    group_size: int | None = arg(None, "quantization group size along the input dimension; must divide every "
                                       "quantized layer's input size (default: the largest of 128, 64, 32 that does)")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = arg("nf4", "--quant_method bnb --quant_bits 4: the 4-bit data "
                                                            "type")
    bnb_4bit_use_double_quant: bool = arg(True, "--quant_method bnb --quant_bits 4: quantize the quantization "
                                                "scales too (smaller, as ms-swift does by default)")
    quant_n_samples: int = arg(256, "calibration rows sampled (seeded by --data_seed) from --dataset")
    quant_batch_size: int = arg(1, "gptq / awq: calibration rows per forward pass (right-padded, the padding "
                                          "masked out of the statistics); -1: all at once. Larger is faster and "
                                          "takes more memory; the result is the same")
    to_cached_dataset: bool = arg(False, "encode --dataset (and its --split_dataset_ratio / --val_dataset split) "
                                         "with the model's template into --output_dir, for swift sft "
                                         "--cached_dataset")
    template_mode: Literal["train", "rlhf", "kto"] = arg(
        "train", "with --to_cached_dataset: the layout written: train (swift pt/sft, megatron sft), rlhf (prompt, "
        "chosen and rejected ids: swift rlhf --rlhf_type dpo/cpo/simpo/orpo/rm) or kto (prompt and completion ids "
        "with their label: --rlhf_type kto)")
    to_gguf: bool = arg(False, "write a GGUF file (llama.cpp / Ollama; transformers reads it back)")
    gguf_quant: Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"] = arg(
        "f16", "GGUF tensor type of the 2-D weights (norms stay f32)")
    to_ollama: bool = arg(False, "write an Ollama Modelfile beside the GGUF (implies --to_gguf)")
    quant_report: bool = arg(True, "measure what the export kept (next-token agreement, logit gap, perplexity) "
                                   "into quant_report.json")
    push_to_hub: bool = arg(False, "upload the export to the hub (HF_ENDPOINT picks the hub)")
    hub_model_id: str | None = arg(None, "hub repository for --push_to_hub, e.g. user/model-gptq")
    hub_private_repo: bool = arg(False, "create the hub repository private")


@dataclass
class SftArguments:
    """Supervised fine-tuning."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    tuner: TunerArgs = field(default_factory=TunerArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    galore: GaloreArgs = field(default_factory=GaloreArgs)


@dataclass
class PtArguments(SftArguments):
    """Continued pre-training on raw text (loss on every token)."""


@dataclass
class RlhfArguments(SftArguments):
    """Preference and reinforcement-learning training."""

    rlhf: RlhfArgs = field(default_factory=RlhfArgs)
    ppo: PpoArgs = field(default_factory=PpoArgs)


@dataclass
class ExportArguments:
    """Export a model or checkpoint: merged, quantized, GGUF, to the hub."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    export: ExportArgs = field(default_factory=ExportArgs)
