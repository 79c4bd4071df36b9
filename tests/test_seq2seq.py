"""Encoder–decoder models: teacher forcing, scheduled sampling, the bridge, and learning.

References: a Python loop of the model's own one-step decoder fed the ground truth (teacher
forcing) or its previous argmax (free running); the bridge against NumPy; padding invariance;
and a synthetic task (reversal) that an attention model must learn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn as jr
from jaxrnn import attention, decode, losses, seq2seq

PAD, BOS, EOS = 0, 1, 2
V_SRC, V_TGT, E, H = 7, 8, 5, 6
B, S, T = 3, 6, 5
SRC_LENGTHS = np.array([6, 3, 1], np.int32)


def np_params(init, seed=0, *, training=False):
    """Parameters of ``init``'s structure from NumPy (no XLA compilation of initialisers).

    Correctness tests draw every leaf from N(0, 1/fan_in) with nonzero biases; for training,
    biases start at zero.
    """
    shapes = jax.eval_shape(init, jax.random.key(0))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    out = []
    for leaf in leaves:
        fan_in = leaf.shape[0] if leaf.ndim == 2 else 1
        x = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
        if training and leaf.ndim < 2:
            x = np.zeros(leaf.shape)
        out.append(jnp.asarray(x, leaf.dtype))
    return jax.tree.unflatten(tree, out)


CONFIGS = {
    "additive-bigru": lambda: seq2seq.encoder_decoder(
        jr.rnn(jr.gru, E, H, bidirectional=True),
        jr.gru(E + 2 * H, H),
        src_vocab=V_SRC,
        tgt_vocab=V_TGT,
        attention=attention.additive(H, 2 * H, 4, normalize=True),
    ),
    "general-lstm-nobridge": lambda: seq2seq.encoder_decoder(
        jr.rnn(jr.lstm, E, H),
        jr.lstm(E + H, H),
        src_vocab=V_SRC,
        tgt_vocab=V_TGT,
        attention=attention.general(H, H, scaled=True),
        use_bridge=False,
    ),
    "plain-bilstm": lambda: seq2seq.encoder_decoder(
        jr.rnn(jr.lstm, E, H, bidirectional=True),
        jr.lstm(E, H),
        src_vocab=V_SRC,
        tgt_vocab=V_TGT,
    ),
}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, V_SRC, (B, S)).astype(np.int32)
    tgt = rng.integers(3, V_TGT, (B, T)).astype(np.int32)
    return jnp.asarray(src), jnp.asarray(SRC_LENGTHS), jnp.asarray(tgt)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_teacher_forcing_equals_stepwise_decoding(name):
    model = CONFIGS[name]()
    params = np_params(model.init)
    src, src_len, tgt = _data()
    tgt_in = seq2seq.shift_right(tgt, BOS)
    out = jax.jit(lambda p: model.apply(p, src, tgt_in, src_lengths=src_len))(params)
    assert out.logits.shape == (B, T, V_TGT)

    @jax.jit
    def stepwise(params):
        state = model.encode(params, src, src_len)
        step = model.decode_step(params)
        logits = []
        for t in range(T):  # the ground truth y_{t-1} as input, one step at a time
            state, z = step(state, tgt_in[:, t])
            logits.append(z)
        return jnp.stack(logits, axis=1)

    np.testing.assert_allclose(out.logits, stepwise(params), rtol=2e-5, atol=2e-5)
    if "plain" in name:
        assert out.weights is None
    else:
        w = np.asarray(out.weights)
        valid = np.arange(S) < SRC_LENGTHS[:, None]
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
        assert np.all(w[np.broadcast_to(~valid[:, None, :], w.shape)] == 0.0)


def test_source_padding_and_target_lengths():
    model = CONFIGS["additive-bigru"]()
    params = np_params(model.init)
    src, src_len, tgt = _data()
    tgt_in = seq2seq.shift_right(tgt, BOS)
    tgt_len = jnp.array([5, 2, 0], jnp.int32)
    run = jax.jit(
        lambda s: model.apply(params, s, tgt_in, src_lengths=src_len, tgt_lengths=tgt_len)
    )
    first = run(src)
    garbage = jnp.where(jnp.arange(S) < src_len[:, None], src, V_SRC - 1)  # change the padding
    second = run(garbage)
    np.testing.assert_array_equal(first.logits, second.logits)
    past_end = np.arange(T)[None, :] >= np.asarray(tgt_len)[:, None]
    assert np.all(np.asarray(first.logits)[past_end] == 0.0)


def test_scheduled_sampling_limits():
    model = CONFIGS["general-lstm-nobridge"]()
    params = np_params(model.init, seed=1)
    src, src_len, tgt = _data(1)
    tgt_in = seq2seq.shift_right(tgt, BOS)

    def ss(params, key, rate, greedy):
        return model.scheduled_sampling(
            params, src, tgt_in, key, rate=rate, src_lengths=src_len, greedy=greedy
        )

    @jax.jit
    def run(params, key):
        forced = model.apply(params, src, tgt_in, src_lengths=src_len)
        k0, k1, k2 = jax.random.split(key, 3)
        # rate=1/2 under grad, as in training: the gradients must be finite.
        half, grads = jax.value_and_grad(lambda p: jnp.sum(ss(p, k2, 0.5, False).logits))(params)
        return forced, ss(params, k0, 0.0, False), ss(params, k1, 1.0, True), half, grads

    forced, never, always, _, grads = run(params, jax.random.key(0))
    np.testing.assert_allclose(never.logits, forced.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(never.weights, forced.weights, rtol=1e-5, atol=1e-6)

    # rate=1, greedy: free running, each input the argmax of the previous step's logits.
    state = jax.jit(model.encode)(params, src, src_len)
    step = jax.jit(model.decode_step(params))
    tokens, logits = tgt_in[:, 0], []
    for _ in range(T):
        state, z = step(state, tokens)
        logits.append(z)
        tokens = jnp.argmax(z, axis=-1).astype(jnp.int32)
    np.testing.assert_allclose(always.logits, jnp.stack(logits, 1), rtol=2e-5, atol=2e-5)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_bridge_matches_numpy():
    encoder = jr.rnn(jr.lstm, E, H, num_layers=2, bidirectional=True)
    br = seq2seq.bridge(encoder, jr.lstm(3, 4))
    assert (br.input_size, br.output_size) == (4 * H, 8)
    params = np_params(br.init)
    rng = np.random.default_rng(2)
    layer = lambda: jr.LSTMCarry(*(rng.standard_normal((B, H)).astype(np.float32) for _ in "hc"))
    carry = (jr.Bidirectional(layer(), layer()), jr.Bidirectional(layer(), layer()))
    out = br.apply(params, jax.tree.map(jnp.asarray, carry))
    last = carry[1]  # the last layer's final state: forward (h, c), then backward (h, c)
    x = np.concatenate([last.forward.h, last.forward.c, last.backward.h, last.backward.c], -1)
    s0 = np.tanh(x.astype(np.float64) @ np.asarray(params.w) + np.asarray(params.b))
    assert isinstance(out, jr.LSTMCarry)
    np.testing.assert_allclose(out.h, s0[:, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.c, s0[:, 4:], rtol=1e-5, atol=1e-6)


def test_shift_right():
    assert seq2seq.shift_right(jnp.array([[4, 5, 6], [7, 8, 9]]), 1).tolist() == [
        [1, 4, 5],
        [1, 7, 8],
    ]


def test_bad_arguments_raise_clear_errors():
    enc = jr.rnn(jr.gru, E, H, bidirectional=True)
    with pytest.raises(ValueError, match="attention: key_size 6 must equal the encoder's"):
        seq2seq.encoder_decoder(
            enc, jr.gru(E + H, H), src_vocab=5, tgt_vocab=5, attention=attention.dot(H)
        )
    with pytest.raises(ValueError, match="src_vocab must be a positive int"):
        seq2seq.encoder_decoder(enc, jr.gru(E, H), src_vocab=0, tgt_vocab=5)
    with pytest.raises(TypeError, match=r"encoder: expected a jaxrnn\.Layer"):
        seq2seq.encoder_decoder(jr.gru(E, H), jr.gru(E, H), src_vocab=5, tgt_vocab=5)
    model = CONFIGS["plain-bilstm"]()
    params = np_params(model.init)
    src, _, tgt = _data()
    with pytest.raises(TypeError, match="src: expected integer token ids"):
        model.apply(params, src.astype(jnp.float32), tgt)
    with pytest.raises(ValueError, match="tgt_in: expected token ids of shape"):
        model.apply(params, src, tgt[0])
    with pytest.raises(ValueError, match="lengths: every length must lie in"):
        model.apply(params, src, tgt, src_lengths=jnp.array([7, 1, 1]))


# --------------------------------------------------------------------------------------------
# Learning: reverse a sequence of symbols (3..8) with an additive-attention GRU seq2seq.

N_SYM, MAX_LEN = 6, 6
V = 3 + N_SYM


def reversal_batch(rng, n):
    lengths = rng.integers(2, MAX_LEN + 1, n)
    src = np.full((n, MAX_LEN), PAD, np.int32)
    tgt = np.full((n, MAX_LEN + 1), PAD, np.int32)
    for i, n_i in enumerate(lengths):
        symbols = rng.integers(3, V, n_i)
        src[i, :n_i], tgt[i, :n_i], tgt[i, n_i] = symbols, symbols[::-1], EOS
    return src, lengths.astype(np.int32), tgt, (lengths + 1).astype(np.int32)


def test_attention_seq2seq_learns_to_reverse():
    hidden = 16
    model = seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 16, hidden, bidirectional=True),
        jr.gru(16 + 2 * hidden, hidden),
        src_vocab=V,
        tgt_vocab=V,
        attention=attention.additive(hidden, 2 * hidden, hidden),
    )
    params = np_params(model.init, training=True)
    optimizer = optax.adam(1e-2)

    def loss_fn(params, src, src_len, tgt, tgt_len):
        out = model.apply(params, src, seq2seq.shift_right(tgt, BOS), src_lengths=src_len)
        mask = losses.length_mask(tgt_len, tgt.shape[1])
        return losses.softmax_cross_entropy(out.logits, tgt, mask, reduction="mean")

    @jax.jit
    def train_step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float scalars
        opt_state = optimizer.init(params)
        history = []
        for _ in range(200):
            params, opt_state, loss = train_step(params, opt_state, *reversal_batch(rng, 64))
            history.append(float(loss))
    assert history[-1] < 0.1 * history[0]

    src, src_len, tgt, tgt_len = reversal_batch(np.random.default_rng(1), 200)
    valid = np.arange(MAX_LEN + 1) < tgt_len[:, None]

    @jax.jit
    def predict(params, src, src_len):
        state = model.encode(params, src, src_len)
        step = model.decode_step(params)
        return decode.greedy(step, state, bos_id=BOS, eos_id=EOS, max_len=MAX_LEN + 1)

    tokens = predict(params, src, src_len)
    exact = np.mean(np.all((np.asarray(tokens) == tgt) | ~valid, axis=1))
    assert exact >= 0.95, exact
