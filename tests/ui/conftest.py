"""Browser fixtures: Debian's chromium driven by Playwright, and `swift web-ui` / `swift app` servers on 127.0.0.1.

Under CI=true a missing browser fails the browser tests; elsewhere they are skipped, loudly, with the install line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = "sudo apt-get install -y chromium   (or: make setup, as root)"
SWIFT = str(Path(sys.executable).parent / "swift")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        message = f"browser tests need Debian's chromium and playwright: {INSTALL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if opener.open(url, timeout=5).status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing answers on {url}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def serve(args: list[str], tmp_path: Path, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `swift <args> --server_port P` until the block ends; yield its URL."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([SWIFT, *args, "--server_port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id}").locator("input, textarea").first
    box.fill(value)
    box.press("Tab")


def fill_flag(page, flag: str, value: str, *, tries: int = 5) -> None:
    """Fill the first tab's `--flag` field and wait until the command box shows `--flag value`.

    Under load the page may re-render a field of a freshly opened accordion after it was typed into; Start sends
    what the page holds, so the test waits for the server's echo (and types again) instead of racing it.
    """
    for _ in range(tries):
        fill(page, flag, value)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            argv = shlex.split(page.locator("#command textarea").input_value())
            if f"--{flag}" in argv and argv[argv.index(f"--{flag}") + 1] == value:
                return
            page.wait_for_timeout(250)
    raise AssertionError(f"the command box never showed --{flag} {value}: {argv}")


def box_text(page, elem_id: str) -> str:
    loc = page.locator(f"#{elem_id}")
    return loc.inner_text() + " ".join(b.input_value() for b in loc.locator("input, textarea").all())
