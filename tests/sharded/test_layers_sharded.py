"""Layers (``jr.layer``, ``jr.bidirectional``, ``jr.stack``/``jr.rnn`` with dropout) and the
regularisers with the batch split over 8 devices equal one device, values and gradients, under
Explicit axes (with and without ``jax.set_mesh``), Auto axes and a ("data", "model") mesh."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from one_device import HOWS, check_grads_placed, compare, context, mesh_of, spec_of, split_rows

import jaxrnn as jr
from jaxrnn import _sharding

B, T, I = 8, 5, 3  # noqa: E741

LAYERS = {
    "layer_lstm": lambda: jr.layer(jr.lstm(I, 4)),
    "layer_gru_reverse": lambda: jr.layer(jr.gru(I, 4), reverse=True),
    "layer_min_gru": lambda: jr.layer(jr.min_gru(I, 4)),
    "bidirectional_lstm": lambda: jr.bidirectional(jr.lstm(I, 4)),
    "rnn_gru_2_bi_dropout": lambda: jr.rnn(
        jr.gru, I, 4, num_layers=2, bidirectional=True, dropout=0.3
    ),
    "variational_dropout": lambda: jr.layer(
        jr.lstm(I, 4),
        transform=functools.partial(jr.variational_dropout, rate=0.3, recurrent_rate=0.3),
    ),
    "zoneout": lambda: jr.layer(jr.lstm(I, 4), transform=functools.partial(jr.zoneout, rate=0.3)),
    "weight_drop": lambda: jr.layer(
        jr.gru(I, 4), transform=functools.partial(jr.weight_drop, rate=0.5)
    ),
    "regularize": lambda: jr.rnn(
        jr.lstm,
        I,
        4,
        num_layers=2,
        transform=functools.partial(
            jr.regularize, input_dropout=0.2, recurrent_dropout=0.2, zoneout=0.1, weight_drop=0.3
        ),
    ),
}


def _loss(lay):
    def loss(params, xs, lengths, key):
        carry, ys = lay.apply(params, xs, lengths=lengths, key=key)
        leaves = jax.tree.leaves(carry)
        total = jnp.sum(ys**2) + sum(jnp.sum(c.astype(ys.dtype) ** 2) for c in leaves)
        return total, (ys, carry)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _data():
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    lengths = jnp.array([5, 0, 3, 5, 1, 4, 5, 2])
    return xs, lengths, jax.random.key(7)  # the key is put on the mesh, replicated


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_batch_sharded_equals_one_device(name, how):
    lay = LAYERS[name]()
    params = lay.init(jax.random.key(0))
    f = _loss(lay)
    _, ((_, (ys, carry)), grads), _, placed = compare(f, params, _data(), how, label=name)
    if how != "auto":
        assert spec_of(ys)[0] == "data"  # outputs stay split by rows
        for c in jax.tree.leaves(carry):
            assert spec_of(c)[0] == "data", c.sharding
        check_grads_placed(grads, placed, how)


@pytest.mark.parametrize("how", ["explicit", "explicit+set_mesh"])
def test_dropout_masks_do_not_depend_on_the_sharding(how):
    """The same key draws the same masks on 1 and 8 devices (threefry is partitionable): the
    dropped positions of a stack's outputs are the same zeros."""
    lay = jr.stack([jr.layer(jr.lstm(I, 4)), jr.layer(jr.lstm(4, 4))], dropout=0.5)
    params = lay.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    f = jax.jit(lambda p, x: lay.apply(p, x, key=jax.random.key(3))[1])
    one = f(params, xs)
    mesh = mesh_of(how)
    with context(how, mesh):
        eight = f(params, split_rows(xs, mesh))
    np.testing.assert_allclose(np.asarray(eight), np.asarray(one), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", HOWS)
def test_embedding_dropout_sharded_equals_one_device(how):
    emb = jax.random.normal(jax.random.key(0), (10, 4))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 10)

    def loss(emb, tokens):
        table = jr.embedding_dropout(jax.random.key(2), emb, 0.5)
        out = _sharding.lookup(table, tokens)  # table[tokens], unambiguous on a mesh
        return jnp.sum(out**2), out

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    _, ((_, out), grads), _, placed = compare(f, emb, (tokens,), how, label="embedding_dropout")
    if how != "auto":
        assert spec_of(out)[0] == "data"
        check_grads_placed(grads, placed, how)
