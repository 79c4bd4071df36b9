r"""Training: a pure train state, a compiled train step, a fit loop, checkpoints, data parallelism.

The pieces, from the bottom up:

* :class:`TrainState` ``(params, opt_state, step, rng, carry)``: everything a run needs to
  continue, including the recurrent ``carry`` passed between chunks of a long stream and the
  PRNG key, so a run restored from a checkpoint continues bit for bit;
* :func:`default_optimizer`: global-norm clipping, then AdamW with linear warm-up and cosine
  decay (optax);
* :func:`make_train_step`: ``train_step(state, batch) -> (state, metrics)``, jit-compiled with
  the state's buffers donated. The loss is ``loss_fn(params, carry, batch, key) ->
  (loss, carry)``; the incoming carry is wrapped in ``jax.lax.stop_gradient``
  (:func:`truncated`), so each step is one chunk of *truncated* backpropagation through time:
  values flow from chunk to chunk, gradients stop at chunk boundaries;
* :func:`fit`: the loop, with a ``tqdm`` progress bar (loss, throughput), periodic evaluation,
  periodic checkpoints and a :class:`History` of metrics for plots;
* :class:`Checkpoints`: orbax-checkpoint's ``CheckpointManager`` (atomic saves, the last ``k``
  kept), plus a checksum of the state and a clear :class:`CheckpointError` when a checkpoint
  cannot be restored exactly;
* data parallelism (:func:`data_mesh`, :func:`shard_batch`, :func:`shard_state`): the same
  train step with the batch split over devices and parameters replicated;
* a character-level language model as pure functions (:func:`char_lm`), its loss
  (:func:`lm_loss`), evaluation (:func:`evaluate_lm`), sampling with ``lax.scan``
  (:func:`sample`) and the end-to-end :func:`train_char_lm` behind ``python -m jaxrnn demo``.

Truncated BPTT (TBPTT) over a stream cut into chunks :math:`x^{(1)}, x^{(2)}, \dots` of
``seq_len`` steps: chunk :math:`k` starts from the carry :math:`a_k` where chunk :math:`k - 1`
ended, and its loss :math:`L_k(\theta, a_k)` is differentiated with :math:`a_k` held constant,

.. math::

    \theta \leftarrow \theta - \eta \, \frac{\partial L_k(\theta, \operatorname{sg}(a_k))}
    {\partial \theta},

where :math:`\operatorname{sg}` is ``stop_gradient``. The cost of a step is that of one chunk,
however long the stream.

Data parallelism on several devices (or hosts)::

    mesh = jr.train.data_mesh()                 # every device, one axis called "data"
    step = jr.train.make_train_step(loss_fn, optimizer, mesh=mesh)
    state, history = jr.train.fit(state, step, batches, num_steps, mesh=mesh)

The batch (and the carry) is split along its first axis over the mesh, the parameters and
optimizer state are replicated, and XLA inserts the all-reduce of the gradients: the loss is the
mean over the global batch, so 1 and 8 devices compute the same step. On several hosts, call
``jax.distributed.initialize()`` at the start of every process (before any other JAX call);
``data_mesh()`` then spans the devices of all processes, each process passes its own slice of
the global batch to ``fit`` (``batches(step)`` returning ``global_batch / process_count`` rows),
and :func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``. Checkpoints are written by all processes together
(orbax coordinates them), to a directory every host can reach.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from jaxrnn import data as _data
from jaxrnn import losses as _losses
from jaxrnn.cells import gru, lstm, simple_rnn
from jaxrnn.layers import rnn

__all__ = [
    "CELLS",
    "CharLM",
    "CharLMConfig",
    "CharLMParams",
    "CharLMRun",
    "CheckpointError",
    "Checkpoints",
    "History",
    "TrainState",
    "bits_per_char",
    "char_lm",
    "cross_entropy",
    "data_mesh",
    "default_optimizer",
    "evaluate_lm",
    "fit",
    "init_state",
    "lm_loss",
    "load_char_lm",
    "make_train_step",
    "run_metadata",
    "sample",
    "shard_batch",
    "shard_state",
    "train_char_lm",
    "truncated",
]

Batch = Any
Metrics = dict[str, jax.Array]
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, Any]]


# --------------------------------------------------------------------------------------------
# State, optimizer, train step.


class TrainState(NamedTuple):
    """Everything a training run needs to continue: a pytree, checkpointed as a whole.

    Attributes:
        params: the model parameters.
        opt_state: the optimizer state.
        step: number of steps taken, an int32 scalar; also the data position (the batch of
            step ``s`` is ``batches(s)`` in :func:`fit`).
        rng: a ``jax.random`` key, split at every step (dropout and other noise).
        carry: the recurrent state at the end of the last chunk, passed to the next chunk
            (truncated BPTT); ``()`` for models without one. Every leaf has the batch as its
            first axis.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array
    carry: Any = ()


def init_state(
    params: Any, optimizer: optax.GradientTransformation, key: jax.Array, carry: Any = ()
) -> TrainState:
    """A :class:`TrainState` at step 0.

    >>> import jax, jax.numpy as jnp, optax
    >>> import jaxrnn.train as jt
    >>> state = jt.init_state({"w": jnp.ones(3)}, optax.sgd(0.1), jax.random.key(0))
    >>> int(state.step), state.carry
    (0, ())
    """
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    return TrainState(params, opt_state, jnp.zeros((), jnp.int32), key, carry)


def _is_matrix(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def default_optimizer(
    learning_rate: float = 3e-3,
    total_steps: int = 1000,
    *,
    warmup_steps: int | None = None,
    clip_norm: float = 1.0,
    weight_decay: float = 1e-4,
    final_fraction: float = 0.1,
) -> optax.GradientTransformation:
    """A robust default for recurrent networks: clip the global gradient norm, then AdamW.

    The learning rate rises linearly for ``warmup_steps`` (default: a tenth of the run, at
    most 100 steps) from ``learning_rate / warmup_steps`` to ``learning_rate``, then follows a
    cosine down to ``final_fraction * learning_rate`` at ``total_steps`` and stays there.
    Clipping the global norm (Pascanu et al. 2013) tames the exploding gradients of long
    recurrences; weight decay applies to matrices only (not to biases or peephole vectors).

    Args:
        learning_rate: the peak learning rate.
        total_steps: the length of the schedule.
        warmup_steps: length of the linear warm-up.
        clip_norm: the maximum global gradient norm.
        weight_decay: decoupled weight decay of AdamW.
        final_fraction: the final learning rate, as a fraction of the peak.

    Returns:
        An ``optax.GradientTransformation``.

    >>> import jax.numpy as jnp, jaxrnn.train as jt
    >>> opt = jt.default_optimizer(1e-2, total_steps=100)
    >>> state = opt.init({"w": jnp.ones((2, 2))})
    """
    if warmup_steps is None:
        warmup_steps = max(1, min(100, total_steps // 10))
    warmup_steps = max(1, warmup_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=learning_rate / warmup_steps,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=learning_rate * final_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(schedule, weight_decay=weight_decay, mask=_is_matrix),
    )


def truncated(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` with its incoming carry detached: gradients stop at the chunk boundary.

    ``truncated(loss_fn)(params, carry, batch, key)`` computes the same values as
    ``loss_fn(params, carry, batch, key)``, but its derivative with respect to ``carry`` is
    zero, so differentiating a sequence of chunks never backpropagates from one chunk into the
    previous one.

    >>> import jax, jax.numpy as jnp, jaxrnn.train as jt
    >>> loss = lambda w, h, x, key: (jnp.sum(w * h * x), h * x)
    >>> jax.grad(lambda h: loss(2.0, h, 3.0, None)[0])(1.0)
    Array(6., dtype=float32, weak_type=True)
    >>> jax.grad(lambda h: jt.truncated(loss)(2.0, h, 3.0, None)[0])(1.0)
    Array(0., dtype=float32, weak_type=True)
    """

    @functools.wraps(loss_fn)
    def wrapped(params, carry, batch, key):
        return loss_fn(params, jax.lax.stop_gradient(carry), batch, key)

    return wrapped


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build ``train_step(state, batch) -> (state, metrics)``, jit-compiled.

    One step splits ``state.rng``, computes the loss and its gradient with respect to the
    parameters, ``(loss, carry), grads = value_and_grad(truncated(loss_fn))(params,
    state.carry, batch, key)``, applies the optimizer, and stores the new carry (detached) for
    the next chunk.

    Args:
        loss_fn: ``loss_fn(params, carry, batch, key) -> (loss, new_carry)``, a scalar loss
            (mean over the batch) and the carry for the next chunk (return ``carry`` unchanged,
            e.g. ``()``, for a model without one).
        optimizer: an optax optimizer, e.g. :func:`default_optimizer`.
        mesh: if given, compile for data parallelism over ``mesh``: the batch and carry split
            along their first axis over ``axis_name``, everything else replicated (put the
            state and batches there with :func:`shard_state` and :func:`shard_batch`, or let
            :func:`fit` do it).
        axis_name: the mesh axis of the batch.
        donate: donate the input state's buffers to the output state (the state passed in is
            invalid afterwards; saves memory and copies).

    Returns:
        The compiled step; ``metrics`` holds the scalars ``loss`` and ``grad_norm`` (before
        clipping).

    >>> import jax, jax.numpy as jnp, optax, jaxrnn.train as jt
    >>> def loss_fn(w, carry, batch, key):
    ...     return jnp.mean((batch["x"] * w - batch["y"]) ** 2), carry
    >>> step = jt.make_train_step(loss_fn, optax.sgd(0.1))
    >>> state = jt.init_state(jnp.zeros(()), optax.sgd(0.1), jax.random.key(0))
    >>> batch = {"x": jnp.arange(4.0), "y": 3 * jnp.arange(4.0)}
    >>> for _ in range(50):
    ...     state, metrics = step(state, batch)
    >>> round(float(state.params), 4), int(state.step)
    (3.0, 50)
    """
    grad_fn = jax.value_and_grad(truncated(loss_fn), has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, key = jax.random.split(state.rng)
        (loss, carry), grads = grad_fn(state.params, state.carry, batch, key)
        # optax's bias corrections mix int32 step counts with floats, which JAX's strict
        # dtype promotion rejects; keep the user's mode everywhere else.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        new_state = TrainState(params, opt_state, state.step + 1, rng, jax.lax.stop_gradient(carry))
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    kwargs: dict[str, Any] = {"donate_argnums": (0,)} if donate else {}
    if mesh is not None:
        state_sharding, batch_sharding, replicated = _shardings(mesh, axis_name)
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, replicated)
    return jax.jit(train_step, **kwargs)


# --------------------------------------------------------------------------------------------
# Data parallelism.


def data_mesh(devices=None, axis_name: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    >>> import jaxrnn.train as jt
    >>> mesh = jt.data_mesh()
    >>> mesh.axis_names
    ('data',)
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def _shardings(mesh: Mesh, axis_name: str):
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(axis_name))
    state = TrainState(replicated, replicated, replicated, replicated, batch)
    return state, batch, replicated


def shard_batch(batch: Batch, mesh: Mesh, axis_name: str = "data") -> Batch:
    """Split every leaf of ``batch`` along its first axis over ``mesh``.

    In a single process, ``batch`` is the global batch. With several processes
    (``jax.distributed.initialize``), each passes its own rows, and the global batch is their
    concatenation in process order (``jax.make_array_from_process_local_data``).

    Raises:
        ValueError: if a leaf's first axis is not divisible by the number of devices it is
            split over.
    """
    return _split_rows(batch, mesh, axis_name, local=jax.process_count() > 1)


def _split_rows(tree, mesh: Mesh, axis_name: str, *, local: bool):
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
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
    state_sharding, _, _ = _shardings(mesh, axis_name)
    rep = state_sharding.params
    return TrainState(
        jax.device_put(state.params, rep),
        jax.device_put(state.opt_state, rep),
        jax.device_put(state.step, rep),
        jax.device_put(state.rng, rep),
        _split_rows(state.carry, mesh, axis_name, local=False),
    )


# --------------------------------------------------------------------------------------------
# Checkpoints.


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

    def leaf(x):
        sharding = getattr(x, "sharding", None)
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
        initialised one, or ``jax.eval_shape`` of one); the restored arrays get its shardings.

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


# --------------------------------------------------------------------------------------------
# The training loop.


@dataclasses.dataclass
class History:
    """Metrics recorded by :func:`fit`, as parallel lists, ready for plotting.

    ``train`` holds ``"step"`` and one list per training metric (``"loss"``,
    ``"grad_norm"``), one entry per step; ``eval`` holds ``"step"`` and the metrics of each
    evaluation. For example ``plt.plot(h.train["step"], h.train["loss"])``.
    """

    train: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {"step": []})
    eval: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {"step": []})

    @staticmethod
    def _log(table: dict[str, list], step: int, metrics: Mapping[str, Any]) -> None:
        table.setdefault("step", []).append(int(step))
        for name, value in metrics.items():
            table.setdefault(name, []).append(float(value))

    def log_train(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append the metrics of training step ``step``."""
        self._log(self.train, step, metrics)

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append an evaluation made after ``step`` steps."""
        self._log(self.eval, step, metrics)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {"train": self.train, "eval": self.eval}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_json`."""
        return cls(
            {k: list(v) for k, v in obj["train"].items()},
            {k: list(v) for k, v in obj["eval"].items()},
        )


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    batches: Callable[[int], Batch],
    num_steps: int,
    *,
    eval_fn: Callable[[TrainState], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    checkpoints: Checkpoints | None = None,
    history: History | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    progress: bool = True,
    tokens_per_step: int | None = None,
    log_every: int = 10,
    callback: Callable[[int, TrainState, Metrics], None] | None = None,
    desc: str = "train",
) -> tuple[TrainState, History]:
    """Train from ``state.step`` until ``num_steps`` steps have been taken.

    Step ``s`` trains on ``batches(s)``, so the data position is the step: a run resumed from a
    checkpoint of step ``s`` sees the same batches, keys and carries as an uninterrupted run and
    computes the same losses, step for step.

    Args:
        state: the state to start from (donated to the first step when ``train_step`` donates:
            do not use it afterwards).
        train_step: from :func:`make_train_step`.
        batches: ``batches(step) -> batch``, a pure function of the step (e.g.
            :class:`jaxrnn.data.TextBatches`).
        num_steps: the total number of steps to reach (not the number of steps to add).
        eval_fn: ``eval_fn(state) -> {name: value}``, called every ``eval_every`` steps and at
            the end; results go to ``history.eval``.
        eval_every: evaluation period in steps (0: only at the end).
        checkpoints: save every ``checkpoints.save_every`` steps and at the end.
        history: metrics so far (e.g. from :meth:`Checkpoints.resume`); appended to.
        mesh: if given, the state and every batch are sharded over it (data parallelism).
        axis_name: the mesh axis of the batch.
        progress: show a ``tqdm`` progress bar (on stderr) with the loss and throughput.
        tokens_per_step: tokens (or examples) per step, to show the throughput in tokens/s.
        log_every: metrics are fetched from the device every ``log_every`` steps (and before
            each evaluation or checkpoint), so the host does not wait for every step.
        callback: ``callback(step, state, metrics)`` after every step.
        desc: label of the progress bar.

    Returns:
        ``(state, history)``.
    """
    history = History() if history is None else history
    start = int(state.step)
    if mesh is not None:
        state = shard_state(state, mesh, axis_name)
    pending: list[tuple[int, Metrics]] = []
    bar = tqdm(
        total=num_steps,
        initial=start,
        desc=desc,
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    t0 = time.perf_counter()
    last_saved = last_eval = None

    def flush(step: int) -> None:
        if not pending:
            return
        for s, m in jax.device_get(pending):
            history.log_train(s, m)
        pending.clear()
        postfix = {"loss": f"{history.train['loss'][-1]:.4f}"}
        elapsed = time.perf_counter() - t0
        if tokens_per_step and elapsed > 0:
            postfix["tok/s"] = f"{(step - start) * tokens_per_step / elapsed:,.0f}"
        bar.set_postfix(postfix, refresh=False)

    try:
        for s in range(start, num_steps):
            batch = batches(s)
            if mesh is not None:
                batch = shard_batch(batch, mesh, axis_name)
            state, metrics = train_step(state, batch)
            step = s + 1
            pending.append((step, metrics))
            save = checkpoints is not None and checkpoints.should_save(step)
            evaluate = eval_fn is not None and eval_every > 0 and step % eval_every == 0
            if save or evaluate or len(pending) >= log_every or step == num_steps:
                flush(step)
            if evaluate:
                history.log_eval(step, eval_fn(state))
                last_eval = step
            if save:
                checkpoints.save(state, history=history)
                last_saved = step
            bar.update(1)
            if callback is not None:
                callback(step, state, metrics)
        end = int(state.step)
        flush(end)
        evaluated = history.eval.get("step") and history.eval["step"][-1] == end
        if eval_fn is not None and last_eval != end and not evaluated:
            history.log_eval(end, eval_fn(state))
        if checkpoints is not None and last_saved != end:
            checkpoints.save(state, history=history)
    finally:
        bar.close()
    return state, history


# --------------------------------------------------------------------------------------------
# A character-level language model as pure functions.

#: ``--cell`` choices: name -> (cell factory, keyword arguments).
CELLS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "lstm": (lstm, {}),
    "gru": (gru, {}),
    "rnn": (simple_rnn, {}),
    "peephole": (lstm, {"peephole": True}),
    "coupled": (lstm, {"coupled": True}),
}


class CharLMParams(NamedTuple):
    """Parameters of :func:`char_lm`.

    ``embed (V, E)``, ``rnn`` (the :func:`jaxrnn.rnn` stack's tuple, one entry per layer),
    ``w_out (H, V)``, ``b_out (V,)``.
    """

    embed: jax.Array
    rnn: Any
    w_out: jax.Array
    b_out: jax.Array


class CharLM(NamedTuple):
    """A character-level language model as pure functions (see :func:`char_lm`).

    Attributes:
        init: ``init(key) -> CharLMParams``.
        apply: ``apply(params, carry, ids, *, reset=None, key=None) -> (carry, logits)``,
            ``ids (B, T)`` int -> ``logits (B, T, V)``; rows with ``reset`` true start from a
            zero carry; ``key`` enables dropout.
        initial_carry: ``initial_carry(batch_shape) -> carry`` (zeros).
        vocab_size: ``V``.
        config: how it was built, as ``(name, value)`` pairs.
    """

    init: Callable[[jax.Array], CharLMParams]
    apply: Callable[..., tuple[Any, jax.Array]]
    initial_carry: Callable[..., Any]
    vocab_size: int
    config: tuple[tuple[str, Any], ...] = ()


def char_lm(
    vocab_size: int,
    hidden_size: int = 256,
    *,
    cell: str = "lstm",
    embed_size: int = 64,
    num_layers: int = 1,
    dropout: float = 0.0,
) -> CharLM:
    """Embedding -> recurrent layers (:func:`jaxrnn.rnn`) -> dense head over the vocabulary.

    .. math::

        e_t = E[x_t], \\qquad (a_t, h_t) = \\text{cell}(a_{t-1}, e_t), \\qquad
        p(x_{t+1} \\mid x_{\\le t}) = \\operatorname{softmax}(h_t W + b)

    Args:
        vocab_size: ``V``.
        hidden_size: ``H`` of every recurrent layer.
        cell: one of :data:`CELLS`: ``lstm``, ``gru``, ``rnn`` (Elman), ``peephole`` (LSTM
            with peepholes), ``coupled`` (LSTM with coupled input and forget gates).
        embed_size: ``E``.
        num_layers: stacked recurrent layers.
        dropout: dropout rate between layers and before the head (only with a ``key``).

    >>> import jax, jax.numpy as jnp, jaxrnn.train as jt
    >>> model = jt.char_lm(10, 16, cell="gru", embed_size=8)
    >>> params = model.init(jax.random.key(0))
    >>> ids = jnp.zeros((2, 5), jnp.int32)  # (batch, time)
    >>> carry, logits = jax.jit(model.apply)(params, model.initial_carry((2,)), ids)
    >>> logits.shape, carry[0].shape
    ((2, 5, 10), (2, 16))
    """
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
    cell_fn, cell_kwargs = CELLS[cell]
    net = rnn(
        cell_fn, embed_size, hidden_size, num_layers=num_layers, dropout=dropout, **cell_kwargs
    )
    embed_init = jax.nn.initializers.normal(1.0)
    head_init = jax.nn.initializers.lecun_normal()

    def init(key):
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return CharLMParams(
            embed=embed_init(k_embed, (vocab_size, embed_size), jnp.float32),
            rnn=net.init(k_rnn),
            w_out=head_init(k_out, (net.output_size, vocab_size), jnp.float32),
            b_out=jnp.zeros((vocab_size,), jnp.float32),
        )

    def apply(params, carry, ids, *, reset=None, key=None):
        if reset is not None:
            carry = jax.tree.map(
                lambda c: jnp.where(reset.reshape((-1,) + (1,) * (c.ndim - 1)), 0.0, c), carry
            )
        xs = params.embed[ids]
        k_net = k_out = None
        if key is not None and dropout > 0.0:
            k_net, k_out = jax.random.split(key)
        carry, ys = net.apply(params.rnn, xs, carry, key=k_net)
        if k_out is not None:
            keep = jax.random.bernoulli(k_out, 1.0 - dropout, ys.shape)
            ys = jnp.where(keep, ys / (1.0 - dropout), 0.0)
        return carry, ys @ params.w_out + params.b_out

    config = (
        ("factory", "char_lm"),
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("cell", cell),
        ("embed_size", embed_size),
        ("num_layers", num_layers),
        ("dropout", dropout),
    )
    return CharLM(init, apply, net.initial_carry, vocab_size, config)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean negative log-likelihood (nats) of integer ``targets`` under ``logits``."""
    return _losses.softmax_cross_entropy(logits, targets, reduction="mean")


def lm_loss(model: CharLM) -> LossFn:
    """The next-character cross-entropy of ``model`` as a :func:`make_train_step` loss.

    The batch is a :class:`jaxrnn.data.TextBatches` batch: ``inputs``, ``targets`` ``(B, T)``
    and ``reset`` ``(B,)``; the carry runs from chunk to chunk.
    """

    def loss_fn(params, carry, batch, key):
        carry, logits = model.apply(
            params, carry, batch["inputs"], reset=batch.get("reset"), key=key
        )
        return cross_entropy(logits, batch["targets"]), carry

    return loss_fn


def evaluate_lm(model: CharLM, params: CharLMParams, chunks: Batch) -> jax.Array:
    """Mean cross-entropy over consecutive chunks, the carry passed along (no dropout).

    Args:
        model: the model.
        params: its parameters.
        chunks: batches stacked along a new first axis (``jax.tree.map(jnp.stack, ...)``),
            e.g. the first chunks of a :class:`jaxrnn.data.TextBatches` over held-out text.

    Returns:
        The mean loss over all chunks, a scalar.
    """
    return _evaluate_lm(model, params, chunks)


@functools.partial(jax.jit, static_argnums=0)
def _evaluate_lm(model, params, chunks):
    batch_shape = chunks["inputs"].shape[1:2]

    def body(carry, batch):
        carry, logits = model.apply(params, carry, batch["inputs"], reset=batch.get("reset"))
        return carry, cross_entropy(logits, batch["targets"])

    _, losses = jax.lax.scan(body, model.initial_carry(batch_shape), chunks)
    return jnp.mean(losses)


def sample(
    model: CharLM,
    params: CharLMParams,
    key: jax.Array,
    prompt: Any,
    length: int,
    *,
    temperature: float = 1.0,
    num_samples: int = 1,
) -> jax.Array:
    """Generate ``length`` tokens after ``prompt``, one ``lax.scan`` step per token.

    The prompt is read in one pass (its last logits predict the first new token); then each step
    draws a token from ``softmax(logits / temperature)`` and feeds it back. Lower temperatures
    are more conservative; ``temperature=0`` picks the most likely token (greedy).

    Args:
        model: the model.
        params: its parameters.
        key: a ``jax.random`` key.
        prompt: ``(P,)`` token ids, ``P >= 1``.
        length: number of tokens to generate.
        temperature: softmax temperature, ``>= 0``.
        num_samples: independent samples drawn in parallel.

    Returns:
        ``(num_samples, length)`` int32 token ids (the prompt excluded).

    >>> import jax, jaxrnn.train as jt
    >>> model = jt.char_lm(5, 8, embed_size=4)
    >>> params = model.init(jax.random.key(0))
    >>> ids = jt.sample(model, params, jax.random.key(1), [0, 1], 7, num_samples=3)
    >>> ids.shape, ids.dtype.name
    ((3, 7), 'int32')
    """
    prompt = jnp.asarray(prompt, jnp.int32).reshape(-1)
    if prompt.size < 1:
        raise ValueError("sample: the prompt needs at least one token")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    fn = _sampler(model, int(length), float(temperature), int(num_samples))
    return fn(params, key, prompt)


@functools.lru_cache(maxsize=32)
def _sampler(model: CharLM, length: int, temperature: float, num_samples: int):
    @jax.jit
    def run(params, key, prompt):
        ids = jnp.broadcast_to(prompt, (num_samples, prompt.shape[0]))
        carry, logits = model.apply(params, model.initial_carry((num_samples,)), ids)

        def body(state, k):
            carry, last = state
            if temperature > 0.0:
                token = jax.random.categorical(k, last / temperature, axis=-1)
            else:
                token = jnp.argmax(last, axis=-1)
            token = token.astype(jnp.int32)
            carry, logits = model.apply(params, carry, token[:, None])
            return (carry, logits[:, 0]), token

        _, tokens = jax.lax.scan(body, (carry, logits[:, -1]), jax.random.split(key, length))
        return tokens.T

    return run


# --------------------------------------------------------------------------------------------
# End to end: the demo's character-level language model.


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Hyperparameters of :func:`train_char_lm` (the ``demo`` defaults: under a minute on two
    CPU cores)."""

    cell: str = "lstm"
    hidden_size: int = 256
    embed_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    batch_size: int = 32
    seq_len: int = 64
    steps: int = 300
    learning_rate: float = 5e-3
    warmup_steps: int = 20
    clip_norm: float = 1.0
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    eval_chunks: int = 8
    seed: int = 0

    def model(self, vocab_size: int) -> CharLM:
        """The :func:`char_lm` these settings describe."""
        return char_lm(
            vocab_size,
            self.hidden_size,
            cell=self.cell,
            embed_size=self.embed_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
        )

    def optimizer(self) -> optax.GradientTransformation:
        """The :func:`default_optimizer` these settings describe."""
        return default_optimizer(
            self.learning_rate,
            self.steps,
            warmup_steps=self.warmup_steps,
            clip_norm=self.clip_norm,
            weight_decay=self.weight_decay,
        )

    def init_state(self, model: CharLM) -> TrainState:
        """The step-0 :class:`TrainState` (params from ``seed``, zero carry)."""
        k_init, k_train = jax.random.split(jax.random.key(self.seed))
        return init_state(
            model.init(k_init),
            self.optimizer(),
            k_train,
            model.initial_carry((self.batch_size,)),
        )


class CharLMRun(NamedTuple):
    """What :func:`train_char_lm` returns."""

    model: CharLM
    state: TrainState
    history: History
    vocab: _data.Vocab
    config: CharLMConfig


def run_metadata(config: CharLMConfig, vocab: _data.Vocab, corpus: str, text: str) -> dict:
    """The JSON metadata stored with every checkpoint of :func:`train_char_lm`."""
    return {
        "kind": "char_lm",
        "config": dataclasses.asdict(config),
        "vocab": vocab.to_json(),
        "corpus": {"source": corpus, "chars": len(text), "sha256": _data.text_digest(text)},
    }


def train_char_lm(
    text: str,
    config: CharLMConfig = CharLMConfig(),
    *,
    corpus: str = "text",
    stop_at: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int = 100,
    max_to_keep: int | None = 3,
    eval_every: int = 100,
    mesh: Mesh | str | None = "auto",
    progress: bool = True,
) -> CharLMRun:
    """Train :func:`char_lm` on ``text`` with truncated BPTT, resuming from checkpoints.

    The last ``config.val_fraction`` of the text is held out; ``history.eval["loss"]`` is the
    cross-entropy (nats per character) on its first ``config.eval_chunks`` chunks (no
    evaluation if it is shorter than one batch of chunks). With
    ``checkpoint_dir``, training resumes from the latest checkpoint there (which must have been
    written with the same config and corpus) and saves every ``save_every`` steps; an empty or
    missing directory starts from scratch.

    Args:
        text: the corpus.
        config: hyperparameters.
        corpus: a name for the corpus, stored in checkpoint metadata (e.g. a path).
        stop_at: stop after this many steps in total (default ``config.steps``, the length of
            the learning-rate schedule).
        checkpoint_dir: where to save and resume.
        save_every: checkpoint period.
        max_to_keep: checkpoints kept.
        eval_every: validation period.
        mesh: a data-parallel mesh, ``None``, or ``"auto"``: every device when there are
            several and they divide the batch.
        progress: show the progress bar.

    Raises:
        CheckpointError: if the latest checkpoint cannot be restored.
        ValueError: if the checkpoints were written for another config or corpus.
    """
    train_text, val_text = _data.split_text(text, config.val_fraction)
    vocab = _data.Vocab.from_text(text)
    model = config.model(vocab.size)
    batches = _data.TextBatches(
        vocab.encode(train_text), config.batch_size, config.seq_len, seed=config.seed
    )
    eval_fn = None
    val_ids = vocab.encode(val_text)
    if config.eval_chunks > 0 and val_ids.size >= (config.batch_size + 1) * config.seq_len:
        val = _data.TextBatches(val_ids, config.batch_size, config.seq_len)
        n = min(config.eval_chunks, val.num_chunks)
        chunks = jax.tree.map(lambda *xs: jnp.stack(xs), *[val(k) for k in range(n)])
        eval_fn = lambda state: {"loss": evaluate_lm(model, state.params, chunks)}
    if mesh == "auto":
        n_dev = len(jax.devices())
        mesh = data_mesh() if n_dev > 1 and config.batch_size % n_dev == 0 else None

    state, history, ckpt = config.init_state(model), History(), None
    if mesh is not None:
        state = shard_state(state, mesh)
    if checkpoint_dir is not None:
        meta = run_metadata(config, vocab, corpus, text)
        ckpt = Checkpoints(
            checkpoint_dir, save_every=save_every, max_to_keep=max_to_keep, config=meta
        )
    try:
        if ckpt is not None:
            if ckpt.latest_step() is not None:
                _check_same_run(ckpt.metadata()["config"], meta, ckpt.directory)
            state, history = ckpt.resume(state)
        step = make_train_step(lm_loss(model), config.optimizer(), mesh=mesh)
        state, history = fit(
            state,
            step,
            batches,
            config.steps if stop_at is None else stop_at,
            eval_fn=eval_fn,
            eval_every=eval_every,
            checkpoints=ckpt,
            history=history,
            mesh=mesh,
            progress=progress,
            tokens_per_step=config.batch_size * config.seq_len,
            desc=f"{config.cell} LM",
        )
    finally:
        if ckpt is not None:
            ckpt.close()
    return CharLMRun(model, state, history, vocab, config)


def _check_same_run(stored: Mapping[str, Any] | None, current: Mapping[str, Any], where: str):
    if not stored or stored.get("kind") != "char_lm":
        raise ValueError(f"{where} holds checkpoints of something other than train_char_lm")
    diffs = [
        f"{k}: checkpoint {stored['config'].get(k)!r}, now {v!r}"
        for k, v in current["config"].items()
        if stored["config"].get(k) != v
    ]
    if stored["corpus"]["sha256"] != current["corpus"]["sha256"]:
        diffs.append(
            f"corpus: checkpoint trained on {stored['corpus']['source']!r} "
            f"({stored['corpus']['chars']} chars), now {current['corpus']['source']!r} "
            f"({current['corpus']['chars']} chars) with different contents"
        )
    if diffs:
        raise ValueError(
            f"cannot resume from {where}: its checkpoints were written by a different run ("
            + "; ".join(diffs)
            + "). Use the same settings, or another checkpoint directory."
        )


def load_char_lm(checkpoint_dir: str | os.PathLike, *, step: int | None = None):
    """Rebuild a :func:`train_char_lm` model from its checkpoint directory, for sampling.

    Returns:
        ``(model, params, vocab, config, meta)`` where ``meta`` is the checkpoint's metadata.

    Raises:
        FileNotFoundError: if the directory does not exist.
        CheckpointError: if it holds no readable checkpoint.
    """
    with Checkpoints(checkpoint_dir, create=False) as ckpt:
        meta = ckpt.metadata(step)
        stored = meta.get("config") or {}
        if stored.get("kind") != "char_lm":
            raise CheckpointError(f"{ckpt.directory} holds no char_lm checkpoint")
        config = CharLMConfig(**stored["config"])
        vocab = _data.Vocab.from_json(stored["vocab"])
        model = config.model(vocab.size)
        template = jax.eval_shape(lambda: config.init_state(model))
        state = ckpt.restore(_with_default_sharding(template), step=meta["step"])
    return model, state.params, vocab, config, meta


def _with_default_sharding(tree):
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def bits_per_char(loss: float) -> float:
    """Convert a cross-entropy in nats to bits."""
    return loss / math.log(2.0)
