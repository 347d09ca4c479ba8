"""swift sft --task_type seq_cls / embedding / reranker / generative_reranker: the losses against independent
references, the flag checks, and each task learning a tiny task end to end (trained, then scored by swift infer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from swift.core.errors import ConfigError
from swift.core.model import task_losses as losses
from swift.infer import infer_main
from swift.train import export_main, sft_main

# Full training: a random 64-wide llama learns these in tens of steps (LoRA on it needs hundreds).
FULL = ("--train_type", "full", "--learning_rate", "3e-3", "--per_device_train_batch_size", "8", "--save_steps", "1000")
WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "candle", "forest"]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def train(model: Path, data: Path, out: Path, *extra: str) -> Path:
    result = sft_main(["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--report_to", "none",
                       "--bf16", "false", "--gradient_checkpointing", "false", "--logging_steps", "1",
                       "--warmup_ratio", "0", "--lr_scheduler_type", "constant", *extra])
    return result.last_checkpoint


def infer(checkpoint: Path, data: Path, out: Path, flag: str = "--adapters") -> list[dict]:
    assert infer_main([flag, str(checkpoint), "--val_dataset", str(data), "--result_path", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


# ----- losses: tensor in, number out, against plain-python references -----

def _unit(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows), dim=-1)


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


A = _unit([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.0, 0.4, 1.0]])
P = _unit([[0.9, 0.1, 0.1], [0.2, 0.8, 0.0], [0.5, 0.5, 0.5]])
N = _unit([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


NEG = [N[0:1], N[1:2], N[0:0]]  # row 0 and row 1 have one hard negative each, row 2 none


def _reference_infonce(rows, *, temperature=0.1, use_batch=True, mask=None, qq=False, dd=False) -> float:
    """Plain python: rows [(anchor, positive, [negatives])], ms-swift's documented InfoNCE."""
    docs = [d for _, p, n in rows for d in [p, *n]]
    starts = [sum(1 + len(n) for _, _, n in rows[:i]) for i in range(len(rows))]
    total = 0.0
    for i, (a, p, n) in enumerate(rows):
        if not use_batch:
            logits, target = [_cos(a, d) for d in [p, *n]], 0
        else:
            logits, target = [_cos(a, d) for d in docs], starts[i]
            threshold = logits[target] + (mask or 0.0)
            if mask is not None:
                logits = [x if x <= threshold else -math.inf for x in logits]
            if qq:
                others = [_cos(a, q) for j, (q, _, _) in enumerate(rows) if j != i]
                logits += [x if mask is None or x <= threshold else -math.inf for x in others]
            if dd:
                logits += [_cos(p, d) for k, d in enumerate(docs) if k != starts[i]]
        logits = [x / temperature for x in logits]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[target]
    return total / len(rows)


def _rows():
    return [(A[i].tolist(), P[i].tolist(), NEG[i].tolist()) for i in range(3)]


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.05), dict(use_batch=False),
                                     dict(mask_fake_negative=True, fake_negative_margin=-0.3),
                                     dict(include_qq=True), dict(include_dd=True),
                                     dict(include_qq=True, include_dd=True, mask_fake_negative=True,
                                          fake_negative_margin=0.0)])
def test_infonce_matches_its_reference_for_each_ms_swift_option(options):
    got = losses.infonce_groups(A, P, NEG, losses.InfoNCEOptions(**options)).item()
    mask = options.get("fake_negative_margin") if options.get("mask_fake_negative") else None
    want = _reference_infonce(_rows(), temperature=options.get("temperature", 0.1),
                              use_batch=options.get("use_batch", True), mask=mask,
                              qq=options.get("include_qq", False), dd=options.get("include_dd", False))
    assert got == pytest.approx(want, rel=1e-5)
    if mask is not None and options.get("fake_negative_margin") < 0:
        assert got != pytest.approx(_reference_infonce(_rows()), rel=1e-3)  # the mask did drop a document


def test_hard_negatives_cut_or_redraw_each_rows_negatives():
    two = losses.infonce_groups(A[:2], P[:2], [N, N[:1]], losses.InfoNCEOptions(hard_negatives=1))
    want = _reference_infonce([(A[0].tolist(), P[0].tolist(), N[:1].tolist()),
                               (A[1].tolist(), P[1].tolist(), N[:1].tolist())])
    assert two.item() == pytest.approx(want, abs=1e-6)
    padded = losses.infonce_groups(A[:1], P[:1], [N[:1]], losses.InfoNCEOptions(hard_negatives=3))
    want = _reference_infonce([(A[0].tolist(), P[0].tolist(), N[:1].tolist() * 3)])  # its only one, drawn again
    assert padded.item() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ConfigError, match="a row has no negative_messages"):
        losses.infonce_groups(A[:1], P[:1], [N[:0]], losses.InfoNCEOptions(hard_negatives=1))


def test_the_environment_sets_the_options_as_ms_swift_reads_them(monkeypatch):
    for name, value in (("INFONCE_TEMPERATURE", "0.05"), ("INFONCE_USE_BATCH", "False"),
                        ("INFONCE_HARD_NEGATIVES", "3"), ("INFONCE_MASK_FAKE_NEGATIVE", "true"),
                        ("INFONCE_FAKE_NEG_MARGIN", "0.2"), ("INFONCE_INCLUDE_QQ", "1"),
                        ("INFONCE_INCLUDE_DD", "true"), ("LISTWISE_RERANKER_TEMPERATURE", "0.5"),
                        ("LISTWISE_RERANKER_MIN_GROUP_SIZE", "3"), ("MAX_NEGATIVE_SAMPLES", "2")):
        monkeypatch.setenv(name, value)
    assert losses.InfoNCEOptions.from_env() == losses.InfoNCEOptions(0.05, False, 3, True, 0.2, True, True)
    assert losses.ListwiseOptions.from_env() == losses.ListwiseOptions(0.5, 3)
    assert losses.max_negatives(7) == 2
    monkeypatch.setenv("INFONCE_USE_BATCH", "maybe")
    with pytest.raises(ConfigError, match="INFONCE_USE_BATCH='maybe'"):
        losses.InfoNCEOptions.from_env()


def test_pair_losses_match_their_formulas():
    labels = torch.tensor([1.0, 0.0, 1.0])
    cos = [_cos(a, p) for a, p in zip(A.tolist(), P.tolist(), strict=True)]
    assert losses.cosine_similarity_loss(A, P, torch.tensor([0.8, 0.1, 0.5])).item() == pytest.approx(
        sum((c - t) ** 2 for c, t in zip(cos, [0.8, 0.1, 0.5], strict=True)) / 3, rel=1e-5)
    dist = [1 - c for c in cos]
    want = sum(0.5 * (y * d * d + (1 - y) * max(0.0, 0.5 - d) ** 2) for y, d in zip([1, 0, 1], dist, strict=True)) / 3
    assert losses.contrastive_loss(A, P, labels).item() == pytest.approx(want, rel=1e-5)
    # online: negatives closer than the farthest positive, positives farther than the closest negative
    pos, neg = [dist[0], dist[2]], [dist[1]]
    hard_neg = [d for d in neg if d < max(pos)]
    hard_pos = [d for d in pos if d > sum(pos) / len(pos)]  # one negative: the positives' mean is the bar
    want_online = sum(d * d for d in hard_pos) + sum(max(0.0, 0.5 - d) ** 2 for d in hard_neg)
    assert losses.online_contrastive_loss(A, P, labels).item() == pytest.approx(want_online, rel=1e-5)


def test_reranker_losses_match_their_formulas():
    scores = torch.tensor([2.0, -1.0, 0.5, 1.0, 3.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -sum(y * math.log(sig(s)) + (1 - y) * math.log(1 - sig(s)) for s, y in zip(scores.tolist(), labels.tolist(),
                                                                                       strict=True)) / 5
    assert losses.pointwise_reranker_loss(scores, labels).item() == pytest.approx(want, rel=1e-5)
    groups = [[2.0, -1.0, 0.5], [1.0, 3.0]]
    want_list = sum(math.log(sum(math.exp(s) for s in g)) - g[0] for g in groups) / 2
    assert losses.listwise_reranker_loss(scores, [3, 2]).item() == pytest.approx(want_list, rel=1e-5)
    assert losses.listwise_reranker_loss(scores, [3, 1, 1]).item() == pytest.approx(
        math.log(sum(math.exp(s) for s in groups[0])) - 2.0, rel=1e-5)  # groups of one document carry no loss


@pytest.mark.parametrize(("problem", "logits", "labels", "want"), [
    ("single_label_classification", [[2.0, 0.0], [0.0, 1.0]], [0, 0],
     (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2),
    ("regression", [[0.5], [2.0]], [1.0, 1.0], (0.25 + 1.0) / 2),
    ("multi_label_classification", [[0.0, 0.0]], [[1.0, 0.0]], math.log(2)),
])
def test_seq_cls_loss_by_problem_type(problem, logits, labels, want):
    assert losses.seq_cls_loss(torch.tensor(logits), torch.tensor(labels), problem).item() == pytest.approx(want)


# ----- flags: refused by name before weights load -----

@pytest.mark.parametrize(("extra", "message"), [
    (["--task_type", "embedding", "--loss_type", "dpo"], "--loss_type dpo: --task_type embedding takes infonce"),
    (["--task_type", "reranker", "--loss_type", "infonce"], "--loss_type infonce: --task_type reranker takes"),
    (["--loss_type", "infonce"], "--loss_type infonce: --task_type causal_lm takes cross_entropy"),
    (["--task_type", "seq_cls"], "--task_type seq_cls needs --num_labels"),
    (["--task_type", "embedding", "--num_labels", "3"], "--num_labels is for --task_type seq_cls"),
])
def test_task_flags_are_refused_before_the_model_loads(tmp_path, extra, message):
    data = write_rows(tmp_path / "rows.jsonl", [{"messages": user("hi"), "label": 1}])
    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        sft_main(["--model", str(tmp_path / "no-such-model"), "--dataset", str(data), *extra])


# ----- each task learns a tiny task -----

def test_seq_cls_learns_classes_and_infer_writes_labels(tiny_llama_dir, tmp_path):
    rows = [{"messages": user(f"The word is {w}."), "label": i % 4} for i, w in enumerate(WORDS)] * 4
    data = write_rows(tmp_path / "cls.jsonl", rows)
    checkpoint = train(tiny_llama_dir, data, tmp_path / "out", "--task_type", "seq_cls", "--num_labels", "4",
                       *FULL, "--max_steps", "40")
    recorded = json.loads((checkpoint / "args.json").read_text())
    assert (recorded["task_type"], recorded["num_labels"], recorded["problem_type"]) == (
        "seq_cls", 4, "single_label_classification")
    held = write_rows(tmp_path / "held.jsonl", rows[:8])
    out = infer(checkpoint, held, tmp_path / "pred.jsonl", flag="--ckpt_dir")
    assert [r["response"] for r in out] == [str(r["label"]) for r in rows[:8]]
    assert all(len(r["probs"]) == 4 and abs(sum(r["probs"]) - 1) < 1e-4 for r in out)


def test_seq_cls_lora_saves_the_head_and_merges_into_a_classifier(tiny_llama_dir, tmp_path):
    data = write_rows(tmp_path / "cls.jsonl", [{"messages": user(w), "label": i % 3} for i, w in enumerate(WORDS)])
    checkpoint = train(tiny_llama_dir, data, tmp_path / "out", "--task_type", "seq_cls", "--num_labels", "3",
                       "--max_steps", "4", "--learning_rate", "1e-2", "--per_device_train_batch_size", "4")
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert "score" in (config["modules_to_save"] or [])  # the head travels with the adapter (plain PEFT, vLLM)
    out = infer(checkpoint, data, tmp_path / "pred.jsonl")
    merged = export_main(["--adapters", str(checkpoint), "--merge_lora", "true", "--output_dir",
                          str(tmp_path / "merged")])
    again = infer(merged, data, tmp_path / "merged.jsonl", flag="--ckpt_dir")
    flat = lambda rows: [p for r in rows for p in r["probs"]]  # noqa: E731
    assert flat(again) == pytest.approx(flat(out), abs=1e-4)


def test_regression_and_multi_label_learn(tiny_llama_dir, tmp_path):
    scores = {w: i / 7 for i, w in enumerate(WORDS)}
    reg = write_rows(tmp_path / "reg.jsonl", [{"messages": user(w), "label": scores[w]} for w in WORDS] * 4)
    checkpoint = train(tiny_llama_dir, reg, tmp_path / "reg", "--task_type", "seq_cls", "--num_labels", "1",
                       *FULL, "--max_steps", "40")
    out = infer(checkpoint, reg, tmp_path / "reg.out.jsonl", flag="--ckpt_dir")[:8]
    mse = sum((float(r["response"]) - scores[w]) ** 2 for r, w in zip(out, WORDS, strict=True)) / 8
    variance = sum((s - 0.5) ** 2 for s in scores.values()) / 8  # what predicting the mean would score
    assert mse < variance / 3
    classes = {w: [i % 3, 3] if i % 2 else [i % 3] for i, w in enumerate(WORDS)}
    multi = write_rows(tmp_path / "multi.jsonl", [{"messages": user(w), "label": classes[w]} for w in WORDS] * 4)
    checkpoint = train(tiny_llama_dir, multi, tmp_path / "multi", "--task_type", "seq_cls", "--num_labels", "4",
                       *FULL, "--max_steps", "40")
    assert json.loads((checkpoint / "args.json").read_text())["problem_type"] == "multi_label_classification"
    out = infer(checkpoint, multi, tmp_path / "multi.out.jsonl", flag="--ckpt_dir")[:8]
    right = sum(json.loads(r["response"]) == sorted(classes[w]) for r, w in zip(out, WORDS, strict=True))
    assert right >= 7


def _ranked_first(scores: list[list[float]]) -> int:
    """Rows whose own candidate (index i of row i) scores highest."""
    return sum(max(range(len(row)), key=row.__getitem__) == i for i, row in enumerate(scores))


def test_embedding_ranks_paraphrases_above_random_pairs(tiny_llama_dir, tmp_path):
    rows = [{"messages": user(f"Tell me about the {w}."), "positive_messages": [user(f"{w}: a short note")],
             "negative_messages": [user(f"{WORDS[(i + 3) % 8]}: a short note")]} for i, w in enumerate(WORDS)]
    data = write_rows(tmp_path / "emb.jsonl", rows * 4)
    checkpoint = train(tiny_llama_dir, data, tmp_path / "emb", "--task_type", "embedding", *FULL, "--max_steps", "50")
    out = infer(checkpoint, write_rows(tmp_path / "pairs.jsonl", rows), tmp_path / "emb.out.jsonl", flag="--ckpt_dir")
    queries = [r["embedding"] for r in out]
    docs = [r["positive_embeddings"][0] for r in out]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in queries)  # L2-normalised
    similarity = [[_cos(q, d) for d in docs] for q in queries]
    assert _ranked_first(similarity) >= 7


@pytest.mark.parametrize(("task", "loss"), [("reranker", "pointwise_reranker"),
                                            ("generative_reranker", "listwise_reranker")])
def test_reranker_ranks_positives_above_negatives(tiny_llama_dir, tmp_path, task, loss):
    # A random 2-layer llama does not learn to match a query's word to a document's in tens of steps, so relevance
    # is in the documents' wording here; this checks the labels, groups and loss sign end to end.
    def doc(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    rows = [{"messages": user(f"Where is the {w}?"), "positive_messages": [doc(f"The {w} is in the garden.")],
             "negative_messages": [doc(f"Nobody knows about {WORDS[(i + k) % 8]}s.") for k in (1, 2, 5)]}
            for i, w in enumerate(WORDS)]
    data = write_rows(tmp_path / "rr.jsonl", rows * 3)
    checkpoint = train(tiny_llama_dir, data, tmp_path / task, "--task_type", task, "--loss_type", loss, *FULL,
                       "--max_steps", "20")
    out = infer(checkpoint, write_rows(tmp_path / "q.jsonl", rows), tmp_path / "rr.out.jsonl", flag="--ckpt_dir")
    above = sum(r["positive_scores"][0] > max(r["negative_scores"]) for r in out)
    assert above == 8
    assert all(0 < s < 1 for r in out for s in r["positive_scores"] + r["negative_scores"])


def test_a_new_head_starts_at_zero_and_a_trained_one_is_kept(tiny_llama_dir, tmp_path):
    from swift.core import get_model_tokenizer
    from swift.train.tasks import zero_new_head

    model, tokenizer = get_model_tokenizer(str(tiny_llama_dir), num_labels=2)
    assert model.score.weight.abs().sum() > 0  # transformers draws a missing head at random
    assert zero_new_head(model)
    assert model.score.weight.abs().sum() == 0
    with torch.no_grad():
        model.score.weight.fill_(0.5)
    model.save_pretrained(tmp_path / "classifier")
    tokenizer.save_pretrained(tmp_path / "classifier")
    again, _ = get_model_tokenizer(str(tmp_path / "classifier"), num_labels=2)
    assert not zero_new_head(again)
    assert torch.all(again.score.weight == 0.5)
