"""Tests of benchmarks/: smoke runs of every script at tiny sizes, and the timing harness itself.

Each script's ``main`` runs once with ``--quick --repeats 1``, and the test checks what it
computed, never how fast: in ``bench_cells.py`` every implementation produced outputs of the
same shape and, since all of them get the same weights (Flax's, with random biases, mapped to
every other layout), the same outputs and losses. Flax, Equinox and PyTorch are independent
references here, so this also checks jaxrnn's LSTM and GRU against them. ``bench_remat.py``
must compute one loss for every remat form, with less XLA temp memory the less a step keeps,
and so must ``bench_long.py`` at its longest quick sequence. ``bench_long_range.py`` must time
every method at every T (once, outside the rounds, when a step is over its budget) and
converge Newton. ``bench_sweep.py`` runs in this
process (one core count) with every implementation in float32 and bfloat16: the float32 ones
must agree as in ``bench_cells.py``, the bfloat16 jaxrnn output must be bfloat16 and close to
float32, and every paired ratio must be there; a second run goes through the child process per
core count that the sweep starts by default. The diagnostic variants must compute what the
default computes.

The harness tests use synthetic samples and fake entries: paired-ratio arithmetic against a
NumPy hand computation, the interleaving (every entry timed once per round, in shuffled
orders), the JSON round trip, and ``--cores`` pinning in a child process.

Each script's run happens in one test function: the suite runs under pytest-xdist, where a
module-scoped fixture would run the benchmark once per worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxrnn as jr

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
QUICK = {"batch": 2, "time": 5, "input": 3, "hidden": 4}  # the sizes bench_cells --quick selects


def load(name: str):
    """Import ``benchmarks/<name>.py`` under ``name``, as the scripts import one another."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    module = sys.modules[name]
    assert Path(module.__file__).resolve().parent == BENCH, module.__file__
    return module


@pytest.fixture(scope="module")
def harness():
    return load("harness")


# --------------------------------------------------------------------------------------------
# Smoke runs of the scripts.


def test_cells_quick_run(tmp_path):
    bench = load("bench_cells")
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--repeats", "1", "--json", str(out)])
    rows = results["rows"]

    # Every implementation ran, in both modes, for both cells.
    families = ["jaxrnn", "flax"]
    families += ["equinox"] * (bench.eqx is not None) + ["torch"] * (bench.torch is not None)
    ran = {(r["cell"], r["family"], r["mode"]) for r in rows}
    expected = {(c, f, m) for c in ("lstm", "gru") for f in families for m in ("infer", "train")}
    assert expected <= ran, expected - ran
    assert sum(r["cell"] == "lstm" and r["family"] == "flax" for r in rows) == 4  # 2 cells x 2
    assert all(r["median_ms"] > 0 and len(r["samples_ms"]) == 1 for r in rows)

    # Same output shapes: ys for inference, a scalar loss for training.
    shapes = {"infer": [QUICK["batch"], QUICK["time"], QUICK["hidden"]], "train": []}
    for r in rows:
        assert r["out_shape"] == shapes[r["mode"]], (r["impl"], r["mode"])

    # Same weights everywhere, so the same ys and loss as jaxrnn.
    for r in rows:
        assert r["max_abs_diff_vs_jaxrnn"] is not None, r["impl"]
        assert r["max_abs_diff_vs_jaxrnn"] < 1e-5, (r["impl"], r["mode"])

    # Flax's GRUCell is jr.gru(reset_after=True), and the other form really differs.
    checks = {c["check"]: c["value"] for c in results["checks"]}
    assert next(v for k, v in checks.items() if "reset_after=True" in k) < 1e-5
    assert next(v for k, v in checks.items() if "reset_after=False" in k) > 1e-3

    # One acceptance ratio per cell and mode, and the JSON dump holds everything.
    assert {(a["cell"], a["mode"]) for a in results["acceptance"]} == {
        (c, m) for c in ("lstm", "gru") for m in ("infer", "train")
    }
    assert all(a["ratio"] > 0 for a in results["acceptance"])
    dumped = load("harness").read_json(out)
    assert len(dumped["rows"]) == len(rows)
    assert dumped["config"]["hidden"] == QUICK["hidden"]
    assert dumped["env"]["jax"] == jax.__version__


def test_remat_quick_run(tmp_path):
    bench = load("bench_remat")
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--repeats", "1", "--json", str(out)])

    # Every remat form computes the same loss; keeping less means less XLA temp memory:
    # everything_saveable >= the default policy (False) > True.
    remat = {(r["cell"], r["remat"]): r for r in results["rows"] if r["form"] == "jr.scan"}
    assert len(remat) == len(results["rows"]) == 6
    for cell in ("lstm", "gru"):
        full, off, on = (remat[(cell, k)] for k in ("everything_saveable", "False", "True"))
        assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
        assert full["loss"] == pytest.approx(off["loss"], rel=1e-5)
        if off["temp_bytes"] is not None:
            assert on["temp_bytes"] < off["temp_bytes"] <= full["temp_bytes"]
        assert all(r["median_ms"] > 0 for r in (full, off, on))
    assert load("harness").read_json(out)["rows"][0]["T"] == 16  # --quick's T


def test_long_quick_run(tmp_path):
    bench = load("bench_long")
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--repeats", "1", "--json", str(out)])

    # Every remat form computes the same loss; at T = 64 remat="sqrt" (8 segments of 8 steps)
    # keeps less than True, which keeps less than False.
    rows = {(r["T"], r["remat"]): r for r in results["rows"]}
    assert sorted(rows) == [(T, f) for T in (16, 64) for f in ("False", "True", "sqrt")]
    for T in (16, 64):
        off, on, sqrt = (rows[(T, f)] for f in ("False", "True", "sqrt"))
        assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
        assert sqrt["loss"] == pytest.approx(off["loss"], rel=1e-5)
        assert all(r["compile_s"] > 0 and r["median_ms"] > 0 for r in (off, on, sqrt))
    if rows[(64, "sqrt")]["temp_bytes"] is not None:
        assert rows[(64, "sqrt")]["temp_bytes"] < rows[(64, "True")]["temp_bytes"]
        assert rows[(64, "True")]["temp_bytes"] < rows[(64, "False")]["temp_bytes"]
    assert load("harness").read_json(out)["config"]["times"] == [16, 64]


def test_long_range_quick_run(tmp_path, monkeypatch):
    bench = load("bench_long_range")
    # One cell and two methods stand for SPEED_CELLS (whose Newton GRU alone compiles for tens
    # of seconds): every (cell, method) goes through the same code.
    methods = ("sequential", "associative")
    monkeypatch.setattr(bench, "SPEED_CELLS", {"min_gru": (jr.min_gru, methods)})
    out = tmp_path / "results.json"
    other_t = {"T": 8, "cell": "min_gru", "method": "sequential"}  # from an earlier run
    load("harness").write_json(out, {"speed": [other_t]})
    results = bench.main(["--speed", "--quick", "--repeats", "1", "--json", str(out)])
    assert results["speed"][0] == other_t  # kept, in T order
    results["speed"] = results["speed"][1:]

    # --speed: a row per T and method, each against the sequential scan, timed in the rounds.
    rows = {(r["T"], r["method"]): r for r in results["speed"]}
    assert sorted(rows) == sorted((t, m) for t in (16, 32) for m in methods)
    for (_, method), r in rows.items():
        assert len(r["samples_ms"]) == 1 and r["median_ms"] > 0 and not r.get("single_call")
        if method == "sequential":
            assert r["vs_sequential"]["ratio"] == 1.0
    assert load("harness").read_json(out)["speed"] == [other_t, *results["speed"]]
    # A step over --single-call-s is timed once, outside the rounds, its ratio by medians.
    args = argparse.Namespace(
        times=[8], speed_batch=1, speed_hidden=2, seed=0, repeats=1, calls=1, single_call_s=0.0
    )
    once = bench.run_speed(args)
    assert [r["method"] for r in once] == list(methods)
    for r in once:
        assert r["single_call"] and len(r["samples_ms"]) == 1
        assert r["vs_sequential"]["ratio"] == pytest.approx(r["median_ms"] / once[0]["median_ms"])
    assert "(one call)" in bench.speed_report(once)

    # --newton: GRU and LSTM converge with both Jacobians.
    args = argparse.Namespace(quick=True, seed=0, newton_hidden=[2], newton_times=[8])
    newton = bench.run_newton(args)
    assert {(r["cell"], r["jacobian"]) for r in newton} == {
        (c, j) for c in ("gru", "lstm") for j in ("full", "diagonal")
    }
    assert all(r["converged"] and 1 <= r["iterations"] <= r["max_iters"] for r in newton)


def test_sweep_quick_run(tmp_path):
    bench = load("bench_sweep")
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--in-process", "--json", str(out)])
    (run,) = results["runs"]
    rows, groups = run["rows"], run["groups"]
    size = [QUICK["batch"], QUICK["time"], QUICK["input"], QUICK["hidden"]]
    assert all(r["size"] == size and len(r["samples_ms"]) == 1 for r in rows)

    # Every implementation ran, in every group (cell x precision x mode): Flax's two LSTM
    # cells, Equinox in float32 only, PyTorch in float32 and under autocast, and in bfloat16
    # jaxrnn in both precisions (the float32 one is the reference), and jaxrnn's XLA path (what
    # the native kernels replace) in the group's precision.
    eqx, torch = bench.peers.eqx is not None, bench.peers.torch is not None
    n_flax = {"lstm": 2, "gru": 1}
    for cell in ("lstm", "gru"):
        for mode in ("infer", "train"):
            for prec in ("f32", "bf16"):
                sel = [
                    r for r in rows if (r["cell"], r["mode"], r["precision"]) == (cell, mode, prec)
                ]
                want = {"jaxrnn": 1, "xla": 1, "flax": n_flax[cell], "torch": int(torch)}
                want |= {"equinox": int(eqx)} if prec == "f32" else {"ref": 1}
                got = {k: sum(r["role"] == k for r in sel) for k in want}
                assert got == want and len(sel) == sum(want.values()), (cell, mode, prec)
                assert all(r["median_ms"] > 0 for r in sel)
    assert len(groups) == 8

    # float32: the same weights everywhere, so the same ys and loss as jaxrnn.
    for r in rows:
        assert r["out_shape"] == (size[:2] + size[3:] if r["mode"] == "infer" else [])
        if r["precision"] == "f32" or r["role"] == "ref":
            assert r["compute"] == "f32"
            assert r["max_abs_diff_vs_f32"] < 1e-5, (r["impl"], r["mode"])

    # bfloat16: jaxrnn's ys are bfloat16, near float32 but not equal to it (the bf16 matmuls
    # really ran); so are Flax's and PyTorch's under their mixed precision.
    for r in rows:
        if r["precision"] == "bf16" and r["role"] != "ref":
            assert r["compute"] == "bf16"
            assert 0 < r["max_abs_diff_vs_f32"] < bench.TOLERANCE["bf16"], (r["impl"], r["mode"])
            assert r["within_tol"]
            if r["role"] == "jaxrnn" and r["mode"] == "infer":
                assert r["out_dtype"] == "bfloat16"
    assert all(g["agree"] for g in groups)

    # The ratios: jaxrnn / torch and / best Flax everywhere, bf16 / f32 in bfloat16 only.
    for g in groups:
        assert (g["vs_torch"] is not None) == torch
        assert g["best_flax"].startswith("flax nn.RNN(")
        for ratio in (g["vs_torch"], g["vs_flax"], g["bf16_vs_f32"]):
            if ratio is not None:
                assert ratio["ratio"] > 0 and ratio["ratio_q25"] <= ratio["ratio_q75"]
        assert (g["bf16_vs_f32"] is not None) == (g["precision"] == "bf16")
    if eqx:
        assert any("Equinox: f32 rows only" in n for n in run["notes"])

    dumped = load("harness").read_json(out)
    assert len(dumped["runs"][0]["rows"]) == len(rows)
    assert dumped["runs"][0]["env"]["jax"] == jax.__version__


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_sweep_runs_a_child_per_core_count():
    """The default path: a pinned child process per core count, results merged."""
    bench = load("bench_sweep")
    argv = ["--quick", "--cores", "1", "--sizes", "2x5x3x4", "1x3x2x3", "--cells", "gru"]
    results = bench.main([*argv, "--precisions", "f32", "--skip", "flax", "equinox", "torch"])
    (run,) = results["runs"]
    assert run["cores"] == 1 and run["env"]["pinned_cores"] == run["env"]["usable_cpus"] == 1
    assert [(g["size"], g["mode"]) for g in run["groups"]] == [
        (s, m) for s in ([2, 5, 3, 4], [1, 3, 2, 3]) for m in ("infer", "train")
    ]
    assert all(g["jaxrnn_ms"] > 0 and g["vs_torch"] is None for g in run["groups"])


def test_sweep_plan_and_sizes():
    """The default plan: every group planned, the large matmuls with one call per round."""
    bench = load("bench_sweep")
    results = bench.main(["--estimate", "--cores", "1"])
    groups = results["estimate"]["plans"][1]
    assert len(groups) == 4 * 2 * 2 * 2  # sizes x cells x precisions x modes
    assert all(g["calls"] == 1 and g["repeats"] <= 9 for g in groups if g["size"][3] == 1024)
    assert results["estimate"]["total_s"] > 0 and "runs" not in results
    harness = load("harness")  # --sizes is parsed by harness.parse_size
    assert harness.parse_size("32x128x128x256") == (32, 128, 128, 256)
    for bad in ("32x128x128", "0x1x1x1", "axbxcxd"):
        with pytest.raises(argparse.ArgumentTypeError):
            harness.parse_size(bad)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_variants_compute_the_default(cell_name):
    """Every diagnostic variant is the same function as ``jr.scan`` of the cell."""
    peers, variants = load("peers"), load("variants")
    n_in, H, T = 3, 4, 8
    cell = jr.lstm(n_in, H) if cell_name == "lstm" else jr.gru(n_in, H, reset_after=True)
    params = cell.init(jax.random.key(2))
    xs = jax.random.normal(jax.random.key(3), (2, T, n_in))
    ref = peers.jaxrnn_forward(cell, 1)(params, xs)
    for v in variants.VARIANTS:
        built = variants.jaxrnn_variant(v, cell_name, cell, 1, T)
        if v == "chunk32":  # T = 8 is not a multiple of 32
            assert built is None
            continue
        label, forward = built
        np.testing.assert_allclose(forward(params, xs), ref, rtol=1e-5, atol=1e-6, err_msg=label)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_flax_weight_mapping_single_step(cell_name):
    """The weight mapping alone: one Flax cell step equals one jaxrnn step."""
    peers = load("peers")
    n_in, H = 5, 6
    k_params, k_x, k_h, k_c = jax.random.split(jax.random.key(1), 4)
    xs = jax.random.normal(k_x, (3, 1, n_in))
    x = xs[:, 0]
    fp = peers.flax_params(cell_name, H, xs, k_params)
    assert float(np.max(np.abs(fp["cell"]["hn" if cell_name == "gru" else "hf"]["bias"]))) > 0
    h, c = jax.random.normal(k_h, (3, H)), jax.random.normal(k_c, (3, H))
    if cell_name == "lstm":
        (c_ref, h_ref), _ = nn.LSTMCell(H).apply({"params": fp["cell"]}, (c, h), x)
        carry, _ = jr.lstm(n_in, H).apply(peers.flax_lstm_to_jaxrnn(fp), jr.LSTMCarry(h, c), x)
        np.testing.assert_allclose(carry.c, c_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry.h, h_ref, rtol=1e-5, atol=1e-6)
    else:
        h_ref, _ = nn.GRUCell(H).apply({"params": fp["cell"]}, h, x)
        cell = jr.gru(n_in, H, reset_after=True)
        h_new, _ = cell.apply(peers.flax_gru_to_jaxrnn(fp), h, x)
        np.testing.assert_allclose(h_new, h_ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The harness.


def test_paired_ratio_by_hand(harness):
    # Per-round ratios 2, 2, 3: median 2, quartiles 2 and 2.5; medians 4 / 2.
    got = harness.paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    assert got == pytest.approx(
        {"ratio": 2.0, "ratio_q25": 2.0, "ratio_q75": 2.5, "ratio_of_medians": 2.0}
    )


def test_paired_ratio_matches_numpy(harness):
    rng = np.random.default_rng(0)
    load_ = rng.uniform(1.0, 3.0, 21)  # background load shared by both entries in a round
    a = 10.0 * load_ * rng.uniform(0.95, 1.05, 21)
    b = 12.5 * load_ * rng.uniform(0.95, 1.05, 21)
    got = harness.paired_ratio(list(a), list(b))
    per_round = a / b
    assert got["ratio"] == pytest.approx(np.median(per_round))
    assert got["ratio_q25"] == pytest.approx(np.percentile(per_round, 25))
    assert got["ratio_q75"] == pytest.approx(np.percentile(per_round, 75))
    assert got["ratio_of_medians"] == pytest.approx(np.median(a) / np.median(b))
    # The pairing cancels the shared load: the per-round spread is far below the plain one.
    assert got["ratio_q75"] - got["ratio_q25"] < 0.1 < np.ptp(a) / np.median(b)
    with pytest.raises(ValueError, match="equally many"):
        harness.paired_ratio([1.0, 2.0], [1.0])


def test_summary(harness):
    s = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert harness.summary(s) == {"median_ms": 3.0, "q25_ms": 2.0, "q75_ms": 4.0, "min_ms": 1.0}
    assert harness.summary([7.0]) == {"median_ms": 7.0, "q25_ms": 7.0, "q75_ms": 7.0, "min_ms": 7.0}


def test_time_interleaved_times_every_entry_every_round(harness):
    log: list[str] = []

    def entry(key):
        def call():
            log.append(key)
            return key.upper()

        return call

    keys, repeats, calls = ["a", "b", "c", "d", "e"], 12, 3
    stats, first = harness.time_interleaved({k: entry(k) for k in keys}, repeats, calls, seed=1)
    # Warm-up: two calls per entry, in the given order; the first call's result is kept.
    assert log[: 2 * len(keys)] == [k for k in keys for _ in range(2)]
    assert first == {k: k.upper() for k in keys}
    # Then each round visits every entry once: one untimed and `calls` timed calls in a row.
    visit = 1 + calls
    rounds = log[2 * len(keys) :]
    assert len(rounds) == repeats * len(keys) * visit
    orders = []
    for r in range(repeats):
        chunk = rounds[r * len(keys) * visit : (r + 1) * len(keys) * visit]
        order = chunk[::visit]
        assert chunk == [k for k in order for _ in range(visit)]
        assert sorted(order) == keys
        orders.append(tuple(order))
    assert len(set(orders)) > 1  # shuffled per round
    for k in keys:
        assert len(stats[k]["samples_ms"]) == repeats
        assert stats[k]["median_ms"] == pytest.approx(np.median(stats[k]["samples_ms"]))
        assert stats[k]["min_ms"] == min(stats[k]["samples_ms"]) >= 0
        assert stats[k]["warmup_s"] >= 0
    with pytest.raises(ValueError, match="duplicate"):
        harness.time_interleaved([("a", entry("a")), ("a", entry("a"))], 1, 1)


def test_json_round_trip(harness, tmp_path):
    results = {
        "config": {"json": tmp_path / "x.json", "cells": ["lstm"], "quick": True, "cores": None},
        "rows": [{"median_ms": np.float64(1.5), "samples_ms": np.array([1.0, 2.0]), "n": 3}],
        "ratio": 0.25,
    }
    path = harness.write_json(tmp_path / "sub" / "results.json", results)
    assert harness.read_json(path) == {
        "config": {
            "json": str(tmp_path / "x.json"),
            "cells": ["lstm"],
            "quick": True,
            "cores": None,
        },
        "rows": [{"median_ms": 1.5, "samples_ms": [1.0, 2.0], "n": 3}],
        "ratio": 0.25,
    }


def test_fmt_table(harness):
    table = harness.fmt_table(["a", "long header"], [["xyz", "1"], ["w", "22"]])
    assert table.splitlines() == [
        "| a   | long header |",
        "|-----|-------------|",
        "| xyz | 1           |",
        "| w   | 22          |",
    ]
    assert harness.mib(3 * 2**20) == "3.0 MiB" and harness.mib(512) == "0.5 KiB"


def test_simd_flags(harness, monkeypatch):
    """``simd_flags`` keeps the CPU flags with the given prefixes, sorted, on one line."""
    flags = {"fma", "avx2", "sse4_2", "amx_tile", "avx512_bf16", "f16c"}
    monkeypatch.setattr(harness, "cpu_flags", lambda: flags)
    assert harness.simd_flags() == "amx_tile avx2 avx512_bf16 fma"
    assert harness.simd_flags(("avx", "fma")) == "avx2 avx512_bf16 fma"


def test_environment(harness):
    env = harness.environment()
    assert env["jax"] == jax.__version__ and env["jax_backend"] == jax.default_backend()
    assert env["jaxrnn"] == jr.__version__
    assert env["usable_cpus"] >= 1 and "cpu_model" in env and "torch_threads" in env


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_cores_pinning_in_a_child_process(harness, tmp_path):
    """``--cores 1`` pins a fresh process; after JAX is imported it is refused, not ignored."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {str(BENCH)!r})
            import harness
            pinned = harness.pin_from_argv()
            out = sys.argv[sys.argv.index("--json") + 1]
            harness.write_json(out, {{"pinned": pinned, "cpus": len(os.sched_getaffinity(0))}})
            """
        )
    )
    assert harness.run_script(script, cores=1) == {"pinned": 1, "cpus": 1}
    assert harness.run_script(script)["pinned"] is None
    # In this process JAX is imported already: pinning now would come too late.
    before = os.sched_getaffinity(0)
    assert harness.pin_from_argv(["--quick"]) is None
    with pytest.raises(SystemExit, match="before pin_from_argv"):
        harness.pin_from_argv(["--cores", "1"])
    assert os.sched_getaffinity(0) == before
    with pytest.raises(SystemExit, match="only on the command line"):
        harness.require_pinned(1, "bench_cells.py")


def test_sequence_memory_quick_run(tmp_path):
    """``bench_sequence_memory.py --quick`` (its own 8-device process: the device count is fixed
    when jax starts): the temporary memory per device falls about in proportion to the devices
    the time axis is split over."""
    import json
    import subprocess

    out = tmp_path / "sequence_memory.json"
    cmd = [sys.executable, str(BENCH / "bench_sequence_memory.py"), "--quick", "--out", str(out)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["devices"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {None, 1, 2, 4, 8}
    for n in (2, 4, 8):
        assert rows[n]["temp_ratio"] < 1.5 / n, rows  # about 1/n of one device's
    assert "temp MiB/device" in proc.stdout


def test_malloc_child_and_report(tmp_path, monkeypatch):
    """``bench_malloc.py``: a child's timings and page-fault counts for every cell and
    implementation, and the report of two rounds (run here, not in child processes: the
    settings only change how fast, not what is computed)."""
    bench = load("bench_malloc")
    args = argparse.Namespace(
        size=(2, 5, 3, 4), cells=["lstm", "gru"], repeats=1, calls=1, seed=0, cores=None
    )
    out = bench.child(args)
    assert set(out) == {"lstm", "gru"}
    for cell in out.values():
        assert set(cell) == {"jaxrnn", "torch"}
        assert all(v["ms"] > 0 and v["faults"] >= 0 for v in cell.values())
    rounds = [{"default": out, "kept": out}] * 2
    text = bench.report(args, rounds)
    assert text.count("kept / default") == 1 and "jaxrnn / torch, kept" in text
    assert "1.00 (1.00-1.00)" in text  # the same samples on both sides: ratio exactly 1


def test_train_memory_quick_run(tmp_path):
    """``bench_train_memory.py`` at a tiny size: a compiled training step's temp memory for
    every cell in both precisions on both paths, written to JSON."""
    bench = load("bench_train_memory")
    out = tmp_path / "train_memory.json"
    results = bench.main(["--sizes", "2x5x3x4", "--json", str(out)])
    expected = [(cell, prec) for cell in bench.CELLS for prec in bench.PRECISIONS]
    assert [(r["cell"], r["precision"]) for r in results["rows"]] == expected
    assert all(r["kernel_mib"] >= 0 and r["xla_mib"] >= 0 for r in results["rows"])
    assert out.is_file()


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_profile_step_quick_run(mode):
    """``profile_step.py`` at a tiny size: compiles one call, calls it at least once more and
    reports what it timed, for the cell, precision and mode asked for."""
    bench = load("profile_step")
    args = ["--size", "2x5x3x4", "--cell", "gru", "--precision", "bf16", "--mode", mode]
    result = bench.main([*args, "--seconds", "0"])
    assert (result["cell"], result["precision"], result["mode"]) == ("gru", "bf16", mode)
    assert result["size"] == [2, 5, 3, 4]
    assert result["calls"] >= 1 and 0 < result["min_ms"] <= result["median_ms"]


@pytest.mark.skipif(not jr.kernels.available(), reason="needs the native kernels")
def test_kernel_choices_quick_run(tmp_path):
    """``bench_kernel_choices.py`` at a tiny size: both sides of every kernel choice that exists
    on this CPU, in both precisions and modes, timed with their paired ratio; the kernels'
    switches, the traced one too, are back at their defaults afterwards."""
    bench = load("bench_kernel_choices")
    out = tmp_path / "choices.json"
    results = bench.main(["--quick", "--json", str(out)])
    status = jr.kernels.status()
    expected = {
        (cell, prec, choice, mode)
        for cell in bench.CELLS
        for prec in bench.PRECISIONS
        for choice in bench.CHOICES
        for mode in ("infer", "train")
        if bench.applies(choice, prec, mode, status)
    }
    got = {(r["cell"], r["precision"], r["choice"], r["mode"]) for r in results["rows"]}
    assert got == expected
    assert all(r["a_ms"] > 0 and r["b_ms"] > 0 and r["ratio"] > 0 for r in results["rows"])
    assert status.amx == results["kernels"]["amx"]
    assert ("lstm", "f32", "transpose", "train") in got
    assert ("lstm", "bf16", "gemm", "train") in got or not status.amx
    assert bench._ops.MATERIALISE_T is None and bench._ops.NATIVE_GEMM is None
    assert jr.kernels.status() == status
    assert out.is_file()
