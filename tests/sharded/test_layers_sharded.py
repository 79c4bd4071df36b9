"""Layers (``jr.layer``, ``jr.bidirectional``, ``jr.stack``/``jr.rnn`` with dropout) and the
regularisers with the batch split over 8 devices equal one device, values and gradients, under
Explicit axes (with and without ``jax.set_mesh``), Auto axes and a ("data", "model") mesh.

The dropout cases draw their masks from one key on 1 and on 8 devices: equal results mean
equal masks (JAX's threefry random bits do not depend on the sharding)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from one_device import (
    HOWS,
    assert_close,
    check_grads_placed,
    compare,
    mesh_of,
    spec_of,
    split_rows,
)

import jaxrnn as jr
from jaxrnn import _sharding

B, T, I = 8, 5, 3  # noqa: E741

LAYERS = {
    "layer_lstm": lambda: jr.layer(jr.lstm(I, 4)),
    "layer_gru_reverse": lambda: jr.layer(jr.gru(I, 4), reverse=True),
    "layer_slstm": lambda: jr.layer(jr.slstm(I, 8, num_heads=2)),
    "bidirectional_lstm": lambda: jr.bidirectional(jr.lstm(I, 4)),
    "rnn_gru_2_bi_dropout": lambda: jr.rnn(
        jr.gru, I, 4, num_layers=2, bidirectional=True, dropout=0.3
    ),
    "rnn_min_gru_associative": lambda: jr.rnn(
        jr.min_gru, I, 4, num_layers=2, bidirectional=True, method="associative"
    ),
    "layer_gru_newton": lambda: jr.layer(jr.gru(I, 4), method="newton"),
    "zoneout_gru": lambda: jr.layer(
        jr.gru(I, 4), transform=functools.partial(jr.zoneout, rate=0.3)
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


def test_dropout_masks_do_not_depend_on_the_sharding():
    """What the dropout cases rely on: a mask drawn split over 8 devices is the one drawn on
    one device (a sharding never changes JAX's random bits; with ``jax_threefry_partitionable``,
    the default, each device computes only its own part of them)."""
    mesh = mesh_of("explicit")
    key = jax.random.key(3)
    one = jax.random.bernoulli(key, 0.5, (B, T, 4))
    with jax.set_mesh(mesh):  # a jitted draw with no sharded input names its mesh here
        eight = jax.jit(lambda k: jax.random.bernoulli(k, 0.5, (B, T, 4), out_sharding=P("data")))(
            jax.random.clone(key)
        )
    assert spec_of(eight)[0] == "data"
    np.testing.assert_array_equal(np.asarray(eight), np.asarray(one))


def test_cudnn_is_not_chosen_for_inputs_on_an_explicit_mesh(monkeypatch):
    """The cuDNN call is not partitioned: with the batch split over an explicit mesh,
    ``jr.rnn(cudnn=None)`` takes the scan path and ``cudnn=True`` says why it cannot (the
    backend check is stubbed out: this runs on the CPU)."""
    from jaxrnn.layers import _cudnn

    monkeypatch.setattr(_cudnn, "_backend_reason", lambda: None)
    net = jr.rnn(jr.lstm, I, 4, cudnn=False)
    params = net.init(jax.random.key(0))
    xs = jnp.ones((B, T, I))
    assert _cudnn.dispatch(net, params, xs, None, require=False)  # one device: cuDNN
    xs8 = split_rows(xs, mesh_of("explicit"))
    assert not _cudnn.dispatch(net, params, xs8, None, require=False)
    with pytest.raises(ValueError, match="explicit mesh"):
        _cudnn.dispatch(net, params, xs8, None, require=True)


def test_eager_call_on_an_explicit_mesh_equals_one_device():
    """Outside ``jax.jit`` (no ``jax.set_mesh``): a stack of bidirectional layers with dropout
    and lengths, called on a batch split over the mesh."""
    lay = jr.rnn(jr.gru, I, 4, num_layers=2, bidirectional=True, dropout=0.3)
    params = lay.init(jax.random.key(0))
    xs, lengths, key = _data()
    carry1, ys1 = lay.apply(params, xs, lengths=lengths, key=jax.random.clone(key))
    xs8, lengths8 = split_rows((xs, lengths), mesh_of("explicit"))
    carry8, ys8 = lay.apply(params, xs8, lengths=lengths8, key=key)
    assert spec_of(ys8)[0] == "data"
    assert_close((carry8, ys8), (carry1, ys1), label="eager rnn[explicit]")
