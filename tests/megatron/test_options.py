"""ms-swift's Megatron-Core flags land in the TransformerConfig / OptimizerConfig megatron-core builds; the ones this
device cannot run say so in one log line; combinations megatron-core refuses fail as flag errors."""

from __future__ import annotations

import logging

import pytest
import torch

from swift.core.arguments import parse_args
from swift.core.errors import ConfigError
from swift.megatron.arguments import MegatronArguments, check_train_args
from tests.megatron.conftest import IDENTITY, tiny_config

pytest.importorskip("megatron.core")

CPU_ONLY = not torch.cuda.is_available()


def core_config(*flags: str, family: str = "llama", layers: int = 4):
    """The TransformerConfig `megatron sft` builds for these flags on a tiny model of `family`."""
    from swift.megatron.model import Parallel
    from swift.megatron.train import _core_config

    args = parse_args(MegatronArguments, ["--model", "x", "--dataset", str(IDENTITY), *flags])
    check_train_args(args)
    return _core_config(args, tiny_config(family, layers=layers), Parallel(pp=args.megatron.pipeline_model_parallel_size),
                        torch.float32)


@pytest.mark.parametrize(("flags", "expected"), [
    (("--recompute_granularity", "full", "--recompute_method", "block", "--recompute_num_layers", "2"),
     {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 2}),
    (("--recompute_granularity", "full"), {"recompute_method": "uniform", "recompute_num_layers": 1}),
    (("--recompute_granularity", "selective", "--recompute_modules", "core_attn", "mlp"),
     {"recompute_granularity": "selective", "recompute_modules": ["core_attn", "mlp"]}),
    (("--cross_entropy_loss_fusion", "true"), {"cross_entropy_loss_fusion": True, "cross_entropy_fusion_impl": "native"}),
    ((), {"cross_entropy_loss_fusion": False, "recompute_granularity": None}),
])
def test_flags_reach_the_transformer_config(flags, expected):
    config = core_config(*flags)
    assert {k: getattr(config, k) for k in expected} == expected


def test_moe_flags_reach_the_transformer_config_of_a_moe_model():
    config = core_config("--moe_aux_loss_coeff", "0.01", "--moe_expert_capacity_factor", "1.5", family="qwen3_moe")
    assert (config.moe_aux_loss_coeff, config.moe_router_load_balancing_type) == (0.01, "aux_loss")
    assert config.moe_expert_capacity_factor == 1.5
    plain = core_config(family="qwen3_moe")
    assert (plain.moe_aux_loss_coeff, plain.moe_router_load_balancing_type) == (0.0, "none")


@pytest.mark.parametrize(("flag", "logits_dtype"), [("none", torch.bfloat16), ("fp32", torch.float32),
                                                     ("fp64", torch.float64)])
def test_moe_router_dtype_is_the_dtype_the_router_scores_in(flag, logits_dtype):
    """A bf16 MoE model's router computes its logits in --moe_router_dtype (none: the model's bf16)."""
    from swift.megatron.convert import ModelShape
    from swift.megatron.model import Parallel, build_gpt
    from swift.megatron.parallel import megatron_session
    from swift.megatron.train import _core_config

    args = parse_args(MegatronArguments, ["--model", "x", "--dataset", str(IDENTITY), "--moe_router_dtype", flag])
    hf_config = tiny_config("qwen3_moe")
    with megatron_session(Parallel(), seed=0):
        config = _core_config(args, hf_config, Parallel(), torch.bfloat16)
        gpt = build_gpt(hf_config, ModelShape.from_hf(hf_config), config, tp=1).to(torch.bfloat16)
        router = gpt.decoder.layers[0].mlp.router
        logits = router.gating(torch.randn(5, 64, dtype=torch.bfloat16))
    assert logits.dtype == logits_dtype


def test_decoder_first_and_last_pipeline_num_layers_set_the_outer_stages():
    from swift.megatron.convert import Stages

    config = core_config("--pipeline_model_parallel_size", "2", "--decoder_last_pipeline_num_layers", "1")
    assert (config.num_layers_in_first_pipeline_stage, config.num_layers_in_last_pipeline_stage) == (None, 1)
    config = core_config("--pipeline_model_parallel_size", "2", "--decoder_first_pipeline_num_layers", "1")
    assert (config.num_layers_in_first_pipeline_stage, config.num_layers_in_last_pipeline_stage) == (1, None)
    assert [list(Stages(last=1).layers(4, 2, r)) for r in range(2)] == [[0, 1, 2], [3]]
    assert [list(Stages(first=1).layers(4, 2, r)) for r in range(2)] == [[0], [1, 2, 3]]
    assert Stages(first=1, last=1).sizes(8, 4) == [1, 3, 3, 1]
    assert Stages(first=2).sizes(8, 4) == [2, 2, 2, 2]
    with pytest.raises(ConfigError, match="split the remaining"):
        core_config("--pipeline_model_parallel_size", "3", "--decoder_last_pipeline_num_layers", "1")
    with pytest.raises(ConfigError, match="--decoder_first_pipeline_num_layers 1 and --decoder_last_pipeline_num_"):
        Stages(first=1, last=1).sizes(4, 2)
    with pytest.raises(ConfigError, match="--decoder_first_pipeline_num_layers 1: needs --pipeline_model_parallel"):
        core_config("--decoder_first_pipeline_num_layers", "1")


@pytest.mark.skipif(not CPU_ONLY, reason="what a CPU-only machine lacks")
@pytest.mark.parametrize(("flags", "family", "needle", "field", "value"), [
    (("--masked_softmax_fusion", "true"), "llama", "--masked_softmax_fusion does nothing on this device",
     "masked_softmax_fusion", True),
    (("--gradient_accumulation_fusion", "true"), "llama", "--gradient_accumulation_fusion does nothing",
     "gradient_accumulation_fusion", False),
    (("--attention_backend", "flash"), "llama", "--attention_backend flash does nothing", None, None),
    (("--fp8_format", "e4m3", "--fp8_recipe", "blockwise", "--fp8_param_gather", "true"), "llama",
     "--fp8_format does nothing", "fp8", None),
    (("--cross_entropy_loss_fusion", "true", "--cross_entropy_fusion_impl", "te"), "llama",
     "--cross_entropy_fusion_impl te does nothing", "cross_entropy_fusion_impl", "native"),
    (("--moe_grouped_gemm", "true"), "qwen3_moe", "--moe_grouped_gemm does nothing", "moe_grouped_gemm", False),
    (("--moe_permute_fusion", "true"), "qwen3_moe", "--moe_permute_fusion does nothing", "moe_permute_fusion", False),
    (("--moe_shared_expert_overlap", "true"), "qwen3_moe", "no shared experts", "moe_shared_expert_overlap", False),
    (("--moe_aux_loss_coeff", "0.01", "--moe_grouped_gemm", "true"), "llama",
     "--moe_aux_loss_coeff, --moe_grouped_gemm do nothing: this model has no MoE layers", "moe_aux_loss_coeff", 0.0),
])
def test_what_this_device_cannot_run_is_logged_once(caplog, flags, family, needle, field, value):
    with caplog.at_level(logging.WARNING, logger="swift.megatron.options"):
        config = core_config(*flags, family=family)
    lines = [r.getMessage() for r in caplog.records if r.name == "swift.megatron.options"]
    assert len(lines) == 1, lines
    assert needle in lines[0], lines
    if field is not None:
        assert getattr(config, field) == value


@pytest.mark.skipif(not CPU_ONLY, reason="what a CPU-only machine lacks")
def test_optimizer_flags_this_device_cannot_run_are_logged(caplog):
    from swift.megatron.options import MegatronCoreArgs, optimizer_options

    core = MegatronCoreArgs(use_precision_aware_optimizer=True, exp_avg_dtype="bf16", optimizer_cpu_offload=True,
                            optimizer_offload_fraction=0.7)
    with caplog.at_level(logging.WARNING, logger="swift.megatron.options"):
        assert optimizer_options(core, use_distributed_optimizer=True) == {}
    lines = [r.getMessage() for r in caplog.records]
    assert any("--use_precision_aware_optimizer does nothing" in line for line in lines)
    assert any("--optimizer_cpu_offload does nothing on this device: the weights and optimizer state are on the "
               "CPU already" in line for line in lines)


def test_optimizer_flags_reach_the_optimizer_config_where_supported(monkeypatch):
    """With CUDA and TransformerEngine (faked here: OptimizerConfig itself then asks TE for its version) the flags
    become these OptimizerConfig fields."""
    import dataclasses

    from megatron.core.optimizer import OptimizerConfig

    from swift.megatron import options

    monkeypatch.setattr(options, "_cuda", lambda: True)
    monkeypatch.setattr(options, "has_module", lambda name: True)
    core = options.MegatronCoreArgs(use_precision_aware_optimizer=True, exp_avg_dtype="bf16",
                                    exp_avg_sq_dtype="fp8", optimizer_cpu_offload=True,
                                    optimizer_offload_fraction=0.7)
    kwargs = options.optimizer_options(core, use_distributed_optimizer=True)
    assert kwargs == {"use_precision_aware_optimizer": True, "exp_avg_dtype": torch.bfloat16,
                      "exp_avg_sq_dtype": torch.uint8, "optimizer_cpu_offload": True,
                      "optimizer_offload_fraction": 0.7}
    assert set(kwargs) <= {f.name for f in dataclasses.fields(OptimizerConfig)}


@pytest.mark.parametrize(("flags", "needle"), [
    (("--recompute_method", "uniform"), "--recompute_method takes effect only with --recompute_granularity full"),
    (("--recompute_modules", "mlp"), "--recompute_modules takes effect only with --recompute_granularity selective"),
    (("--fp8_param_gather", "true"), "--fp8_param_gather needs --fp8_format"),
    (("--mtp_num_layers", "1"), "--mtp_num_layers: the families megatron trains here"),
    (("--linear_decoupled_in_proj", "true"), "linear-attention (GatedDeltaNet) models"),
    (("--expert_tensor_parallel_size", "2"), "--expert_tensor_parallel_size 2"),
    (("--exp_avg_dtype", "bf16"), "take effect only with --use_precision_aware_optimizer true"),
    (("--task_type", "seq_cls"), "--task_type seq_cls needs --num_labels"),
    (("--lr_warmup_fraction", "0.1", "--lr_warmup_iters", "3"), "both set the warm-up"),
    (("--decoder_last_pipeline_num_layers", "1"), "needs --pipeline_model_parallel_size > 1"),
    (("--group_by_length", "true", "--packing", "true"), "--group_by_length with --packing"),
])
def test_impossible_combinations_are_flag_errors(flags, needle):
    args = parse_args(MegatronArguments, ["--model", "x", "--dataset", str(IDENTITY), *flags])
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_train_args(args)


def test_megatron_core_refusals_are_flag_errors():
    """moe_act recompute needs grouped GEMM experts: megatron-core's own check, raised before any weights load."""
    with pytest.raises(ConfigError, match="megatron-core refuses these options"):
        core_config("--recompute_granularity", "selective", "--recompute_modules", "moe_act", family="qwen3_moe")


def test_recompute_and_fused_cross_entropy_keep_loss_and_gradients():
    """Full recompute (the CPU RNG fork of compat.py) gives the plain run's loss and gradients exactly; the fused
    cross-entropy the same loss and gradients to its kernel's rounding (~1e-3 relative)."""
    from transformers import AutoModelForCausalLM

    from swift.megatron.convert import ModelShape
    from swift.megatron.model import Parallel, build_gpt, load_hf_into
    from swift.megatron.parallel import megatron_session

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("llama", layers=2))
    shape, ids = ModelShape.from_hf(hf.config), torch.randint(0, 256, (2, 12))
    runs = {}
    for name, flags in {"plain": (), "fused": ("--cross_entropy_loss_fusion", "true"),
                        "recompute": ("--recompute_granularity", "full", "--recompute_method", "uniform",
                                      "--recompute_num_layers", "1")}.items():
        config = core_config(*flags, layers=2)
        with megatron_session(Parallel(), seed=0):
            gpt = build_gpt(hf.config, shape, config, tp=1)
            load_hf_into(gpt, hf.state_dict(), shape, Parallel())
            positions = torch.arange(12).unsqueeze(0).expand_as(ids)
            loss = gpt(input_ids=ids, position_ids=positions, attention_mask=None, labels=ids).sum()
            loss.backward()
            runs[name] = (loss.item(), {n: p.grad.clone() for n, p in gpt.named_parameters()})
    plain, plain_grads = runs["plain"]
    recomputed, recomputed_grads = runs["recompute"]
    assert recomputed == plain
    assert all(torch.equal(plain_grads[n], recomputed_grads[n]) for n in plain_grads)
    fused, fused_grads = runs["fused"]
    assert abs(fused - plain) < 1e-4 * abs(plain)
    for n, grad in plain_grads.items():
        assert (fused_grads[n] - grad).abs().max() <= 2e-3 * grad.abs().max(), n


def test_sequence_parallel_with_lora_is_refused_only_where_it_would_split(caplog):
    flags = ["--model", "x", "--dataset", str(IDENTITY), "--tuner_type", "lora", "--sequence_parallel", "true"]
    with caplog.at_level(logging.WARNING):
        check_train_args(parse_args(MegatronArguments, flags))  # TP 1: nothing to split, ms-swift's LoRA lines run
    assert "with --tensor_model_parallel_size 1 there is nothing to split" in caplog.text
    with pytest.raises(ConfigError, match=r"--sequence_parallel with --train_type lora and --tensor_model_parallel"):
        check_train_args(parse_args(MegatronArguments, [*flags, "--tensor_model_parallel_size", "2"]))


def test_a_rope_scaling_mcore_cannot_express_is_refused_before_weights_load(tiny_untied_dir, tmp_path):
    """--rope_scaling applies to the HF config megatron builds from; a scaling mcore cannot express is refused
    before the weights load (yarn here), naming it."""
    from swift.megatron import sft_main

    with pytest.raises(ConfigError, match=r"rope scaling .*'rope_type': 'yarn'.* has no mcore equivalent"):
        sft_main(["--model", str(tiny_untied_dir), "--dataset", str(IDENTITY), "--rope_scaling", "yarn",
                  "--max_model_len", "1024", "--save", str(tmp_path)])
