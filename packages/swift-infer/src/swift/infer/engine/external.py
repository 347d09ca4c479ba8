"""What the engines over external servers-in-a-library (vLLM, SGLang, LMDeploy) share: the tokenizer and the
model directory from our loader, the generation config, and the refusal of --merge_lora (merge, then serve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift.core.errors import ConfigError

if TYPE_CHECKING:
    from swift.infer.arguments import InferArguments
    from swift.infer.checkpoint import ServeSpec


def load_tokenizer(model: str, *, trust_remote_code: bool = False) -> tuple[Any, str]:
    """(tokenizer, local model directory): the id resolved as `get_model_tokenizer` does, weights not read."""
    from swift.core import get_model_tokenizer

    _, tokenizer = get_model_tokenizer(model, load_model=False, trust_remote_code=trust_remote_code)
    return tokenizer, str(tokenizer.swift_model_info.model_dir)


def read_generation_config(model_dir: str) -> dict[str, Any]:
    path = Path(model_dir) / "generation_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_spec(spec: ServeSpec, backend: str) -> None:
    if spec.merge:
        raise ConfigError(f"--merge_lora with --infer_backend {backend}: merge first (swift export --merge_lora "
                          "true) and serve the merged model, or serve the adapter unmerged")


def engine_setup(spec: ServeSpec, args: InferArguments) -> tuple[Any, str, Any, Any]:
    """(tokenizer, model_dir, template, default request config) for an external engine built from flags."""
    from swift.infer.build import default_request_config, load_template

    tokenizer, model_dir = load_tokenizer(spec.model, trust_remote_code=args.model.trust_remote_code)
    return tokenizer, model_dir, load_template(args, spec, tokenizer), default_request_config(args)
