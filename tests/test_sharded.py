"""tests/sharded/ (explicit-sharding and sequence-parallel tests) on 8 virtual CPU devices.

A process's device count is fixed when jax starts its backend, so the directory runs in one
subprocess of its own with ``--xla_force_host_platform_device_count=8``; the root conftest.py
skips it in every other process. Its output is shown when it fails.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EIGHT = "--xla_force_host_platform_device_count=8"


def test_sharded_suite_on_eight_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {EIGHT}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "tests/sharded", "-q", "-p", "no:xdist", "-rfE"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(
            f"tests/sharded failed (rc {proc.returncode}):\n{proc.stdout[-12000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    assert " passed" in proc.stdout, proc.stdout[-2000:]
