"""`--push_to_hub`: one commit with the whole export folder (HF_ENDPOINT picks the hub, as for every HF client)."""

from __future__ import annotations

import logging
from pathlib import Path

from swift.core import ConfigError, SwiftError, env

logger = logging.getLogger(__name__)


def push_folder(folder: Path, repo_id: str, *, token: str | None, private: bool, message: str) -> dict:
    """Create `repo_id` if needed and upload `folder` in one commit; returns the commit's url and id."""
    if env.hub_offline():
        raise ConfigError("--push_to_hub: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set; unset it to upload")
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token or env.hub_token())
    # One commit with every file (create_commit, not upload_folder's multi-commit pipeline): the export arrives whole.
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in sorted(folder.rglob("*")) if p.is_file()]
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(repo_id=repo_id, operations=operations, commit_message=message, repo_type="model")
    except HfHubHTTPError as e:
        raise SwiftError(f"--push_to_hub {repo_id}: the hub refused: {e}") from e
    logger.info("pushed %s to %s (%s)", folder, repo, commit.oid)
    return {"repo": str(repo), "commit": commit.oid, "commit_url": commit.commit_url}
