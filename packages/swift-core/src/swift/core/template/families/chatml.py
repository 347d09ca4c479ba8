"""ChatML and its plain variants (Yi, SmolLM2, InternLM2), plus `hf`: the tokenizer's own template, nothing added."""

from swift.core.template.meta import TemplateMeta
from swift.core.template.registry import register_template

# Swift's fallback for tokenizers without a chat template: ChatML, with Hermes-style tools and <think> reasoning.
# Every prefix of a conversation renders as a prefix of the whole, so loss masks are exact.
CHATML = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.reasoning_content %}"
    "{{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message.content or '' }}"
    "{%- for tool_call in message.tool_calls or [] %}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The plain ChatML loop that Yi and SmolLM2 ship (no tools); InternLM2 puts the BOS token first.
_PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

register_template(TemplateMeta(
    name="hf",
    description="the tokenizer's own chat template with nothing added (the pick for families Swift does not know)",
))

register_template(TemplateMeta(
    name="chatml",
    detect=("<|im_start|>",),
    chat_template=CHATML,
    stop_words=("<|im_end|>",),
    response_format="hermes",
    description="ChatML; Swift's fallback for tokenizers without a chat template",
))

register_template(TemplateMeta(
    name="yi",
    detect=("<|im_start|>",),
    detect_tokens=("<|startoftext|>",),
    priority=20,
    chat_template=_PLAIN_CHATML,
    stop_words=("<|im_end|>", "<|endoftext|>"),
    description="01-ai Yi chat models (ChatML, legacy sentencepiece tokenizer)",
))

register_template(TemplateMeta(
    name="smollm2",
    detect=("<|im_start|>", "SmolLM"),
    priority=30,
    chat_template=_PLAIN_CHATML,
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    stop_words=("<|im_end|>", "<|endoftext|>"),
    description="HuggingFaceTB SmolLM2 instruct models",
))

register_template(TemplateMeta(
    name="internlm2",
    detect=("<|im_start|>",),
    detect_tokens=("<|action_start|>",),
    priority=20,
    chat_template="{{ bos_token }}" + _PLAIN_CHATML,
    default_system=(
        "You are an AI assistant whose name is InternLM (书生·浦语).\n"
        "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
        "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
        "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the user such as "
        "English and 中文."
    ),
    stop_words=("<|im_end|>", "<|action_end|>"),
    response_format="internlm2",
    description="InternLM2 / InternLM2.5 chat models",
))
