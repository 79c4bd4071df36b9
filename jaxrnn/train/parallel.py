"""Data parallelism: one mesh axis over every device, the batch split along it.

The same train step runs on one device or many: :func:`data_mesh` builds a one-axis
``jax.sharding.Mesh``, :func:`shard_batch` splits every leaf of a batch (and the recurrent carry)
along its first axis over that axis, and :func:`shard_state` replicates parameters and optimizer
state. XLA inserts the all-reduce of the gradients, and since the loss is the mean over the
global batch, 1 and 8 devices compute the same step.

On several hosts, call ``jax.distributed.initialize()`` at the start of every process (before
any other JAX call); :func:`data_mesh` then spans the devices of all processes, and each process
passes its own rows to :func:`shard_batch`, which assembles the global array with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

if TYPE_CHECKING:
    from jaxrnn.train.state import TrainState

__all__ = ["data_mesh", "shard_batch", "shard_state"]


def data_mesh(devices=None, axis_name: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    >>> import jaxrnn.train as jt
    >>> mesh = jt.data_mesh()
    >>> mesh.axis_names
    ('data',)
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array copied whole to every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def by_rows(mesh: Mesh, axis_name: str = "data") -> NamedSharding:
    """The sharding of an array split along its first axis over ``axis_name``."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_batch(batch: Any, mesh: Mesh, axis_name: str = "data") -> Any:
    """Split every leaf of ``batch`` along its first axis over ``mesh``.

    In a single process, ``batch`` is the global batch. With several processes
    (``jax.distributed.initialize``), each passes its own rows, and the global batch is their
    concatenation in process order (``jax.make_array_from_process_local_data``).

    Raises:
        ValueError: if a leaf's first axis is not divisible by the number of devices it is
            split over.
    """
    return split_rows(batch, mesh, axis_name, local=jax.process_count() > 1)


def split_rows(tree: Any, mesh: Mesh, axis_name: str, *, local: bool) -> Any:
    """Put every leaf of ``tree`` on ``mesh``, split by rows; ``local``: rows of this process."""
    sharding = by_rows(mesh, axis_name)
    num = mesh.shape[axis_name] // (jax.process_count() if local else 1)

    def put(x):
        if jnp.ndim(x) == 0 or jnp.shape(x)[0] % num:
            raise ValueError(
                f"shard_batch: the batch axis (first axis, got shape {jnp.shape(x)}) must be "
                f"divisible by the {num} {'local ' if local else ''}devices of mesh axis "
                f"{axis_name!r}"
            )
        if local:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree.map(put, tree)


def shard_state(state: TrainState, mesh: Mesh, axis_name: str = "data") -> TrainState:
    """Replicate params, optimizer state, step and key over ``mesh``; split the carry by rows.

    The carry has the global batch size (the same value in every process).
    """
    rep = replicated(mesh)
    return state._replace(
        params=jax.device_put(state.params, rep),
        opt_state=jax.device_put(state.opt_state, rep),
        step=jax.device_put(state.step, rep),
        rng=jax.device_put(state.rng, rep),
        carry=split_rows(state.carry, mesh, axis_name, local=False),
    )
