"""The project's own tooling: the test command works with and without pytest-xdist."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_does_not_force_xdist():
    """`-n auto` belongs to `.ci/run`, not to pyproject's addopts (else `-p no:xdist` fails)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    addopts = config["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "-n" not in addopts and not any(a.startswith("--numprocesses") for a in addopts)
    assert "-n auto" in (ROOT / ".ci" / "run").read_text()


def test_pytest_runs_without_xdist():
    """`pytest -p no:xdist` collects and runs a test file (the issue: it failed on `-n auto`)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-q",
            "tests/test_project.py",
            "-k",
            "force",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
