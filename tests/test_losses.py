"""Masked sequence losses against optax (reference implementations) and the textbook formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn import losses

B, T, V = 3, 5, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.arange(T)[None, :] < LENGTHS[:, None]


def _rand(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _reduce_reference(per_step, mask, reduction):
    """Reductions written out with NumPy from optax's per-step losses."""
    per_step = np.where(mask, np.asarray(per_step, np.float64), 0.0)
    if reduction == "none":
        return per_step
    if reduction == "sum":
        return per_step.sum(-1)
    return per_step.sum() / max(mask.sum(), 1)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_softmax_cross_entropy_matches_optax(reduction):
    logits = _rand(0, (B, T, V))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, V, (B, T)), jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        reference = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    got = losses.softmax_cross_entropy(logits, labels, jnp.asarray(MASK), reduction=reduction)
    np.testing.assert_allclose(got, _reduce_reference(reference, MASK, reduction), rtol=1e-6)
    unmasked = losses.softmax_cross_entropy(logits, labels, reduction=reduction)
    all_valid = np.ones_like(MASK)
    np.testing.assert_allclose(unmasked, _reduce_reference(reference, all_valid, reduction), 1e-6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_sigmoid_binary_cross_entropy_matches_optax_and_the_formula(reduction):
    logits = 3.0 * _rand(2, (B, T))
    labels = jnp.asarray(np.random.default_rng(3).uniform(size=(B, T)), jnp.float32)  # soft
    with jax.numpy_dtype_promotion("standard"):
        reference = optax.losses.sigmoid_binary_cross_entropy(logits, labels)
    got = losses.sigmoid_binary_cross_entropy(
        logits, labels, jnp.asarray(MASK), reduction=reduction
    )
    np.testing.assert_allclose(got, _reduce_reference(reference, MASK, reduction), rtol=1e-5)
    # Ng's Sequence Models: L = -y log y_hat - (1 - y) log(1 - y_hat), y_hat = sigmoid(z), float64.
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    y_hat = 1.0 / (1.0 + np.exp(-z))
    formula = -y * np.log(y_hat) - (1 - y) * np.log(1 - y_hat)
    np.testing.assert_allclose(got, _reduce_reference(formula, MASK, reduction), rtol=1e-5)


def test_padding_is_never_read():
    mask = jnp.asarray(MASK)
    logits = jnp.where(mask[..., None], _rand(4, (B, T, V)), jnp.nan)
    labels = jnp.where(mask, jnp.asarray(np.random.default_rng(5).integers(0, V, (B, T))), -7)
    bin_logits = jnp.where(mask, _rand(6, (B, T)), jnp.inf)
    bin_labels = jnp.where(mask, 1.0, jnp.nan)

    def total(logits, bin_logits):
        return losses.softmax_cross_entropy(
            logits, labels, mask, reduction="mean"
        ) + losses.sigmoid_binary_cross_entropy(bin_logits, bin_labels, mask, reduction="mean")

    value, grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(logits, bin_logits)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(grads[0])[~MASK] == 0.0) and np.all(np.asarray(grads[1])[~MASK] == 0)


def test_sum_is_J_per_sequence_and_mean_is_per_token():
    per_step = jnp.arange(B * T, dtype=jnp.float32).reshape(B, T)
    j = losses.reduce_sequence(per_step, jnp.asarray(MASK), "sum")
    np.testing.assert_allclose(j, [0 + 1 + 2 + 3 + 4, 5 + 6, 0.0])
    mean = losses.reduce_sequence(per_step, jnp.asarray(MASK), "mean")
    np.testing.assert_allclose(mean, (10 + 11) / 7)
    nothing = jnp.zeros((B, T), bool)
    assert float(losses.reduce_sequence(per_step, nothing, "mean")) == 0.0  # no valid token


def test_bad_inputs_raise_clear_errors():
    logits, labels = _rand(0, (B, T, V)), jnp.zeros((B, T), jnp.int32)
    with pytest.raises(TypeError, match="labels: expected integer class ids"):
        losses.softmax_cross_entropy(logits, labels.astype(jnp.float32))
    with pytest.raises(ValueError, match="logits: expected shape"):
        losses.softmax_cross_entropy(logits[:, :-1], labels)
    with pytest.raises(TypeError, match="mask: expected a bool array"):
        losses.softmax_cross_entropy(logits, labels, jnp.ones((B, T), jnp.int32))
    with pytest.raises(ValueError, match="mask: expected shape"):
        losses.softmax_cross_entropy(logits, labels, jnp.ones((B, T - 1), bool))
    with pytest.raises(ValueError, match="reduction: expected one of"):
        losses.softmax_cross_entropy(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="labels: expected shape"):
        losses.sigmoid_binary_cross_entropy(logits[..., 0], labels[:, :-1].astype(jnp.float32))
