r"""Sequence parallelism: :func:`jaxrnn.scan` with the time axis split over a mesh axis.

The parallel methods evaluate a recurrence through compositions of per-step maps: the affine
maps :math:`h \mapsto a_t h + b_t` of a linear recurrence (``method="associative"``), and the
linear recurrences :math:`v_t = J_t v_{t-1} + c_t` that every Newton iteration and its
derivatives solve (``method="newton"``). Composition is associative, so a sequence cut into
:math:`n` chunks, one per device, is evaluated in three parts:

1. each device composes the maps of its own chunk (a local prefix scan), which gives its total
   map :math:`M_p = m_{\text{last}} \circ \dots \circ m_{\text{first}}`;
2. the :math:`n` total maps, one small pair per device and batch row, are exchanged (one
   ``psum``) and every device composes those of the devices before it,
   :math:`E_p = M_{p-1} \circ \dots \circ M_0` (the identity on the first device);
3. each device applies :math:`E_p` to the initial carry, which gives the carry entering its
   chunk, and the local prefixes to that.

In reverse the devices are taken in the opposite order. Derivatives follow by automatic
differentiation of the ``shard_map``: the exchange transposes to the same exchange, so the
backward pass is split over the devices the same way.

:class:`SeqAxis` holds the mesh axis and the direction and offers the collectives the methods
use; :func:`sequence_axis` finds the axis from ``xs``'s type or checks the one named;
:func:`run` pads the time axis to a multiple of the device count with masked steps (identity
maps) and runs the local evaluation under ``jax.shard_map``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from jaxrnn._sharding import named_sharding

__all__ = ["SeqAxis", "check_error_reporting", "run", "sequence_axis", "unsplit_time"]


class SeqAxis(NamedTuple):
    """A mesh axis that splits the time axis, inside ``jax.shard_map``.

    Attributes:
        name: the mesh axis's name.
        size: the number of devices along it.
        reverse: whether the steps run from the last device to the first: positions count in
            the order the steps are processed.
    """

    name: str
    size: int
    reverse: bool = False
    typed: bool = True  # shard_map(check_vma=True): values typed as varying or not

    def flipped(self) -> SeqAxis:
        """The same axis processed in the other direction."""
        return self._replace(reverse=not self.reverse)

    def position(self) -> jax.Array:
        """This device's place in the processing order, ``0 .. size - 1``."""
        index = jax.lax.axis_index(self.name)
        return self.size - 1 - index if self.reverse else index

    def is_first(self) -> jax.Array:
        """Whether this device's chunk is processed first (its first step sees the carry)."""
        return self.position() == 0

    def exchange(self, tree: Any) -> Any:
        """Every device's ``tree`` stacked in processing order along a new leading axis.

        One ``psum`` of copies placed at each device's position and zeros elsewhere (an
        ``all_gather`` that keeps the types of explicit meshes; a ``where``, not a product,
        so that ``-inf`` of log-space maps travels intact).
        """
        place = jnp.arange(self.size) == self.position()

        def gather(leaf):
            here = place.reshape((self.size,) + (1,) * leaf.ndim)
            if leaf.dtype == jnp.bool_:  # bools travel as int32
                return (
                    jax.lax.psum(jnp.where(here, leaf[None], False).astype(jnp.int32), self.name)
                    > 0
                )
            return jax.lax.psum(jnp.where(here, leaf[None], jnp.zeros((), leaf.dtype)), self.name)

        return jax.tree.map(gather, tree)

    def vary(self, tree: Any) -> Any:
        """``tree`` typed as varying over the axis (loop carries that become per-device)."""

        def one(x):
            if not self.typed or self.name in _varying(x):
                return x
            return jax.lax.pcast(x, self.name, to="varying")

        return jax.tree.map(one, tree)

    def exclusive(self, compose: Callable, total: Any, identity: Any) -> tuple[Any, Any]:
        """``(E_p, M)``: the composition of the ``total`` maps of the devices processed
        before this one (``identity`` on the first) and that of all of them.

        ``compose(earlier, later)`` composes two maps (pytrees); ``identity`` broadcasts
        against ``total``.
        """
        stacked = self.exchange(total)
        inclusive = jax.lax.associative_scan(compose, stacked, axis=0)
        before = jnp.maximum(self.position() - 1, 0)
        first = self.is_first()

        def pick(incl, one):
            earlier = jax.lax.dynamic_index_in_dim(incl, before, 0, keepdims=False)
            return jnp.where(first, jnp.zeros_like(earlier) + one, earlier)

        exclusive = jax.tree.map(pick, inclusive, identity)
        return exclusive, jax.tree.map(lambda v: v[-1], inclusive)

    def from_previous(self, last: jax.Array) -> jax.Array:
        """The ``last`` of the device processed just before this one (zeros on the first)."""
        return jax.lax.ppermute(last, self.name, self._perm(-1 if self.reverse else 1))

    def from_next(self, first: jax.Array) -> jax.Array:
        """The ``first`` of the device processed just after this one (zeros on the last)."""
        return jax.lax.ppermute(first, self.name, self._perm(1 if self.reverse else -1))

    def _perm(self, step: int) -> list[tuple[int, int]]:
        """Device ``i`` sends to ``i + step`` (none past either end)."""
        return [(i, i + step) for i in range(self.size) if 0 <= i + step < self.size]

    def maximum(self, x: jax.Array) -> jax.Array:
        """The largest ``x`` over the devices (a residual, a convergence test)."""
        return jax.lax.pmax(x, self.name)

    def from_last(self, x: jax.Array) -> jax.Array:
        """The ``x`` of the device processed last, on every device."""
        last = self.position() == self.size - 1
        return jax.lax.psum(jnp.where(last, x, jnp.zeros_like(x)), self.name)

    def gather(self, x: jax.Array) -> jax.Array:
        """The whole sequence in processing order from each device's chunk (time axis 0)."""
        stacked = self.exchange(x)  # (size, L, ...)
        return stacked.reshape((-1, *x.shape[1:]))

    def local(self, full: jax.Array, length: int) -> jax.Array:
        """This device's chunk of ``length`` steps of a whole sequence in processing order."""
        return jax.lax.dynamic_slice_in_dim(full, self.position() * length, length, 0)

    def on_whole(self, fn: Callable, *trees: Any) -> Any:
        """``fn`` of the whole sequences gathered from the chunks ``trees`` (time axis 0),
        and this device's chunk of its result: a sequential fallback, on every device."""
        length = jax.tree.leaves(trees)[0].shape[0]
        whole = self.vary(jax.tree.map(self.gather, trees))  # typed per device, as the carry
        return jax.tree.map(lambda v: self.local(v, length), fn(*whole))


def _varying(x) -> frozenset:
    """The manual mesh axes over which ``x`` varies (``shard_map``'s types)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return getattr(manual, "varying", frozenset())


# --- finding the axis ----------------------------------------------------------------------


def sequence_axis(xs: jax.Array, time_axis: int, named: str | None):
    """``(mesh, axis name)`` that splits the time axis, or ``(None, None)``.

    ``named`` (``jr.scan(..., sequence_axis=...)``) must be an axis of the mesh of ``xs``'s
    type or of the mesh set by ``jax.set_mesh``; otherwise the axis is read from the type of
    ``xs`` (explicit meshes), where a spec naming a mesh axis at the time position splits time.

    Raises:
        TypeError: ``named`` not a string.
        ValueError: ``named`` not an axis of the mesh (or no mesh).
    """
    sharding = named_sharding(xs)
    if named is not None:
        if not isinstance(named, str):
            raise TypeError(f"sequence_axis: expected a mesh axis name (str), got {named!r}")
        mesh = sharding.mesh if sharding is not None else jax.sharding.get_abstract_mesh()
        names = tuple(getattr(mesh, "axis_names", ()) or ())
        if named not in names:
            where = f"the mesh's axes are {names}" if names else "there is no mesh"
            raise ValueError(
                f"sequence_axis={named!r}: not an axis of the mesh ({where}); shard xs over it "
                f"or run under jax.set_mesh(mesh) with a mesh that has it"
            )
        return mesh, named
    if sharding is None:
        return None, None
    spec = tuple(sharding.spec) + (None,) * xs.ndim
    entry = spec[time_axis]
    if entry is None:
        return None, None
    if isinstance(entry, tuple):
        if len(entry) != 1:
            raise ValueError(
                f"xs: the time axis is split over several mesh axes {entry}; sequence "
                f"parallelism splits it over one"
            )
        entry = entry[0]
    return sharding.mesh, entry


def unsplit_time(xs: jax.Array, time_axis: int) -> jax.Array:
    """``xs`` resharded so its time axis is whole on every device (a sequential scan)."""
    sharding = named_sharding(xs)
    spec = list(tuple(sharding.spec) + (None,) * (xs.ndim - len(sharding.spec)))
    spec[time_axis] = None
    return jax.sharding.reshard(xs, NamedSharding(sharding.mesh, PartitionSpec(*spec)))


# --- running the local evaluation on every chunk -------------------------------------------


def check_error_reporting(on_failure: str) -> None:
    """Newton's ``on_failure="error"`` reports through ``jax.debug.callback``, which jax does
    not run inside a ``shard_map`` over part of a mesh whose other axes are ``Explicit``.

    Raises:
        ValueError: ``on_failure="error"`` there, naming the remedy.
    """
    mesh = jax.sharding.get_abstract_mesh()
    types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True)) if mesh.axis_names else {}
    explicit = [n for n, t in types.items() if t == jax.sharding.AxisType.Explicit]
    if on_failure == "error" and explicit:
        raise ValueError(
            f'on_failure="error" with the time axis split over devices and the mesh axes '
            f"{explicit} Explicit: jax cannot report a failure from inside such a program "
            f'(jax.debug.callback); use on_failure="sequential" (the default), or split only '
            f"the time axis"
        )


def _explicit(mesh) -> bool:
    return any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def _onto_time(x: jax.Array, mesh, name: str, like: jax.Array) -> jax.Array:
    """Time-major ``x`` split over ``name`` along axis 0 (explicit meshes), its other axes as
    the same axes of ``like`` (``xs``: the masks' axes are its leading ones)."""
    if not _explicit(mesh):
        return x
    sharding, ref = named_sharding(x), named_sharding(like)
    have = list(tuple(sharding.spec) if sharding is not None else ())
    have += [None] * (x.ndim - len(have))
    spec = list(tuple(ref.spec) if ref is not None else ())
    spec += [None] * (like.ndim - len(spec))
    want = [name, *spec[1 : x.ndim]]
    if have == want:
        return x
    return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(*want)))


def run(
    local: Callable,
    mesh,
    name: str,
    reverse: bool,
    xs,
    valid,
    flags,
    consts,
    mask_batch,
    typed: bool = True,
):
    """``local(axis, xs, valid, flags, consts) -> (carry, ys)`` on each device's chunk.

    ``xs`` ``(T, ...)``, ``valid`` and ``flags`` (``(T, *batch)`` bools or ``None``) are
    time-major (``mask_batch`` the batch shape of the masks); ``consts`` (params, carries)
    are the same on every device of the axis. ``T`` is padded to a multiple of the device
    count with masked steps: ``valid`` is False there,
    which the methods treat as identity maps (the carry passes unchanged, the output is zero),
    so the padding changes no value and no gradient. Returns the carry (the same on every
    device) and ``ys`` ``(T, ...)`` split over ``name``. ``typed=False`` runs the
    ``shard_map`` without its per-device types (``check_vma=False``): Newton's custom
    derivatives mix per-device and shared values in ways those types do not follow yet.
    """
    size = mesh.shape[name]
    num_steps = xs.shape[0]
    padded = math.ceil(num_steps / size) * size
    if padded != num_steps:
        if valid is None:
            valid = jnp.ones((num_steps, *mask_batch), bool)
        xs, valid = _pad(xs, padded), _pad(valid, padded)
        flags = None if flags is None else _pad(flags, padded)
    xs = _onto_time(xs, mesh, name, xs)
    valid, flags = (None if v is None else _onto_time(v, mesh, name, xs) for v in (valid, flags))
    axis = SeqAxis(name, size, reverse, typed)

    def body(xs, valid, flags, consts):
        return local(axis, xs, valid, flags, consts)

    time = PartitionSpec(name)
    specs = (time, None if valid is None else time, None if flags is None else time)
    mapped = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(*specs, PartitionSpec()),
        out_specs=(PartitionSpec(), time),
        axis_names={name},
        check_vma=typed,
    )
    carry, ys = mapped(xs, valid, flags, consts)
    if padded != num_steps:
        ys = jax.tree.map(lambda v: _unpad(v, num_steps), ys)
    return carry, ys


def _pad(x: jax.Array, length: int) -> jax.Array:
    """``x`` padded with zeros (``False``) along axis 0 to ``length`` steps."""
    widths = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths)


def _unpad(y: jax.Array, length: int) -> jax.Array:
    """The first ``length`` steps of ``y``; an uneven split cannot be a type, so under an
    explicit mesh the time axis is gathered first."""
    sharding = named_sharding(y)
    if sharding is not None and sharding.spec and sharding.spec[0] is not None:
        spec = PartitionSpec(None, *tuple(sharding.spec)[1:])
        y = jax.sharding.reshard(y, NamedSharding(sharding.mesh, spec))
    return y[:length]
