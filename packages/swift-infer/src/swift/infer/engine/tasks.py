"""`TaskEngine`: a checkpoint of an encoder task (`--task_type seq_cls|embedding|reranker|generative_reranker`)
scored in batches, for `swift infer` (one JSON line per row) and `swift deploy` (/v1/embeddings, /v1/rerank).

The task, its head size and problem type come from the flags, else from the checkpoint's args.json (what
`swift sft --task_type ...` recorded); the forward and the prompts are swift.core's, as in training.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core import ConfigError, read_args
from swift.infer.arguments import EngineArguments
from swift.infer.checkpoint import ServeSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """What an encoder checkpoint is: its task type, head size and (seq_cls) problem type."""

    task_type: str
    num_labels: int | None = None
    problem_type: str | None = None

    @property
    def is_reranker(self) -> bool:
        return self.task_type in ("reranker", "generative_reranker")


def _checkpoints(args: EngineArguments) -> list[str]:
    paths = [entry.partition("=")[2] if "=" in entry and not Path(entry).exists() else entry
             for entry in args.infer.adapters]
    from swift.infer.checkpoint import model_checkpoint

    return [*paths, *([args.infer.ckpt_dir] if args.infer.ckpt_dir else []),
            *([model_checkpoint(args.model.model)] if model_checkpoint(args.model.model) else [])]


def resolve_task(args: EngineArguments) -> TaskSpec:
    """--task_type / --num_labels / --problem_type, each else the first checkpoint's args.json, else causal_lm."""
    recorded = next((read_args(path) for path in _checkpoints(args) if (Path(path) / "args.json").is_file()), {})
    model = args.model
    task = model.task_type or recorded.get("task_type") or "causal_lm"
    num_labels = model.num_labels if model.num_labels is not None else recorded.get("num_labels")
    problem_type = model.problem_type or recorded.get("problem_type")
    if task == "seq_cls" and num_labels is None:
        raise ConfigError("--task_type seq_cls: how many labels? Pass --num_labels N (a checkpoint of swift sft "
                          "--task_type seq_cls records it in args.json)")
    if task == "seq_cls" and problem_type is None:
        problem_type = "regression" if num_labels == 1 else "single_label_classification"
    return TaskSpec(task, num_labels, problem_type)


class TaskEngine:
    """An encoder-task model with its template: `classify`, `embed` and `score` batches of conversations."""

    def __init__(self, args: EngineArguments, spec: ServeSpec, task: TaskSpec, *, model_name: str) -> None:
        from swift.core import build_template, head_labels, load_model, yes_no_ids
        from swift.infer.engine.pt.engine import load_adapters, merge_adapters

        if len(spec.adapters) > 1:
            raise ConfigError(f"--task_type {task.task_type}: serve one adapter at a time (got "
                              f"{sorted(spec.adapters)}), or merge them with --merge_lora true")
        model, tokenizer = load_model(args.model, model=spec.model,
                                      num_labels=head_labels(task.task_type, task.num_labels))
        model = load_adapters(merge_adapters(model, spec.merge), spec.adapters)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.eval()
        self.tokenizer, self.task, self.model_name = tokenizer, task, model_name
        self.template = build_template(args.template, tokenizer, template=spec.template, system=spec.system)
        self.yes_no = yes_no_ids(tokenizer) if task.task_type == "generative_reranker" else None
        self.max_batch_size = args.infer.max_batch_size
        self.adapters: dict[str, str] = {}  # served as the model itself: requests name no adapter
        self._lock = threading.Lock()  # server requests run in threads; one forward at a time

    @property
    def task_type(self) -> str:
        return self.task.task_type

    def close(self) -> None:
        pass

    def encode(self, messages: list[dict]) -> list[int]:
        return self.template.encode({"messages": messages})["input_ids"]

    def forward(self, sequences: list[list[int]]) -> tuple[Any, int]:
        """(outputs [N, ...] as float32 on CPU, prompt tokens), in batches of --max_batch_size."""
        import torch

        from swift.core import task_forward

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        outputs = []
        for start in range(0, len(sequences), self.max_batch_size):
            chunk = sequences[start:start + self.max_batch_size]
            longest = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(chunk):
                ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
            with self._lock, torch.inference_mode():
                out = task_forward(self.model, ids.to(device), mask.to(device), self.task_type, self.yes_no)
            outputs.append(out.float().cpu())
        return torch.cat(outputs), sum(len(s) for s in sequences)

    def classify(self, conversations: list[list[dict]]) -> list[dict[str, Any]]:
        """seq_cls: {"response": the label as text, "probs" or "logits"} per conversation."""
        from swift.core import task_messages

        logits, _ = self.forward([self.encode(task_messages(c, self.template.default_system)) for c in conversations])
        problem = self.task.problem_type
        if problem == "regression":
            return [{"response": str(row[0].item() if len(row) == 1 else row.tolist()), "logits": row.tolist()}
                    for row in logits]
        if problem == "multi_label_classification":
            probs = logits.sigmoid()
            return [{"response": str([i for i, p in enumerate(row.tolist()) if p > 0.5]), "probs": row.tolist()}
                    for row in probs]
        probs = logits.softmax(-1)
        return [{"response": str(int(row.argmax())), "probs": row.tolist()} for row in probs]

    def embed(self, inputs: list[str | list[dict]]) -> tuple[list[list[float]], int]:
        """embedding: one unit vector per text or conversation, and the prompt tokens."""
        from swift.core import task_messages

        conversations = [[{"role": "user", "content": x}] if isinstance(x, str) else x for x in inputs]
        vectors, tokens = self.forward([self.encode(task_messages(c, self.template.default_system))
                                        for c in conversations])
        return vectors.tolist(), tokens

    def score(self, query: str | list[dict], documents: list[str | list[dict]]) -> tuple[list[float], int]:
        """reranker: the relevance of each document to the query, in (0, 1) (sigmoid of the head's logit), and the
        prompt tokens. A text document is an assistant turn, as in ms-swift's rows."""
        from swift.core import pair_messages

        query = [{"role": "user", "content": query}] if isinstance(query, str) else query
        docs = [[{"role": "assistant", "content": d}] if isinstance(d, str) else d for d in documents]
        sequences = [self.encode(pair_messages(self.task_type, query, d, self.template.default_system))
                     for d in docs]
        logits, tokens = self.forward(sequences)
        return logits[:, 0].sigmoid().tolist(), tokens
