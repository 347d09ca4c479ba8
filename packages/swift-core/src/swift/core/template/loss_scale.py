"""`--loss_scale`: which characters of a rendered conversation carry loss, and with what weight.

A strategy is a base (`default`: every assistant turn, `last_round`: the turns after the last user or tool message,
`all`: every token) followed by `+`-joined rules (`last_round+hermes+ignore_empty_think`; a rule alone means
`default+rule`), as ms-swift's `--loss_scale`. A rule weighs parts of each trained assistant turn, read from the
rendered text of that turn; chained rules multiply their weights:

- `keywords`: exact strings (ReAct's `Action:`) -> (weight of the string, weight of what follows it up to the next
  keyword of the rule);
- `patterns`: regular expressions -> the weight of what they match (`^` is the start of the turn).

A message's `loss` field (true / false) overrides the base for its turn; its `loss_scale` field (a number) overrides
the rules too. Weights other than 0 and 1 make encoded rows carry a per-token `loss_scale` column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from swift.core.errors import ConfigError, DuplicateNameError

BASE_STRATEGIES = ("default", "last_round", "all")
Segment = tuple[int, int, float]  # (start, end, weight) over characters of the rendered text


@dataclass(frozen=True)
class LossScaleMeta:
    """One `--loss_scale` rule (ms-swift's loss-scale json files: a keyword map or a regex map)."""

    name: str
    keywords: dict[str, tuple[float, float]] = field(default_factory=dict)
    patterns: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def is_binary(self) -> bool:
        weights = [w for pair in self.keywords.values() for w in pair] + list(self.patterns.values())
        return all(w in (0.0, 1.0) for w in weights)


LOSS_SCALES: dict[str, LossScaleMeta] = {}


def register_loss_scale(meta: LossScaleMeta, *, replace: bool = False) -> None:
    """Add a rule; an existing name (or a base strategy's) is refused unless `replace=True`."""
    if meta.name in BASE_STRATEGIES or (meta.name in LOSS_SCALES and not replace):
        raise DuplicateNameError(f"loss scale {meta.name!r} exists; pass replace=True to override it")
    LOSS_SCALES[meta.name] = meta


@dataclass(frozen=True)
class LossPlan:
    """A parsed `--loss_scale`: the base strategy and the rules, in order."""

    base: str
    rules: tuple[LossScaleMeta, ...] = ()

    @property
    def is_binary(self) -> bool:
        """True when every weight is 0 or 1: labels (-100 elsewhere) say it all, no `loss_scale` column."""
        return all(rule.is_binary for rule in self.rules)


def parse_loss_scale(spec: str) -> LossPlan:
    """`default`, `last_round+hermes`, `hermes+ignore_empty_think`... -> a `LossPlan`; ConfigError naming the part."""
    parts = [part.strip() for part in str(spec).split("+")]
    base = parts.pop(0) if parts[0] in BASE_STRATEGIES else "default"
    problems = []
    for part in parts:
        if part in BASE_STRATEGIES:
            problems.append(f"{part!r} is a base strategy: put it first ({part}+...)")
        elif part not in LOSS_SCALES:
            hint = difflib.get_close_matches(part, [*BASE_STRATEGIES, *LOSS_SCALES], n=3)
            problems.append(f"{part!r} is unknown" + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
    if problems:
        raise ConfigError(f"--loss_scale {spec!r}: {'; '.join(problems)}; choose a base "
                          f"({', '.join(BASE_STRATEGIES)}) and/or rules ({', '.join(LOSS_SCALES)}) joined by '+'")
    return LossPlan(base, tuple(LOSS_SCALES[part] for part in parts))


def turn_weights(messages: Sequence[dict], base: str) -> list[tuple[float, bool] | None]:
    """Per message: None (not the assistant's), else (weight, fixed). `fixed`: a message's own `loss_scale`,
    which the rules leave alone. `loss` true/false overrides the base strategy."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") in ("user", "tool")), default=-1)
    out: list[tuple[float, bool] | None] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            out.append(None)
            continue
        loss, scale = message.get("loss"), message.get("loss_scale")
        trained = bool(loss) if loss is not None else base != "last_round" or i > last_user
        if not trained:
            out.append((0.0, True))
        elif scale is not None:
            out.append((float(scale), True))
        else:
            out.append((1.0, False))
    return out


def weigh(text: str, start: int, end: int, weight: float, rules: Sequence[LossScaleMeta]) -> list[Segment]:
    """Segments covering `text[start:end]` (one trained part of a turn): `weight` times each rule's weights."""
    segments: list[Segment] = [(start, end, weight)]
    for rule in rules:
        segments = [(a + s, a + e, w * rule_w) for a, b, w in segments
                    for s, e, rule_w in _split(text[a:b], rule) if e > s]
    return segments


def _split(text: str, rule: LossScaleMeta) -> list[Segment]:
    """`text` cut by one rule: (start, end, weight) relative to `text`, covering all of it."""
    cuts: list[Segment] = []
    if rule.keywords:
        pattern = "|".join(re.escape(k) for k in sorted(rule.keywords, key=len, reverse=True))
        position, follow = 0, 1.0  # what precedes the first keyword weighs 1
        for match in re.finditer(pattern, text):
            cuts.append((position, match.start(), follow))
            key_weight, follow = rule.keywords[match.group(0)]
            cuts.append((match.start(), match.end(), key_weight))
            position = match.end()
        cuts.append((position, len(text), follow))
    else:
        cuts = [(0, len(text), 1.0)]
    for pattern, weight in rule.patterns.items():
        matches = [(m.start(), m.end()) for m in re.finditer(pattern, text, re.DOTALL) if m.end() > m.start()]
        cuts = [piece for a, b, w in cuts for piece in _overlay(a, b, w, matches, weight)]
    return cuts


def _overlay(a: int, b: int, w: float, matches: list[tuple[int, int]], weight: float) -> list[Segment]:
    out: list[Segment] = []
    position = a
    for s, e in matches:
        s, e = max(s, a), min(e, b)
        if s >= e:
            continue
        out += [(position, s, w), (s, e, w * weight)]
        position = e
    out.append((position, b, w))
    return [piece for piece in out if piece[1] > piece[0]]


def token_weights(offsets: Sequence[tuple[int, int]], ids: Sequence[int], segments: Sequence[Segment],
                  special_ids: frozenset[int]) -> list[float]:
    """Each token's weight: the largest of the segments it overlaps (0 outside all). An added token that starts
    before a segment is not in it (Phi-3's `<|assistant|>` swallows the answer's first whitespace: still header)."""
    import bisect

    weights = [0.0] * len(ids)
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]  # both non-decreasing: tokens come in text order
    for start, end, weight in segments:
        if weight <= 0 or end <= start:
            continue
        first = bisect.bisect_right(ends, start)  # the first token that ends inside the segment
        stop = bisect.bisect_left(starts, end)  # the first token that starts after it
        if first < stop and starts[first] < start and ids[first] in special_ids:
            first += 1
        for i in range(first, stop):
            weights[i] = max(weights[i], weight)
    return weights


register_loss_scale(LossScaleMeta(
    name="ignore_empty_think",
    patterns={r"^<think>\s*</think>\s*": 0.0, r"^</think>\s*": 0.0},
    description="no loss on an empty <think></think> block at the start of a turn",
))
register_loss_scale(LossScaleMeta(
    name="ignore_think_prefix",
    patterns={r"^<think>\n?": 0.0},
    description="no loss on the <think> tag that opens a turn (the reasoning and </think> still train)",
))
register_loss_scale(LossScaleMeta(
    name="hermes",
    patterns={r"<tool_call>.+?</tool_call>": 2.0},
    description="Hermes <tool_call> blocks weigh 2",
))
_REACT = {"Action:": (2.0, 2.0), "Action Input:": (2.0, 2.0), "Thought:": (1.0, 1.0), "Final Answer:": (1.0, 1.0),
          "Observation:": (2.0, 0.0)}
register_loss_scale(LossScaleMeta(
    name="react",
    keywords=_REACT,
    description="ReAct: Action / Action Input weigh 2, Observation: 2 and the tool's output after it 0",
))
register_loss_scale(LossScaleMeta(
    name="qwen",
    keywords={"✿FUNCTION✿:": (2.0, 2.0), "✿ARGS✿:": (2.0, 2.0), "✿RETURN✿:": (1.0, 1.0), "✿RESULT✿:": (2.0, 0.0)},
    description="Qwen-Agent: ✿FUNCTION✿ / ✿ARGS✿ weigh 2, ✿RESULT✿: 2 and the tool's output after it 0",
))
register_loss_scale(LossScaleMeta(
    name="alpha_umi",
    keywords={**_REACT, "Next:": (2.0, 2.0)},
    description="Alpha-UMI: as react, plus Next: weighing 2",
))
register_loss_scale(LossScaleMeta(
    name="agentflan",
    keywords={"Name:": (1.0, 3.0), "Action:": (1.0, 3.0), "ACTION:": (1.0, 3.0), "Tool:": (1.0, 3.0),
              "Command": (1.0, 3.0), "Arguments:": (1.0, 3.0), "action input": (1.0, 3.0),
              "ACTION_INPUT:": (1.0, 3.0), "Action Input:": (1.0, 3.0), "Thought:": (1.0, 1.0),
              "Final Answer:": (1.0, 1.0), "Observation:": (2.0, 0.0)},
    description="AgentFLAN: what follows an action keyword weighs 3, the tool's output 0",
))
