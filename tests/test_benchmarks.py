"""Smoke test of benchmarks/bench_core.py at tiny sizes (no timing assertions).

Runs the benchmark's ``main`` once with ``--quick --repeats 1`` and checks what it computed:
every implementation produced outputs of the same shape, and, since the benchmark feeds all of
them the same weights (Flax's, with random biases, mapped to every other layout), that their
outputs and losses agree. Flax, Equinox and PyTorch are independent references here, so this
also checks jaxrnn's LSTM and GRU against them.

The whole run happens in one test function: the suite runs under pytest-xdist, where a
module-scoped fixture would run the benchmark once per worker.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxrnn as jr

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"
QUICK = {"batch": 2, "time": 5, "input": 3, "hidden": 4}  # the sizes --quick selects


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_core", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def test_quick_run(bench, tmp_path):
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
    assert all(r["median_ms"] > 0 for r in rows)

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

    # Every remat form computes the same loss; keeping less means less XLA temp memory:
    # everything_saveable >= the default policy (False) > True.
    remat = {(r["cell"], r["remat"]): r for r in results["remat"] if r["form"] == "jr.scan"}
    for cell in ("lstm", "gru"):
        full, off, on = (remat[(cell, k)] for k in ("everything_saveable", "False", "True"))
        assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
        assert full["loss"] == pytest.approx(off["loss"], rel=1e-5)
        if off["temp_bytes"] is not None:
            assert on["temp_bytes"] < off["temp_bytes"] <= full["temp_bytes"]

    # One acceptance ratio per cell and mode, and the JSON dump holds everything.
    assert {(a["cell"], a["mode"]) for a in results["acceptance"]} == {
        (c, m) for c in ("lstm", "gru") for m in ("infer", "train")
    }
    assert all(a["ratio"] > 0 for a in results["acceptance"])
    dumped = json.loads(out.read_text())
    assert len(dumped["rows"]) == len(rows)
    assert dumped["config"]["hidden"] == QUICK["hidden"]


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_flax_weight_mapping_single_step(bench, cell_name):
    """The weight mapping alone: one Flax cell step equals one jaxrnn step."""
    n_in, H = 5, 6
    k_params, k_x, k_h, k_c = jax.random.split(jax.random.key(1), 4)
    xs = jax.random.normal(k_x, (3, 1, n_in))
    x = xs[:, 0]
    fp = bench.flax_params(cell_name, H, xs, k_params)
    assert float(np.max(np.abs(fp["cell"]["hn" if cell_name == "gru" else "hf"]["bias"]))) > 0
    h, c = jax.random.normal(k_h, (3, H)), jax.random.normal(k_c, (3, H))
    if cell_name == "lstm":
        (c_ref, h_ref), _ = nn.LSTMCell(H).apply({"params": fp["cell"]}, (c, h), x)
        carry, _ = jr.lstm(n_in, H).apply(bench.flax_lstm_to_jaxrnn(fp), jr.LSTMCarry(h, c), x)
        np.testing.assert_allclose(carry.c, c_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry.h, h_ref, rtol=1e-5, atol=1e-6)
    else:
        h_ref, _ = nn.GRUCell(H).apply({"params": fp["cell"]}, h, x)
        cell = jr.gru(n_in, H, reset_after=True)
        h_new, _ = cell.apply(bench.flax_gru_to_jaxrnn(fp), h, x)
        np.testing.assert_allclose(h_new, h_ref, rtol=1e-5, atol=1e-6)
