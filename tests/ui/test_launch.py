"""Safe defaults and flag checks of the pages, the tab of a missing package, and a light `--help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from swift.core.errors import ConfigError
from swift.ui.arguments import UiArgs, WebUiArguments
from swift.ui.launch import check_ui_flags
from swift.ui.web_ui import TABS, CommandTab, load_arguments

SWIFT = str(Path(sys.executable).parent / "swift")


def test_defaults_bind_localhost_without_share():
    ui = WebUiArguments().ui
    assert ui.server_name == "127.0.0.1"
    assert ui.share is False
    assert check_ui_flags(ui) is None


def test_auth_and_port_are_checked():
    assert check_ui_flags(UiArgs(auth="me:secret")) == ("me", "secret")
    with pytest.raises(ConfigError) as info:
        check_ui_flags(UiArgs(auth="me", server_port=70000))
    assert "--auth" in str(info.value)
    assert "--server_port 70000" in str(info.value)


def test_a_tab_whose_package_is_missing_is_named_not_fatal():
    def not_installed() -> type:
        raise ModuleNotFoundError("No module named 'swift.not_installed'", name="swift.not_installed")

    missing = CommandTab("x", "tab_sft", ("sft",), not_installed, "swift-train", ())
    assert load_arguments(missing) is None
    assert all(load_arguments(tab) is not None for tab in TABS)  # everything is installed in the dev environment


def test_help_imports_no_gradio_and_bad_flags_exit_2():
    code = ("import sys; from swift.ui.cli import web_ui_main\n"
            "try:\n    web_ui_main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('gradio' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False False"
    bad = subprocess.run([SWIFT, "web-ui", "--server_port", "99999"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--server_port 99999" in bad.stderr


def test_an_open_address_without_auth_prints_a_warning(tmp_path):
    from tests.ui.conftest import free_port

    process = subprocess.Popen([SWIFT, "web-ui", "--server_name", "0.0.0.0", "--server_port", str(free_port()),
                                "--runs_dir", str(tmp_path)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "WARNING" in line or len(lines) > 200:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert any("--server_name 0.0.0.0 without --auth" in line for line in lines), lines[-5:]
