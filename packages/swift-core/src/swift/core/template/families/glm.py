"""GLM-4 chat models (the -hf / 0414 tokenizers that transformers loads without remote code)."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

register_template(TemplateMeta(
    name="glm4",
    detect=("[gMASK]",),
    priority=15,
    stop_words=("<|user|>", "<|observation|>", "<|endoftext|>"),
    response_format="glm4",
    description="GLM-4 chat: a tool call is the function name on one line, then its JSON arguments",
))
