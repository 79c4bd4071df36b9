"""Issue 24, part A: the newer parts of the library held to the old standard of input checks.

Each root cause found by the issue's attempts has its tests here: params of another kind or
dtype given to any cell (through ``apply`` too, not only :func:`jaxrnn.scan`), PRNG keys that
are not one key, parameter sizes no machine can hold, values only known under ``jit``
(``lengths`` out of ``[0, T]``, NaN logits: one documented meaning, and an error through
``jax.experimental.checkify`` for who asks), and what was still open from the first round.
Every error is a ``ValueError``/``TypeError`` whose message starts with the argument's name.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxrnn as jr
from jaxrnn import _checks
from tests.helpers import numpy_init

I, H, B, T = 3, 4, 2, 5  # noqa: E741

# One small cell of every factory of jaxrnn.cells (the fuzz test enumerates __all__ too).
CELLS = {
    "simple_rnn": lambda: jr.simple_rnn(I, H),
    "jordan_rnn": lambda: jr.jordan_rnn(I, H, 2),
    "gru": lambda: jr.gru(I, H),
    "lstm": lambda: jr.lstm(I, H),
    "mgu": lambda: jr.mgu(I, H),
    "layer_norm_lstm": lambda: jr.layer_norm_lstm(I, H),
    "layer_norm_gru": lambda: jr.layer_norm_gru(I, H),
    "conv_lstm": lambda: jr.conv_lstm(I, H, (3,)),
    "conv_gru": lambda: jr.conv_gru(I, H, (3,)),
    "slstm": lambda: jr.slstm(I, H, num_heads=2),
    "min_gru": lambda: jr.min_gru(I, H),
    "min_lstm": lambda: jr.min_lstm(I, H),
    "lru": lambda: jr.lru(I, H),
    "rg_lru": lambda: jr.rg_lru(I, H),
}


def key0():
    return jax.random.key(0)


def _x(cell, batch=(B,)):
    return jnp.ones((*batch, *(5,) * cell.spatial_dims, I), jnp.float32)


def test_every_factory_is_covered():
    factories = {
        name
        for name in jr.cells.__all__
        if name.islower() and name not in ("learnable_carry", "ring_init")
    }
    assert factories == set(CELLS)


# --------------------------------------------------------------------------------------------
# 1. Params of the wrong kind or dtype: refused by apply as by scan, for every cell


@pytest.mark.parametrize("name", sorted(CELLS))
def test_apply_refuses_params_of_another_cell_and_dtype(name):
    cell = CELLS[name]()
    params = numpy_init(cell.init, key0())
    carry = cell.initial_carry((B, *(5,) * cell.spatial_dims))
    x = _x(cell, (B,))
    cell.apply(params, carry, x)  # the cell's own params work
    other = numpy_init(jr.lstm(I, H).init if name != "lstm" else jr.gru(I, H).init, key0())
    with pytest.raises(TypeError, match=rf"^params: expected {type(params).__name__} .*{name}"):
        cell.apply(other, carry, x)
    half = jax.tree.map(lambda a: a.astype(jnp.float16), params)
    with pytest.raises(TypeError, match=r"^params\.\w+: expected dtype float32\b.*got float16"):
        cell.apply(half, carry, x)
    with pytest.raises(TypeError, match=r"^params\.\w+: expected dtype float32\b.*got float16"):
        jax.jit(cell.apply)(half, carry, x)  # at trace time


def test_conv_lstm_refuses_lstm_params():
    cell = jr.conv_lstm(I, H, (3,))
    lstm_params = numpy_init(jr.lstm(I, H).init, key0())
    carry = cell.initial_carry((B, 5))
    with pytest.raises(TypeError, match=r"^params: expected ConvLSTMParams .*got LSTMParams"):
        cell.apply(lstm_params, carry, jnp.ones((B, 5, I)))
    with pytest.raises(TypeError, match=r"^params: expected ConvLSTMParams .*got LSTMParams"):
        jr.scan(cell, lstm_params, jnp.ones((B, T, 5, I)))


def test_learnable_carry_with_the_base_cells_params():
    base = jr.gru(I, H)
    cell = jr.learnable_carry(base)
    base_params = numpy_init(base.init, key0())
    wanted = r"^params: expected LearnableCarryParams .*learnable_carry cell.*got GRUParams"
    with pytest.raises(TypeError, match=wanted):
        jr.scan(cell, base_params, jnp.ones((B, T, I)))
    with pytest.raises(TypeError, match=wanted):
        cell.apply(base_params, cell.initial_carry((B,)), jnp.ones((B, I)))


@pytest.mark.parametrize("init", [3, "zeros", None])
def test_learnable_carry_init_must_be_callable(init):
    with pytest.raises(TypeError, match=r"^init must be callable"):
        jr.learnable_carry(jr.gru(I, H), init=init)


# --------------------------------------------------------------------------------------------
# 2. PRNG keys: one key where one key is expected

BAD_KEYS = {
    "batch": lambda: jax.random.split(key0(), 3),
    "raw batch": lambda: jax.random.split(jax.random.PRNGKey(0), 3),
    "int": lambda: 3,
    "float array": lambda: jnp.zeros((2,), jnp.float32),
    "string": lambda: "key",
}
KEY_ERROR = r"^(dropout_)?key: expected one PRNG key"


def _key_takers():
    """``name -> (call(key), key optional)`` for every public function taking one key."""
    cell = jr.lstm(I, H)
    table = jnp.log(jnp.full((3, 3), 1 / 3))
    step = lambda carry, tokens: (carry, table[tokens])
    lay = jr.layer(jr.gru(I, H))
    stack = jr.stack([lay, jr.layer(jr.gru(H, H))], dropout=0.1)
    bi = jr.bidirectional(jr.gru(I, H), jr.gru(I, H))
    xs = jnp.ones((B, T, I))
    s2s = jr.seq2seq.encoder_decoder(jr.rnn(jr.gru, 4, 8), jr.gru(4, 8), src_vocab=5, tgt_vocab=5)
    s2s_params = s2s.init(key0())
    src, tgt = jnp.ones((B, T), jnp.int32), jnp.ones((B, 3), jnp.int32)
    return {
        "variational_dropout": (lambda k: jr.variational_dropout(cell, k, rate=0.2), True),
        "zoneout": (lambda k: jr.zoneout(cell, k, rate=0.2), True),
        "weight_drop": (lambda k: jr.weight_drop(cell, k, rate=0.2), True),
        "regularize": (lambda k: jr.regularize(cell, k, input_dropout=0.2), True),
        "embedding_dropout": (lambda k: jr.embedding_dropout(k, jnp.ones((5, 2)), 0.5), True),
        "decode.sample": (
            lambda k: jr.decode.sample(step, jnp.zeros((2, 1)), k, bos_id=0, eos_id=1, max_len=2),
            False,
        ),
        "cell.init": (cell.init, False),
        "learnable_carry.init": (jr.learnable_carry(cell).init, False),
        "layer.apply": (lambda k: lay.apply(lay.init(key0()), xs, key=k), True),
        "stack.init": (stack.init, False),
        "stack.apply": (lambda k: stack.apply(stack.init(key0()), xs, key=k), True),
        "bidirectional.init": (bi.init, False),
        "bidirectional.apply": (lambda k: bi.apply(bi.init(key0()), xs, key=k), True),
        "seq2seq.init": (s2s.init, False),
        "seq2seq.apply(dropout_key)": (
            lambda k: s2s.apply(s2s_params, src, tgt, dropout_key=k),
            True,
        ),
        "seq2seq.scheduled_sampling": (
            lambda k: s2s.scheduled_sampling(s2s_params, src, tgt, k, rate=0.5),
            False,
        ),
        "data.adding_problem": (lambda k: jr.data.adding_problem(k, 2, 4), False),
    }


KEY_TAKERS = _key_takers()


@pytest.mark.parametrize("bad", sorted(BAD_KEYS))
@pytest.mark.parametrize("name", sorted(KEY_TAKERS))
def test_one_key_where_one_key_is_expected(name, bad):
    call, _ = KEY_TAKERS[name]
    error = ValueError if "batch" in bad else TypeError
    with pytest.raises(error, match=KEY_ERROR):
        call(BAD_KEYS[bad]())


@pytest.mark.parametrize("name", sorted(KEY_TAKERS))
def test_none_key_only_where_optional_and_legacy_keys_work(name):
    call, optional = KEY_TAKERS[name]
    if optional:
        call(None)
    else:
        with pytest.raises(TypeError, match=KEY_ERROR + r".*got None"):
            call(None)
    call(jax.random.PRNGKey(1))  # a raw uint32 key is one key too


def test_length_mask_max_len():
    with pytest.raises(ValueError, match=r"^max_len must be an int >= 0, got 2\.5"):
        jr.attention.length_mask(jnp.array([1, 2]), 2.5)
    mask = jr.attention.length_mask(jnp.array([-1, 9]), 3)  # clipped, as scan's traced lengths
    assert mask.tolist() == [[False] * 3, [True] * 3]


def test_key_checked_under_jit():
    cell = jr.gru(I, H)
    with pytest.raises(ValueError, match=KEY_ERROR + r".*batch of keys of shape \(2,\)"):
        jax.jit(lambda k: jr.variational_dropout(cell, k, rate=0.2).init(key0()))(
            jax.random.split(key0())
        )


def test_embedding_dropout_refuses_integers():
    with pytest.raises(TypeError, match=r"^embedding: expected a floating-point .*got dtype int32"):
        jr.embedding_dropout(key0(), jnp.ones((4, 3), jnp.int32), 0.5)


# --------------------------------------------------------------------------------------------
# 3. Sizes a machine cannot hold: refused by the factory, with the bytes needed

HUGE = {
    "simple_rnn": lambda n: jr.simple_rnn(I, n),
    "jordan_rnn": lambda n: jr.jordan_rnn(I, n, 2),
    "gru": lambda n: jr.gru(I, n),
    "lstm": lambda n: jr.lstm(I, n),
    "mgu": lambda n: jr.mgu(I, n),
    "layer_norm_lstm": lambda n: jr.layer_norm_lstm(I, n),
    "layer_norm_gru": lambda n: jr.layer_norm_gru(I, n),
    "conv_lstm": lambda n: jr.conv_lstm(I, n, (3,)),
    "conv_gru": lambda n: jr.conv_gru(I, n, (3,)),
    "slstm": lambda n: jr.slstm(I, n, num_heads=1),
    "min_gru": lambda n: jr.min_gru(I, n),
    "min_lstm": lambda n: jr.min_lstm(I, n),
    "lru": lambda n: jr.lru(I, n),
    "rg_lru": lambda n: jr.rg_lru(I, n),
}


def test_huge_covers_every_factory():
    assert set(HUGE) == set(CELLS)


@pytest.mark.parametrize("size", [10**12])
@pytest.mark.parametrize("name", sorted(HUGE))
def test_factories_refuse_params_larger_than_memory(name, size):
    """Checked abstractly (nothing is allocated), so safe in the test process."""
    if _checks.PARAM_BYTES_LIMIT is None:
        pytest.skip("the OS does not report its physical memory")
    wanted = rf"^{name}\(.*hidden_size={size}.*\): its params (need \d+ bytes|are too large)"
    with pytest.raises(ValueError, match=wanted):
        HUGE[name](size)


def test_lru_of_a_trillion_states():
    if _checks.PARAM_BYTES_LIMIT is None:
        pytest.skip("the OS does not report its physical memory")
    with pytest.raises(ValueError, match=r"need 60000000000012 bytes \(60\.0 TB\), more than"):
        jr.lru(3, 10**12)


def test_the_limit_is_the_named_constant(monkeypatch):
    needed = sum(
        leaf.size * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(jax.eval_shape(jr.lstm(I, H).init, key0()))
    )
    monkeypatch.setattr(_checks, "PARAM_BYTES_LIMIT", needed - 1)
    with pytest.raises(ValueError, match=rf"^lstm\(input_size=3, hidden_size=4.*need {needed} "):
        jr.lstm(I, H)
    monkeypatch.setattr(_checks, "PARAM_BYTES_LIMIT", needed)
    jr.lstm(I, H)


# --------------------------------------------------------------------------------------------
# 4. Values only known under jit: lengths out of [0, T] clip (every method, every function
# that takes lengths); checkify reports them; NaN logits end a sequence with NAN_TOKEN

BAD_LENGTHS, CLIPPED = np.array([-3, 9]), np.array([0, T])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["sequential", "associative", "newton"])
def test_traced_lengths_clip_under_every_method(method, reverse):
    cell = jr.min_gru(I, H)
    params = numpy_init(cell.init, key0())
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((B, T, I)), jnp.float32)
    run = lambda lengths: jr.scan(cell, params, xs, lengths=lengths, method=method, reverse=reverse)
    want = jax.jit(run)(jnp.asarray(CLIPPED))
    got = jax.jit(run)(jnp.asarray(BAD_LENGTHS))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^lengths: every length must lie in \[0, 5\]"):
        run(BAD_LENGTHS)  # concrete: refused


def test_checkify_reports_traced_lengths():
    cell = jr.gru(I, H)
    params = numpy_init(cell.init, key0())
    f = jax.jit(lambda lengths: jr.scan(cell, params, jnp.ones((B, T, I)), lengths=lengths)[1])
    checked = checkify.checkify(f, errors=checkify.user_checks)
    err, _ = checked(jnp.asarray(BAD_LENGTHS))
    assert re.match(
        r"lengths: every length must lie in \[0, 5\].*got values in \[-3, 9\]", err.get()
    )
    err, _ = checked(jnp.asarray(CLIPPED))
    assert err.get() is None


def test_losses_clip_traced_lengths_and_checkify_reports_them():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, 7)), jnp.float32)
    labels = jnp.zeros((B, T), jnp.int32)
    for loss in (
        lambda n: jr.losses.softmax_cross_entropy(logits, labels, lengths=n),
        lambda n: jr.losses.reduce_sequence(logits[..., 0], lengths=n, reduction="mean"),
    ):
        np.testing.assert_array_equal(
            jax.jit(loss)(jnp.asarray(BAD_LENGTHS)), jax.jit(loss)(jnp.asarray(CLIPPED))
        )
        err, _ = checkify.checkify(jax.jit(loss), errors=checkify.user_checks)(
            jnp.asarray(BAD_LENGTHS)
        )
        assert err.get().startswith("lengths: every length must lie in [0, 5]")


def test_seq2seq_clips_traced_lengths():
    model = jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 4, 8),
        jr.gru(4 + 8, 8),
        src_vocab=6,
        tgt_vocab=6,
        attention=jr.attention.dot(8),
    )
    params = model.init(key0())
    src, tgt = jnp.ones((B, T), jnp.int32), jnp.ones((B, 4), jnp.int32)
    run = jax.jit(lambda s, t: model.apply(params, src, tgt, src_lengths=s, tgt_lengths=t))
    got = run(jnp.array([-1, 99]), jnp.array([-2, 50]))
    want = run(jnp.array([0, T]), jnp.array([0, 4]))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


TABLE = jnp.log(jnp.array([[0.1, 0.6, 0.3], [0.7, 0.1, 0.2], [0.2, 0.2, 0.6]]))


def _nan_step(carry, tokens):
    """p(next | last); after token 2 the logits are NaN."""
    logits = TABLE[tokens]
    return carry, jnp.where((tokens == 2)[:, None], jnp.nan, logits)


def test_greedy_and_sample_end_a_sequence_with_nan_logits():
    out = jr.decode.greedy(_nan_step, jnp.zeros((1, 1)), bos_id=1, eos_id=0, max_len=4, pad_id=1)
    # from 1 the argmax is 0 = EOS: no NaN met
    assert out.tolist() == [[0, 1, 1, 1]]
    out = jr.decode.greedy(_nan_step, jnp.zeros((2, 1)), bos_id=2, eos_id=0, max_len=4, pad_id=1)
    assert out.tolist() == [[jr.decode.NAN_TOKEN, 1, 1, 1]] * 2
    out = jr.decode.sample(
        _nan_step, jnp.zeros((64, 1)), key0(), bos_id=1, eos_id=0, max_len=5, pad_id=1
    )
    rows = np.asarray(out)
    for row in rows:  # a 2 is always followed by NAN_TOKEN, then padding
        where = np.flatnonzero(row == 2)
        if where.size:
            assert row[where[0] + 1] == jr.decode.NAN_TOKEN and (row[where[0] + 2 :] == 1).all()
    assert (rows == jr.decode.NAN_TOKEN).any() and not (rows[rows >= 0] > 2).any()


def test_beam_search_ranks_a_nan_hypothesis_last():
    tokens, scores = jr.decode.beam_search(
        _nan_step, jnp.zeros((1, 1)), bos_id=1, eos_id=0, beam_size=3, max_len=4
    )
    assert np.isfinite(scores[0, :2]).all() and np.isnan(scores[0, 2])
    assert tokens[0, 2].tolist() == [1, 2, jr.decode.NAN_TOKEN, 0]
    assert (tokens[0, :2] >= 0).all()


@pytest.mark.parametrize("decoder", ["greedy", "beam_search"])
def test_checkify_reports_nan_logits(decoder):
    def run(carry):
        if decoder == "greedy":
            return jr.decode.greedy(_nan_step, carry, bos_id=2, eos_id=0, max_len=3)
        return jr.decode.beam_search(_nan_step, carry, bos_id=1, eos_id=0, beam_size=3, max_len=3)

    err, _ = checkify.checkify(jax.jit(run), errors=checkify.user_checks)(jnp.zeros((2, 1)))
    assert re.match(
        r"step: the logits of \d+ sequence\(s\) hold NaN at decoding step \d", err.get()
    )


# --------------------------------------------------------------------------------------------
# 5. Still open from the first round


def test_masked_softmax_with_inf_scores_is_defined():
    ms = jr.attention.masked_softmax
    inf = jnp.inf
    np.testing.assert_array_equal(ms(jnp.array([1.0, -inf, 0.0]))[1], 0.0)
    np.testing.assert_array_equal(ms(jnp.array([-inf, -inf])), [0.5, 0.5])
    np.testing.assert_array_equal(ms(jnp.array([-inf, -inf]), jnp.array([False, False])), 0.0)
    for scores in ([1.0, -inf], [-inf, -inf], [inf, -inf], [inf, inf]):
        grad = jax.grad(lambda s: (ms(s) * jnp.arange(2.0)).sum())(jnp.array(scores))
        assert np.isfinite(grad).all()
    attn = jr.attention.dot(3)
    keys = jnp.stack([jnp.ones((B, 3)), jnp.full((B, 3), -1e30)], axis=1)
    context, weights = attn.apply(None, jnp.full((B, 3), 1e30), keys, jnp.ones((B, 2, 3)))
    np.testing.assert_array_equal(weights, [[1.0, 0.0]] * B)
    assert np.isfinite(context).all()


@pytest.mark.parametrize("shape", [(2, 4), (3, 2), (4,)])
def test_masked_softmax_mask_of_the_wrong_shape(shape):
    with pytest.raises(
        ValueError,
        match=rf"^mask: expected the shape of scores \(2, 3\).*got {re.escape(str(shape))}",
    ):
        jr.attention.masked_softmax(jnp.ones((2, 3)), jnp.ones(shape, bool))
    with pytest.raises(TypeError, match=r"^mask: expected a bool array"):
        jr.attention.masked_softmax(jnp.ones((2, 3)), jnp.ones((2, 3)))
    jr.attention.masked_softmax(jnp.ones((2, 3)), jnp.ones((3,), bool))  # broadcasts: fine


def test_stack_refuses_an_array_carry():
    net = jr.stack([jr.layer(jr.gru(I, H)), jr.layer(jr.gru(H, H))])
    params = net.init(key0())
    with pytest.raises(
        TypeError, match=r"^carry: expected a tuple of 2 layer entries.*got ArrayImpl"
    ):
        net.apply(params, jnp.ones((B, T, I)), jnp.zeros((2, B, H)))
    with pytest.raises(TypeError, match=r"^params: expected a tuple of 2 layer entries"):
        net.apply(jnp.zeros((2, 3)), jnp.ones((B, T, I)))


@pytest.mark.parametrize(
    "carry, error",
    [
        (3, TypeError),
        ("h", TypeError),
        (np.zeros((2, 4), np.int32), TypeError),
        (np.float32(1.0), TypeError),
        ((np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)), ValueError),
        ((np.zeros(4, np.float32), 1.0), TypeError),
    ],
)
def test_carry_from_flax_refuses_what_no_cell_carries(carry, error):
    with pytest.raises(error, match=r"^carry: expected"):
        jr.interop.carry_from_flax(carry)


def test_carry_from_flax_still_converts():
    c, h = jnp.zeros((2, 4)), jnp.ones((2, 4))
    assert jr.interop.carry_from_flax((c, h)).h is h
    assert jr.interop.carry_from_flax(h) is h


def test_linen_modules_raise_what_the_pure_functions_raise():
    import jaxrnn.flax as jrf

    xs = jnp.ones((B, T, I))
    model = jrf.RNN(jr.gru(I, H))
    variables = model.init(key0(), xs)
    wrong = {"params": {"cell": numpy_init(jr.lstm(I, H).init, key0())}}
    with pytest.raises(TypeError, match=r"^params: expected GRUParams .*got LSTMParams"):
        model.apply(wrong, xs)
    with pytest.raises(TypeError, match=r"^params: expected GRUParams .*got LSTMParams"):
        jr.scan(model.cell, wrong["params"]["cell"], xs)
    half = {
        "params": {
            "cell": jax.tree.map(lambda a: a.astype(jnp.float16), variables["params"]["cell"])
        }
    }
    with pytest.raises(TypeError, match=r"^params\.w_ih: expected dtype float32"):
        model.apply(half, xs)
    with pytest.raises(TypeError, match=r"^layer: expected a jaxrnn\.Layer .*got Cell"):
        jrf.Layer(jr.gru(I, H)).init(key0(), xs, deterministic=True)
    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn\.Cell, got Layer"):
        jrf.RNN(jr.layer(jr.gru(I, H))).init(key0(), xs)
    layer = jrf.Layer(jr.rnn(jr.gru, I, H))
    with pytest.raises(TypeError, match=r"^params: expected GRUParams .*got LSTMParams"):
        layer.apply({"params": {"layer": (wrong["params"]["cell"],)}}, xs, deterministic=True)


def test_nnx_modules_raise_what_the_pure_functions_raise():
    from flax import nnx

    import jaxrnn.flax as jrf

    with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn\.Cell, got Layer"):
        jrf.nnx.RNN(jr.layer(jr.gru(I, H)), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"^layer: expected a jaxrnn\.Layer .*got Cell"):
        jrf.nnx.Layer(jr.gru(I, H), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"^rngs: expected nnx\.Rngs"):
        jrf.nnx.RNN(jr.gru(I, H), rngs=3)
    with pytest.raises(ValueError, match=r"^unroll must be a bool or a positive int, got 0"):
        jrf.nnx.RNN(jr.gru(I, H), unroll=0, rngs=nnx.Rngs(0))(jnp.ones((B, T, I)))


@pytest.mark.parametrize(
    "kwargs, error, wanted",
    [
        ({"vector_size": 0}, ValueError, r"^vector_size must be a positive int, got 0"),
        ({"vector_size": 2.5}, ValueError, r"^vector_size must be a positive int, got 2\.5"),
        ({"output_size": 0}, ValueError, r"^output_size must be a positive int"),
    ],
)
def test_one_to_many_sizes(kwargs, error, wanted):
    args = {"vector_size": 2, "output_size": 1, **kwargs}
    with pytest.raises(error, match=wanted):
        jr.recipes.one_to_many(jr.gru(3, 8), **args)


@pytest.mark.parametrize("length", [-1, 2.5, "3", None, np.float32(2)])
def test_one_to_many_generate_length(length):
    model = jr.recipes.one_to_many(jr.gru(2 + 1, 8), vector_size=2, output_size=1)
    params = model.init(key0())
    with pytest.raises(ValueError, match=r"^length must be an int >= 0"):
        model.generate(params, jnp.ones((4, 2)), length=length)
    assert model.generate(params, jnp.ones((4, 2)), length=0).shape == (4, 0, 1)


@pytest.mark.parametrize(
    "unroll, error",
    [(0, ValueError), (-2, ValueError), (2.5, TypeError), ("1", TypeError), (None, TypeError)],
)
def test_unroll_must_be_a_positive_int_or_bool(unroll, error):
    cell = jr.gru(I, H)
    params = numpy_init(cell.init, key0())
    wanted = r"^unroll must be a bool or a positive int"
    with pytest.raises(error, match=wanted):
        jr.scan(cell, params, jnp.ones((B, T, I)), unroll=unroll)
    with pytest.raises(error, match=wanted):
        jr.layer(cell, unroll=unroll)
    with pytest.raises(error, match=wanted):
        jr.rnn(jr.gru, I, H, unroll=unroll)
    with pytest.raises(error, match=wanted):
        jr.bidirectional(cell, cell, unroll=unroll)
    for ok in (True, False, 1, 3, np.int32(2)):
        jr.scan(cell, params, jnp.ones((B, T, I)), unroll=ok)


def test_layer_flags_must_be_bools_and_stack_takes_layers():
    with pytest.raises(TypeError, match=r"^bidirectional must be a bool \(True or False\)"):
        jr.rnn(jr.gru, I, H, bidirectional="no")
    with pytest.raises(TypeError, match=r"^reverse must be a bool \(True or False\)"):
        jr.layer(jr.gru(I, H), reverse="no")
    with pytest.raises(TypeError, match=r"^layers\[1\]: expected a jaxrnn\.Layer, got Cell"):
        jr.stack([jr.layer(jr.gru(I, H)), jr.gru(H, H)])
    with pytest.raises(TypeError, match=r"^peephole must be a bool \(True or False\), got 'no'"):
        jr.lstm(I, H, peephole="no")
    with pytest.raises(ValueError, match=r"^forget_bias must be a finite number, got nan"):
        jr.conv_lstm(I, H, (3,), forget_bias=float("nan"))
    with pytest.raises(TypeError, match=r"^forget_bias must be a real number"):
        jr.mgu(I, H, forget_bias=None)
    with pytest.raises(TypeError, match=r"^activation must be callable"):
        jr.simple_rnn(I, H, activation="tanh")
    with pytest.raises(TypeError, match=r"^dtype: expected a floating-point dtype for the carry"):
        jr.gru(I, H).initial_carry((B,), dtype="x")


@pytest.mark.parametrize("name", ["reverse", "time_major", "hoist"])
def test_scan_flags_must_be_bools(name):
    cell = jr.gru(I, H)
    params = numpy_init(cell.init, key0())
    with pytest.raises(TypeError, match=rf"^{name} must be a bool \(True or False\), got 'no'"):
        jr.scan(cell, params, jnp.ones((B, T, I)), **{name: "no"})


def test_to_equinox_use_bias_must_be_a_bool():
    pytest.importorskip("equinox")
    cell = jr.lstm(I, H)
    with pytest.raises(TypeError, match=r"^use_bias must be a bool \(True or False\), got 'no'"):
        jr.interop.to_equinox(cell, cell.init(key0()), use_bias="no")


# --------------------------------------------------------------------------------------------
# 6. Newton's method: cells with a complex carry are refused up front, by name


def test_newton_refuses_a_complex_carry_up_front():
    cell = jr.lru(I, H)
    params = numpy_init(cell.init, key0())
    wanted = (
        r'^method="newton": Newton\'s method needs a real floating-point carry .*this lru '
        r"cell's carry has dtype complex64: use method=\"associative\" or \"sequential\""
    )
    with pytest.raises(TypeError, match=wanted):
        jr.scan(cell, params, jnp.ones((B, T, I)), method="newton")
    with pytest.raises(TypeError, match=wanted):
        jr.scan(cell, params, jnp.ones((B, T, I)), method=jr.newton.Newton(max_iters=3))


@pytest.mark.parametrize("name", ["lstm", "conv_gru"])  # a pytree carry, a spatial one
def test_newton_runs_real_carries(name):
    cell = CELLS[name]()
    params = numpy_init(cell.init, key0())
    xs = jnp.ones((B, 3, *(5,) * cell.spatial_dims, I)) * 0.1
    _, ys = jr.scan(cell, params, xs, method="newton")
    _, want = jr.scan(cell, params, xs)
    np.testing.assert_allclose(ys, want, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The last gaps: the attention factories' and copy_memory's keys, sample's sizes, signals while
# the command-line tool starts.


@pytest.mark.parametrize(
    "attention", [jr.attention.additive(3, 4, 5), jr.attention.dot(4), jr.attention.general(3, 4)]
)
@pytest.mark.parametrize("bad", [None, 5, "key"])
def test_attention_init_checks_its_key(attention, bad):
    if bad is None and isinstance(attention.init(jax.random.key(0)), jr.attention.DotParams):
        attention.init(None)  # dot attention has no params: init(None) is its documented call
        return
    with pytest.raises(TypeError, match=r"^key: "):
        attention.init(bad)
    attention.init(jax.random.key(0))


def test_copy_memory_checks_its_key():
    with pytest.raises(TypeError, match=r"^key: "):
        jr.data.copy_memory(5, 2, 3)
    with pytest.raises(ValueError, match=r"^key: expected one PRNG key"):
        jr.data.copy_memory(jax.random.split(jax.random.key(0), 2), 2, 3)


def test_sample_refuses_sizes_no_machine_holds():
    model = jr.models.char_lm(5, hidden_size=4)
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"the samples need \d+ bytes .*more than this machine"):
        jr.models.sample(model, params, jax.random.key(1), [0], 2**40, num_samples=2**20)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_tool_starts_is_one_line(signum, tmp_path):
    """Ctrl-C or SIGTERM at any point of `python -m jaxrnn` (here: while it imports JAX, or
    just after) ends it with one line and status 130."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxrnn", "demo", "--checkpoint-dir", str(tmp_path / "c")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    time.sleep(0.4)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-2000:]
    assert len(lines) == 1 and "interrupted" in lines[0], err[-2000:]
