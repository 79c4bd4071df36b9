"""Training: a pure train state, a compiled train step, a fit loop, checkpoints, parallelism.

The machinery any model trains with, one module per concern, in the order a step uses them:

* :mod:`jaxrnn.train.parallel`: :func:`data_mesh` and :func:`model_mesh`,
  :func:`shard_batch`, :func:`shard_state`, :func:`state_shardings`, :func:`param_spec`,
  :func:`local_rows`, :func:`local_batches`, :func:`local_copy`: the batch split over devices
  and processes, parameters replicated (data parallelism) or split too (tensor parallelism);
* :mod:`jaxrnn.train.state`: :class:`TrainState`, :func:`init_state`,
  :func:`default_optimizer`, :func:`truncated` and :func:`make_train_step`: one jit-compiled
  step of truncated backpropagation through time;
* :mod:`jaxrnn.train.loop`: :func:`fit` and its :class:`History` of metrics; it stops with
  :class:`NonFiniteLossError` on a non-finite loss (before saving anything after it) and with
  :class:`Interrupted` on Ctrl-C or ``SIGTERM`` (after saving the last completed step);
* :mod:`jaxrnn.train.checkpoints`: :class:`Checkpoints` (orbax, atomic, one locked writer per
  directory, every state verified against its digests, the template's structure, dtypes
  and shapes checked; saved and restored by any number of processes, onto any layout) and
  :class:`CheckpointError`.

A model plugs in through its loss, ``loss_fn(params, carry, batch, key) -> (loss, carry)``;
:mod:`jaxrnn.models.language_model` is one such model (the demo's character-level LSTM), built
on this package exactly as a user's own model would be.

Data parallelism on several devices (or hosts)::

    mesh = jr.train.data_mesh()                 # every device, one axis called "data"
    # or: mesh = jax.make_mesh((jax.device_count(),), ("data",))
    step = jr.train.make_train_step(loss_fn, optimizer, mesh=mesh)
    state, history = jr.train.fit(state, step, batches, num_steps, mesh=mesh)

With several processes, each passes its own rows: ``batches =
jr.train.local_batches(global_batches, mesh)``. Parameters too large for one device:
``mesh = jr.train.model_mesh(model=4)`` instead, nothing else changes. Both build meshes
with ``Explicit`` axes (as ``jax.make_mesh``; ``axis_types=`` for ``Auto`` ones).
"""

from jaxrnn.train.checkpoints import CheckpointError, Checkpoints
from jaxrnn.train.loop import History, Interrupted, NonFiniteLossError, fit
from jaxrnn.train.parallel import (
    data_mesh,
    local_batches,
    local_copy,
    local_rows,
    model_mesh,
    param_spec,
    shard_batch,
    shard_state,
    state_shardings,
)
from jaxrnn.train.state import (
    TrainState,
    default_optimizer,
    init_state,
    make_train_step,
    truncated,
)

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "History",
    "Interrupted",
    "NonFiniteLossError",
    "TrainState",
    "data_mesh",
    "default_optimizer",
    "fit",
    "init_state",
    "local_batches",
    "local_copy",
    "local_rows",
    "make_train_step",
    "model_mesh",
    "param_spec",
    "shard_batch",
    "shard_state",
    "state_shardings",
    "truncated",
]

# The character-level language model lived here until 0.2; it is a model built on this package,
# not part of it. Old names fail with a pointer to the new home instead of a bare AttributeError.
_MOVED_TO_MODELS = (
    "CELLS",
    "CharLM",
    "CharLMConfig",
    "CharLMParams",
    "CharLMRun",
    "bits_per_char",
    "char_lm",
    "evaluate_lm",
    "lm_loss",
    "load_char_lm",
    "run_metadata",
    "sample",
    "train_char_lm",
)


def __getattr__(name):
    if name == "cross_entropy":
        raise AttributeError(
            "jaxrnn.train.cross_entropy was removed: use "
            "jaxrnn.losses.softmax_cross_entropy(logits, targets, reduction='mean')"
        )
    if name in _MOVED_TO_MODELS:
        raise AttributeError(
            f"jaxrnn.train.{name} moved to jaxrnn.models.{name} (the character-level language "
            "model is a model built on jaxrnn.train, no longer part of it)"
        )
    raise AttributeError(f"module 'jaxrnn.train' has no attribute {name!r}")
