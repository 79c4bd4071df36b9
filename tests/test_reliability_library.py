"""The library rejects what it cannot compute (issue 11, section 3), and losses take ``lengths=``.

Each case is something a hostile or careless caller tried: token ids outside the vocabulary,
NaN or out-of-range scalars given as Python, NumPy or JAX numbers, params of another cell,
layers where cells belong, degenerate attention memories, torch modules and Flax variables that
the converters cannot reproduce. Every one must end in a ``ValueError``/``TypeError`` naming
the argument (or in a finite, documented result), never in a silently wrong answer or a
traceback from deep inside JAX. Padding is the exception that must keep working: ids and labels
past ``lengths`` or under a ``False`` mask may hold anything.
"""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr


def key0():
    """A fresh key each time (the suite checks key reuse)."""
    return jax.random.key(0)


V_SRC, V_TGT = 10, 12


@pytest.fixture(scope="module")
def s2s():
    model = jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 4, 8), jr.gru(4, 8), src_vocab=V_SRC, tgt_vocab=V_TGT
    )
    return model, model.init(key0())


SRC = np.ones((2, 5), np.int32)
TGT = np.ones((2, 4), np.int32)


def with_id(a, index, value):
    a = np.array(a)
    a[index] = value
    return a


# --------------------------------------------------------------------------------------------
# 1. Token ids outside [0, V)


@pytest.mark.parametrize("bad", [V_SRC, -1, 99])
def test_seq2seq_src_ids_out_of_range(s2s, bad):
    model, params = s2s
    pattern = rf"^src: token ids must lie in \[0, {V_SRC}\).*got {bad} at index \(0, 2\)"
    with pytest.raises(ValueError, match=pattern):
        model.apply(params, with_id(SRC, (0, 2), bad), TGT)
    with pytest.raises(ValueError, match=pattern):
        model.encode(params, with_id(SRC, (0, 2), bad))
    with pytest.raises(ValueError, match=pattern):
        jr.seq2seq.generate(model, params, with_id(SRC, (0, 2), bad), bos_id=1, eos_id=2, max_len=2)


@pytest.mark.parametrize("bad", [V_TGT, -3])
def test_seq2seq_tgt_in_ids_out_of_range(s2s, bad):
    model, params = s2s
    pattern = rf"^tgt_in: token ids must lie in \[0, {V_TGT}\).*got {bad}"
    with pytest.raises(ValueError, match=pattern):
        model.apply(params, SRC, with_id(TGT, (1, 1), bad))
    with pytest.raises(ValueError, match=pattern):
        model.scheduled_sampling(params, SRC, with_id(TGT, (1, 1), bad), key0(), rate=0.5)


def test_seq2seq_padding_ids_are_not_checked(s2s):
    """Ids past the lengths are padding: -1 or V there must change nothing."""
    model, params = s2s
    src_len, tgt_len = np.array([5, 3]), np.array([4, 2])
    clean = model.apply(params, SRC, TGT, src_lengths=src_len, tgt_lengths=tgt_len)
    src = with_id(with_id(SRC, (1, 3), -1), (1, 4), V_SRC)
    tgt = with_id(with_id(TGT, (1, 2), V_TGT), (1, 3), -7)
    dirty = model.apply(params, src, tgt, src_lengths=src_len, tgt_lengths=tgt_len)
    np.testing.assert_array_equal(dirty.logits, clean.logits)

    # Scheduled sampling against itself on clean ids (like with like: its per-step readout
    # may round differently from apply's; that rate 0 equals apply is test_seq2seq's).
    def sampled(src, tgt):
        return model.scheduled_sampling(
            params, src, tgt, key0(), rate=0.0, src_lengths=src_len, tgt_lengths=tgt_len
        ).logits

    np.testing.assert_array_equal(sampled(src, tgt), sampled(SRC, TGT))


def test_seq2seq_ids_under_jit_are_not_value_checked(s2s):
    """Traced ids cannot be read: under jit only dtype and shape are checked (documented)."""
    model, params = s2s
    out = jax.jit(model.apply)(params, SRC, TGT)
    assert out.logits.shape == (2, 4, V_TGT)
    with pytest.raises(TypeError, match=r"^tgt_in: expected integer token ids, got dtype float32"):
        jax.jit(model.apply)(params, SRC, TGT.astype(np.float32))


def test_generate_bos_eos_against_the_target_vocabulary(s2s):
    model, params = s2s
    with pytest.raises(ValueError, match=rf"^bos_id must be an int in \[0, {V_TGT - 1}\], got 12"):
        jr.seq2seq.generate(model, params, SRC, bos_id=V_TGT, eos_id=2, max_len=3)
    with pytest.raises(ValueError, match=r"^eos_id must be an int in \[0, 11\], got -1"):
        jr.seq2seq.generate(model, params, SRC, bos_id=1, eos_id=-1, max_len=3)
    with pytest.raises(ValueError, match=r"^eos_id: 12 is not a token id of the vocabulary"):
        jr.decode.greedy(model.decode_step(params), model.encode(params, SRC), bos_id=1,
                         eos_id=V_TGT, max_len=3)  # fmt: skip


def test_decode_ids_accept_numpy_ints(s2s):
    model, params = s2s
    state, step = model.encode(params, SRC), model.decode_step(params)
    a = jr.decode.greedy(step, state, bos_id=1, eos_id=2, max_len=3)
    b = jr.decode.greedy(step, state, bos_id=np.int64(1), eos_id=np.int32(2), max_len=np.int8(3))
    np.testing.assert_array_equal(a, b)
    t1, _ = jr.decode.beam_search(step, state, bos_id=1, eos_id=2, beam_size=2, max_len=3)
    t2, _ = jr.decode.beam_search(step, state, bos_id=1, eos_id=2, beam_size=np.int64(2),
                                   max_len=3)  # fmt: skip
    np.testing.assert_array_equal(t1, t2)
    with pytest.raises(ValueError, match=r"^beam_size must be an int >= 1, got True"):
        jr.decode.beam_search(step, state, bos_id=1, eos_id=2, beam_size=True, max_len=3)


@pytest.mark.parametrize("bad", [4, -1])
def test_softmax_cross_entropy_labels_out_of_range(bad):
    logits = jnp.zeros((2, 3, 4))
    labels = np.array([[0, 1, bad], [0, 0, 0]])
    with pytest.raises(ValueError, match=rf"^labels: token ids must lie in \[0, 4\).*got {bad}"):
        jr.losses.softmax_cross_entropy(logits, labels)
    # Masked or beyond the lengths: padding, never read.
    mask = np.array([[True, True, False], [True, True, True]])
    expected = jr.losses.softmax_cross_entropy(logits, np.where(mask, labels, 0), mask)
    got = jr.losses.softmax_cross_entropy(logits, labels, mask)
    np.testing.assert_array_equal(got, expected)
    got = jr.losses.softmax_cross_entropy(logits, labels, lengths=np.array([2, 3]))
    np.testing.assert_array_equal(got, expected)


def test_binary_cross_entropy_labels_outside_zero_one():
    with pytest.raises(ValueError, match=r"^labels: binary targets must lie in \[0, 1\], got 2.0"):
        jr.losses.sigmoid_binary_cross_entropy(jnp.zeros((2, 3)), jnp.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"^labels: .*got nan"):
        jr.losses.sigmoid_binary_cross_entropy(jnp.zeros((1, 2)), jnp.array([[0.5, jnp.nan]]))
    masked = jr.losses.sigmoid_binary_cross_entropy(
        jnp.zeros((1, 2)), jnp.array([[1.0, jnp.nan]]), lengths=np.array([1])
    )
    np.testing.assert_allclose(masked, [np.log(2)], rtol=1e-6)


@pytest.fixture(scope="module")
def lm():
    model = jr.models.char_lm(10, 8, embed_size=4)
    return model, model.init(key0())


@pytest.mark.parametrize("prompt", [[1, 10], [-1, 2], [25]])
def test_lm_sample_prompt_out_of_range(lm, prompt):
    model, params = lm
    bad = next(p for p in prompt if not 0 <= p < 10)
    with pytest.raises(ValueError, match=rf"^prompt: token ids must lie in \[0, 10\).*got {bad}"):
        jr.models.sample(model, params, key0(), prompt, 3)


def test_lm_sample_prompt_must_be_integer_and_nonempty(lm):
    model, params = lm
    with pytest.raises(TypeError, match=r"^prompt: expected integer token ids, got dtype float"):
        jr.models.sample(model, params, key0(), [1.5], 3)
    with pytest.raises(ValueError, match=r"^prompt: .*at least one token"):
        jr.models.sample(model, params, key0(), [], 3)


def test_vocab_decode_and_encode():
    vocab = jr.data.Vocab(tuple("abcdefghijklmnopqrst"))
    assert vocab.decode([0, 19]) == "at"
    assert vocab.decode([]) == ""
    with pytest.raises(
        ValueError, match=r"^ids: token ids must lie in \[0, 20\).*got 25 at index 1"
    ):
        vocab.decode([1, 25])
    with pytest.raises(ValueError, match=r"^ids: .*got -1"):
        vocab.decode(np.array([-1]))
    with pytest.raises(TypeError, match=r"^ids: expected integer token ids"):
        vocab.decode([1.5])
    with pytest.raises(TypeError, match=r"^text: expected a str, got int"):
        vocab.encode(123)


# --------------------------------------------------------------------------------------------
# 2. Scalars: Python, NumPy and JAX alike


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "rate", [1.5, -0.1, NAN, np.float32(-0.1), jnp.float32(1.01), np.float64(NAN)], ids=repr
)
def test_scheduled_sampling_rate_out_of_range(s2s, rate):
    model, params = s2s
    with pytest.raises(ValueError, match=r"^rate: expected a probability in \[0, 1\], got"):
        model.scheduled_sampling(params, SRC, TGT, key0(), rate=rate)


@pytest.mark.parametrize("rate", ["0.5", True, np.bool_(False), jnp.ones(2) / 2, 1j], ids=repr)
def test_scheduled_sampling_rate_not_a_number(s2s, rate):
    model, params = s2s
    with pytest.raises(TypeError, match=r"^rate: expected a probability in \[0, 1\], got"):
        model.scheduled_sampling(params, SRC, TGT, key0(), rate=rate)


def test_scheduled_sampling_rate_scalars_alike(s2s):
    model, params = s2s
    ref = model.scheduled_sampling(params, SRC, TGT, key0(), rate=0.25).logits
    for rate in (np.float32(0.25), jnp.float32(0.25), np.array(0.25)):
        got = model.scheduled_sampling(params, SRC, TGT, key0(), rate=rate).logits
        np.testing.assert_array_equal(got, ref)
    # Traced: not checked, still computed (documented).
    fn = jax.jit(lambda r: model.scheduled_sampling(params, SRC, TGT, key0(), rate=r).logits)
    np.testing.assert_allclose(fn(jnp.float32(0.25)), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "temperature", [0.0, np.float32(0), jnp.array(-1.0), NAN, INF, -INF], ids=repr
)
def test_decode_sample_temperature(s2s, temperature):
    model, params = s2s
    with pytest.raises(ValueError, match=r"^temperature must be > 0 and finite, got"):
        jr.decode.sample(model.decode_step(params), model.encode(params, SRC), key0(), bos_id=1,
                         eos_id=2, max_len=3, temperature=temperature)  # fmt: skip


@pytest.mark.parametrize("top_k", [0, 2.5, True, "3"], ids=repr)
def test_decode_sample_top_k(s2s, top_k):
    model, params = s2s
    with pytest.raises(ValueError, match=r"^top_k must be an int >= 1, got"):
        jr.decode.sample(model.decode_step(params), model.encode(params, SRC), key0(), bos_id=1,
                         eos_id=2, max_len=3, top_k=top_k)  # fmt: skip


@pytest.mark.parametrize("alpha", [NAN, INF, np.float32(-1), jnp.float32(-0.5)], ids=repr)
def test_length_penalty_out_of_range(s2s, alpha):
    model, params = s2s
    with pytest.raises(ValueError, match=r"^length_penalty must be >= 0 and finite, got"):
        jr.seq2seq.generate(model, params, SRC, bos_id=1, eos_id=2, max_len=3, beam_size=2,
                            length_penalty=alpha)  # fmt: skip


@pytest.mark.parametrize("alpha", ["x", True, None], ids=repr)
def test_length_penalty_not_a_number(s2s, alpha):
    model, params = s2s
    with pytest.raises(TypeError, match=r"^length_penalty must be a real number"):
        jr.decode.beam_search(model.decode_step(params), model.encode(params, SRC), bos_id=1,
                              eos_id=2, beam_size=2, max_len=3, length_penalty=alpha)  # fmt: skip


def test_length_penalty_numpy_and_jax_scalars_alike(s2s):
    model, params = s2s
    state, step = model.encode(params, SRC), model.decode_step(params)
    kw = dict(bos_id=1, eos_id=2, beam_size=2, max_len=3)
    ref = jr.decode.beam_search(step, state, length_penalty=0.6, **kw)
    for alpha in (np.float32(0.6), jnp.float32(0.6)):
        got = jr.decode.beam_search(step, state, length_penalty=alpha, **kw)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)


@pytest.mark.parametrize("temperature", [NAN, INF, -1.0, np.float32(-0.5)], ids=repr)
def test_lm_sample_temperature(lm, temperature):
    model, params = lm
    with pytest.raises(ValueError, match=r"^temperature must be >= 0 and finite, got"):
        jr.models.sample(model, params, key0(), [1, 2], 3, temperature=temperature)


def test_lm_sample_temperature_zero_is_greedy_for_every_scalar_kind(lm):
    model, params = lm
    ref = jr.models.sample(model, params, key0(), [1, 2], 4, temperature=0.0)
    for t in (0, np.float32(0), jnp.float32(0)):
        got = jr.models.sample(model, params, key0(), [1, 2], 4, temperature=t)
        np.testing.assert_array_equal(got, ref)


# --------------------------------------------------------------------------------------------
# 3. jr.scan: params of another cell, None, Layers and factories where cells belong

I, H = 3, 4  # noqa: E741
LSTM, GRU = jr.lstm(I, H), jr.gru(I, H)
XS = jnp.ones((2, 5, I))


def run_eager(fn, *args):
    return fn(*args)


def run_jit(fn, *args):
    return jax.jit(fn)(*args)


modes = pytest.mark.parametrize("run", [run_eager, run_jit], ids=["eager", "jit"])


@modes
def test_scan_params_of_another_cell(run):
    with pytest.raises(TypeError, match=r"^params: expected LSTMParams .*lstm.*got GRUParams"):
        run(lambda p: jr.scan(LSTM, p, XS), GRU.init(key0()))


def test_scan_params_none_or_dict():
    with pytest.raises(TypeError, match=r"^params: expected LSTMParams .*got NoneType"):
        jr.scan(LSTM, None, XS)
    with pytest.raises(TypeError, match=r"^params: expected LSTMParams .*got dict"):
        jr.scan(LSTM, LSTM.init(key0())._asdict(), XS)


@modes
def test_scan_params_leaf_shape_and_dtype(run):
    params = LSTM.init(key0())
    with pytest.raises(ValueError, match=r"^params.w_hh: expected shape \(4, 16\).*got \(4, 12\)"):
        run(lambda p: jr.scan(LSTM, p, XS), params._replace(w_hh=jnp.zeros((4, 12))))
    with pytest.raises(TypeError, match=r"^params.w_ih: expected dtype float32.*got bfloat16"):
        run(lambda p: jr.scan(LSTM, p, XS), params._replace(w_ih=params.w_ih.astype(jnp.bfloat16)))
    peephole = jr.lstm(I, H, peephole=True)
    with pytest.raises(TypeError, match=r"^params: expected the structure"):
        jr.scan(peephole, params, XS)  # w_peep missing (None)


def test_custom_cell_takes_any_params():
    leaky = jr.Cell(
        init=lambda key: jnp.float32(0.9),
        apply=lambda d, h, x: (d * h + x, d * h + x),
        initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros((*batch_shape, I), dtype),
    )
    _, ys = jr.scan(leaky, {"whatever": jnp.float32(0.5)}["whatever"], XS)
    assert ys.shape == XS.shape


def test_layer_or_factory_where_a_cell_belongs():
    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn.Cell, got Layer"):
        jr.scan(jr.layer(LSTM), LSTM.init(key0()), XS)
    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn.Cell, got function; lstm is"):
        jr.scan(jr.lstm, LSTM.init(key0()), XS)
    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn.Cell, got Layer"):
        jr.layer(jr.layer(LSTM))
    with pytest.raises(TypeError, match=r"^forward: expected a jaxrnn.Cell, got Layer"):
        jr.bidirectional(jr.layer(LSTM))
    with pytest.raises(TypeError, match=r"^backward: expected a jaxrnn.Cell, got Layer"):
        jr.bidirectional(LSTM, jr.layer(LSTM))
    attn = jr.attention.additive(8, 6, 5)
    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn.Cell, got Layer"):
        jr.attention.decoder(jr.layer(jr.lstm(9, 8)), attn)


def test_cell_where_rnn_wants_a_factory():
    with pytest.raises(TypeError, match=r"^cell_fn: expected a cell factory .*got a Cell"):
        jr.rnn(jr.lstm(I, H), I, H)
    with pytest.raises(TypeError, match=r"^cell_fn: expected a cell factory .*got a Layer"):
        jr.rnn(jr.layer(LSTM), I, H)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.complex64], ids=str)
def test_scan_xs_must_be_real_float(dtype):
    with pytest.raises(TypeError, match=r"^xs: expected a floating-point array"):
        jr.scan(LSTM, LSTM.init(key0()), jnp.ones((2, 5, I), dtype))


# --------------------------------------------------------------------------------------------
# 4. Factories and layers


@pytest.mark.parametrize(
    ("bad", "error"),
    [("1", TypeError), (None, TypeError), (True, TypeError), (NAN, ValueError), (INF, ValueError)],
    ids=repr,
)
def test_lstm_forget_bias(bad, error):
    with pytest.raises(error, match=r"^forget_bias must be"):
        jr.lstm(I, H, forget_bias=bad)


def test_lstm_forget_bias_numpy_scalar():
    params = jr.lstm(I, H, forget_bias=np.float32(2)).init(key0())
    np.testing.assert_array_equal(params.b[H : 2 * H], 2.0)


def test_sizes_accept_numpy_ints_reject_bools():
    cell = jr.lstm(np.int64(I), np.int32(H))
    assert cell.input_size == I and type(cell.input_size) is int
    with pytest.raises(ValueError, match=r"^hidden_size must be a positive int, got True"):
        jr.gru(I, True)


@pytest.mark.parametrize("batch_shape", [(-1,), -3, (2, -1), (2.5,), (True,), ("2",)], ids=repr)
def test_initial_carry_batch_shape(batch_shape):
    for cell in (LSTM, GRU):
        with pytest.raises(ValueError, match=r"^batch_shape: expected a tuple of ints >= 0"):
            cell.initial_carry(batch_shape)


def test_initial_carry_numpy_batch_dims():
    assert LSTM.initial_carry((np.int64(2), 3)).h.shape == (2, 3, H)
    assert GRU.initial_carry(np.int32(4)).shape == (4, H)


@pytest.mark.parametrize("bad", ["0.1", None, [0.1]], ids=repr)
def test_dropout_must_be_a_number(bad):
    with pytest.raises(TypeError, match=r"^dropout: expected a probability in \[0, 1\), got"):
        jr.stack([jr.layer(LSTM)], dropout=bad)
    with pytest.raises(TypeError, match=r"^dropout: expected a probability in \[0, 1\), got"):
        jr.rnn(jr.lstm, I, H, dropout=bad)


def test_attention_over_an_empty_memory_is_zero():
    """T = 0: empty weights and a zero context (as for a fully masked row), finite gradients."""
    for attn in (
        jr.attention.dot(3),
        jr.attention.additive(3, 3, 4),
        jr.attention.general(3, 3, scaled=True),
    ):
        params = attn.init(key0())
        context, weights = attn.apply(params, jnp.ones((2, 3)), jnp.ones((2, 0, 3)))
        assert weights.shape == (2, 0) and context.shape == (2, 3)
        np.testing.assert_array_equal(context, 0.0)
        grad = jax.grad(
            lambda q, attn=attn, params=params: attn.apply(params, q, jnp.ones((2, 0, 3)))[0].sum()
        )(jnp.ones((2, 3)))
        np.testing.assert_array_equal(grad, 0.0)


def test_attention_mask_of_the_wrong_shape():
    attn = jr.attention.dot(3)
    with pytest.raises(ValueError, match=r"^mask: expected shape \(\*batch, T\) = \(2, 4\)"):
        attn.apply(None, jnp.ones((2, 3)), jnp.ones((2, 4, 3)), mask=np.ones((2, 5), bool))
    with pytest.raises(TypeError, match=r"^mask: expected a bool array"):
        attn.apply(None, jnp.ones((2, 3)), jnp.ones((2, 4, 3)), mask=np.ones((2, 4)))


def test_dot_attention_with_huge_inputs_has_no_nan():
    attn = jr.attention.dot(3)
    _, w = attn.apply(None, jnp.full((2, 3), 1e20), jnp.full((2, 4, 3), 1e20))
    np.testing.assert_allclose(w, 0.25)
    keys = jnp.stack([jnp.full((2, 3), 1e20), jnp.full((2, 3), -1e20)], axis=1)
    context, w = attn.apply(None, jnp.full((2, 3), 1e20), keys)
    np.testing.assert_array_equal(w, [[1.0, 0.0], [1.0, 0.0]])
    assert np.isfinite(context).all()
    mask = np.array([[True, True], [False, True]])
    _, w = attn.apply(None, jnp.full((2, 3), 1e20), keys, mask=mask)
    np.testing.assert_array_equal(w, [[1.0, 0.0], [0.0, 1.0]])


# --------------------------------------------------------------------------------------------
# Losses take lengths= as an alternative to mask=


def test_losses_take_lengths_like_mask():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, size=(3, 5)))
    lengths = np.array([5, 2, 0])
    mask = jr.losses.length_mask(lengths, 5)
    for reduction in ("none", "sum", "mean"):
        np.testing.assert_array_equal(
            jr.losses.softmax_cross_entropy(logits, labels, lengths=lengths, reduction=reduction),
            jr.losses.softmax_cross_entropy(logits, labels, mask, reduction=reduction),
        )
        binary = (labels > 1).astype(jnp.float32)
        np.testing.assert_array_equal(
            jr.losses.sigmoid_binary_cross_entropy(
                logits[..., 0], binary, lengths=lengths, reduction=reduction
            ),
            jr.losses.sigmoid_binary_cross_entropy(
                logits[..., 0], binary, mask, reduction=reduction
            ),
        )
        np.testing.assert_array_equal(
            jr.losses.reduce_sequence(logits[..., 0], lengths=lengths, reduction=reduction),
            jr.losses.reduce_sequence(logits[..., 0], mask, reduction),
        )
    # Traced lengths work too (not range-checked).
    fn = jax.jit(lambda n: jr.losses.softmax_cross_entropy(logits, labels, lengths=n))
    np.testing.assert_allclose(
        fn(lengths), jr.losses.softmax_cross_entropy(logits, labels, mask), rtol=1e-6
    )


def test_losses_lengths_errors():
    logits, labels = jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"^lengths: give the valid steps as mask= or as lengths="):
        jr.losses.softmax_cross_entropy(logits, labels, np.ones((2, 3), bool), lengths=[1, 2])
    with pytest.raises(ValueError, match=r"^lengths: every length must lie in \[0, 3\]"):
        jr.losses.softmax_cross_entropy(logits, labels, lengths=np.array([1, 4]))
    with pytest.raises(ValueError, match=r"^lengths: expected shape \(2,\)"):
        jr.losses.reduce_sequence(jnp.zeros((2, 3)), lengths=np.array([1, 2, 3]))
    with pytest.raises(TypeError, match=r"^lengths: expected an integer array"):
        jr.losses.sigmoid_binary_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                                               lengths=np.array([1.0, 2.0]))  # fmt: skip


# --------------------------------------------------------------------------------------------
# 5. Interop refuses what it cannot reproduce


def test_from_torch_refuses_a_subclass_overriding_forward():
    torch = pytest.importorskip("torch")

    class DoubledLSTM(torch.nn.LSTM):
        def forward(self, x, hx=None):
            out, state = super().forward(x, hx)
            return 2 * out, state

    class RenamedLSTM(torch.nn.LSTM):  # same function: converts
        pass

    with pytest.raises(ValueError, match=r"^module: .*DoubledLSTM overrides forward\(\)"):
        jr.interop.from_torch(DoubledLSTM(3, 4))
    _, params = jr.interop.from_torch(RenamedLSTM(3, 4))
    assert params[0].w_hh.shape == (4, 16)


def test_from_torch_refuses_float64_without_x64():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"^module: its parameters are float64, but jax_enable"):
        jr.interop.from_torch(torch.nn.GRU(3, 4).double())


def test_from_torch_names_a_parameter_of_the_wrong_shape():
    torch = pytest.importorskip("torch")
    module = torch.nn.GRU(3, 4, num_layers=2)
    module.weight_hh_l1 = torch.nn.Parameter(torch.zeros(12, 5))
    with pytest.raises(
        ValueError, match=r"^module.weight_hh_l1: expected shape \(12, 4\), got \(12, 5\)"
    ):
        jr.interop.from_torch(module)


def test_to_torch_and_state_dict_name_a_parameter_of_the_wrong_shape():
    net = jr.rnn(jr.lstm, 3, 4)
    params = net.init(key0())
    bad = (params[0]._replace(b=jnp.zeros((15,))),)
    with pytest.raises(ValueError, match=r"^params\[0\].b: expected shape \(16,\), got \(15,\)"):
        jr.interop.torch_state_dict(net, bad)


def test_from_torch_without_torch_says_how_to_install():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import jaxrnn as jr\n"
        "for fn in (jr.interop.from_torch, lambda m: jr.interop.to_torch(jr.gru(2, 3), m)):\n"
        "    try:\n"
        "        fn(None)\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert len(out) == 2
    assert all('pip install "jaxrnn[torch]"' in line for line in out), out


def linen_lstm_variables():
    nn = pytest.importorskip("flax.linen")
    cell = nn.LSTMCell(features=4)
    variables = cell.init(key0(), cell.initialize_carry(key0(), (2, 3)), jnp.ones((2, 3)))
    return jax.tree.map(lambda a: a, variables)  # a mutable copy


@pytest.mark.parametrize(
    ("name", "leaf", "shape"),
    [("hf", "kernel", (5, 4)), ("if", "kernel", (3, 5)), ("ho", "bias", (3,))],
)
def test_from_flax_linen_inconsistent_shapes(name, leaf, shape):
    variables = linen_lstm_variables()
    expected = variables["params"][name][leaf].shape
    variables["params"][name][leaf] = jnp.zeros(shape)
    pattern = (
        rf"^variables\['params'\]\['{name}'\]\['{leaf}'\]: expected shape "
        rf"{re.escape(str(expected))}.*got {re.escape(str(shape))}"
    )
    with pytest.raises(ValueError, match=pattern):
        jr.interop.from_flax_linen(variables, "lstm")


def test_from_flax_linen_gru_and_simple_inconsistent_shapes():
    nn = pytest.importorskip("flax.linen")
    gru = nn.GRUCell(features=4)
    variables = gru.init(key0(), gru.initialize_carry(key0(), (2, 3)), jnp.ones((2, 3)))
    variables = jax.tree.map(lambda a: a, variables)
    variables["params"]["hn"]["bias"] = jnp.zeros((5,))
    with pytest.raises(ValueError, match=r"^variables\['params'\]\['hn'\]\['bias'\]"):
        jr.interop.from_flax_linen(variables, "gru")
    simple = nn.SimpleCell(features=4)
    variables = simple.init(key0(), simple.initialize_carry(key0(), (2, 3)), jnp.ones((2, 3)))
    variables = jax.tree.map(lambda a: a, variables)
    variables["params"]["h"]["kernel"] = jnp.zeros((4, 5))
    with pytest.raises(ValueError, match=r"^variables\['params'\]\['h'\]\['kernel'\]: .*square"):
        jr.interop.from_flax_linen(variables, "simple")


@pytest.mark.parametrize("bad", ["x", float("nan"), 1.0, -0.1, True])
def test_char_lm_dropout_is_checked(bad):
    with pytest.raises((TypeError, ValueError), match="dropout: expected a probability"):
        jr.models.char_lm(10, 8, dropout=bad)
