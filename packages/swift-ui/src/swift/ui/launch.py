"""Serve a page safely: 127.0.0.1 unless asked, a warning for an open address without --auth, no share link unless
asked, Gradio's analytics off (with analytics on, on a network that drops packets, the process never exits)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from swift.core import ConfigError, MissingBackendError

logger = logging.getLogger(__name__)
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth: give user:password")
    return user, password


def check_ui_flags(ui: Any) -> tuple[str, str] | None:
    problems = []
    if not 0 <= ui.server_port <= 65535:
        problems.append(f"--server_port {ui.server_port}: give a port from 0 to 65535")
    try:
        auth = parse_auth(ui.auth)
    except ConfigError as e:
        problems.append(str(e))
        auth = None
    if problems:
        raise ConfigError("; ".join(problems))
    return auth


def import_gradio() -> Any:
    # Gradio reads this when it is imported: the one environment write of swift.ui, made before that import and
    # only when the user has not chosen.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise MissingBackendError("gradio", extra="swift-ui") from e
    return gradio


def launch(build: Callable[[str], Any], ui: Any) -> int:
    """Build the page in the chosen language and serve it until interrupted."""
    from swift.ui.i18n import resolve_lang

    auth = check_ui_flags(ui)
    lang = resolve_lang(ui.lang)
    import_gradio()
    if ui.server_name not in LOCAL_NAMES and auth is None:
        # Printed, not logged: it must reach the terminal whatever the logging setup.
        print(f"WARNING: --server_name {ui.server_name} without --auth user:password: the page is open to anyone "
              "who reaches this address (and can start processes on this machine)", file=sys.stderr, flush=True)
    demo = build(lang)
    port = ui.server_port or None
    demo.queue(default_concurrency_limit=8).launch(
        server_name=ui.server_name, server_port=port, share=ui.share, auth=auth, ssr_mode=False,
        inbrowser=False, show_error=True, quiet=False)
    return 0
