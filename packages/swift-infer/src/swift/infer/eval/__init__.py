"""`swift eval`: EvalScope against our own OpenAI-compatible server (started in process) or any --eval_url.

EvalScope itself is imported only in the child process that runs it (`worker.py`); nothing here imports it.
"""

from swift.infer.arguments import EvalArgs
from swift.infer.eval.results import format_table
from swift.infer.eval.run import EvalResult, check_eval_args, eval_arguments, evaluate_engine, run_eval

__all__ = ["EvalArgs", "EvalResult", "check_eval_args", "eval_arguments", "evaluate_engine", "format_table",
           "run_eval"]
