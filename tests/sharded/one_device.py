"""The comparison the layer, attention, decoding and Flax 8-device tests share: a function's
value and gradients with the batch split over 8 devices equal those on one device.

Four settings: ``"explicit"`` (a mesh from ``jax.make_mesh``), ``"explicit+set_mesh"`` (the
same inside ``with jax.set_mesh(mesh):``), ``"auto"`` (``Auto`` axes), and ``"model"`` (an
explicit ``("data", "model")`` mesh of 4 x 2 with every parameter split over ``"model"`` as
:func:`jaxrnn.train.param_spec` splits it).
"""

import contextlib

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxrnn.train as jt

HOWS = ("explicit", "explicit+set_mesh", "auto", "model")


def mesh_of(how):
    """The mesh of setting ``how``."""
    if how == "model":
        return jax.make_mesh((4, 2), ("data", "model"))
    if how == "auto":
        return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    return jax.make_mesh((8,), ("data",))


def context(how, mesh):
    """``jax.set_mesh(mesh)`` for ``"explicit+set_mesh"``, nothing otherwise."""
    return jax.set_mesh(mesh) if how.endswith("set_mesh") else contextlib.nullcontext()


def split_rows(tree, mesh, axis=0):
    """Every array leaf of ``tree`` split over ``"data"`` along ``axis`` (keys replicated)."""

    def put(leaf):
        if not hasattr(leaf, "ndim") or leaf.ndim <= axis:
            return leaf
        if _is_key(leaf):
            return jax.device_put(jax.random.clone(leaf), NamedSharding(mesh, P()))
        spec = (None,) * axis + ("data",)
        return jax.device_put(leaf, NamedSharding(mesh, P(*spec)))

    return jax.tree.map(put, tree)


def _is_key(leaf):
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def clone_keys(tree):
    """``tree`` with every PRNG key cloned (the tests pass the same keys twice)."""
    return jax.tree.map(lambda x: jax.random.clone(x) if _is_key(x) else x, tree)


def place_params(params, how, mesh, on_mesh=False):
    """``params`` as the setting has them: on no mesh (``on_mesh``: replicated on ``mesh``),
    or split over ``"model"``."""
    if how != "model":
        if on_mesh:
            return jax.device_put(params, NamedSharding(mesh, P()))
        return params
    return jax.tree.map(
        lambda p: jax.device_put(p, NamedSharding(mesh, jt.param_spec(p.shape, mesh))), params
    )


def spec_of(x):
    """The spec of ``x``'s sharding, padded with ``None`` to its rank."""
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def max_diff(a, b):
    """The largest absolute difference over the leaves of two trees."""
    diffs = [
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return max(diffs, default=0.0)


def assert_close(a, b, rtol=1e-5, atol=1e-5, label=""):
    """Leaf by leaf ``allclose``; prints the largest absolute difference (``pytest -s``)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    print(f"MAXDIFF {label}: {max_diff(a, b):.3g}")
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def check_grads_placed(grads, params, how):
    """Under explicit axes every weight gradient is replicated or split as its parameter."""
    if how == "auto":
        return
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        want = spec_of(p) if how == "model" else (None,) * g.ndim
        assert spec_of(g) == want, (g.shape, g.sharding, want)


_ONE_DEVICE = {}


def compare(f, params, data, how, *, axis=0, rtol=1e-5, atol=1e-5, label="", on_mesh=False):
    """``f(params, *data)`` on one device and with ``data`` split over ``"data"`` (along
    ``axis``): the results equal. ``label`` names the case (its one-device results are
    computed once). Returns ``(one, eight, mesh, params as placed)``."""
    if label not in _ONE_DEVICE:  # the same for every setting: computed once per case
        _ONE_DEVICE[label] = f(params, *clone_keys(data))
    one = _ONE_DEVICE[label]
    mesh = mesh_of(how)
    placed = place_params(params, how, mesh, on_mesh)
    with context(how, mesh):
        eight = f(placed, *split_rows(data, mesh, axis))
    assert_close(eight, one, rtol=rtol, atol=atol, label=f"{label}[{how}]")
    return one, eight, mesh, placed
