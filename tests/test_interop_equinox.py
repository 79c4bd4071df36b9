"""jaxrnn.interop against Equinox: Equinox's own cells, run over sequences, are the reference.

An ``equinox.nn.GRUCell``/``LSTMCell`` is one step on one example; the reference runs it in a
``jax.lax.scan`` over time and a ``jax.vmap`` per batch dimension. The converted jaxrnn cell runs
under :func:`jaxrnn.scan` on the whole batch. Outputs, final states and gradients must agree to
float32 rounding, both ways (Equinox -> jaxrnn and jaxrnn -> Equinox), and round trips must give
back exactly the same arrays.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import interop

try:
    import equinox as eqx
except ImportError:  # the ImportError test below runs without it
    eqx = None

needs_equinox = pytest.mark.skipif(eqx is None, reason="needs equinox")

I, T = 3, 6  # noqa: E741 (input size, time steps)
RTOL, ATOL = 1e-4, 1e-5
KINDS = ["lstm", "gru"]
BATCHES = [(), (2, 3)]  # unbatched, and two batch dims (one is the easy case of two)
HIDDENS = [1, 5]


def eqx_cell(kind, hidden, use_bias=True, seed=0, dtype=None):
    cls = eqx.nn.LSTMCell if kind == "lstm" else eqx.nn.GRUCell
    return cls(I, hidden, use_bias=use_bias, dtype=dtype, key=jax.random.key(seed))


def jr_cell(kind, hidden, use_bias=True, seed=0):
    """A jaxrnn cell with random biases everywhere (a GRU's hidden-side ``r, z`` ones too)."""
    cell = jr.lstm(I, hidden) if kind == "lstm" else jr.gru(I, hidden, reset_after=True)
    params = cell.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    fields = ("b",) if kind == "lstm" else ("b_ih", "b_hh")

    def draw(shape):
        return rng.normal(size=shape) if use_bias else np.zeros(shape)

    biases = {f: jnp.asarray(draw(getattr(params, f).shape), np.float32) for f in fields}
    return cell, params._replace(**biases)


def normal(rng, shape):
    return jnp.asarray(rng.normal(size=shape).astype(np.float32))


def initial_state(kind, batch, hidden, rng):
    """The same nonzero initial state for both libraries: Equinox's and jaxrnn's."""
    h = normal(rng, (*batch, hidden))
    if kind == "gru":
        return h, h
    c = normal(rng, (*batch, hidden))
    return (h, c), jr.LSTMCarry(h, c)


def run_equinox(module, xs, state, batch):
    """The Equinox cell over ``xs (*batch, T, I)``: ``lax.scan`` over time, ``vmap`` per batch."""

    def one(xs1, state1):
        def body(s, x):
            s = module(x, s)
            return s, (s[0] if isinstance(s, tuple) else s)

        return jax.lax.scan(body, state1, xs1)

    fn = one
    for _ in batch:
        fn = jax.vmap(fn)
    return fn(xs, state)


def assert_close(a, b, what=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL, err_msg=what)


def assert_bits(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), what


# --------------------------------------------------------------------------------------------
# Same function over whole sequences


@needs_equinox
@pytest.mark.parametrize("direction", ["from", "to"])
@pytest.mark.parametrize("hidden", HIDDENS)
@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_sequences_match(kind, use_bias, batch, hidden, direction):
    if direction == "from":
        module = eqx_cell(kind, hidden, use_bias, seed=1)
        cell, params = interop.from_equinox(module)
    else:
        cell, params = jr_cell(kind, hidden, use_bias, seed=1)
        module = interop.to_equinox(cell, params, use_bias=use_bias)
        assert module.use_bias is use_bias and module.hidden_size == hidden
    rng = np.random.default_rng(2)
    xs = normal(rng, (*batch, T, I))
    eqx_state, jr_state = initial_state(kind, batch, hidden, rng)

    eqx_final, eqx_ys = run_equinox(module, xs, eqx_state, batch)
    jr_final, jr_ys = jr.scan(cell, params, xs, jr_state)

    assert jr_ys.shape == eqx_ys.shape == (*batch, T, hidden)
    assert_close(jr_ys, eqx_ys, "outputs")
    if kind == "lstm":
        assert_close(jr_final.h, eqx_final[0], "final h")
        assert_close(jr_final.c, eqx_final[1], "final c")
    else:
        assert_close(jr_final, eqx_final, "final h")


@needs_equinox
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match(kind, use_bias):
    """Gradients of one loss through both: parameters (mapped field by field) and inputs."""
    H, batch = 4, (3,)
    module = eqx_cell(kind, H, use_bias, seed=3)
    cell, params = interop.from_equinox(module)
    rng = np.random.default_rng(4)
    xs = normal(rng, (*batch, T, I))
    eqx_state, jr_state = initial_state(kind, batch, H, rng)
    weights = normal(rng, (*batch, T, H))

    def eqx_loss(m, xs):
        _, ys = run_equinox(m, xs, eqx_state, batch)
        return jnp.sum(weights * ys**2)

    def jr_loss(p, xs):
        _, ys = jr.scan(cell, p, xs, jr_state)
        return jnp.sum(weights * ys**2)

    ge, gxe = jax.grad(eqx_loss, argnums=(0, 1))(module, xs)
    gj, gxj = jax.grad(jr_loss, argnums=(0, 1))(params, xs)
    assert_close(gxj, gxe, "d/dxs")
    assert_close(gj.w_ih, ge.weight_ih.T, "w_ih")
    assert_close(gj.w_hh, ge.weight_hh.T, "w_hh")
    if not use_bias:
        return
    if kind == "lstm":
        assert_close(gj.b, ge.bias, "b")
    else:
        assert_close(gj.b_ih, ge.bias, "b_ih")
        assert_close(gj.b_hh[2 * H :], ge.bias_n, "b_hn")
        # b_hr, b_hz enter exactly as b_ir, b_iz do.
        assert_close(gj.b_hh[: 2 * H], ge.bias[: 2 * H], "b_hr, b_hz")


# --------------------------------------------------------------------------------------------
# Round trips are exact


@needs_equinox
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_from_equinox(kind, use_bias, dtype):
    module = eqx_cell(kind, 5, use_bias, seed=5, dtype=jnp.dtype(dtype))
    cell, params = interop.from_equinox(module)
    assert jax.tree.leaves(params)[0].dtype == jnp.dtype(dtype)
    assert dict(cell.config)["param_dtype"] == jnp.dtype(dtype)
    back = interop.to_equinox(cell, params, use_bias=use_bias)
    assert type(back) is type(module)
    assert (back.input_size, back.hidden_size, back.use_bias) == (I, 5, use_bias)
    fields = ["weight_ih", "weight_hh", "bias"] + (["bias_n"] if kind == "gru" else [])
    for f in fields:
        if use_bias or f.startswith("weight"):
            assert_bits(getattr(back, f), getattr(module, f), f)
        else:
            assert getattr(back, f) is None and getattr(module, f) is None, f


@needs_equinox
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_from_jaxrnn(kind, use_bias):
    cell, params = jr_cell(kind, 5, use_bias, seed=6)
    if kind == "gru":  # Equinox has no b_hr, b_hz: exact when they are zero
        params = params._replace(b_hh=params.b_hh.at[:10].set(0.0))
    # -0.0 must survive (no "+ 0.0" on the way).
    if kind == "lstm":
        params = params._replace(b=params.b.at[0].set(-0.0 if use_bias else 0.0))
    else:
        params = params._replace(b_ih=params.b_ih.at[0].set(-0.0 if use_bias else 0.0))
    cell2, params2 = interop.from_equinox(interop.to_equinox(cell, params, use_bias=use_bias))
    assert dict(cell2.config) == dict(cell.config)
    assert type(params2) is type(params)
    for f, a, b in zip(params._fields, params, params2, strict=True):
        if a is None:
            assert b is None, f
        else:
            assert_bits(b, a, f)


@needs_equinox
def test_gru_hidden_side_biases_are_folded():
    cell, params = jr_cell("gru", 4, seed=7)
    module = interop.to_equinox(cell, params)
    np.testing.assert_array_equal(module.bias[:8], params.b_ih[:8] + params.b_hh[:8])
    np.testing.assert_array_equal(module.bias[8:], params.b_ih[8:])
    np.testing.assert_array_equal(module.bias_n, params.b_hh[8:])


# --------------------------------------------------------------------------------------------
# What cannot be converted is refused, naming why


@needs_equinox
def test_from_equinox_refuses_other_modules():
    with pytest.raises(TypeError, match="got Linear"):
        interop.from_equinox(eqx.nn.Linear(3, 4, key=jax.random.key(0)))
    with pytest.raises(TypeError, match="got dict"):
        interop.from_equinox({})


@needs_equinox
def test_from_equinox_subclasses():
    class Plain(eqx.nn.GRUCell):
        pass

    class Custom(Plain):
        def __call__(self, input, hidden, *, key=None):
            return hidden

    module = Plain(I, 4, key=jax.random.key(0))
    cell, params = interop.from_equinox(module)
    h = jnp.ones(4)
    assert_close(cell.apply(params, h, jnp.ones(I))[1], module(jnp.ones(I), h))
    with pytest.raises(ValueError, match=r"Custom overrides GRUCell\.__call__"):
        interop.from_equinox(Custom(I, 4, key=jax.random.key(1)))


@needs_equinox
@pytest.mark.parametrize(
    "kind, field, shape",
    [
        ("gru", "weight_ih", (12, 2)),
        ("gru", "weight_hh", (4, 12)),
        ("gru", "bias", (4,)),
        ("gru", "bias_n", (12,)),
        ("lstm", "weight_hh", (16, 3)),
        ("lstm", "bias", (12,)),
    ],
)
def test_from_equinox_wrong_shapes(kind, field, shape):
    module = eqx_cell(kind, 4)
    bad = eqx.tree_at(lambda m: getattr(m, field), module, jnp.zeros(shape))
    name = "GRUCell" if kind == "gru" else "LSTMCell"
    with pytest.raises(ValueError, match=rf"{name}\.{field}: expected shape"):
        interop.from_equinox(bad)


@needs_equinox
def test_from_equinox_mixed_dtypes():
    module = eqx_cell("gru", 4)
    bad = eqx.tree_at(lambda m: m.bias_n, module, module.bias_n.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"GRUCell\.bias_n: dtype bfloat16"):
        interop.from_equinox(bad)


def _custom_cell():
    base = jr.gru(I, 4, reset_after=True)
    return base._replace(config=()), base.init(jax.random.key(0))


@needs_equinox
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jr.gru(I, 4), "reset_after=False"),
        (lambda: jr.lstm(I, 4, peephole=True), "peephole"),
        (lambda: jr.lstm(I, 4, coupled=True), "coupled"),
        (lambda: jr.lstm(I, 4, proj_size=2), "proj_size"),
        (lambda: jr.simple_rnn(I, 4), "simple_rnn has no Equinox"),
        (lambda: jr.jordan_rnn(I, 4, 2), "jordan_rnn"),
    ],
    ids=["gru_reset_before", "peephole", "coupled", "proj", "simple", "jordan"],
)
def test_to_equinox_refuses_what_equinox_cannot_compute(make, match):
    cell = make()
    with pytest.raises(ValueError, match=match):
        interop.to_equinox(cell, cell.init(jax.random.key(0)))


@needs_equinox
def test_to_equinox_refuses_custom_cells_and_wrong_params():
    with pytest.raises(ValueError, match="custom cell"):
        interop.to_equinox(*_custom_cell())
    cell = jr.lstm(I, 4)
    params = cell.init(jax.random.key(0))
    with pytest.raises(TypeError, match="expected LSTMParams"):
        interop.to_equinox(cell, jr.gru(I, 4, reset_after=True).init(jax.random.key(1)))
    with pytest.raises(ValueError, match=r"params\.w_hh: expected shape \(4, 16\)"):
        interop.to_equinox(cell, params._replace(w_hh=params.w_hh[:3]))
    with pytest.raises(ValueError, match=r"params\.b: expected shape"):
        interop.to_equinox(cell, params._replace(b=params.b[:4]))


@needs_equinox
@pytest.mark.parametrize("kind, field", [("lstm", "b"), ("gru", "b_ih"), ("gru", "b_hh")])
def test_to_equinox_without_bias_refuses_nonzero_biases(kind, field):
    cell, params = jr_cell(kind, 4, use_bias=False)
    interop.to_equinox(cell, params, use_bias=False)  # all zero: fine
    params = params._replace(**{field: getattr(params, field).at[-1].set(0.5)})
    with pytest.raises(ValueError, match=rf"use_bias=False, but params\.{field} is nonzero"):
        interop.to_equinox(cell, params, use_bias=False)


# --------------------------------------------------------------------------------------------
# Equinox is optional


def test_missing_equinox_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "equinox", None)  # `import equinox` now fails
    with pytest.raises(ImportError, match=r'pip install "jaxrnn\[equinox\]"'):
        interop.from_equinox(object())
    cell = jr.lstm(I, 4)
    with pytest.raises(ImportError, match=r'pip install "jaxrnn\[equinox\]"'):
        interop.to_equinox(cell, cell.init(jax.random.key(0)))


def test_import_jaxrnn_does_not_import_equinox():
    code = (
        "import sys, jaxrnn, jaxrnn.interop, jaxrnn.interop.equinox\n"
        "assert jaxrnn.interop.from_equinox is jaxrnn.interop.equinox.from_equinox\n"
        "assert jaxrnn.interop.to_equinox is jaxrnn.interop.equinox.to_equinox\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'equinox')\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
