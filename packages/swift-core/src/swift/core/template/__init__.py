"""Chat templates: conversations -> `input_ids` and `labels`, token-exact with the tokenizer's own chat template.

    template = get_template(None, tokenizer)          # the tokenizer's family, or its own chat template
    row = template.encode({"messages": [...], "tools": [...]})
    batch = template.data_collator([row, ...])

torch and transformers load only when a template encodes, collates or checks a tokenizer.
"""

from swift.core.template import families as _families  # noqa: F401  (registers the built-in templates)
from swift.core.template.agent import AGENT_TEMPLATES, AgentTemplate, get_agent_template, register_agent_template
from swift.core.template.encode import IGNORE_INDEX
from swift.core.template.errors import RowTooLongError, TemplateError
from swift.core.template.loss_scale import LOSS_SCALES, LossScaleMeta, parse_loss_scale, register_loss_scale
from swift.core.template.meta import TemplateMeta
from swift.core.template.parse import parse_response
from swift.core.template.registry import TEMPLATES, detect_template_meta, get_template_meta, register_template
from swift.core.template.template import Template, TemplateOptions, get_template

__all__ = [
    "AGENT_TEMPLATES",
    "IGNORE_INDEX",
    "LOSS_SCALES",
    "TEMPLATES",
    "AgentTemplate",
    "LossScaleMeta",
    "RowTooLongError",
    "Template",
    "TemplateError",
    "TemplateMeta",
    "TemplateOptions",
    "detect_template_meta",
    "get_agent_template",
    "get_template",
    "get_template_meta",
    "parse_loss_scale",
    "parse_response",
    "register_agent_template",
    "register_loss_scale",
    "register_template",
]
