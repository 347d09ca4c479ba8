"""swift web-ui and swift app in a real browser (Debian's chromium through Playwright), on the tiny random llama."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest

from tests.conftest import SMOLLM2
from tests.ui.conftest import box_text, fill_flag, serve

CJK = re.compile(r"[\u4e00-\u9fff]")


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def train_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} is {2 * i}."}]} for i in range(16)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def web_ui(tmp_path):
    with serve(["web-ui", "--runs_dir", str(tmp_path / "runs")], tmp_path, env={"SWIFT_UI_LANG": "en"}) as url:
        yield url, tmp_path / "runs"


def test_a_lora_run_started_from_the_form_trains_and_shows_log_loss_and_command(browser, web_ui, tiny_llama_dir,
                                                                                 train_file, tmp_path):
    url, runs_dir = web_ui
    out = tmp_path / "out"
    page = browser.new_page()
    page.goto(url)
    page.locator("#model").wait_for(timeout=60000)
    fill_flag(page, "model", str(tiny_llama_dir))
    fill_flag(page, "dataset", str(train_file))
    fill_flag(page, "max_steps", "2")
    fill_flag(page, "save_steps", "2")
    fill_flag(page, "output_dir", str(out))
    page.get_by_role("button", name="More settings").click()
    page.get_by_role("button", name="Training").click()
    fill_flag(page, "logging_steps", "1")
    page.wait_for_timeout(500)
    page.locator("#start").click()
    wait_until(lambda: list(out.glob("**/checkpoint-2/adapter_model.safetensors")), 240, "checkpoint-2")
    argv = shlex.split(page.locator("#command textarea").input_value())
    assert argv[:3] == ["swift", "sft", "--model"]
    assert argv[argv.index("--max_steps") + 1] == "2"
    assert argv[argv.index("--logging_steps") + 1] == "1"
    assert argv[argv.index("--output_dir") + 1] == str(out)
    # The run is recorded on disk with the same command, and the page tails its log and plots its loss.
    (run_dir,) = list(runs_dir.iterdir())
    assert json.loads((run_dir / "command.json").read_text())["argv"] == argv
    wait_until(lambda: "checkpoint" in box_text(page, "log") or "loss" in box_text(page, "log"), 30, "the log")
    wait_until(lambda: page.locator("#loss_plot canvas, #loss_plot svg").count() > 0, 30, "the loss plot")
    wait_until(lambda: "finished" in box_text(page, "status"), 120, "the run to finish")


def test_stop_ends_the_run_and_its_process_group(browser, web_ui, tiny_llama_dir, train_file, tmp_path):
    url, runs_dir = web_ui
    page = browser.new_page()
    page.goto(url)
    page.locator("#model").wait_for(timeout=60000)
    fill_flag(page, "model", str(tiny_llama_dir))
    fill_flag(page, "dataset", str(train_file))
    fill_flag(page, "max_steps", "100000")
    fill_flag(page, "output_dir", str(tmp_path / "long"))
    page.wait_for_timeout(500)
    page.locator("#start").click()
    pid_file = wait_until(lambda: next(iter(runs_dir.glob("*/pid")), None), 30, "the run's pid file")
    pgid = int(pid_file.read_text())
    wait_until(lambda: "running" in box_text(page, "status"), 30, "the status to say running")
    page.locator("#stop").click()
    wait_until(lambda: not group_alive(pgid), 30, "the process group to end")
    wait_until(lambda: "stopped" in box_text(page, "status"), 30, "the status to say stopped")


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_the_language_switch_changes_every_label(browser, tmp_path):
    counts = {}
    for lang in ("en", "zh"):
        with serve(["web-ui", "--runs_dir", str(tmp_path / "runs")], tmp_path, env={"SWIFT_UI_LANG": lang}) as url:
            page = browser.new_page()
            page.goto(url)
            page.locator("#model").wait_for(timeout=60000)
            counts[lang] = len(CJK.findall(page.locator("body").inner_text()))
            assert page.get_by_role("button", name="开始" if lang == "zh" else "Start").count() == 1
            page.get_by_role("tab", name="评测" if lang == "zh" else "Evaluate").click()
            page.locator("#eval-eval_dataset").wait_for(timeout=10000)
    assert counts["en"] == 0
    assert counts["zh"] >= 30


def test_swift_app_answers_a_chat_message(browser, tmp_path):
    # The packaged SmolLM2 (a real chat model): a random tiny model's greedy answer is empty.
    with serve(["app", "--model", SMOLLM2, "--temperature", "0", "--max_new_tokens", "24"], tmp_path) as url:
        page = browser.new_page()
        page.goto(url)
        box = page.locator("#chat_input").locator("textarea, input").first
        box.wait_for(timeout=120000)
        box.fill("What is the capital of France?")
        box.press("Enter")
        page.locator("#chatbot").get_by_text(re.compile("Paris")).first.wait_for(timeout=120000)
        assert "What is the capital of France?" in page.locator("#chatbot").inner_text()
        page.locator("#clear").click()
        wait_until(lambda: "Paris" not in page.locator("#chatbot").inner_text(), 10, "the chat to clear")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def colour_vl_checkpoint(tmp_path_factory) -> Path:
    """A tiny Qwen2-VL taught to name an image's colour (the question never changes: only the pixels answer it)."""
    import random

    from swift.train import sft_main
    from tests.fixtures.multimodal import sample_image, save_tiny

    folder = tmp_path_factory.mktemp("colours")
    colours = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
    rows, rng = [], random.Random(0)
    for i in range(48):
        name = rng.choice(list(colours))
        shade = tuple(min(255, int(c * rng.uniform(0.7, 1.1))) for c in colours[name])
        sample_image(shade).save(folder / f"{i}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>What colour is this image?"},
                                  {"role": "assistant", "content": name}], "images": [f"{i}.png"]})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = save_tiny("qwen2_vl", folder / "model")
    result = sft_main(["--model", str(model), "--dataset", str(folder / "train.jsonl"), "--train_type", "full",
                       "--max_steps", "80", "--learning_rate", "3e-3", "--per_device_train_batch_size", "8",
                       "--gradient_checkpointing", "false", "--save_steps", "80", "--output_dir", str(folder / "out"),
                       "--report_to", "none", "--seed", "7"])
    return result.last_checkpoint


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_swift_app_takes_an_uploaded_image(browser, colour_vl_checkpoint, tmp_path):
    from tests.fixtures.multimodal import sample_image

    with serve(["app", "--model", str(colour_vl_checkpoint), "--temperature", "0", "--max_new_tokens", "4"],
               tmp_path) as url:
        page = browser.new_page()
        page.goto(url)
        box = page.locator("#chat_input").locator("textarea, input").first
        box.wait_for(timeout=120000)
        for number, (name, colour) in enumerate((("blue", (30, 40, 200)), ("red", (200, 30, 30)))):
            picture = tmp_path / f"upload-{number}.png"  # (the page may show the file name)
            sample_image(colour).save(picture)
            page.locator("#image input[type=file]").set_input_files(str(picture))
            page.locator("#image img").first.wait_for(timeout=30000)  # the upload shows before it is sent
            box.fill("What colour is this image?")
            box.press("Enter")
            wait_until(lambda name=name: name in page.locator("#chatbot").inner_text().lower(), 120,
                       f"the answer {name}")
            page.locator("#clear").click()
            wait_until(lambda name=name: name not in page.locator("#chatbot").inner_text().lower(), 10,
                       "the chat to clear")
