"""The `swift` dispatcher: lists every command, installs hints, versions, unknown commands, light start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from swift.core.cli.commands import COMMANDS
from swift.core.cli.main import MEMBERS, installed_commands, main
from tests.conftest import BIN, HEAVY, run_python


def swift(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "swift"), *argv], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_with_a_description():
    result = swift("--help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(COMMANDS) <= listed
    for name in ("sft", "pt", "rlhf", "infer", "deploy", "export", "eval", "app", "web-ui", "rollout", "sample",
                 "merge-lora"):
        assert name in listed
    assert "not installed" not in result.stdout  # the dev venv holds every member


def test_every_catalogued_command_is_registered_by_its_member():
    assert set(installed_commands()) >= set(COMMANDS)
    for name, ep in installed_commands().items():
        if name in COMMANDS:
            assert ep.dist.name == COMMANDS[name].package, name


def test_version_names_every_member(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    for member in MEMBERS:
        assert f"{member} 0.1" in out


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["stf"]) == 2
    assert "did you mean `swift sft`" in capsys.readouterr().err


def test_unknown_flag_names_it_and_suggests():
    result = swift("sft", "--modle", "x", "--lora_rnak", "4")
    assert result.returncode == 2
    assert "unknown flag --modle; did you mean --model?" in result.stderr
    assert "unknown flag --lora_rnak; did you mean --lora_rank?" in result.stderr  # all errors at once


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom swift.core.cli.main import main\nmain(['--help'])\n"
        f"print('HEAVY:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("HEAVY:"), result.stdout[-300:]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_lists_grouped_flags_without_heavy_imports(command):
    code = (
        "import sys\nfrom swift.core.cli.main import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print('HEAVY:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("HEAVY:"), result.stdout[-300:]
    assert "Model:" in result.stdout or "Web UI:" in result.stdout
    assert "(default:" in result.stdout


def test_import_swift_core_is_light():
    result = run_python(f"import sys, swift.core; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_unbuilt_command_says_so_instead_of_pretending(capsys):
    from swift.core.cli import not_built, run_command

    def unbuilt(argv):
        raise not_built("swift later", "a later issue")

    assert run_command(unbuilt, ["--model", "m"]) == 1
    assert "does not run yet" in capsys.readouterr().err


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_third_party_import_noise_is_dropped_and_other_messages_are_kept():
    pytest.importorskip("deepspeed")
    pytest.importorskip("bitsandbytes")
    imports = "import logging, deepspeed, bitsandbytes; logging.getLogger('DeepSpeed').warning('kept: a real warning')"
    # both interpreters at once: each import of deepspeed + bitsandbytes takes ~15 s of one core
    plain, quiet = (subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
                    for code in (imports, "from swift.core.cli.main import _configure_logging; _configure_logging(); "
                                          + imports))
    plain_out, quiet_out = plain.communicate(timeout=300)[0], quiet.communicate(timeout=300)[0]
    assert plain.returncode == quiet.returncode == 0, quiet_out
    import torch

    if not torch.cuda.is_available():  # without a GPU DeepSpeed says so at import, unless filtered
        assert "Setting accelerator to CPU" in plain_out
    assert "Setting accelerator to CPU" not in quiet_out
    assert "Failed to load CPU gemm_4bit_forward" not in quiet_out
    assert "kept: a real warning" in quiet_out


def test_help_into_a_closed_pipe_stops_quietly():
    """`swift sft --help | head -1`: the reader goes away; no traceback."""
    proc = subprocess.Popen([str(BIN / "swift"), "sft", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child writes a byte: its write fails with EPIPE
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    assert proc.returncode == 1
