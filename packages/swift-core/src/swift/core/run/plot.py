"""Loss curves as images from logging.jsonl: images/train_loss.png (and eval_loss.png when there is eval).

matplotlib is imported when a plot is drawn; commands that plot (swift-train, swift-megatron) depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill is skipped, not fatal
    return rows


def plot_losses(run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(run_dir / "logging.jsonl")
    written = []
    for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss")):
        points = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.plot(steps, values, marker="." if len(points) < 50 else None)
        ax.set(xlabel="step", ylabel=key, title=f"{key} - {run_dir.name}")
        ax.grid(alpha=0.3)
        out = run_dir / "images" / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written
