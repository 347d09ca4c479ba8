"""`swift web-ui`: one tab per command (sft/pt, rlhf, chat, export, eval), each form generated from the arguments
dataclass that the command's CLI parses. Start runs the exact line in the command box as a subprocess (its own
process group, recorded on disk: `runs.py`); the page tails its log and draws the loss while it trains.

Element ids are stable: on the first tab every field's id is its flag name and the widgets are `command`, `start`,
`stop`, `runs`, `log`, `loss_plot`; on other tabs the same ids carry the tab's key (`rlhf-model`, `eval-start`),
because ids must be unique on a page.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core import SwiftError
from swift.ui.arguments import WebUiArguments
from swift.ui.env import default_runs_dir
from swift.ui.forms import Field, command_argv, command_line, display_value, form_fields, secret_env
from swift.ui.i18n import flag_help, t
from swift.ui.runs import Run, list_runs, start_run

logger = logging.getLogger(__name__)


def _train_arguments(name: str) -> type:
    """An arguments class of swift-train (`pip install "swift-ui[train]"`); ImportError when it is not installed."""
    from swift.train import ExportArguments, RlhfArguments, SftArguments

    return {"SftArguments": SftArguments, "RlhfArguments": RlhfArguments, "ExportArguments": ExportArguments}[name]


def _eval_arguments() -> type:
    from swift.infer import EvalArguments

    return EvalArguments


@dataclass(frozen=True)
class CommandTab:
    key: str  # tab id and element-id prefix (empty prefix on the first tab)
    title: str  # i18n key
    commands: tuple[str, ...]  # `swift <command>` choices; the first is the default
    arguments: Callable[[], type]  # the command's arguments dataclass (imported when the page is built)
    package: str  # what to install when the arguments' package is missing
    basic: tuple[str, ...]  # flags shown open; the rest sit in folded groups
    loss: bool = False


TRAIN_BASIC = ("model", "dataset", "train_type", "max_steps", "num_train_epochs", "save_steps", "output_dir",
               "learning_rate", "lora_rank", "per_device_train_batch_size", "max_length", "system")
TABS = (
    CommandTab("sft", "tab_sft", ("sft", "pt"), functools.partial(_train_arguments, "SftArguments"), "swift-train",
               TRAIN_BASIC, loss=True),
    CommandTab("rlhf", "tab_rlhf", ("rlhf",), functools.partial(_train_arguments, "RlhfArguments"), "swift-train",
               ("model", "rlhf_type", *TRAIN_BASIC[1:]), loss=True),
    CommandTab("export", "tab_export", ("export",), functools.partial(_train_arguments, "ExportArguments"),
               "swift-train",
               ("adapters", "ckpt_dir", "merge_lora", "model", "output_dir", "quant_method", "quant_bits", "to_gguf")),
    CommandTab("eval", "tab_eval", ("eval",), _eval_arguments, "swift-infer[eval]",
               ("model", "adapters", "ckpt_dir", "eval_dataset", "dataset_args", "eval_limit", "eval_url",
                "api_key", "eval_output_dir")),
)


def load_arguments(tab: CommandTab) -> type | None:
    """The tab's arguments dataclass, or None when its package is not installed."""
    try:
        return tab.arguments()
    except ImportError as e:
        logger.warning("web-ui tab %s: %s", tab.key, e)
        return None


def field_component(gr: Any, field: Field, lang: str) -> Any:
    flag = field.flag
    label = f"--{flag.name}"
    default = display_value(flag, flag.default)
    shown_default = t("none", lang) if flag.default in (None, [], {}) else str(default if default != "" else "")
    info = f"{flag_help(flag.name, flag.help, lang)} ({t('default', lang)}: {shown_default})"
    common = {"label": label, "info": info, "elem_id": field.elem_id}
    if flag.is_bool and not flag.optional:
        return gr.Checkbox(value=default, **common)
    if flag.is_bool:
        return gr.Dropdown(choices=["", "true", "false"], value=default, **common)
    if flag.choices is not None and not flag.is_list:
        choices = [str(c) for c in flag.choices]
        return gr.Dropdown(choices=([""] if flag.optional else []) + choices, value=default, **common)
    # An optional number stays text: an empty box means "unset" (a Number box would send 0).
    if flag.kind is int and flag.default is not None:
        return gr.Number(value=default, precision=0, **common)
    if flag.kind is float and flag.default is not None:
        return gr.Number(value=default, **common)
    if flag.secret:
        return gr.Textbox(value=default, type="password", **common)
    return gr.Textbox(value=default, lines=1, max_lines=4, **common)


def build_command_tab(gr: Any, demo: Any, tab: CommandTab, cls: type, lang: str, runs_dir: Path) -> None:
    prefix = "" if tab is TABS[0] else f"{tab.key}-"
    fields = form_fields(cls, prefix=prefix)
    by_name = {f.flag.name: f for f in fields}
    components: dict[str, Any] = {}
    kind = gr.Radio(list(tab.commands), value=tab.commands[0], label=t("train_kind", lang),
                    elem_id=f"{prefix}swift_command", visible=len(tab.commands) > 1)
    with gr.Group():
        gr.Markdown(f"**{t('basic', lang)}**")
        with gr.Row(equal_height=False):
            for name in tab.basic:
                if name in by_name:
                    components[name] = field_component(gr, by_name[name], lang)
    groups: dict[str, list[Field]] = {}
    for field in fields:
        if field.flag.name not in components:
            groups.setdefault(field.flag.group_title, []).append(field)
    with gr.Accordion(t("more", lang), open=False):
        for title, group in groups.items():
            with gr.Accordion(title, open=False), gr.Row(equal_height=False):
                for field in group:
                    components[field.flag.name] = field_component(gr, field, lang)
    ordered = [f for f in fields if f.flag.name in components]
    inputs = [components[f.flag.name] for f in ordered]
    command = gr.Textbox(value=command_line(["swift", tab.commands[0]]), label=t("command", lang),
                         elem_id=f"{prefix}command", interactive=False, lines=2)
    with gr.Row():
        start = gr.Button(t("start", lang), elem_id=f"{prefix}start", variant="primary")
        stop = gr.Button(t("stop", lang), elem_id=f"{prefix}stop", variant="stop")
        refresh = gr.Button(t("refresh", lang), elem_id=f"{prefix}refresh")
    with gr.Row():
        runs = gr.Dropdown(choices=[], value=None, label=t("runs", lang), elem_id=f"{prefix}runs", scale=3,
                           allow_custom_value=True)
        status = gr.Textbox(label=t("status", lang), elem_id=f"{prefix}status", interactive=False, scale=1)
    log = gr.Textbox(label=t("log", lang), elem_id=f"{prefix}log", lines=14, max_lines=14, interactive=False,
                     autoscroll=True)
    loss_plot = gr.LinePlot(x="step", y="loss", label=t("loss_plot", lang), elem_id=f"{prefix}loss_plot",
                            visible=tab.loss)

    def argv_of(command_word: str, *values: Any) -> list[str]:
        return command_argv([command_word], ordered, values)

    def show_command(command_word: str, *values: Any) -> str:
        return command_line(argv_of(command_word, *values), secret_env(ordered, values))

    def run_choices(selected: str | None = None) -> Any:
        found = list_runs(runs_dir, tab.key)
        choices = [(f"{r.id} · {status_label(r.status(), lang)}", r.id) for r in found]
        value = selected or (found[0].id if found else None)
        return gr.update(choices=choices, value=value)

    def start_clicked(command_word: str, *values: Any) -> tuple[Any, str, str]:
        argv, secrets = argv_of(command_word, *values), secret_env(ordered, values)
        output_dir = values[[f.flag.name for f in ordered].index("output_dir")] if "output_dir" in by_name else None
        run = start_run(runs_dir, tab.key, argv, output_dir=output_dir or None, env=os.environ | secrets)
        return run_choices(run.id), command_line(argv, secrets), status_label("running", lang)

    def stop_clicked(run_id: str | None) -> str:
        if not run_id:
            return t("no_run", lang)
        run = Run(runs_dir / run_id)
        run.stop()
        return status_label(run.status(), lang)

    def poll(run_id: str | None) -> tuple[str, Any, str]:
        if not run_id or not (runs_dir / run_id / "command.json").is_file():
            return "", gr.skip(), ""
        run = Run(runs_dir / run_id)
        plot = gr.skip()
        if tab.loss:
            import pandas as pd

            plot = pd.DataFrame(run.loss_points(), columns=["step", "loss"])
        return run.log_tail(), plot, status_label(run.status(), lang)

    gr.on([kind.change, *(c.change for c in inputs)], show_command, [kind, *inputs], command)
    start.click(start_clicked, [kind, *inputs], [runs, command, status])
    stop.click(stop_clicked, runs, status)
    refresh.click(lambda value: run_choices(value), runs, runs)
    gr.Timer(1.5).tick(poll, runs, [log, loss_plot, status])
    demo.load(run_choices, None, runs)  # runs recorded on disk, also those from before a restart


def status_label(status: str, lang: str) -> str:
    """running / finished / stopped in the page's language; `failed (exit N)` and `gone` as they are."""
    return t(status, lang) if status in ("running", "finished", "stopped") else status


def build_web_ui(args: WebUiArguments, lang: str) -> Any:
    from swift.ui.launch import import_gradio

    gr = import_gradio()
    runs_dir = Path(args.runs.runs_dir).expanduser() if args.runs.runs_dir else default_runs_dir()
    with gr.Blocks(title=t("title", lang)) as demo:
        gr.Markdown(f"## {t('title', lang)}")
        with gr.Tabs():
            for tab in TABS[:2]:
                _command_tab(gr, demo, tab, lang, runs_dir)
            with gr.Tab(t("tab_infer", lang), id="infer"):
                build_infer_tab(gr, lang)
            for tab in TABS[2:]:
                _command_tab(gr, demo, tab, lang, runs_dir)
    return demo


def _command_tab(gr: Any, demo: Any, tab: CommandTab, lang: str, runs_dir: Path) -> None:
    with gr.Tab(t(tab.title, lang), id=tab.key):
        cls = load_arguments(tab)
        if cls is None:
            gr.Markdown(t("missing_pkg", lang, package=tab.package, line=f'`pip install "{tab.package}"`'),
                        elem_id=f"{tab.key}-missing")
            return
        build_command_tab(gr, demo, tab, cls, lang, runs_dir)


def build_infer_tab(gr: Any, lang: str) -> None:
    """Chat with a model loaded in this process (one at a time; loading another frees the previous)."""
    from swift.ui.chat import ChatBackend, build_chat

    holder: dict[str, Any] = {}
    with gr.Row():
        model = gr.Textbox(label="--model", elem_id="infer-model", scale=3)
        adapters = gr.Textbox(label="--adapters", elem_id="infer-adapters", scale=3)
        load = gr.Button(t("load_model", lang), elem_id="infer-load", scale=1)
    status = gr.Markdown(t("model_not_loaded", lang), elem_id="infer-status")

    def load_model(model_id: str, adapter_text: str) -> str:
        import contextlib
        import shlex

        from swift.core.arguments import ModelArgs
        from swift.infer import DeployArguments, InferArgs, own_server

        if "stack" in holder:
            holder.pop("stack").close()
            holder.pop("backend", None)
        stack = contextlib.ExitStack()
        args = DeployArguments(model=ModelArgs(model=model_id.strip() or None),
                               infer=InferArgs(adapters=shlex.split(adapter_text or "")))
        try:
            endpoint = stack.enter_context(own_server(args))
        except SwiftError as e:
            return t("error", lang, error=str(e))
        holder.update(stack=stack, backend=ChatBackend(endpoint.url, endpoint.api_key, endpoint.models[0]))
        return t("model_loaded", lang, model=endpoint.models[0])

    def backend() -> ChatBackend:
        if "backend" not in holder:
            raise RuntimeError(t("model_not_loaded", lang))
        return holder["backend"]

    load.click(load_model, [model, adapters], status)
    build_chat(gr, backend, lang, prefix="infer-")
