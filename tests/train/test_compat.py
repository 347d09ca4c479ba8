"""The upstream code `swift.train.compat` relies on still looks the way each shim assumes. When transformers, accelerate
or trl change one of these internals, this module fails and names it, instead of a training run going wrong."""

from __future__ import annotations

import importlib
import inspect

import pytest

from swift.train import compat


def params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_trainer_saves_checkpoints_where_get_output_dir_says():
    from transformers import Trainer

    assert params(Trainer._save_checkpoint) == ["self", "model", "trial"]
    assert params(Trainer._get_output_dir) == ["self", "trial"]
    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(trial=trial)" in source  # AtomicCheckpoints points it at the staging folder
    assert "self.save_model(output_dir, _internal_call=True)" in source
    assert params(compat.AtomicCheckpoints._save_checkpoint) == params(Trainer._save_checkpoint)
    assert params(compat.AtomicCheckpoints._get_output_dir) == params(Trainer._get_output_dir)


def test_the_training_loop_still_takes_its_logged_grad_norm_from_the_two_hooks_we_override():
    from transformers import Trainer

    assert params(Trainer._clip_grad_norm) == ["self", "model"]
    assert params(Trainer._get_grad_norm) == ["self", "model", "grad_norm"]
    loop = inspect.getsource(Trainer._run_epoch)
    assert "grad_norm = self._clip_grad_norm(model)" in loop  # InHookGradNorm reports the hooks' norm there
    assert "grad_norm = self._get_grad_norm(model, grad_norm=grad_norm)" in loop


def test_accelerate_keeps_the_shared_distributed_type_fsdp_on_cpu_sets():
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType
    from transformers import Trainer

    assert params(Trainer.create_accelerator_and_postprocess) == ["self"]
    assert isinstance(PartialState._shared_state, dict)
    assert "distributed_type" in inspect.getsource(AcceleratorState)
    assert {"MULTI_CPU", "FSDP"} <= set(DistributedType.__members__)


UPSTREAM = {  # trl trainer -> (module, the code that calls the hook, where it is called)
    "DPOTrainer": ("trl", "self._prepare_dataset(", "__init__"),
    "KTOTrainer": ("trl", "self._prepare_dataset(", "__init__"),
    "CPOTrainer": ("trl.experimental.cpo", "self.tokenize_row", "__init__"),
    "ORPOTrainer": ("trl.experimental.orpo", "self.tokenize_row", "__init__"),
    "GRPOTrainer": ("trl", "self._tokenize_prompts(", "_generate"),  # (without our rollout_func)
}


@pytest.mark.parametrize("name", sorted(compat.PRETOKENIZED_HOOKS))
def test_trl_still_tokenizes_through_the_hooks_we_replace(name):
    module, call, caller = UPSTREAM[name]
    trainer = getattr(importlib.import_module(module), name)
    for hook, replacement in compat.PRETOKENIZED_HOOKS[name].items():
        assert params(getattr(trainer, hook)) == params(replacement), f"{name}.{hook} changed its signature"
    assert call in inspect.getsource(getattr(trainer, caller)), f"{name}.{caller} no longer calls {call}"


def test_kto_still_reads_the_kl_completions_our_rows_add():
    from trl import KTOTrainer

    assert "KL_completion_ids" in inspect.getsource(importlib.import_module(KTOTrainer.__module__))
    assert "self.calculate_KL" in inspect.getsource(KTOTrainer.__init__)


def test_pretokenized_trainers_pass_our_rows_through():
    from trl import DPOTrainer, RewardTrainer

    dpo = compat.pretokenized(DPOTrainer)
    rows = object()
    assert dpo._prepare_dataset(None, rows, None, None, "train") is rows
    assert issubclass(dpo, DPOTrainer)
    assert compat.pretokenized(RewardTrainer) is RewardTrainer  # takes token ids natively: nothing replaced


def test_grpo_internals_our_media_trainer_overrides_keep_their_shape():
    """SwiftGRPOTrainer (rlhf/trainers.py) overrides private methods of trl's GRPOTrainer to carry prompt media and
    the GRPO family (rlhf/grpo.py); each must still exist with the signature ours has, and be called where ours
    expects: the rewards come from `_calculate_rewards` (gathered over processes), the advantages and the loss's
    KL term from the rollout output and `self.beta`."""
    from trl import GRPOTrainer

    from swift.train.rlhf.trainers import grpo_trainer_class

    ours = grpo_trainer_class()
    scoring = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in scoring
    assert '"advantages": advantages' in scoring
    assert '"num_items_in_batch": num_items_in_batch' in scoring
    assert "gather(rewards_per_func)" in inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "self.beta * per_token_kl" in inspect.getsource(GRPOTrainer._compute_loss)
    for name in ("_generate_and_score_completions", "_compute_loss", "_get_per_token_logps_and_entropies",
                 "_calculate_rewards"):
        upstream, mine = params(getattr(GRPOTrainer, name)), params(getattr(ours, name))
        named = [p for p in mine if p != "kwargs"]  # ours passes the rest through with **kwargs
        assert upstream[:len(named)] == named, f"GRPOTrainer.{name} changed: {upstream}"
    assert "self._get_per_token_logps_and_entropies(" in inspect.getsource(GRPOTrainer._compute_loss)
    assert "self._get_per_token_logps_and_entropies(" in inspect.getsource(
        GRPOTrainer._generate_and_score_completions)
