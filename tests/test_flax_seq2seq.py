"""The Flax Seq2Seq modules (Linen and NNX) compute exactly what the pure seq2seq model does."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn as jr
import jaxrnn.flax as jrf
from jaxrnn import decode
from tests.helpers import assert_trees_close, numpy_init

SRC_VOCAB, TGT_VOCAB, BOS, EOS = 11, 9, 1, 2


def make_model(num_layers=1, dropout=0.0):
    return jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 6, 8, num_layers=num_layers, bidirectional=True, dropout=dropout),
        jr.gru(5 + 16, 8),
        src_vocab=SRC_VOCAB,
        tgt_vocab=TGT_VOCAB,
        attention=jr.attention.additive(query_size=8, key_size=16, hidden_size=8),
    )


def batch():
    k1, k2 = jax.random.split(jax.random.key(3))
    src = jax.random.randint(k1, (3, 7), 3, SRC_VOCAB)
    tgt = jax.random.randint(k2, (3, 5), 3, TGT_VOCAB)
    return src, jnp.array([7, 4, 1]), jr.seq2seq.shift_right(tgt, bos_id=BOS), tgt


def test_linen_equals_pure_model_and_generate():
    model = make_model()
    net = jrf.Seq2Seq(model)
    src, src_len, tgt_in, _ = batch()
    # Parameters in the structure init gives (traced only), drawn by NumPy: compiling the
    # initialisers costs more than the rest of the test.
    init = functools.partial(net.init, src_lengths=src_len)
    variables = numpy_init(init, jax.random.key(0), src, tgt_in)
    params = variables["params"]["model"]
    assert type(params).__name__ == "Seq2SeqParams"
    # Each side jitted on its own (one compile each instead of one per scan and new-shape op).
    lengths = dict(src_lengths=src_len, tgt_lengths=jnp.array([5, 3, 2]))
    got = jax.jit(lambda v: net.apply(v, src, tgt_in, **lengths))(variables)
    want = jax.jit(lambda p: model.apply(p, src, tgt_in, **lengths))(params)
    assert_trees_close(got, want, rtol=0, atol=0)

    state = model.encode(params, src, src_len)
    step = model.decode_step(params)
    greedy = net.apply(
        variables, src, src_len, bos_id=BOS, eos_id=EOS, max_len=6, method="generate"
    )
    np.testing.assert_array_equal(
        greedy, decode.greedy(step, state, bos_id=BOS, eos_id=EOS, max_len=6)
    )
    beams = net.apply(
        variables,
        src,
        src_len,
        bos_id=BOS,
        eos_id=EOS,
        max_len=6,
        beam_size=3,
        method="generate",
    )
    want_beams = decode.beam_search(step, state, bos_id=BOS, eos_id=EOS, beam_size=3, max_len=6)
    assert_trees_close(beams, want_beams, rtol=0, atol=0)


def test_nnx_equals_linen_with_the_same_params():
    model = make_model()
    src, src_len, tgt_in, _ = batch()
    variables = numpy_init(jrf.Seq2Seq(model).init, jax.random.key(0), src, tgt_in)
    net = jrf.nnx.Seq2Seq(model, rngs=nnx.Rngs(1))
    net.set_params(variables["params"]["model"])
    assert_trees_close(net.get_params(), variables["params"]["model"], rtol=0, atol=0)
    assert_trees_close(
        net(src, tgt_in, src_lengths=src_len),
        jrf.Seq2Seq(model).apply(variables, src, tgt_in, src_lengths=src_len),
        rtol=0,
        atol=0,
    )
    np.testing.assert_array_equal(
        net.generate(src, src_len, bos_id=BOS, eos_id=EOS, max_len=6),
        jr.seq2seq.generate(
            model, variables["params"]["model"], src, src_len, bos_id=BOS, eos_id=EOS, max_len=6
        ),
    )


def test_dropout_key_comes_from_the_rng_stream():
    model = make_model(num_layers=2, dropout=0.5)
    net = jrf.Seq2Seq(model)
    src, _, tgt_in, _ = batch()
    init = functools.partial(net.init, deterministic=True)
    variables = numpy_init(init, jax.random.key(0), src, tgt_in)
    params = variables["params"]["model"]
    # Each kind of call jitted on its own (one compile, instead of one per scan and new-shape
    # op); the call that must fail runs eagerly.
    det = jax.jit(lambda v: net.apply(v, src, tgt_in, deterministic=True))(variables)
    want = jax.jit(lambda p: model.apply(p, src, tgt_in))(params)
    assert_trees_close(det, want, rtol=0, atol=0)
    with pytest.raises(Exception, match="dropout"):  # needs a "dropout" rng when training
        net.apply(variables, src, tgt_in, deterministic=False)
    train = jax.jit(
        lambda v, key: net.apply(v, src, tgt_in, deterministic=False, rngs={"dropout": key})
    )
    a = train(variables, jax.random.key(5))
    b = train(variables, jax.random.key(6))
    assert not np.allclose(a.logits, det.logits)
    assert not np.allclose(a.logits, b.logits)

    nnx_net = jrf.nnx.Seq2Seq(model, rngs=nnx.Rngs(0))
    nnx_net.set_params(params)
    nnx_net.eval()
    # Jitted like det: like with like (an eager call and a jitted one may round differently).
    assert_trees_close(nnx.jit(lambda net: net(src, tgt_in))(nnx_net), det, rtol=0, atol=0)
    nnx_net.train()
    assert not np.allclose(nnx_net(src, tgt_in).logits, det.logits)


def test_nnx_seq2seq_trains_with_nnx_optimizer():
    model = make_model()
    src, src_len, tgt_in, tgt = batch()
    net = jrf.nnx.Seq2Seq(model, rngs=nnx.Rngs(0))
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32 counts
        optimizer = nnx.Optimizer(net, optax.adam(3e-2), wrt=nnx.Param)

        @nnx.jit
        def train_step(net, optimizer):
            def loss_fn(net):
                out = net(src, tgt_in, src_lengths=src_len)
                return jr.losses.softmax_cross_entropy(out.logits, tgt, reduction="mean")

            loss, grads = nnx.value_and_grad(loss_fn)(net)
            optimizer.update(net, grads)
            return loss

        losses = [float(train_step(net, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0], losses
