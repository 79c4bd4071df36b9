"""Tests of benchmarks/device_check.py, the GPU check, and its device_check_*.py modules, without
a GPU.

The script's ``--dry-run`` runs every part at tiny sizes on the CPU, with
``jax.experimental.rnn.lstm_ref`` standing in for the cuDNN kernel; here it runs as a user runs
it (a subprocess, so that it sets up its own JAX platform), and its JSON must hold every part
with the rows the GPU run will have, none failed. The budget logic (rounds scaled down, one
call, groups skipped, failures as rows) is checked in-process on fake tasks.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCH / "device_check.py"


def load(name: str = "device_check"):
    """Import ``benchmarks/device_check.py`` (it puts ``benchmarks/`` on ``sys.path`` itself),
    then return ``name``: that script, or one of the modules it imports its parts from."""
    if "device_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["device_check"] = module
        spec.loader.exec_module(module)
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == BENCH, module.__file__
    return module


def test_dry_run_covers_every_part(tmp_path):
    out = tmp_path / "device_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["config"]["dry_run"] is True
    assert results["device"]["platform"] == "cpu" and results["device"]["jax"]
    assert list(results["parts"]) == ["equivalence", "lstm_speed", "parallel_scan", "newton"]
    rows = [r for part in results["parts"].values() for r in part["rows"]]
    bad = [r for r in rows if r["status"] in ("FAIL", "error") or "budget" in r["status"]]
    assert not bad, bad
    checks = {r["check"]: r for r in rows}

    # The dispatch decided right on the CPU and on the fake GPU; cuDNN rows are marked.
    assert checks["dispatch (cpu): f32, cudnn=None"]["result"].startswith("scan: ")
    assert checks["dispatch (cpu): f32, cudnn=True"]["result"].startswith("ValueError")
    assert checks["dispatch (dry run: fake CUDA GPU): f32, cudnn=None"]["result"] == "cuDNN"
    equal = [r for r in rows if r["check"].startswith("cuDNN = scan")]
    assert len(equal) == 2 and all(r["status"] == "skipped: no GPU" for r in equal)
    assert any("lengths with 0" in r["check"] and "bidirectional" in r["check"] for r in equal)
    bf16 = next(r for r in rows if r["check"].startswith("bf16 policy"))
    assert "scan path" in bf16["result"] and bf16["status"] == "ok"

    # Timings: every LSTM group and pair, every cell and T, both Newton sizes.
    lstm = results["parts"]["lstm_speed"]["rows"]
    assert len(lstm) == 2 * 4  # infer and train, four ratios each
    assert all(r["ratio"]["ratio"] > 0 for r in lstm if "ratio" in r)
    scan = {(c, t) for c in ("min_gru", "lru") for t in (16, 64)}
    assert {
        (r["check"].split()[0], r["T"]) for r in results["parts"]["parallel_scan"]["rows"]
    } == scan
    newton = results["parts"]["newton"]["rows"]
    assert {r["check"].split(":")[0] for r in newton} == {
        f"gru H={h} T={t}" for h in (4, 16) for t in (16, 64)
    }
    assert all("converged" in r["result"] for r in newton)
    assert "| part" in proc.stdout and "rows by status" in proc.stdout


def test_rounds_scale_to_the_budget():
    common, timing = load("device_check_common"), load("device_check_timing")
    calls = []
    tasks = {k: (lambda k=k: calls.append(k) or k) for k in ("a", "b")}
    args = type("Args", (), {"repeats": 3, "seed": 0})()

    stats, first, errors = timing.time_tasks(tasks, common.Deadline(60.0), args)
    assert first == {"a": "a", "b": "b"} and not errors
    assert all(len(s["samples_ms"]) == 3 and not s.get("one_call") for s in stats.values())
    assert "IQR" in timing.ratio_text(stats, "a", "b")

    # No time left: the one measured call is the sample, the ratio a plain one.
    stats, _, _ = timing.time_tasks(tasks, common.Deadline(0.0), args)
    assert all(s["one_call"] and len(s["samples_ms"]) == 1 for s in stats.values())
    assert timing.ratio(stats, "a", "b")["one_call"]
    assert "one call" in timing.ratio_text(stats, "a", "b")

    # A failing task is reported and left out; the others are timed.
    def boom():
        raise RuntimeError("no kernel")

    stats, _, errors = timing.time_tasks(
        {"a": tasks["a"], "bad": boom}, common.Deadline(60.0), args
    )
    assert list(stats) == ["a"] and errors == {"bad": "RuntimeError: no kernel"}


def test_groups_in_turn_skips_and_guards():
    common, timing = load("device_check_common"), load("device_check_timing")

    def run(group, deadline):
        if group == "bad":
            raise ValueError("broken")
        assert deadline.left() > 0
        return [common.row("p", group)]

    rows = timing.groups_in_turn(
        "p", ["x", "bad", "y"], [1.0, 1.0, 1.0], common.Deadline(60.0), run
    )
    assert [(r["check"], r["status"]) for r in rows] == [
        ("x", "ok"),
        ("bad", "error"),
        ("y", "ok"),
    ]
    rows = timing.groups_in_turn("p", ["x"], [1.0], common.Deadline(0.5), run)
    assert rows[0]["status"].startswith("skipped: time budget")

    # The next group's least cost is predicted from the last one's, scaled by its steps.
    def measured(group, deadline):
        deadline.measured = (1.0, 1.0)  # 1 s compiling, 1 s for one call of every task
        return [common.row("p", group)]

    rows = timing.groups_in_turn(
        "p", [1, 4, 400], [1, 1, 1], common.Deadline(60.0), measured, steps=[1, 4, 400]
    )
    assert [r["status"] for r in rows][:2] == ["ok", "ok"]
    assert rows[2]["status"].startswith("skipped: time budget") and "~201 s" in rows[2]["status"]


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--budget-s", "0"]])
def test_bad_arguments(argv):
    with pytest.raises(SystemExit):
        load().parse_args(argv)
