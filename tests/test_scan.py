"""Tests of :func:`jaxrnn.scan` against a plain Python loop of ``cell.apply``.

The reference, :func:`loop_scan`, is the documented meaning of ``scan`` written the slow way:
each sequence of the batch is run on its own, over its first ``length`` steps only (last to
first when reversed), starting from its own slice of the initial carry; outputs at the padded
steps are zeros and the returned carry is the one after the last valid step. It never calls
``scan``, ``lax.scan``, ``project`` or ``step``.

Compilation dominates the runtime of these tests, so every jitted function is built once per
cell (module-level caches) and reused for several inputs, and the slow options (``unroll=3``,
extra batch shapes) run on a few representative cells rather than on all of them.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn as jr

# Input, hidden, Jordan output and LSTM projection sizes; time steps.
I, H, O, P, T = 3, 4, 2, 2, 5  # noqa: E741
# The library cells' tests run the hoisted path (input projection before the loop) explicitly:
# on the CPU jr.scan's default is the per-step form, which the "-nohoist" cells (built from
# ``apply`` alone) exercise against the same references.
scan = functools.partial(jr.scan, hoist=True)

TOL = dict(rtol=2e-5, atol=2e-5)  # float32, batched/hoisted vs per-sequence rounding

FACTORIES = {
    "simple_rnn": lambda: jr.simple_rnn(I, H),
    "gru": lambda: jr.gru(I, H),
    "gru-reset_after": lambda: jr.gru(I, H, reset_after=True),
    "lstm": lambda: jr.lstm(I, H),
    "lstm-peephole": lambda: jr.lstm(I, H, peephole=True),
    "lstm-coupled": lambda: jr.lstm(I, H, coupled=True),
    "lstm-proj": lambda: jr.lstm(I, H, proj_size=P),
    "jordan_rnn": lambda: jr.jordan_rnn(I, H, O),
}


def custom_cell() -> jr.Cell:
    """A cell built from ``init``/``apply``/``initial_carry`` only (no ``project``/``step``).

    Dict params and a two-leaf carry of different ranks: a state ``(*batch, H)`` and a step
    counter ``(*batch,)`` that scales the output, so skipped steps are visible in ``y``.
    """

    def init(key):
        k_w, k_u = jax.random.split(key)
        return {
            "w": 0.5 * jax.random.normal(k_w, (I, H)),
            "u": 0.5 * jax.random.normal(k_u, (H, H)),
            "decay": jnp.float32(0.8),
        }

    def apply(params, carry, x):
        h, count = carry
        h = params["decay"] * jnp.tanh(h @ params["u"]) + x @ params["w"]
        count = count + 1.0
        return (h, count), h * count[..., None]

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return (jnp.zeros((*batch_shape, H), dtype), jnp.zeros(tuple(batch_shape), dtype))

    return jr.Cell(init, apply, initial_carry, output_size=H)


def without_hoisting(cell: jr.Cell) -> jr.Cell:
    """The same cell built from ``apply`` alone, so ``scan`` cannot hoist the projection."""
    return jr.Cell(cell.init, cell.apply, cell.initial_carry, cell.input_size, cell.output_size)


CELLS = {name: make() for name, make in FACTORIES.items()}
CELLS["custom"] = custom_cell()
CELLS.update({f"{name}-nohoist": without_hoisting(CELLS[name]) for name in FACTORIES})
LIBRARY_CELLS = list(FACTORIES)


def shapes_of(fn, *args):
    """Shapes/dtypes of ``fn(*args)`` without running it (no compilation)."""
    return jax.eval_shape(fn, *args)


@functools.cache
def params_of(name: str):
    """Random normal parameters of the cell's layout (non-zero biases too), fixed per cell.

    ``cell.init`` is tested in test_cells.py; drawing from its shapes here avoids compiling the
    orthogonal initialisers for every cell.
    """
    base = name.removesuffix("-nohoist")
    rng = np.random.default_rng(sorted(CELLS).index(base))
    shapes = shapes_of(CELLS[base].init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


def random_xs(rng, batch_shape, num_steps=T):
    return rng.standard_normal((*batch_shape, num_steps, I)).astype(np.float32)


def random_carry(rng, cell, batch_shape):
    shapes = shapes_of(lambda: cell.initial_carry(batch_shape))
    return jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def mixed_lengths(rng, batch_shape, num_steps=T):
    """Random lengths in ``[0, T]``; with two or more sequences, both 0 and T occur."""
    lengths = np.asarray(rng.integers(0, num_steps + 1, size=batch_shape), np.int32)
    if lengths.size >= 2:
        flat = lengths.reshape(-1)
        flat[0], flat[-1] = 0, num_steps
    return lengths


def loop_scan(cell, params, xs, carry=None, lengths=None, reverse=False):
    """Reference ``(carry, ys)``: ``cell.apply`` stepped over each sequence of batch-major xs."""
    xs = jnp.asarray(xs)
    *batch_shape, num_steps, _ = xs.shape
    batch_shape = tuple(batch_shape)
    if carry is None:
        carry = cell.initial_carry(batch_shape, xs.dtype)
    zero_y = jnp.zeros((cell.output_size,), xs.dtype)
    carries, outputs = [], []
    for idx in np.ndindex(*batch_shape):
        length = num_steps if lengths is None else int(np.asarray(lengths)[idx])
        c = jax.tree.map(lambda leaf, idx=idx: leaf[idx], carry)
        ys = [zero_y] * num_steps
        steps = range(length)
        for t in reversed(steps) if reverse else steps:
            c, ys[t] = cell.apply(params, c, xs[(*idx, t)])
        carries.append(c)
        outputs.append(jnp.stack(ys) if num_steps else jnp.zeros((0, cell.output_size)))

    def stack(*leaves):
        return jnp.stack(leaves).reshape(batch_shape + jnp.shape(leaves[0]))

    return jax.tree.map(stack, *carries), stack(*outputs)


def weighted_sum(carry, ys, w_carry, w_ys):
    """A scalar that depends on every output and every carry leaf with distinct weights."""
    total = jnp.sum(ys * w_ys)
    for leaf, w in zip(jax.tree.leaves(carry), jax.tree.leaves(w_carry), strict=True):
        total = total + jnp.sum(leaf * w)
    return total


# --------------------------------------------------------------------------------------------
# Values against the loop.


@functools.cache
def variants_fn(name, remat=False):
    """One jitted function running the main variants of ``scan`` (lengths are traced)."""
    cell = CELLS[name]
    run_scan = functools.partial(scan, cell, remat=remat)

    def run(params, xs, carry, lengths):
        return {
            "plain": run_scan(params, xs),
            "reverse+carry": run_scan(params, xs, carry, reverse=True),
            "lengths+carry": run_scan(params, xs, carry, lengths=lengths),
            "reverse+lengths": run_scan(params, xs, lengths=lengths, reverse=True),
        }

    return jax.jit(run)


SCAN_CASES = [(name, (2, 3)) for name in [*LIBRARY_CELLS, "custom"]] + [
    (name, batch_shape) for name in ("simple_rnn", "lstm-proj") for batch_shape in [(), (3,)]
]


def check_variants_match_loop(name, batch_shape, num_steps=T, remat=False):
    rng = np.random.default_rng(1)
    cell, params = CELLS[name], params_of(name)
    xs, carry = random_xs(rng, batch_shape, num_steps), random_carry(rng, cell, batch_shape)
    if batch_shape == ():
        draws = [np.int32(0), np.int32(num_steps // 2), np.int32(num_steps)]
    else:
        draws = [mixed_lengths(rng, batch_shape, num_steps) for _ in range(2)]
    unmasked = {
        "plain": loop_scan(cell, params, xs),
        "reverse+carry": loop_scan(cell, params, xs, carry, reverse=True),
    }
    for lengths in draws:
        got = variants_fn(name, remat)(params, xs, carry, lengths)
        expected = {
            **unmasked,
            "lengths+carry": loop_scan(cell, params, xs, carry, lengths),
            "reverse+lengths": loop_scan(cell, params, xs, None, lengths, reverse=True),
        }
        assert got["plain"][1].shape == (*batch_shape, num_steps, cell.output_size)
        assert_trees_close(got, expected, **TOL)


@pytest.mark.parametrize(("name", "batch_shape"), SCAN_CASES, ids=str)
def test_scan_matches_loop(name, batch_shape):
    """Forward/reverse, with/without lengths, given/default carry, any batch rank."""
    check_variants_match_loop(name, batch_shape)


# Every pair of values of any two of these options occurs in some row (the all-default row is
# covered by test_scan_matches_loop). Each row runs with lengths and a given carry.
# The remat="sqrt" rows run at SQRT_T steps, so that they cross segment boundaries.
OPTION_ROWS = [
    dict(time_major=False, unroll=3, remat=True, reverse=True),
    dict(time_major=True, unroll=1, remat=True, reverse=False),
    dict(time_major=True, unroll=3, remat=False, reverse=True),
    dict(time_major=True, unroll=1, remat=False, reverse=False),
    dict(time_major=False, unroll=3, remat="sqrt", reverse=False),
    dict(time_major=True, unroll=1, remat="sqrt", reverse=True),
]
# remat="sqrt" at T = 11: two segments of ceil(sqrt(11)) = 4 steps, then a remainder of 3.
SQRT_T = 11


@functools.cache
def options_fn(name, time_major, unroll, remat, reverse):
    cell = CELLS[name]
    opts = dict(time_major=time_major, unroll=unroll, remat=remat, reverse=reverse)
    return jax.jit(lambda p, xs, c, lengths: scan(cell, p, xs, c, lengths=lengths, **opts))


@pytest.mark.parametrize(
    "row", OPTION_ROWS, ids=lambda r: "-".join(f"{k}={v}" for k, v in r.items())
)
@pytest.mark.parametrize("name", ["simple_rnn", "lstm-proj"])
def test_scan_options_match_loop(name, row):
    rng = np.random.default_rng(2)
    cell, params, batch_shape = CELLS[name], params_of(name), (2, 3)
    num_steps = SQRT_T if row["remat"] == "sqrt" else T
    xs, carry = random_xs(rng, batch_shape, num_steps), random_carry(rng, cell, batch_shape)
    lengths = mixed_lengths(rng, batch_shape, num_steps)
    expected = loop_scan(cell, params, xs, carry, lengths, reverse=row["reverse"])
    if row["time_major"]:
        xs = np.moveaxis(xs, -2, 0)
        expected = (expected[0], jnp.moveaxis(expected[1], -2, 0))
    got = options_fn(name, **row)(params, xs, carry, lengths)
    assert_trees_close(got, expected, **TOL)


@pytest.mark.parametrize("name", LIBRARY_CELLS)
def test_hoisted_and_unhoisted_agree(name):
    """``project`` + ``step`` hoisted out of the loop == ``apply`` inside it."""
    rng = np.random.default_rng(3)
    batch_shape = (2, 3)
    xs, carry = random_xs(rng, batch_shape), random_carry(rng, CELLS[name], batch_shape)
    lengths = mixed_lengths(rng, batch_shape)
    hoisted = options_fn(name, False, 1, False, True)(params_of(name), xs, carry, lengths)
    plain = options_fn(f"{name}-nohoist", False, 1, False, True)(
        params_of(name), xs, carry, lengths
    )
    assert_trees_close(hoisted, plain, **TOL)


def test_custom_cell_with_its_own_init():
    """The custom cell end to end: its own ``init``, then ``scan`` == the loop."""
    cell = CELLS["custom"]
    params = cell.init(jax.random.key(0))
    rng = np.random.default_rng(11)
    xs, carry = random_xs(rng, (2, 3)), random_carry(rng, cell, (2, 3))
    lengths = mixed_lengths(rng, (2, 3))
    got = variants_fn("custom")(params, xs, carry, lengths)["lengths+carry"]
    assert_trees_close(got, loop_scan(cell, params, xs, carry, lengths), **TOL)
    # The step counter in the carry counts exactly the valid steps.
    np.testing.assert_allclose(got[0][1], carry[1] + lengths, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Edge cases of the time axis and of lengths.


@functools.cache
def empty_fn(name):
    cell = CELLS[name]

    def run(params, xs, carry, lengths):
        xs_tm = jnp.moveaxis(xs, -2, 0)
        return {
            "default carry": scan(cell, params, xs),
            "given carry": scan(cell, params, xs, carry, reverse=True),
            "lengths": scan(cell, params, xs, carry, lengths=lengths),
            "time major": scan(cell, params, xs_tm, carry, time_major=True),
            "sqrt": scan(cell, params, xs, carry, lengths=lengths, remat="sqrt"),
            "sqrt reverse": scan(cell, params, xs_tm, time_major=True, reverse=True, remat="sqrt"),
        }

    return jax.jit(run)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=str)
@pytest.mark.parametrize("name", ["simple_rnn", "lstm-proj", "custom"])
def test_empty_sequence_returns_initial_carry(name, batch_shape):
    rng = np.random.default_rng(4)
    cell, params = CELLS[name], params_of(name)
    xs = np.zeros((*batch_shape, 0, I), np.float32)
    carry = random_carry(rng, cell, batch_shape)
    lengths = np.zeros(batch_shape, np.int32)
    got = empty_fn(name)(params, xs, carry, lengths)
    empty = np.zeros((*batch_shape, 0, cell.output_size), np.float32)
    assert_trees_close(got["default carry"], (cell.initial_carry(batch_shape), empty))
    assert_trees_close(got["given carry"], (carry, empty))
    assert_trees_close(got["lengths"], (carry, empty))
    assert_trees_close(got["time major"], (carry, np.moveaxis(empty, -2, 0)))
    assert_trees_close(got["sqrt"], (carry, empty))
    empty_tm = np.moveaxis(empty, -2, 0)
    assert_trees_close(got["sqrt reverse"], (cell.initial_carry(batch_shape), empty_tm))


@pytest.mark.parametrize("name", ["gru", "lstm-peephole"])
def test_concrete_and_traced_lengths_agree(name):
    """Eager ``scan`` (concrete lengths, range-checked) == jitted ``scan`` (traced lengths)."""
    rng = np.random.default_rng(5)
    cell, params, batch_shape = CELLS[name], params_of(name), (2, 3)
    xs, carry = random_xs(rng, batch_shape), random_carry(rng, cell, batch_shape)
    lengths = mixed_lengths(rng, batch_shape)
    eager = scan(cell, params, xs, carry, lengths=lengths)
    traced = variants_fn(name)(params, xs, carry, lengths)["lengths+carry"]
    assert_trees_close(eager, traced, **TOL)
    assert_trees_close(eager, loop_scan(cell, params, xs, carry, lengths), **TOL)


@pytest.mark.parametrize("name", ["simple_rnn", "lstm-proj"])
def test_vmap_equals_batched_call(name):
    """vmap over a batch axis (leading or not) of unbatched calls == one batched call."""
    rng = np.random.default_rng(6)
    cell, params, batch_shape = CELLS[name], params_of(name), (2, 3)
    xs, carry = random_xs(rng, batch_shape), random_carry(rng, cell, batch_shape)
    lengths = mixed_lengths(rng, batch_shape)

    def single(xs, carry, lengths):
        return scan(cell, params, xs, carry, lengths=lengths, reverse=True)

    @jax.jit
    def run(xs, carry, lengths):
        over_both = jax.vmap(jax.vmap(single))(xs, carry, lengths)
        # Map over the second batch axis only; the inner call sees a (2,) batch.
        over_second = jax.vmap(single, in_axes=1, out_axes=1)(xs, carry, lengths)
        return over_both, over_second, single(xs, carry, lengths)

    over_both, over_second, batched = run(xs, carry, lengths)
    assert_trees_close(over_both, batched, **TOL)
    assert_trees_close(over_second, batched, **TOL)
    assert_trees_close(batched, loop_scan(cell, params, xs, carry, lengths, reverse=True), **TOL)


# --------------------------------------------------------------------------------------------
# Derivatives.


REMAT_FORMS = {
    "no remat": False,
    "remat": True,
    "save all": jax.checkpoint_policies.everything_saveable,
    "sqrt": "sqrt",
}


@functools.cache
def grad_fn(name, reverse=True, forms=tuple(REMAT_FORMS)):
    """Jitted value and gradients (params, xs, carry) of a weighted sum under remat ``forms``."""
    cell = CELLS[name]

    def loss(params, xs, carry, lengths, w_carry, w_ys, remat):
        c, ys = scan(cell, params, xs, carry, lengths=lengths, reverse=reverse, remat=remat)
        return weighted_sum(c, ys, w_carry, w_ys)

    value_and_grad = jax.value_and_grad(loss, argnums=(0, 1, 2))

    def run(*args):
        return {form: value_and_grad(*args, REMAT_FORMS[form]) for form in forms}

    return jax.jit(run)


def grad_inputs(name, seed=7, num_steps=T):
    rng = np.random.default_rng(seed)
    cell, batch_shape = CELLS[name], (3,)
    xs, carry = random_xs(rng, batch_shape, num_steps), random_carry(rng, cell, batch_shape)
    lengths = mixed_lengths(rng, batch_shape, num_steps)
    w_carry = random_carry(rng, cell, batch_shape)
    w_ys = rng.standard_normal((*batch_shape, num_steps, cell.output_size)).astype(np.float32)
    return xs, carry, lengths, w_carry, w_ys


def loop_value_and_grad(name, xs, carry, lengths, w_carry, w_ys, reverse=True):
    cell = CELLS[name]

    def loss(params, xs, carry):
        c, ys = loop_scan(cell, params, xs, carry, lengths, reverse=reverse)
        return weighted_sum(c, ys, w_carry, w_ys)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(params_of(name), jnp.asarray(xs), carry)


# Gradient cells: an array carry, the GRU's two-sided reset, a tuple carry of two sizes, and
# the custom cell (no hoisting, carry leaves of different ranks). The other cells share every
# line of scan's masking and hoisting code with these; their single-step gradients are in
# test_cells.py and their scanned values above.
GRAD_CELLS = ["simple_rnn", "gru-reset_after", "lstm-proj", "custom"]


@pytest.mark.parametrize("name", GRAD_CELLS)
def test_grad_matches_loop_under_every_remat(name):
    xs, carry, lengths, w_carry, w_ys = grad_inputs(name)
    got = grad_fn(name)(params_of(name), xs, carry, lengths, w_carry, w_ys)
    expected = loop_value_and_grad(name, xs, carry, lengths, w_carry, w_ys)
    assert_trees_close(got["no remat"], expected, rtol=1e-4, atol=1e-5)
    assert_trees_close(got["remat"], got["no remat"], **TOL)
    assert_trees_close(got["save all"], got["no remat"], **TOL)
    assert_trees_close(got["sqrt"], got["no remat"], **TOL)
    # Sanity: gradients reach the parameters, and the padded inputs get exactly zero.
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(got["no remat"][1][0]))
    d_xs = np.asarray(got["no remat"][1][1])
    padded = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(d_xs[padded] == 0)


@pytest.mark.parametrize("name", ["lstm-proj-nohoist"])
def test_unhoisted_grad_matches_hoisted(name):
    xs, carry, lengths, w_carry, w_ys = grad_inputs(name)
    base = name.removesuffix("-nohoist")
    args = (params_of(name), xs, carry, lengths, w_carry, w_ys)
    assert_trees_close(grad_fn(name)(*args), grad_fn(base)(*args), **TOL)


@pytest.mark.parametrize("name", [*GRAD_CELLS, "lstm-proj-nohoist"])
def test_nan_padding_does_not_leak(name):
    """NaN beyond lengths: finite values equal to zero padding, finite gradients (every remat)."""
    xs, carry, lengths, w_carry, w_ys = grad_inputs(name, seed=8)
    padded = np.arange(T)[None, :] >= lengths[:, None]  # (batch, T)
    xs_nan = np.where(padded[..., None], np.float32(np.nan), xs)
    xs_zero = np.where(padded[..., None], np.float32(0.0), xs)
    fn = grad_fn(name)
    got = fn(params_of(name), xs_nan, carry, lengths, w_carry, w_ys)
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(leaf))
    # The loss weighs every output and carry element by a non-zero weight, so a finite loss
    # equal to the zero-padded one means finite outputs and carry.
    assert_trees_close(got, fn(params_of(name), xs_zero, carry, lengths, w_carry, w_ys))


@pytest.mark.parametrize("name", ["lstm-peephole", "custom"])
def test_jvp_matches_loop(name):
    rng = np.random.default_rng(9)
    cell, params, batch_shape = CELLS[name], params_of(name), (3,)
    xs, carry = random_xs(rng, batch_shape), random_carry(rng, cell, batch_shape)
    lengths = mixed_lengths(rng, batch_shape)
    primals = (params, jnp.asarray(xs), carry)
    tangents = (
        jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(np.shape(p)), p.dtype), params),
        jnp.asarray(random_xs(rng, batch_shape)),
        random_carry(rng, cell, batch_shape),
    )

    def scan_fn(p, x, c):
        return scan(cell, p, x, c, lengths=lengths, reverse=True)

    def loop_fn(p, x, c):
        return loop_scan(cell, p, x, c, lengths, reverse=True)

    got = jax.jit(lambda prim, tan: jax.jvp(scan_fn, prim, tan))(primals, tangents)
    expected = jax.jvp(loop_fn, primals, tangents)
    assert_trees_close(got, expected, rtol=1e-4, atol=1e-5)


def test_grad_matches_finite_differences_float64():
    """Gradients through a reversed, length-masked scan vs central differences (float64).

    One jitted ``value_and_grad``: its gradient gives the directional derivatives, its value at
    ``args ± eps * v`` the central differences, for a few random directions ``v`` of all inputs
    (params, xs, carry) at once.
    """
    with jax.enable_x64(True):
        cell = jr.lstm(I, H, peephole=True, proj_size=P, param_dtype=jnp.float64)
        rng = np.random.default_rng(10)

        def normal_like(tree):  # NumPy float64 leaves
            return jax.tree.map(lambda s: rng.standard_normal(s.shape), tree)

        args = (
            normal_like(shapes_of(cell.init, jax.random.key(0))),
            rng.standard_normal((3, T, I)),
            normal_like(shapes_of(lambda: cell.initial_carry((3,), jnp.float64))),
        )
        lengths = np.array([T, 0, 3])
        w_ys = rng.standard_normal((3, T, P))

        @jax.jit
        @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
        def loss(params, xs, carry):
            c, ys = scan(cell, params, xs, carry, lengths=lengths, reverse=True)
            return jnp.sum(ys * w_ys) + jnp.sum(c.h) - jnp.sum(c.c**2)

        grads = jax.tree.leaves(loss(*args)[1])
        eps = 1e-5
        for _ in range(3):
            v = normal_like(args)
            plus = loss(*jax.tree.map(lambda a, d: a + eps * d, args, v))[0]
            minus = loss(*jax.tree.map(lambda a, d: a - eps * d, args, v))[0]
            directional = sum(np.vdot(g, d) for g, d in zip(grads, jax.tree.leaves(v), strict=True))
            np.testing.assert_allclose(directional, (plus - minus) / (2 * eps), rtol=1e-6)


@pytest.mark.parametrize("remat", [False, "sqrt"])
@pytest.mark.parametrize("name", LIBRARY_CELLS)
def test_hoist_default_and_both_settings_agree(name, remat):
    """``hoist=None`` (per backend), ``True`` and ``False`` compute the same function."""
    rng = np.random.default_rng(4)
    cell, params, batch_shape = CELLS[name], params_of(name), (2, 3)
    num_steps = SQRT_T if remat == "sqrt" else T
    xs = random_xs(rng, batch_shape, num_steps)
    lengths = mixed_lengths(rng, batch_shape, num_steps)
    run = jax.jit(
        lambda p, xs, lengths, hoist: jr.scan(
            cell, p, xs, lengths=lengths, hoist=hoist, remat=remat
        ),
        static_argnums=3,
    )
    default = run(params, xs, lengths, None)
    assert_trees_close(run(params, xs, lengths, True), default, **TOL)
    assert_trees_close(run(params, xs, lengths, False), default, **TOL)


# --------------------------------------------------------------------------------------------
# remat="sqrt": segments of ceil(sqrt(T)) steps, of which only the boundary carries are kept.
# Values and gradients of remat="sqrt" are also checked above: in the option rows, the empty
# sequence, hoisting, and every remat form of the gradient and NaN-padding tests (T = 5: one
# segment of 3 steps and a remainder of 2).

# (cell, batch shape, T): every cell at SQRT_T (whole segments and a remainder); T = 9 (three
# whole segments) and T = 1 (one segment of one step) on a few cells and batch ranks.
SQRT_CASES = [
    *[(name, (3,), SQRT_T) for name in LIBRARY_CELLS if name != "lstm-proj"],
    *[(name, (2, 3), SQRT_T) for name in ("lstm-proj", "custom", "lstm-proj-nohoist")],
    ("simple_rnn", (), 9),
    ("lstm-proj", (3,), 9),
    ("custom", (2, 3), 9),
    ("gru-reset_after", (), 1),
    ("lstm-peephole", (3,), 1),
]


@pytest.mark.parametrize(("name", "batch_shape", "num_steps"), SQRT_CASES, ids=str)
def test_sqrt_matches_loop(name, batch_shape, num_steps):
    """Forward/reverse, with/without lengths, given/default carry, any batch rank."""
    check_variants_match_loop(name, batch_shape, num_steps, remat="sqrt")


SQRT_GRAD_CELLS = [*GRAD_CELLS, "lstm-proj-nohoist"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("name", "num_steps"),
    [("simple_rnn", 1), ("simple_rnn", 9), *[(name, SQRT_T) for name in SQRT_GRAD_CELLS]],
    ids=str,
)
def test_sqrt_grad_matches_no_remat_and_loop(name, num_steps, reverse):
    """Value and gradients (params, xs, carry) == ``remat=False`` (== the loop with lengths).

    With and without lengths; NaN in the padding beyond lengths changes nothing.
    """
    xs, carry, lengths, w_carry, w_ys = grad_inputs(name, seed=12, num_steps=num_steps)
    fn = grad_fn(name, reverse, ("no remat", "sqrt"))
    params = params_of(name)
    got = fn(params, xs, carry, lengths, w_carry, w_ys)
    expected = loop_value_and_grad(name, xs, carry, lengths, w_carry, w_ys, reverse)
    assert_trees_close(got["sqrt"], got["no remat"], **TOL)
    assert_trees_close(got["sqrt"], expected, rtol=1e-4, atol=1e-5)
    unmasked = fn(params, xs, carry, None, w_carry, w_ys)
    assert_trees_close(unmasked["sqrt"], unmasked["no remat"], **TOL)
    # Inputs beyond lengths are never read, in any segment.
    padded = np.arange(num_steps)[None, :] >= lengths[:, None]
    xs_nan = np.where(padded[..., None], np.float32(np.nan), xs)
    assert_trees_close(fn(params, xs_nan, carry, lengths, w_carry, w_ys)["sqrt"], got["sqrt"])


def scan_lengths(jaxpr) -> list[int]:
    """The ``length`` of every ``scan`` in a jaxpr, nested ones included, sorted."""
    return sorted(int(n) for n in re.findall(r"\blength=(\d+)", str(jaxpr)))


@pytest.mark.parametrize(
    ("num_steps", "expected"),
    [
        (16384, [128, 128]),  # 128 segments of 128 steps
        (SQRT_T, [2, 3, 4]),  # 2 segments of 4 steps, a remainder of 3
        (2, [1, 2]),  # 1 segment of 2 steps
    ],
)
def test_sqrt_segments(num_steps, expected):
    """``T // S`` segments of ``S = ceil(sqrt(T))`` steps, then one scan of the rest.

    The outer scan's body keeps nothing (``policy=None``), the steps keep what ``remat=False``
    keeps (:func:`jaxrnn.save_nonlinear`).
    """
    cell = CELLS["lstm"]
    xs = jax.ShapeDtypeStruct((2, num_steps, I), jnp.float32)
    for reverse in (False, True):
        jaxpr = jax.make_jaxpr(
            lambda p, x, reverse=reverse: scan(cell, p, x, remat="sqrt", reverse=reverse)
        )(params_of("lstm"), xs)
        assert scan_lengths(jaxpr) == expected
        assert str(jaxpr).count("policy=None") == 1
        assert "save_nonlinear" in str(jaxpr)


def test_sqrt_memory_is_least_at_long_sequences():
    """XLA temp memory of an LSTM's gradient at T = 4096: ``"sqrt"`` < ``True`` < ``False``.

    Many-to-one (the loss reads the final ``h`` only), gradient w.r.t. the params, small
    sizes so that compiling is quick; only compiled, never run. ``False`` keeps several
    vectors per step, ``True`` one carry per step, ``"sqrt"`` 64 carries and one segment's
    64 steps: an order of magnitude less than ``True``.
    """
    cell = jr.lstm(I, H)
    params = shapes_of(cell.init, jax.random.key(0))
    xs = jax.ShapeDtypeStruct((2, 4096, I), jnp.float32)

    def temp_bytes(remat):
        def loss(params, xs):
            return jnp.sum(jr.scan(cell, params, xs, remat=remat)[0].h)

        memory = jax.jit(jax.grad(loss)).lower(params, xs).compile().memory_analysis()
        if memory is None:
            pytest.skip(f"no memory analysis on {jax.default_backend()}")
        return memory.temp_size_in_bytes

    sqrt, whole_step, default = temp_bytes("sqrt"), temp_bytes(True), temp_bytes(False)
    assert sqrt < whole_step < default
    assert 4 * sqrt < whole_step
