"""Qwen2.5, Qwen3 (thinking) and DeepSeek-R1 (its distills use Qwen and Llama bases)."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

register_template(TemplateMeta(
    name="qwen2_5",
    detect=("<|im_start|>", "<tool_call>"),
    priority=20,
    default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    stop_words=("<|im_end|>", "<|endoftext|>"),
    response_format="hermes",
    description="Qwen2.5 instruct models (ChatML, Hermes-style <tool_call> JSON)",
))

register_template(TemplateMeta(
    name="qwen3",
    detect=("<|im_start|>", "<think>"),
    priority=30,
    stop_words=("<|im_end|>", "<|endoftext|>"),
    has_thinking=True,
    response_format="hermes",
    non_thinking_prefix="<think>\n\n</think>\n\n",
    description="Qwen3 / QwQ: <think> reasoning switched by enable_thinking, Hermes-style tool calls",
))

register_template(TemplateMeta(
    name="deepseek_r1",
    detect=("<｜Assistant｜>",),
    priority=40,
    stop_words=("<｜end▁of▁sentence｜>",),
    has_thinking=True,
    response_format="deepseek",
    description="DeepSeek-R1 and its distills: <think> reasoning, earlier turns' reasoning dropped by the template",
))
