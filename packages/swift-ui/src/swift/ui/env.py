"""Environment variables swift.ui reads (read only; `launch` sets Gradio's analytics switch for its own import)."""

from __future__ import annotations

import os
from pathlib import Path

from swift.core import env


def ui_lang() -> str | None:
    """SWIFT_UI_LANG=en|zh: the interface language when --lang is not given."""
    value = os.environ.get("SWIFT_UI_LANG", "").strip().lower()
    return value or None


def default_runs_dir() -> Path:
    return env.swift_cache() / "web-ui" / "runs"
