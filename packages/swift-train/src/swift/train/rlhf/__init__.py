"""`swift rlhf`: DPO, KTO, CPO, SimPO, ORPO, reward models, GKD and GRPO on trl's trainers, with our data, templates,
tuners, output layout, logging and resume. Methods are entries of `registry.METHODS` (built in: `methods.py`)."""

from swift.core import REWARDS, register_reward
from swift.train.rlhf.multi_turn import (
    InferRequest,
    MultiTurnScheduler,
    ResponseChoice,
    register_multi_turn_scheduler,
    register_tool,
)
from swift.train.rlhf.registry import METHODS, RlhfMethod, get_method, register_method

__all__ = ["METHODS", "REWARDS", "InferRequest", "MultiTurnScheduler", "ResponseChoice", "RlhfMethod", "get_method",
           "register_method", "register_multi_turn_scheduler", "register_reward", "register_tool", "run_rlhf"]


def run_rlhf(args):
    from swift.train.rlhf.run import run_rlhf as run

    return run(args)
