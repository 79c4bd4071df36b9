r"""The train state and the compiled train step: what one step of training is.

* :class:`TrainState` ``(params, opt_state, step, rng, carry)``: everything a run needs to
  continue, including the recurrent ``carry`` passed between chunks of a long stream and the
  PRNG key, so a run restored from a checkpoint continues bit for bit;
* :func:`default_optimizer`: global-norm clipping, then AdamW with linear warm-up and cosine
  decay (optax);
* :func:`make_train_step`: ``train_step(state, batch) -> (state, metrics)``, jit-compiled with
  the state's buffers donated. The loss is ``loss_fn(params, carry, batch, key) ->
  (loss, carry)``; the incoming carry is wrapped in ``jax.lax.stop_gradient``
  (:func:`truncated`), so each step is one chunk of *truncated* backpropagation through time.

Truncated BPTT (TBPTT) over a stream cut into chunks :math:`x^{(1)}, x^{(2)}, \dots` of
``seq_len`` steps: chunk :math:`k` starts from the carry :math:`a_k` where chunk :math:`k - 1`
ended, and its loss :math:`L_k(\theta, a_k)` is differentiated with :math:`a_k` held constant,

.. math::

    \theta \leftarrow \theta - \eta \, \frac{\partial L_k(\theta, \operatorname{sg}(a_k))}
    {\partial \theta},

where :math:`\operatorname{sg}` is ``stop_gradient``: values flow from chunk to chunk,
gradients stop at chunk boundaries, and the cost of a step is that of one chunk, however long
the stream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import AxisType, Mesh

from jaxrnn.train._types import Batch, LossFn, Metrics, TrainState
from jaxrnn.train.parallel import (
    MODEL_AXIS,
    by_rows,
    check_rows,
    put_global,
    replicated,
    shard_state,
    state_shardings,
)

__all__ = [
    "Batch",
    "LossFn",
    "Metrics",
    "TrainState",
    "default_optimizer",
    "init_state",
    "make_train_step",
    "truncated",
]


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
        mesh: if given, compile for ``mesh``, possibly spanning several processes: the batch
            and carry split along their first axis over ``axis_name``; on a mesh without a
            ``"model"`` axis (:func:`~jaxrnn.train.data_mesh`) everything else replicated
            (data parallelism), on one with it (:func:`~jaxrnn.train.model_mesh`) parameters
            and optimizer state split by :func:`~jaxrnn.train.param_spec` (tensor
            parallelism). ``Explicit`` axes (``jax.make_mesh``, with or without
            ``jax.set_mesh``) or ``Auto`` ones. Put the state and batches there with
            :func:`shard_state` and :func:`shard_batch`, or let :func:`fit` do it; under
            explicit axes the step puts them there itself (nothing moves when they are there
            already), so a fresh state and the step's own outputs share one compiled step.
        axis_name: the mesh axis of the batch.
        donate: donate the input state's buffers to the output state (the state passed in is
            invalid afterwards; saves memory and copies).

    Returns:
        The compiled step; ``metrics`` holds the scalars ``loss`` and ``grad_norm`` (before
        clipping). Compiled for a ``mesh``, the step raises a ``ValueError`` naming the leaf
        when the devices of ``axis_name`` do not divide the first axis of a leaf of the batch
        or of ``state.carry`` (the check :func:`fit` applies too), before anything runs.

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
    if mesh is None:
        return jax.jit(train_step, **kwargs)
    return _step_on_mesh(train_step, mesh, axis_name, kwargs)


def _step_on_mesh(train_step, mesh: Mesh, axis_name: str, kwargs: dict[str, Any]):
    """``train_step`` compiled for ``mesh``: the batch and carry split by rows over
    ``axis_name``, everything else replicated, or split by :func:`param_spec` when ``mesh``
    has a ``"model"`` axis.

    Under a mesh with ``Explicit`` axes an array's sharding is part of its type, which the
    compiled step is specialised to: the state and batch are put on the mesh first (nothing
    moves when they are there already, as in :func:`fit`), so that a state straight from
    :func:`init_state` and the step's own outputs share one compiled step.
    """
    rows, rep = by_rows(mesh, axis_name), replicated(mesh)
    explicit = AxisType.Explicit in tuple(mesh.axis_types)

    def placed(state: TrainState, batch: Batch) -> tuple[TrainState, Batch]:
        _check_split_rows(state, batch, mesh, axis_name)
        if explicit:
            state = shard_state(state, mesh, axis_name)
            batch = jax.tree.map(lambda x: put_global(x, rows), batch)
        return state, batch

    if MODEL_AXIS not in mesh.axis_names:  # each part of the state alike: a prefix of it
        prefix = TrainState(rep, rep, rep, rep, rows)
        jitted = jax.jit(
            train_step, in_shardings=(prefix, rows), out_shardings=(prefix, rep), **kwargs
        )

        @functools.wraps(train_step)
        def data_parallel_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
            return _explained(jitted, *placed(state, batch))

        data_parallel_step.lower = jitted.lower  # type: ignore[attr-defined]
        return data_parallel_step
    # Parameters split by their shapes (tensor parallelism: XLA partitions the computation to
    # match): one compiled step per structure and shapes of the state.
    compiled: dict[Any, Callable] = {}

    @functools.wraps(train_step)
    def sharded_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        state, batch = placed(state, batch)
        signature = (jax.tree.structure(state), tuple(map(jnp.shape, jax.tree.leaves(state))))
        step = compiled.get(signature)
        if step is None:
            shardings = state_shardings(state, mesh, axis_name)
            step = jax.jit(
                train_step,
                in_shardings=(shardings, rows),
                out_shardings=(shardings, rep),
                **kwargs,
            )
            compiled[signature] = step
        return _explained(step, state, batch)

    return sharded_step


#: Added to JAX's ``ShardingTypeError`` raised while tracing a step for an explicit mesh.
EXPLICIT_HINT = (
    "jaxrnn.train: this train step's mesh has Explicit axes, under which JAX must infer the "
    "sharding of every result of the loss: give the operation above an out_sharding= (e.g. "
    "table.at[ids].get(out_sharding=...) for an embedding lookup), or build the mesh with "
    "axis_types=jax.sharding.AxisType.Auto (data_mesh, model_mesh, jax.make_mesh)"
)


def _explained(step: Callable, state: TrainState, batch: Batch):
    """``step(state, batch)``; a ``ShardingTypeError`` (an operation of the loss whose result
    sharding JAX cannot infer under explicit axes) gets a note on the ways out."""
    try:
        return step(state, batch)
    except Exception as error:
        if any(t.__name__ == "ShardingTypeError" for t in type(error).__mro__):
            error.add_note(EXPLICIT_HINT)
        raise


def _check_split_rows(state: TrainState, batch: Batch, mesh: Mesh, axis_name: str) -> None:
    """The batch and the carry split by rows over ``axis_name``: the devices divide them (the
    check of :func:`~jaxrnn.train.shard_batch`, which :func:`fit` applies, before JAX raises
    its own ``IndivisibleError``)."""
    check_rows("train_step", "batch", batch, mesh, axis_name)
    check_rows("train_step", "state.carry", getattr(state, "carry", ()), mesh, axis_name)
