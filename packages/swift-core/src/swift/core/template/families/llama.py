"""Llama 3.x instruct models."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

register_template(TemplateMeta(
    name="llama3",
    detect=("<|start_header_id|>",),
    priority=10,
    stop_words=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    response_format="llama3_json",
    description="Llama 3 / 3.1 / 3.2 instruct (the template adds today's date to the system header)",
))
