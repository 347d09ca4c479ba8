"""Registered template families: each module is data, one `register_template(...)` per family."""

from swift.core.template.families import chatml, gemma, glm, llama, mistral, phi, qwen  # noqa: F401  (register)
