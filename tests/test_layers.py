"""Tests of the layers (``layer``, ``bidirectional``, ``stack``, ``rnn``) against hand-built
compositions of :func:`jaxrnn.scan`.

:func:`jaxrnn.scan` itself is checked against a Python loop of ``cell.apply`` in test_scan.py;
here the references call it on explicit pieces: the backward direction of a bidirectional layer
is a *forward* scan over each unpadded sequence flipped in time, a stack is the layers applied
one after another by hand, and dropout is observed through an identity layer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn as jr

# Input, hidden, LSTM projection sizes; time steps; batch.
I, H, P, T, B = 3, 4, 2, 5, 3  # noqa: E741
LENGTHS = np.array([T, 0, 3], np.int32)  # full, empty and partial sequences
TOL = dict(rtol=2e-5, atol=2e-5)


def random_like(shapes, seed, scale=0.5):
    """Random normal float32 arrays with the structure and shapes of ``shapes``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes
    )


def random_params(init, seed):
    """Random params of the layout ``init`` produces (``init`` is only traced, not run)."""
    return random_like(jax.eval_shape(init, jax.random.key(0)), seed)


def random_carry(initial_carry, batch_shape, seed):
    return random_like(jax.eval_shape(lambda: initial_carry(batch_shape)), seed)


def random_xs(seed, shape=(B, T, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.cache
def jitted_scan(cell):
    return jax.jit(lambda params, xs, carry: jr.scan(cell, params, xs, carry))


def per_sequence(cell, params, xs, carry, lengths, backward=False):
    """Run ``cell`` forward over each unpadded sequence alone (flipped in time if ``backward``).

    Returns the stacked final carries and the outputs, flipped back and zero-padded to ``T``.
    """
    carries, outputs = [], []
    for b, length in enumerate(lengths):
        seq = xs[b, :length]
        c0 = jax.tree.map(lambda leaf, b=b: leaf[b], carry)
        c, ys = jitted_scan(cell)(params, seq[::-1] if backward else seq, c0)
        ys = np.asarray(ys)[::-1] if backward else np.asarray(ys)
        pad = np.zeros((xs.shape[1] - length, ys.shape[-1]), np.float32)
        carries.append(c)
        outputs.append(np.concatenate([ys, pad]))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *carries), np.stack(outputs)


def identity_layer(size):
    """A layer whose outputs are its inputs; it makes dropout between layers observable."""
    return jr.Layer(
        init=lambda key: (),
        apply=lambda params, xs, carry=None, *, lengths=None, key=None: ((), xs),
        initial_carry=lambda batch_shape=(), dtype=jnp.float32: (),
        input_size=size,
        output_size=size,
    )


# --------------------------------------------------------------------------------------------
# layer


@pytest.mark.parametrize("reverse", [False, True])
def test_layer_is_scan(reverse):
    cell = jr.gru(I, H, reset_after=True)
    lay = jr.layer(cell, reverse=reverse, time_major=True)
    params, xs = random_params(lay.init, 0), np.moveaxis(random_xs(1), 1, 0)
    carry = random_carry(lay.initial_carry, (B,), 2)
    got = lay.apply(params, xs, carry, lengths=LENGTHS)
    expected = jr.scan(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse, time_major=True)
    assert (lay.input_size, lay.output_size) == (I, H)
    assert_trees_close(got, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# bidirectional

GRU = jr.gru(I, H)
LSTM_PROJ = jr.lstm(I, H, proj_size=P)
SIMPLE_2 = jr.simple_rnn(I, 2)
BIDIRECTIONAL_CASES = {
    # id: (forward cell, backward cell or None for "same kind", pass a carry?)
    "gru-default-backward": (GRU, None, False),
    "lstm_proj-simple_rnn": (LSTM_PROJ, SIMPLE_2, True),
}


@pytest.mark.parametrize("case", list(BIDIRECTIONAL_CASES))
def test_bidirectional_matches_per_sequence_scans(case):
    fwd, bwd, given_carry = BIDIRECTIONAL_CASES[case]
    bi = jr.bidirectional(fwd, bwd)
    bwd = fwd if bwd is None else bwd
    params = random_params(bi.init, 3)
    assert isinstance(params, jr.Bidirectional)
    assert (bi.input_size, bi.output_size) == (I, fwd.output_size + bwd.output_size)
    xs = random_xs(4)
    carry = random_carry(bi.initial_carry, (B,), 5)

    got = bi.apply(params, xs, carry if given_carry else None, lengths=LENGTHS)

    if not given_carry:
        carry = bi.initial_carry((B,))
    c_f, y_f = per_sequence(fwd, params.forward, xs, carry.forward, LENGTHS)
    c_b, y_b = per_sequence(bwd, params.backward, xs, carry.backward, LENGTHS, backward=True)
    expected = (jr.Bidirectional(c_f, c_b), np.concatenate([y_f, y_b], axis=-1))
    assert_trees_close(got, expected, **TOL)


def test_bidirectional_default_backward_has_own_params():
    bi = jr.bidirectional(GRU)
    params = bi.init(jax.random.key(0))
    assert jax.tree.structure(params.forward) == jax.tree.structure(params.backward)
    assert not np.allclose(params.forward.w_ih, params.backward.w_ih)


# --------------------------------------------------------------------------------------------
# stack


def test_stack_matches_layer_by_layer():
    layers = [
        jr.layer(jr.gru(I, H)),
        jr.bidirectional(jr.lstm(H, H, proj_size=P)),
        jr.layer(jr.simple_rnn(2 * P, 3), reverse=True),
    ]
    net = jr.stack(layers, dropout=0.5)  # no key: dropout is off
    assert (net.input_size, net.output_size) == (I, 3)
    params = random_params(net.init, 6)
    carry = random_carry(net.initial_carry, (B,), 7)
    xs = random_xs(8)
    assert isinstance(params, tuple) and len(params) == 3
    assert isinstance(carry, tuple) and isinstance(carry[1], jr.Bidirectional)

    got = jax.jit(functools.partial(net.apply, lengths=LENGTHS))(params, xs, carry)

    ys, carries = xs, []
    for lay, p, c in zip(layers, params, carry, strict=True):
        c, ys = lay.apply(p, ys, c, lengths=LENGTHS)
        carries.append(c)
    assert_trees_close(got, (tuple(carries), ys), **TOL)
    assert got[1].shape == (B, T, 3)


# --------------------------------------------------------------------------------------------
# rnn

RNN_CASES = {
    # id: (cell factory, num_layers, bidirectional, cell kwargs)
    "gru-2": (jr.gru, 2, False, {"reset_after": True}),
    "simple_rnn-2-bidirectional": (jr.simple_rnn, 2, True, {}),
    "lstm-3-bidirectional-proj": (jr.lstm, 3, True, {"proj_size": P}),
}


def manual_rnn(cell_fn, num_layers, bidirectional, kwargs, params, xs, carry, lengths):
    """The network ``rnn`` should build, from freshly made cells and ``jr.scan`` calls."""
    ys, size, carries = xs, I, []
    for p, c in zip(params, carry, strict=True):
        cell = cell_fn(size, H, **kwargs)
        if bidirectional:
            c_f, y_f = jr.scan(cell, p.forward, ys, c.forward, lengths=lengths)
            c_b, y_b = jr.scan(cell, p.backward, ys, c.backward, lengths=lengths, reverse=True)
            c, ys = jr.Bidirectional(c_f, c_b), jnp.concatenate([y_f, y_b], axis=-1)
        else:
            c, ys = jr.scan(cell, p, ys, c, lengths=lengths)
        carries.append(c)
        size = ys.shape[-1]
    assert len(carries) == num_layers
    return tuple(carries), ys


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_rnn_shapes_structure_and_values(case):
    cell_fn, num_layers, bidirectional, kwargs = RNN_CASES[case]
    net = jr.rnn(cell_fn, I, H, num_layers=num_layers, bidirectional=bidirectional, **kwargs)
    out = kwargs.get("proj_size", H) * (2 if bidirectional else 1)
    assert (net.input_size, net.output_size) == (I, out)

    params = random_params(net.init, 9)
    carry = random_carry(net.initial_carry, (B,), 10)
    assert isinstance(params, tuple) and len(params) == num_layers
    assert isinstance(carry, tuple) and len(carry) == num_layers
    for k, (p, c) in enumerate(zip(params, carry, strict=True)):
        in_size = I if k == 0 else out
        directions = (p.forward, p.backward) if bidirectional else (p,)
        carries = (c.forward, c.backward) if bidirectional else (c,)
        assert isinstance(p, jr.Bidirectional) == isinstance(c, jr.Bidirectional) == bidirectional
        for p_dir, c_dir in zip(directions, carries, strict=True):
            assert p_dir.w_ih.shape[0] == in_size
            for leaf in jax.tree.leaves(c_dir):
                assert leaf.shape[0] == B

    xs = random_xs(11)
    zeros = jax.tree.map(jnp.zeros_like, carry)

    @jax.jit
    def run(params, xs, carry):
        return net.apply(params, xs, carry, lengths=LENGTHS), net.apply(params, xs)

    @jax.jit
    def reference(params, xs, carry):
        given = manual_rnn(cell_fn, num_layers, bidirectional, kwargs, params, xs, carry, LENGTHS)
        default = manual_rnn(cell_fn, num_layers, bidirectional, kwargs, params, xs, zeros, None)
        return given, default

    got = run(params, xs, carry)
    assert got[0][1].shape == (B, T, out)
    assert_trees_close(got, reference(params, xs, carry), **TOL)


def test_time_major_agrees_with_batch_major():
    kwargs = dict(num_layers=2, bidirectional=True, proj_size=P)
    batch_major = jr.rnn(jr.lstm, I, H, **kwargs)
    time_major = jr.rnn(jr.lstm, I, H, time_major=True, **kwargs)
    params = random_params(batch_major.init, 12)
    carry = random_carry(batch_major.initial_carry, (B,), 13)
    xs = random_xs(14)
    c_bm, y_bm = batch_major.apply(params, xs, carry, lengths=LENGTHS)
    c_tm, y_tm = time_major.apply(params, np.moveaxis(xs, 1, 0), carry, lengths=LENGTHS)
    assert y_tm.shape == (T, B, 2 * P)
    assert_trees_close((c_tm, jnp.moveaxis(y_tm, 0, 1)), (c_bm, y_bm), **TOL)


# --------------------------------------------------------------------------------------------
# dropout

P_DROP = 0.3


def test_dropout_without_key_is_deterministic_and_off():
    with_dropout = jr.rnn(jr.gru, I, H, num_layers=2, dropout=0.5)
    without = jr.rnn(jr.gru, I, H, num_layers=2)
    params, xs = random_params(with_dropout.init, 15), random_xs(16)
    first = with_dropout.apply(params, xs, lengths=LENGTHS)
    assert_trees_close(first, with_dropout.apply(params, xs, lengths=LENGTHS), rtol=0, atol=0)
    assert_trees_close(first, without.apply(params, xs, lengths=LENGTHS), rtol=0, atol=0)


@functools.cache
def dropout_probe():
    """``(params, xs, fn)``: ``fn(key)`` returns a wide layer's outputs and the same outputs
    after the stack's dropout (read through an identity layer). 32 * 16 * 64 elements."""
    width = 64
    lay = jr.layer(jr.simple_rnn(I, width))
    net = jr.stack([lay, identity_layer(width)], dropout=P_DROP)
    params = random_params(net.init, 17)
    xs = random_xs(18, (32, 16, I))

    @jax.jit
    def fn(key):
        _, plain = lay.apply(params[0], xs)
        _, dropped = net.apply(params, xs, key=key)
        return plain, dropped

    return fn


def test_dropout_rate_and_scale():
    plain, dropped = map(np.asarray, dropout_probe()(jax.random.key(0)))
    assert np.all(plain != 0)  # so every zero below was dropped
    kept = dropped != 0
    # Binomial std of the dropped fraction is sqrt(0.3 * 0.7 / 32768) ~ 0.0025.
    assert abs((1 - kept.mean()) - P_DROP) < 0.015
    np.testing.assert_allclose(dropped[kept], plain[kept] / (1 - P_DROP), rtol=1e-6)


def test_dropout_keys():
    fn = dropout_probe()
    _, a = fn(jax.random.key(1))
    _, again = fn(jax.random.key(1))  # a fresh key with the same seed
    _, b = fn(jax.random.key(2))
    np.testing.assert_array_equal(a, again)
    assert np.mean(np.asarray(a) != np.asarray(b)) > 0.2


def test_dropout_between_every_pair_of_layers():
    """Three identity layers: two dropouts apply, so survivors are scaled by 1 / (1 - p)**2."""
    net = jr.stack([identity_layer(8)] * 3, dropout=P_DROP)
    xs = random_xs(19, (64, 16, 8))
    _, ys = net.apply(net.init(jax.random.key(0)), xs, key=jax.random.key(3))
    ys = np.asarray(ys)
    kept = ys != 0
    assert abs(kept.mean() - (1 - P_DROP) ** 2) < 0.02
    np.testing.assert_allclose(ys[kept], xs[kept] / (1 - P_DROP) ** 2, rtol=1e-6)


def test_dropout_never_after_last_layer():
    single = jr.rnn(jr.gru, I, H, num_layers=1, dropout=0.5)
    params, xs = random_params(single.init, 20), random_xs(21)
    no_key = single.apply(params, xs)
    assert_trees_close(single.apply(params, xs, key=jax.random.key(4)), no_key, rtol=0, atol=0)

    deep = jr.rnn(jr.gru, I, H, num_layers=2, dropout=0.5)
    params = random_params(deep.init, 22)
    _, ys_key = deep.apply(params, xs, key=jax.random.key(5))
    _, ys_no_key = deep.apply(params, xs)
    # Dropout before the last layer changes its outputs, but none of them is zeroed.
    assert not np.allclose(ys_key, ys_no_key)
    assert np.all(np.asarray(ys_key) != 0)


# --------------------------------------------------------------------------------------------
# remat


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_passes_remat_sqrt_to_every_scan(bidirectional):
    """``jr.rnn(..., remat="sqrt")`` (through ``layer``/``bidirectional``) == ``remat=False``.

    Values and gradients (params, xs, carry) of a two-layer network at T = 11: two segments of
    four steps and a remainder of three in every scan, backward directions included.
    """
    kwargs = dict(num_layers=2, bidirectional=bidirectional, proj_size=P)
    sqrt_net = jr.rnn(jr.lstm, I, H, remat="sqrt", **kwargs)
    plain_net = jr.rnn(jr.lstm, I, H, **kwargs)
    assert dict(sqrt_net.config)["remat"] == "sqrt"
    params = random_params(plain_net.init, 15)
    carry = random_carry(plain_net.initial_carry, (B,), 16)
    num_steps = 11
    xs = random_xs(17, (B, num_steps, I))
    lengths = np.array([num_steps, 0, 6], np.int32)

    def loss(net, params, xs, carry):
        c, ys = net.apply(params, xs, carry, lengths=lengths)
        return jnp.sum(ys * jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(c))

    @jax.jit
    def run(params, xs, carry):
        return [
            jax.value_and_grad(functools.partial(loss, net), argnums=(0, 1, 2))(params, xs, carry)
            for net in (sqrt_net, plain_net)
        ]

    got, expected = run(params, xs, carry)
    assert_trees_close(got, expected, **TOL)


# --------------------------------------------------------------------------------------------
# method


@pytest.mark.parametrize(
    "cell_fn, method",
    [(jr.min_gru, "associative"), (jr.gru, "newton"), (jr.min_lstm, "auto")],
)
def test_rnn_passes_method_to_every_scan(cell_fn, method):
    """``jr.rnn(..., method=m)`` (through ``layer`` and ``bidirectional``) == the sequential net.

    A two-layer bidirectional stack with lengths (an empty row included) and an initial carry:
    outputs, final carries and gradients agree, whichever way every scan is evaluated.
    """
    kwargs = dict(num_layers=2, bidirectional=True)
    net = jr.rnn(cell_fn, I, H, method=method, **kwargs)
    plain_net = jr.rnn(cell_fn, I, H, **kwargs)
    assert dict(net.config)["method"] == method
    params = random_params(plain_net.init, 21)
    carry = random_carry(plain_net.initial_carry, (B,), 22)
    xs = random_xs(23, (B, T, I))
    # The method reaches every scan: a sequential net has one lax.scan per direction and
    # layer, "associative" none; Newton's iterations are a while loop.
    jaxpr = jax.make_jaxpr(lambda p, x, c: net.apply(p, x, c, lengths=LENGTHS))(params, xs, carry)
    names = _primitive_names(jaxpr.jaxpr)
    if method == "newton":  # (its sequential fallback is a lax.scan too)
        assert "while" in names
    else:  # auto is sequential on the CPU
        assert names.count("scan") == (4 if method == "auto" else 0), names
        assert "while" not in names

    def loss(net, params, xs, carry):
        c, ys = net.apply(params, xs, carry, lengths=LENGTHS)
        return jnp.sum(ys * jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(c))

    @jax.jit
    def run(params, xs, carry):
        return [
            jax.value_and_grad(functools.partial(loss, n), argnums=(0, 1, 2))(params, xs, carry)
            for n in (net, plain_net)
        ]

    got, expected = run(params, xs, carry)
    assert_trees_close(got, expected, rtol=1e-4, atol=1e-4)


def test_layer_method_errors():
    """A linear method on a non-linear cell names the cell; cuDNN cannot run a parallel method."""
    lay = jr.layer(jr.lstm(I, H), method="associative")
    with pytest.raises(ValueError, match=r"associative.*lstm"):
        lay.apply(lay.init(jax.random.key(0)), jnp.ones((B, T, I)))
    with pytest.raises(ValueError, match=r"cudnn=True.*method"):
        jr.rnn(jr.lstm, I, H, cudnn=True, method="newton")


def _primitive_names(jaxpr) -> list[str]:
    """The primitives of ``jaxpr`` and of every jaxpr nested in its equations, in order."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for value in eqn.params.values():
            for inner in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    names += _primitive_names(inner)
    return names
