"""The catalogue of `swift` subcommands: which member provides each, and a one-line description.

Members register the callables under the entry-point group `swift.commands`; this table lets `swift --help` list
a command, and say how to install it, even when its package is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRY_POINT_GROUP = "swift.commands"


@dataclass(frozen=True)
class CommandInfo:
    name: str
    package: str  # distribution that provides it
    description: str


COMMANDS: dict[str, CommandInfo] = {
    c.name: c
    for c in [
        CommandInfo("sft", "swift-train", "supervised fine-tuning: LoRA and the PEFT family, full, freeze, LISA"),
        CommandInfo("pt", "swift-train", "continued pre-training on raw text"),
        CommandInfo("rlhf", "swift-train", "preference and RL training: DPO, KTO, CPO, SimPO, ORPO, RM, GKD, GRPO"),
        CommandInfo("export", "swift-train", "merge LoRA, quantize (GPTQ, AWQ, FP8, bnb), GGUF and Ollama, push to hub"),
        CommandInfo("merge-lora", "swift-train", "merge a LoRA checkpoint into its base model (export --merge_lora true)"),
        CommandInfo("infer", "swift-infer", "chat with a model, or run a dataset through it (pt, vllm, sglang, lmdeploy)"),
        CommandInfo("deploy", "swift-infer", "serve a model over an OpenAI-compatible HTTP API"),
        CommandInfo("eval", "swift-infer", "evaluate a model or a running server with EvalScope"),
        CommandInfo("rollout", "swift-infer", "serve vLLM rollouts for GRPO training (not built yet)"),
        CommandInfo("sample", "swift-infer", "sample several responses per prompt and score them (not built yet)"),
        CommandInfo("app", "swift-ui", "a chat web app on a model"),
        CommandInfo("web-ui", "swift-ui", "a web UI for training, inference, evaluation and export"),
    ]
}


def install_line(package: str) -> str:
    return f'pip install "{package}"'
