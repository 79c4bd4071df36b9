"""Sharding in types: what jaxrnn reads from the inputs' shardings under JAX's explicit meshes.

Since jax 0.10, ``jax.make_mesh`` builds meshes whose axes are ``Explicit``: an array's sharding
is part of its type (``jax.typeof(x).sharding``), every operation computes the sharding of its
result, and an operation whose result sharding is ambiguous is an error at trace time. Two
things an RNN does are ambiguous under such a mesh unless the library says what it means:

* **a scan's carry.** ``cell.initial_carry(batch_shape)`` makes zeros with no sharding, while
  the step's new carry, computed from a batch-sharded ``x_t``, is batch-sharded; ``lax.scan``
  requires the two types to be equal. The carry entering a scan is given the sharding of the
  batch axes of ``xs`` (:func:`shard_like_batch`).
* **a weight gradient.** ``x^T g`` sums over the sharded batch axis; JAX gives it the weight's
  sharding, which is undefined for a weight that was never put on the mesh (created outside it,
  or under ``jax.jit`` without ``jax.set_mesh``). Such parameters are put on the mesh of the
  inputs, replicated (:func:`onto_mesh`), so their gradients come out replicated.

Under ``Auto`` axes (``jax.sharding.Mesh``, or :func:`jaxrnn.train.data_mesh` with
``axis_types=AxisType.Auto``) the types carry no sharding: every function here returns its
input unchanged and the compiler propagates shardings as before.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

__all__ = [
    "axis_names",
    "batch_spec",
    "explicit_mesh",
    "like",
    "lookup",
    "named_sharding",
    "onto_mesh",
    "shard_like_batch",
    "unsplit_trailing",
    "varying_axes",
]


def named_sharding(x: Any):
    """The ``NamedSharding`` in ``x``'s type, or ``None`` (not an array, or no mesh).

    Outside ``jax.jit`` a concrete array's own sharding is read (it names the concrete mesh,
    which a transfer needs), with the axes that are not ``Explicit`` dropped from its spec, as
    its type drops them.
    """
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        sharding = x.sharding
    else:
        try:
            sharding = jax.typeof(x).sharding
        except (TypeError, AttributeError):
            return None
    if not isinstance(sharding, NamedSharding) or sharding.mesh.empty:
        return None
    types = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types, strict=True))

    def explicit(entry):
        names = entry if isinstance(entry, tuple) else (entry,)
        kept = tuple(n for n in names if n is not None and types[n] == AxisType.Explicit)
        return None if not kept else kept if isinstance(entry, tuple) else kept[0]

    spec = PartitionSpec(*(explicit(e) for e in sharding.spec))
    return sharding if spec == sharding.spec else NamedSharding(sharding.mesh, spec)


def explicit_mesh(*trees: Any):
    """The mesh that some leaf of ``trees`` is sharded over in its type, or ``None``.

    A leaf sharded over an ``Explicit`` axis names its mesh in its type; under ``Auto`` axes,
    or with no mesh at all, there is none.
    """
    for leaf in jax.tree.leaves(trees):
        sharding = named_sharding(leaf)
        if sharding is not None and any(p is not None for p in sharding.spec):
            return sharding.mesh
    return None


def onto_mesh(tree: Any, mesh) -> Any:
    """``tree`` with every array leaf that has no mesh in its type put on ``mesh``, replicated.

    Leaves already on a mesh (replicated or split over ``"model"``) keep their sharding.
    """
    if mesh is None:
        return tree

    def put(leaf):
        if not isinstance(leaf, jax.Array | jax.core.Tracer) or named_sharding(leaf) is not None:
            return leaf
        return _put(leaf, NamedSharding(mesh, PartitionSpec()))

    return jax.tree.map(put, tree)


def batch_spec(xs: jax.Array, batch_axes: tuple[int, ...]) -> tuple | None:
    """The mesh axes of ``xs``'s type at ``batch_axes``, or ``None`` where its type has none."""
    sharding = named_sharding(xs)
    if sharding is None:
        return None
    spec = tuple(sharding.spec) + (None,) * (xs.ndim - len(sharding.spec))
    return tuple(spec[a] for a in batch_axes)


def axis_names(spec: tuple) -> tuple[str, ...]:
    """The mesh axes a partition ``spec`` names, in order (an entry may be a tuple of axes)."""
    names = []
    for entry in spec:
        for name in entry if isinstance(entry, tuple) else (entry,):
            if name is not None and name not in names:
                names.append(name)
    return tuple(names)


def shard_like_batch(tree: Any, mesh, spec: tuple | None) -> Any:
    """Each leaf of ``tree`` (leading axes the batch) sharded as ``spec`` over its leading axes
    and replicated over the rest; ``tree`` unchanged when there is no ``mesh`` or ``spec``."""
    if mesh is None or spec is None:
        return tree

    def put(leaf):
        if not isinstance(leaf, jax.Array | jax.core.Tracer) or leaf.ndim < len(spec):
            return leaf
        full = PartitionSpec(*spec, *(None,) * (leaf.ndim - len(spec)))
        current = named_sharding(leaf)
        if current is not None and current.mesh == mesh and _same(current.spec, full, leaf.ndim):
            return leaf
        return _put(leaf, NamedSharding(mesh, full))

    return jax.tree.map(put, tree)


def _put(leaf, sharding: NamedSharding):
    """``leaf`` with ``sharding``: a cast of its type under ``jax.jit``, a transfer outside."""
    if isinstance(leaf, jax.core.Tracer):
        return jax.sharding.reshard(leaf, sharding)
    return jax.device_put(leaf, sharding)


def _same(a: PartitionSpec, b: PartitionSpec, ndim: int) -> bool:
    pad = (None,) * ndim
    return (tuple(a) + pad)[:ndim] == (tuple(b) + pad)[:ndim]


def like(tree: Any, reference: Any) -> Any:
    """``tree`` resharded, leaf by leaf, to the sharding in the type of ``reference``'s leaf.

    A step's new carry must have the type of the carry it replaces. Under a mesh whose
    ``"model"`` axis splits the weights' gate columns, the new carry comes out split over
    ``"model"`` along its features; this gathers it back to the sharding it entered with.
    A leaf whose sharding already matches, or which has no mesh, is returned as it is.
    """

    def put(leaf, ref):
        want = named_sharding(ref)
        if want is None or not isinstance(leaf, jax.Array | jax.core.Tracer):
            return leaf
        have = named_sharding(leaf)
        if have is not None and have.mesh == want.mesh and _same(have.spec, want.spec, leaf.ndim):
            return leaf
        return _put(leaf, want)

    return jax.tree.map(put, tree, reference)


def varying_axes(x: Any) -> frozenset:
    """The manual mesh axes over which ``x`` differs from device to device inside
    ``jax.shard_map`` (empty outside one): ``jax.typeof(x).vma`` before jax 0.10, its
    ``manual_axis_type.varying`` since."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", frozenset())
    return frozenset(vma)


def lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """``table[tokens]``, the rows of an embedding; under an explicit mesh unambiguous.

    A gather of a replicated table by batch-sharded ``tokens`` has no sharding JAX can infer:
    the rows come out sharded as ``tokens`` (the features as the table's last axis), and a
    mesh-less ``table`` is first put on the mesh, replicated, so its gradient is too.
    """
    mesh = explicit_mesh(tokens)
    if mesh is None:
        return table[tokens]
    table = onto_mesh(table, mesh)
    spec = batch_spec(tokens, tuple(range(tokens.ndim)))
    have = named_sharding(table)
    features = (tuple(have.spec) + (None,) * table.ndim)[table.ndim - 1] if have else None
    if features is not None and features in spec:
        features = None
    out = NamedSharding(mesh, PartitionSpec(*spec, features))
    return table.at[tokens].get(out_sharding=out)


def unsplit_trailing(x: jax.Array, n: int) -> jax.Array:
    """``x`` with its last ``n`` axes whole on every device (under an explicit mesh), so that a
    reshape can merge them; the leading axes keep their sharding. ``x`` itself when none of
    those axes is split or ``x`` is on no mesh."""
    sharding = named_sharding(x)
    if sharding is None:
        return x
    spec = (tuple(sharding.spec) + (None,) * x.ndim)[: x.ndim]
    if all(a is None for a in spec[x.ndim - n :]):
        return x
    return _put(x, NamedSharding(sharding.mesh, PartitionSpec(*spec[: x.ndim - n], *(None,) * n)))
