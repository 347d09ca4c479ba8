"""`swift sample`: several answers per prompt, scored, the best kept: rejection-sampling and distillation data.

For each row of --dataset (its trailing assistant message, if any, is the reference, not input), the engine of
--sampler_engine (pt or vllm) answers --num_return_sequences times; --orm_model scores each answer (a reward function
by name, the same registry as GRPO's --reward_funcs, given the row's other columns such as `solution`; or a reward
model: a directory or hub id with a sequence-classification head); the --n_best_to_keep best are written.

Output: one JSON line per kept answer, directly trainable by `swift sft --dataset`: the row's columns, `messages`
ending with the sampled assistant answer, `reward`, `prompt_index` (the row) and `sample_index`. A prompt's lines are
written and fsynced together. Resumable like `swift infer`'s batch mode: run again with the same --output_file and it
continues after the last prompt written (that prompt's lines are checked and redone if cut short).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from swift.core import ConfigError
from swift.infer.arguments import SampleArguments

logger = logging.getLogger(__name__)

MAX_N = 16  # answers per request (RequestConfig.n); more are asked as several seeded requests


def output_path(args: SampleArguments) -> Path:
    sample = args.sample
    name = sample.output_file or f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    if Path(name).name != name or not name.endswith(".jsonl"):
        raise ConfigError(f"--output_file {name}: a file name ending in .jsonl, without a directory "
                          "(--output_dir says where)")
    return Path(sample.output_dir) / name


def check_sample_args(args: SampleArguments) -> None:
    """Flag errors before a dataset or a model loads."""
    from swift.core import REWARDS

    sample, problems = args.sample, []
    if sample.sampler_engine == "transformers":
        sample.sampler_engine = "pt"
    backend = args.infer.infer_backend  # the same choice under swift infer's name: one of them, or both alike
    if backend != "pt" and sample.sampler_engine == "pt":
        sample.sampler_engine = backend
    elif backend not in ("pt", sample.sampler_engine):
        problems.append(f"--infer_backend {backend} and --sampler_engine {sample.sampler_engine}: give one engine")
    if args.infer.result_path is not None:
        problems.append("--result_path: swift sample writes to --output_dir / --output_file")
    if args.infer.stream is not None:
        problems.append("--stream: swift sample writes whole answers to its jsonl; it does not stream")
    if sample.prm_model is not None:
        problems.append("--prm_model: process reward models are not built yet; score with --orm_model")
    if sample.num_return_sequences < 1:
        problems.append(f"--num_return_sequences {sample.num_return_sequences}: give at least 1")
    if sample.n_best_to_keep < 1:
        problems.append(f"--n_best_to_keep {sample.n_best_to_keep}: give at least 1")
    if sample.num_sampling_batch_size < 1:
        problems.append(f"--num_sampling_batch_size {sample.num_sampling_batch_size}: give at least 1")
    if sample.data_range and (len(sample.data_range) != 2 or not 0 <= sample.data_range[0] < sample.data_range[1]):
        problems.append(f"--data_range {' '.join(map(str, sample.data_range))}: give I N with 0 <= I < N")
    if sample.easy_query_threshold is not None and sample.orm_model is None:
        problems.append("--easy_query_threshold needs --orm_model (what says an answer is right)")
    if (sample.orm_model is not None and sample.orm_model not in REWARDS and "/" not in sample.orm_model
            and not Path(sample.orm_model).exists()):
        problems.append(f"--orm_model {sample.orm_model}: neither a reward function (known: "
                        f"{', '.join(sorted(REWARDS))}) nor a model directory or hub id")
    if not (args.data.dataset or args.data.val_dataset):
        problems.append("--dataset: give the prompts to sample answers for")
    if problems:
        raise ConfigError("; ".join(problems))
    sample.output_file = output_path(args).name  # one name for the whole run (a timestamp by default)


def resume_point(path: Path) -> int:
    """The first prompt index to (re)do: after the last prompt whose lines are all in `path`. A cut-short last
    line, and the lines of the last prompt when its group is short of its `group_size`, are cut off the file."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].splitlines(keepends=True)
    groups: dict[int, int] = {}
    starts: dict[int, int] = {}
    offset = 0
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            index = int(row["prompt_index"])
            int(row["group_size"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"--output_file {path}: line {number} is not a line of swift sample ({e}); choose "
                              "another file or pass --override_exist_file true") from e
        starts.setdefault(index, offset)
        groups[index] = groups.get(index, 0) + 1
        offset += len(line)
    if not groups:
        cut, resume = 0, 0
    else:
        last = max(groups)
        complete = groups[last] >= json.loads(lines[-1])["group_size"]
        cut = end if complete else starts[last]
        resume = last + 1 if complete else last
    if cut < len(data):
        with path.open("r+b") as f:
            f.truncate(cut)
        logger.warning("%s: dropped an incomplete last prompt; it is sampled again", path)
    return resume


class Scorer:
    """--orm_model: a reward function (by name) or a reward model (a path or hub id)."""

    def __init__(self, name: str | None, args: SampleArguments) -> None:
        from swift.core import REWARDS, resolve_rewards

        self.name = name
        self._func: Callable[..., list[float | None]] | None = None
        self._model: Any = None
        if name is None:
            return
        if name in REWARDS:
            self._func = resolve_rewards([name], max_completion_length=args.infer.max_new_tokens or 512)[0]
            return
        from swift.core import build_template, load_model

        self._model, tokenizer = load_model(args.model, model=name, model_type=None, model_revision=None,
                                            num_labels=1)
        self._model.eval()
        self._template = build_template(args.template, tokenizer, template=None, system=None)

    def __call__(self, messages: list[dict], answers: list[str], columns: dict[str, Any]) -> list[float | None]:
        if self._func is not None:
            extra = {k: [v] * len(answers) for k, v in columns.items()}
            return list(self._func(answers, prompts=[messages] * len(answers), **extra))
        if self._model is None:
            return [None] * len(answers)
        import torch

        scores = []
        with torch.no_grad():
            for answer in answers:
                ids = self._template.encode({"messages": [*messages, {"role": "assistant", "content": answer}]})
                logits = self._model(input_ids=torch.tensor([ids["input_ids"]], device=self._model.device)).logits
                scores.append(float(logits[0, 0]))
        return scores


def run_sample(args: SampleArguments) -> Path:
    from swift.infer.backends import build_engine
    from swift.infer.frontend.batch import split_row
    from swift.infer.frontend.infer import load_rows

    sample = args.sample
    path = output_path(args)
    if path.exists() and sample.override_exist_file:
        path.unlink()
    rows = load_rows(args)
    indices = data_range(len(rows), sample.data_range)
    start = resume_point(path)
    todo = [i for i in indices if i >= start]
    if start:
        logger.info("%s holds prompts up to %d; resuming", path, start - 1)
    scorer = Scorer(sample.orm_model, args)
    args.infer.infer_backend = sample.sampler_engine
    engine = build_engine(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept_total = prompts_done = 0
    try:
        with path.open("a", encoding="utf-8") as out:
            for batch_start in range(0, len(todo), sample.num_sampling_batch_size):
                batch = todo[batch_start:batch_start + sample.num_sampling_batch_size]
                answers = _sample(engine, [split_row(dict(rows[i]))[0] for i in batch], batch, args)
                for index, texts in zip(batch, answers, strict=True):
                    lines = _keep(index, dict(rows[index]), texts, scorer, args)
                    out.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
                    out.flush()
                    os.fsync(out.fileno())
                    kept_total += len(lines)
                    prompts_done += 1
                logger.info("sampled %d/%d prompts", prompts_done, len(todo))
    finally:
        engine.close()
    logger.info("kept %d answers of %d prompts in %s", kept_total, prompts_done, path)
    return path


def data_range(n_rows: int, spec: Sequence[int]) -> list[int]:
    """--data_range i n: the i-th of n equal parts of the rows (for n parallel `swift sample` runs)."""
    if not spec:
        return list(range(n_rows))
    part, parts = spec
    size = -(-n_rows // parts)
    return list(range(part * size, min(n_rows, (part + 1) * size)))


def _sample(engine: Any, requests: list[dict], indices: list[int], args: SampleArguments) -> list[list[str]]:
    """num_return_sequences answers per request, asked in requests of at most MAX_N, seeded by the row's index
    (a resumed run samples a row as the first run did)."""
    from swift.infer.protocol import RequestConfig

    n, infer = args.sample.num_return_sequences, args.infer
    temperature = infer.temperature if infer.temperature is not None else 1.0
    futures = []
    for i, (request, index) in enumerate(zip(requests, indices, strict=True)):
        for chunk, count in enumerate(range(0, n, MAX_N)):
            seed = None if infer.seed is None else infer.seed + 1000 * index + chunk
            config = RequestConfig(n=min(MAX_N, n - count), temperature=temperature, seed=seed)
            futures.append((i, engine.submit(request, config)))
    answers: list[list[str]] = [[] for _ in requests]
    for i, future in futures:
        answers[i] += [choice.message.content or "" for choice in future.result().choices]
    return answers


def _keep(index: int, row: dict[str, Any], answers: list[str], scorer: Scorer,
          args: SampleArguments) -> list[dict[str, Any]]:
    sample = args.sample
    request, _ = _prompt(row)
    columns = {k: v for k, v in row.items() if k not in ("messages", "images", "videos", "audios")}
    scores = scorer(request, answers, columns)
    ranked = sorted(range(len(answers)), key=lambda j: -(scores[j] if scores[j] is not None else float("-inf")))
    if sample.easy_query_threshold is not None:
        right = sum(1 for s in scores if s is not None and s > 0.5) / max(1, len(scores))
        if right > sample.easy_query_threshold:
            logger.debug("prompt %d: %.0f%% right, over --easy_query_threshold; dropped", index, 100 * right)
            return []
    keep = ranked[:sample.n_best_to_keep]  # unscored: the first ones (the order is stable)
    return [{**columns, "messages": [*request, {"role": "assistant", "content": answers[j]}], "reward": scores[j],
             "prompt_index": index, "sample_index": j, "group_size": len(keep)} for j in keep]


def _prompt(row: dict[str, Any]) -> tuple[list[dict], str | None]:
    from swift.infer.frontend.batch import split_row

    request, labels = split_row(row)
    return request["messages"], labels
