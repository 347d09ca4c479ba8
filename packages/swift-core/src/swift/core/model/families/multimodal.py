"""Vision and audio language models (transformers' `<X>ForConditionalGeneration` layout, loaded with AutoProcessor).

`config_model_types` lets a model that is not registered by id (a fine-tune, a local directory) find its family
from config.json; a model of a type not listed here still loads when transformers has a processor and a multimodal
class for it (its parts are then found by transformers' usual attribute names, `swift.core.model.media`).
"""

from swift.core.model.meta import ModelId, ModelMeta, ModelParts
from swift.core.model.registry import register_model


def _same(*ids: str) -> tuple[ModelId, ...]:
    return tuple(ModelId(i) for i in ids)


# Qwen-VL: the merger (the aligner) sits inside the vision tower; Qwen3-VL adds deepstack mergers beside it.
_QWEN_VL = ModelParts(vision=("model.visual",), aligner=("model.visual.merger", "model.visual.deepstack_merger_list"))
_PROJECTOR = ModelParts(vision=("model.vision_tower",), aligner=("model.multi_modal_projector",))
_IDEFICS = ModelParts(vision=("model.vision_model",), aligner=("model.connector",),
                      language_model=("model.text_model", "lm_head"))
# ms-swift's variables (qwen_vl_utils' names): the largest image, in pixels, the processor resizes to.
_QWEN_PIXELS = (("MAX_PIXELS", "longest_edge"), ("MIN_PIXELS", "shortest_edge"))

register_model(ModelMeta(
    "qwen2_vl",
    _same(*(f"Qwen/Qwen2-VL-{s}-Instruct" for s in ("2B", "7B", "72B")), *(f"Qwen/Qwen2-VL-{s}" for s in ("2B", "7B", "72B")),
          "Qwen/QVQ-72B-Preview"),
    architectures=("Qwen2VLForConditionalGeneration",), template="qwen2_5", config_model_types=("qwen2_vl",),
    parts=_QWEN_VL, media=("image", "video"), env_processor_kwargs=_QWEN_PIXELS, grounding="qwen2_vl",
))
register_model(ModelMeta(
    "qwen2_5_vl",
    _same(*(f"Qwen/Qwen2.5-VL-{s}-Instruct" for s in ("3B", "7B", "32B", "72B"))),
    architectures=("Qwen2_5_VLForConditionalGeneration",), template="qwen2_5", config_model_types=("qwen2_5_vl",),
    parts=_QWEN_VL, media=("image", "video"), env_processor_kwargs=_QWEN_PIXELS, grounding="qwen2_5_vl",
))
register_model(ModelMeta(
    "qwen3_vl",
    _same(*(f"Qwen/Qwen3-VL-{s}-{kind}" for s in ("2B", "4B", "8B", "32B", "30B-A3B", "235B-A22B")
            for kind in ("Instruct", "Thinking"))),
    architectures=("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration"), template="qwen3",
    config_model_types=("qwen3_vl", "qwen3_vl_moe"), parts=_QWEN_VL, media=("image", "video"),
    env_processor_kwargs=_QWEN_PIXELS, grounding="qwen3_vl",
))
register_model(ModelMeta(
    "llava",
    _same("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf", "llava-hf/llava-interleave-qwen-0.5b-hf",
          "llava-hf/llava-interleave-qwen-7b-hf", "llava-hf/bakLlava-v1-hf"),
    architectures=("LlavaForConditionalGeneration",), config_model_types=("llava",), parts=_PROJECTOR, media=("image",),
))
register_model(ModelMeta(
    "internvl",
    _same(*(f"OpenGVLab/InternVL3-{s}-hf" for s in ("1B", "2B", "8B", "9B", "14B", "38B", "78B")),
          *(f"OpenGVLab/InternVL3_5-{s}-HF" for s in ("1B", "2B", "4B", "8B", "14B", "38B"))),
    architectures=("InternVLForConditionalGeneration",), config_model_types=("internvl",), parts=_PROJECTOR,
    media=("image", "video"), grounding="internvl",
))
register_model(ModelMeta(
    "gemma3_vl",
    tuple(ModelId(f"google/gemma-3-{s}-{kind}", f"LLM-Research/gemma-3-{s}-{kind}")
          for s in ("4b", "12b", "27b") for kind in ("it", "pt")),
    architectures=("Gemma3ForConditionalGeneration",), template="gemma", default_attn_impl="eager",
    config_model_types=("gemma3",), parts=_PROJECTOR, media=("image",),
))
register_model(ModelMeta(
    "idefics3",
    _same("HuggingFaceM4/Idefics3-8B-Llama3", "HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-500M-Instruct",
          "HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
          "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct"),
    architectures=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
    config_model_types=("idefics3", "smolvlm"), parts=_IDEFICS, media=("image",),
))
register_model(ModelMeta(
    "qwen2_audio",
    _same("Qwen/Qwen2-Audio-7B-Instruct", "Qwen/Qwen2-Audio-7B"),
    architectures=("Qwen2AudioForConditionalGeneration",), template="qwen2_5", config_model_types=("qwen2_audio",),
    parts=ModelParts(vision=("model.audio_tower",), aligner=("model.multi_modal_projector",)), media=("audio",),
))
