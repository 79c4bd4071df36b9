"""The training loop: :func:`fit` runs a train step over a stream of batches.

:func:`fit` calls ``train_step(state, batches(step))`` from ``state.step`` to a given number of
steps, with a ``tqdm`` progress bar (loss, throughput), periodic evaluation, periodic
checkpoints (:class:`~jaxrnn.train.Checkpoints`) and a :class:`History` of metrics for plots.
The batch of step ``s`` is ``batches(s)``, a pure function of the step, so a run resumed from a
checkpoint sees the same data as an uninterrupted one; together with the carry and PRNG key in
the :class:`~jaxrnn.train.TrainState` this makes resumption bit-exact. With a ``mesh``, the
state and every batch are sharded over it (:mod:`jaxrnn.train.parallel`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
from jax.sharding import Mesh
from tqdm import tqdm

from jaxrnn.train.parallel import shard_batch, shard_state
from jaxrnn.train.state import Batch, Metrics, TrainState

if TYPE_CHECKING:
    from jaxrnn.train.checkpoints import Checkpoints

__all__ = ["History", "fit"]


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
