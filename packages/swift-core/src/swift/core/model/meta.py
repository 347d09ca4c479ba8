"""`ModelMeta`: what Swift knows about one model family."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelMeta:
    """A model family: its ids on each hub, architectures and the template it speaks.

    `model_type` is the registry key (and the `--model_type` value). A model that is not registered but has a
    standard config still loads; registering adds its default template and quirks.
    """

    model_type: str
    hf_ids: tuple[str, ...] = ()
    ms_ids: tuple[str, ...] = ()  # ModelScope ids, where they differ from the HF ones
    architectures: tuple[str, ...] = ()
    template: str | None = None
    requires_trust_remote_code: bool = False
    default_attn_impl: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ids(self) -> tuple[str, ...]:
        return self.hf_ids + tuple(i for i in self.ms_ids if i not in self.hf_ids)
