"""swift infer's dataset-run flags share the inference group with deploy / eval / rollout / sample, which run no
dataset: there they are refused, naming the flag, before any model loads."""

from __future__ import annotations

import pytest

from swift.core import ConfigError
from swift.infer.cli import deploy_main, eval_main, sample_main


@pytest.mark.parametrize("main", [deploy_main, eval_main, sample_main])
def test_dataset_run_flags_are_refused_where_no_dataset_runs(main):
    with pytest.raises(ConfigError, match=r"--metric, --write_batch_size: swift infer's dataset runs take them"):
        main(["--model", "/nonexistent/model", "--metric", "acc", "--write_batch_size", "5"])
    with pytest.raises(ConfigError, match=r"--load_data_args: swift infer's dataset runs take it"):
        main(["--model", "/nonexistent/model", "--load_data_args", "true"])
