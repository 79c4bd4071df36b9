"""Meshes on one device: the memory table of benchmarks/bench_memory.py (per-device bytes of a
sharded state) and the axis types of ``data_mesh``/``model_mesh``.

The 8-device tests of data and tensor parallelism (one device and eight give the same
training; an indivisible batch is explained) live in tests/sharded/test_parallel_sharded.py,
run in the one 8-device process of tests/test_sharded.py.
"""

from __future__ import annotations

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_memory_table_counts_every_shard():
    """benchmarks/bench_memory.py: per-device bytes of parameters and AdamW state, from the
    shardings on an abstract 8-device mesh, against a count by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_memory", REPO / "benchmarks/bench_memory.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.memory_table([8], devices=8, models=(2, 8))
    h, v, e = 8, 256, 256  # hidden; vocabulary and embedding of the benchmark's model
    params = v * e + e * 4 * h + h * 4 * h + 4 * h + h * v + v
    assert row["params"] == params
    scalars = row["replicated"] - 3 * 4 * params  # float32 parameters and two moments
    assert 0 <= scalars <= 64  # the optimizer's step counts
    # Every array has an axis divisible by 8 here: each device holds an eighth (or a half).
    assert row["model=8"] == 3 * 4 * params // 8 + scalars
    assert row["model=2"] == 3 * 4 * params // 2 + scalars
    assert "| 8 | 0.1 M |" in bench.markdown([row], 8)


def test_meshes_take_axis_types():
    """``data_mesh``/``model_mesh``: ``Explicit`` axes by default (as ``jax.make_mesh``), one
    ``AxisType`` for all axes or one per axis; anything else named in a one-line error."""
    import pytest
    from jax.sharding import AxisType

    import jaxrnn.train as jt

    explicit, auto = AxisType.Explicit, AxisType.Auto
    assert jt.data_mesh().axis_types == (explicit,)
    assert jt.model_mesh(1).axis_types == (explicit, explicit)
    assert jt.data_mesh(axis_types=auto).axis_types == (auto,)
    assert jt.data_mesh(axis_types=[auto]).axis_types == (auto,)
    assert jt.model_mesh(1, axis_types=auto).axis_types == (auto, auto)
    assert jt.model_mesh(1, axis_types=(explicit, auto)).axis_types == (explicit, auto)
    bad = {"data_mesh": jt.data_mesh, "model_mesh": lambda **kw: jt.model_mesh(1, **kw)}
    for name, build in bad.items():
        for value in ("explicit", None, 1, (auto,) * 3, (auto, "auto")):
            with pytest.raises(ValueError, match=rf"^{name}: axis_types must be a jax") as e:
                build(axis_types=value)
            assert repr(value) in str(e.value) and "\n" not in str(e.value)


def test_a_step_on_a_one_device_explicit_mesh_compiles_once():
    """On a 1-device mesh with explicit axes a fresh state (no mesh in its type) is put on the
    mesh before the step, so the step's outputs have the types it was compiled for."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxrnn.train as jt

    traces = []

    def loss_fn(w, carry, batch, key):
        traces.append(1)
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2), carry

    opt = optax.sgd(0.1)
    batch = {"x": jnp.ones((8, 2)), "y": jnp.ones((8, 4))}
    for mesh in (jt.data_mesh(), jt.model_mesh(1)):
        traces.clear()
        step = jt.make_train_step(loss_fn, opt, mesh=mesh)
        state = jt.init_state(jnp.zeros((2, 4)), opt, jax.random.key(0), jnp.zeros((8, 4)))
        for _ in range(3):
            state, _ = step(state, batch)
        assert len(traces) == 1, mesh
        assert jax.typeof(state.carry).sharding.mesh.axis_names == mesh.axis_names
