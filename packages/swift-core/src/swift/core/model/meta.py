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
