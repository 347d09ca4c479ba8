"""A user's clone has no folder beside it: tests, benchmarks, docs and code must use files of the repository only."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

SCANNED = ("tests/", "benchmarks/", "docs/", "scripts/", "packages/", "README.md")
# A path to the "shared" folder beside the checkout, relative (dot-dot, slash) or made from `ROOT.parent`/`parents[i]`.
OUTSIDE = re.compile(r"\.\./shared\b|\.parents?(\[[^]]*\])?\s*/\s*[\"']shared[\"']")
MAX_BYTES = 2_000_000  # the repository's limit per file (a hook rejects larger ones): data goes into ignored folders


def tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]  # deleted, not yet staged: gone


def test_nothing_reads_files_outside_the_repository():
    found = []
    for name in tracked():
        if not name.startswith(SCANNED):
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary: the fixture archives, images
            continue
        found += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_every_tracked_file_is_under_2_mb():
    big = [f"{name}: {size:,} bytes" for name in tracked() if (size := (ROOT / name).stat().st_size) >= MAX_BYTES]
    assert not big, "\n".join(big)
