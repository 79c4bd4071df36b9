"""Tests of jaxrnn.train: optimizer, train step, truncated BPTT and fit.

References are computed independently of the code under test: manual SGD updates from
``jax.grad`` of the plain loss, the learning-rate schedule from its closed form, chunk losses
and carries from direct ``model.apply`` calls (the model: :mod:`jaxrnn.models`' char LM).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_close

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn import data

TEXT = "the cat sat on the mat. " * 8
VOCAB = data.Vocab.from_text(TEXT)
B, T = 2, 5


def tiny_model(cell="lstm", **kwargs):
    return jm.char_lm(VOCAB.size, 8, cell=cell, embed_size=4, **kwargs)


def jitted(model):
    """``model`` with a compiled ``apply`` (eager scans would recompile at every call)."""
    return model._replace(apply=jax.jit(model.apply))


def tiny_batches(batch_size=B, seq_len=T, seed=0):
    return data.TextBatches(VOCAB.encode(TEXT), batch_size, seq_len, seed=seed)


def as_numpy(tree):
    """Host copies (not views, which would pin the device buffers and block donation)."""
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


# --------------------------------------------------------------------------------------------
# Optimizer and train step.


def test_default_optimizer_schedule_and_decay_mask():
    """With zero gradients, AdamW only decays, by ``lr_t * wd * w``: read the schedule off it."""
    lr, total, warmup, wd, final = 0.1, 20, 5, 0.5, 0.1
    opt = jt.default_optimizer(lr, total, warmup_steps=warmup, weight_decay=wd)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    state = opt.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def update(state, params):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with floats
            return opt.update(zeros, state, params)

    for t in range(total + 3):
        updates, state = update(state, params)
        np.testing.assert_array_equal(updates["b"], 0.0)  # vectors are not decayed
        lr_t = float(-updates["w"][0, 0] / (wd * params["w"][0, 0]))
        if t < warmup:
            expected = lr / warmup + (lr - lr / warmup) * t / warmup
        else:
            progress = min(t - warmup, total - warmup) / (total - warmup)
            expected = final * lr + (lr - final * lr) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_t == pytest.approx(expected, rel=1e-5), t
        params = optax.apply_updates(params, updates)


def test_default_optimizer_clips_global_norm():
    """Adam is scale-invariant per step, but not across steps: a huge first gradient, clipped
    to norm 1, must weigh like a gradient of norm 1 in the second step's moments."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    opt = jt.default_optimizer(lr, 10, warmup_steps=1, weight_decay=0.0, clip_norm=1.0)
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    got = []
    for g in ([3e6, 4e6], [0.3, 0.4]):
        with jax.numpy_dtype_promotion("standard"):
            updates, state = opt.update({"w": jnp.array(g)}, state, params)
        got.append(np.asarray(updates["w"]))
    # NumPy Adam on the clipped gradients [0.6, 0.8] then [0.3, 0.4] (norm 0.5: unclipped).
    m = v = np.zeros(2)
    for t, (g, u) in enumerate(zip([[0.6, 0.8], [0.3, 0.4]], got, strict=True), start=1):
        g = np.array(g)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        expected = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(u, expected, rtol=1e-4)


def quadratic_loss(params, carry, batch, key):
    noise = 0.01 * jax.random.normal(key, batch["y"].shape)
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((pred + noise - batch["y"]) ** 2), carry


def test_train_step_is_one_sgd_step():
    lr = 0.1
    params = {"w": jnp.array([0.5, -1.0]), "b": jnp.array(0.3)}
    batch = {"x": jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]), "y": jnp.array([1.0, 2, 3])}
    state = jt.init_state(params, optax.sgd(lr), jax.random.key(7))
    params0, rng0 = as_numpy(state.params), as_numpy(jax.random.key_data(state.rng))
    step = jt.make_train_step(quadratic_loss, optax.sgd(lr))
    new, metrics = step(state, batch)

    # Reference: the same split of the key, jax.grad of the plain loss, a manual update.
    _, key = jax.random.split(jax.random.wrap_key_data(rng0))
    loss_ref, grads = jax.value_and_grad(lambda p: quadratic_loss(p, (), batch, key)[0])(params0)
    assert_trees_close(new.params, jax.tree.map(lambda p, g: p - lr * g, params0, grads))
    assert float(metrics["loss"]) == pytest.approx(float(loss_ref), rel=1e-6)
    g = np.concatenate([np.ravel(grads["w"]), np.ravel(grads["b"])])
    assert float(metrics["grad_norm"]) == pytest.approx(float(np.linalg.norm(g)), rel=1e-6)
    assert int(new.step) == 1
    assert not np.array_equal(jax.random.key_data(new.rng), rng0)
    # The state was donated: its buffers now belong to the new state.
    assert state.params["w"].is_deleted()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_reduces_loss(cell):
    model = jitted(tiny_model(cell))
    opt = jt.default_optimizer(3e-2, 60, warmup_steps=5)
    batches = tiny_batches(batch_size=4, seq_len=8)
    state = jt.init_state(
        model.init(jax.random.key(0)), opt, jax.random.key(1), model.initial_carry((4,))
    )
    step = jt.make_train_step(jm.lm_loss(model), opt)
    _, history = jt.fit(state, step, batches, 60, progress=False)
    losses = history.train["loss"]
    assert losses[0] == pytest.approx(math.log(VOCAB.size), rel=0.15)
    # The text repeats every 24 characters: most of it becomes predictable.
    assert np.mean(losses[-5:]) < 0.4 * losses[0]


# --------------------------------------------------------------------------------------------
# Truncated BPTT.


def random_carry(model, key, batch_size=B):
    leaves, tree = jax.tree.flatten(model.initial_carry((batch_size,)))
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_truncated_loss_has_no_carry_gradient(cell):
    model = tiny_model(cell)
    params = model.init(jax.random.key(0))
    carry = random_carry(model, jax.random.key(1))
    batch = tiny_batches()(1)  # reset is False: the carry matters
    loss = jm.lm_loss(model)

    @jax.jit
    def values_and_grads(carry):
        def value(fn):
            return lambda c: fn(params, c, batch, None)[0]

        truncated, full = value(jt.truncated(loss)), value(loss)
        return truncated(carry), full(carry), jax.grad(truncated)(carry), jax.grad(full)(carry)

    v_trunc, v_full, g_trunc, g_full = values_and_grads(carry)
    assert float(v_trunc) == float(v_full)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_trunc))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_full)) > 1e-4


# GRU carries are covered by test_truncated_loss_has_no_carry_gradient.
@pytest.mark.parametrize("cell", ["lstm"])
def test_train_steps_pass_the_carry_and_stop_its_gradient(cell):
    """Two consecutive chunks: the second starts from the first one's carry, and its update is
    the gradient of the second chunk's loss alone, with that carry held constant."""
    model, lr = tiny_model(cell), 1.0
    loss = jm.lm_loss(model)
    batches = tiny_batches()
    b0, b1 = batches(0), batches(1)
    assert not bool(b1["reset"].any())
    zero = model.initial_carry((B,))
    state = jt.init_state(
        model.init(jax.random.key(0)),
        optax.sgd(lr),
        jax.random.key(1),
        jax.tree.map(jnp.copy, zero),
    )  # the state is donated: give it its own zeros
    params0 = as_numpy(state.params)
    step = jt.make_train_step(loss, optax.sgd(lr))
    state, _ = step(state, b0)
    params1, carry1 = as_numpy(state.params), as_numpy(state.carry)
    state, m1 = step(state, b1)
    params2 = as_numpy(state.params)

    @jax.jit
    def references(params0, params1, carry1):
        # The carry after chunk 0, computed directly from the initial parameters.
        ref_carry1, _ = model.apply(params0, zero, b0["inputs"])
        # Chunk 1's loss from that carry, and from zeros.
        loss1 = loss(params1, carry1, b1, None)[0]
        loss1_from_zero = loss(params1, zero, b1, None)[0]
        # The per-chunk gradient: carry1 is an input, a constant with respect to p.
        g_chunk = jax.grad(lambda p: loss(p, carry1, b1, None)[0])(params1)

        # Full BPTT through both chunks, for contrast.
        def through_both(p):
            c, _ = model.apply(p, zero, b0["inputs"])
            return loss(p, c, b1, None)[0]

        return ref_carry1, loss1, loss1_from_zero, g_chunk, jax.grad(through_both)(params1)

    ref_carry1, loss1, loss1_from_zero, g_chunk, g_full = references(params0, params1, carry1)
    assert_trees_close(carry1, ref_carry1, rtol=1e-5, atol=1e-6)
    assert float(m1["loss"]) == pytest.approx(float(loss1), rel=1e-5)
    assert abs(float(loss1) - float(loss1_from_zero)) > 1e-4
    # SGD with lr=1: the update is minus the per-chunk gradient.
    assert_trees_close(
        jax.tree.map(lambda a, b: a - b, params1, params2), g_chunk, rtol=1e-4, atol=1e-6
    )
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), g_full, g_chunk))
    assert max(float(d) for d in diff) > 1e-5


def test_reset_restarts_the_carry():
    model = tiny_model("lstm")
    params = model.init(jax.random.key(0))
    batches = tiny_batches()
    first_of_epoch_1 = batches(batches.num_chunks)
    assert bool(first_of_epoch_1["reset"].all())
    no_reset = {**first_of_epoch_1, "reset": jnp.zeros((B,), bool)}
    loss = jax.jit(jm.lm_loss(model))
    junk = random_carry(model, jax.random.key(1))
    zero = model.initial_carry((B,))
    assert float(loss(params, junk, first_of_epoch_1, None)[0]) == float(
        loss(params, zero, first_of_epoch_1, None)[0]
    )
    assert float(loss(params, junk, no_reset, None)[0]) != float(
        loss(params, zero, no_reset, None)[0]
    )


# --------------------------------------------------------------------------------------------
# The fit loop.


def test_fit_matches_manual_loop_and_records_history():
    model = jitted(tiny_model("gru", dropout=0.2))
    opt = jt.default_optimizer(1e-2, 10)
    batches = tiny_batches()

    def fresh():
        return jt.init_state(
            model.init(jax.random.key(0)), opt, jax.random.key(1), model.initial_carry((B,))
        )

    step = jt.make_train_step(jm.lm_loss(model), opt)
    state, manual = fresh(), []
    for s in range(7):
        state, metrics = step(state, batches(s))
        manual.append(float(metrics["loss"]))
    manual_params = as_numpy(state.params)

    seen = []
    evals = []

    def eval_fn(st):
        evals.append(int(st.step))
        return {"loss": 1.0 / int(st.step), "n": 3}

    state, history = jt.fit(
        fresh(),
        step,
        batches,
        7,
        eval_fn=eval_fn,
        eval_every=3,
        progress=False,
        log_every=2,
        callback=lambda s, st, m: seen.append((s, int(st.step))),
    )
    assert history.train["step"] == list(range(1, 8))
    assert history.train["loss"] == manual  # bit for bit: same steps, same batches, same keys
    assert len(history.train["grad_norm"]) == 7
    assert history.eval == {"step": [3, 6, 7], "loss": [1 / 3, 1 / 6, 1 / 7], "n": [3.0] * 3}
    assert evals == [3, 6, 7]
    assert seen == [(s, s) for s in range(1, 8)]
    assert_trees_close(state.params, manual_params, rtol=0, atol=0)
    # Already at 7 steps: nothing to do.
    state, again = jt.fit(state, step, batches, 7, progress=False)
    assert int(state.step) == 7 and again.train == {"step": []}
    assert jt.History.from_json(history.to_json()) == history
