"""`swift deploy` as a process: it listens on 127.0.0.1, and SIGTERM lets a running stream finish before exiting."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx

from tests.conftest import BIN
from tests.infer.conftest import free_port


def test_sigterm_drains_a_running_stream(tiny_llama_dir, tmp_path):
    port = free_port()
    log = (tmp_path / "deploy.log").open("w")
    server = subprocess.Popen([str(BIN / "swift"), "deploy", "--model", str(tiny_llama_dir), "--port", str(port),
                               "--served_model_name", "tiny", "--log_interval", "0"],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "deploy.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200,
                    "temperature": 0, "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if '"content"' in line:
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        server.send_signal(signal.SIGTERM)
        reader.join(120)
        assert server.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in data[-2]  # the stream ran to its end, not cut by the shutdown
    assert "127.0.0.1" in (tmp_path / "deploy.log").read_text()
