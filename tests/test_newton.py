"""Newton (DEER) evaluation of a scan (jaxrnn.newton, jr.scan(method="newton")).

References: ``jax.lax.scan`` and ``jr.scan(method="sequential")`` on the same inputs (values,
gradients with respect to params, inputs and the initial carry, forward-mode derivatives), and
finite differences in float64. Each case compiles one function that returns both values and
gradients, to keep the file fast.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.newton import Newton, NewtonConvergenceError, newton_scan

IN, H, T = 3, 4, 7


def _tree_close(got, want, rtol, atol):
    got_leaves, got_tree = jax.tree.flatten(got)
    want_leaves, want_tree = jax.tree.flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def _value_and_grads(run):
    """``run(params, xs, carry) -> (carry, ys, *extra)``: its outputs and the gradients of a
    loss that reads every output, with respect to all three arguments, in one compiled
    function."""

    def loss(params, xs, carry):
        carry, ys, *_ = run(params, xs, carry)
        leaves = jax.tree.leaves(carry)
        outputs = sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(ys))
        return outputs + sum(jnp.sum(jnp.cos(leaf) * leaf) for leaf in leaves)

    def both(params, xs, carry):
        return run(params, xs, carry), jax.grad(loss, (0, 1, 2))(params, xs, carry)

    return jax.jit(both)


def _random_carry(cell, batch_shape, key):
    carry = cell.initial_carry(batch_shape)
    keys = iter(jax.random.split(key, len(jax.tree.leaves(carry))))
    return jax.tree.map(lambda a: 0.5 * jax.random.normal(next(keys), a.shape, a.dtype), carry)


# --- a generic pytree body, straight through newton_scan -----------------------------------


def _body(params, carry, x):
    """A step with a dict carry of two shapes, a tuple of inputs and a tuple of outputs."""
    w, u = params
    a, b = carry["a"], carry["b"]
    x1, x2 = x
    a_new = jnp.tanh(a @ w + x1 + 0.3 * jnp.sum(b, -1))
    b_new = 0.8 * jax.nn.sigmoid(b * u + x2[..., None]) * b + 0.1 * a_new[..., :1, None]
    return {"a": a_new, "b": b_new}, (a_new * 2, jnp.sum(b_new, -1))


@pytest.mark.parametrize(
    ("jacobian", "reverse", "batch_ndim"), [("full", False, 1), ("diagonal", True, 0)]
)
def test_pytree_body_matches_lax_scan(jacobian, reverse, batch_ndim):
    k = jax.random.split(jax.random.key(0), 6)
    params = (0.5 * jax.random.normal(k[0], (2, 2)), jax.random.normal(k[1], (2, 3)))
    carry = {"a": jax.random.normal(k[2], (2, 2)), "b": jax.random.normal(k[3], (2, 2, 3))}
    xs = (jax.random.normal(k[4], (T, 2, 2)), jax.random.normal(k[5], (T, 2, 2)))
    # max_iters = T: the iteration is exact after T rounds, whatever the Jacobian.
    options = Newton(jacobian=jacobian, max_iters=T, on_failure="error")

    def sequential(p, xs, c):
        return jax.lax.scan(lambda c, x: _body(p, c, x), c, xs, reverse=reverse)

    def newton(p, xs, c):
        body = lambda c, x: _body(p, c, x)
        options_ = dict(reverse=reverse, options=options, batch_ndim=batch_ndim)
        return newton_scan(body, c, xs, **options_, return_info=True)

    want, want_grads = _value_and_grads(sequential)(params, xs, carry)
    (*got, info), got_grads = _value_and_grads(newton)(params, xs, carry)
    _tree_close(tuple(got), want, 1e-5, 1e-5)
    _tree_close(got_grads, want_grads, 1e-4, 1e-5)
    assert bool(info.converged) and 1 <= int(info.iterations) <= T
    assert float(info.residual) <= float(jnp.finfo(jnp.float32).eps) ** 0.75


# --- jaxrnn cells through jr.scan -----------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "method"),
    [
        (jr.gru, Newton(jacobian="diagonal")),
        # D = 2H = 8: full Jacobians; damping changes the iterations, not the result.
        (jr.lstm, Newton(damping=0.5, max_iters=4 * T)),
        (jr.lstm, Newton(jacobian="diagonal")),
    ],
    ids=["gru-diagonal", "lstm-auto-damped", "lstm-diagonal"],
)
def test_cells_match_sequential_with_lengths_and_resets(make, method):
    cell = make(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    carry = _random_carry(cell, (2,), jax.random.key(2))
    lengths = jnp.array([T, 4])
    resets = jnp.zeros((2, T), bool).at[0, 3].set(True)

    def run(method):
        def scan(params, xs, carry):
            return jr.scan(cell, params, xs, carry, lengths=lengths, resets=resets, method=method)

        return _value_and_grads(scan)(params, xs, carry)

    want, want_grads = run("sequential")
    got, got_grads = run(method)
    _tree_close(got, want, 1e-5, 2e-6)
    _tree_close(got_grads, want_grads, 1e-4, 1e-5)


@pytest.mark.parametrize("jacobian", ["full", "diagonal"])
def test_slstm_matches_sequential(jacobian):
    """sLSTM's carry (c, n, m, h) with the log-domain stabiliser m, from its own zero state
    (the normaliser's first-step rule), through Newton with lengths and resets."""
    cell = jr.slstm(IN, H, num_heads=2)  # state D = 4H = 16
    params = cell.init(jax.random.key(3))
    xs = jax.random.normal(jax.random.key(4), (2, T, IN))
    lengths = jnp.array([T, 4])
    resets = jnp.zeros((2, T), bool).at[0, 3].set(True)
    method = Newton(jacobian=jacobian, max_iters=4 * T, on_failure="error")  # no fallback

    def run(method):
        def scan(params, xs, carry):
            del carry  # the cell's own initial carry
            return jr.scan(cell, params, xs, lengths=lengths, resets=resets, method=method)

        return _value_and_grads(scan)(params, xs, None)

    (want, want_grads), (got, got_grads) = run("sequential"), run(method)
    _tree_close(got, want, 1e-5, 2e-6)
    _tree_close(got_grads[:2], want_grads[:2], 1e-4, 1e-5)


@pytest.mark.parametrize(
    ("make", "batch_shape", "reverse", "time_major"),
    [(jr.mgu, (), False, False), (jr.simple_rnn, (2, 3), True, True)],
    ids=["mgu-()", "simple_rnn-(2,3)-reverse-time_major"],
)
def test_batch_shapes_reverse_and_time_major(make, batch_shape, reverse, time_major):
    cell = make(IN, H)
    params = cell.init(jax.random.key(0))
    shape = (T, *batch_shape, IN) if time_major else (*batch_shape, T, IN)
    xs = jax.random.normal(jax.random.key(1), shape)
    carry = _random_carry(cell, batch_shape, jax.random.key(2))
    lengths = None
    if batch_shape:
        lengths = jnp.arange(np.prod(batch_shape)).reshape(batch_shape) % (T + 1)

    def run(method):
        def scan(params, xs, carry):
            return jr.scan(
                cell,
                params,
                xs,
                carry,
                lengths=lengths,
                reverse=reverse,
                time_major=time_major,
                method=method,
            )

        return _value_and_grads(scan)(params, xs, carry)

    want, want_grads = run("sequential")
    got, got_grads = run("newton")  # D = H = 4: full Jacobians
    _tree_close(got, want, 1e-5, 2e-6)
    _tree_close(got_grads, want_grads, 1e-4, 1e-5)


def test_convolutional_cell_spatial_axes_stay_in_the_state():
    cell = jr.conv_gru(2, 2, kernel_size=(3,))
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 4, 2))  # (batch, T, width, features)

    carry = _random_carry(cell, (2, 4), jax.random.key(2))  # (batch, width, features)

    def run(method):
        return _value_and_grads(lambda p, x, c: jr.scan(cell, p, x, c, method=method))

    want, want_grads = run("sequential")(params, xs, carry)
    got, got_grads = run("newton")(params, xs, carry)  # D = 4 * 2: full Jacobians
    _tree_close(got, want, 1e-5, 2e-6)
    _tree_close(got_grads, want_grads, 1e-4, 1e-5)


# --- derivatives ----------------------------------------------------------------------------


def _tanh_body(w, h, x):
    h = jnp.tanh(h @ w + x)
    return h, h * h


def test_float64_gradients_forward_mode_and_finite_differences():
    """In float64 the implicit derivatives match lax.scan's to the solvers' tolerance (the
    diagonal form: its derivative recurrences are solved by iterative refinement)."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(0), 6)
        w = 0.6 * jax.random.normal(k[0], (3, 3), jnp.float64)
        xs = jax.random.normal(k[1], (5, 3), jnp.float64)
        h0 = jax.random.normal(k[2], (3,), jnp.float64)
        args = (w, xs, h0)
        direction = jax.tree.map(
            lambda a, key: jax.random.normal(key, a.shape, a.dtype), args, tuple(k[3:])
        )

        def loss(scan, w, xs, h0):
            carry, ys = scan(lambda h, x: _tanh_body(w, h, x), h0, xs)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(carry**3)

        diagonal = Newton(jacobian="diagonal")
        newton = functools.partial(loss, functools.partial(newton_scan, options=diagonal))
        grads = jax.jit(jax.grad(newton, (0, 1, 2)))(*args)
        want = jax.jit(jax.grad(functools.partial(loss, jax.lax.scan), (0, 1, 2)))(*args)
        _tree_close(grads, want, 1e-9, 1e-10)

        # Forward mode: the directional derivative from jax.jvp is lax.scan's.
        value_and_slope = jax.jit(lambda a, d: jax.jvp(newton, a, d))
        _, slope = value_and_slope(args, direction)
        want_slope = sum(jnp.vdot(g, d) for g, d in zip(want, direction, strict=True))
        np.testing.assert_allclose(slope, want_slope, rtol=1e-9)

        # Central differences of the values along the same direction.
        eps = 1e-5

        def value_at(step):
            moved = jax.tree.map(lambda a, d: a + step * d, args, direction)
            return value_and_slope(moved, direction)[0]

        plus, minus = value_at(eps), value_at(-eps)
        np.testing.assert_allclose((plus - minus) / (2 * eps), slope, rtol=1e-7)


# --- non-convergence, damping, vmap, errors ------------------------------------------------


def _gru_case():
    cell = jr.gru(IN, H)
    params = cell.init(jax.random.key(0))
    params = jax.tree.map(lambda a: 3 * a, params)  # strongly nonlinear
    xs = 2 * jax.random.normal(jax.random.key(1), (2, T, IN))
    return cell, params, xs


def test_non_convergence_falls_back_or_raises():
    cell, params, xs = _gru_case()
    want = jr.scan(cell, params, xs)

    def body(c, x):
        return cell.apply(params, c, x)

    carry0 = cell.initial_carry((2,))
    xs_t = jnp.moveaxis(xs, 1, 0)
    fallback = Newton(max_iters=1, on_failure="sequential")
    carry, ys, info = jax.jit(
        lambda x: newton_scan(body, carry0, x, options=fallback, batch_ndim=1, return_info=True)
    )(xs_t)
    assert not bool(info.converged) and int(info.iterations) == 1
    assert float(info.residual) > 1e-3
    _tree_close((carry, jnp.moveaxis(ys, 0, 1)), want, 1e-6, 1e-6)

    # Under jit the error surfaces as JAX's runtime error, carrying the message.
    strict = Newton(max_iters=1, on_failure="error")
    pattern = "NewtonConvergenceError: .* did not converge: residual .* after 1 iterations"
    with pytest.raises(Exception, match=pattern):
        jax.block_until_ready(jax.jit(lambda x: jr.scan(cell, params, x, method=strict))(xs))


def test_damping_converges_to_the_same_trajectory():
    cell, params, xs = _gru_case()
    want = jr.scan(cell, params, xs)
    # quasi-ELK (full Jacobians with damping: the cells test above).
    options = Newton(jacobian="diagonal", damping=1.0, max_iters=80, on_failure="error")
    got = jax.jit(lambda p, x: jr.scan(cell, p, x, method=options))(params, xs)
    _tree_close(got, want, 1e-5, 1e-5)


def test_vmap():
    w = 0.7 * jax.random.normal(jax.random.key(0), (3, 3))
    xs = jax.random.normal(jax.random.key(1), (2, T, 3))
    h0 = jnp.zeros((2, 3))
    body = lambda h, x: _tanh_body(w, h, x)
    want = jax.jit(jax.vmap(lambda x, h: jax.lax.scan(body, h, x)))(xs, h0)
    got = jax.jit(jax.vmap(lambda x, h: newton_scan(body, h, x)))(xs, h0)
    _tree_close(got, want, 1e-5, 1e-6)


def test_empty_sequence_and_checks():
    body = lambda h, x: _tanh_body(jnp.eye(3), h, x)
    carry, ys = newton_scan(body, jnp.ones(3), jnp.zeros((0, 3)))
    np.testing.assert_array_equal(carry, jnp.ones(3))
    assert ys.shape == (0, 3)
    xs = jnp.zeros((4, 3))
    with pytest.raises(TypeError, match="floating-point carry"):
        newton_scan(lambda h, x: (h, x), jnp.zeros(3, jnp.int32), xs)
    with pytest.raises(TypeError, match="carry output"):
        newton_scan(lambda h, x: (h[:2], x), jnp.zeros(3), xs)
    with pytest.raises(TypeError, match="Newton"):
        newton_scan(body, jnp.zeros(3), xs, options={"tol": 1e-3})
    bad = [
        Newton(tol=0.0),
        Newton(max_iters=0),
        Newton(jacobian="dense"),
        Newton(damping=-1.0),
        Newton(on_failure="ignore"),
    ]
    for options in bad:
        with pytest.raises(ValueError):
            newton_scan(body, jnp.zeros(3), xs, options=options)
    with pytest.raises(ValueError, match="batch axes"):
        newton_scan(body, {"a": jnp.zeros(3), "b": jnp.zeros((2, 3))}, xs, batch_ndim=1)
    strict = Newton(max_iters=1, on_failure="error")
    with pytest.raises(NewtonConvergenceError, match="after 1 iterations"):  # eagerly: itself
        body = lambda h, x: (jnp.tanh(3 * h + x),) * 2
        newton_scan(body, jnp.zeros(()), jnp.linspace(-2.0, 2.0, 4), options=strict)
    cell = jr.gru(IN, H)
    with pytest.raises(ValueError, match="method"):
        jr.scan(cell, cell.init(jax.random.key(0)), jnp.zeros((T, IN)), method="parallel")
