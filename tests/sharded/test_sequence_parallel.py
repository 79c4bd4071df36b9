"""Sequence parallelism: ``jr.scan`` with the time axis of ``xs`` split over a mesh axis equals
one device, values and gradients (of the params, the inputs and the initial carry), for the
associative cells and Newton's method, with ``lengths``, ``resets``, ``reverse``, T divisible
and not divisible by the device count, and 1-D ("seq") and 2-D ("data", "seq") meshes.

``LARGEST`` collects the largest absolute difference against one device per test family;
``python tests/sharded/test_sequence_parallel.py`` (8 devices) prints them.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from sharding_helpers import put

import jaxrnn as jr

LARGEST: dict[str, tuple[float, float]] = {}  # family -> (abs, relative to the leaf's max)

ASSOCIATIVE = {
    "min_gru": lambda: jr.min_gru(3, 5),
    "min_lstm": lambda: jr.min_lstm(3, 5),
    "lru": lambda: jr.lru(3, 5),
    "rg_lru": lambda: jr.rg_lru(3, 5),
}
NEWTON = {
    "gru_full": (lambda: jr.gru(3, 4), "full"),
    "gru_diagonal": (lambda: jr.gru(3, 4), "diagonal"),
    "lstm_full": (lambda: jr.lstm(3, 4), "full"),
    "lstm_diagonal": (lambda: jr.lstm(3, 4), "diagonal"),
}


@pytest.fixture(scope="module")
def seq_mesh():
    return jax.make_mesh((8,), ("seq",))


@pytest.fixture(scope="module")
def grid_mesh():
    return jax.make_mesh((2, 4), ("data", "seq"))


def _problem(cell, num_steps, key=0):
    keys = jax.random.split(jax.random.key(key), 4)
    params = cell.init(keys[0])
    xs = jax.random.normal(keys[1], (2, num_steps, 3))
    carry = jax.tree.map(lambda c: c + 0.3, cell.initial_carry((2,)))
    lengths = jnp.array([num_steps, max(num_steps // 2, 1)])
    resets = jax.random.bernoulli(keys[2], 0.2, (2, num_steps))
    return params, xs, carry, lengths, resets


def _grad_fn(cell, method, lengths, resets, reverse, **options):
    def loss(params, xs, carry):
        final, ys = jr.scan(
            cell,
            params,
            xs,
            carry,
            lengths=lengths,
            resets=resets,
            reverse=reverse,
            method=method,
            **options,
        )
        leaves = jax.tree.leaves(final)
        return jnp.sum(jnp.abs(ys) ** 2) + sum(jnp.sum(jnp.abs(c) ** 2) for c in leaves), ys

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _compare(family, got, want, tol=2e-5):
    """``got`` equals ``want`` leaf by leaf (relative to each leaf's scale); records the
    largest absolute difference of ``family``."""
    worst, relative = 0.0, 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g), np.asarray(w)
        diff = float(np.max(np.abs(g - w))) if g.size else 0.0
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        worst, relative = max(worst, diff), max(relative, diff / max(scale, 1e-30))
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * (1 + scale))
    old = LARGEST.get(family, (0.0, 0.0))
    LARGEST[family] = (max(old[0], worst), max(old[1], relative))


def _run_both(cell, method, num_steps, reverse, place, family, context=None, **options):
    params, xs, carry, lengths, resets = _problem(cell, num_steps)
    f1 = _grad_fn(cell, method, lengths, resets, reverse)
    want = f1(params, xs, carry)
    f8 = _grad_fn(cell, method, lengths, resets, reverse, **options)
    with context or contextlib.nullcontext():
        got = f8(params, place(xs), carry)
    _compare(family, got, want)
    return got


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(ASSOCIATIVE))
def test_associative_time_sharded_equals_one_device(name, reverse, seq_mesh, grid_mesh):
    cell = ASSOCIATIVE[name]()
    # T = 16 over 8 devices (forward), or batch and time split on a 2-D mesh (reverse); xs
    # split in its type: ys come back split the same way
    mesh, spec = (grid_mesh, ("data", "seq")) if reverse else (seq_mesh, (None, "seq"))
    (_, ys), _ = _run_both(
        cell, "associative", 16, reverse, lambda x: put(x, mesh, *spec), "associative"
    )
    assert tuple(jax.typeof(ys).sharding.spec[:2]) == spec
    # T = 13, not a multiple of 8: the axis named, padded inside with identity steps
    _run_both(
        cell,
        "associative",
        13,
        reverse,
        lambda x: x,
        "associative",
        context=jax.set_mesh(seq_mesh),
        sequence_axis="seq",
    )


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(NEWTON))
def test_newton_time_sharded_equals_one_device(name, reverse, seq_mesh, grid_mesh):
    factory, jacobian = NEWTON[name]
    cell = factory()
    # on_failure="error": a sequential fallback would raise, so the split iteration converged
    # (jax.debug.callback, which raises it, does not run in a shard_map over part of a mesh with
    # other explicit axes: on the 2-D mesh the default, the fallback, tested below)
    method = jr.Newton(jacobian=jacobian, on_failure="sequential" if reverse else "error")
    place = (
        (lambda x: put(x, grid_mesh, "data", "seq"))
        if reverse
        else (lambda x: put(x, seq_mesh, None, "seq"))
    )
    (_, ys), _ = _run_both(cell, method, 16, reverse, place, f"newton_{jacobian}")
    assert jax.typeof(ys).sharding.spec[1] == "seq"
    if reverse != (jacobian == "full"):  # T not a multiple of the devices: once per cell and
        return  # Jacobian, reverse for full ones, forward for diagonal (compiles are the time)
    _run_both(
        cell,
        method,
        11,
        reverse,
        lambda x: x,
        f"newton_{jacobian}",
        context=jax.set_mesh(seq_mesh),
        sequence_axis="seq",
    )


def test_newton_sequential_fallback_and_damping_time_sharded(seq_mesh):
    """The gathered sequential fallback (max_iters=1 cannot converge) and ELK damping (its
    Kalman gains are one more scan across the devices) equal one device."""
    cell = jr.gru(3, 4)
    for method in (
        jr.Newton(max_iters=1, on_failure="sequential"),
        jr.Newton(jacobian="diagonal", damping=0.5, max_iters=64),
    ):
        _run_both(cell, method, 16, False, lambda x: put(x, seq_mesh, None, "seq"), "newton_other")


def test_slstm_newton_time_sharded(grid_mesh):
    cell = jr.slstm(3, 4)
    _run_both(cell, "newton", 16, False, lambda x: put(x, grid_mesh, "data", "seq"), "newton_other")


def test_auto_axes_time_sharded_is_correct():
    """Under Auto axes the split is not in the type: the compiler partitions the scan itself
    (correct, with its own collectives), or ``sequence_axis`` names the axis."""
    mesh = jax.make_mesh((8,), ("seq",), axis_types=(AxisType.Auto,))
    cell = jr.lru(3, 5)
    place = lambda x: put(x, mesh, None, "seq")
    _run_both(cell, "associative", 16, True, place, "auto_axes")
    _run_both(
        cell,
        "associative",
        16,
        False,
        place,
        "auto_axes",
        context=jax.set_mesh(mesh),
        sequence_axis="seq",
    )
    _run_both(
        jr.gru(3, 4),
        "newton",
        16,
        False,
        place,
        "auto_axes",
        context=jax.set_mesh(mesh),
        sequence_axis="seq",
    )


@pytest.mark.parametrize(
    "shape,spec,time_major",
    [
        ((16, 3), ("seq",), False),
        ((2, 3, 16, 3), (None, None, "seq"), False),
        ((16, 2, 3), ("seq",), True),
    ],
)
def test_any_batch_shape_time_sharded(shape, spec, time_major, seq_mesh):
    """No batch axis, two batch axes, time-major: the same as on one device."""
    for cell, method in ((jr.min_gru(3, 4), "associative"), (jr.gru(3, 4), "newton")):
        params = cell.init(jax.random.key(0))
        xs = jax.random.normal(jax.random.key(1), shape)

        def loss(params, xs, cell=cell, method=method):
            carry, ys = jr.scan(cell, params, xs, method=method, time_major=time_major)
            return jnp.sum(ys**2) + jnp.sum(carry**2), ys

        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        got = f(params, put(xs, seq_mesh, *spec))
        _compare("batch_shapes", got, f(params, xs))
        assert jax.typeof(got[0][1]).sharding.spec[spec.index("seq")] == "seq"


def test_sequential_over_time_sharded_xs_gathers(seq_mesh):
    """method="sequential" gathers a time-split xs and runs one step after another."""
    cell = jr.gru(3, 4)
    _run_both(cell, "sequential", 16, True, lambda x: put(x, seq_mesh, None, "seq"), "sequential")


def test_batch_sharded_explicit_parallel_methods(grid_mesh):
    """Only the batch split (explicit axes): the parallel methods run as on one device."""
    for cell, method in ((jr.min_lstm(3, 5), "associative"), (jr.lstm(3, 4), "newton")):
        for context in (contextlib.nullcontext(), jax.set_mesh(grid_mesh)):
            _run_both(
                cell,
                method,
                6,
                False,
                lambda x: put(x, grid_mesh, "data"),
                "batch_only",
                context=context,
            )


def test_bad_sequence_axis(seq_mesh):
    cell = jr.lru(3, 5)
    params, xs, *_ = _problem(cell, 8)

    def scan(xs, **options):
        return jax.jit(lambda xs: jr.scan(cell, params, xs, **options))(xs)

    split = put(xs, seq_mesh, None, "seq")
    with pytest.raises(ValueError, match="sequence_axis='time': not an axis of the mesh"):
        scan(split, method="associative", sequence_axis="time")
    with pytest.raises(ValueError, match="there is no mesh"):
        scan(xs, method="associative", sequence_axis="seq")
    with pytest.raises(ValueError, match='use method="associative" or "newton"'):
        scan(split, sequence_axis="seq")
    with pytest.raises(TypeError, match="sequence_axis: expected a mesh axis name"):
        scan(xs, method="associative", sequence_axis=1)


def test_newton_error_reporting_needs_no_other_explicit_axes(grid_mesh):
    """on_failure="error" cannot report from a shard_map over part of an explicit mesh: a
    clear error up front, naming the remedy."""
    cell = jr.gru(3, 4)
    params, xs, *_ = _problem(cell, 8)
    method = jr.Newton(on_failure="error")
    scan = jax.jit(lambda xs: jr.scan(cell, params, xs, method=method))
    with jax.set_mesh(grid_mesh), pytest.raises(ValueError, match='use on_failure="sequential"'):
        scan(put(xs, grid_mesh, "data", "seq"))


if __name__ == "__main__":  # the equality figures: largest abs difference per test family
    import sys

    code = pytest.main([__file__, "-q", "-p", "no:xdist", "-p", "no:cacheprovider"])
    loaded = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == __file__]
    found = [m.LARGEST for m in loaded if m.__name__ != "__main__" and m.LARGEST]
    for family, (diff, rel) in sorted((found[0] if found else LARGEST).items()):
        print(f"{family:16s} largest |difference| against one device: {diff:.2e} ", end="")
        print(f"(relative to the largest entry of its array: {rel:.1e})")
    sys.exit(code)
