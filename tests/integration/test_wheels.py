"""Each member builds its own wheel, pins swift-core, and installs à la carte."""

from __future__ import annotations

import email
import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT

MEMBERS = ("core", "tuners", "train", "infer", "megatron", "ui")


def find_uv() -> str:
    for candidate in (str(BIN / "uv"), shutil.which("uv")):  # the dev group locks uv into .venv
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("uv not found: make setup installs it")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for member in MEMBERS:
        sh(find_uv(), "build", "-q", "--package", f"swift-{member}", "--wheel", "-o", str(out), cwd=ROOT)
    return {m: Path(glob.glob(str(out / f"swift_{m}-*.whl"))[0]) for m in MEMBERS}


def metadata_of(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_every_member_wheel_is_a_namespace_part_pinning_core(wheels):
    for member, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
        assert f"swift/{member}/__init__.py" in names
        assert "swift/__init__.py" not in names  # PEP 420: members share the `swift` namespace
        requires = metadata_of(wheel).get_all("Requires-Dist") or []
        if member != "core":
            assert any(r.replace(" ", "").startswith("swift-core<0.2,>=0.1") or
                       r.replace(" ", "").startswith("swift-core>=0.1,<0.2") for r in requires), requires


def venv(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    sh(find_uv(), "venv", "-q", "--python", sys.executable, str(path))
    return path


def test_core_alone_lists_everything_and_says_how_to_install_the_rest(wheels, tmp_path):
    env_dir = venv(tmp_path, "core-only")
    sh(find_uv(), "pip", "install", "-q", "--python", str(env_dir / "bin" / "python"), "--no-deps",
       str(wheels["core"]))
    help_text = sh(str(env_dir / "bin" / "swift"), "--help").stdout
    assert 'sft         supervised fine-tuning' in help_text
    assert '[not installed: pip install "swift-train"]' in help_text
    assert '[not installed: pip install "swift-ui"]' in help_text
    result = subprocess.run([str(env_dir / "bin" / "swift"), "sft", "--model", "x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "swift sft is provided by swift-train, which is not installed" in result.stderr
    assert 'pip install "swift-train"' in result.stderr
    result = subprocess.run([str(env_dir / "bin" / "swift"), "deploy"], capture_output=True, text=True)
    assert result.returncode == 2
    assert 'pip install "swift-infer"' in result.stderr


def local_cpu_torch() -> str | None:
    """The CPU torch wheel of pip's find-links folder, if this machine has one (saves a multi-GB CUDA download)."""
    config = subprocess.run(["python3", "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                            text=True)
    for folder in config.stdout.split():
        found = sorted(glob.glob(os.path.join(folder, "torch-2.13.0+cpu-*.whl")))
        if found:
            return found[0]
    return None


def test_serving_install_has_no_training_stack(wheels, tmp_path):
    env_dir = venv(tmp_path, "serving")
    python = str(env_dir / "bin" / "python")
    torch_wheel = local_cpu_torch()
    if torch_wheel:
        sh(find_uv(), "pip", "install", "-q", "--python", python, "--no-deps", torch_wheel)
    sh(find_uv(), "pip", "install", "-q", "--python", python, str(wheels["core"]), str(wheels["infer"]))
    code = (
        "import importlib.util, sys\n"
        "import swift.infer, swift.infer.cli, swift.core\n"
        "print(' '.join(m for m in ('trl', 'deepspeed', 'gradio', 'swift.train', 'swift.tuners', 'megatron')"
        " if importlib.util.find_spec(m.split('.')[0]) and importlib.util.find_spec(m)))"
    )
    assert sh(python, "-c", code).stdout.strip() == ""
    assert "Inference:" in sh(str(env_dir / "bin" / "swift"), "infer", "--help").stdout
