"""An Ollama Modelfile beside a GGUF: FROM the file, the chat template in Ollama's Go syntax, stop words, system."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Ollama templates are Go templates, not jinja: the families we can translate exactly.
_GO_TEMPLATES = {
    "chatml": (
        "<|im_start|>",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
    ),
    "llama3": (
        "<|start_header_id|>",
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
    ),
}


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def default_system(tokenizer: Any, family: str | None) -> str | None:
    """The system prompt the chat template inserts when the conversation has none (SmolLM2: "You are a helpful...")."""
    if family is None or not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    found = re.search(_GO_TEMPLATES[family][2], text, re.S)
    return found.group(1) if found else None


def write_modelfile(gguf_path: Path, tokenizer: Any, *, system: str | None, stop_words: list[str]) -> Path:
    """`Modelfile` beside `gguf_path`; `ollama create NAME -f Modelfile` in that folder imports it."""
    template = getattr(tokenizer, "chat_template", None) or ""
    family = next((name for name, (marker, _, _) in _GO_TEMPLATES.items() if marker in template), None)
    lines = [f"FROM ./{gguf_path.name}"]
    if family:
        lines.append(f"TEMPLATE {_quoted(_GO_TEMPLATES[family][1])}")
    elif template:
        lines.append("# the chat template is not one we translate to Go; Ollama reads the GGUF's own template")
    system = system or default_system(tokenizer, family)
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    for word in dict.fromkeys(w for w in stop_words if w):
        lines.append(f'PARAMETER stop "{word}"' if '"' not in word and "\n" not in word else
                     f"PARAMETER stop {_quoted(word)}")
    path = gguf_path.with_name("Modelfile")
    path.write_text("\n".join(lines) + "\n")
    return path
