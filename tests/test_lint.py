"""The code is ruff-clean and ruff-formatted (rules and line length in pyproject.toml, [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"
TREES = ["src", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    if not RUFF.is_file():
        pytest.fail(f"{RUFF} is missing: install the dev extra (bash scripts/install.sh --dev)")
    return subprocess.run([str(RUFF), *args, *TREES], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    p = _ruff("check", "--no-cache")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_the_code_is_formatted():
    p = _ruff("format", "--check", "--no-cache")
    assert p.returncode == 0, "run `.venv/bin/ruff format " + " ".join(TREES) + "`:\n" + p.stdout[-4000:] + p.stderr[-2000:]
