"""`ModelMeta`: what Swift knows about one model family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelId:
    """One model under its ids on the two hubs (`ms=None`: ModelScope uses the HF id)."""

    hf: str
    ms: str | None = None

    @property
    def modelscope(self) -> str:
        return self.ms or self.hf


@dataclass(frozen=True)
class ModelParts:
    """Where a vision/audio language model keeps its parts, as module-name prefixes of the loaded model.

    `vision`: the vision (or audio) encoder; `aligner`: the projector from it into the language model (a prefix
    inside `vision` is taken out of it: Qwen2-VL's merger sits in its vision tower); `language_model`: the LLM and
    its head. `--freeze_vit / --freeze_aligner / --freeze_llm`, `--vit_lr / --aligner_lr` and what
    `--target_modules all-linear` means for a multimodal model are decided by these.
    """

    vision: tuple[str, ...]
    aligner: tuple[str, ...]
    language_model: tuple[str, ...] = ("model.language_model", "lm_head")


@dataclass(frozen=True)
class ModelMeta:
    """A model family: its ids on each hub, architectures and the template it speaks.

    `model_type` is the registry key (and the `--model_type` value). A model that is not registered but has a
    standard config still loads; registering adds its default template and quirks. `template=None` means the
    tokenizer's own chat template drives encoding.
    """

    model_type: str
    models: tuple[ModelId, ...] = ()
    architectures: tuple[str, ...] = ()
    template: str | None = None
    requires_trust_remote_code: bool = False
    default_attn_impl: str | None = None
    is_reasoning: bool = False  # emits a thinking part (<think>...</think>) before its answer
    # Vision/audio language models: the transformers `model_type`s of the family (`--model_type` is detected from
    # config.json for models that are not registered by id), their parts, and the media they take.
    config_model_types: tuple[str, ...] = ()
    parts: ModelParts | None = None
    media: tuple[str, ...] = ()  # "image", "video", "audio"
    grounding: str = "default"  # how <ref-object> / <bbox> rows are written (swift.core.template.grounding.STYLES)
    # The processor's pixel bounds come from these environment variables when they are set (ms-swift's MAX_PIXELS
    # for the Qwen-VL families): `(variable, key of the image processor's size)`.
    env_processor_kwargs: tuple[tuple[str, str], ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        out: list[str] = []
        for model in self.models:
            out += [model.hf] + ([model.ms] if model.ms and model.ms != model.hf else [])
        return tuple(out)

    def hub_id(self, model_id: str, *, modelscope: bool) -> str:
        """The id of `model_id` on the chosen hub (users may pass either hub's id)."""
        for model in self.models:
            if model_id.lower() in (model.hf.lower(), model.modelscope.lower()):
                return model.modelscope if modelscope else model.hf
        return model_id
