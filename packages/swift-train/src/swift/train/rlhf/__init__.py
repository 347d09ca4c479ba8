"""`swift rlhf`: DPO, KTO, CPO, SimPO, ORPO, reward models, GKD and GRPO on trl's trainers, with our data, templates,
tuners, output layout, logging and resume. Methods are entries of `registry.METHODS` (built in: `methods.py`)."""

from swift.core import REWARDS, register_reward
from swift.train.rlhf.registry import METHODS, RlhfMethod, get_method, register_method

__all__ = ["METHODS", "REWARDS", "RlhfMethod", "get_method", "register_method", "register_reward", "run_rlhf"]


def run_rlhf(args):
    from swift.train.rlhf.run import run_rlhf as run

    return run(args)
