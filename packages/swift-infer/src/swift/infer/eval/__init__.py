"""`swift eval`: EvalScope against our own OpenAI-compatible server (started in process) or any --eval_url.

EvalScope itself is imported only in the child process that runs it (`worker.py`); nothing here imports it.
"""

from swift.infer.eval.results import format_table
from swift.infer.eval.run import EvalResult, run_eval

__all__ = ["EvalResult", "format_table", "run_eval"]
