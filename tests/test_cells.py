"""Single-step tests of every cell against float64 NumPy references of its equations.

The references below are written from the math in column-vector form, one example at a time:
each gate's weights are sliced out of the fused input-major matrices, transposed into the
``W @ x`` convention, and the sigmoid is ``1 / (1 + exp(-x))``. Nothing here calls jaxrnn to
compute an expected value.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from helpers import assert_trees_close
from jax.test_util import check_grads

import jaxrnn as jr

IN, H, OUT, P = 3, 4, 2, 2  # input, hidden, Jordan output and LSTM projection sizes

# (id, factory(dtype) -> Cell, reference kind, reference options)
CELLS = [
    ("simple_rnn-tanh", lambda dt: jr.simple_rnn(IN, H, param_dtype=dt), "simple", {"act": "tanh"}),
    (
        "simple_rnn-relu",
        lambda dt: jr.simple_rnn(IN, H, activation=jax.nn.relu, param_dtype=dt),
        "simple",
        {"act": "relu"},
    ),
    ("gru", lambda dt: jr.gru(IN, H, param_dtype=dt), "gru", {"reset_after": False}),
    (
        "gru-reset_after",
        lambda dt: jr.gru(IN, H, reset_after=True, param_dtype=dt),
        "gru",
        {"reset_after": True},
    ),
    ("lstm", lambda dt: jr.lstm(IN, H, param_dtype=dt), "lstm", {}),
    (
        "lstm-peephole",
        lambda dt: jr.lstm(IN, H, peephole=True, param_dtype=dt),
        "lstm",
        {"peephole": True},
    ),
    (
        "lstm-coupled",
        lambda dt: jr.lstm(IN, H, coupled=True, param_dtype=dt),
        "lstm",
        {"coupled": True},
    ),
    (
        "lstm-peephole-coupled",
        lambda dt: jr.lstm(IN, H, peephole=True, coupled=True, param_dtype=dt),
        "lstm",
        {"peephole": True, "coupled": True},
    ),
    ("lstm-proj", lambda dt: jr.lstm(IN, H, proj_size=P, param_dtype=dt), "lstm", {"proj": True}),
    (
        "lstm-peephole-proj",
        lambda dt: jr.lstm(IN, H, peephole=True, proj_size=P, param_dtype=dt),
        "lstm",
        {"peephole": True, "proj": True},
    ),
    ("jordan_rnn", lambda dt: jr.jordan_rnn(IN, H, OUT, param_dtype=dt), "jordan", {}),
]
CELL_IDS = [c[0] for c in CELLS]
BATCH_SHAPES = [(), (3,), (2, 3)]

# Documented parameter layout: field name -> shape (None: the field is None).
EXPECTED_LAYOUT = {
    "simple_rnn-tanh": {"w_ih": (IN, H), "w_hh": (H, H), "b": (H,)},
    "simple_rnn-relu": {"w_ih": (IN, H), "w_hh": (H, H), "b": (H,)},
    "gru": {"w_ih": (IN, 3 * H), "w_hh": (H, 3 * H), "b_ih": (3 * H,), "b_hh": (3 * H,)},
    "gru-reset_after": {
        "w_ih": (IN, 3 * H),
        "w_hh": (H, 3 * H),
        "b_ih": (3 * H,),
        "b_hh": (3 * H,),
    },
    "lstm": {
        "w_ih": (IN, 4 * H),
        "w_hh": (H, 4 * H),
        "b": (4 * H,),
        "w_peep": None,
        "w_proj": None,
    },
    "lstm-peephole": {
        "w_ih": (IN, 4 * H),
        "w_hh": (H, 4 * H),
        "b": (4 * H,),
        "w_peep": (3, H),
        "w_proj": None,
    },
    "lstm-coupled": {
        "w_ih": (IN, 3 * H),
        "w_hh": (H, 3 * H),
        "b": (3 * H,),
        "w_peep": None,
        "w_proj": None,
    },
    "lstm-peephole-coupled": {
        "w_ih": (IN, 3 * H),
        "w_hh": (H, 3 * H),
        "b": (3 * H,),
        "w_peep": (2, H),
        "w_proj": None,
    },
    "lstm-proj": {
        "w_ih": (IN, 4 * H),
        "w_hh": (P, 4 * H),
        "b": (4 * H,),
        "w_peep": None,
        "w_proj": (H, P),
    },
    "lstm-peephole-proj": {
        "w_ih": (IN, 4 * H),
        "w_hh": (P, 4 * H),
        "b": (4 * H,),
        "w_peep": (3, H),
        "w_proj": (H, P),
    },
    "jordan_rnn": {"w_ih": (IN, H), "w_oh": (OUT, H), "b": (H,), "w_ho": (H, OUT), "b_o": (OUT,)},
}
EXPECTED_PARAMS_TYPE = {
    "simple": jr.SimpleRNNParams,
    "gru": jr.GRUParams,
    "lstm": jr.LSTMParams,
    "jordan": jr.JordanParams,
}


def cell_cases():
    return pytest.mark.parametrize(("name", "make", "kind", "opts"), CELLS, ids=CELL_IDS)


# --------------------------------------------------------------------------------------------
# Helpers: random non-default parameters, carries and inputs (NumPy float64 source of truth).


def random_params(params, seed, scale=0.5):
    """Replaces every array leaf of ``params`` by ``scale`` * standard normals (NumPy float64)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: scale * rng.standard_normal(np.shape(leaf)), params)


def random_like(tree, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: scale * rng.standard_normal(np.shape(leaf)), tree)


def to_jax(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


def to_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def make_inputs(make, batch_shape, dtype, seed=0):
    """Cell, random params, random carry and random x, all as arrays of ``dtype``.

    Only the structure of ``init`` and ``initial_carry`` is used (via ``jax.eval_shape``, which
    compiles nothing); every value is drawn afresh.
    """
    cell = make(dtype)
    np_params = random_params(jax.eval_shape(cell.init, jax.random.key(seed)), seed + 1)
    np_carry = random_like(jax.eval_shape(lambda: cell.initial_carry(batch_shape, dtype)), seed + 2)
    np_x = np.random.default_rng(seed + 3).standard_normal((*batch_shape, IN))
    return cell, to_jax(np_params, dtype), to_jax(np_carry, dtype), jnp.asarray(np_x, dtype)


# --------------------------------------------------------------------------------------------
# NumPy references, one example (column vectors) at a time.


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ``mm(W, v)`` is every matrix product of a reference: ``W @ v`` in float64 by default;
# tests/test_precision.py passes one that rounds both operands to bfloat16 first.


def ref_simple(p, a, x, act, mm=np.matmul):
    W_ax, W_aa, b_a = p.w_ih.T, p.w_hh.T, p.b
    z = mm(W_aa, a) + mm(W_ax, x) + b_a
    a_new = np.tanh(z) if act == "tanh" else np.maximum(z, 0.0)
    return a_new, a_new


def ref_gru(p, h, x, reset_after, mm=np.matmul):
    def block(w, k):  # gate k of a fused input-major matrix, as a column-vector matrix
        return w[:, k * H : (k + 1) * H].T

    def bias(b, k):
        return b[k * H : (k + 1) * H]

    W_xr, W_xz, W_xn = (block(p.w_ih, k) for k in range(3))
    W_hr, W_hz, W_hn = (block(p.w_hh, k) for k in range(3))
    b_xr, b_xz, b_xn = (bias(p.b_ih, k) for k in range(3))
    b_hr, b_hz, b_hn = (bias(p.b_hh, k) for k in range(3))
    r = sigmoid(mm(W_xr, x) + b_xr + mm(W_hr, h) + b_hr)
    z = sigmoid(mm(W_xz, x) + b_xz + mm(W_hz, h) + b_hz)
    if reset_after:
        n = np.tanh(mm(W_xn, x) + b_xn + r * (mm(W_hn, h) + b_hn))
    else:
        n = np.tanh(mm(W_xn, x) + b_xn + mm(W_hn, r * h) + b_hn)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def ref_lstm(p, carry, x, peephole=False, coupled=False, proj=False, mm=np.matmul):
    h, c = carry
    names = ["f", "g", "o"] if coupled else ["i", "f", "g", "o"]
    W_x = {n: p.w_ih[:, k * H : (k + 1) * H].T for k, n in enumerate(names)}
    W_h = {n: p.w_hh[:, k * H : (k + 1) * H].T for k, n in enumerate(names)}
    b = {n: p.b[k * H : (k + 1) * H] for k, n in enumerate(names)}
    pre = {n: mm(W_x[n], x) + mm(W_h[n], h) + b[n] for n in names}
    if peephole:
        rows = ["f", "o"] if coupled else ["i", "f", "o"]
        w_c = {n: p.w_peep[k] for k, n in enumerate(rows)}
    f = sigmoid(pre["f"] + (w_c["f"] * c if peephole else 0.0))
    i = 1.0 - f if coupled else sigmoid(pre["i"] + (w_c["i"] * c if peephole else 0.0))
    c_tilde = np.tanh(pre["g"])
    c_new = f * c + i * c_tilde
    o = sigmoid(pre["o"] + (w_c["o"] * c_new if peephole else 0.0))
    h_new = o * np.tanh(c_new)
    if proj:
        h_new = mm(p.w_proj.T, h_new)
    return (h_new, c_new), h_new


def ref_jordan(p, o_prev, x, mm=np.matmul):
    U, W, V, b, c = p.w_ih.T, p.w_oh.T, p.w_ho.T, p.b, p.b_o
    h = np.tanh(b + mm(W, o_prev) + mm(U, x))
    o = c + mm(V, h)
    return o, o


REFERENCES = {"simple": ref_simple, "gru": ref_gru, "lstm": ref_lstm, "jordan": ref_jordan}


def reference_apply(kind, opts, params, carry, x, mm=np.matmul):
    """Runs the reference example by example over the batch shape of ``x``."""
    params, carry, x = to_numpy(params), to_numpy(carry), np.asarray(x, np.float64)
    ref = functools.partial(REFERENCES[kind], **opts, mm=mm)
    batch_shape = x.shape[:-1]
    out_carry = jax.tree.map(np.zeros_like, carry)
    out_y = None
    for idx in np.ndindex(*batch_shape):
        c_i, y_i = ref(params, jax.tree.map(lambda a, idx=idx: a[idx], carry), x[idx])
        if out_y is None:
            out_y = np.zeros((*batch_shape, y_i.shape[-1]))
        out_y[idx] = y_i
        for dst, src in zip(jax.tree.leaves(out_carry), jax.tree.leaves(c_i), strict=True):
            dst[idx] = src
    return out_carry, out_y


# --------------------------------------------------------------------------------------------
# The step against the reference.


@cell_cases()
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
def test_apply_matches_numpy_reference_float64(name, make, kind, opts, batch_shape):
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, batch_shape, jnp.float64)
        got = cell.apply(params, carry, x)
        want = reference_apply(kind, opts, params, carry, x)
        assert jax.tree.structure(got[0]) == jax.tree.structure(carry)
        assert got[1].shape == (*batch_shape, cell.output_size)
        assert got[1].dtype == jnp.float64
        assert_trees_close(got, want, rtol=1e-12, atol=1e-12)


class ApplyFloat32Test(chex.TestCase):
    """The float32 step against the float64 NumPy reference, eagerly and under ``jax.jit``
    (``chex.variants``, as Optax tests its transformations)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CELLS)
    def test_apply_matches_numpy_reference_float32(self, make, kind, opts):
        cell, params, carry, x = make_inputs(make, (3,), jnp.float32)
        got = self.variant(cell.apply)(params, carry, x)
        chex.assert_trees_all_equal_structs(got[0], carry)
        chex.assert_type(jax.tree.leaves(got), jnp.float32)
        want = reference_apply(kind, opts, params, carry, x)
        assert_trees_close(got, want, rtol=1e-5, atol=1e-5)


@cell_cases()
def test_reference_is_sensitive_to_every_parameter(name, make, kind, opts):
    """Guards the reference test itself: perturbing any leaf changes the reference output."""
    _, params, carry, x = make_inputs(make, (), jnp.float32)
    base = reference_apply(kind, opts, params, carry, x)
    np_params = to_numpy(params)
    for i, leaf in enumerate(jax.tree.leaves(np_params)):
        flat = jax.tree.leaves(np_params)
        flat[i] = leaf + 0.1
        bumped = jax.tree.unflatten(jax.tree.structure(np_params), flat)
        out = reference_apply(kind, opts, bumped, carry, x)
        diff = max(
            np.abs(a - b).max()
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(base), strict=True)
        )
        assert diff > 1e-4, f"reference of {name} ignores parameter leaf {i}"


# --------------------------------------------------------------------------------------------
# project / step.


@cell_cases()
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
def test_apply_equals_step_of_project(name, make, kind, opts, batch_shape):
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, batch_shape, jnp.float64)
        assert cell.project is not None and cell.step is not None
        xp = cell.project(params, x)
        assert xp.shape[:-1] == batch_shape
        assert_trees_close(cell.apply(params, carry, x), cell.step(params, carry, xp), 0, 0)


@cell_cases()
def test_project_is_carry_independent_over_extra_axes(name, make, kind, opts):
    """``project`` maps any number of leading axes at once (scan hoists it over time)."""
    with jax.enable_x64(True):
        cell, params, _, _ = make_inputs(make, (), jnp.float64)
        xs = jnp.asarray(np.random.default_rng(7).standard_normal((5, 3, IN)), jnp.float64)
        xp_all = cell.project(params, xs)
        for t in range(xs.shape[0]):
            assert_trees_close(xp_all[t], cell.project(params, xs[t]), rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------------------------
# Parameter layout, init and initial_carry.


def _check_layout(name, kind, params, dtype):
    assert type(params) is EXPECTED_PARAMS_TYPE[kind]
    expected = EXPECTED_LAYOUT[name]
    assert params._fields == tuple(expected)
    for field, shape in expected.items():
        value = getattr(params, field)
        if shape is None:
            assert value is None, f"{field} should be None"
        else:
            assert value is not None, f"{field} should be an array"
            assert value.shape == shape, f"{field}: {value.shape} != {shape}"
            assert value.dtype == dtype, f"{field}: {value.dtype} != {dtype}"


@cell_cases()
def test_param_fields_and_shapes(name, make, kind, opts):
    # Abstract evaluation traces ``init`` exactly; test_init_deterministic... runs it for real.
    cell = make(jnp.float32)
    _check_layout(name, kind, jax.eval_shape(cell.init, jax.random.key(0)), jnp.float32)
    with jax.enable_x64(True):
        cell = make(jnp.float64)
        _check_layout(name, kind, jax.eval_shape(cell.init, jax.random.key(0)), jnp.float64)


BF16_CASES = [c for c in CELLS if c[0] in ("simple_rnn-tanh", "lstm", "jordan_rnn")]


@pytest.mark.parametrize(("name", "make", "kind", "opts"), BF16_CASES)
def test_init_bfloat16(name, make, kind, opts):
    _check_layout(name, kind, make(jnp.bfloat16).init(jax.random.key(0)), jnp.bfloat16)


@cell_cases()
def test_sizes_reported_by_cell(name, make, kind, opts):
    cell = make(jnp.float32)
    assert cell.input_size == IN
    want_out = {"jordan": OUT}.get(kind, P if opts.get("proj") else H)
    assert cell.output_size == want_out


@cell_cases()
def test_init_deterministic_per_key_and_different_across_keys(name, make, kind, opts):
    init = make(jnp.float32).init
    a = init(jax.random.key(0))
    a_again = init(jax.random.key(0))
    b = init(jax.random.key(1))
    _check_layout(name, kind, a, jnp.float32)
    assert_trees_close(a, a_again, rtol=0, atol=0)
    for field in a._fields:
        leaf_a, leaf_b = getattr(a, field), getattr(b, field)
        if leaf_a is None or field.startswith("b"):  # biases are constants
            continue
        assert not np.allclose(leaf_a, leaf_b), f"{field} does not depend on the key"


@pytest.mark.parametrize(
    "make",
    [
        lambda: jr.gru(IN, H),
        lambda: jr.lstm(IN, H),
        lambda: jr.lstm(IN, H, coupled=True, proj_size=P),
    ],
    ids=["gru", "lstm", "lstm-coupled-proj"],
)
def test_init_draws_each_recurrent_gate_block_independently(make):
    """Each gate's block of ``w_hh`` is its own draw (not one matrix repeated)."""
    w_hh = np.asarray(make().init(jax.random.key(3)).w_hh)
    blocks = np.split(w_hh, w_hh.shape[1] // H, axis=1)
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            assert not np.allclose(blocks[i], blocks[j]), f"gate blocks {i} and {j} are equal"


@pytest.mark.parametrize(
    "make",
    [
        lambda: jr.simple_rnn(IN, H),
        lambda: jr.gru(IN, H),
        lambda: jr.lstm(IN, H),
        lambda: jr.lstm(IN, H, coupled=True),
    ],
    ids=["simple_rnn", "gru", "lstm", "lstm-coupled"],
)
def test_init_recurrent_blocks_are_orthogonal_and_biases_zero(make):
    cell = make()
    params = cell.init(jax.random.key(0))
    w_hh = np.asarray(params.w_hh, np.float64)
    for block in np.split(w_hh, w_hh.shape[1] // H, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    if isinstance(params, jr.GRUParams):
        assert not np.any(params.b_ih) and not np.any(params.b_hh)
    elif isinstance(params, jr.SimpleRNNParams):
        assert not np.any(params.b)


@pytest.mark.parametrize("coupled", [False, True], ids=["lstm", "coupled"])
@pytest.mark.parametrize("forget_bias", [1.0, 2.5, 0.0])
def test_forget_bias_sets_exactly_the_f_block(coupled, forget_bias):
    cell = jr.lstm(IN, H, coupled=coupled, forget_bias=forget_bias)
    b = np.asarray(cell.init(jax.random.key(0)).b)
    f_block = 0 if coupled else 1  # blocks (i, f, g, o) or, coupled, (f, g, o)
    want = np.zeros((3 if coupled else 4) * H, np.float32)
    want[f_block * H : (f_block + 1) * H] = forget_bias
    np.testing.assert_array_equal(b, want)


def test_default_forget_bias_opens_the_forget_gate():
    """With default init and zero state/input, f = sigma(1) and i = sigma(0) = 1/2."""
    cell = jr.lstm(IN, H, peephole=True)
    params = cell.init(jax.random.key(0))
    c0 = jnp.ones(H)
    carry, _ = cell.apply(params, jr.LSTMCarry(jnp.zeros(H), c0), jnp.zeros(IN))
    # g = tanh(0) = 0, so c_1 = f * c_0 with f = sigmoid(1 + w_cf * c_0).
    f = sigmoid(1.0 + np.asarray(params.w_peep[1], np.float64))
    np.testing.assert_allclose(carry.c, f, rtol=1e-6)


@cell_cases()
@pytest.mark.parametrize("batch_shape", [*BATCH_SHAPES, 3], ids=str)
@pytest.mark.parametrize("dtype", [None, jnp.bfloat16], ids=["default", "bf16"])
def test_initial_carry_zeros(name, make, kind, opts, batch_shape, dtype):
    cell = make(jnp.float32)
    carry = (
        cell.initial_carry(batch_shape) if dtype is None else cell.initial_carry(batch_shape, dtype)
    )
    bs = (batch_shape,) if isinstance(batch_shape, int) else batch_shape
    want_dtype = jnp.float32 if dtype is None else dtype
    if kind == "lstm":
        assert isinstance(carry, jr.LSTMCarry)
        h_size = P if opts.get("proj") else H
        shapes = {"h": (*bs, h_size), "c": (*bs, H)}
        leaves = {"h": carry.h, "c": carry.c}
    else:
        size = OUT if kind == "jordan" else H
        shapes = {"carry": (*bs, size)}
        leaves = {"carry": carry}
    for key, leaf in leaves.items():
        assert leaf.shape == shapes[key], f"{key}: {leaf.shape} != {shapes[key]}"
        assert leaf.dtype == want_dtype
        assert not np.any(np.asarray(leaf, np.float32))


def test_initial_carry_float64():
    with jax.enable_x64(True):
        carry = jr.lstm(IN, H, param_dtype=jnp.float64).initial_carry((2,), jnp.float64)
        assert carry.h.dtype == jnp.float64 and carry.c.dtype == jnp.float64


# --------------------------------------------------------------------------------------------
# Derivatives against finite differences, and transformations.


@cell_cases()
def test_check_grads_second_order_float64(name, make, kind, opts):
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, (3,), jnp.float64, seed=11)
        check_grads(cell.apply, (params, carry, x), order=2, modes=["fwd", "rev"])


@cell_cases()
def test_vmap_matches_broadcasting_and_loop(name, make, kind, opts):
    """vmap over the batch equals broadcasting and a loop; vmap over params, an ensemble."""
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, (3,), jnp.float64)
        stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)

        @jax.jit
        def both_vmaps(params, stacked, carry, x):
            over_batch = jax.vmap(cell.apply, in_axes=(None, 0, 0))(params, carry, x)
            over_params = jax.vmap(cell.apply, in_axes=(0, None, None))(stacked, carry, x)
            return over_batch, over_params

        vmapped, ens = both_vmaps(params, stacked, carry, x)
        batched = cell.apply(params, carry, x)
        assert_trees_close(vmapped, batched, 1e-13, 1e-13)
        for b in range(3):
            one = cell.apply(params, jax.tree.map(lambda a, b=b: a[b], carry), x[b])
            assert_trees_close(one, jax.tree.map(lambda a, b=b: a[b], batched), 1e-13, 1e-13)
        # The vmap over parameters (an ensemble of two cells): member 1 has doubled params.
        doubled = jax.tree.map(lambda a: 2 * a, params)
        want = cell.apply(doubled, carry, x)
        assert_trees_close(jax.tree.map(lambda a: a[1], ens), want, 1e-13, 1e-13)


@cell_cases()
def test_jit_of_apply_grad_vjp_and_jvp_matches_eager(name, make, kind, opts):
    """One jitted function returns apply, grad, a vjp and a jvp; each equals its eager self."""
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, (3,), jnp.float64)
        primals = (params, carry, x)
        tangents = to_jax(random_like(primals, 21), jnp.float64)
        cotangent = to_jax(random_like(jax.eval_shape(cell.apply, *primals), 22), jnp.float64)

        def scalar(params, carry, x):  # <cotangent, apply(...)>, whose gradient is the vjp
            return tree_dot(cotangent, cell.apply(params, carry, x))

        def everything(primals, tangents):
            out, vjp_fn = jax.vjp(cell.apply, *primals)
            return (
                out,
                jax.grad(scalar, argnums=(0, 1, 2))(*primals),
                vjp_fn(cotangent),
                jax.jvp(cell.apply, primals, tangents)[1],
            )

        got = jax.jit(everything)(primals, tangents)
        want = everything(primals, tangents)
        assert_trees_close(got, want, rtol=1e-12, atol=1e-12)
        assert_trees_close(want[1], want[2], rtol=1e-12, atol=1e-12)  # grad == vjp
        # The gradient has the structure of the inputs and reaches every parameter.
        param_grads = want[1][0]
        assert jax.tree.structure(param_grads) == jax.tree.structure(params)
        for field in params._fields:
            if getattr(params, field) is not None:
                grad = np.asarray(getattr(param_grads, field))
                assert np.any(grad != 0), f"no gradient for {field}"


def tree_dot(a, b):
    """Sum over leaves of the elementwise products of two trees of the same structure."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return sum(jnp.vdot(p, q) for p, q in pairs)


@cell_cases()
def test_jvp_consistent_with_vjp(name, make, kind, opts):
    """<v, J t> from jvp equals <J^T v, t> from vjp, and jvp's primal output is apply's."""
    with jax.enable_x64(True):
        cell, params, carry, x = make_inputs(make, (3,), jnp.float64, seed=5)
        primals = (params, carry, x)
        tangents = to_jax(random_like(primals, 21), jnp.float64)
        out, jt = jax.jvp(cell.apply, primals, tangents)
        assert_trees_close(out, cell.apply(*primals), rtol=1e-12, atol=1e-12)
        v = to_jax(random_like(out, 22), jnp.float64)
        _, vjp_fn = jax.vjp(cell.apply, *primals)
        jtv = vjp_fn(v)
        np.testing.assert_allclose(tree_dot(v, jt), tree_dot(jtv, tangents), rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Argument validation.

BAD_SIZES = [0, -1, 2.0, True, None, "4"]


@pytest.mark.parametrize("bad", BAD_SIZES, ids=repr)
@pytest.mark.parametrize(
    "factory",
    [
        lambda i, h: jr.simple_rnn(i, h),
        lambda i, h: jr.gru(i, h),
        lambda i, h: jr.lstm(i, h),
        lambda i, h: jr.jordan_rnn(i, h, OUT),
    ],
    ids=["simple_rnn", "gru", "lstm", "jordan_rnn"],
)
def test_factories_reject_bad_sizes(factory, bad):
    with pytest.raises(ValueError, match="hidden_size"):
        factory(IN, bad)
    with pytest.raises(ValueError, match="input_size"):
        factory(bad, H)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_lstm_rejects_bad_proj_size_and_jordan_bad_output_size(bad):
    with pytest.raises(ValueError, match="proj_size"):
        jr.lstm(IN, H, proj_size=bad)
    with pytest.raises(ValueError, match="output_size"):
        jr.jordan_rnn(IN, H, bad)


@cell_cases()
def test_apply_rejects_wrong_feature_size(name, make, kind, opts):
    cell, params, carry, _ = make_inputs(make, (2,), jnp.float32)
    with pytest.raises(ValueError, match="feature size"):
        cell.apply(params, carry, jnp.ones((2, IN + 1)))
    with pytest.raises(ValueError, match="feature size"):
        cell.apply(params, carry, jnp.float32(1.0))
