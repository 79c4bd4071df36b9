"""The types of :mod:`jaxrnn.train`, at the bottom of the package: every other module of it
imports them from here, so none imports another in a circle."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

__all__ = [
    "Batch",
    "CheckpointError",
    "History",
    "Interrupted",
    "LossFn",
    "Metrics",
    "NonFiniteLossError",
    "TrainState",
]

Batch = Any
Metrics = dict[str, jax.Array]
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, Any]]


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
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: if ``obj`` is not what :meth:`to_json` writes (two tables of number
                lists, ``"train"`` and ``"eval"``).
        """

        def table(name):
            t = obj.get(name) if isinstance(obj, Mapping) else None
            if not isinstance(t, Mapping) or not all(
                isinstance(k, str)
                and isinstance(v, list)
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
                for k, v in t.items()
            ):
                raise ValueError(f"History.from_json: {name!r} is not a table of number lists")
            return {k: list(v) for k, v in t.items()}

        return cls(table("train"), table("eval"))


class NonFiniteLossError(FloatingPointError):
    """:func:`fit` met a non-finite loss (or other training metric) and stopped.

    No checkpoint holds a state after the failing step: the latest checkpoint is the last good
    one. A :class:`FloatingPointError` (an :class:`ArithmeticError`).

    Attributes:
        step: the first step whose metrics were not finite (``state.step`` after it).
        metrics: that step's metrics, as floats.
        history: the metrics so far, the failing step included.
    """

    def __init__(self, step: int, metrics: Mapping[str, float], history: History):
        bad = ", ".join(f"{k} {v}" for k, v in metrics.items() if not math.isfinite(v))
        super().__init__(
            f"training stopped: non-finite {bad} at step {step}; no checkpoint was written "
            "after it (the latest one is the last good state)"
        )
        self.step = step
        self.metrics = dict(metrics)
        self.history = history


class Interrupted(KeyboardInterrupt):
    """:func:`fit` was interrupted (Ctrl-C, ``SIGINT`` or ``SIGTERM``) and stopped cleanly.

    A :class:`KeyboardInterrupt`, so scripts stop as they would on Ctrl-C. When ``fit`` had
    checkpoints, the state after the last completed step was saved first.

    Attributes:
        step: the last completed step (``state.step`` of :attr:`state`).
        path: the checkpoint directory holding that step, or ``None`` if nothing was saved.
        state: the state after the last completed step.
        history: the metrics up to it.
    """

    def __init__(self, step: int, path: str | None, state: Any = None, history: Any = None):
        where = f"; saved {path}" if path else "; no checkpoint saved"
        super().__init__(f"training interrupted after step {step}{where}")
        self.step = step
        self.path = path
        self.state = state
        self.history = history


class CheckpointError(RuntimeError):
    """A checkpoint directory or checkpoint cannot be used as asked.

    Raised when a checkpoint cannot be restored exactly (corrupt, incomplete, without a digest,
    of another structure than the template), when its directory is unusable (not a directory,
    not writable, holds symbolic links, is in use by another writer), and when a save would
    overwrite a step with other contents. The message is one line and names the directory.
    """
