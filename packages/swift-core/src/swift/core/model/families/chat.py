"""Chat model families and their main sizes. ModelScope ids are given where they differ from the HF ones."""

from swift.core.model.meta import ModelId, ModelMeta
from swift.core.model.registry import register_model


def _same(*ids: str) -> tuple[ModelId, ...]:
    return tuple(ModelId(i) for i in ids)


def _ms(owner: str, *ids: str) -> tuple[ModelId, ...]:
    """Models that ModelScope hosts under another owner but the same name."""
    return tuple(ModelId(i, f"{owner}/{i.split('/')[1]}") for i in ids)


register_model(ModelMeta(
    "qwen2_5",
    _same(*(f"Qwen/Qwen2.5-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")),
          *(f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")),
          *(f"Qwen/Qwen2.5-Coder-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B")),
          *(f"Qwen/Qwen2.5-Math-{s}-Instruct" for s in ("1.5B", "7B", "72B"))),
    architectures=("Qwen2ForCausalLM",), template="qwen2_5",
))
register_model(ModelMeta(
    "qwen3",
    _same(*(f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B")),
          *(f"Qwen/Qwen3-{s}-Base" for s in ("0.6B", "1.7B", "4B", "8B", "14B")),
          "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-235B-A22B",
          "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507", "Qwen/Qwen3-30B-A3B-Instruct-2507"),
    architectures=("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"), template="qwen3", is_reasoning=True,
))
register_model(ModelMeta(
    "llama3",
    _ms("LLM-Research", "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
        "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B",
        "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-8B",
        "meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct",
        "meta-llama/Llama-3.3-70B-Instruct"),
    architectures=("LlamaForCausalLM",), template="llama3",
))
register_model(ModelMeta(
    "mistral",
    _ms("AI-ModelScope", "mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.2",
        "mistralai/Mistral-Nemo-Instruct-2407", "mistralai/Mistral-Small-24B-Instruct-2501",
        "mistralai/Ministral-8B-Instruct-2410"),
    architectures=("MistralForCausalLM",), template="mistral",
))
register_model(ModelMeta(
    "gemma",
    _ms("LLM-Research", "google/gemma-2-2b-it", "google/gemma-2-9b-it", "google/gemma-2-27b-it",
        "google/gemma-3-1b-it", "google/gemma-3-1b-pt"),  # Gemma 3 4B and up see images: gemma3_vl
    # Gemma 2 soft-caps attention logits, which sdpa does not do: eager is what HF recommends for it.
    architectures=("Gemma2ForCausalLM", "Gemma3ForCausalLM"),
    template="gemma", default_attn_impl="eager",
))
register_model(ModelMeta(
    "phi3",
    _ms("LLM-Research", "microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-128k-instruct",
        "microsoft/Phi-3-medium-4k-instruct", "microsoft/Phi-3.5-mini-instruct"),
    architectures=("Phi3ForCausalLM",), template="phi3",
))
register_model(ModelMeta(
    "phi4",
    _ms("LLM-Research", "microsoft/phi-4", "microsoft/Phi-4-mini-instruct", "microsoft/Phi-4-reasoning"),
    architectures=("Phi3ForCausalLM",), template=None,  # its own chat template (<|im_sep|>) is right
))
register_model(ModelMeta(
    "glm4",
    (ModelId("THUDM/glm-4-9b-chat-hf", "ZhipuAI/glm-4-9b-chat-hf"), ModelId("THUDM/GLM-4-9B-0414", "ZhipuAI/GLM-4-9B-0414"),
     ModelId("THUDM/GLM-4-32B-0414", "ZhipuAI/GLM-4-32B-0414"), ModelId("THUDM/GLM-Z1-9B-0414", "ZhipuAI/GLM-Z1-9B-0414")),
    architectures=("GlmForCausalLM", "Glm4ForCausalLM"), template="glm4",
))
register_model(ModelMeta(
    "glm4_remote_code",  # the original release: tokenizer and model are code in the repository
    (ModelId("THUDM/glm-4-9b-chat", "ZhipuAI/glm-4-9b-chat"),),
    architectures=("ChatGLMModel", "ChatGLMForConditionalGeneration"), template="glm4",
    requires_trust_remote_code=True,
))
register_model(ModelMeta(
    "deepseek_r1_distill",
    _same(*(f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{s}" for s in ("1.5B", "7B", "14B", "32B")),
          "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"),
    architectures=("Qwen2ForCausalLM", "LlamaForCausalLM"), template="deepseek_r1", is_reasoning=True,
))
register_model(ModelMeta(
    "internlm2_5",
    _ms("Shanghai_AI_Laboratory", "internlm/internlm2_5-1_8b-chat", "internlm/internlm2_5-7b-chat",
        "internlm/internlm2_5-7b-chat-1m", "internlm/internlm2_5-20b-chat"),
    architectures=("InternLM2ForCausalLM",), template="internlm2", requires_trust_remote_code=True,
))
register_model(ModelMeta(
    "yi",
    (*_ms("01ai", "01-ai/Yi-1.5-6B-Chat", "01-ai/Yi-1.5-9B-Chat", "01-ai/Yi-1.5-34B-Chat", "01-ai/Yi-6B-Chat",
          "01-ai/Yi-34B-Chat"),),
    architectures=("LlamaForCausalLM",), template="yi",
))
register_model(ModelMeta(
    "smollm2",
    _same(*(f"HuggingFaceTB/SmolLM2-{s}-Instruct" for s in ("135M", "360M", "1.7B")),
          *(f"HuggingFaceTB/SmolLM2-{s}" for s in ("135M", "360M", "1.7B"))),
    architectures=("LlamaForCausalLM",), template="smollm2",
))
