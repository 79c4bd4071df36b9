"""The architectures of *Deep Learning* chapter 10 as recipes: each trains a little on a task.

Besides "the loss falls", each recipe is checked against an independent computation: the final
hidden state against the output sequence, teacher forcing against free running fed its own
outputs, and padding invariance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn as jr
from jaxrnn import losses, recipes

B, T = 32, 8


def np_params(init, seed=0):
    """Params of ``init``'s structure from NumPy: N(0, 1/fan_in) matrices, zero vectors."""
    shapes = jax.eval_shape(init, jax.random.key(0))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    out = [
        jnp.asarray(
            rng.standard_normal(x.shape) / np.sqrt(x.shape[0])
            if x.ndim == 2
            else np.zeros(x.shape),
            x.dtype,
        )
        for x in leaves
    ]
    return jax.tree.unflatten(tree, out)


def train(loss_fn, params, batches, lr=1e-2):
    """Adam (optax) on ``loss_fn(params, *batch)``; returns params and the loss history."""
    optimizer = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    history = []
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float scalars
        opt_state = optimizer.init(params)
        for batch in batches:
            params, opt_state, loss = step(params, opt_state, batch)
            history.append(float(loss))
    return params, np.array(history)


def _fell(history, factor):
    first, last = history[:5].mean(), history[-5:].mean()
    print(f"loss {first:.4f} -> {last:.4f} (ratio {last / first:.3f}, required < {factor})")
    assert last < factor * first, (first, last)


# --------------------------------------------------------------------------------------------
# many-to-many: label_t = [x_t + x_{t-1} > 0] (needs one step of memory), variable lengths.


def _m2m_batch(rng):
    x = rng.standard_normal((B, T, 1)).astype(np.float32)
    prev = np.concatenate([np.zeros((B, 1, 1), np.float32), x[:, :-1]], axis=1)
    labels = (x + prev > 0)[..., 0].astype(np.float32)
    lengths = rng.integers(1, T + 1, B).astype(np.int32)
    return x, labels, lengths


def test_many_to_many_learns_a_per_step_task():
    model = recipes.many_to_many(jr.gru(1, 12), output_size=1)

    def loss_fn(params, x, labels, lengths):
        logits = model.apply(params, x, lengths=lengths)[..., 0]
        mask = losses.length_mask(lengths, T)
        return losses.sigmoid_binary_cross_entropy(logits, labels, mask, reduction="mean")

    rng = np.random.default_rng(0)
    params, history = train(loss_fn, np_params(model.init), [_m2m_batch(rng) for _ in range(150)])
    _fell(history, 0.5)

    x, _, lengths = _m2m_batch(rng)
    apply = jax.jit(lambda x: model.apply(params, x, lengths=lengths))
    out = apply(x)
    garbage = np.where(np.arange(T)[None, :, None] < lengths[:, None, None], x, 1e3)
    np.testing.assert_array_equal(out, apply(garbage))
    assert np.all(np.asarray(out)[np.arange(T)[None, :] >= lengths[:, None]] == 0.0)


# --------------------------------------------------------------------------------------------
# many-to-one: is the sum of a variable-length sequence positive? (bidirectional)


def _m2o_batch(rng):
    x = rng.standard_normal((B, T, 1)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B).astype(np.int32)
    valid = np.arange(T)[None, :] < lengths[:, None]
    labels = (np.where(valid, x[..., 0], 0.0).sum(1) > 0).astype(np.int32)
    return x, labels, lengths


def test_many_to_one_learns_a_sequence_classification():
    model = recipes.many_to_one(jr.rnn(jr.gru, 1, 8, bidirectional=True), output_size=2)

    def loss_fn(params, x, labels, lengths):
        logits = model.apply(params, x, lengths=lengths)
        return losses.softmax_cross_entropy(logits[:, None], labels[:, None], reduction="mean")

    rng = np.random.default_rng(1)
    params, history = train(loss_fn, np_params(model.init), [_m2o_batch(rng) for _ in range(150)])
    _fell(history, 0.5)
    x, labels, lengths = _m2o_batch(np.random.default_rng(2))
    logits = jax.jit(lambda p: model.apply(p, x, lengths=lengths))(params)
    accuracy = np.mean(np.argmax(logits, -1) == labels)
    assert accuracy > 0.85, accuracy


def test_final_hidden_reads_the_last_valid_outputs():
    net = jr.rnn(jr.lstm, 1, 4, num_layers=2, bidirectional=True)
    params = np_params(net.init)
    x, _, lengths = _m2o_batch(np.random.default_rng(3))
    carry, ys = jax.jit(lambda p, x, n: net.apply(p, x, lengths=n))(params, x, lengths)
    h = recipes.final_hidden(carry)
    last = np.asarray(ys)[np.arange(B), lengths - 1, :4]  # forward: the last valid step
    first = np.asarray(ys)[:, 0, 4:]  # backward: it ends at the first step
    np.testing.assert_allclose(h, np.concatenate([last, first], -1), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------
# one-to-many: (amplitude, frequency) -> a * sin(w * t), t = 1..T.


def _o2m_batch(rng):
    amp = rng.uniform(0.2, 1.0, B)
    freq = rng.uniform(0.3, 1.0, B)
    y = amp[:, None] * np.sin(freq[:, None] * np.arange(1, T + 1)[None, :])
    return np.stack([amp, freq], -1).astype(np.float32), y[..., None].astype(np.float32)


def test_one_to_many_learns_and_generates_consistently():
    model = recipes.one_to_many(jr.gru(2 + 1, 16), vector_size=2, output_size=1)

    def loss_fn(params, vector, y):
        return jnp.mean((model.apply(params, vector, y) - y) ** 2)

    rng = np.random.default_rng(4)
    params, history = train(loss_fn, np_params(model.init), [_o2m_batch(rng) for _ in range(150)])
    _fell(history, 0.3)

    vector, y = _o2m_batch(rng)
    vector, y = vector[:4], y[:4]
    generated = jax.jit(lambda p, v: model.generate(p, v, T))(params, vector)
    assert generated.shape == (4, T, 1)
    # Teacher forcing fed the model's own outputs is free running.
    forced = jax.jit(model.apply)(params, vector, generated)
    np.testing.assert_allclose(forced, generated, atol=1e-5)


# --------------------------------------------------------------------------------------------
# output-to-hidden recurrence (Jordan) with teacher forcing: y_t = 0.6 y_{t-1} + 0.5 tanh(2 x_t).


def _jordan_batch(rng):
    x = rng.standard_normal((B, T, 1)).astype(np.float32)
    y = np.zeros((B, T, 1), np.float32)
    prev = np.zeros((B, 1), np.float32)
    for t in range(T):
        prev = 0.6 * prev + 0.5 * np.tanh(2 * x[:, t])
        y[:, t] = prev
    return x, y


def test_jordan_rnn_trained_with_teacher_forcing():
    cell = jr.jordan_rnn(1, 16, 1)

    def loss_fn(params, x, y):
        return jnp.mean((recipes.jordan_teacher_forcing(cell, params, x, y) - y) ** 2)

    free_mse = jax.jit(lambda p, x, y: jnp.mean((jr.scan(cell, p, x)[1] - y) ** 2))
    rng = np.random.default_rng(5)
    params0 = np_params(cell.init)
    params, history = train(loss_fn, params0, [_jordan_batch(rng) for _ in range(200)])
    _fell(history, 0.1)
    x, y = _jordan_batch(rng)
    # Trained without ever running freely, the model also predicts well when fed its outputs.
    assert free_mse(params, x, y) < 0.1 * free_mse(params0, x, y)


def test_jordan_teacher_forcing_is_scan_fed_the_targets():
    cell = jr.jordan_rnn(2, 5, 3)
    params = np_params(cell.init, seed=6)
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 4, T, 2)), jnp.float32)  # two batch dims
    y = jnp.asarray(rng.standard_normal((2, 4, T, 3)), jnp.float32)
    y0 = jnp.asarray(rng.standard_normal((2, 4, 3)), jnp.float32)
    forced = recipes.jordan_teacher_forcing(cell, params, x, y, initial=y0)
    # Reference: a Python loop of cell.apply whose carry is overwritten by the ground truth.
    for t in range(T):
        _, o = cell.apply(params, y0 if t == 0 else y[..., t - 1, :], x[..., t, :])
        np.testing.assert_allclose(forced[..., t, :], o, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="teacher forcing needs a carry equal to"):
        recipes.jordan_teacher_forcing(jr.lstm(2, 3), params, x, y)
    with pytest.raises(ValueError, match="targets: expected shape"):
        recipes.jordan_teacher_forcing(cell, params, x, y[..., :2])
