"""tests/sharded/ (explicit-sharding and sequence-parallel tests) on 8 virtual CPU devices.

A process's device count is fixed when jax starts its backend, so the directory runs in
subprocesses of its own with ``--xla_force_host_platform_device_count=8``; the root
conftest.py skips it in every other process. It runs as two halves of about equal time, one
per pytest-xdist worker: the scans (sequence-parallel, batch-sharded, the kernels), and
everything else in the directory (a new file lands there unless it is named below). Their
output is shown when they fail.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EIGHT = "--xla_force_host_platform_device_count=8"


SCANS = (
    "tests/sharded/test_sequence_parallel.py",
    "tests/sharded/test_sequence_parallel_models.py",
    "tests/sharded/test_scan_sharded.py",
    "tests/sharded/test_kernels_sharded.py",
)
HALVES = {
    "scans": list(SCANS),
    "the_rest": ["tests/sharded", *(f"--ignore={path}" for path in SCANS)],
}


@pytest.mark.parametrize("half", sorted(HALVES))
def test_sharded_suite_on_eight_devices(half):
    for path in SCANS:
        assert (REPO / path).is_file(), path
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {EIGHT}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", *HALVES[half], "-q", "-p", "no:xdist", "-rfE"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(
            f"tests/sharded ({half}) failed (rc {proc.returncode}):\n{proc.stdout[-12000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    assert " passed" in proc.stdout, proc.stdout[-2000:]
