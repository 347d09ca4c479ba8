"""Google Gemma instruct models."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

register_template(TemplateMeta(
    name="gemma",
    detect=("<start_of_turn>",),
    priority=10,
    chat_template=(
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    ),
    stop_words=("<end_of_turn>", "<eos>"),
    description="Gemma / Gemma 2 instruct (no system role; roles alternate)",
))
