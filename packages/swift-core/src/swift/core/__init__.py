"""swift.core: model, template and dataset registries, arguments, and the `swift` CLI dispatcher.

`import swift.core` is light: torch, transformers and datasets load only when a function that needs them runs.
"""

from swift.core.lazy import lazy_exports

_EXPORTS = {
    # models
    "get_model_tokenizer": "swift.core.model.loader",
    "ModelInfo": "swift.core.model.loader",
    "processing_class": "swift.core.model.loader",
    "ModelMeta": "swift.core.model",
    "ModelId": "swift.core.model",
    "MODELS": "swift.core.model",
    "register_model": "swift.core.model",
    "get_model_meta": "swift.core.model",
    "find_model_meta": "swift.core.model",
    "ModelParts": "swift.core.model",
    "model_parts": "swift.core.model.media",
    "part_of": "swift.core.model.media",
    # task types beyond chat (--task_type): heads, prompts, the pooled forward
    "TASK_TYPES": "swift.core.model.tasks",
    "TASK_LOSSES": "swift.core.model.tasks",
    "task_type_of": "swift.core.model.tasks",
    "head_labels": "swift.core.model.tasks",
    "task_messages": "swift.core.model.tasks",
    "pair_messages": "swift.core.model.tasks",
    "yes_no_ids": "swift.core.model.tasks",
    "task_forward": "swift.core.model.tasks",
    "pass_hidden_states": "swift.core.model.tasks",
    "TaskEncoder": "swift.core.model.task_rows",
    "TaskBatch": "swift.core.model.task_rows",
    "task_batch": "swift.core.model.task_rows",
    "task_loss": "swift.core.model.task_rows",
    "gather_rows": "swift.core.model.task_rows",
    "task_metrics": "swift.core.model.task_rows",
    "resolve_problem_type": "swift.core.model.task_rows",
    # --rope_scaling / --max_model_len on a config (engines and megatron that read configs themselves)
    "rope_overrides": "swift.core.model.rope",
    "apply_rope_overrides": "swift.core.model.rope",
    "check_rope_flags": "swift.core.model.rope",
    # answers against references (swift infer --metric, swift sft --predict_with_generate)
    "METRICS": "swift.core.metrics",
    "score_rouge": "swift.core.metrics",
    "score_acc": "swift.core.metrics",
    # datasets
    "load_dataset": "swift.core.dataset",
    "DatasetMeta": "swift.core.dataset",
    "DATASETS": "swift.core.dataset",
    "register_dataset": "swift.core.dataset",
    "encode_dataset": "swift.core.dataset",
    "pack_dataset": "swift.core.dataset",
    "load_cached_dataset": "swift.core.dataset.cache",
    "save_cached_dataset": "swift.core.dataset.cache",
    "template_identity": "swift.core.dataset.cache",
    # media of multimodal rows
    "has_media": "swift.core.media",
    "MEDIA_COLUMNS": "swift.core.media",
    "media_columns": "swift.core.media",
    "media_messages": "swift.core.media",
    "load_image": "swift.core.media",
    "load_video": "swift.core.media",
    "load_audio": "swift.core.media",
    "MediaError": "swift.core.media",
    # templates
    "get_template": "swift.core.template",
    "Template": "swift.core.template",
    "TemplateMeta": "swift.core.template",
    "register_template": "swift.core.template",
    "TEMPLATES": "swift.core.template",
    # preference rows as prompt / chosen / rejected ids (swift rlhf's and megatron rlhf's DPO)
    "split_answer": "swift.core.preference",
    "preference_ids": "swift.core.preference",
    # reward functions (GRPO, swift sample)
    "register_reward": "swift.core.rewards",
    "REWARDS": "swift.core.rewards",
    "resolve_rewards": "swift.core.rewards",
    "reward_choices": "swift.core.rewards",
    "reward_problems": "swift.core.rewards",
    "load_reward_plugins": "swift.core.rewards",
    # advantages of group-sampled completions (swift rlhf's and megatron rlhf's GRPO family)
    "group_advantages": "swift.core.advantages",
    "total_rewards": "swift.core.advantages",
    "sequence_kl": "swift.core.advantages",
    "zero_std_groups": "swift.core.advantages",
    "completion_records": "swift.core.advantages",
    "ADVANTAGE_ESTIMATORS": "swift.core.advantages",
    "DEFAULT_REWARD_SCALE": "swift.core.advantages",
    "DEFAULT_KL_IN_REWARD": "swift.core.advantages",
    # builders per argument group
    "load_model": "swift.core.builders",
    "build_template": "swift.core.builders",
    "load_rows": "swift.core.builders",
    "encode_rows": "swift.core.builders",
    "check_data_args": "swift.core.builders",
    "check_template_args": "swift.core.builders",
    "max_length": "swift.core.builders",
    "use_bf16": "swift.core.builders",
    "DEFAULT_MAX_LENGTH": "swift.core.builders",
    # arguments
    "parse_args": "swift.core.arguments",
    "ModelArgs": "swift.core.arguments",
    "DataArgs": "swift.core.arguments",
    "TemplateArgs": "swift.core.arguments",
    # errors
    "SwiftError": "swift.core.errors",
    "ConfigError": "swift.core.errors",
    "UnknownModelError": "swift.core.errors",
    "DatasetRowError": "swift.core.errors",
    "MissingBackendError": "swift.core.errors",
    "DuplicateNameError": "swift.core.errors",
    "require_backend": "swift.core.errors",
    # runs: args.json, run directories, rank 0, launch
    "read_args": "swift.core.run",
    "adapter_for_base": "swift.core.run",
    "CONVERTED_ADAPTER": "swift.core.run",
    "write_json_atomic": "swift.core.run",
    "ARGS_FILE": "swift.core.run",
    "load_custom_register": "swift.core.plugins",
    # registries: shared helpers
    "add_entry": "swift.core.registry",
    "find_entry": "swift.core.registry",
    "choices_of": "swift.core.registry",
    "lazy_exports": "swift.core.lazy",
    # public submodules
    "env": "swift.core.env",
    "rewards": "swift.core.rewards",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
