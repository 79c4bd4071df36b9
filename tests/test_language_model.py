"""Tests of jaxrnn.models.language_model: the char LM's cells, evaluation and sampling.

References: evaluation against a loop of direct ``model.apply`` calls over chunks, sampling
against a Python loop over tokens; old ``jaxrnn.train`` names fail with a pointer here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import VOCAB, B, jitted, tiny_batches, tiny_model

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
