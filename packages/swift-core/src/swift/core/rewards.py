"""Reward functions of GRPO (`--reward_funcs`) and `swift sample` (`--orm_model`): the built-in ones (accuracy format
cosine repetition soft_overlong) and the user's, from `--external_plugins file.py`. They live in swift-core because
swift-train and swift-infer both score with them.

A reward function takes the batch's `completions` (text, or a one-message list for chat prompts) and keyword
arguments: `prompts`, `completion_ids`, and every extra dataset column (`solution`...). It returns one float per
completion (None: no opinion). A plugin file registers its own with the decorator:

    from swift.core import register_reward  # also exported by swift.train.rlhf

    @register_reward("short")
    def short(completions, **kwargs):
        return [-len(c) / 100 for c in completions]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from swift.core import ConfigError, DuplicateNameError

RewardFunc = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFunc] = {}


def register_reward(name: str, *, replace: bool = False) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator: register `func` as the reward function `--reward_funcs name`."""

    def decorate(func: RewardFunc) -> RewardFunc:
        if name in REWARDS and REWARDS[name] is not func and not replace:
            raise DuplicateNameError(f"reward function {name!r} exists; pass replace=True to override it")
        REWARDS[name] = func
        return func

    return decorate


def reward_choices() -> dict[str, None]:
    """`--reward_funcs` choices: the registered names (built in, or from a plugin file)."""
    return dict.fromkeys(REWARDS)


def reward_problems(names: list[str]) -> list[str]:
    known = ", ".join(sorted(REWARDS))
    return [f"--reward_funcs {name}: unknown reward function (known: {known}; add your own with --external_plugins "
            "file.py)" for name in names if name not in REWARDS]


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the content of trl's one-message list for chat prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)


_BOXED = re.compile(r"\\boxed\s*\{")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, braces balanced; None without one."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def normalize_answer(answer: str) -> str:
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\(?:text|mathrm|mbox)\{([^}]*)\}", r"\1", text)
    text = text.replace("\\!", "").replace("\\,", "").replace(" ", "").rstrip(".")
    text = re.sub(r"^\\?d?frac\{([^}]*)\}\{([^}]*)\}$", r"(\1)/(\2)", text)
    return text


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        match = re.fullmatch(r"\(?(-?[\d.]+)\)?/\(?(-?[\d.]+)\)?", text)
        if match and float(match.group(2)) != 0:
            return float(match.group(1)) / float(match.group(2))
    return None


def answers_match(predicted: str, reference: str) -> bool:
    a, b = normalize_answer(predicted), normalize_answer(reference)
    if a == b:
        return True
    x, y = _number(a), _number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def _is_correct(completion: Any, solution: Any) -> bool | None:
    if solution is None:
        return None
    reference = last_boxed(str(solution))
    reference = str(solution) if reference is None else reference
    predicted = last_boxed(completion_text(completion))
    return predicted is not None and answers_match(predicted, reference)


@register_reward("accuracy")
def accuracy(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the last `\\boxed{}` of the completion equals the row's `solution` (its own `\\boxed{}` or the
    whole text), numerically or as normalised text; 0.0 otherwise; None for rows without a solution."""
    solutions = solution if solution is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, sol in zip(completions, solutions, strict=True):
        correct = _is_correct(completion, sol)
        out.append(None if correct is None else float(correct))
    return out


_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


@register_reward("format")
def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """1.0 for `<think>...</think><answer>...</answer>` and nothing else around them, else 0.0."""
    return [1.0 if _FORMAT.match(completion_text(c)) else 0.0 for c in completions]


def _lengths(completions: list, completion_ids: list | None) -> list[int]:
    if completion_ids is not None:
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c).split()) for c in completions]


@register_reward("cosine")
def cosine(completions: list, solution: list | None = None, completion_ids: list | None = None,
           max_length: int = 512, min_value_wrong: float = -0.5, max_value_wrong: float = 0.0,
           min_value_correct: float = 1.0, max_value_correct: float = 0.5, **kwargs: Any) -> list[float | None]:
    """Length-scaled accuracy (Yeo et al. 2025): correct answers earn more when short, wrong ones are punished less
    when long (so the model may keep thinking). `max_length` is --max_completion_length."""
    solutions = solution if solution is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, sol, length in zip(completions, solutions, _lengths(completions, completion_ids), strict=True):
        correct = _is_correct(completion, sol)
        if correct is None:
            out.append(None)
            continue
        low, high = (max_value_correct, min_value_correct) if correct else (max_value_wrong, min_value_wrong)
        progress = min(length, max_length) / max_length
        out.append(low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * progress)))
    return out


@register_reward("repetition")
def repetition(completions: list, ngram_size: int = 3, max_penalty: float = -1.0, **kwargs: Any) -> list[float]:
    """0 for text without repeated word n-grams, down to `max_penalty` when every n-gram repeats."""
    out = []
    for completion in completions:
        words = completion_text(completion).lower().split()
        grams = [tuple(words[i:i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
        out.append(0.0 if not grams else (1.0 - len(set(grams)) / len(grams)) * max_penalty)
    return out


@register_reward("soft_overlong")
def soft_overlong(completions: list, completion_ids: list | None = None, max_length: int = 512,
                  cache_length: int | None = None, **kwargs: Any) -> list[float]:
    """DAPO's soft overlong punishment: 0 up to max_length - cache_length tokens, then linearly down to -1 at
    max_length (cache_length defaults to a quarter of it)."""
    cache = cache_length or max(1, max_length // 4)
    expected = max_length - cache
    out = []
    for length in _lengths(completions, completion_ids):
        out.append(0.0 if length <= expected else max(-1.0, (expected - length) / cache))
    return out


def load_reward_plugins(paths: list[str]) -> None:
    """Run each `--external_plugins` file once (it registers reward functions with `register_reward`)."""
    from swift.core import load_custom_register

    load_custom_register(paths, flag="--external_plugins")


LENGTH_AWARE = ("cosine", "soft_overlong")


def resolve_rewards(names: list[str], *, max_completion_length: int) -> list[RewardFunc]:
    """The reward functions named by --reward_funcs (built-in or registered by a plugin), each with its name."""
    problems = reward_problems(names)
    if problems:
        raise ConfigError("\n".join(problems))
    funcs = []
    for name in names:
        extra = {"max_length": max_completion_length} if name in LENGTH_AWARE else {}
        funcs.append(_named(REWARDS[name], name, extra))
    return funcs


def _named(func: RewardFunc, name: str, extra: dict[str, Any]) -> RewardFunc:
    """`func` with fixed keyword arguments, named `name`: trl logs rewards/<__name__>/mean."""

    def reward(*args: Any, **kwargs: Any) -> list[float | None]:
        return func(*args, **{**extra, **kwargs})

    reward.__name__ = reward.__qualname__ = name
    return reward
