"""The native CPU kernels with the batch split over an explicit mesh: each device runs its own
rows (``jax.shard_map``), equal to one device and to the XLA path; what the kernels cannot split
(weights over "model") keeps the XLA path, and ``kernel=True`` says why."""

import contextlib

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_helpers import assert_trees_close, put

import jaxrnn as jr

pytestmark = pytest.mark.skipif(not jr.kernels.available(), reason="kernels not built")

CELLS = {
    "lstm": lambda: jr.lstm(3, 5, forget_bias=1.0),
    "gru": lambda: jr.gru(3, 5),
    "gru_reset_before": lambda: jr.gru(3, 5, reset_after=False),
    "lstm_bf16": lambda: jr.lstm(3, 5, dtype=jnp.bfloat16),
}
LENGTHS = jnp.array([6, 0, 3, 6, 1, 5, 6, 2, 4, 6, 0, 1, 2, 3, 5, 6])


def _step(cell, kernel, **options):
    def loss(params, xs, lengths):
        carry, ys = jr.scan(cell, params, xs, lengths=lengths, kernel=kernel, **options)
        total = jnp.sum(ys.astype(jnp.float32) ** 2)
        return total + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry)), (carry, ys)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("set_mesh", [False, True])
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_kernels_run_per_shard(name, reverse, time_major, set_mesh, explicit_mesh):
    cell = CELLS[name]()
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (16, 6, 3))
    spec = ("data",)
    if time_major:
        xs, spec = jnp.swapaxes(xs, 0, 1), (None, "data")
    options = dict(reverse=reverse, time_major=time_major)
    reference = _step(cell, False, **options)(params, xs, LENGTHS)  # XLA path, one device
    sharded_xs, lengths = put(xs, explicit_mesh, *spec), put(LENGTHS, explicit_mesh, "data")
    step = _step(cell, True, **options)
    context = jax.set_mesh(explicit_mesh) if set_mesh else contextlib.nullcontext()
    with context:
        out = step(params, sharded_xs, lengths)
        hlo = step.lower(params, sharded_xs, lengths).compile().as_text()
    tol = 3e-2 if name.endswith("bf16") else 2e-5
    assert_trees_close(out, reference, rtol=tol, atol=tol)
    (_, (_, ys)), grads = out
    assert tuple(jax.typeof(ys).sharding.spec)[: len(spec)] == spec
    assert all(p is None for g in jax.tree.leaves(grads) for p in g.sharding.spec)
    # Each device's kernel calls see its own 2 rows of the 16; the weight gradients' GEMMs (bf16
    # on AMX tiles; dx is not needed here) its 2 x 6 rows of steps.
    calls = [ln for ln in hlo.splitlines() if "custom-call" in ln and "jaxrnn_" in ln]
    seq = [ln for ln in calls if "_matmul" not in ln]
    assert seq and all(("f32[2,6," if not time_major else "f32[6,2,") in ln for ln in seq)
    gemms = [ln for ln in calls if "_matmul" in ln]
    assert len(gemms) == (2 if name == "lstm_bf16" and jr.kernels.status().amx else 0)
    assert all("[12," in ln for ln in gemms)


def test_two_batch_axes_split_over_a_two_axis_mesh():
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    cell = jr.lstm(3, 5)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4, 8, 6, 3))
    lengths = (
        LENGTHS[:32].reshape(4, 8) if LENGTHS.size >= 32 else jnp.tile(LENGTHS, 2).reshape(4, 8)
    )
    reference = _step(cell, False)(params, xs, lengths)
    sharded = jax.device_put(xs, NamedSharding(mesh, P("a", "b")))
    out = _step(cell, True)(
        params, sharded, jax.device_put(lengths, NamedSharding(mesh, P("a", "b")))
    )
    assert_trees_close(out, reference, rtol=2e-5, atol=2e-5)


def test_weights_split_over_model_keep_the_xla_path():
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    cell = jr.gru(3, 8)
    params = cell.init(jax.random.key(0))
    split = jax.tree.map(
        lambda w: jax.device_put(w, NamedSharding(mesh, P(*[None] * (w.ndim - 1), "model"))),
        params,
    )
    xs = jax.random.normal(jax.random.key(1), (16, 6, 3))
    reference = _step(cell, False)(params, xs, LENGTHS)
    out = _step(cell, None)(split, put(xs, mesh, "data"), put(LENGTHS, mesh, "data"))
    assert_trees_close(out, reference, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="params split over a mesh axis"):
        _step(cell, True)(split, put(xs, mesh, "data"), put(LENGTHS, mesh, "data"))


def test_a_time_axis_split_is_gathered_for_the_kernels(explicit_mesh):
    cell = jr.lstm(3, 5)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 16, 3))
    reference = jr.scan(cell, params, xs, kernel=False)
    out = jax.jit(lambda p, x: jr.scan(cell, p, x, kernel=True))(
        params, put(xs, explicit_mesh, None, "data")
    )
    assert_trees_close(out, reference, rtol=2e-5, atol=2e-5)


def test_auto_axes_run_the_kernels_on_the_whole_batch(auto_mesh):
    cell = jr.lstm(3, 5)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (16, 6, 3))
    reference = _step(cell, False)(params, xs, LENGTHS)
    out = _step(cell, True)(params, put(xs, auto_mesh, "data"), put(LENGTHS, auto_mesh, "data"))
    assert_trees_close(out, reference, rtol=2e-5, atol=2e-5)
