"""Screenshots of `swift web-ui` and `swift app` for docs/ (PNG, kept under 300 KB each).

    .venv/bin/python scripts/ui_screenshots.py [--model HuggingFaceTB/SmolLM2-135M-Instruct] [--out docs/images]

Starts both pages on free ports of 127.0.0.1, drives them in Debian's chromium (Playwright), asks the app one
question, and writes web-ui.png, web-ui-zh.png and app.png.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWIFT = str(Path(sys.executable).parent / "swift")
LIMIT = 300 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(args: list[str], env: dict[str, str]):
    port = free_port()
    process = subprocess.Popen([SWIFT, *args, "--server_port", str(port)], env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(480):
            with contextlib.suppress(OSError):
                if opener.open(url, timeout=5).status == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"swift {args[0]} exited with {process.returncode}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def shoot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=False)
    size = path.stat().st_size
    if size > LIMIT:
        raise SystemExit(f"{path} is {size // 1024} KB, over the 300 KB limit")
    print(f"{path} ({size // 1024} KB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: sudo apt-get install -y chromium")
    env = {"NO_PROXY": "127.0.0.1,localhost", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for lang in ("en", "zh"):
            runs = tempfile.mkdtemp(prefix="swift-ui-shots-")  # an empty runs list, not the user's
            with serve(["web-ui", "--runs_dir", str(runs)], {**env, "SWIFT_UI_LANG": lang}) as url:
                page.goto(url)
                page.locator("#model").wait_for(timeout=60000)
                for elem_id, value in (("model", opts.model), ("dataset", "self-cognition#500"),
                                       ("max_steps", "30"), ("output_dir", "output/demo")):
                    box = page.locator(f"#{elem_id}").locator("input, textarea").first
                    box.fill(value)
                    box.press("Tab")
                # Wait until the command box shows every value and no event is pending (no spinners on the shot).
                page.wait_for_function("document.querySelector('#command textarea').value.includes('--max_steps 30')",
                                       timeout=60000)
                page.locator(".pending, .generating").first.wait_for(state="detached", timeout=60000)
                page.wait_for_timeout(1000)
                shoot(page, out / ("web-ui.png" if lang == "en" else "web-ui-zh.png"))
        with serve(["app", "--model", opts.model, "--temperature", "0", "--max_new_tokens", "64"], env) as url:
            page.goto(url)
            box = page.locator("#chat_input").locator("textarea, input").first
            box.wait_for(timeout=240000)
            box.fill("What is the capital of France?")
            box.press("Enter")
            page.locator("#chatbot").get_by_text("Paris").first.wait_for(timeout=240000)
            page.wait_for_timeout(1000)
            shoot(page, out / "app.png")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
