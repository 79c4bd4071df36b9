"""Checkpoints: atomic, verified saves of a :class:`~jaxrnn.train.TrainState` with orbax.

:class:`Checkpoints` wraps orbax-checkpoint's ``CheckpointManager`` (atomic saves, the last
``k`` kept) and stores next to each state a SHA-256 checksum of its contents, the run's
configuration and the metric :class:`~jaxrnn.train.History`. Restoring never falls back
silently: a checkpoint that cannot be restored exactly raises :class:`CheckpointError`.
Typed PRNG keys are stored as their raw ``uint32`` data and re-wrapped on restore.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxrnn.train.loop import History
from jaxrnn.train.state import TrainState

__all__ = ["CheckpointError", "Checkpoints"]


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored exactly (corrupt, incomplete or mismatched)."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _to_saveable(tree):
    """Typed PRNG keys -> their raw ``uint32`` data (what a checkpoint can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(tree):
    """The saveable structure of ``tree`` as ``ShapeDtypeStruct`` leaves, shardings kept."""

    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        # Abstract leaves without a placement (``jax.eval_shape``) go to this process's first
        # device, whatever mesh the checkpoint was saved from.
        sharding = getattr(x, "sharding", None) or default
        if _is_key(x):
            shape = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)

    return jax.tree.map(leaf, tree)


def _from_saveable(restored, template):
    def leaf(r, t):
        if _is_key(t):
            # A concrete key knows its implementation; an abstract one keeps it in its dtype
            # (a private attribute: fall back to the default implementation without it).
            if isinstance(t, jax.Array):
                impl = jax.random.key_impl(t)
            else:
                impl = getattr(t.dtype, "_impl", None) or jax.config.jax_default_prng_impl
            return jax.random.wrap_key_data(r, impl=impl)
        return r

    return jax.tree.map(leaf, restored, template)


def _checksum(saveable) -> str | None:
    """SHA-256 over every leaf's path, dtype, shape and bytes; ``None`` across hosts."""
    leaves = jax.tree_util.tree_flatten_with_path(saveable)[0]
    digest = hashlib.sha256()
    for path, leaf in leaves:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return None  # other hosts hold parts; tensorstore's own checks still apply
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


class Checkpoints:
    """Periodic, atomic checkpoints of a :class:`TrainState` with orbax-checkpoint.

    Each checkpoint is a directory ``<directory>/<step>`` written atomically by orbax's
    ``CheckpointManager`` (to a temporary name, renamed when complete; only the last
    ``max_to_keep`` are kept). Next to the state it stores JSON metadata: the step, a SHA-256
    checksum of the state, the run's ``config`` and the metric :class:`History` so far.

    Restoring never falls back silently: a checkpoint that cannot be read, or whose contents do
    not match their checksum, raises :class:`CheckpointError`; only a directory without any
    checkpoint means "start from scratch" (see :meth:`resume`).

    Args:
        directory: where checkpoints live (created if missing, unless ``create=False``).
        save_every: :func:`fit` saves when ``step % save_every == 0`` (and at the end).
        max_to_keep: how many of the latest checkpoints to keep (``None``: all).
        config: JSON-serialisable description of the run, stored with every checkpoint (for
            example the model's hyperparameters and vocabulary, to rebuild it for sampling).
        create: create ``directory`` if it does not exist; otherwise a missing directory is a
            ``FileNotFoundError``.

    >>> import tempfile, jax, jax.numpy as jnp, optax, jaxrnn.train as jt
    >>> state = jt.init_state({"w": jnp.ones(3)}, optax.adam(0.1), jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with jt.Checkpoints(tmp, config={"note": "demo"}) as ckpt:
    ...         _ = ckpt.save(state)
    ...     with jt.Checkpoints(tmp) as ckpt:
    ...         restored, history = ckpt.resume(state)
    ...         (ckpt.steps(), ckpt.metadata()["config"], restored.params["w"].tolist())
    ([0], {'note': 'demo'}, [1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 100,
        max_to_keep: int | None = 3,
        config: Mapping[str, Any] | None = None,
        create: bool = True,
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        if not create and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.save_every = save_every
        self.config = None if config is None else json.loads(json.dumps(config))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=create,
            enable_async_checkpointing=False,  # the next step donates the buffers being saved
            cleanup_tmp_directories=True,  # leftovers of a save interrupted by a crash
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # Context manager and cleanup.
    def close(self) -> None:
        """Wait for pending writes and release the manager."""
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """Whether :func:`fit` saves after reaching ``step``."""
        return step % self.save_every == 0

    def save(self, state: TrainState, *, history: History | None = None) -> bool:
        """Save ``state`` as the checkpoint of step ``int(state.step)`` (blocking).

        Returns:
            ``False`` if that step is already saved (nothing written), else ``True``.
        """
        step = int(state.step)
        if step in self._manager.all_steps():
            return False
        saveable = _to_saveable(state)
        meta = {
            "step": step,
            "checksum": _checksum(saveable),
            "config": self.config,
            "history": None if history is None else history.to_json(),
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(saveable), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return True

    def _step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _fail(self, step: int, reason: str, cause: BaseException | None = None):
        older = [s for s in self.steps() if s < step]
        hint = (
            f"remove {self._step_path(step)} to resume from step {older[-1]}"
            if older
            else "no older checkpoint exists; remove the directory to start from scratch"
        )
        detail = f" ({type(cause).__name__}: {str(cause)[:500]})" if cause is not None else ""
        raise CheckpointError(
            f"checkpoint of step {step} in {self.directory} cannot be restored: {reason}"
            f"{detail}. Refusing to continue from anything else; {hint}."
        ) from cause

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` (default: the latest).

        Raises:
            CheckpointError: if there is no checkpoint or its metadata is unreadable.
        """
        step = self._resolve(step)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            meta = dict(restored.meta)
        except Exception as e:
            self._fail(step, "its metadata is unreadable", e)
        if meta.get("step") != step:
            self._fail(step, f"its metadata names step {meta.get('step')}")
        return meta

    def _resolve(self, step: int | None) -> int:
        steps = self.steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory}")
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}: {steps}")
        return step

    def restore(self, template: TrainState, *, step: int | None = None) -> TrainState:
        """Restore checkpoint ``step`` (default: the latest) into the structure of ``template``.

        ``template`` is a :class:`TrainState` of the same structure (e.g. a freshly
        initialised one, or ``jax.eval_shape`` of one); the restored arrays get its shardings
        (leaves without one, as from ``jax.eval_shape``, land on this process's first device).

        Raises:
            CheckpointError: if there is no such checkpoint, it cannot be read, its structure
                differs from ``template``'s, or its contents fail the checksum.
        """
        step = self._resolve(step)
        meta = self.metadata(step)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template))),
            )
            saveable = restored.state
        except Exception as e:
            self._fail(step, "reading the state failed", e)
        expected = meta.get("checksum")
        if expected is not None and _checksum(saveable) != expected:
            self._fail(step, "its contents do not match the checksum saved with it (corrupt)")
        state = _from_saveable(saveable, template)
        if int(state.step) != step:
            self._fail(step, f"the state inside says step {int(state.step)}")
        return state

    def resume(self, template: TrainState) -> tuple[TrainState, History]:
        """The latest checkpoint and its history, or ``(template, History())`` if none exists.

        An empty directory is an explicit fresh start; a directory whose latest checkpoint is
        unreadable is an error (:class:`CheckpointError`), never a silent restart.
        """
        if self.latest_step() is None:
            return template, History()
        state = self.restore(template)
        history = self.metadata()["history"]
        return state, History() if history is None else History.from_json(history)
