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
}


def _loss(cell, **options):
    def loss(params, xs, lengths):
        carry, ys = jr.scan(cell, params, xs, lengths=lengths, **options)
        return jnp.sum(ys**2) + sum(jnp.sum(jnp.abs(c) ** 2) for c in jax.tree.leaves(carry)), ys

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
