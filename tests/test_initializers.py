"""Custom initialisers of the cell factories: ``kernel_init``, ``recurrent_kernel_init``,
``bias_init``.

References: the documented default recipe written out with ``jax.nn.initializers`` (the
defaults must stay bit for bit what they were), spy initialisers recording every call (one per
gate block, with the documented shape, dtype and a key of its own), and Flax's ``LSTMCell``,
``GRUCell`` and ``MGUCell`` built with the same initialisers.
"""

import functools
import math
from collections import Counter

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.cudnn import supports

IN, H, P, OUT, C, K = 2, 3, 2, 2, 1, (2,)
FB = 0.5  # a forget bias that is not the default
ARGS = ("kernel_init", "recurrent_kernel_init", "bias_init")
lecun = jax.nn.initializers.lecun_normal()
orthogonal = jax.nn.initializers.orthogonal()


def per_gate_orthogonal(key, rows, blocks):
    keys = [key] if blocks == 1 else jax.random.split(key, blocks)
    return jnp.concatenate([orthogonal(k, (rows, H), jnp.float32) for k in keys], axis=-1)


# name: (factory call, {field: (argument, block shape, blocks)}, forget block (field, index),
#        number of keys the default init splits, defaults of the other fields from those keys).
CASES = {
    "simple_rnn": (
        lambda **kw: jr.simple_rnn(IN, H, **kw),
        {"w_ih": (0, (IN, H), 1), "w_hh": (1, (H, H), 1), "b": (2, (H,), 1)},
        None,
        2,
        lambda k: {},
    ),
    "gru": (
        lambda **kw: jr.gru(IN, H, reset_after=True, **kw),
        {
            "w_ih": (0, (IN, H), 3),
            "w_hh": (1, (H, H), 3),
            "b_ih": (2, (H,), 3),
            "b_hh": (2, (H,), 3),
        },
        None,
        2,
        lambda k: {},
    ),
    "lstm": (
        lambda **kw: jr.lstm(IN, H, forget_bias=FB, **kw),
        {"w_ih": (0, (IN, H), 4), "w_hh": (1, (H, H), 4), "b": (2, (H,), 4)},
        ("b", 1),
        4,
        lambda k: {"w_peep": None, "w_proj": None},
    ),
    "lstm_coupled_peephole_proj": (
        lambda **kw: jr.lstm(IN, H, coupled=True, peephole=True, proj_size=P, forget_bias=FB, **kw),
        {"w_ih": (0, (IN, H), 3), "w_hh": (1, (P, H), 3), "b": (2, (H,), 3)},
        ("b", 0),
        4,
        lambda k: {
            "w_peep": jax.random.uniform(k[2], (2, H), jnp.float32, -(H**-0.5), H**-0.5),
            "w_proj": lecun(k[3], (H, P), jnp.float32),
        },
    ),
    "jordan_rnn": (
        lambda **kw: jr.jordan_rnn(IN, H, OUT, **kw),
        {"w_ih": (0, (IN, H), 1), "w_oh": (1, (OUT, H), 1), "b": (2, (H,), 1)},
        None,
        3,
        lambda k: {"w_ho": lecun(k[2], (H, OUT), jnp.float32), "b_o": jnp.zeros(OUT)},
    ),
    "mgu": (
        lambda **kw: jr.mgu(IN, H, forget_bias=FB, **kw),
        {
            "w_ih": (0, (IN, H), 2),
            "w_hh": (1, (H, H), 2),
            "b_ih": (2, (H,), 2),
            "b_hh": (2, (H,), 1),
        },
        ("b_ih", 0),
        2,
        lambda k: {},
    ),
    "conv_lstm": (
        lambda **kw: jr.conv_lstm(C, H, K, forget_bias=FB, **kw),
        {"w_ih": (0, (*K, C, H), 4), "w_hh": (1, (*K, H, H), 4), "b": (2, (H,), 4)},
        ("b", 1),
        2,
        lambda k: {},
    ),
    "conv_gru": (
        lambda **kw: jr.conv_gru(C, H, K, **kw),
        {
            "w_ih": (0, (*K, C, H), 3),
            "w_hh": (1, (*K, H, H), 3),
            "b_ih": (2, (H,), 3),
            "b_hh": (2, (H,), 3),
        },
        None,
        2,
        lambda k: {},
    ),
    "layer_norm_lstm": (
        lambda **kw: jr.layer_norm_lstm(IN, H, forget_bias=FB, **kw),
        {
            "w_ih": (0, (IN, H), 4),
            "w_hh": (1, (H, H), 4),
            "ln_ih_bias": (2, (H,), 4),
            "ln_hh_bias": (2, (H,), 4),
        },
        ("ln_ih_bias", 1),
        2,
        lambda k: {
            "ln_ih_scale": jnp.ones(4 * H),
            "ln_hh_scale": jnp.ones(4 * H),
            "ln_c_scale": jnp.ones(H),
            "ln_c_bias": jnp.zeros(H),
        },
    ),
    "layer_norm_gru": (
        lambda **kw: jr.layer_norm_gru(IN, H, **kw),
        {
            "w_ih": (0, (IN, H), 3),
            "w_hh": (1, (H, H), 3),
            "ln_ih_bias": (2, (H,), 3),
            "ln_hh_bias": (2, (H,), 3),
        },
        None,
        2,
        lambda k: {"ln_ih_scale": jnp.ones(3 * H), "ln_hh_scale": jnp.ones(3 * H)},
    ),
}
NAMES = list(CASES)


def default_recipe(name, key, extra_key=False):
    """The documented defaults of every field, from ``key`` split as the cell splits it (into
    one more part with ``bias_init`` given)."""
    _, spec, forget, n_keys, others = CASES[name]
    keys = jax.random.split(key, n_keys + extra_key)
    out = dict(others(keys))
    for field, (arg, shape, blocks) in spec.items():
        fused = (*shape[:-1], blocks * shape[-1])
        if arg == 0:
            out[field] = lecun(keys[0], fused, jnp.float32)
        elif arg == 1 and (name.startswith("conv") or name == "jordan_rnn"):
            out[field] = lecun(keys[1], fused, jnp.float32)
        elif arg == 1:
            out[field] = per_gate_orthogonal(keys[1], shape[0], blocks)
        else:
            out[field] = jnp.zeros(fused)
    if forget:
        field, g = forget
        out[field] = out[field].at[g * H : (g + 1) * H].set(FB)
    return out


def blocks_of(a, n):
    return jnp.split(a, n, axis=-1)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_bit_identical_to_the_documented_recipe(name):
    make = CASES[name][0]
    params = make().init(jax.random.key(0))
    explicit = make(kernel_init=None, recurrent_kernel_init=None, bias_init=None)
    expected = default_recipe(name, jax.random.key(0))
    assert set(expected) == set(params._fields)
    for field, value in expected.items():
        got = getattr(params, field)
        if value is None:
            assert got is None, field
            continue
        assert got.dtype == jnp.float32, field
        np.testing.assert_array_equal(got, value, err_msg=field)
    jax.tree.map(np.testing.assert_array_equal, explicit.init(jax.random.key(0)), params)


@pytest.mark.parametrize("name", NAMES)
def test_constant_initialisers_reach_every_block_and_nothing_else(name):
    make, spec, forget, _, _ = CASES[name]
    consts = (0.1, 0.2, 0.3)
    inits = {a: jax.nn.initializers.constant(c) for a, c in zip(ARGS, consts, strict=True)}
    cell = make(**inits)
    params = cell.init(jax.random.key(0))
    traced = jax.eval_shape(cell.init, jax.random.key(0))  # the checks work on tracers too
    assert jax.tree.map(lambda a: (a.shape, a.dtype), traced) == jax.tree.map(
        lambda a: (a.shape, a.dtype), params
    )
    expected = default_recipe(name, jax.random.key(0), extra_key=True)
    for field, (arg, shape, blocks) in spec.items():
        expected[field] = jnp.full((*shape[:-1], blocks * shape[-1]), consts[arg])
    if forget:
        field, g = forget
        expected[field] = expected[field].at[g * H : (g + 1) * H].add(FB)
    for field, value in expected.items():
        got = getattr(params, field)
        assert (got is None) == (value is None), field
        if value is not None:
            np.testing.assert_array_equal(got, value, err_msg=field)


def spy(arg, calls):
    """An initialiser recording ``(arg, shape, dtype, key bits)`` and returning a fill that
    depends on the key (a random initialiser, without compiling a sampler for every shape)."""

    def init(key, shape, dtype):
        bits = tuple(np.asarray(jax.random.key_data(key)).tolist())
        calls.append((arg, tuple(shape), jnp.dtype(dtype), bits))
        return jnp.full(shape, (bits[-1] % 251) / 251, dtype)

    return init


@pytest.mark.parametrize("name", NAMES)
def test_one_call_per_gate_block_with_its_shape_dtype_and_own_key(name):
    make, spec, _, _, _ = CASES[name]
    calls = []
    cell = make(param_dtype=jnp.bfloat16, **{a: spy(a, calls) for a in ARGS})
    params = cell.init(jax.random.key(0))
    expected = Counter()
    for arg, shape, blocks in spec.values():
        expected[(ARGS[arg], shape, jnp.dtype(jnp.bfloat16))] += blocks
    assert Counter(c[:3] for c in calls) == expected
    assert len({c[3] for c in calls}) == len(calls), "a key was used for two blocks"
    for field, (_, _, blocks) in spec.items():  # its own key for each: the blocks differ
        parts = blocks_of(getattr(params, field), blocks)
        assert getattr(params, field).dtype == jnp.bfloat16
        for a in range(blocks):
            for b in range(a):
                assert not np.array_equal(parts[a], parts[b]), (field, a, b)


@pytest.mark.parametrize("name", NAMES)
def test_orthogonal_recurrent_init_gives_an_orthogonal_block_per_gate(name):
    make, spec, _, _, _ = CASES[name]
    field, (_, _, blocks) = next((f, s) for f, s in spec.items() if s[0] == 1)
    w_hh = getattr(make(recurrent_kernel_init=orthogonal).init(jax.random.key(0)), field)
    parts = blocks_of(w_hh, blocks)
    for k, block in enumerate(parts):
        m = np.asarray(block, np.float64).reshape(-1, H)
        gram = m.T @ m if m.shape[0] >= H else m @ m.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
        assert not any(np.array_equal(block, other) for other in parts[:k])  # keys differ
    if not (name.startswith("conv") or name == "jordan_rnn"):  # the default, exactly
        np.testing.assert_array_equal(w_hh, getattr(make().init(jax.random.key(0)), field))


@pytest.mark.parametrize("name", NAMES)
def test_errors_name_the_argument(name):
    make = CASES[name][0]
    for arg in ARGS:
        with pytest.raises(TypeError, match=rf"^{arg}: expected None .* got str 'zeros'"):
            make(**{arg: "zeros"})
        wrong_shape = make(**{arg: lambda key, shape, dtype: jnp.zeros((*shape, 1), dtype)})
        with pytest.raises(ValueError, match=rf"^{arg}: .* shape \(.*\) and dtype float32 .*"):
            wrong_shape.init(jax.random.key(0))
        wrong_dtype = make(**{arg: lambda key, shape, dtype: jnp.zeros(shape, jnp.bfloat16)})
        with pytest.raises(ValueError, match=rf"^{arg}: .*got shape .*, dtype bfloat16"):
            wrong_dtype.init(jax.random.key(0))


def test_layers_forward_the_initialisers_and_cells_stay_hashable():
    ones = jax.nn.initializers.ones
    cell = jr.lstm(IN, H, kernel_init=ones, bias_init=ones)
    assert hash(cell) == hash(cell) and "kernel_init" not in dict(cell.config)
    layer = jr.rnn(jr.lstm, IN, H, num_layers=2, kernel_init=ones)
    params = layer.init(jax.random.key(0))
    assert all(bool((p.w_ih == 1).all()) for p in jax.tree.leaves(params, is_leaf=_is_lstm))
    assert supports(layer) == (True, "")  # cuDNN dispatch: same function, other start


def _is_lstm(x):
    return isinstance(x, jr.LSTMParams)


# ---------------------------------------------------------------------------------------------
# Flax's cells built with the same initialisers compute the same function.


def ramp(offset):
    """A key-independent initialiser whose entries differ, so a transposed block would show."""

    def init(key, shape, dtype):
        n = math.prod(shape)
        return (jnp.arange(n).reshape(shape) % 7 - 3).astype(dtype) * 0.1 + offset

    return init


INITS = {
    "constant": [jax.nn.initializers.constant(c) for c in (0.3, -0.2, 0.1)],
    "ramp": [ramp(o) for o in (0.0, 0.05, -0.1)],
}


# The initialisers matter only at init: one compiled forward pass per kind serves them all.
FLAX = {
    "lstm": (lambda **kw: nn.LSTMCell(H, **kw), lambda **kw: jr.lstm(IN, H, forget_bias=0.0, **kw)),
    "gru": (lambda **kw: nn.GRUCell(H, **kw), lambda **kw: jr.gru(IN, H, reset_after=True, **kw)),
    "mgu": (lambda **kw: nn.MGUCell(H, **kw), lambda **kw: jr.mgu(IN, H, forget_bias=FB, **kw)),
}


@functools.cache
def forward(kind):
    """Jitted ``ys`` of Flax's cell and of jaxrnn's over a batch of sequences, given params."""
    flax_rnn, cell = nn.RNN(FLAX[kind][0]()), FLAX[kind][1]()
    return (
        jax.jit(lambda v, xs: flax_rnn.apply({"params": {"cell": v}}, xs)),
        jax.jit(lambda p, xs: jr.scan(cell, p, xs)[1]),
    )


@pytest.mark.parametrize("inits", INITS)
@pytest.mark.parametrize("kind", FLAX)
def test_same_initialisers_as_flax_cells_compute_the_same(kind, inits):
    k_init, r_init, b_init = INITS[inits]
    xs = jax.random.normal(jax.random.key(0), (2, 4, IN))
    kw = {"kernel_init": k_init, "recurrent_kernel_init": r_init}
    if kind == "mgu":  # Flax: forget_bias_init for b_if, activation_bias_init for the others

        def forget(key, shape, dtype):
            return b_init(key, shape, dtype) + FB

        flax_kw = {"forget_bias_init": forget, "activation_bias_init": b_init}
    else:
        flax_kw = {"bias_init": b_init}
    flax_cell = FLAX[kind][0](**kw, **flax_kw)
    x0 = xs[:, 0]
    v = flax_cell.init(
        jax.random.key(1), flax_cell.initialize_carry(jax.random.key(3), x0.shape), x0
    )
    params = FLAX[kind][1](**kw, bias_init=b_init).init(jax.random.key(2))
    if kind == "gru":
        # Flax's GRUCell has no hidden-side b_hr, b_hz (PyTorch and Keras have them, and
        # bias_init initialises them); they are the only difference.
        bias = b_init(None, (H,), jnp.float32)
        for block in blocks_of(params.b_hh, 3):
            np.testing.assert_array_equal(block, bias)
        params = params._replace(b_hh=params.b_hh.at[: 2 * H].set(0.0))
    flax_fwd, jr_fwd = forward(kind)
    np.testing.assert_allclose(jr_fwd(params, xs), flax_fwd(v["params"], xs), rtol=1e-6, atol=1e-6)
