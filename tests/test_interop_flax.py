"""jaxrnn.interop against Flax: Linen and NNX cells, run over sequences by Flax, are the reference.

Flax's ``nn.RNN``/``nnx.RNN`` drive the Flax cell over a sequence; the converted jaxrnn cell runs
under :func:`jaxrnn.scan`; outputs and final carries must agree, and round trips must return
exactly the same parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrnn as jr
from jaxrnn import interop

I, H, B, T = 3, 4, 3, 5  # noqa: E741 (input, hidden, batch, time)
LENGTHS = np.array([5, 2, 4])
RTOL, ATOL = 1e-4, 1e-5
KINDS = ["lstm", "optimized_lstm", "gru", "simple"]

LINEN = {
    "lstm": nn.LSTMCell,
    "optimized_lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
    "simple": nn.SimpleCell,
}
NNX = {
    "lstm": nnx.LSTMCell,
    "optimized_lstm": nnx.OptimizedLSTMCell,
    "gru": nnx.GRUCell,
    "simple": nnx.SimpleCell,
}
# Non-default biases, so that every bias (and where it sits) matters.
BIAS_INIT = nn.initializers.normal(0.5)


def linen_variables(kind, seed=0, **kw):
    cell = LINEN[kind](features=H, bias_init=BIAS_INIT, **kw)
    x = jnp.zeros((B, I))
    carry = cell.initialize_carry(jax.random.key(seed), x.shape)
    return cell, cell.init(jax.random.key(seed + 1), carry, x)


def nnx_cell(kind, seed=0, **kw):
    return NNX[kind](I, H, bias_init=BIAS_INIT, rngs=nnx.Rngs(seed), **kw)


def flax_initial_carry(kind, rng):
    def draw():
        return jnp.asarray(rng.normal(size=(B, H)).astype(np.float32))

    return (draw(), draw()) if "lstm" in kind else draw()


def assert_close(a, b, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


def assert_carries_close(jr_carry, flax_carry):
    """Compare a jaxrnn carry with a Flax one through carry_to_flax."""
    mine = jax.tree.leaves(interop.carry_to_flax(jr_carry))
    theirs = jax.tree.leaves(flax_carry)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert_close(a, b, what="carry")


def assert_same_tree(a, b):
    """Same structure, dtypes and bit-identical leaves."""
    (la, ta), (lb, tb) = jax.tree.flatten(a), jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def valid_mask(lengths):
    return np.arange(T)[None, :] < lengths[:, None]  # (B, T)


def xs_and_carry(kind, seed):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(B, T, I)).astype(np.float32))
    return xs, flax_initial_carry(kind, rng)


# --------------------------------------------------------------------------------------------
# Linen.


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_linen_parity_over_sequence(kind, with_lengths, reverse):
    flax_cell, variables = linen_variables(kind)
    cell, params = interop.from_flax_linen(variables, kind)
    xs, carry0 = xs_and_carry(kind, 0)
    lengths = jnp.asarray(LENGTHS) if with_lengths else None

    rnn = nn.RNN(flax_cell, return_carry=True, reverse=reverse, keep_order=True)
    carry_f, ys_f = rnn.apply(
        {"params": {"cell": variables["params"]}}, xs, initial_carry=carry0, seq_lengths=lengths
    )
    carry_j, ys_j = jr.scan(
        cell, params, xs, interop.carry_from_flax(carry0), lengths=lengths, reverse=reverse
    )
    assert_carries_close(carry_j, carry_f)
    if with_lengths:  # Flax leaves unspecified values past each length; jaxrnn zeros
        mask = valid_mask(LENGTHS)
        assert_close(np.asarray(ys_j)[mask], np.asarray(ys_f)[mask], what="outputs")
        assert (np.asarray(ys_j)[~mask] == 0).all()
    else:
        assert_close(ys_j, ys_f, what="outputs")


@pytest.mark.parametrize("kind", KINDS)
def test_linen_round_trip_is_exact(kind):
    _, variables = linen_variables(kind, seed=3)
    cell, params = interop.from_flax_linen(variables, kind)
    assert_same_tree(interop.to_flax_linen(cell, params), dict(variables))
    # without the "params" level too
    cell2, params2 = interop.from_flax_linen(variables["params"], kind)
    assert_same_tree(params2, params)
    assert cell2.config == cell.config


def _random_params(cell, seed):
    """Random params of ``cell``'s structure, every bias block nonzero."""
    shapes = jax.eval_shape(cell.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape), dtype=s.dtype), shapes
    )


NATIVE = {
    "lstm": lambda: jr.lstm(I, H),
    "gru": lambda: jr.gru(I, H, reset_after=True),  # b_hh nonzero in r, z and n blocks
    "simple": lambda: jr.simple_rnn(I, H),
}


@pytest.mark.parametrize("kind", list(NATIVE))
def test_native_cells_export_to_linen(kind):
    cell = NATIVE[kind]()
    params = _random_params(cell, 1)
    variables = interop.to_flax_linen(cell, params)
    xs, carry0 = xs_and_carry(kind, 2)
    carry_f, ys_f = nn.RNN(LINEN[kind](features=H), return_carry=True).apply(
        {"params": {"cell": variables["params"]}}, xs, initial_carry=carry0
    )
    carry_j, ys_j = jr.scan(cell, params, xs, interop.carry_from_flax(carry0))
    assert_close(ys_j, ys_f)
    assert_carries_close(carry_j, carry_f)
    # jaxrnn -> Linen -> jaxrnn: identical, except that a GRU's hidden-side r, z biases have
    # moved into the input-side ones (Linen has no place for them): the same function.
    _, params2 = interop.from_flax_linen(variables, kind)
    if kind == "gru":
        np.testing.assert_array_equal(np.asarray(params2.b_hh[: 2 * H]), 0)
        np.testing.assert_array_equal(np.asarray(params2.b_hh[2 * H :]), params.b_hh[2 * H :])
        np.testing.assert_array_equal(
            np.asarray(params2.b_ih), np.asarray(params.b_ih + params.b_hh.at[2 * H :].set(0))
        )
        assert_same_tree(params2._replace(b_ih=0, b_hh=0), params._replace(b_ih=0, b_hh=0))
    else:
        assert_same_tree(params2, params)


def test_linen_simple_cell_keeps_its_activation():
    flax_cell, variables = linen_variables("simple", activation_fn=jax.nn.relu)
    cell, params = interop.from_flax_linen(variables, flax_cell)
    assert dict(cell.config)["activation"] is jax.nn.relu
    xs, _ = xs_and_carry("simple", 4)
    ys_f = nn.RNN(flax_cell).apply({"params": {"cell": variables["params"]}}, xs)
    _, ys_j = jr.scan(cell, params, xs)
    assert_close(ys_j, ys_f)


# --------------------------------------------------------------------------------------------
# NNX.


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_nnx_parity_over_sequence(kind, with_lengths):
    module = nnx_cell(kind)
    cell, params = interop.from_flax_nnx(module)
    xs, carry0 = xs_and_carry(kind, 5)
    lengths = jnp.asarray(LENGTHS) if with_lengths else None
    carry_f, ys_f = nnx.RNN(module, return_carry=True)(
        xs, initial_carry=carry0, seq_lengths=lengths
    )
    carry_j, ys_j = jr.scan(cell, params, xs, interop.carry_from_flax(carry0), lengths=lengths)
    assert_carries_close(carry_j, carry_f)
    mask = valid_mask(LENGTHS) if with_lengths else np.ones((B, T), bool)
    assert_close(np.asarray(ys_j)[mask], np.asarray(ys_f)[mask], what="outputs")


def _nnx_params(module):
    return nnx.state(module, nnx.Param)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_round_trip_is_exact(kind):
    module = nnx_cell(kind, seed=6)
    cell, params = interop.from_flax_nnx(module)
    back = interop.to_flax_nnx(
        cell, params, kind="optimized_lstm" if kind == "optimized_lstm" else None
    )
    assert type(back) is type(module)
    assert_same_tree(_nnx_params(back), _nnx_params(module))
    # the module is a working cell: same step as the original
    x, h = xs_and_carry(kind, 7)
    assert_carries_close(interop.carry_from_flax(back(h, x[:, 0])[0]), module(h, x[:, 0])[0])


@pytest.mark.parametrize("target", ["lstm", "optimized_lstm"])
def test_lstm_converts_between_nnx_variants(target):
    """An nnx.LSTMCell exported as an nnx.OptimizedLSTMCell (and back) is the same function."""
    module = nnx_cell("lstm", seed=8)
    cell, params = interop.from_flax_nnx(module)
    other = interop.to_flax_nnx(cell, params, kind=target)
    assert type(other) is NNX[target]
    xs, carry0 = xs_and_carry("lstm", 9)
    carry_a, ys_a = nnx.RNN(module, return_carry=True)(xs, initial_carry=carry0)
    carry_b, ys_b = nnx.RNN(other, return_carry=True)(xs, initial_carry=carry0)
    assert_close(ys_b, ys_a)
    assert_close(carry_b[0], carry_a[0])
    assert_close(carry_b[1], carry_a[1])
    _, params2 = interop.from_flax_nnx(other)
    assert_same_tree(params2, params)


@pytest.mark.parametrize("kind", list(NATIVE))
def test_native_cells_export_to_nnx(kind):
    cell = NATIVE[kind]()
    params = _random_params(cell, 10)
    if kind == "gru":  # nnx.GRUCell has no b_hn; b_hr and b_hz fold into the input bias
        params = params._replace(b_hh=params.b_hh.at[2 * H :].set(0.0))
    module = interop.to_flax_nnx(cell, params)
    xs, carry0 = xs_and_carry(kind, 11)
    carry_f, ys_f = nnx.RNN(module, return_carry=True)(xs, initial_carry=carry0)
    carry_j, ys_j = jr.scan(cell, params, xs, interop.carry_from_flax(carry0))
    assert_close(ys_j, ys_f)
    assert_carries_close(carry_j, carry_f)


def test_nnx_simple_cell_activation_both_ways():
    module = nnx_cell("simple", activation_fn=jax.nn.relu)
    cell, params = interop.from_flax_nnx(module)
    assert dict(cell.config)["activation"] is jax.nn.relu
    back = interop.to_flax_nnx(cell, params)
    assert back.activation_fn is jax.nn.relu
    xs, _ = xs_and_carry("simple", 12)
    _, ys_j = jr.scan(cell, params, xs)
    assert_close(ys_j, nnx.RNN(back)(xs))


# --------------------------------------------------------------------------------------------
# Carries, refusals and bad input.


def test_carry_converters():
    c, h = jnp.zeros((B, H)), jnp.ones((B, H))
    carry = interop.carry_from_flax((c, h))
    assert isinstance(carry, jr.LSTMCarry)
    assert carry.h is h and carry.c is c
    back = interop.carry_to_flax(carry)
    assert back[0] is c and back[1] is h
    assert interop.carry_from_flax(h) is h and interop.carry_to_flax(h) is h
    with pytest.raises(TypeError, match=r"^carry: expected a Flax cell carry"):
        interop.carry_from_flax(((c, h), (c, h)))
    with pytest.raises(TypeError, match="carry_to_flax"):
        interop.carry_to_flax(jr.Bidirectional(h, h))


REFUSED = {
    "gru-reset-before": (lambda: jr.gru(I, H), "reset_after=False"),
    "peephole": (lambda: jr.lstm(I, H, peephole=True), "peephole"),
    "coupled": (lambda: jr.lstm(I, H, coupled=True), "coupled"),
    "projection": (lambda: jr.lstm(I, H, proj_size=2), "proj_size"),
    "jordan": (lambda: jr.jordan_rnn(I, H, 2), "jordan_rnn"),
}


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("to", [interop.to_flax_linen, interop.to_flax_nnx], ids=["linen", "nnx"])
def test_export_refuses_what_flax_cannot_represent(name, to):
    build, match = REFUSED[name]
    cell = build()
    with pytest.raises(ValueError, match=match):
        to(cell, _random_params(cell, 0))


def test_nnx_gru_refuses_nonzero_b_hn():
    cell = jr.gru(I, H, reset_after=True)
    params = _random_params(cell, 13)
    with pytest.raises(ValueError, match="nonzero b_hn"):
        interop.to_flax_nnx(cell, params)
    interop.to_flax_linen(cell, params)  # Linen's GRUCell has b_hn: fine


def test_flax_cells_jaxrnn_cannot_reproduce_are_refused():
    with pytest.raises(ValueError, match="gate_fn"):
        interop.from_flax_nnx(nnx_cell("gru", gate_fn=jax.nn.hard_sigmoid))
    with pytest.raises(ValueError, match="activation_fn"):
        interop.from_flax_nnx(nnx_cell("lstm", activation_fn=jax.nn.relu))
    with pytest.raises(ValueError, match="residual"):
        interop.from_flax_nnx(nnx_cell("simple", residual=True))
    flax_cell, variables = linen_variables("optimized_lstm", gate_fn=jax.nn.hard_sigmoid)
    with pytest.raises(ValueError, match="gate_fn"):
        interop.from_flax_linen(variables, flax_cell)
    _, variables = linen_variables("gru")
    with pytest.raises(ValueError, match="kind: expected one of"):
        interop.from_flax_linen(variables, "GRU")
    with pytest.raises(ValueError, match="no ii/kernel parameter"):
        interop.from_flax_linen(variables, "lstm")
    with pytest.raises(TypeError, match="from_flax_nnx"):
        interop.from_flax_nnx(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="params: expected LSTMParams"):
        interop.to_flax_linen(jr.lstm(I, H), _random_params(jr.gru(I, H), 0))
