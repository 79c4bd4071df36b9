"""Tests of the Flax Linen wrappers in ``jaxrnn.flax``.

The contract of a wrapper is that it computes exactly what the pure function computes with the
params it stores, so most checks compare bit for bit against :func:`jaxrnn.scan` /
``layer.apply`` called on the params taken out of the Linen variables. Option pass-through is
also checked against an independent Python loop over ``cell.apply`` (which knows nothing of
``jr.scan``) and against the jaxpr (``unroll``, ``remat``); training checks that the loss of an
Embed -> RNN -> Dense model falls under optax's Adam.

XLA compilation dominates the run time here, so data come from NumPy and most params from an
eager ``cell.init`` (whose small kernels are cached across tests).
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn as jr
import jaxrnn.flax as jrf

I, H, B, T = 3, 4, 2, 5  # noqa: E741 (input, hidden, batch, time)

CELLS = {
    "gru-reset_after": lambda: jr.gru(I, H, reset_after=True),
    "lstm-peephole-proj": lambda: jr.lstm(I, H, peephole=True, proj_size=2),
    "jordan": lambda: jr.jordan_rnn(I, H, 2),
}


def _normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _random_carry(cell, seed):
    """A nonzero initial carry of the cell's structure, batch shape ``(B,)``."""
    leaves, treedef = jax.tree.flatten(cell.initial_carry((B,)))
    return jax.tree.unflatten(treedef, [_normal(z.shape, seed + k) for k, z in enumerate(leaves)])


def _loop_reference(cell, params, xs, carry, lengths, reverse):
    """Batch-major Python loop over ``cell.apply``, one sequence at a time (no jr.scan)."""
    xs, lengths = np.asarray(xs), np.asarray(lengths)
    carries, outputs = [], []
    for b in range(xs.shape[0]):
        c = jax.tree.map(lambda v, b=b: v[b], carry)
        ys = [None] * xs.shape[1]
        steps = range(lengths[b])
        for t in reversed(steps) if reverse else steps:
            c, ys[t] = cell.apply(params, c, jnp.asarray(xs[b, t]))
        zero = np.zeros(cell.output_size, np.float32)
        outputs.append(np.stack([zero if y is None else np.asarray(y) for y in ys]))
        carries.append(c)
    return jax.tree.map(lambda *v: np.stack(v), *carries), np.stack(outputs)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------------------------
# RNN


@pytest.mark.parametrize("name", CELLS)
def test_rnn_init_and_apply_equal_cell_init_and_scan(name):
    cell = CELLS[name]()
    model = jrf.RNN(cell)
    xs = _normal((B, T, I))
    variables = model.init(jax.random.key(1), xs)

    # One param, named "cell": the cell's own NamedTuple, as cell.init builds it.
    assert list(variables) == ["params"] and list(variables["params"]) == ["cell"]
    params = variables["params"]["cell"]
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    assert type(params) is type(expected)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
        lambda a: (a.shape, a.dtype), expected
    )

    ys = jax.jit(model.apply)(variables, xs)
    _, ys_ref = jax.jit(lambda p, x: jr.scan(cell, p, x))(params, xs)
    assert ys.shape == (B, T, cell.output_size)
    np.testing.assert_array_equal(ys, ys_ref)


def test_rnn_param_field_names_and_init_values():
    cell = jr.lstm(I, H, peephole=True)
    params = jrf.RNN(cell).init(jax.random.key(1), _normal((B, T, I)))["params"]["cell"]
    assert type(params) is jr.LSTMParams
    assert params._fields == ("w_ih", "w_hh", "b", "w_peep", "w_proj")
    assert params.w_peep.shape == (3, H) and params.w_proj is None
    # Initialised by cell.init: forget-gate bias block at forget_bias=1, the other blocks 0.
    np.testing.assert_array_equal(params.b, np.repeat(np.float32([0, 1, 0, 0]), H))
    # Eager apply is jr.scan too.
    variables, xs = {"params": {"cell": params}}, _normal((B, T, I))
    np.testing.assert_array_equal(jrf.RNN(cell).apply(variables, xs), jr.scan(cell, params, xs)[1])


@pytest.mark.parametrize(
    "reverse, time_major", [(False, False), (True, True)], ids=["forward", "reverse-time_major"]
)
def test_rnn_options_pass_through(reverse, time_major):
    cell = jr.lstm(I, H, peephole=True)
    model = jrf.RNN(cell, reverse=reverse, time_major=time_major)
    params = cell.init(jax.random.key(1))
    variables = {"params": {"cell": params}}
    xs, lengths, carry0 = _normal((B, T, I)), jnp.array([T, 2]), _random_carry(cell, 7)
    model_xs = jnp.swapaxes(xs, 0, 1) if time_major else xs

    @jax.jit
    def run(variables, xs, lengths, carry0):
        return model.apply(variables, xs, lengths=lengths, initial_carry=carry0, return_carry=True)

    carry, ys = run(variables, model_xs, lengths, carry0)
    opts = dict(lengths=lengths, reverse=reverse, time_major=time_major)
    carry_ref, ys_ref = jax.jit(lambda p, x, c: jr.scan(cell, p, x, c, **opts))(
        params, model_xs, carry0
    )
    _assert_trees_equal((carry, ys), (carry_ref, ys_ref))
    assert isinstance(carry, jr.LSTMCarry)

    # Independently of jr.scan: a Python loop of cell.apply with the same options.
    carry_loop, ys_loop = _loop_reference(cell, params, xs, carry0, lengths, reverse)
    np.testing.assert_allclose(
        jnp.swapaxes(ys, 0, 1) if time_major else ys, ys_loop, rtol=1e-5, atol=1e-6
    )
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_loop), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    ys_only = model.apply(variables, model_xs, lengths=lengths, initial_carry=carry0)
    assert isinstance(ys_only, jax.Array) and ys_only.shape == ys.shape  # return_carry=False


@pytest.mark.parametrize("unroll, remat", [(1, False), (3, True), (2, "sqrt")])
def test_rnn_unroll_and_remat_reach_the_scan(unroll, remat):
    cell = jr.gru(I, H)
    model = jrf.RNN(cell, unroll=unroll, remat=remat, kernel=False)  # the XLA path's scan
    variables = {"params": {"cell": jax.eval_shape(cell.init, jax.random.key(0))}}
    xs = jax.ShapeDtypeStruct((B, T, I), jnp.float32)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda v, x: jnp.sum(model.apply(v, x))))(variables, xs))
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


def test_two_rnns_in_one_model_get_their_own_params():
    class TwoRNNs(nn.Module):
        @nn.compact
        def __call__(self, xs):
            h = jrf.RNN(jr.simple_rnn(I, H))(xs)
            return jrf.RNN(jr.simple_rnn(H, H), reverse=True)(h)

    xs = _normal((B, T, I))
    variables = TwoRNNs().init(jax.random.key(1), xs)
    p0, p1 = variables["params"]["RNN_0"]["cell"], variables["params"]["RNN_1"]["cell"]
    assert p0.w_ih.shape == (I, H) and p1.w_ih.shape == (H, H)
    assert not np.allclose(p0.w_hh, p1.w_hh)  # independent keys
    ys = TwoRNNs().apply(variables, xs)
    h = jr.scan(jr.simple_rnn(I, H), p0, xs)[1]
    np.testing.assert_array_equal(ys, jr.scan(jr.simple_rnn(H, H), p1, h, reverse=True)[1])


def test_rnn_errors_come_from_jaxrnn_and_flax():
    model = jrf.RNN(jr.gru(I, H))
    variables = {"params": {"cell": jr.gru(I, H).init(jax.random.key(1))}}
    with pytest.raises(ValueError, match="expected feature size"):
        model.apply(variables, jnp.ones((B, T, I + 1)))
    # params too small: jaxrnn's own check, as jr.scan raises it (not Flax's shape error)
    with pytest.raises(ValueError, match=r"^params\.w_ih: expected shape \(3, 15\)"):
        jrf.RNN(jr.gru(I, H + 1)).apply(variables, jnp.ones((B, T, I)))


def test_rnn_variables_survive_a_serialization_round_trip():
    cell = jr.lstm(I, H)
    variables = {"params": {"cell": cell.init(jax.random.key(1))}}
    template = {"params": {"cell": cell.init(jax.random.key(2))}}
    restored = flax.serialization.from_bytes(template, flax.serialization.to_bytes(variables))
    assert type(restored["params"]["cell"]) is jr.LSTMParams
    _assert_trees_equal(restored, variables)


# --------------------------------------------------------------------------------------------
# Layer

LAYERS = {
    "rnn-lstm-2-bidirectional": lambda: jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True),
    "stack-simple-gru": lambda: jr.stack([jr.layer(jr.simple_rnn(I, H)), jr.layer(jr.gru(H, 2))]),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_equals_layer_apply_bit_for_bit(name):
    lay = LAYERS[name]()
    module = jrf.Layer(lay)
    xs, lengths = _normal((B, T, I)), jnp.array([T, 3])
    variables = module.init(jax.random.key(1), xs)
    params = variables["params"]["layer"]
    assert list(variables["params"]) == ["layer"]
    assert jax.tree.structure(params) == jax.tree.structure(lay.init(jax.random.key(0)))
    # A nonzero initial carry, so that a dropped initial_carry would show.
    carry0 = jax.tree.map(lambda z: jnp.full(z.shape, 0.5, z.dtype), lay.initial_carry((B,)))

    @jax.jit
    def run(variables, xs, lengths, carry0):
        # No dropout in these layers: no `deterministic` flag and no 'dropout' rng needed.
        return module.apply(variables, xs, lengths=lengths, initial_carry=carry0, return_carry=True)

    @jax.jit
    def reference(params, xs, lengths, carry0):
        return lay.apply(params, xs, carry0, lengths=lengths), lay.apply(params, xs)

    got = run(variables, xs, lengths, carry0)
    want, (_, ys_default) = reference(params, xs, lengths, carry0)
    _assert_trees_equal(got, want)
    assert not np.allclose(got[1], ys_default)  # the options changed something


def _spy(lay, seen):
    """``lay`` whose apply records the raw data of the key it is given."""

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        seen.append(None if key is None else jax.random.key_data(key))
        return lay.apply(params, xs, carry, lengths=lengths, key=key)

    return lay._replace(apply=apply)


def test_layer_dropout_uses_the_dropout_rng_stream():
    net = jr.rnn(jr.simple_rnn, I, H, num_layers=2, dropout=0.5)
    params = net.init(jax.random.key(1))
    variables = {"params": {"layer": params}}
    xs = _normal((B, T, I))

    @functools.partial(jax.jit, static_argnums=2)
    def run(variables, seed, deterministic):
        seen = []
        ys = jrf.Layer(_spy(net, seen)).apply(
            variables, xs, deterministic=deterministic, rngs={"dropout": jax.random.key(seed)}
        )
        return ys, seen[-1]

    ys_eval, no_key = run(variables, 5, True)
    assert no_key is None  # deterministic: no key, though a dropout rng is available
    ys_train, key_data = run(variables, 5, False)
    again, _ = run(variables, 5, False)
    other, _ = run(variables, 6, False)

    @jax.jit
    def reference(params, key_data):
        key = None if key_data is None else jax.random.wrap_key_data(key_data)
        return net.apply(params, xs, key=key)[1]

    np.testing.assert_array_equal(ys_eval, reference(params, None))
    np.testing.assert_array_equal(ys_train, reference(params, key_data))
    assert not np.allclose(ys_train, ys_eval)
    np.testing.assert_array_equal(again, ys_train)
    assert not np.allclose(other, ys_train)


def test_layer_deterministic_flag_errors():
    net = jr.rnn(jr.gru, I, H, num_layers=2, dropout=0.5)
    variables = {"params": {"layer": net.init(jax.random.key(1))}}
    xs = jnp.ones((B, T, I))
    with pytest.raises(ValueError, match="deterministic"):
        jrf.Layer(net).apply(variables, xs)  # a dropout layer needs the mode chosen
    with pytest.raises(ValueError, match="deterministic"):
        jrf.Layer(net, deterministic=True).apply(variables, xs, deterministic=False)  # twice
    with pytest.raises(flax.errors.InvalidRngError):
        jrf.Layer(net, deterministic=False).apply(variables, xs)  # no 'dropout' rng
    # A layer built outside jaxrnn's factories may use its key, so it is treated as dropout.
    custom = jr.Layer(net.init, net.apply, net.initial_carry, I, H)
    with pytest.raises(ValueError, match="deterministic"):
        jrf.Layer(custom).apply(variables, xs)
    # A stack without dropout of its own, around one with dropout, still needs the mode.
    nested = jr.stack([net, jr.layer(jr.gru(H, H))])
    nested_vars = {"params": {"layer": nested.init(jax.random.key(2))}}
    with pytest.raises(ValueError, match="deterministic"):
        jrf.Layer(nested).apply(nested_vars, xs)


# --------------------------------------------------------------------------------------------
# Training inside a larger model

V, TT, BB = 4, 6, 32  # vocabulary, time steps, batch of the toy task


def first_token_task(seed):
    """Tokens (BB, TT), lengths in [2, TT] and labels = the first token (needs memory)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (BB, TT), dtype=np.int32)
    lengths = rng.integers(2, TT + 1, (BB,), dtype=np.int32)
    return jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(tokens[:, 0])


class FirstTokenClassifier(nn.Module):
    """Embed -> jaxrnn RNN(lstm) (carry at each sequence's last valid step) -> Dense."""

    @nn.compact
    def __call__(self, tokens, lengths):
        x = nn.Embed(V, 8)(tokens)
        carry, _ = jrf.RNN(jr.lstm(8, 16))(x, lengths=lengths, return_carry=True)
        return nn.Dense(V)(carry.h)


def test_training_embed_rnn_dense_with_optax_adam_lowers_the_loss():
    tokens, lengths, labels = first_token_task(0)
    model = FirstTokenClassifier()
    params = model.init(jax.random.key(1), tokens, lengths)["params"]
    tx = optax.adam(0.03)
    opt_state = tx.init(params)

    def loss_fn(params):
        logits = model.apply({"params": params}, tokens, lengths)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # optax's Adam bias correction computes `b1 ** count` (Python float ** int32), which the
    # suite's strict dtype promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        losses = []
        for _ in range(40):
            params, opt_state, loss = train_step(params, opt_state)
            losses.append(float(loss))
    assert type(params["RNN_0"]["cell"]) is jr.LSTMParams  # optax keeps the NamedTuple
    assert losses[-1] < 0.1 * losses[0], losses


# --------------------------------------------------------------------------------------------
# Packaging


def test_import_jaxrnn_does_not_import_flax_or_torch():
    code = (
        "import sys, jaxrnn\n"
        "import jaxrnn.interop, jaxrnn.interop.flax, jaxrnn.interop.torch\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'torch'))\n"
        "assert 'flax' not in sys.modules and 'torch' not in sys.modules, loaded\n"
        "assert 'optax' not in sys.modules and 'orbax' not in sys.modules  # jr.train is lazy\n"
        "import jaxrnn.models  # the char LM trains with optax/orbax, never Flax or torch\n"
        "assert 'flax' not in sys.modules and 'torch' not in sys.modules\n"
        "import jaxrnn.flax, flax.linen\n"
        "assert jaxrnn.flax.linen.nn is flax.linen  # the real Flax, not shadowed\n"
        "assert jaxrnn.flax.nnx.nnx is sys.modules['flax.nnx']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
