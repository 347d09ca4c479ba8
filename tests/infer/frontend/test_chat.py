"""The terminal chat of `swift infer`: multi-turn history, `clear`, `reset-system`, `exit`, streamed answers."""

from __future__ import annotations

import builtins

from swift.infer.frontend.chat import run_interactive
from swift.infer.protocol import RequestConfig


def test_interactive_chat_keeps_history_and_obeys_commands(scripted_engine, monkeypatch, capsys):
    typed = iter(["Hello", "And then?", "clear", "reset-system", "Be brief.", "Hi again", "exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(typed))
    seen: list[list[str]] = []
    real_stream = scripted_engine.stream

    def spy(request, config=None, **kwargs):
        seen.append([f"{m.role}:{m.text}" for m in request.messages])
        return real_stream(request, config, **kwargs)

    monkeypatch.setattr(scripted_engine, "stream", spy)
    assert run_interactive(scripted_engine, RequestConfig(), None) == 0
    out = capsys.readouterr().out
    assert out.count(">>> ") == 3
    assert "Let me check." in out  # streamed content
    assert seen[0] == ["user:Hello"]
    assert seen[1][:2] == ["user:Hello", "assistant:Let me check. <tool_call>\n{\"name\": \"get_weather\", "
                                          "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"]
    assert seen[2] == ["system:Be brief.", "user:Hi again"]  # cleared, then the new system prompt


def test_ctrl_d_ends_the_chat(scripted_engine, monkeypatch):
    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    assert run_interactive(scripted_engine, RequestConfig(), None) == 0
