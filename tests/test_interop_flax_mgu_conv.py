"""jaxrnn.interop against Flax's MGUCell and ConvLSTMCell (Linen; NNX has neither).

The reference is Flax: ``nn.RNN`` drives the Linen cell over a sequence, the converted jaxrnn
cell runs under :func:`jaxrnn.scan`, and outputs and final carries must agree, in both
directions of the conversion. Round trips must give back the same bits. The plain import of
these cells (MGU both ``reset_gate``, 2-D ConvLSTM kernels (3, 3) and (2, 2)) is also the
Flax reference of tests/test_mgu.py and tests/test_conv.py; here are the other directions,
dimensionalities and options, and what is refused.
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

I, H, B, T = 3, 4, 2, 5  # noqa: E741 (input channels, hidden, batch, time)
LENGTHS = jnp.array([5, 3])
SPATIAL = (5, 4, 3)  # the first len(kernel_size) of these


def assert_same_tree(a, b):
    """Same structure, dtypes and bit-identical leaves."""
    (la, ta), (lb, tb) = jax.tree.flatten(a), jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=atol)


def random_params(cell, seed):
    """Random params of ``cell``'s structure, every bias nonzero."""
    shapes = jax.eval_shape(cell.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape), s.dtype), shapes)


def linen_init(flax_cell, x, seed=0):
    """Random variables of ``flax_cell``'s structure for input ``x`` (every bias nonzero, so
    that none can hide misplaced) and a random initial carry. Shapes come from
    ``jax.eval_shape`` of Flax's own ``init`` and ``initialize_carry``: running Flax's
    initialisers eagerly would cost seconds of compilation per cell."""
    carry = jax.eval_shape(lambda key: flax_cell.initialize_carry(key, x.shape), jax.random.key(0))
    variables = jax.eval_shape(flax_cell.init, jax.random.key(0), carry, x)
    rng = np.random.default_rng(seed)
    draw = lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype)
    return jax.tree.map(draw, variables), jax.tree.map(draw, carry)


def run_flax(flax_cell, variables, xs, carry0, seq_lengths=None, **kw):
    """Flax's ``nn.RNN`` over ``xs`` (jitted: run eagerly, it compiles op by op, seconds)."""
    rnn = nn.RNN(flax_cell, return_carry=True, **kw)

    @jax.jit
    def run(v, xs, carry0, seq_lengths):
        return rnn.apply({"params": {"cell": v}}, xs, initial_carry=carry0, seq_lengths=seq_lengths)

    return run(variables["params"], xs, carry0, seq_lengths)


def normal(shape, seed):
    """Standard normal float32 data (NumPy's generator: jax.random compiles eagerly, slowly)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def frames(kernel, seed=0):
    """A ``(B, T, *spatial, I)`` sequence for a convolutional cell with ``kernel``."""
    shape = (B, T, *SPATIAL[: len(kernel)], I)
    return normal(shape, seed)


# --------------------------------------------------------------------------------------------
# MGU.


@pytest.mark.parametrize("reset_gate", [True, False])
def test_mgu_import_matches_flax_with_lengths_and_reverse(reset_gate):
    flax_cell = nn.MGUCell(features=H, reset_gate=reset_gate)
    xs = normal((B, T, I), 0)
    variables, carry0 = linen_init(flax_cell, xs[:, 0])
    cell, params = interop.from_flax_linen(variables, flax_cell)
    assert dict(cell.config)["reset_gate"] is reset_gate
    carry_f, ys_f = run_flax(
        flax_cell, variables, xs, carry0, seq_lengths=LENGTHS, reverse=True, keep_order=True
    )
    carry_j, ys_j = jr.scan(cell, params, xs, carry0, lengths=LENGTHS, reverse=True)
    mask = np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]
    assert_close(np.asarray(ys_j)[mask], np.asarray(ys_f)[mask])
    assert_close(carry_j, carry_f)


@pytest.mark.parametrize("reset_gate", [True, False])
def test_mgu_export_matches_flax_and_round_trips(reset_gate):
    cell = jr.mgu(I, H, reset_gate=reset_gate)
    params = random_params(cell, 1)  # b_hh nonzero, even without the reset gate
    variables = interop.to_flax_linen(cell, params)
    xs, carry0 = normal((B, T, I), 2), normal((B, H), 3)
    carry_f, ys_f = run_flax(nn.MGUCell(features=H, reset_gate=reset_gate), variables, xs, carry0)
    carry_j, ys_j = jr.scan(cell, params, xs, carry0)
    assert_close(ys_j, ys_f)
    assert_close(carry_j, carry_f)
    # Back: the reset_gate read from the variables (hn has a bias iff reset_gate).
    cell2, params2 = interop.from_flax_linen(variables, "mgu")
    assert cell2.config == cell.config
    if reset_gate:
        assert_same_tree(params2, params)
    else:  # Flax has no bias on hn then: b_hh has moved into the bias of `in`
        np.testing.assert_array_equal(params2.b_hh, 0.0)
        np.testing.assert_array_equal(params2.b_ih, params.b_ih.at[H:].add(params.b_hh))
        assert_same_tree(params2._replace(b_ih=0, b_hh=0), params._replace(b_ih=0, b_hh=0))


@pytest.mark.parametrize("reset_gate", [True, False])
def test_mgu_linen_round_trip_is_exact(reset_gate):
    flax_cell = nn.MGUCell(features=H, reset_gate=reset_gate, param_dtype=jnp.bfloat16)
    variables, _ = linen_init(flax_cell, jnp.zeros((B, I), jnp.bfloat16), seed=4)
    cell, params = interop.from_flax_linen(variables, flax_cell)
    assert params.w_ih.dtype == jnp.bfloat16 and dict(cell.config)["dtype"] == jnp.bfloat16
    assert_same_tree(interop.to_flax_linen(cell, params), dict(variables))


# --------------------------------------------------------------------------------------------
# ConvLSTM.


@pytest.mark.parametrize("kernel", [(3,), (3, 1, 2)], ids=["1d", "3d"])
def test_conv_lstm_import_matches_flax(kernel):
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=kernel)
    xs = frames(kernel)
    variables, carry0 = linen_init(flax_cell, xs[:, 0])  # both biases nonzero
    cell, params = interop.from_flax_linen(variables, flax_cell)
    assert dict(cell.config)["kernel_size"] == kernel
    (c_f, h_f), ys_f = run_flax(flax_cell, variables, xs, carry0)
    carry_j, ys_j = jr.scan(cell, params, xs, interop.carry_from_flax(carry0))
    assert_close(ys_j, ys_f)
    assert_close((carry_j.c, carry_j.h), (c_f, h_f))


@pytest.mark.parametrize("kernel", [(2,), (2, 3)], ids=["1d", "2d"])
def test_conv_lstm_export_matches_flax(kernel):
    cell = jr.conv_lstm(I, H, kernel)
    params = random_params(cell, 5)
    variables = interop.to_flax_linen(cell, params)
    xs = frames(kernel, seed=6)
    h0, c0 = normal((2, B, *xs.shape[2:-1], H), 7)
    carry0 = jr.LSTMCarry(h=h0, c=c0)
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=kernel)
    (c_f, h_f), ys_f = run_flax(flax_cell, variables, xs, interop.carry_to_flax(carry0))
    carry_j, ys_j = jr.scan(cell, params, xs, carry0)
    assert_close(ys_j, ys_f)
    assert_close((carry_j.c, carry_j.h), (c_f, h_f))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kernel", [(3,), (2, 3), (3, 1, 2)], ids=["1d", "2d", "3d"])
def test_conv_lstm_round_trips_are_exact(kernel, dtype):
    cell = jr.conv_lstm(I, H, kernel, param_dtype=dtype)
    params = random_params(cell, 8)
    variables = interop.to_flax_linen(cell, params)
    v = variables["params"]
    assert v["ih"]["kernel"].shape == (*kernel, I, 4 * H)
    assert v["hh"]["kernel"].shape == (*kernel, H, 4 * H)
    # Flax's blocks are i, g, f, o; hh's bias cancels Flax's +1 on the forget gate.
    np.testing.assert_array_equal(
        v["ih"]["kernel"][..., H : 2 * H], params.w_ih[..., 2 * H : 3 * H]
    )
    np.testing.assert_array_equal(v["hh"]["bias"], np.repeat([0, 0, -1, 0], H))
    cell2, params2 = interop.from_flax_linen(variables, "conv_lstm")
    assert cell2.config == cell.config
    assert_same_tree(params2, params)
    # Flax -> jaxrnn -> Flax moves bias between ih and hh (jaxrnn has one), so the variables
    # change, but importing them again gives the same bits.
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=kernel, param_dtype=dtype)
    flax_vars, _ = linen_init(flax_cell, frames(kernel)[:, 0].astype(dtype), seed=9)
    _, first = interop.from_flax_linen(flax_vars, flax_cell)
    _, again = interop.from_flax_linen(interop.to_flax_linen(cell2, first), flax_cell)
    assert_same_tree(again, first)


def test_conv_lstm_without_bias_and_with_explicit_same_padding():
    x = frames((3, 2))[:, 0]
    for flax_cell in (
        nn.ConvLSTMCell(features=H, kernel_size=(3, 2), use_bias=False),
        nn.ConvLSTMCell(features=H, kernel_size=(3, 2), padding=((1, 1), (0, 1))),
    ):
        variables, carry0 = linen_init(flax_cell, x)
        cell, params = interop.from_flax_linen(variables, flax_cell)
        (c_f, _), y_f = jax.jit(flax_cell.apply)(variables, carry0, x)
        carry_j, y_j = cell.apply(params, interop.carry_from_flax(carry0), x)
        assert_close((y_j, carry_j.c), (y_f, c_f))
    # without biases, jaxrnn's bias is Flax's forget offset alone
    variables, _ = linen_init(
        nn.ConvLSTMCell(features=H, kernel_size=(3,), use_bias=False), x[..., 0, :]
    )
    _, params = interop.from_flax_linen(variables, nn.ConvLSTMCell(H, (3,), use_bias=False))
    np.testing.assert_array_equal(params.b, np.repeat([0.0, 1.0, 0.0, 0.0], H))


# --------------------------------------------------------------------------------------------
# NNX: no MGUCell, no ConvLSTMCell.


def test_nnx_has_neither_cell():
    assert not hasattr(nnx, "MGUCell") and not hasattr(nnx, "ConvLSTMCell")
    for cell in (jr.mgu(I, H), jr.conv_lstm(I, H, (3, 3))):
        with pytest.raises(ValueError, match=r"flax\.nnx has no MGUCell or ConvLSTMCell"):
            interop.to_flax_nnx(cell, random_params(cell, 0))
    with pytest.raises(TypeError, match=r"flax\.nnx has no MGUCell or ConvLSTMCell"):
        interop.from_flax_nnx(nn.MGUCell(features=H))
    # The route the messages give: a Linen cell inside nnx.bridge.ToNNX, via from_flax_linen
    # (normal initialisers: Flax's default orthogonal one costs seconds to compile eagerly).
    init = nn.initializers.normal(0.5)
    linen_cell = nn.MGUCell(features=H, kernel_init=init, recurrent_kernel_init=init)
    x, carry0 = jnp.ones((B, I)), jnp.full((B, H), 0.5)
    module = nnx.bridge.ToNNX(linen_cell, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(module, carry0, x)
    with pytest.raises(TypeError, match="from_flax_linen"):
        interop.from_flax_nnx(module)
    variables = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    cell, params = interop.from_flax_linen(variables, module.to_nnx__module)
    assert_close(cell.apply(params, carry0, x)[1], module(carry0, x)[1])


# --------------------------------------------------------------------------------------------
# Refusals.


def _conv_vars():
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=(3, 3))
    return flax_cell, linen_init(flax_cell, jnp.zeros((B, 5, 5, I)))[0]


def _mgu_vars(**kw):
    return linen_init(nn.MGUCell(features=H, **kw), jnp.zeros((B, I)))[0]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"strides": 2}, r"ConvLSTMCell\(strides=2\)"),
        ({"strides": (1, 2)}, r"strides=\(1, 2\)"),
        ({"padding": "VALID"}, r"padding='VALID'\): jr.conv_lstm pads 'SAME'"),
        ({"padding": "CIRCULAR"}, "padding='CIRCULAR'"),
        ({"padding": 2}, r"padding=2\)"),
        ({"dtype": jnp.bfloat16}, r"ConvLSTMCell\(dtype=bfloat16\) computes in bfloat16"),
    ],
)
def test_conv_lstm_options_jaxrnn_lacks_are_refused(options, match):
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=(3, 3), **options)
    _, variables = _conv_vars()  # the parameters do not depend on these options
    with pytest.raises(ValueError, match=match):
        interop.from_flax_linen(variables, flax_cell)


def test_mgu_and_bad_variables_are_refused():
    with_b_hn = _mgu_vars()
    for options, match in [
        ({"gate_fn": jax.nn.hard_sigmoid}, "gate_fn=hard_sigmoid"),
        ({"activation_fn": jax.nn.relu}, "activation_fn=relu"),
        ({"dtype": jnp.bfloat16}, r"MGUCell\(dtype=bfloat16\) computes in bfloat16"),
    ]:
        with pytest.raises(ValueError, match=match):
            interop.from_flax_linen(with_b_hn, nn.MGUCell(features=H, **options))
    with pytest.raises(ValueError, match=r"hn/bias is there, but MGUCell\(reset_gate=False\)"):
        interop.from_flax_linen(with_b_hn, nn.MGUCell(features=H, reset_gate=False))
    without_b_hn = _mgu_vars(reset_gate=False)
    with pytest.raises(ValueError, match="no hn/bias parameter"):
        interop.from_flax_linen(without_b_hn, nn.MGUCell(features=H))
    flax_cell, variables = _conv_vars()
    with pytest.raises(ValueError, match=r"ConvLSTMCell\(kernel_size=\(3, 2\)\)"):
        interop.from_flax_linen(variables, nn.ConvLSTMCell(features=H, kernel_size=(3, 2)))
    with pytest.raises(ValueError, match=r"ih/bias is there, but ConvLSTMCell\(use_bias=False\)"):
        interop.from_flax_linen(variables, nn.ConvLSTMCell(H, (3, 3), use_bias=False))
    bad = jax.tree.map(lambda a: a, dict(variables["params"]))
    bad["ih"] = {**bad["ih"], "kernel": bad["ih"]["kernel"][..., :-1]}
    with pytest.raises(ValueError, match=r"\['ih'\]\['kernel'\]: expected shape"):
        interop.from_flax_linen(bad, "conv_lstm")
    mixed = {**variables["params"], "hh": {**variables["params"]["hh"]}}
    mixed["hh"]["bias"] = mixed["hh"]["bias"].astype(jnp.bfloat16)
    with pytest.raises(TypeError, match="b_hh: expected the dtype of w_hh"):
        interop.from_flax_linen(mixed, flax_cell)


def test_export_refusals():
    with pytest.raises(ValueError, match="conv_gru has no Flax cell equivalent"):
        cell = jr.conv_gru(I, H, (3, 3))
        interop.to_flax_linen(cell, random_params(cell, 0))
    for cell in (jr.mgu(I, H, dtype=jnp.bfloat16), jr.conv_lstm(I, H, (3,), dtype=jnp.bfloat16)):
        with pytest.raises(ValueError, match=r"\(dtype=bfloat16\) computes in bfloat16"):
            interop.to_flax_linen(cell, random_params(cell, 0))
    with pytest.raises(TypeError, match="params: expected MGUParams, got GRUParams"):
        interop.to_flax_linen(jr.mgu(I, H), random_params(jr.gru(I, H), 0))
    with pytest.raises(TypeError, match="params: expected ConvLSTMParams"):
        interop.to_flax_linen(jr.conv_lstm(I, H, (3,)), random_params(jr.conv_gru(I, H, (3,)), 0))
