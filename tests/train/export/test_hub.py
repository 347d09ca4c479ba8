"""--push_to_hub against a local server speaking the few hub endpoints huggingface_hub uses (HF_ENDPOINT)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import BIN


class FakeHub:
    """Records repo creations and commits; every file is asked for inline ("regular" upload mode)."""

    def __init__(self) -> None:
        self.repos: list[dict] = []
        self.commits: list[dict] = []
        self.unknown: list[str] = []
        self.auth: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

            def _json(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                hub.auth.add(self.headers.get("Authorization", ""))
                body, base = self._body(), f"http://127.0.0.1:{hub.port}"
                parts = self.path.strip("/").split("/")
                if self.path == "/api/repos/create":
                    payload = json.loads(body)
                    hub.repos.append(payload)
                    repo = f"{payload.get('organization') or 'me'}/{payload['name']}"
                    return self._json(200, {"url": f"{base}/{repo}", "name": repo})
                if parts[:2] == ["api", "models"] and parts[4:5] == ["preupload"]:
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if parts[:2] == ["api", "models"] and parts[4:5] == ["commit"]:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    header = next(x["value"] for x in lines if x["key"] == "header")
                    files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                             for x in lines if x["key"] == "file"}
                    oid = f"{len(hub.commits) + 1:040x}"
                    hub.commits.append({"repo": "/".join(parts[2:4]), "revision": parts[5], "header": header,
                                        "files": files, "lfs": [x for x in lines if x["key"] == "lfsFile"]})
                    return self._json(200, {"commitUrl": f"{base}/{'/'.join(parts[2:4])}/commit/{oid}",
                                            "commitOid": oid, "pullRequestUrl": None})
                hub.unknown.append(f"POST {self.path}")
                return self._json(404, {"error": "not found"})

            def do_GET(self) -> None:
                hub.unknown.append(f"GET {self.path}")
                self._json(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.server.shutdown()


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_push_to_hub_sends_the_whole_export_in_one_commit(hub, tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{hub.port}", "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1"}
    run = subprocess.run([str(BIN / "swift"), "export", "--model", str(tiny_llama_dir), "--to_gguf", "true",
                          "--gguf_quant", "q8_0", "--to_ollama", "true", "--output_dir", str(out),
                          "--push_to_hub", "true", "--hub_model_id", "me/tiny-gguf", "--hub_private_repo", "true",
                          "--quant_report", "false"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [u for u in hub.unknown if u.startswith("POST")] == []  # (huggingface_hub also GETs an info endpoint)
    assert hub.repos == [{"name": "tiny-gguf", "organization": "me", "visibility": "private", "type": "model"}]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["repo"] == "me/tiny-gguf"
    assert commit["revision"] == "main"
    assert commit["header"]["summary"] == "swift export (gguf-q8_0)"
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(local) == ["Modelfile", "quant_report.json", f"{tiny_llama_dir.name}-q8_0.gguf"]
    assert commit["files"] == local
    assert "Bearer hf_test_token" in hub.auth
    printed = json.loads(run.stdout[run.stdout.index("{"):])  # the CLI prints the report
    assert printed["gguf_quant"] == "q8_0"


def test_push_refuses_offline_mode(tiny_llama_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([str(BIN / "swift"), "export", "--model", str(tiny_llama_dir), "--to_gguf", "true",
                          "--output_dir", str(tmp_path / "out"), "--push_to_hub", "true", "--hub_model_id", "me/x"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2
    assert "HF_HUB_OFFLINE" in run.stderr


def test_a_pushed_merge_carries_no_token(hub, tiny_llama_dir, tmp_path):
    """--hub_token authenticates the upload and is never part of it (args.json of the run and of the merge)."""
    token = "hf_cli_secret_token"
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello there"}]}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{hub.port}", "HF_HUB_DISABLE_XET": "1"}
    from swift.train import sft_main

    checkpoint = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(chat), "--max_steps", "1",
                           "--output_dir", str(tmp_path / "run"), "--report_to", "none",
                           "--hub_token", token]).last_checkpoint  # in process: the hub client is not used here
    push = subprocess.run([str(BIN / "swift"), "export", "--adapters", str(checkpoint), "--merge_lora", "true",
                           "--output_dir", str(tmp_path / "merged"), "--push_to_hub", "true", "--hub_model_id",
                           "me/merged", "--hub_token", token, "--quant_report", "false"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert push.returncode == 0, push.stderr[-3000:]
    (commit,) = hub.commits
    assert "args.json" in commit["files"]
    assert [name for name, data in commit["files"].items() if token.encode() in data] == []
    assert f"Bearer {token}" in hub.auth
    assert token not in push.stdout + push.stderr
