"""Smoke test of benchmarks/bench_core.py at tiny sizes (no timing assertions).

Runs the benchmark's ``main`` once with ``--quick --repeats 1`` and checks what it computed:
every implementation produced outputs of the same shape, and, since the benchmark feeds all of
them the same weights (Flax's, with random biases, mapped to every other layout), that their
outputs and losses agree. Flax, Equinox and PyTorch are independent references here, so this
also checks jaxrnn's LSTM and GRU against them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"
QUICK = {"batch": 2, "time": 5, "hidden": 4}  # the sizes --quick selects


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_core", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    return bench.main(["--quick", "--repeats", "1", "--json", str(out)]) | {"json_path": out}


def test_every_implementation_ran(bench, results):
    impls = {(r["cell"], r["family"], r["mode"]) for r in results["rows"]}
    families = ["jaxrnn", "flax"]
    families += ["equinox"] * (bench.eqx is not None) + ["torch"] * (bench.torch is not None)
    for cell in ("lstm", "gru"):
        for family in families:
            for mode in ("infer", "train"):
                assert (cell, family, mode) in impls
    flax_lstm = [
        r["impl"] for r in results["rows"] if r["cell"] == "lstm" and r["family"] == "flax"
    ]
    assert len(flax_lstm) == 4  # LSTMCell and OptimizedLSTMCell, two modes each
    assert all(r["median_ms"] > 0 for r in results["rows"])


def test_outputs_have_the_same_shape(results):
    expected = {"infer": [QUICK["batch"], QUICK["time"], QUICK["hidden"]], "train": []}
    for r in results["rows"]:
        assert r["out_shape"] == expected[r["mode"]], r["impl"]


def test_all_implementations_agree_given_the_same_weights(results):
    for r in results["rows"]:
        assert r["max_abs_diff_vs_jaxrnn"] is not None, r["impl"]
        assert r["max_abs_diff_vs_jaxrnn"] < 1e-5, (r["impl"], r["mode"])


def test_gru_mode_matches_flax_only_with_reset_after(results):
    diffs = {c["check"]: c["value"] for c in results["checks"]}
    after = next(v for k, v in diffs.items() if "reset_after=True" in k)
    before = next(v for k, v in diffs.items() if "reset_after=False" in k)
    assert after < 1e-5
    assert before > 1e-3  # the other form really computes something else with these weights


def test_remat_reduces_temp_memory(results):
    rows = {(r["cell"], r["remat"]): r for r in results["remat"] if r["form"] == "jr.scan"}
    for cell in ("lstm", "gru"):
        off, on = rows[(cell, False)], rows[(cell, True)]
        assert on["loss"] == pytest.approx(off["loss"], rel=1e-5)
        if off["temp_bytes"] is not None:
            assert on["temp_bytes"] < off["temp_bytes"]


def test_acceptance_and_json(results):
    import json

    assert {(a["cell"], a["mode"]) for a in results["acceptance"]} == {
        (c, m) for c in ("lstm", "gru") for m in ("infer", "train")
    }
    dumped = json.loads(results["json_path"].read_text())
    assert len(dumped["rows"]) == len(results["rows"])


def test_flax_lstm_mapping_single_step(bench):
    """The weight mapping alone: one Flax LSTMCell step equals one jaxrnn step."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxrnn as jr

    k_params, k_x, k_h, k_c = jax.random.split(jax.random.key(1), 4)
    xs = jax.random.normal(k_x, (3, 1, 5))
    fp = bench.flax_params("lstm", 6, xs, k_params)
    h, c = jax.random.normal(k_h, (3, 6)), jax.random.normal(k_c, (3, 6))
    (c_flax, h_flax), _ = nn.LSTMCell(6).apply({"params": fp["cell"]}, (c, h), xs[:, 0])
    carry, _ = jr.lstm(5, 6).apply(bench.flax_lstm_to_jaxrnn(fp), jr.LSTMCarry(h, c), xs[:, 0])
    np.testing.assert_allclose(carry.h, h_flax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.c, c_flax, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(fp["cell"]["hf"]["bias"]))) > 0  # biases were randomised
