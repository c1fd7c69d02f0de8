"""The tree stays in one style and type-checks: ruff (format and lint) and mypy, as
configured in pyproject.toml; .ci/run runs the same before the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("ruff", "format", "--check", "."), ("ruff", "check", ".")], ids=["format", "lint"])
def test_ruff(args: tuple[str, ...]) -> None:
    proc = tool(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = tool("mypy", "--cache-dir", "/dev/null")
    assert proc.returncode == 0, proc.stdout + proc.stderr
