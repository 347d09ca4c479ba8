"""Mistral instruct models with [INST] turns and [TOOL_CALLS]."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

register_template(TemplateMeta(
    name="mistral",
    detect=("[INST]",),
    priority=10,
    stop_words=("</s>",),
    response_format="mistral",
    tool_call_id_length=9,
    description="Mistral / Mistral-Nemo instruct: roles must alternate; tool-call ids are 9 alphanumerics",
))
