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

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
from jax.sharding import Mesh
from tqdm import tqdm

from jaxrnn.train._digest import all_processes
from jaxrnn.train._types import Batch, History, Interrupted, Metrics, NonFiniteLossError, TrainState
from jaxrnn.train.parallel import shard_batch, shard_state

if TYPE_CHECKING:
    from jaxrnn.train.checkpoints import Checkpoints

__all__ = ["History", "Interrupted", "NonFiniteLossError", "fit"]


class _Signals:
    """While active, SIGINT/SIGTERM ask the loop to stop at the end of the current step.

    Installed only in the main thread and only over the default handlers (a user's own handler
    is left alone); the previous handlers are restored on exit. A second signal before the loop
    stops raises :class:`KeyboardInterrupt` at once (no checkpoint).
    """

    def __init__(self, announce: Callable[[str], None] | None):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._announce = announce

    def _handler(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        if self._announce is not None:
            self._announce(
                f"{signal.Signals(signum).name}: stopping after the current step "
                "(again to abort without saving)"
            )

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        # Taken over: the defaults, and Python's Ctrl-C handler wherever it is installed (the
        # CLI gives SIGTERM Ctrl-C's meaning with it); a program's own handlers are left alone.
        defaults = {
            signal.SIGINT: (signal.default_int_handler,),
            signal.SIGTERM: (signal.SIG_DFL, signal.default_int_handler),
        }
        for signum, takeover in defaults.items():
            if signal.getsignal(signum) in takeover:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


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
    on_nonfinite: str = "raise",
) -> tuple[TrainState, History]:
    """Train from ``state.step`` until ``num_steps`` steps have been taken.

    Step ``s`` trains on ``batches(s)``, so the data position is the step: a run resumed from a
    checkpoint of step ``s`` sees the same batches, keys and carries as an uninterrupted run and
    computes the same losses, step for step.

    Metrics are fetched every ``log_every`` steps and before each evaluation or checkpoint; a
    non-finite loss (or other metric) found then stops training with
    :class:`NonFiniteLossError` naming the first bad step, before anything is saved: no
    checkpoint ever holds a state that follows a non-finite step.

    Ctrl-C (``SIGINT``) and ``SIGTERM`` stop training at the end of the current step (when
    ``fit`` runs in the main thread; a second signal aborts at once): with ``checkpoints``, the
    state after that step is saved, then :class:`Interrupted` (a :class:`KeyboardInterrupt`)
    is raised. The signal handlers are installed only over the default ones and restored on
    return.

    With several processes (``jax.distributed.initialize``), every process calls ``fit`` with
    the same arguments but its own rows in ``batches`` (see
    :func:`~jaxrnn.train.shard_batch`); the metrics and the history are global, the same in
    every process; checkpoints are saved by all together; a signal to any process stops all
    of them at the next metrics fetch (at most ``log_every`` steps later), where they agree
    on it.

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
        history: metrics so far, appended to. ``None``: the history stored with the checkpoint
            of step ``state.step`` in ``checkpoints`` if there is one (a resumed run carries
            its history on without being told), else a new :class:`History`.
        mesh: if given, the state and every batch are put on it
            (:func:`~jaxrnn.train.shard_state`, :func:`~jaxrnn.train.shard_batch`): data
            parallelism on a :func:`~jaxrnn.train.data_mesh`, parameters split too on a
            :func:`~jaxrnn.train.model_mesh`.
        axis_name: the mesh axis of the batch.
        progress: show a ``tqdm`` progress bar (on stderr) with the loss and throughput.
        tokens_per_step: tokens (or examples) per step, to show the throughput in tokens/s.
        log_every: metrics are fetched from the device every ``log_every`` steps (and before
            each evaluation or checkpoint), so the host does not wait for every step.
        callback: ``callback(step, state, metrics)`` after every step.
        desc: label of the progress bar.
        on_nonfinite: ``"raise"`` (default): stop with :class:`NonFiniteLossError`;
            ``"continue"``: record the values and train on.

    Returns:
        ``(state, history)``.

    Raises:
        NonFiniteLossError: on a non-finite training metric (with ``on_nonfinite="raise"``).
        Interrupted: on ``SIGINT``/``SIGTERM`` (or a :class:`KeyboardInterrupt` raised by a
            callback), after saving the last completed step when ``checkpoints`` is given.
    """
    if on_nonfinite not in ("raise", "continue"):
        raise ValueError(f"on_nonfinite: expected 'raise' or 'continue', got {on_nonfinite!r}")
    start = int(state.step)
    if history is None:
        history = History()
        if checkpoints is not None and start in checkpoints.steps():
            history = checkpoints.history(start)
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
        fetched = jax.device_get(pending)
        pending.clear()
        for s, m in fetched:
            history.log_train(s, m)
            if on_nonfinite == "raise":
                values = {k: float(v) for k, v in m.items()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise NonFiniteLossError(int(s), values, history)
        postfix = {"loss": f"{history.train['loss'][-1]:.4f}"} if "loss" in history.train else {}
        elapsed = time.perf_counter() - t0
        if tokens_per_step and elapsed > 0:
            postfix["tok/s"] = f"{(step - start) * tokens_per_step / elapsed:,.0f}"
        bar.set_postfix(postfix, refresh=False)

    announce = (lambda msg: tqdm.write(msg, file=sys.stderr)) if progress else None
    signals = _Signals(announce)
    several = jax.process_count() > 1

    def stop_requested(at_fetch: bool) -> bool:
        # With several processes, all stop at the same step: a signal to any of them is
        # agreed on (a collective) when metrics are fetched, a step boundary all share.
        if not several:
            return signals.received is not None
        return at_fetch and not all_processes(signals.received is None)

    done = start  # the last completed step: ``state`` holds it
    try:
        with signals:
            try:
                for s in range(start, num_steps):
                    if stop_requested(False):
                        raise KeyboardInterrupt
                    batch = batches(s)
                    if mesh is not None:
                        batch = shard_batch(batch, mesh, axis_name)
                    new_state, metrics = train_step(state, batch)
                    state, done = new_state, s + 1  # ``state`` is always a completed step's
                    pending.append((done, metrics))
                    save = checkpoints is not None and checkpoints.should_save(done)
                    evaluate = eval_fn is not None and eval_every > 0 and done % eval_every == 0
                    if save or evaluate or len(pending) >= log_every or done == num_steps:
                        flush(done)
                        if several and stop_requested(True):
                            raise KeyboardInterrupt
                    if evaluate:
                        history.log_eval(done, eval_fn(state))
                        last_eval = done
                    if save:
                        checkpoints.save(state, history=history)
                        last_saved = done
                    bar.update(1)
                    if callback is not None:
                        callback(done, state, metrics)
                flush(done)
                evaluated = history.eval.get("step") and history.eval["step"][-1] == done
                if eval_fn is not None and last_eval != done and not evaluated:
                    history.log_eval(done, eval_fn(state))
                if checkpoints is not None and last_saved != done:
                    checkpoints.save(state, history=history)
                    last_saved = done
                if stop_requested(True):
                    raise KeyboardInterrupt
            except KeyboardInterrupt as interrupt:
                if isinstance(interrupt, Interrupted):
                    raise
                raise _stop(state, done, history, checkpoints, flush, last_saved) from None
    finally:
        bar.close()
    return state, history


def _stop(state, step, history, checkpoints, flush, last_saved) -> Interrupted:
    """Save the last completed step, then describe the interruption."""
    if any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(state)):
        # Interrupted inside a step that donated this state: it is gone, the checkpoints stay.
        return Interrupted(step, None, None, history)
    flush(step)  # a non-finite step raises NonFiniteLossError here, before saving
    path = None
    if checkpoints is not None:
        if last_saved != step:
            checkpoints.save(state, history=history)
        path = checkpoints.step_path(step)
    return Interrupted(step, path, state, history)
