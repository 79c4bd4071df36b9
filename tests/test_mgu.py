"""The minimal gated unit (jaxrnn.mgu).

References: a float64 NumPy loop of Flax's MGUCell equations, and Flax's ``nn.MGUCell`` itself
on the same weights (both ``reset_gate`` settings); finite differences.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr

IN, H, T = 3, 4, 6


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_mgu(p, h, x, reset_gate):
    W_xf, W_xn = np.split(p.w_ih, 2, axis=-1)
    W_hf, W_hn = np.split(p.w_hh, 2, axis=-1)
    b_xf, b_xn = np.split(p.b_ih, 2)
    f = sigmoid(x @ W_xf + b_xf + h @ W_hf)
    rec = h @ W_hn + p.b_hh
    n = np.tanh(x @ W_xn + b_xn + (f * rec if reset_gate else rec))
    return (1 - f) * n + f * h


@pytest.mark.parametrize("batch_shape", [(), (2,), (2, 3)])
@pytest.mark.parametrize("reset_gate", [True, False])
def test_scan_matches_float64_reference(reset_gate, batch_shape):
    with jax.enable_x64(True):
        cell = jr.mgu(IN, H, reset_gate=reset_gate, param_dtype=jnp.float64)
        params = cell.init(jax.random.key(0))
        keys = jax.random.split(jax.random.key(1), 4)
        params = jr.MGUParams(
            *(
                a + 0.3 * jax.random.normal(k, a.shape, a.dtype)
                for a, k in zip(params, keys, strict=True)
            )
        )
        xs = jax.random.normal(jax.random.key(2), (*batch_shape, T, IN), jnp.float64)
        carry, ys = jr.scan(cell, params, xs)
        p = jax.tree.map(np.asarray, params)
        x = np.moveaxis(np.asarray(xs), len(batch_shape), 0)
        h = np.zeros((*batch_shape, H))
        refs = []
        for t in range(T):
            h = ref_mgu(p, h, x[t], reset_gate)
            refs.append(h)
        np.testing.assert_allclose(ys, np.stack(refs, len(batch_shape)), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(carry, h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset_gate", [True, False])
def test_equals_flax_mgu_cell(reset_gate):
    flax_cell = nn.MGUCell(features=H, reset_gate=reset_gate)
    xs = jax.random.normal(jax.random.key(0), (2, T, IN))
    carry0 = flax_cell.initialize_carry(jax.random.key(1), xs[:, 0].shape)
    v = flax_cell.init(jax.random.key(2), carry0, xs[:, 0])["params"]
    v = jax.tree.map(lambda a: a + 0.1, v)  # nonzero biases everywhere
    # Flax's parameters (if, in; hf, hn) in jaxrnn's layout: jr.interop's mapping
    cell, params = jr.interop.from_flax_linen(v, flax_cell)
    assert cell.config == jr.mgu(IN, H, reset_gate=reset_gate).config
    flax_h, flax_ys = nn.RNN(flax_cell, return_carry=True).apply({"params": {"cell": v}}, xs)
    carry, ys = jr.scan(cell, params, xs)
    np.testing.assert_allclose(ys, flax_ys, atol=1e-6)
    np.testing.assert_allclose(carry, flax_h, atol=1e-6)


def test_init_matches_flax_defaults():
    params = jr.mgu(IN, 8).init(jax.random.key(0))
    np.testing.assert_array_equal(params.b_ih[:8], 1.0)  # forget_bias_init = ones
    np.testing.assert_array_equal(params.b_ih[8:], 0.0)
    np.testing.assert_array_equal(params.b_hh, 0.0)
    for k in range(2):  # each recurrent block orthogonal
        block = params.w_hh[:, 8 * k : 8 * (k + 1)]
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        cell = jr.mgu(IN, H, param_dtype=jnp.float64)
        params = cell.init(jax.random.key(0))
        xs = jax.random.normal(jax.random.key(1), (2, 4, IN), jnp.float64)

        def loss(params, xs):
            return jnp.sum(jr.scan(cell, params, xs)[1] ** 2)

        check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], eps=1e-6)


def test_bfloat16_policy():
    cell = jr.mgu(IN, H, dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0))
    carry, ys = jr.scan(cell, params, jnp.ones((2, T, IN)))
    assert carry.dtype == jnp.float32 and ys.dtype == jnp.bfloat16
