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
            :func:`~jaxrnn.train.model_mesh`; any mesh with an ``axis_name`` axis, from
            ``jax.make_mesh`` (explicit axes) too.
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
    history = _resume_history(history, checkpoints, start)
    if mesh is not None:
        state = shard_state(state, mesh, axis_name)
    run = _Run(
        state=state,
        history=history,
        bar=_progress_bar(num_steps, start, desc, progress),
        start=start,
        t0=time.perf_counter(),
        tokens_per_step=tokens_per_step,
        on_nonfinite=on_nonfinite,
        signals=_Signals(_announce if progress else None),
        several=jax.process_count() > 1,
        done=start,
    )
    try:
        with run.signals:
            try:
                _steps(
                    run,
                    train_step,
                    batches,
                    num_steps,
                    mesh=mesh,
                    axis_name=axis_name,
                    eval_fn=eval_fn,
                    eval_every=eval_every,
                    checkpoints=checkpoints,
                    log_every=log_every,
                    callback=callback,
                )
                _finish(run, eval_fn, checkpoints)
            except KeyboardInterrupt as interrupt:
                if isinstance(interrupt, Interrupted):
                    raise
                raise _stop(run, checkpoints) from None
    finally:
        run.bar.close()
    return run.state, run.history


@dataclasses.dataclass
class _Run:
    """The bookkeeping of one :func:`fit` call, updated step by step."""

    state: TrainState  # always a completed step's: the one of ``done``
    history: History
    bar: tqdm
    start: int
    t0: float
    tokens_per_step: int | None
    on_nonfinite: str
    signals: _Signals
    several: bool  # several processes (``jax.distributed``)
    done: int  # the last completed step
    pending: list[tuple[int, Metrics]] = dataclasses.field(default_factory=list)
    last_saved: int | None = None
    last_eval: int | None = None


def _resume_history(history: History | None, checkpoints, start: int) -> History:
    """``history``, else the one saved with the checkpoint of step ``start``, else a new one."""
    if history is None:
        history = History()
        if checkpoints is not None and start in checkpoints.steps():
            history = checkpoints.history(start)
    return history


def _progress_bar(num_steps: int, start: int, desc: str, progress: bool) -> tqdm:
    """The ``tqdm`` bar on stderr (disabled without ``progress``)."""
    return tqdm(
        total=num_steps,
        initial=start,
        desc=desc,
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _announce(msg: str) -> None:
    """Print a message above the progress bar."""
    tqdm.write(msg, file=sys.stderr)


def _flush(run: _Run, step: int) -> None:
    """Fetch the pending metrics into the history (checking them) and update the bar."""
    if not run.pending:
        return
    history = run.history
    fetched = jax.device_get(run.pending)
    run.pending.clear()
    for s, m in fetched:
        history.log_train(s, m)
        if run.on_nonfinite == "raise":
            values = {k: float(v) for k, v in m.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise NonFiniteLossError(int(s), values, history)
    postfix = {"loss": f"{history.train['loss'][-1]:.4f}"} if "loss" in history.train else {}
    elapsed = time.perf_counter() - run.t0
    if run.tokens_per_step and elapsed > 0:
        postfix["tok/s"] = f"{(step - run.start) * run.tokens_per_step / elapsed:,.0f}"
    run.bar.set_postfix(postfix, refresh=False)


def _stop_requested(run: _Run, at_fetch: bool) -> bool:
    """Whether a signal asks the loop to stop (agreed by all processes at a fetch)."""
    # With several processes, all stop at the same step: a signal to any of them is
    # agreed on (a collective) when metrics are fetched, a step boundary all share.
    if not run.several:
        return run.signals.received is not None
    return at_fetch and not all_processes(run.signals.received is None)


def _steps(
    run: _Run,
    train_step,
    batches,
    num_steps: int,
    *,
    mesh,
    axis_name,
    eval_fn,
    eval_every,
    checkpoints,
    log_every,
    callback,
) -> None:
    """The steps from ``run.start`` to ``num_steps``: train, fetch, evaluate, save."""
    for s in range(run.start, num_steps):
        if _stop_requested(run, False):
            raise KeyboardInterrupt
        batch = batches(s)
        if mesh is not None:
            batch = shard_batch(batch, mesh, axis_name)
        new_state, metrics = train_step(run.state, batch)
        run.state, run.done = new_state, s + 1  # ``state`` is always a completed step's
        done = run.done
        run.pending.append((done, metrics))
        save = checkpoints is not None and checkpoints.should_save(done)
        evaluate = eval_fn is not None and eval_every > 0 and done % eval_every == 0
        if save or evaluate or len(run.pending) >= log_every or done == num_steps:
            _flush(run, done)
            if run.several and _stop_requested(run, True):
                raise KeyboardInterrupt
        if evaluate:
            run.history.log_eval(done, eval_fn(run.state))
            run.last_eval = done
        if save:
            checkpoints.save(run.state, history=run.history)
            run.last_saved = done
        run.bar.update(1)
        if callback is not None:
            callback(done, run.state, metrics)


def _finish(run: _Run, eval_fn, checkpoints) -> None:
    """After the last step: fetch, evaluate and save unless that step already did."""
    done, history = run.done, run.history
    _flush(run, done)
    evaluated = history.eval.get("step") and history.eval["step"][-1] == done
    if eval_fn is not None and run.last_eval != done and not evaluated:
        history.log_eval(done, eval_fn(run.state))
    if checkpoints is not None and run.last_saved != done:
        checkpoints.save(run.state, history=history)
        run.last_saved = done
    if _stop_requested(run, True):
        raise KeyboardInterrupt


def _stop(run: _Run, checkpoints) -> Interrupted:
    """Save the last completed step, then describe the interruption."""
    state, step, history = run.state, run.done, run.history
    if any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(state)):
        # Interrupted inside a step that donated this state: it is gone, the checkpoints stay.
        return Interrupted(step, None, None, history)
    _flush(run, step)  # a non-finite step raises NonFiniteLossError here, before saving
    path = None
    if checkpoints is not None:
        if run.last_saved != step:
            checkpoints.save(state, history=history)
        path = checkpoints.step_path(step)
    return Interrupted(step, path, state, history)
