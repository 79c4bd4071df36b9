"""``jr.scan`` with the batch sharded over 8 devices equals one device, values and gradients,
for every cell kind, under Explicit axes (with and without ``jax.set_mesh``) and Auto axes."""

import contextlib

import jax
import jax.numpy as jnp
import pytest
from sharding_helpers import assert_trees_close, put

import jaxrnn as jr

CELLS = {
    "simple_rnn": lambda: jr.simple_rnn(3, 5),
    "lstm": lambda: jr.lstm(3, 5),
    "lstm_peephole": lambda: jr.lstm(3, 5, peephole=True),
    "gru": lambda: jr.gru(3, 5),
    "mgu": lambda: jr.mgu(3, 5),
    "jordan_rnn": lambda: jr.jordan_rnn(3, 5, 4),
    "layer_norm_lstm": lambda: jr.layer_norm_lstm(3, 5),
    "layer_norm_gru": lambda: jr.layer_norm_gru(3, 5),
    "slstm": lambda: jr.slstm(3, 8),
    "min_gru": lambda: jr.min_gru(3, 5),
    "min_lstm": lambda: jr.min_lstm(3, 5),
    "lru": lambda: jr.lru(3, 5),
    "rg_lru": lambda: jr.rg_lru(3, 5),
    "learnable_carry": lambda: jr.learnable_carry(jr.gru(3, 5)),
}


def _sq(c):
    """The sum of squares of a carry leaf (a bool leaf, LearnableCarry.started, adds 0)."""
    return jnp.sum(jnp.abs(c) ** 2) if jnp.issubdtype(c.dtype, jnp.inexact) else 0.0


def _loss(cell, **options):
    def loss(params, xs, lengths):
        carry, ys = jr.scan(cell, params, xs, lengths=lengths, **options)
        return jnp.sum(ys**2) + sum(_sq(c) for c in jax.tree.leaves(carry)), ys

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("how", ["explicit", "explicit+set_mesh", "auto"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_sequential_batch_sharded_equals_one_device(name, how, explicit_mesh, auto_mesh):
    cell = CELLS[name]()
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (8, 6, 3))
    lengths = jnp.array([6, 0, 3, 6, 1, 5, 6, 2])
    f = _loss(cell, kernel=False)
    (loss1, ys1), grads1 = f(params, xs, lengths)

    mesh = auto_mesh if how == "auto" else explicit_mesh
    context = jax.set_mesh(mesh) if how.endswith("set_mesh") else contextlib.nullcontext()
    with context:
        (loss8, ys8), grads8 = f(params, put(xs, mesh, "data"), put(lengths, mesh, "data"))
    if how != "auto":
        assert jax.typeof(ys8).sharding.spec[0] == "data"  # outputs stay split by rows
        for g in jax.tree.leaves(grads8):  # weight gradients come out replicated
            assert all(p is None for p in g.sharding.spec), g.sharding
    assert_trees_close((loss8, ys8, grads8), (loss1, ys1, grads1), rtol=1e-5, atol=1e-5)


# Hidden size 8: each gate's 8 columns split evenly over the 4 "model" devices.
MODEL_CELLS = {
    "lstm": lambda: jr.lstm(3, 8),
    "gru": lambda: jr.gru(3, 8),
    "min_gru": lambda: jr.min_gru(3, 8),
    "slstm": lambda: jr.slstm(3, 8),
    "layer_norm_lstm": lambda: jr.layer_norm_lstm(3, 8),
}


@pytest.mark.parametrize("name", sorted(MODEL_CELLS))
def test_weights_split_over_model_equal_one_device(name):
    """A 2-D mesh: rows over "data", every weight's last axis over "model" (as
    ``jr.train.param_spec`` splits them); gradients keep the weights' sharding."""
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    cell = MODEL_CELLS[name]()
    params = cell.init(jax.random.key(0))

    def split(w):
        if w.ndim == 0 or w.shape[-1] % 4:
            return put(w, mesh)
        return put(w, mesh, *[None] * (w.ndim - 1), "model")

    xs = jax.random.normal(jax.random.key(1), (8, 6, 3))
    lengths = jnp.array([6, 0, 3, 6, 1, 5, 6, 2])
    f = _loss(cell, kernel=None)
    one = f(params, xs, lengths)
    split_params = jax.tree.map(split, params)
    (loss8, ys8), grads8 = f(split_params, put(xs, mesh, "data"), put(lengths, mesh, "data"))
    for g, p in zip(jax.tree.leaves(grads8), jax.tree.leaves(split_params), strict=True):
        assert _padded(g.sharding.spec, g.ndim) == _padded(p.sharding.spec, p.ndim)
    assert_trees_close(((loss8, ys8), grads8), one, rtol=2e-5, atol=2e-5)


def test_conv_lstm_batch_sharded(explicit_mesh):
    """A cell with spatial axes: the carry (*batch, *spatial, C) is split by rows only."""
    cell = jr.conv_lstm(2, 3, (3, 3))
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (8, 4, 5, 5, 2))  # (B, T, H, W, C)
    lengths = jnp.array([4, 0, 3, 4, 1, 2, 4, 2])
    f = _loss(cell)
    one = f(params, xs, lengths)
    eight = f(params, put(xs, explicit_mesh, "data"), put(lengths, explicit_mesh, "data"))
    assert_trees_close(eight, one, rtol=2e-5, atol=2e-5)


def test_eager_call_and_a_given_carry(explicit_mesh):
    """Outside jit, with a carry the caller made (replicated): the same as one device."""
    cell = jr.gru(3, 5)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (8, 6, 3))
    h0 = jax.random.normal(jax.random.key(2), (8, 5))
    one = jr.scan(cell, params, xs, h0, kernel=False)
    eight = jr.scan(
        cell, params, put(xs, explicit_mesh, "data"), put(h0, explicit_mesh), kernel=False
    )
    assert eight[1].sharding.spec[0] == "data"
    assert_trees_close(eight, one)


def _padded(spec, ndim):
    return (tuple(spec) + (None,) * ndim)[:ndim]
