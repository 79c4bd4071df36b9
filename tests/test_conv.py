"""Convolutional LSTM and GRU cells (jaxrnn.conv).

References: float64 NumPy loops of Shi et al.'s ConvLSTM and Ballas et al.'s ConvGRU equations
with an explicit "SAME" cross-correlation (padding (k - 1) // 2 before, the rest after, as XLA
and Flax pad); Flax's ``nn.ConvLSTMCell`` on the same weights; finite differences.
"""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from tests.helpers import numpy_init

C, H, T = 2, 3, 4


def np_conv(x, w):
    """``x (*batch, *spatial, C)`` cross-correlated with ``w (*K, C, O)``, stride 1, SAME."""
    kernel = w.shape[:-2]
    n = len(kernel)
    spatial = x.shape[-n - 1 : -1]
    pads = [(0, 0)] * (x.ndim - n - 1) + [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
    xp = np.pad(x, [*pads, (0, 0)])
    out = np.zeros((*x.shape[:-1], w.shape[-1]))
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(o, o + s) for o, s in zip(offset, spatial, strict=True))
        out += xp[(..., *window, slice(None))] @ w[offset]
    return out


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_conv_lstm(p, carry, x):
    h, c = carry
    gates = np_conv(x, p.w_ih) + np_conv(h, p.w_hh) + p.b
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def ref_conv_gru(p, h, x, reset_after):
    x_r, x_z, x_n = np.split(np_conv(x, p.w_ih) + p.b_ih, 3, axis=-1)
    W_r, W_z, W_n = np.split(p.w_hh, 3, axis=-1)
    b_r, b_z, b_n = np.split(p.b_hh, 3)
    r = sigmoid(x_r + np_conv(h, W_r) + b_r)
    z = sigmoid(x_z + np_conv(h, W_z) + b_z)
    if reset_after:
        n = np.tanh(x_n + r * (np_conv(h, W_n) + b_n))
    else:
        n = np.tanh(x_n + np_conv(r * h, W_n) + b_n)
    h = (1 - z) * n + z * h
    return h, h


CASES = [
    ("lstm", {}),
    ("gru", {"reset_after": False}),
    ("gru", {"reset_after": True}),
]
KERNELS = [(3,), (2, 3), (3, 1, 2)]  # 1-D, 2-D (an even size), 3-D


def make(kind, kernel, opts, **kw):
    factory = jr.conv_lstm if kind == "lstm" else jr.conv_gru
    return factory(C, H, kernel, **opts, **kw)


def numpy_params(cell, seed):
    """Random parameters in the layout of ``cell.init`` (traced by ``eval_shape``, which
    compiles nothing), drawn by NumPy: compiling the initialisers and random draws for every
    case's shapes costs more than the scans. Kernels ``(*K, in, out)`` get a LeCun-normal part
    plus 0.3 standard normals, biases 0.3 standard normals (every parameter matters). The
    initialisers themselves are tested by ``test_forget_bias_sets_the_f_block...``."""
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = math.prod(s.shape[:-1]) if len(s.shape) > 1 else np.inf
        return jnp.asarray((1 / np.sqrt(fan_in) + 0.3) * rng.standard_normal(s.shape), s.dtype)

    return jax.tree.map(draw, jax.eval_shape(cell.init, jax.random.key(0)))


def numpy_normal(seed, shape, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


# Every cell in every dimensionality (batch (2,)), and every batch shape on one of them: the
# batch handling is shared, the compile of each case is what costs.
GRID = [(c, k, (2,)) for c in CASES for k in KERNELS] + [
    (CASES[0], (2, 3), ()),
    (CASES[2], (2, 3), (2, 1)),
]


@pytest.mark.parametrize(
    ("kind", "opts", "kernel", "batch_shape"),
    [(kind, opts, kernel, batch) for (kind, opts), kernel, batch in GRID],
    ids=lambda v: str(v),
)
def test_scan_matches_float64_reference(kind, opts, kernel, batch_shape):
    spatial = (5, 4, 3)[: len(kernel)]
    with jax.enable_x64(True):
        cell = make(kind, kernel, opts, param_dtype=jnp.float64)

        params = numpy_params(cell, 0)
        xs = numpy_normal(1, (*batch_shape, T, *spatial, C), np.float64)
        # Both scans in one compiled program (eagerly, each would compile on its own).
        run = jax.jit(
            lambda params, xs: (jr.scan(cell, params, xs), jr.scan(cell, params, xs, hoist=True))
        )
        (carry, ys), (_, ys_hoisted) = run(params, xs)

        p = jax.tree.map(np.asarray, params)
        x = np.moveaxis(np.asarray(xs), len(batch_shape), 0)
        state_shape = (*batch_shape, *spatial, H)
        ref_carry = (
            (np.zeros(state_shape), np.zeros(state_shape))
            if kind == "lstm"
            else np.zeros(state_shape)
        )
        refs = []
        for t in range(T):
            if kind == "lstm":
                ref_carry, y = ref_conv_lstm(p, ref_carry, x[t])
            else:
                ref_carry, y = ref_conv_gru(p, ref_carry, x[t], **opts)
            refs.append(y)
        ref = np.stack(refs, axis=len(batch_shape))
        np.testing.assert_allclose(ys, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ys_hoisted, ref, rtol=1e-10, atol=1e-12)
        for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(ref_carry), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [(3, 3), (2, 2)], ids=str)
def test_conv_lstm_equals_flax_conv_lstm_cell(kernel):
    """Flax: gates i, g, f, o, two biased convolutions, +1 on the forget pre-activation."""
    flax_cell = nn.ConvLSTMCell(features=H, kernel_size=kernel)
    xs = numpy_normal(0, (2, T, 6, 5, C))
    carry0 = flax_cell.initialize_carry(jax.random.key(1), xs[:, 0].shape)
    # Flax's parameter tree (by eval_shape: its initialisers are not compiled), values drawn by
    # NumPy, biases nonzero.
    v = numpy_init(flax_cell.init, jax.random.key(2), carry0, xs[:, 0], seed=2)["params"]
    # Gates reordered to i, f, g, o, the biases and Flax's forget offset summed into b:
    # jr.interop's mapping (tests/test_interop_flax_mgu_conv.py has the other dimensions).
    cell, params = jr.interop.from_flax_linen(v, flax_cell)
    assert cell.config == jr.conv_lstm(C, H, kernel).config
    (c, h), flax_ys = nn.RNN(flax_cell, return_carry=True).apply({"params": {"cell": v}}, xs)
    carry, ys = jr.scan(cell, params, xs)
    np.testing.assert_allclose(ys, flax_ys, atol=1e-5)
    np.testing.assert_allclose(carry.c, c, atol=1e-5)
    np.testing.assert_allclose(carry.h, h, atol=1e-5)


def test_forget_bias_sets_the_f_block_and_kernels_are_lecun_normal():
    params = jr.conv_lstm(4, 8, (3, 3), forget_bias=2.0).init(jax.random.key(0))
    np.testing.assert_array_equal(params.b[8:16], 2.0)
    np.testing.assert_array_equal(params.b[:8], 0.0)
    np.testing.assert_array_equal(params.b[16:], 0.0)
    big = jr.conv_lstm(16, 32, (3, 3)).init(jax.random.key(1))
    # LeCun normal (truncated): variance 1 / fan_in, fan_in = 3 * 3 * in_channels.
    assert abs(float(jnp.var(big.w_ih)) * 9 * 16 - 1.0) < 0.1
    assert abs(float(jnp.var(big.w_hh)) * 9 * 32 - 1.0) < 0.1


@pytest.mark.parametrize(("kind", "opts"), CASES, ids=["lstm", "gru", "gru-reset_after"])
def test_gradients_match_finite_differences(kind, opts):
    with jax.enable_x64(True):
        cell = make(kind, (3, 2), opts, param_dtype=jnp.float64)
        params = numpy_params(cell, 0)
        xs = numpy_normal(1, (2, 3, 4, 3, C), np.float64)

        def loss(params, xs):
            return jnp.sum(jr.scan(cell, params, xs)[1] ** 2)

        check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], eps=1e-6)


def test_bfloat16_policy_keeps_the_state_float32():
    cell = jr.conv_lstm(C, H, (3, 3), dtype=jnp.bfloat16)
    params = numpy_params(cell, 0)
    xs = numpy_normal(1, (2, T, 5, 5, C))
    carry, ys = jr.scan(cell, params, xs)
    assert params.w_ih.dtype == jnp.float32
    assert carry.c.dtype == jnp.float32 and ys.dtype == jnp.bfloat16
    _, ys32 = jr.scan(jr.conv_lstm(C, H, (3, 3)), params, xs)
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=0.05)


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="kernel_size: expected a sequence"):
        jr.conv_lstm(C, H, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        jr.conv_gru(C, H, (3, 0))
    cell = jr.conv_lstm(C, H, (3, 3))
    params = numpy_params(cell, 0)
    with pytest.raises(ValueError, match="xs: expected feature size"):
        jr.scan(cell, params, jnp.ones((2, T, 5, 5, C + 1)))
    with pytest.raises(ValueError, match=r"x: expected shape \(\*batch, <2 spatial dims>"):
        cell.apply(params, cell.initial_carry(), jnp.ones((5, C)))
    with pytest.raises(ValueError, match="carry: expected batch and spatial shape"):
        cell.apply(params, cell.initial_carry((5, 4)), jnp.ones((5, 5, C)))


def test_lengths_index_the_batch_and_time_major_moves_only_time():
    cell = jr.conv_gru(C, H, (3, 3))
    params = numpy_params(cell, 0)
    xs = numpy_normal(1, (3, T, 5, 4, C))
    lengths = jnp.array([T, 2, 0])

    # Every scan of the test in one compiled program (``lengths`` is a concrete constant in it,
    # range-checked as in an eager call); eagerly, each scan would compile on its own.
    @jax.jit
    def run(params, xs):
        alone = [jr.scan(cell, params, xs[b, :n]) for b, n in enumerate(lengths.tolist())]
        time_major = jr.scan(cell, params, jnp.moveaxis(xs, 1, 0), time_major=True)
        plain = jr.scan(cell, params, xs)
        return jr.scan(cell, params, xs, lengths=lengths), alone, time_major, plain

    (carry, ys), alone, (_, tm_ys), (_, plain_ys) = run(params, xs)
    assert ys.shape == (3, T, 5, 4, H) and carry.shape == (3, 5, 4, H)
    for b, n in enumerate(lengths.tolist()):  # each sequence alone, cut at its length
        c_b, ys_b = alone[b]
        np.testing.assert_allclose(ys[b, :n], ys_b, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        np.testing.assert_allclose(carry[b], c_b, atol=1e-6)
    np.testing.assert_allclose(jnp.moveaxis(tm_ys, 0, 1), plain_ys, atol=1e-6)
    with pytest.raises(ValueError, match="lengths"):
        jr.scan(cell, params, xs, lengths=jnp.full((3, 5, 4), T))
    with pytest.raises(ValueError, match="spatial_dims=2"):
        jr.scan(cell, params, jnp.ones((T, 4, C)))
