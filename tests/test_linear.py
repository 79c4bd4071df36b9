"""Linear-recurrence cells (jaxrnn.linear) and jr.scan(..., method=...).

References: float64 NumPy loops of each paper's equations (Feng et al. 2024, Orvieto et al.
2023, De et al. 2024); method="sequential" for every option of jr.scan under
method="associative" (values and gradients); finite differences.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn._scan.scan import resolve_method
from jaxrnn.newton import Newton

IN, H, T = 3, 4, 6

CELLS = {
    "min_gru": jr.min_gru,
    "min_gru_plain": functools.partial(jr.min_gru, log_space=False),
    "min_lstm": jr.min_lstm,
    "min_lstm_plain": functools.partial(jr.min_lstm, log_space=False),
    "lru": functools.partial(jr.lru, r_min=0.5, r_max=0.95),
    "rg_lru": jr.rg_lru,
}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def g(v):
    return np.where(v >= 0, v + 0.5, sigmoid(v))


# float64 NumPy steps, written from the papers' equations: (params, h, x) -> (h, y).


def ref_min_gru(p, h, x, log_space=True):
    W_z, W_h = np.split(p.w_ih, 2, axis=-1)
    b_z, b_h = np.split(p.b, 2)
    z = sigmoid(x @ W_z + b_z)
    h_tilde = x @ W_h + b_h
    h = (1 - z) * h + z * (g(h_tilde) if log_space else h_tilde)
    return h, h


def ref_min_lstm(p, h, x, log_space=True):
    W_f, W_i, W_h = np.split(p.w_ih, 3, axis=-1)
    b_f, b_i, b_h = np.split(p.b, 3)
    f, i = sigmoid(x @ W_f + b_f), sigmoid(x @ W_i + b_i)
    h_tilde = x @ W_h + b_h
    h = f / (f + i) * h + i / (f + i) * (g(h_tilde) if log_space else h_tilde)
    return h, h


def ref_lru(p, h, x):
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    B = (p.b_re + 1j * p.b_im).T  # (N, I), the paper's layout
    C = (p.c_re + 1j * p.c_im).T  # (I, N)
    h = lam * h + np.exp(p.gamma_log) * (x @ B.T)
    return h, (h @ C.T).real + p.d * x


def ref_rg_lru(p, h, x, c=8.0):
    u = x if p.w_in is None else x @ p.w_in + p.b_in
    W_a, W_x = np.split(p.w_gates, 2, axis=-1)
    b_a, b_x = np.split(p.b_gates, 2)
    r, i = sigmoid(u @ W_a + b_a), sigmoid(u @ W_x + b_x)
    a = sigmoid(-p.a_param)  # the paper's sigma(Lambda), Lambda = -a_param
    a_t = a ** (c * r)
    h = a_t * h + np.sqrt(1 - a_t**2) * (i * u)
    return h, h


REFS = {
    "min_gru": ref_min_gru,
    "min_gru_plain": functools.partial(ref_min_gru, log_space=False),
    "min_lstm": ref_min_lstm,
    "min_lstm_plain": functools.partial(ref_min_lstm, log_space=False),
    "lru": ref_lru,
    "rg_lru": ref_rg_lru,
}


def normal(seed, shape, dtype=jnp.float32, scale=1.0):
    """Normal draws from NumPy, as a JAX array: test data without compiling random kernels."""
    draws = scale * np.random.default_rng(seed).standard_normal((2, *shape))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.asarray(draws[0] + 1j * draws[1], dtype)
    return jnp.asarray(draws[0], dtype)


def random_params(cell, seed, scale=0.5):
    """Params of the cell's structure, shapes and dtypes, every entry drawn at random (so no
    zero bias or unit gain hides a swapped block)."""
    shapes = jax.eval_shape(cell.init, jax.random.key(0))
    leaves, tree = jax.tree.flatten(shapes)
    drawn = [normal(seed + k, a.shape, a.dtype, scale) for k, a in enumerate(leaves)]
    return jax.tree.unflatten(tree, drawn)


def random_carry(cell, batch_shape, seed):
    shapes = jax.eval_shape(lambda: cell.initial_carry(batch_shape))
    return jax.tree.map(lambda a: normal(seed, a.shape, a.dtype), shapes)


def reference_scan(name, params, xs, h0):
    """NumPy loop over (*batch, T, F) inputs."""
    p = jax.tree.map(lambda a: None if a is None else np.asarray(a), params)
    x = np.moveaxis(np.asarray(xs), -2, 0)
    h, ys = np.asarray(h0), []
    for t in range(x.shape[0]):
        h, y = REFS[name](p, h, x[t])
        ys.append(y)
    return h, np.stack(ys, -2)


@pytest.mark.parametrize(
    ("name", "in_size", "methods"),
    [
        ("min_gru", IN, ("sequential", "associative")),
        ("min_gru_plain", IN, ("sequential",)),
        ("min_lstm", IN, ("sequential",)),
        ("min_lstm_plain", IN, ("sequential", "associative")),
        ("lru", IN, ("sequential", "associative")),
        ("rg_lru", IN, ("sequential",)),  # with the input projection
        ("rg_lru", H, ("sequential", "associative")),  # without
    ],
)
def test_matches_float64_reference(name, in_size, methods):
    with jax.enable_x64(True):
        cell = CELLS[name](in_size, H, param_dtype=jnp.float64)
        params = random_params(cell, 1)
        xs = normal(2, (2, T, in_size), jnp.float64)
        h0 = random_carry(cell, (2,), 3)
        h, ys_ref = reference_scan(name, params, xs, h0)
        for method in methods:
            run = jax.jit(lambda p, x, c, method=method: jr.scan(cell, p, x, c, method=method))
            carry, ys = run(params, xs, h0)
            np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(carry, h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CELLS))
def test_apply_is_one_step_of_the_declared_recurrence(name):
    with jax.enable_x64(True):
        cell = CELLS[name](IN, H, param_dtype=jnp.float64)
        params = random_params(cell, 1)
        x = normal(2, (5, IN), jnp.float64, scale=3.0)  # both branches of g
        h = random_carry(cell, (5,), 3)
        lin = cell.linear

        @jax.jit
        def both(params, h, x):
            xp = x if cell.project is None else cell.project(params, x)
            a, b = lin.coefficients(params, xp)
            logs = None if lin.log_coefficients is None else lin.log_coefficients(params, xp)
            return cell.apply(params, h, x), (a * h + b, lin.readout(params, a * h + b, xp)), (
                a, b, logs)  # fmt: skip

        applied, recurrence, (a, b, logs) = both(params, h, x)
        assert_close(applied, recurrence, 1e-12)
        if logs is not None:
            assert_close((jnp.exp(logs[0]), jnp.exp(logs[1])), (a, b), 1e-12)
        else:
            assert name in ("min_gru_plain", "min_lstm_plain", "lru", "rg_lru")


# jr.scan's options, each row one combination (not the full product; every option appears
# with and without the others): batch shape, time_major, lengths, resets, reverse, carry.
LENGTHS = {(2,): [6, 3], (2, 3): [[6, 0, 2], [5, 6, 1]]}
OPTION_ROWS = [
    dict(batch=(), reverse=True, carry=True),
    dict(batch=(2,), lengths=True, resets=True, carry=True),
    dict(batch=(2, 3), time_major=True, lengths=True, resets=True, reverse=True),
]


def scan_case(cell, row):
    """``(xs, carry, kwargs)`` of one row of OPTION_ROWS."""
    batch, time_major = row["batch"], row.get("time_major", False)
    xs = normal(4, (*batch, T, IN), scale=2.0)
    kwargs = dict(reverse=row.get("reverse", False), time_major=time_major)
    if row.get("lengths"):
        kwargs["lengths"] = jnp.array(LENGTHS[batch])
    if row.get("resets"):
        # Starts inside and beyond the lengths, and at step 0.
        resets = np.random.default_rng(5).random((*batch, T)) < 0.35
        resets[..., 0] = True
        resets = jnp.asarray(resets)
        kwargs["resets"] = jnp.moveaxis(resets, -1, 0) if time_major else resets
    if time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    carry = random_carry(cell, batch, 6) if row.get("carry") else None
    return xs, carry, kwargs


def assert_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=atol, atol=atol)


@pytest.mark.parametrize("row", range(len(OPTION_ROWS)))
@pytest.mark.parametrize("name", ["min_gru", "min_lstm_plain", "lru", "rg_lru"])
def test_associative_equals_sequential(name, row):
    cell = CELLS[name](IN, H)
    params = random_params(cell, 1)
    xs, carry, kwargs = scan_case(cell, OPTION_ROWS[row])

    results = {method: value_and_grads(cell, params, xs, carry, kwargs, method) for method in (
        "sequential", "associative")}  # fmt: skip
    assert_close(results["associative"][0], results["sequential"][0], 2e-6)
    assert_close(results["associative"][1], results["sequential"][1], 5e-5)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(results["associative"][1]))


def value_and_grads(cell, params, xs, carry, kwargs, method):
    """``jr.scan``'s ``(carry, ys)`` and the gradients of a loss of both with respect to the
    params, ``xs`` and the carry (when given), in one compiled function."""

    def loss(params, xs, carry):
        c, ys = jr.scan(cell, params, xs, carry, method=method, **kwargs)
        value = jnp.sum(jnp.sin(ys)) + sum(
            jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(c)
        )
        return value, (c, ys)

    argnums = (0, 1) if carry is None else (0, 1, 2)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(params, xs, carry)
    return out, grads


def test_log_space_min_lstm_with_lengths_resets_and_reverse():
    """minLSTM's log-space form (the grid runs minGRU's, and minLSTM's linear-space one)."""
    cell = jr.min_lstm(IN, H)
    params = random_params(cell, 1)
    row = dict(batch=(2,), lengths=True, resets=True, reverse=True, carry=True)
    xs, carry, kwargs = scan_case(cell, row)
    want = value_and_grads(cell, params, xs, carry, kwargs, "sequential")
    assert_close(value_and_grads(cell, params, xs, carry, kwargs, "associative"), want, 5e-5)


@pytest.mark.parametrize("name", ["min_gru", "lru", "rg_lru"])  # min_lstm: min_gru's log path
def test_associative_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        cell = CELLS[name](IN, H, param_dtype=jnp.float64)
        params = random_params(cell, 1)
        xs = normal(2, (2, 4, IN), jnp.float64)
        h0 = random_carry(cell, (2,), 3)
        lengths, resets = jnp.array([4, 2]), jnp.array([[0, 0, 1, 0], [0, 1, 0, 1]], bool)

        def loss(params, xs, h0):
            c, ys = jr.scan(
                cell, params, xs, h0, lengths=lengths, resets=resets, method="associative"
            )
            return jnp.sum(ys**2) + jnp.sum(jnp.abs(c) ** 2)

        # Reverse mode transposes the forward rules, the custom ones included.
        check_grads(jax.jit(loss), (params, xs, h0), order=1, modes=["rev"], eps=1e-6)


def test_log_space_over_a_long_sequence_and_negative_initial_carry():
    """Feng et al.'s reason for log space: long sums of small terms; h_0 of any sign."""
    cell = jr.min_gru(IN, H)
    params = random_params(cell, 1)
    xs = normal(2, (1, 512, IN))
    h0 = -jnp.abs(random_carry(cell, (1,), 3))
    c_seq, ys_seq = jax.jit(lambda p, x, c: jr.scan(cell, p, x, c))(params, xs, h0)
    c_par, ys_par = jax.jit(lambda p, x, c: jr.scan(cell, p, x, c, method="associative"))(
        params, xs, h0
    )
    np.testing.assert_allclose(ys_par, ys_seq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c_par, c_seq, rtol=1e-5, atol=1e-5)
    # The negative start decays through the first steps exactly as in the loop.
    np.testing.assert_allclose(ys_par[0, :3], ys_seq[0, :3], rtol=1e-6, atol=1e-7)
    assert (ys_seq[0, 0] < 0).any()


def test_remat_under_associative():
    """remat=True (or a policy) checkpoints the whole parallel evaluation."""
    remat = jax.checkpoint_policies.nothing_saveable
    cell = jr.rg_lru(IN, H)
    params = random_params(cell, 0)
    xs = normal(1, (2, T, IN))

    def loss(params, method, remat):
        return jnp.sum(jr.scan(cell, params, xs, method=method, remat=remat)[1] ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=(1, 2))
    want = grad(params, "sequential", False)
    got = grad(params, "associative", remat)
    assert_close(got, want, 1e-5)


def test_empty_sequence_under_associative():
    cell = jr.min_gru(IN, H)
    params = random_params(cell, 0)
    h0 = random_carry(cell, (2,), 1)
    carry, ys = jr.scan(cell, params, jnp.ones((2, 0, IN)), h0, method="associative")
    assert ys.shape == (2, 0, H)
    np.testing.assert_array_equal(carry, h0)


def shapes_of_params(cell):
    """The params as shapes only: the checks raise before anything is computed."""
    return jax.eval_shape(cell.init, jax.random.key(0))


@pytest.mark.parametrize("make", [jr.lstm, jr.mgu], ids=["lstm", "mgu"])
def test_associative_refuses_a_nonlinear_cell_by_name(make):
    cell = make(IN, H)
    with pytest.raises(ValueError, match=f"this {make.__name__} cell does not"):
        jr.scan(cell, shapes_of_params(cell), jnp.ones((2, T, IN)), method="associative")


def test_associative_refuses_a_custom_cell():
    cell = jr.Cell(
        init=lambda key: jnp.float32(0.5),
        apply=lambda p, h, x: (p * h + x, h),
        initial_carry=lambda batch_shape=(), dtype=None: jnp.zeros((*batch_shape, 2)),
    )
    with pytest.raises(ValueError, match="custom cell"):
        jr.scan(cell, jnp.float32(0.5), jnp.ones((T, 2)), method="associative")


def test_unknown_method_lists_the_valid_ones():
    cell = jr.min_gru(IN, H)
    for method in ("parallel", "Sequential", None, 3):
        with pytest.raises(ValueError, match="'sequential', 'associative', 'newton', 'auto'"):
            jr.scan(cell, shapes_of_params(cell), jnp.ones((2, T, IN)), method=method)


def test_sqrt_remat_is_sequential_only():
    cell = jr.min_gru(IN, H)
    for method in ("associative", "newton", Newton(tol=1e-3)):
        with pytest.raises(ValueError, match='remat="sqrt"'):
            jr.scan(cell, shapes_of_params(cell), jnp.ones((2, T, IN)), method=method,
                    remat="sqrt")  # fmt: skip


def test_auto_is_sequential_on_cpu_and_associative_on_accelerators(monkeypatch):
    linear, other = jr.lru(IN, H), jr.lstm(IN, H)
    assert jax.default_backend() == "cpu"
    assert resolve_method("auto", linear) == "sequential"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_method("auto", linear) == "associative"
    assert resolve_method("auto", other) == "sequential"
    assert resolve_method("newton", other) == Newton()


@pytest.mark.parametrize("method", ["newton", Newton(tol=1e-3, jacobian="diagonal")])
def test_newton_is_routed_to_newton_scan(monkeypatch, method):
    """The plumbing only: a stand-in newton_scan (lax.scan) receives the loop's body and the
    options; jaxrnn.newton's own tests check the solver."""
    calls = []

    def fake_newton_scan(f, init, xs, *, reverse=False, options=None, batch_ndim=0):
        calls.append(options)
        return jax.lax.scan(f, init, xs, reverse=reverse)

    # Patched where the sequential evaluation of jr.scan looks the solver up.
    monkeypatch.setattr(sys.modules["jaxrnn._scan.sequential"], "newton_scan", fake_newton_scan)
    cell = jr.gru(IN, H)
    params = random_params(cell, 0)
    xs, carry, kwargs = scan_case(cell, OPTION_ROWS[2])
    if method == "newton":  # the values, with every option
        run = jax.jit(lambda p, x, m: jr.scan(cell, p, x, method=m, **kwargs), static_argnums=2)
        assert_close(run(params, xs, "newton"), run(params, xs, "sequential"), 1e-6)
        assert calls == [Newton()]
    else:  # the gradients, through remat=True, which checkpoints the whole solve
        kwargs = dict(kwargs, remat=True)
        want = value_and_grads(cell, params, xs, carry, kwargs, "sequential")
        assert_close(value_and_grads(cell, params, xs, carry, kwargs, method), want, 1e-5)
        assert calls == [method]


@pytest.mark.parametrize("name", ["min_gru", "lru", "rg_lru"])
def test_precision_policy(name):
    cell = CELLS[name](IN, H, dtype=jnp.bfloat16)
    params = shapes_of_params(cell)  # dtypes are decided at trace time: nothing to run
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    xs = jax.ShapeDtypeStruct((2, T, IN), jnp.float32)
    for method in ("sequential", "associative"):
        carry, ys = jax.eval_shape(lambda p, x, m=method: jr.scan(cell, p, x, method=m), params, xs)
        assert ys.dtype == jnp.bfloat16
        assert carry.dtype == (jnp.complex64 if name == "lru" else jnp.float32)
    with jax.enable_x64(True):
        cell = CELLS[name](IN, H, param_dtype=jnp.float64)
        carry = cell.initial_carry((2,))
        assert carry.dtype == (jnp.complex128 if name == "lru" else jnp.float64)


def test_lru_initialisation_follows_the_paper():
    cell = jr.lru(IN, 128, r_min=0.4, r_max=0.9, max_phase=np.pi / 10)
    p = cell.init(jax.random.key(0))
    radius, phase = np.exp(-np.exp(p.nu_log)), np.exp(p.theta_log)
    assert ((radius >= 0.4 - 1e-6) & (radius <= 0.9 + 1e-6)).all()
    assert ((phase > 0) & (phase <= np.pi / 10 + 1e-6)).all()
    np.testing.assert_allclose(np.exp(p.gamma_log), np.sqrt(1 - radius**2), rtol=1e-4)
    # |lambda|^2 uniform on [r_min^2, r_max^2]: its mean is the midpoint.
    assert abs(np.mean(radius**2) - (0.4**2 + 0.9**2) / 2) < 0.05
    assert abs(np.std(p.b_re) - 1 / np.sqrt(2 * IN)) < 0.05
    assert abs(np.std(p.c_im) - 1 / np.sqrt(128)) < 0.015
    assert p.c_re.shape == (128, IN) and p.d.shape == (IN,)


def test_rg_lru_layout_and_initialisers():
    p = jr.rg_lru(H, H).init(jax.random.key(0))
    assert p.w_in is None and p.b_in is None  # input_size == hidden_size: no projection
    a = jax.nn.sigmoid(-p.a_param)
    assert ((a >= 0.9 - 1e-6) & (a <= 0.999 + 1e-6)).all()
    ones = jax.nn.initializers.ones
    cell = jr.rg_lru(IN, H, kernel_init=ones, recurrent_kernel_init=ones, bias_init=ones)
    p = cell.init(jax.random.key(0))
    for leaf in (p.w_gates, p.b_gates, p.a_param, p.w_in, p.b_in):
        np.testing.assert_array_equal(leaf, 1.0)


def test_initialiser_arguments():
    calls = []

    def kernel(key, shape, dtype):
        calls.append(shape)
        return jnp.full(shape, 2.0, dtype)

    p = jr.min_lstm(IN, H, kernel_init=kernel, bias_init=jax.nn.initializers.ones).init(
        jax.random.key(0)
    )
    assert calls == [(IN, H)] * 3  # once per gate block
    np.testing.assert_array_equal(p.w_ih, 2.0)
    np.testing.assert_array_equal(p.b, 1.0)
    p = jr.lru(IN, H, kernel_init=jax.nn.initializers.zeros).init(jax.random.key(0))
    np.testing.assert_array_equal(p.b_im, 0.0)
    for make in (jr.min_gru, jr.min_lstm, jr.lru):
        with pytest.raises(ValueError, match="recurrent_kernel_init must be None"):
            make(IN, H, recurrent_kernel_init=jax.nn.initializers.ones)
    with pytest.raises(ValueError, match="bias_init must be None"):
        jr.lru(IN, H, bias_init=jax.nn.initializers.ones)


def test_weight_drop_keeps_the_linear_recurrence_with_its_mask():
    cell = jr.min_gru(IN, H)
    params = random_params(cell, 0)
    dropped = jr.weight_drop(cell, jax.random.key(1), rate=0.5, names=("w_ih",))
    xs = normal(2, (2, T, IN))
    run = jax.jit(lambda cell, params, method: jr.scan(cell, params, xs, method=method),
                  static_argnums=(0, 2))  # fmt: skip
    seq = run(dropped, params, "sequential")
    assert_close(run(dropped, params, "associative"), seq, 2e-6)
    assert not np.allclose(seq[1], run(cell, params, "sequential")[1])


def test_flax_wrappers_take_the_method():
    import flax.nnx as nnx

    import jaxrnn.flax as jrf
    import jaxrnn.flax.nnx as jrnnx

    cell = jr.min_lstm(IN, H)
    xs = normal(1, (2, T, IN))
    lengths = jnp.array([6, 2])
    linen = jrf.RNN(cell, method="associative")
    variables = linen.init(jax.random.key(0), xs)
    got = linen.apply(variables, xs, lengths=lengths)
    want = jr.scan(cell, variables["params"]["cell"], xs, lengths=lengths)[1]
    np.testing.assert_allclose(got, want, atol=2e-6)
    model = jrnnx.RNN(cell, method="associative", rngs=nnx.Rngs(0))
    want = jr.scan(cell, model.get_params(), xs, lengths=lengths)[1]
    np.testing.assert_allclose(model(xs, lengths=lengths), want, atol=2e-6)
