"""Layer-normalised LSTM and GRU (jaxrnn.layernorm).

References: float64 NumPy loops of the equations (PyTorch's benchmark LayerNormLSTMCell for the
LSTM, Ba et al.'s layer-normalised GRU), with random gains and biases so every parameter
matters; finite differences; the normalisation's own invariances.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.layernorm import EPSILON, layer_norm

IN, H, T = 3, 4, 5


def np_ln(a, gain, bias):
    mu = a.mean(-1, keepdims=True)
    var = ((a - mu) ** 2).mean(-1, keepdims=True)
    return (a - mu) / np.sqrt(var + EPSILON) * gain + bias


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_ln_lstm(p, carry, x):
    h, c = carry
    gates = np_ln(x @ p.w_ih, p.ln_ih_scale, p.ln_ih_bias) + np_ln(
        h @ p.w_hh, p.ln_hh_scale, p.ln_hh_bias
    )
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = np_ln(sigmoid(f) * c + sigmoid(i) * np.tanh(g), p.ln_c_scale, p.ln_c_bias)
    h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def ref_ln_gru(p, h, x):
    x_r, x_z, x_n = np.split(np_ln(x @ p.w_ih, p.ln_ih_scale, p.ln_ih_bias), 3, axis=-1)
    h_r, h_z, h_n = np.split(np_ln(h @ p.w_hh, p.ln_hh_scale, p.ln_hh_bias), 3, axis=-1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, h


def randomised(params, seed):
    keys = jax.random.split(jax.random.key(seed), len(params))
    return type(params)(
        *(
            a + 0.5 * jax.random.normal(k, a.shape, a.dtype)
            for a, k in zip(params, keys, strict=True)
        )
    )


@pytest.mark.parametrize("batch_shape", [(), (2,), (2, 3)])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_scan_matches_float64_reference(kind, batch_shape):
    factory = jr.layer_norm_lstm if kind == "lstm" else jr.layer_norm_gru
    with jax.enable_x64(True):
        cell = factory(IN, H, param_dtype=jnp.float64)
        params = randomised(cell.init(jax.random.key(0)), 1)
        xs = jax.random.normal(jax.random.key(2), (*batch_shape, T, IN), jnp.float64)
        carry, ys = jr.scan(cell, params, xs)
        _, ys_hoisted = jr.scan(cell, params, xs, hoist=True)
        p = jax.tree.map(np.asarray, params)
        x = np.moveaxis(np.asarray(xs), len(batch_shape), 0)
        zeros = np.zeros((*batch_shape, H))
        state = (zeros, zeros) if kind == "lstm" else zeros
        refs = []
        for t in range(T):
            state, y = (ref_ln_lstm if kind == "lstm" else ref_ln_gru)(p, state, x[t])
            refs.append(y)
        ref = np.stack(refs, axis=len(batch_shape))
        np.testing.assert_allclose(ys, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ys_hoisted, ref, rtol=1e-10, atol=1e-12)
        for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(state), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradients_match_finite_differences(kind):
    factory = jr.layer_norm_lstm if kind == "lstm" else jr.layer_norm_gru
    with jax.enable_x64(True):
        cell = factory(IN, H, param_dtype=jnp.float64)
        params = randomised(cell.init(jax.random.key(0)), 1)
        xs = jax.random.normal(jax.random.key(2), (2, 3, IN), jnp.float64)

        def loss(params, xs):
            return jnp.sum(jr.scan(cell, params, xs)[1] ** 2)

        check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], eps=1e-6)


def test_layer_norm_is_invariant_to_shift_and_scale_of_its_input():
    a = jax.random.normal(jax.random.key(0), (6, 12))
    gain, bias = jnp.full(12, 1.5), jnp.full(12, 0.25)
    out = layer_norm(a, gain, bias)
    np.testing.assert_allclose(layer_norm(3.0 * a + 7.0, gain, bias), out, atol=1e-4)  # eps, f32
    np.testing.assert_allclose(out.mean(-1), 0.25, atol=1e-5)
    np.testing.assert_allclose(((out - 0.25) / 1.5).std(-1), 1.0, atol=1e-3)
    assert bool(jnp.isfinite(layer_norm(jnp.ones((2, 12)), gain, bias)).all())  # var = 0


def test_input_scale_does_not_change_the_lstm():
    """LN of x W_ih: scaling the inputs (or w_ih) leaves every step unchanged (up to eps)."""
    cell = jr.layer_norm_lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    _, ys = jr.scan(cell, params, xs)
    _, ys_scaled = jr.scan(cell, params, 10.0 * xs)
    np.testing.assert_allclose(ys, ys_scaled, atol=1e-4)


def test_init_and_forget_bias():
    params = jr.layer_norm_lstm(IN, H, forget_bias=2.0).init(jax.random.key(0))
    np.testing.assert_array_equal(params.ln_ih_bias[H : 2 * H], 2.0)
    np.testing.assert_array_equal(params.ln_ih_bias[:H], 0.0)
    np.testing.assert_array_equal(params.ln_ih_scale, 1.0)
    assert params.ln_c_scale.shape == (H,) and params.w_hh.shape == (H, 4 * H)
    gru = jr.layer_norm_gru(IN, H).init(jax.random.key(0))
    assert gru.ln_hh_bias.shape == (3 * H,) and gru.w_ih.shape == (IN, 3 * H)


def test_bfloat16_policy():
    cell = jr.layer_norm_lstm(IN, H, dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    carry, ys = jr.scan(cell, params, xs)
    assert carry.c.dtype == jnp.float32 and ys.dtype == jnp.bfloat16
    _, ys32 = jr.scan(jr.layer_norm_lstm(IN, H), params, xs)
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=0.05)
