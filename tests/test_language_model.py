"""Tests of jaxrnn.models.language_model: the char LM's cells, regularisers, evaluation and
sampling.

References: evaluation against a loop of direct ``model.apply`` calls over chunks, sampling
against a Python loop over tokens, the regularised model against the plain one (rates of 0, and
the expectation of inverted dropout); old ``jaxrnn.train`` names fail with a pointer here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import VOCAB, B, T, jitted, tiny_batches, tiny_model

import jaxrnn as jr
import jaxrnn.models as jm
import jaxrnn.train as jt


@pytest.mark.parametrize(
    "cell,params_type,w_ih_cols,peep",
    [
        ("lstm", jr.LSTMParams, 32, None),
        ("gru", jr.GRUParams, 24, None),
        ("rnn", jr.SimpleRNNParams, 8, None),
        ("peephole", jr.LSTMParams, 32, (3, 8)),
        ("coupled", jr.LSTMParams, 24, None),
    ],
)
def test_char_lm_cells(cell, params_type, w_ih_cols, peep):
    model = tiny_model(cell)
    params = jax.eval_shape(model.init, jax.random.key(0))
    (layer,) = params.rnn
    assert isinstance(layer, params_type)
    assert layer.w_ih.shape == (4, w_ih_cols)
    if peep is not None:
        assert layer.w_peep.shape == peep
    assert params.embed.shape == (VOCAB.size, 4) and params.w_out.shape == (8, VOCAB.size)


def test_char_lm_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell"):
        jm.char_lm(5, cell="transformer")


@pytest.mark.parametrize("name", ["vocab_size", "embed_size"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, None])
def test_char_lm_rejects_sizes_naming_them(name, value):
    kwargs = {"vocab_size": 5, "hidden_size": 4, "embed_size": 3, name: value}
    with pytest.raises(ValueError, match=f"^{name} must be a positive int, got {value!r}$"):
        jm.char_lm(**kwargs)


def test_evaluate_lm_matches_a_loop():
    model = jitted(tiny_model("lstm"))
    params = model.init(jax.random.key(0))
    batches = tiny_batches()
    parts = [batches(k) for k in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
    carry, losses = model.initial_carry((B,)), []
    for batch in parts:
        carry, logits = model.apply(params, carry, batch["inputs"], reset=batch["reset"])
        logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
        targets = np.asarray(batch["targets"])
        losses.append(-np.take_along_axis(np.asarray(logp), targets[..., None], -1).mean())
    assert float(jm.evaluate_lm(model, params, stacked)) == pytest.approx(np.mean(losses), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Regularisers: the plain model at rates 0, its expectation without a key, new masks per step.

RATES = ("dropout", "input_dropout", "recurrent_dropout", "zoneout", "weight_drop")
RATES += ("embedding_dropout",)


def losses(model):
    """``loss(params, key)`` of one fixed batch, jit-compiled."""
    batch = tiny_batches()(0)
    carry = model.initial_carry((B,))
    loss_fn = jm.lm_loss(model)
    return jax.jit(lambda params, key: loss_fn(params, carry, batch, key)[0])


@functools.cache
def plain_loss():
    """:func:`losses` of the unregularised model, compiled once per test process."""
    return losses(tiny_model("lstm"))


def test_rates_of_zero_are_the_plain_model():
    plain = tiny_model("lstm")
    zero = tiny_model("lstm", **dict.fromkeys(RATES, 0.0))
    assert zero.config == plain.config
    params = plain.init(jax.random.key(0))
    key = jax.random.key(1)
    assert float(losses(zero)(params, key)) == float(plain_loss()(params, jax.random.clone(key)))
    config = jm.CharLMConfig(**dict.fromkeys(RATES, 0.0))
    assert (
        config == jm.CharLMConfig() and config.model(5).config == jm.CharLMConfig().model(5).config
    )


@pytest.mark.parametrize("name", RATES)
def test_each_rate_acts_in_training_only(name):
    model = tiny_model("lstm", **{name: 0.5})
    assert dict(model.config)[name] == 0.5
    params = model.init(jax.random.key(0))
    plain_params = jax.eval_shape(tiny_model("lstm").init, jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(plain_params)
    loss = losses(model)
    evaluation = float(loss(params, None))
    assert float(loss(params, None)) == evaluation  # deterministic
    if name == "zoneout":  # the expectation mixes old and new states: another function
        assert evaluation != float(plain_loss()(params, None))
    else:  # inverted dropout: the expectation is the undropped model, exactly
        assert evaluation == float(plain_loss()(params, None))
    trained = [float(loss(params, jax.random.key(k))) for k in (1, 1, 2)]
    assert trained[0] == trained[1] != trained[2]  # a function of the key
    assert trained[0] != evaluation


def test_train_steps_draw_new_masks_from_the_state_rng():
    rates = dict(zip(RATES, (0.1, 0.2, 0.2, 0.1, 0.3, 0.1), strict=True))
    model = tiny_model("lstm", **rates)
    batch = dict(tiny_batches()(0), reset=jnp.ones((B,), bool))  # every step from zeros
    state = jt.init_state(
        model.init(jax.random.key(0)), optax.sgd(0.0), jax.random.key(1), model.initial_carry((B,))
    )
    step = jt.make_train_step(jm.lm_loss(model), optax.sgd(0.0), donate=False)
    replay = state._replace(rng=jax.random.clone(state.rng))
    first, m1 = step(state, batch)
    second, m2 = step(first, batch)
    _, again = step(replay, batch)
    # Same params (learning rate 0), carry and batch: only the step's key differs.
    assert float(m1["loss"]) != float(m2["loss"])
    assert float(again["loss"]) == float(m1["loss"])  # the state's rng decides the masks
    assert isinstance(first.carry[0], jr.ZoneoutCarry) and first.carry[0].step.tolist() == [T] * B
    assert isinstance(second.carry[0], jr.ZoneoutCarry)


def python_loop_sample(model, params, key, prompt, length, temperature, num_samples):
    carry = model.initial_carry((num_samples,))
    logits = None
    for tok in prompt:
        carry, logits = model.apply(params, carry, jnp.full((num_samples, 1), tok, jnp.int32))
    out = []
    for k in jax.random.split(key, length):
        last = logits[:, -1]
        if temperature == 0:
            tok = jnp.argmax(last, axis=-1)
        else:
            tok = jax.random.categorical(k, last / temperature, axis=-1)
        out.append(np.asarray(tok))
        carry, logits = model.apply(params, carry, tok[:, None].astype(jnp.int32))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_sample_matches_python_loop(temperature):
    model = jitted(tiny_model("lstm"))
    params = model.init(jax.random.key(0))
    prompt = VOCAB.encode("the ")
    ids = jm.sample(
        model, params, jax.random.key(3), prompt, 12, temperature=temperature, num_samples=3
    )
    ref = python_loop_sample(model, params, jax.random.key(3), prompt, 12, temperature, 3)
    assert ids.shape == (3, 12) and ids.dtype == jnp.int32
    np.testing.assert_array_equal(ids, ref)
    if temperature == 0:
        assert (ids == ids[0]).all()  # greedy: every sample is the same
    else:
        assert len({tuple(r) for r in np.asarray(ids)}) > 1


def test_sample_rejects_bad_arguments():
    model = jitted(tiny_model("gru"))
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="prompt"):
        jm.sample(model, params, jax.random.key(1), [], 5)
    with pytest.raises(ValueError, match="temperature"):
        jm.sample(model, params, jax.random.key(2), [0], 5, temperature=-1.0)


@pytest.mark.parametrize("name", ["char_lm", "train_char_lm", "sample", "CharLMConfig"])
def test_old_train_names_point_to_models(name):
    with pytest.raises(AttributeError, match=f"jaxrnn.train.{name} moved to jaxrnn.models.{name}"):
        getattr(jt, name)
    assert getattr(jm, name) is getattr(jr.models, name)


def test_cross_entropy_points_to_losses():
    with pytest.raises(AttributeError, match=r"jaxrnn\.losses\.softmax_cross_entropy"):
        jt.cross_entropy  # noqa: B018
