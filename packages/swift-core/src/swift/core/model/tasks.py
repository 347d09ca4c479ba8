"""Task types beyond chat (`--task_type`): which head a model loads, the text a row becomes, and the one forward
that turns a batch into class logits, an embedding or a relevance score.

Training (`swift.train.tasks`) and serving (`swift.infer`) both call these, so a checkpoint is scored at inference
exactly as it was trained: the same prompt, the same pooled token.

    seq_cls              AutoModelForSequenceClassification (--num_labels), logits at the last token
    reranker             the same with one label: query + document -> one logit
    embedding            the causal LM's backbone, hidden state of the last token, L2-normalised (ms-swift's
                         default pooling for LLM embeddings)
    generative_reranker  the causal LM itself: logit("yes") - logit("no") after a judge prompt (ms-swift's and
                         Qwen3-Reranker's convention; sigmoid of it is P(yes) / (P(yes) + P(no)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swift.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

TASK_TYPES = ("causal_lm", "seq_cls", "embedding", "reranker", "generative_reranker")
# --loss_type values per task, the first the default (seq_cls: the loss follows --problem_type).
TASK_LOSSES: dict[str, tuple[str, ...]] = {
    "causal_lm": ("cross_entropy",),
    "seq_cls": (),
    "embedding": ("infonce", "cosine_similarity", "contrastive", "online_contrastive"),
    "reranker": ("pointwise_reranker", "listwise_reranker"),
    "generative_reranker": ("pointwise_reranker", "listwise_reranker"),
}
# Qwen3-Reranker's prompt, which ms-swift documents as its generative reranker's default.
RERANK_SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
                 'Note that the answer can only be "yes" or "no".')
RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
YES_NO = ("yes", "no")


def task_type_of(task_type: str | None) -> str:
    """--task_type, causal_lm when unset."""
    return task_type or "causal_lm"


def head_labels(task_type: str | None, num_labels: int | None) -> int | None:
    """Labels of the sequence-classification head to load, None for a causal LM (embedding and generative reranker
    use the causal LM's own weights)."""
    if task_type == "seq_cls":
        return num_labels
    if task_type == "reranker":
        return num_labels or 1
    return None


def task_messages(messages: list[dict], default_system: str | None) -> list[dict]:
    """A row's conversation as an encoder task renders it: without the family's default system prompt (an
    assistant persona says nothing about the text; ms-swift's embedding and reranker templates have none), so a
    row without a system message gets --system, else an empty one."""
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": default_system or ""})
    return messages


def _text_of(messages: list[dict]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")


def _system_of(messages: list[dict]) -> str | None:
    return next((m.get("content") for m in messages if m.get("role") == "system" and m.get("content")), None)


def pair_messages(task_type: str, query: list[dict], document: list[dict], default_system: str | None) -> list[dict]:
    """Query + document as one conversation. reranker: the query's turns, then the document's (ms-swift's rows put
    documents in assistant turns); generative_reranker: the judge prompt, whose next token is "yes" or "no". An
    instruction is the document's system message, else the query's, else the default (nearest wins, as ms-swift)."""
    if task_type != "generative_reranker":
        return task_messages([*query, *[m for m in document if m.get("role") != "system"]], default_system)
    instruction = _system_of(document) or _system_of(query) or RERANK_INSTRUCTION
    content = f"<Instruct>: {instruction}\n<Query>: {_text_of(query)}\n<Document>: {_text_of(document)}"
    return [{"role": "system", "content": RERANK_SYSTEM}, {"role": "user", "content": content}]


def yes_no_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of "yes" and "no" (the generative reranker's two answers)."""
    ids = []
    for word in YES_NO:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if token_id is None or token_id == tokenizer.unk_token_id:
            encoded = tokenizer.encode(word, add_special_tokens=False)
            if len(encoded) != 1:
                raise ConfigError(f"--task_type generative_reranker: {word!r} is not one token of this tokenizer")
            token_id = encoded[0]
        ids.append(int(token_id))
    return ids[0], ids[1]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's last real token, whichever side is padded."""
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module"):  # DDP / DeepSpeed wrappers
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: layers already injected


def pass_hidden_states(model: Any) -> bool:
    """For training embedding / generative-reranker models: the LM head returns its input, so that the model's own
    forward (through DDP / DeepSpeed / FSDP wrappers, whose gradient hooks need it) gives the final hidden states
    instead of vocabulary logits. The head keeps its weight (saved as before; the generative reranker reads its
    yes / no rows). False, and nothing changed, for models that soft-cap their logits (Gemma 2/3)."""
    head = model.get_output_embeddings()
    if head is None or getattr(model.config.get_text_config(), "final_logit_softcapping", None) is not None:
        return False
    if not _passes_hidden_states(head):
        model.set_output_embeddings(_hidden_states_head(head.weight))
    return True


def _passes_hidden_states(head: Any) -> bool:
    return bool(getattr(head, "swift_passes_hidden_states", False))


def _hidden_states_head(weight: Any) -> Any:
    import torch

    class HiddenStatesHead(torch.nn.Module):
        """An LM head that returns its input, keeping the head's weight."""

        swift_passes_hidden_states = True

        def __init__(self) -> None:
            super().__init__()
            self.weight = weight

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return hidden_states

    return HiddenStatesHead()


def task_forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_type: str,
                 yes_no: tuple[int, int] | None = None) -> torch.Tensor:
    """One forward of a task model. seq_cls / reranker: [B, num_labels] logits; embedding: [B, H] unit vectors;
    generative_reranker: [B, 1] logit("yes") - logit("no") at the last token."""
    import torch.nn.functional as F

    if task_type in ("seq_cls", "reranker"):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    base = _unwrap(model)
    if _passes_hidden_states(base.get_output_embeddings()):
        # through the wrappers' forward (DDP's gradient hooks): the "logits" are the final hidden states
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    else:
        backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.model
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    last = hidden[_rows(hidden), last_token_index(attention_mask)]  # [B, H]
    if task_type == "embedding":
        return F.normalize(last.float(), p=2, dim=-1)
    if task_type == "generative_reranker":
        if yes_no is None:
            raise ValueError("generative_reranker needs the yes / no token ids")
        weight = base.get_output_embeddings().weight[list(yes_no)]  # [2, H]: only these two logits are needed
        logits = F.linear(last, weight).float()
        return logits[:, :1] - logits[:, 1:]
    raise ValueError(f"task_forward: no forward for task type {task_type!r}")


def _rows(hidden: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.arange(hidden.shape[0], device=hidden.device)
