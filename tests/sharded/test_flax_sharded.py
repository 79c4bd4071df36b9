"""The Flax Linen and NNX modules (RNN, Layer with dropout, Seq2Seq) with the batch split over 8
devices equal one device, values and gradients, under Explicit axes (with and without
``jax.set_mesh``), Auto axes and a ("data", "model") mesh; parameters created under
``jax.jit`` from a sharded batch equal those created on one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from one_device import (
    HOWS,
    assert_close,
    check_grads_placed,
    compare,
    context,
    mesh_of,
    spec_of,
    split_rows,
)

import jaxrnn as jr
import jaxrnn.flax.linen as jrlinen
import jaxrnn.flax.nnx as jrnnx

B, T, I = 8, 5, 3  # noqa: E741


def _data():
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    return xs, jnp.array([5, 0, 3, 5, 1, 4, 5, 2]), jax.random.key(4)


LINEN = {
    "rnn_lstm": lambda: jrlinen.RNN(jr.lstm(I, 4)),
    "layer_bi_dropout": lambda: jrlinen.Layer(
        jr.rnn(jr.gru, I, 4, num_layers=2, bidirectional=True, dropout=0.3)
    ),
}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(LINEN))
def test_linen_sharded_equals_one_device(name, how):
    module = LINEN[name]()
    xs, lengths, key = _data()
    variables = module.init(jax.random.key(0), xs, deterministic=True)

    def loss(variables, xs, lengths, key):
        ys = module.apply(
            variables, xs, lengths=lengths, deterministic=False, rngs={"dropout": key}
        )
        return jnp.sum(ys**2), ys

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    _, ((_, ys), grads), _, placed = compare(
        f, variables, (xs, lengths, key), how, label=f"linen.{name}"
    )
    if how != "auto":
        assert spec_of(ys)[0] == "data"
        check_grads_placed(grads, placed, how)


@pytest.mark.parametrize("how", ["explicit", "explicit+set_mesh", "auto"])
def test_linen_init_under_jit_from_a_sharded_batch(how):
    """Params created inside ``jax.jit`` (no mesh in their types) from a sharded batch equal
    the one-device ones, and a gradient step on them runs."""
    module = jrlinen.RNN(jr.lstm(I, 4))
    xs, lengths, _ = _data()
    one = module.init(jax.random.key(0), xs)
    mesh = mesh_of(how)
    with context(how, mesh):
        xs8, lengths8 = split_rows((xs, lengths), mesh)
        variables = jax.jit(module.init)(jax.random.key(0), xs8)
        grads = jax.jit(jax.grad(lambda v, x, n: jnp.sum(module.apply(v, x, lengths=n) ** 2)))(
            variables, xs8, lengths8
        )
    assert_close(variables, one, label=f"linen init under jit[{how}]")
    grads1 = jax.grad(lambda v: jnp.sum(module.apply(v, xs, lengths=lengths) ** 2))(one)
    assert_close(grads, grads1, label=f"linen grads of jit-made params[{how}]")


def _seq2seq():
    return jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 5, 4, bidirectional=True, dropout=0.0),
        jr.gru(6 + 8, 8),
        src_vocab=11,
        tgt_vocab=13,
        attention=jr.attention.general(8, 8),
    )


def _tokens():
    src = jax.random.randint(jax.random.key(1), (B, 6), 0, 11)
    tgt = jax.random.randint(jax.random.key(2), (B, 4), 0, 13)
    return src, jnp.array([6, 1, 3, 6, 2, 5, 6, 4]), jr.seq2seq.shift_right(tgt, bos_id=1), tgt


@pytest.mark.parametrize("how", HOWS)
def test_linen_seq2seq_sharded_equals_one_device(how):
    module = jrlinen.Seq2Seq(_seq2seq())
    src, src_len, tgt_in, tgt = _tokens()
    variables = module.init(jax.random.key(0), src, tgt_in)

    def loss(variables, src, src_len, tgt_in, tgt):
        out = module.apply(variables, src, tgt_in, src_lengths=src_len)
        return jnp.mean(jr.losses.softmax_cross_entropy(out.logits, tgt)), out.logits

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    data = (src, src_len, tgt_in, tgt)
    _, ((_, logits), grads), mesh, placed = compare(f, variables, data, how, label="linen.s2s")
    gen = jax.jit(
        lambda v, s, n: module.apply(
            v, s, n, bos_id=1, eos_id=2, max_len=4, beam_size=2, method="generate"
        )
    )
    tokens1, scores1 = gen(variables, src, src_len)
    with context(how, mesh):
        tokens8, scores8 = gen(placed, *split_rows((src, src_len), mesh))
    np.testing.assert_array_equal(np.asarray(tokens8), np.asarray(tokens1))
    assert_close(scores8, scores1, label=f"linen.s2s beams[{how}]")
    if how != "auto":
        assert spec_of(logits)[0] == "data" and spec_of(tokens8)[0] == "data"
        check_grads_placed(grads, placed, how)


NNX = {
    "rnn_lstm": lambda: jrnnx.RNN(jr.lstm(I, 4), rngs=nnx.Rngs(0)),
    "layer_bi_dropout": lambda: jrnnx.Layer(
        jr.rnn(jr.lstm, I, 4, num_layers=2, bidirectional=True, dropout=0.3), rngs=nnx.Rngs(0)
    ),
}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(NNX))
def test_nnx_sharded_equals_one_device(name, how):
    graphdef, params, rest = nnx.split(NNX[name](), nnx.Param, ...)

    def loss(params, xs, lengths, key):
        model = nnx.merge(graphdef, params, rest)
        ys = model(xs, lengths=lengths, rngs=key)
        return jnp.sum(ys**2), ys

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    _, ((_, ys), grads), _, placed = compare(f, params, _data(), how, label=f"nnx.{name}")
    if how != "auto":
        assert spec_of(ys)[0] == "data"
        check_grads_placed(grads, placed, how)


@pytest.mark.parametrize("how", HOWS)
def test_nnx_seq2seq_with_encoder_dropout_sharded_equals_one_device(how):
    model = jr.seq2seq.encoder_decoder(
        jr.rnn(jr.lstm, 5, 4, num_layers=2, dropout=0.3),
        jr.gru(6, 4),
        src_vocab=11,
        tgt_vocab=13,
    )
    graphdef, params, rest = nnx.split(jrnnx.Seq2Seq(model, rngs=nnx.Rngs(0)), nnx.Param, ...)
    src, src_len, tgt_in, tgt = _tokens()

    def loss(params, src, src_len, tgt_in, tgt, key):
        net = nnx.merge(graphdef, params, rest)
        out = net(src, tgt_in, src_lengths=src_len, rngs=key)
        return jnp.mean(jr.losses.softmax_cross_entropy(out.logits, tgt)), out.logits

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    data = (src, src_len, tgt_in, tgt, jax.random.key(6))
    _, ((_, logits), grads), _, placed = compare(f, params, data, how, label="nnx.s2s")
    if how != "auto":
        assert spec_of(logits)[0] == "data"
        check_grads_placed(grads, placed, how)
