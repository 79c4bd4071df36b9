"""Tests of the Flax NNX wrappers in ``jaxrnn.flax.nnx``.

As for Linen, the contract is "exactly what the pure function computes with the module's
params": outputs are compared bit for bit with :func:`jaxrnn.scan` / ``layer.apply`` on
``model.get_params()`` and with the Linen modules given the same params; gradients through the
per-array ``nnx.Param`` storage are compared with ``jax.grad`` of the pure function; and
Embed -> RNN -> Linear models train with ``nnx.Optimizer`` under ``nnx.jit``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn as jr
import jaxrnn.flax as jrf
import jaxrnn.flax.nnx as jrnnx

I, H, B, T = 3, 4, 2, 5  # noqa: E741 (input, hidden, batch, time)

CELLS = {  # the wrapper is cell-agnostic: one cell with None fields, one with another carry
    "lstm-peephole-proj": lambda: jr.lstm(I, H, peephole=True, proj_size=2),
    "jordan": lambda: jr.jordan_rnn(I, H, 2),
}


def _normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _param_paths(module):
    return sorted(path for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param)))


# --------------------------------------------------------------------------------------------
# RNN


@pytest.mark.parametrize("name", CELLS)
def test_rnn_equals_scan_bit_for_bit(name):
    cell = CELLS[name]()
    model = jrnnx.RNN(cell, rngs=nnx.Rngs(0))
    params = model.get_params()
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    assert type(params) is type(expected)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
        lambda a: (a.shape, a.dtype), expected
    )
    # One nnx.Param per array, under the NamedTuple's field names (None fields have none).
    fields = [f for f in params._fields if getattr(params, f) is not None]
    assert _param_paths(model) == sorted(("params", f) for f in fields)
    for f in fields:
        assert isinstance(getattr(model.params, f), nnx.Param)

    xs = _normal((B, T, I))
    ys = nnx.jit(lambda m, x: m(x))(model, xs)
    _, ys_ref = jax.jit(lambda p, x: jr.scan(cell, p, x))(params, xs)
    assert ys.shape == (B, T, cell.output_size)
    np.testing.assert_array_equal(ys, ys_ref)


def test_rnn_options_pass_through():
    cell = jr.lstm(I, H)
    model = jrnnx.RNN(cell, reverse=True, time_major=True, rngs=nnx.Rngs(0))
    xs, lengths = _normal((T, B, I)), jnp.array([T, 2])
    carry0 = jr.LSTMCarry(_normal((B, H), 1), _normal((B, H), 2))

    @nnx.jit
    def run(model, xs, lengths, carry0):
        return model(xs, lengths=lengths, initial_carry=carry0, return_carry=True)

    got = run(model, xs, lengths, carry0)
    opts = dict(lengths=lengths, reverse=True, time_major=True)
    want = jax.jit(lambda p, x, c: jr.scan(cell, p, x, c, **opts))(model.get_params(), xs, carry0)
    _assert_trees_equal(got, want)
    _, ys_plain = jax.jit(lambda p, x: jr.scan(cell, p, x, time_major=True))(model.get_params(), xs)
    assert not np.allclose(got[1], ys_plain)  # the options changed something
    ys_only = model(xs, lengths=lengths, initial_carry=carry0)
    assert isinstance(ys_only, jax.Array) and ys_only.shape == (T, B, H)


@pytest.mark.parametrize("unroll, remat", [(1, False), (3, True), (2, "sqrt")])
def test_rnn_unroll_and_remat_reach_the_scan(unroll, remat):
    model = jrnnx.RNN(jr.gru(I, H), unroll=unroll, remat=remat, kernel=False, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    def loss(state, xs):
        return jnp.sum(nnx.merge(graphdef, state)(xs))

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(state, jax.ShapeDtypeStruct((B, T, I), jnp.float32)))
    assert f"unroll={unroll}" in jaxpr
    # remat=False keeps matmul and nonlinearity outputs (policy jr.save_nonlinear); remat=True
    # keeps nothing (policy=None); remat="sqrt" keeps nothing of a segment (policy=None) and
    # the outputs of matmuls and nonlinearities of its steps: one segment of ceil(sqrt(5)) = 3
    # steps, then a scan of the remaining 2.
    keeps_nothing, keeps_nonlinear = {
        False: (False, True),
        True: (True, False),
        "sqrt": (True, True),
    }[remat]
    assert ("policy=None" in jaxpr) == keeps_nothing
    assert ("save_nonlinear" in jaxpr) == keeps_nonlinear
    if remat == "sqrt":
        assert set(re.findall(r"\blength=(\d+)", jaxpr)) == {"1", "2", "3"}


def test_rnn_grads_are_the_grads_of_the_pure_function():
    cell = jr.lstm(I, H, peephole=True)
    model = jrnnx.RNN(cell, rngs=nnx.Rngs(0))
    xs, lengths = _normal((B, T, I)), jnp.array([T, 3])
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.sin(m(xs, lengths=lengths)))))(model)
    grads_ref = jax.jit(
        jax.grad(lambda p: jnp.sum(jnp.sin(jr.scan(cell, p, xs, lengths=lengths)[1])))
    )(model.get_params())
    for field in ("w_ih", "w_hh", "b", "w_peep"):
        np.testing.assert_array_equal(grads["params"][field][...], getattr(grads_ref, field))
        assert np.any(getattr(grads_ref, field) != 0)


def test_rnn_set_params_round_trip_and_errors():
    cell = jr.gru(I, H)
    model = jrnnx.RNN(cell, rngs=nnx.Rngs(0))
    new = cell.init(jax.random.key(7))
    model.set_params(new)
    _assert_trees_equal(model.get_params(), new)
    assert type(model.get_params()) is jr.GRUParams
    with pytest.raises(TypeError, match=r"^params: expected GRUParams .*got SimpleRNNParams"):
        model.set_params(jr.simple_rnn(I, H).init(jax.random.key(8)))  # as jr.scan says it
    with pytest.raises(TypeError, match=r"^params\.w_ih: expected dtype float32.*got float16"):
        model.set_params(jax.tree.map(lambda a: a.astype(jnp.float16), new))
    with pytest.raises(ValueError, match=r"params\.w_hh: expected shape \(4, 12\)"):
        model.set_params(new._replace(w_hh=jnp.zeros((H + 1, 3 * H))))


def test_rnn_custom_cell_with_array_params():
    """A custom cell whose params are one array: stored as a single nnx.Param."""
    leaky = jr.Cell(
        init=lambda key: jnp.float32(0.9),
        apply=lambda decay, h, x: (decay * h + x, decay * h + x),
        initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros((*batch_shape, 2), dtype),
    )
    model = jrnnx.RNN(leaky, rngs=nnx.Rngs(0))
    assert isinstance(model.params, nnx.Param)
    xs = jnp.ones((T, 2))
    np.testing.assert_allclose(model(xs)[:, 0], [1.0, 1.9, 2.71, 3.439, 4.0951], rtol=1e-6)


def test_param_tree_rejects_names_that_are_not_attributes():
    with pytest.raises(ValueError, match="'eval'"):
        jrnnx.ParamTree({"eval": jnp.zeros(2)})  # would shadow nnx.Module.eval


def test_nnx_and_linen_rnn_agree_given_the_same_params():
    cell = jr.lstm(I, H, peephole=True, proj_size=2)
    xs, lengths = _normal((B, T, I)), jnp.array([2, T])
    linen_model = jrf.RNN(cell, reverse=True)
    variables = linen_model.init(jax.random.key(1), xs)
    nnx_model = jrnnx.RNN(cell, reverse=True, rngs=nnx.Rngs(0))
    nnx_model.set_params(variables["params"]["cell"])
    got = nnx.jit(lambda m: m(xs, lengths=lengths, return_carry=True))(nnx_model)
    want = jax.jit(lambda v: linen_model.apply(v, xs, lengths=lengths, return_carry=True))(
        variables
    )
    _assert_trees_equal(got, want)


# --------------------------------------------------------------------------------------------
# Layer


def test_layer_equals_layer_apply_and_linen_bit_for_bit():
    lay = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    module = jrnnx.Layer(lay, rngs=nnx.Rngs(params=0))  # no dropout: no 'dropout' stream needed
    assert module.rngs is None
    params = module.get_params()
    assert jax.tree.structure(params) == jax.tree.structure(lay.init(jax.random.key(0)))
    assert isinstance(getattr(module.params, "1").backward.w_hh, nnx.Param)
    assert ("params", "1", "backward", "w_hh") in _param_paths(module)

    xs, lengths = _normal((B, T, I)), jnp.array([T, 3])
    carry0 = jax.tree.map(lambda z: jnp.full(z.shape, 0.5, z.dtype), lay.initial_carry((B,)))
    got = nnx.jit(lambda m, c: m(xs, lengths=lengths, initial_carry=c, return_carry=True))(
        module, carry0
    )
    want = jax.jit(lambda p, c: lay.apply(p, xs, c, lengths=lengths))(params, carry0)
    _assert_trees_equal(got, want)
    linen = jax.jit(
        lambda p, c: jrf.Layer(lay).apply(
            {"params": {"layer": p}}, xs, lengths=lengths, initial_carry=c, return_carry=True
        )
    )(params, carry0)
    _assert_trees_equal(got, linen)


def _spy(lay, seen):
    """``lay`` whose apply records the raw data of the key it is given."""

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        seen.append(None if key is None else jax.random.key_data(key))
        return lay.apply(params, xs, carry, lengths=lengths, key=key)

    return lay._replace(apply=apply)


def test_layer_dropout_keys_and_modes():
    net = jr.rnn(jr.simple_rnn, I, H, num_layers=2, dropout=0.5)
    seen = []
    module = jrnnx.Layer(_spy(net, seen), rngs=nnx.Rngs(0))
    params = module.get_params()
    xs = _normal((B, T, I))

    @nnx.jit
    def run(module):
        return module(xs), seen[-1]

    @jax.jit
    def reference(params, key_data):
        key = None if key_data is None else jax.random.wrap_key_data(key_data)
        return net.apply(params, xs, key=key)[1]

    ys_1, key_1 = run(module)  # training mode is the default, as for nnx.Dropout
    ys_2, key_2 = run(module)  # the forked 'dropout' stream advances between calls
    np.testing.assert_array_equal(ys_1, reference(params, key_1))
    np.testing.assert_array_equal(ys_2, reference(params, key_2))
    assert not np.array_equal(key_1, key_2) and not np.allclose(ys_1, ys_2)

    ys_eval = reference(params, None)
    assert nnx.view(module, deterministic=True).deterministic and not module.deterministic
    module.eval()
    assert module.deterministic
    ys, key = run(module)
    assert key is None
    np.testing.assert_array_equal(ys, ys_eval)

    # Call-time overrides: deterministic=False with rngs given as Rngs (its 'dropout' stream).
    # The call is eager, so is its reference: like with like (an eager call and a jitted one
    # may round differently).
    ys = module(xs, deterministic=False, rngs=nnx.Rngs(dropout=3))
    key = nnx.Rngs(dropout=3).dropout()
    np.testing.assert_array_equal(ys, net.apply(params, xs, key=key)[1])
    with pytest.raises(TypeError, match="rngs"):
        module(xs, deterministic=False, rngs=3)


def test_layer_dropout_without_rngs_fails_clearly():
    net = jr.rnn(jr.gru, I, H, num_layers=2, dropout=0.5)
    module = jrnnx.Layer(net, rngs=nnx.Rngs(0))
    module.rngs = None
    with pytest.raises(ValueError, match="no rngs"):
        module(jnp.ones((B, T, I)))


# --------------------------------------------------------------------------------------------
# Training inside a larger model

V, TT, BB = 4, 6, 32  # vocabulary, time steps, batch of the toy task


def first_token_task(seed):
    """Tokens (BB, TT), lengths in [2, TT] and labels = the first token (needs memory)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (BB, TT), dtype=np.int32)
    lengths = rng.integers(2, TT + 1, (BB,), dtype=np.int32)
    return jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(tokens[:, 0])


class FirstTokenClassifier(nnx.Module):
    """Embed -> jaxrnn RNN(lstm) (carry at each sequence's last valid step) -> Linear."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(V, 8, rngs=rngs)
        self.rnn = jrnnx.RNN(jr.lstm(8, 16), rngs=rngs)
        self.head = nnx.Linear(16, V, rngs=rngs)

    def __call__(self, tokens, lengths):
        carry, _ = self.rnn(self.embed(tokens), lengths=lengths, return_carry=True)
        return self.head(carry.h)


def test_training_embed_rnn_linear_with_nnx_optimizer_and_jit_lowers_the_loss():
    tokens, lengths, labels = first_token_task(0)
    model = FirstTokenClassifier(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.03), wrt=nnx.Param)
    before = model.rnn.get_params()

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(model):
            logits = model(tokens, lengths)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    # optax's Adam bias correction computes `b1 ** count` (Python float ** int32), which the
    # suite's strict dtype promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        losses = [float(train_step(model, optimizer)) for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], losses
    after = model.rnn.get_params()
    assert jax.tree.structure(after) == jax.tree.structure(before)
    assert all(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True)
    )  # every array of the recurrent module was trained


def test_layer_adam_steps_equal_optax_on_the_pure_params():
    """Nested ParamTree storage under nnx.Optimizer: each step is optax's step on the pytree."""
    net = jr.rnn(jr.simple_rnn, I, H, num_layers=2, bidirectional=True, dropout=0.5)
    module = jrnnx.Layer(net, deterministic=True, rngs=nnx.Rngs(0))
    params = initial = module.get_params()
    optimizer = nnx.Optimizer(module, optax.adam(0.01), wrt=nnx.Param)
    xs = _normal((B, T, I))

    def pure_loss(params):
        return jnp.mean(jnp.sin(net.apply(params, xs)[1]))

    @nnx.jit
    def nnx_step(module, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(jnp.sin(m(xs))))(module)
        optimizer.update(module, grads)
        return loss

    tx = optax.adam(0.01)

    @jax.jit
    def pure_step(params, opt_state):
        loss, grads = jax.value_and_grad(pure_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam under strict promotion
        for _ in range(3):  # more than one step: the optimizer state must keep its structure
            loss = nnx_step(module, optimizer)
            params, opt_state, loss_ref = pure_step(params, opt_state)
            np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    got = module.get_params()
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got[1].backward.w_hh, initial[1].backward.w_hh)
