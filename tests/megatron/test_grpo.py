"""GRPO on mcore, stage 1: the weight sync mcore -> HF (swift/megatron/sync.py). After a few optimizer steps the
HF rollout model, loaded from the same checkpoint and synced, gives the mcore policy's logits: one process and
TP=2, full and LoRA (merged), tied and untied embeddings, a vocabulary that TP=2 pads; under PP=2 the gathered
state dict is the whole model's conversion, bit for bit.

Run as a script under torchrun (`_sync_case`), the file is its own two-process worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("megatron.core")

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 251  # odd: TP=2 pads the mcore vocabulary to 252, the sync strips the padded row


def _sync_case(model_dir: str, train_type: str, tp: int, dst: int | None) -> dict:
    """Train the mcore model 3 Adam steps on a next-token loss, sync it into a fresh HF model of `model_dir`,
    and compare logits on held-out tokens. Returns (on every rank) the largest difference, and how far the
    trained logits moved from the initial ones (so a sync that copied nothing would fail)."""
    import torch
    import torch.distributed as dist
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region
    from transformers import AutoModelForCausalLM

    from swift.megatron.convert import ModelShape, hf_to_mcore, pad_vocab, padded_vocab_size, shard
    from swift.megatron.lora import LoraSpec, attach_lora, init_lora_full, resolve_targets
    from swift.megatron.model import Parallel, build_gpt, load_local, rank_position, transformer_config
    from swift.megatron.parallel import megatron_session
    from swift.megatron.sync import sync_to_hf

    parallel = Parallel(tp=tp)
    with megatron_session(parallel, seed=0):
        initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        shape = ModelShape.from_hf(initial.config)
        gpt = build_gpt(initial.config, shape, transformer_config(initial.config, shape, parallel,
                                                                  dtype=torch.float32), tp=tp)
        spec, lora_full = None, {}
        if train_type == "lora":
            spec = LoraSpec(4, 8, 0.0, resolve_targets(["all-linear"]))
            attach_lora(gpt, spec, torch.float32)
            lora_full = init_lora_full(shape, spec, seed=0)
        full = pad_vocab(hf_to_mcore(initial.state_dict(), shape), padded_vocab_size(shape.vocab_size, tp))
        load_local(gpt, shard(full | lora_full, shape, tp=tp, **rank_position()))
        optimizer = torch.optim.Adam([p for p in gpt.parameters() if p.requires_grad], lr=1e-2)
        generator = torch.Generator().manual_seed(1)  # the same tokens on every rank
        train_ids = torch.randint(0, VOCAB, (2, 16), generator=generator)
        test_ids = torch.randint(0, VOCAB, (2, 12), generator=generator)

        def positions(ids):
            return torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)

        gpt.train()
        for _ in range(3):
            loss = gpt(input_ids=train_ids[:, :-1], position_ids=positions(train_ids[:, :-1]), attention_mask=None,
                       labels=train_ids[:, 1:]).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        gpt.eval()
        with torch.no_grad():
            local = gpt(input_ids=test_ids, position_ids=positions(test_ids), attention_mask=None)
            mcore = gather_from_tensor_model_parallel_region(local)[..., :VOCAB]  # [b, s, vocab]
            expected_initial = initial(test_ids).logits
        rollout = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        receives = dst is None or dist.get_rank() == dst
        sync_to_hf(gpt, rollout if receives else None, shape, parallel, lora_spec=spec, dst=dst)
        result = {}
        if receives:
            with torch.no_grad():
                synced = rollout(test_ids).logits
            result = {"max_diff": (synced - mcore).abs().max().item(),
                      "moved": (mcore - expected_initial).abs().max().item(), "rank": dist.get_rank()}
        return result


def _pipeline_case(model_dir: str, train_type: str, dst: int | None) -> dict:
    """PP=2 (no training: the stages' pieces are the loaded weights, LoRA B drawn non-zero): the gathered HF state
    dict equals the conversion of the whole weights, bit for bit."""
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from swift.megatron.convert import ModelShape, hf_to_mcore, mcore_to_hf, shard
    from swift.megatron.lora import LoraSpec, attach_lora, init_lora_full, merge_lora_full, resolve_targets
    from swift.megatron.model import Parallel, build_gpt, load_local, rank_position, transformer_config
    from swift.megatron.parallel import megatron_session
    from swift.megatron.sync import gather_hf_state

    parallel = Parallel(pp=2)
    with megatron_session(parallel, seed=0):
        initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        shape = ModelShape.from_hf(initial.config)
        gpt = build_gpt(initial.config, shape, transformer_config(initial.config, shape, parallel,
                                                                  dtype=torch.float32), tp=1)
        full, spec = hf_to_mcore(initial.state_dict(), shape), None
        if train_type == "lora":
            spec = LoraSpec(4, 8, 0.0, resolve_targets(["all-linear"]))
            attach_lora(gpt, spec, torch.float32)
            generator = torch.Generator().manual_seed(3)
            full |= {k: (torch.randn(v.shape, generator=generator) if ".lora_B." in k else v)
                     for k, v in init_lora_full(shape, spec, seed=0).items()}
        load_local(gpt, shard(full, shape, pp=2, **rank_position()))
        state = gather_hf_state(gpt, shape, parallel, lora_spec=spec, dst=dst)
        if state is None:
            return {}
        expected = mcore_to_hf(merge_lora_full(full, spec) if spec else full, shape)
        same = sorted(expected) == sorted(state) and all(torch.equal(expected[k], state[k]) for k in expected)
        return {"max_diff": 0.0 if same else float("inf"), "moved": 1.0, "rank": dist.get_rank()}


def _tiny(directory: Path, tied: bool) -> str:
    from tests.megatron.conftest import save_tiny, tiny_config

    return str(save_tiny(directory, tiny_config("llama", VOCAB, tied=tied)))


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("train_type", ["full", "lora"])
def test_synced_hf_model_gives_the_trained_mcore_logits(tmp_path, train_type, tied):
    result = _sync_case(_tiny(tmp_path / "model", tied), train_type, tp=1, dst=None)
    assert result["moved"] > 1e-2  # the steps changed the model: the HF copy could not pass by staying put
    assert result["max_diff"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "train_type", "tied", "dst"), [
    ("tp2", "full", False, None), ("tp2", "lora", False, 0), ("tp2", "full", True, 0), ("tp2", "lora", True, None),
    ("pp2", "full", True, None), ("pp2", "lora", False, 1)])
def test_sync_under_tensor_and_pipeline_parallelism(tmp_path, layout, train_type, tied, dst):
    model_dir = _tiny(tmp_path / "model", tied)
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    from tests.megatron.conftest import _free_port

    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), __file__, layout, model_dir, train_type, str(dst),
                           str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == (2 if dst is None else 1)
    for result in results:
        assert result["moved"] > 1e-2
        assert result["max_diff"] < 1e-5


# ------------------------------------------------------------------------------------------ the loss, by hand


def reduce_tokens(per_token, mask, settings, *, num_items: float | None = None,
                  accumulation: int = 1):
    """trl 1.16's aggregation of the per-token GRPO loss (the reference the mcore reduction is checked against):
    the micro-batch's share of the step's loss; summed over a step's micro-batches it is
    trl's step loss. `accumulation`: micro-batches per step (trl's gradient-accumulation normaliser); `num_items`
    (dapo): the global batch's completion tokens divided by the data-parallel size when gradients are averaged
    over it (trl's num_items_in_batch / processes)."""
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    if settings.loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if settings.loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if settings.loss_type == "dr_grpo":
        return masked.sum() / (per_token.size(0) * settings.max_completion_length) / accumulation
    if settings.loss_type == "dapo":
        if num_items is None:
            raise ValueError("dapo normalises by the step's completion tokens: pass num_items")
        return masked.sum() / max(num_items, 1.0)
    raise ValueError(f"--loss_type {settings.loss_type!r}: not one of trl's aggregations here")


def _hand_loss(loss_type, policy, old, ref, mask, adv, eps, eps_high, beta, max_len, num_items):
    """trl 1.16's GRPO loss in plain floats: per token -min(r A, clip(r) A) + beta (e^(ref-p) - (ref-p) - 1)."""
    import math

    rows = []
    for p_row, o_row, r_row, m_row, a in zip(policy, old, ref, mask, adv, strict=True):
        terms = []
        for p, o, r, m in zip(p_row, o_row, r_row, m_row, strict=True):
            ratio = math.exp(p - o)
            clipped = min(max(ratio, 1 - eps), 1 + eps_high)
            value = -min(ratio * a, clipped * a) + beta * (math.exp(r - p) - (r - p) - 1)
            terms.append(value * m)
        rows.append((sum(terms), sum(m_row)))
    if loss_type == "grpo":
        return sum(total / max(count, 1) for total, count in rows) / len(rows)
    if loss_type == "bnpo":
        return sum(t for t, _ in rows) / max(sum(c for _, c in rows), 1)
    if loss_type == "dr_grpo":
        return sum(t for t, _ in rows) / (len(rows) * max_len)
    return sum(t for t, _ in rows) / num_items


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(("eps", "eps_high", "beta"), [(0.2, None, 0.04), (0.2, 0.28, 0.0), (0.1, 0.3, 0.5)])
def test_grpo_loss_is_trls_formula(loss_type, eps, eps_high, beta):
    import torch

    from swift.megatron.grpo import GrpoLoss, per_token_terms

    generator = torch.Generator().manual_seed(0)
    policy = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 3
    old = policy + (torch.rand(3, 5, generator=generator, dtype=torch.float64) - 0.5) * 0.8  # ratios off 1: clips
    ref = policy + (torch.rand(3, 5, generator=generator, dtype=torch.float64) - 0.5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([1.2, -0.7, 0.3], dtype=torch.float64)
    settings = GrpoLoss(loss_type, eps, eps_high, beta, max_completion_length=6)
    per_token, kl = per_token_terms(policy, old, adv, settings, ref_logps=ref)
    got = reduce_tokens(per_token, mask, settings, num_items=9.0).item()
    expected = _hand_loss(loss_type, policy.tolist(), old.tolist(), ref.tolist(), mask.tolist(), adv.tolist(), eps,
                          eps if eps_high is None else eps_high, beta, 6, 9.0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert (kl is None) == (beta == 0.0)


def test_grpo_loss_on_policy_is_minus_the_mean_advantage():
    """Step 1 of GRPO (old = policy, ref = policy): ratio 1, KL 0, the grpo loss is -mean(A)."""
    import torch

    from swift.megatron.grpo import GrpoLoss, per_token_terms

    policy = -torch.rand(4, 6, dtype=torch.float64)
    adv = torch.tensor([0.5, -0.5, 1.0, 2.0], dtype=torch.float64)
    per_token, kl = per_token_terms(policy, policy.detach(), adv, GrpoLoss(), ref_logps=policy.detach())
    assert reduce_tokens(per_token, torch.ones(4, 6), GrpoLoss()).item() == pytest.approx(-0.75)
    assert kl.abs().max().item() == 0.0


def test_rollouts_are_seeded_and_grouped(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from swift.megatron.grpo import generate_rollouts

    model = AutoModelForCausalLM.from_pretrained(_tiny(tmp_path / "model", False), dtype=torch.float32).eval()
    prompts = [[5, 6, 7], [8, 9]]
    kwargs = dict(num_generations=3, max_completion_length=6, pad_token_id=0, eos_token_id=1)
    first = generate_rollouts(model, prompts, temperature=1.0, seed=3, **kwargs)
    assert first == generate_rollouts(model, prompts, temperature=1.0, seed=3, **kwargs)
    assert len(first) == 6
    assert all(0 < len(c) <= 6 for c in first)
    assert first != generate_rollouts(model, prompts, temperature=1.0, seed=4, **kwargs)
    greedy = generate_rollouts(model, prompts, temperature=0.0, seed=0, **kwargs)
    assert greedy[0] == greedy[1] == greedy[2]
    assert greedy[3] == greedy[4] == greedy[5]


if __name__ == "__main__":  # torchrun worker of test_sync_under_tensor_and_pipeline_parallelism
    _layout, _model, _train_type, _dst, _out = sys.argv[1:6]
    _dst_rank = None if _dst == "None" else int(_dst)
    _result = (_sync_case(_model, _train_type, tp=2, dst=_dst_rank) if _layout == "tp2"
               else _pipeline_case(_model, _train_type, dst=_dst_rank))
    if _result:
        with open(_out, "a") as handle:  # small appends: one line per receiving rank
            handle.write(json.dumps(_result) + "\n")
