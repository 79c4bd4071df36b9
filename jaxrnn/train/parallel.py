"""Parallelism: where every array of a training run lives on a mesh of devices, across hosts.

The same train step runs on one device or many, in one process or several:

* :func:`data_mesh` builds a one-axis mesh (``"data"``) over every device of every process:
  the batch and the recurrent carry are split along their first axis (rows), parameters and
  optimizer state are replicated, and XLA all-reduces the gradients. Since the loss is the
  mean over the global batch, 1 and 8 devices compute the same step.
* :func:`model_mesh` builds a two-axis mesh (``"data"``, ``"model"``) for models whose
  parameters and optimizer state outgrow one device (tensor parallelism): every array with an
  axis divisible by the ``"model"`` size is split along it (the last such axis: the
  gate/feature axis of the cells' ``x @ W`` layout, :func:`param_spec`), the optimizer state
  alike; batch rows are split over ``"data"``. XLA partitions the computation to match
  (GSPMD), with collectives over ``"model"`` inside the time loop; no device ever holds a
  whole matrix, its gradient or its optimizer state, so the memory of parameters, optimizer
  state and activations is divided by the ``"model"`` size. The arithmetic is the
  replicated step's.
* :func:`shard_batch` puts a batch on the mesh and :func:`shard_state` a
  :class:`~jaxrnn.train.TrainState`, both by the layout :func:`state_shardings` describes.

Both meshes have ``Explicit`` axes by default, as ``jax.make_mesh`` builds since jax 0.10: an
array's sharding is part of its type, and the train step, its carry and its gradients keep the
shardings above in their types (no ``out_sharding`` to name). ``axis_types=AxisType.Auto``
builds ``Auto`` axes instead, where the compiler propagates shardings. Any mesh with a
``"data"`` axis (and optionally ``"model"``) works the same, e.g. ``jax.make_mesh((2, 4),
("data", "model"))``, with or without ``jax.set_mesh``.

Several processes (hosts): call ``jax.distributed.initialize()`` first in every process (on
CPU, after ``jax.config.update("jax_cpu_collectives_implementation", "gloo")``). The meshes
above then span the devices of all processes. Every process runs the same program; each
passes its *own* rows to :func:`shard_batch` (:func:`local_rows` cuts them out of a batch every
process can compute), which assembles the global batch with
``jax.make_array_from_process_local_data``: the global batch is the processes' rows in process
order. A state :func:`shard_state` is given must be the same in every process (e.g. initialised
from the same key); each process then places the parts its devices hold. Metrics come out
replicated, so every process reads the same global values; :func:`local_copy` gives a process
a whole copy of global arrays (to evaluate or sample on its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxrnn.train._types import TrainState

__all__ = [
    "data_mesh",
    "local_batches",
    "local_copy",
    "local_rows",
    "model_mesh",
    "param_spec",
    "shard_batch",
    "shard_state",
    "state_shardings",
]

#: The mesh axis parameters are split along (:func:`model_mesh`).
MODEL_AXIS = "model"


#: The axis types of the meshes :func:`data_mesh` and :func:`model_mesh` build by default.
DEFAULT_AXIS_TYPES = AxisType.Explicit


def _axis_types(caller: str, axis_types: Any, num_axes: int) -> tuple[AxisType, ...]:
    """``axis_types`` (one ``AxisType`` for every axis, or one per axis) as a tuple.

    Raises:
        ValueError: naming ``axis_types`` if it is neither.
    """
    if isinstance(axis_types, AxisType):
        return (axis_types,) * num_axes
    if (
        isinstance(axis_types, tuple | list)
        and len(axis_types) == num_axes
        and all(isinstance(t, AxisType) for t in axis_types)
    ):
        return tuple(axis_types)
    raise ValueError(
        f"{caller}: axis_types must be a jax.sharding.AxisType (Explicit, Auto or Manual) or "
        f"a tuple of {num_axes} of them, one per mesh axis; got {axis_types!r}"
    )


def data_mesh(
    devices=None, axis_name: str = "data", *, axis_types: Any = DEFAULT_AXIS_TYPES
) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    Args:
        devices: default ``jax.devices()``, every device of every process, in that order.
        axis_name: the name of the axis (the batch rows are split over it).
        axis_types: ``jax.sharding.AxisType.Explicit`` (default, as ``jax.make_mesh``
            builds): the sharding is part of every array's type, checked while tracing, and
            results (gradients, the carry) keep the shardings jaxrnn gives them.
            ``AxisType.Auto`` (what ``jax.sharding.Mesh`` builds, and these functions did
            before): the compiler propagates shardings; for a loss with operations whose
            result sharding JAX cannot infer under explicit axes. One type, or a tuple of one.

    Raises:
        ValueError: if ``axis_types`` is not an ``AxisType`` or a tuple of one.

    >>> import jaxrnn.train as jt
    >>> mesh = jt.data_mesh()
    >>> mesh.axis_names, mesh.axis_types
    (('data',), (Explicit,))
    """
    types = _axis_types("data_mesh", axis_types, 1)
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,), axis_types=types)


def model_mesh(
    model: int, devices=None, *, axis_name: str = "data", axis_types: Any = DEFAULT_AXIS_TYPES
) -> Mesh:
    """A two-axis mesh ``(axis_name, "model")`` of shape ``(len(devices) // model, model)``.

    Parameters and optimizer state are split ``model`` ways along the ``"model"`` axis (see
    :func:`param_spec`); batch rows are split ``len(devices) // model`` ways along the other.
    Devices are laid out in ``jax.devices()`` order (process by process), ``model`` consecutive
    ones per row of the mesh: with ``model`` at most the devices of one process, the
    collectives of every time step stay within a host, and only the gradient reduction crosses
    hosts.

    Args:
        model: how many ways parameters are split; must divide the number of devices.
        devices: default every device of every process.
        axis_name: the name of the other (data) axis.
        axis_types: ``AxisType.Explicit`` (default) or ``AxisType.Auto`` for both axes, or a
            tuple of two, as for :func:`data_mesh`.

    Raises:
        ValueError: if ``model`` does not divide the number of devices, or ``axis_types`` is
            not an ``AxisType`` or a tuple of two.

    >>> import jaxrnn.train as jt
    >>> mesh = jt.model_mesh(1)
    >>> mesh.axis_names, mesh.shape["model"], mesh.axis_types
    (('data', 'model'), 1, (Explicit, Explicit))
    """
    types = _axis_types("model_mesh", axis_types, 2)
    devices = jax.devices() if devices is None else list(devices)
    if isinstance(model, bool) or not isinstance(model, int) or model < 1:
        raise ValueError(f"model_mesh: model must be a positive int, got {model!r}")
    if len(devices) % model:
        raise ValueError(f"model_mesh: model={model} does not divide the {len(devices)} devices")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // model, model)
    return Mesh(grid, (axis_name, MODEL_AXIS), axis_types=types)


# --------------------------------------------------------------------------------------------
# Layout: which mesh axes split rows, and how a parameter is split.


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array copied whole to every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def by_rows(mesh: Mesh, axis_name: str = "data") -> NamedSharding:
    """The sharding of an array split along its first axis over ``axis_name``."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def param_spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """How a parameter (or optimizer-state array) of ``shape`` is split on ``mesh``.

    On a mesh without a ``"model"`` axis, or one of size 1: replicated, ``P()``.
    Otherwise along the last axis whose length the ``"model"`` size divides: for the cells'
    ``(in, gates * hidden)`` matrices and ``(gates * hidden,)`` biases, the gate/feature axis;
    an array without such an axis (a scalar, a vocabulary of odd size) stays replicated. The
    rule depends on the shape only, so the optimizer's moments are split as their parameters.

    >>> import jaxrnn.train as jt
    >>> from jax.sharding import AbstractMesh
    >>> mesh = AbstractMesh((2, 4), ("data", "model"))  # shapes only: no devices needed
    >>> jt.param_spec((8, 64), mesh), jt.param_spec((8, 6), mesh), jt.param_spec((), mesh)
    (P(None, 'model'), P('model',), P())
    >>> jt.param_spec((8, 64), jt.data_mesh())
    P()
    """
    size = dict(mesh.shape).get(MODEL_AXIS, 1)
    if size > 1:
        for axis in reversed(range(len(shape))):
            if shape[axis] % size == 0:
                return PartitionSpec(*([None] * axis), MODEL_AXIS)
    return PartitionSpec()


def _param_sharding(leaf, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, param_spec(tuple(np.shape(leaf)), mesh))


def state_shardings(state: TrainState, mesh: Mesh, axis_name: str = "data") -> TrainState:
    """The sharding of every leaf of ``state`` on ``mesh``: a :class:`TrainState` of them.

    Step and key are replicated; the carry is split by rows like the batch; parameters and
    optimizer state are replicated on a :func:`data_mesh` and split by :func:`param_spec` on a
    :func:`model_mesh`. ``state`` may be abstract (``jax.eval_shape``), e.g. to build a
    template for :meth:`~jaxrnn.train.Checkpoints.restore`.

    >>> import jax, jax.numpy as jnp, optax, jaxrnn.train as jt
    >>> state = jt.init_state({"w": jnp.ones((2, 4))}, optax.sgd(0.1), jax.random.key(0))
    >>> jt.state_shardings(state, jt.data_mesh()).params["w"].spec
    P()
    """
    rep, rows = replicated(mesh), by_rows(mesh, axis_name)
    if MODEL_AXIS in mesh.axis_names:
        params = jax.tree.map(lambda x: _param_sharding(x, mesh), state.params)
        opt_state = jax.tree.map(lambda x: _param_sharding(x, mesh), state.opt_state)
    else:
        params = jax.tree.map(lambda _: rep, state.params)
        opt_state = jax.tree.map(lambda _: rep, state.opt_state)
    return type(state)(
        params,
        opt_state,
        jax.tree.map(lambda _: rep, state.step),
        jax.tree.map(lambda _: rep, state.rng),
        jax.tree.map(lambda _: rows, state.carry),
    )


# --------------------------------------------------------------------------------------------
# Putting arrays on a mesh that may span processes.


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _same_axis_types(x: jax.Array, sharding: NamedSharding) -> bool:
    """``x`` is on a mesh with the axis types of ``sharding``'s. An explicit mesh's sharding is
    part of an array's type: an array on the same devices but under ``Auto`` axes, or on no
    mesh at all (one device), is moved, so that it has the type a compiled step expects."""
    mesh = getattr(x.sharding, "mesh", None)
    if mesh is None:
        return AxisType.Explicit not in tuple(sharding.mesh.axis_types)
    return getattr(mesh, "axis_types", None) == sharding.mesh.axis_types


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x``, the same value in every process, as a global array with ``sharding``.

    An array already there is returned as is; one already spread over several processes is
    re-sharded by a compiled copy (a collective: every process must call this); anything else
    is copied from this process's value (each process places the parts its devices hold).
    """
    if isinstance(x, jax.Array):
        if x.sharding.is_equivalent_to(sharding, x.ndim) and _same_axis_types(x, sharding):
            return x
        if not x.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=sharding)(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        if _is_key(x):  # host copies hold raw key data: place the data, wrap it again
            data = put_global(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        x = np.asarray(x)
    return jax.device_put(x, sharding)


def shard_batch(batch: Any, mesh: Mesh, axis_name: str = "data") -> Any:
    """Split every leaf of ``batch`` along its first axis over ``mesh``.

    In a single process, ``batch`` is the global batch. With several processes
    (``jax.distributed.initialize``), each passes its own rows (:func:`local_rows`), and the
    global batch is their concatenation in process order
    (``jax.make_array_from_process_local_data``).

    Raises:
        ValueError: if a leaf's first axis is not divisible by the number of devices it is
            split over.
    """
    return split_rows(batch, mesh, axis_name, local=jax.process_count() > 1)


def check_rows(
    caller: str, name: str, tree: Any, mesh: Mesh, axis_name: str = "data", *, local: bool = False
) -> None:
    """Every leaf of ``tree`` has a first axis the devices of ``axis_name`` divide.

    The check behind :func:`shard_batch` (so :func:`fit`) and the steps of
    :func:`~jaxrnn.train.make_train_step` compiled for a mesh: a one-line ``ValueError`` naming
    the leaf, its shape and the number of devices, where JAX would raise its own
    ``IndivisibleError`` (or fail inside the compiled step).

    Args:
        caller: the function named first in the message.
        name: the argument ``tree`` is (``"batch"``, ``"state.carry"``), named with the leaf.
        tree: the arrays (anything with a shape).
        mesh: the mesh the rows are split over.
        axis_name: the mesh axis that splits the rows.
        local: ``tree`` holds this process's rows only (of several processes).

    Raises:
        ValueError: if a leaf is a scalar, or its first axis is not divisible.
    """
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"{caller}: axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}"
        )
    num = max(1, mesh.shape[axis_name] // (jax.process_count() if local else 1))
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = jnp.shape(x)
        if len(shape) == 0 or shape[0] % num:
            raise ValueError(
                f"{caller}: the batch axis of {name}{jax.tree_util.keystr(path)} (first axis, "
                f"got shape {shape}) must be divisible by the {num} "
                f"{'local ' if local else ''}devices of mesh axis {axis_name!r}"
            )


def split_rows(tree: Any, mesh: Mesh, axis_name: str, *, local: bool) -> Any:
    """Put every leaf of ``tree`` on ``mesh``, split by rows; ``local``: rows of this process."""
    sharding = by_rows(mesh, axis_name)
    check_rows("shard_batch", "batch", tree, mesh, axis_name, local=local)

    def put(x):
        if local:
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                return put_global(x, sharding)  # already global
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return put_global(x, sharding)

    return jax.tree.map(put, tree)


def shard_state(state: TrainState, mesh: Mesh, axis_name: str = "data") -> TrainState:
    """Put ``state`` on ``mesh`` as :func:`state_shardings` describes.

    The carry has the global batch size; with several processes, ``state`` must be the same
    in every process (each places the parts its devices hold). A state already on ``mesh`` (a
    step's output, a checkpoint restored onto a sharded template) is left where it is, or
    re-sharded if its layout differs.
    """
    shardings = state_shardings(state, mesh, axis_name)
    return jax.tree.map(put_global, state, shardings)


def local_rows(batch: Any, mesh: Mesh, axis_name: str = "data") -> Any:
    """The rows of ``batch`` (a global batch) that this process feeds to :func:`shard_batch`.

    With one process, the whole batch. With several, the rows the devices of this process hold
    when the batch is split over ``mesh``: for a mesh in ``jax.devices()`` order (as
    :func:`data_mesh` and :func:`model_mesh` build), process ``p`` of ``P`` gets rows
    ``[p * B / P, (p + 1) * B / P)``. For data every process can compute cheaply (like
    :class:`jaxrnn.data.TextBatches`); a process that reads only its own shard of a dataset
    passes those rows to :func:`shard_batch` directly.

    >>> import jax.numpy as jnp, jaxrnn.train as jt
    >>> jt.local_rows({"x": jnp.arange(4)}, jt.data_mesh())["x"].tolist()  # one process
    [0, 1, 2, 3]
    """
    if jax.process_count() == 1:
        return batch
    sharding = by_rows(mesh, axis_name)

    def cut(x):
        n = jnp.shape(x)[0]
        spans = {
            index[0].indices(n)[:2]
            for index in sharding.addressable_devices_indices_map((n,)).values()
        }
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        if sum(e - s for s, e in spans) != hi - lo:
            raise ValueError(
                "local_rows: the devices of this process hold rows that are not contiguous "
                "in this mesh; order the mesh's devices by process (as jax.devices() does)"
            )
        return x[lo:hi]

    return jax.tree.map(cut, batch)


def local_batches(
    batches: Callable[[int], Any], mesh: Mesh | None, axis_name: str = "data"
) -> Callable[[int], Any]:
    """``batches`` (``step -> global batch``) as this process feeds it: its :func:`local_rows`.

    With one process, ``batches`` itself.

    Raises:
        ValueError: with several processes and no ``mesh`` (each process would train alone).

    >>> import jaxrnn.train as jt
    >>> batches = jt.local_batches(lambda step: {"x": [step] * 4}, jt.data_mesh())
    >>> batches(3)
    {'x': [3, 3, 3, 3]}
    """
    if jax.process_count() == 1:
        return batches
    if mesh is None:
        raise ValueError(
            f"local_batches: {jax.process_count()} processes need a mesh over the devices of "
            "all of them (and a batch size those devices divide)"
        )
    return lambda step: local_rows(batches(step), mesh, axis_name)


def local_copy(tree: Any) -> Any:
    """A whole copy of every array of ``tree`` on this process (to evaluate or sample locally).

    Arrays this process holds whole (one process; replicated arrays) are taken from its first
    device holding them; arrays split over processes are gathered (a collective: every process
    must call this). Other leaves are returned as they are.
    """

    def copy(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        from jax.experimental import multihost_utils

        if _is_key(x):
            data = multihost_utils.process_allgather(jax.random.key_data(x), tiled=True)
            return jax.random.wrap_key_data(jnp.asarray(data), impl=jax.random.key_impl(x))
        return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(copy, tree)
