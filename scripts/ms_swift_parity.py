"""How many of ms-swift's example command lines our CLI accepts: every `swift <cmd>` / `megatron <cmd>` invocation in
an ms-swift checkout's `examples/**/*.sh`, checked flag by flag against what our `<cmd> --help` lists.

    python scripts/ms_swift_parity.py PATH_TO_MS_SWIFT [--show-missing 40] [--json out.json]

PATH is a work tree or a bare git directory (read at HEAD with `git show`). An invocation counts as accepted when
each of its flags is listed by our help; the report gives the share per command and the most frequent missing
flags. Flags are taken as written (`--flag`, `--flag=value`); line continuations are joined and shell variables
are left as they are (a flag name is never a variable in those scripts).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

COMMANDS = {"swift": ("sft", "pt", "rlhf", "infer", "export", "deploy", "eval", "sample", "rollout", "app", "web-ui",
                      "merge-lora"),
            "megatron": ("sft", "pt", "rlhf", "export")}
# Flags whose capability another issue of this round builds (the ms-swift command-lines issue leaves them to it):
# reported apart, so the share says both what runs today and what is left to which piece of work.
ELSEWHERE = {
    "sequence parallelism": {"sequence_parallel_size"},
    "vLLM rollouts / serving": {"sleep_level", "offload_model", "offload_optimizer", "offload_bridge", "async_generate",
                                "vllm_server_pass_dataset", "vllm_limit_mm_per_prompt", "vllm_data_parallel_size",
                                "sglang_tp_size", "sglang_context_length", "move_model_batches"},
    "RLHF complete (GRPO family, PPO, megatron rlhf)": {
        "log_completions", "epsilon_high", "overlong_filter", "dynamic_sample", "max_resample_times",
        "steps_per_generation", "advantage_estimator", "importance_sampling_level", "kl_in_reward", "max_turns",
        "multi_turn_scheduler", "top_entropy_quantile", "delta", "tau_pos", "tau_neg", "use_gym_env", "gym_env",
        "chord_enable_phi_function", "chord_mu_decay_steps", "chord_mu_peak", "chord_mu_valley",
        "chord_mu_warmup_steps", "chord_sft_dataset", "chord_sft_per_device_train_batch_size", "fipo_clip_high_only",
        "fipo_clip_range", "fipo_decay_rate", "fipo_safety_threshold", "log_rollout_offpolicy_metrics",
        "gkd_logits_topk", "teacher_model_server", "teacher_deepspeed", "sft_alpha", "response_length", "use_ray",
        "reward_model_plugin", "num_ppo_epochs", "kl_coef", "cliprange", "vf_coef", "value_model"},
}
ELSEWHERE_COMMANDS = {"megatron rlhf": "RLHF complete (GRPO family, PPO, megatron rlhf)"}
_INVOCATION = re.compile(r"(?:^|[\s;&|(`])(swift|megatron)\s+([a-z][a-z-]*)\b(.*)")


def example_scripts(root: Path) -> dict[str, str]:
    """Path -> text of every examples/**/*.sh, from a work tree or (at HEAD) from a git directory."""
    if (root / "examples").is_dir():
        return {str(p.relative_to(root)): p.read_text(encoding="utf-8", errors="replace")
                for p in sorted((root / "examples").rglob("*.sh"))}
    names = subprocess.run(["git", "--git-dir", str(root), "ls-tree", "-r", "--name-only", "HEAD", "examples"],
                           check=True, capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{n}"], check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".sh")}


def invocations(text: str) -> list[tuple[str, list[str]]]:
    """("swift sft", [flag names]) for each command line of a shell script."""
    joined = re.sub(r"\\\s*\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        m = _INVOCATION.search(line)
        if not m or m.group(2) not in COMMANDS[m.group(1)]:
            continue
        try:
            tokens = shlex.split(m.group(3), comments=True)
        except ValueError:
            tokens = m.group(3).split()
        flags = [t[2:].split("=", 1)[0].replace("-", "_") for t in tokens if t.startswith("--") and len(t) > 2]
        out.append((f"{m.group(1)} {m.group(2)}", flags))
    return out


def our_flags(command: str) -> set[str]:
    """Flag names (canonical and aliases) that our `<command> --help` lists."""
    exe = Path(sys.executable).with_name(command.split()[0])
    text = subprocess.run([str(exe), command.split()[1], "--help"], capture_output=True, text=True).stdout
    return {m.replace("-", "_") for m in re.findall(r"(?<![\w-])--([a-zA-Z][\w-]*)", text)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ms_swift", type=Path, help="an ms-swift checkout (work tree or git directory)")
    p.add_argument("--show-missing", type=int, default=40, help="list this many of the most frequent missing flags")
    p.add_argument("--json", type=Path, help="also write the per-invocation results here")
    a = p.parse_args()
    scripts = example_scripts(a.ms_swift)
    known: dict[str, set[str]] = {}
    per_cmd: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    missing: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    rows = []
    for path, text in scripts.items():
        for command, flags in invocations(text):
            if command not in known:
                known[command] = our_flags(command)
            lacks = sorted({f for f in flags if f not in known[command]})
            per_cmd[command][0] += not lacks
            per_cmd[command][1] += 1
            for f in lacks:
                missing[command][f] += 1
            rows.append({"script": path, "command": command, "missing": lacks})
    ok = sum(v[0] for v in per_cmd.values())
    total = sum(v[1] for v in per_cmd.values())
    print(f"{len(scripts)} scripts, {total} invocations: {ok} accepted ({100 * ok / max(total, 1):.1f} %)")
    owner = {flag: work for work, flags in ELSEWHERE.items() for flag in flags}
    waiting: collections.Counter = collections.Counter()
    for row in rows:
        if not row["missing"]:
            continue
        works = {ELSEWHERE_COMMANDS.get(row["command"]) or owner.get(f) for f in row["missing"]}
        if None not in works:
            waiting[" + ".join(sorted(works))] += 1
    if waiting:
        left = sum(waiting.values())
        print(f"  + {left} more wait only on flags that another piece of work builds "
              f"({100 * (ok + left) / max(total, 1):.1f} % with them):")
        for work, n in waiting.most_common():
            print(f"      {n:4}  {work}")
    for command, (good, n) in sorted(per_cmd.items(), key=lambda kv: -kv[1][1]):
        print(f"  {command:16} {good:4}/{n:<4} ({100 * good / n:5.1f} %)")
    flat = collections.Counter()
    for command, counter in missing.items():
        for f, n in counter.items():
            flat[f"{command} --{f}"] += n
    if flat and a.show_missing:
        print("most frequent missing flags:")
        for name, n in flat.most_common(a.show_missing):
            print(f"  {n:4}  {name}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
