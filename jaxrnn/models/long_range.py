r"""Long-range memory tasks: one model and one training loop, so that only the cell differs.

The synthetic tasks of :mod:`jaxrnn.data` test how far back a recurrence remembers:

* the **adding problem** (Hochreiter & Schmidhuber 1997): read ``T`` (value, marker) pairs and
  output the sum of the two marked values; predicting 1 always has mean squared error
  :math:`\operatorname{Var}(u_1 + u_2) = 2/12 \approx 0.167`;
* **copy memory** (Arjovsky et al. 2016): see 10 symbols out of 8, wait ``T`` steps, then write
  them out again; the memoryless baseline has cross-entropy :math:`10 \ln 8 / (T + 20)`;
* **char**: next-character prediction on windows of ``T`` characters of
  :func:`jaxrnn.data.stdlib_corpus`, scored in bits per character; the memoryless baseline is
  the unigram entropy of the text.

The model is the same for every cell: an input map to ``hidden_size`` features (a dense layer,
or an embedding for token ids), ``num_layers`` pre-norm residual blocks

.. math::

    u^{(l)} = u^{(l-1)} + \operatorname{scan}_\text{cell}\bigl(\operatorname{LN}(u^{(l-1)})\bigr)

(the layout the LRU, Griffin and minGRU papers stack their recurrences in; with one layer it is
a plain recurrent network with a skip connection), then a dense head: on the last step for the
adding problem, on every step otherwise.

>>> import jax, jaxrnn as jr
>>> model = jr.models.long_range_model("adding", "min_gru", 4, length=10)
>>> xs, ys = model.batch(jax.random.key(0), 2)
>>> xs.shape, ys.shape, round(model.baseline, 3)
((2, 10, 2), (2,), 0.167)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn import data as _data
from jaxrnn import train as _train
from jaxrnn._checks import check_int, check_scalar, check_size
from jaxrnn._scan.scan import resolve_method

__all__ = [
    "ADDING_SOLVED_MSE",
    "COPY_SOLVED_ACCURACY",
    "LONG_RANGE_CELLS",
    "LongRangeConfig",
    "LongRangeModel",
    "LongRangeResult",
    "long_range_model",
    "train_long_range",
]

Task = Literal["adding", "copy", "char"]
TASKS = ("adding", "copy", "char")


def _heads(hidden: int) -> int:
    """sLSTM heads: 4 when they divide ``hidden`` (xLSTM's default), else 1."""
    return 4 if hidden % 4 == 0 else 1


#: The cells :func:`long_range_model` builds, by name: ``name -> factory(input, hidden)``.
#: Every factory is called with ``input == hidden`` (the residual blocks keep the width).
LONG_RANGE_CELLS: dict[str, Callable[[int, int], Any]] = {
    "lstm": lambda i, h: jaxrnn.lstm(i, h),
    "gru": lambda i, h: jaxrnn.gru(i, h),
    "min_gru": lambda i, h: jaxrnn.min_gru(i, h),
    "min_lstm": lambda i, h: jaxrnn.min_lstm(i, h),
    "lru": lambda i, h: jaxrnn.lru(i, h),
    "rg_lru": lambda i, h: jaxrnn.rg_lru(i, h),
    "slstm": lambda i, h: jaxrnn.slstm(i, h, num_heads=_heads(h)),
}

COPY_SYMBOLS = 8  # symbols to remember in copy memory (Arjovsky et al. 2016)
COPY_LENGTH = 10  # how many of them
#: The adding problem counts as solved below this held-out MSE (6% of the 1/6 baseline).
ADDING_SOLVED_MSE = 0.01
#: Copy memory counts as solved at this fraction of the copied symbols right, or more.
COPY_SOLVED_ACCURACY = 0.99
_LN_EPS = 1e-5  # layer-norm epsilon of the residual blocks


class LongRangeConfig(NamedTuple):
    """One training run on a long-range task.

    Attributes:
        task: ``"adding"``, ``"copy"`` or ``"char"``.
        length: the adding problem's ``T``, copy memory's delay ``T`` (sequences of
            ``T + 20``), or the characters per window of ``"char"``.
        cell: a key of :data:`LONG_RANGE_CELLS`.
        hidden_size: features of every block.
        num_layers: residual recurrent blocks.
        batch_size: sequences per step (fresh ones every step).
        steps: optimizer steps.
        learning_rate: peak learning rate of :func:`jaxrnn.train.default_optimizer`.
        eval_every: evaluate on a fixed held-out batch every this many steps (and at the end).
        eval_size: sequences in that batch.
        method: :func:`jaxrnn.scan`'s ``method``: ``"sequential"``, ``"associative"`` (the
            linear cells only), ``"newton"``, ``"auto"`` or a :class:`jaxrnn.newton.Newton`.
        seed: everything random follows from it.
    """

    task: Task = "adding"
    length: int = 100
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    batch_size: int = 32
    steps: int = 1000
    learning_rate: float = 3e-3
    eval_every: int = 50
    eval_size: int = 256
    method: Any = "sequential"
    seed: int = 0


class LongRangeModel(NamedTuple):
    """The model of :func:`long_range_model` as pure functions.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, xs) -> outputs``: ``(B,)`` for the adding problem, logits
            ``(B, T', classes)`` otherwise.
        loss: ``loss(params, xs, ys) -> (loss, metric)``: MSE and MSE (adding), cross-entropy
            and copied-symbol accuracy (copy), cross-entropy and bits per character (char).
        baseline: the loss of the best memoryless predictor.
        batch: ``batch(key, batch_size, *, held_out=False) -> (xs, ys)``, fresh task data
            (``held_out``: from the validation part of the text, for ``"char"``).
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    loss: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    baseline: float
    batch: Callable[..., tuple[jax.Array, jax.Array]]


class LongRangeResult(NamedTuple):
    """What :func:`train_long_range` measured.

    Attributes:
        config: the run.
        steps: the steps at which the model was evaluated.
        train_loss: the training loss at those steps.
        eval_loss: the held-out loss (MSE, or cross-entropy in nats per step).
        eval_metric: the held-out MSE (adding), copied-symbol accuracy (copy) or bits per
            character (char).
        baseline: the memoryless loss.
        solved_at: the first evaluated step meeting the threshold (MSE below
            :data:`ADDING_SOLVED_MSE`, accuracy at least :data:`COPY_SOLVED_ACCURACY`), or
            ``None`` (always for ``"char"``, which has no threshold).
        seconds: wall time of training, compilation included.
    """

    config: LongRangeConfig
    steps: list[int]
    train_loss: list[float]
    eval_loss: list[float]
    eval_metric: list[float]
    baseline: float
    solved_at: int | None
    seconds: float


@functools.lru_cache(maxsize=1)
def _char_data() -> tuple[_data.Vocab, np.ndarray, np.ndarray, float]:
    """Vocabulary, training and held-out ids of the stdlib corpus, and its unigram entropy."""
    text = _data.stdlib_corpus()
    vocab = _data.Vocab.from_text(text)
    train, val = _data.split_text(text, 0.1)
    train_ids, val_ids = vocab.encode(train), vocab.encode(val)
    counts = np.bincount(train_ids, minlength=vocab.size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return vocab, train_ids, val_ids, float(-(p * np.log(p)).sum())


def _windows(ids: jax.Array, key: jax.Array, batch_size: int, length: int):
    """``batch_size`` random windows of ``length + 1`` ids: (inputs, next-id targets)."""
    starts = jax.random.randint(key, (batch_size,), 0, ids.shape[0] - length - 1)
    rows = jax.vmap(lambda s: jax.lax.dynamic_slice(ids, (s,), (length + 1,)))(starts)
    return rows[:, :-1], rows[:, 1:]


def _layer_norm(x, scale, bias):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * scale + bias


def _check_method(method: Any, cell: str) -> Any:
    """``method`` if :func:`jaxrnn.scan` can run ``cell`` with it, else a ValueError (an unknown
    method gets ``jr.scan``'s own message; a linear method for a nonlinear cell names the
    config's ``cell``)."""
    built = LONG_RANGE_CELLS[cell](2, 2)
    if isinstance(method, str) and method == "associative" and built.linear is None:
        raise ValueError(
            f'method: "associative" needs a linear-recurrence cell '
            f"(min_gru, min_lstm, lru, rg_lru), got cell={cell!r}"
        )
    resolve_method(method, built)
    return method


def long_range_model(
    task: Task,
    cell: str,
    hidden_size: int = 64,
    *,
    num_layers: int = 1,
    length: int = 100,
    method: Any = "sequential",
) -> LongRangeModel:
    """The model of this module for ``task`` with ``num_layers`` residual blocks of ``cell``.

    Args:
        task: ``"adding"`` (inputs ``(B, T, 2)``, targets ``(B,)``), ``"copy"`` (token ids
            ``(B, T + 20)``, targets the same shape) or ``"char"`` (character ids ``(B, T)``,
            the next characters as targets).
        cell: a key of :data:`LONG_RANGE_CELLS`.
        hidden_size: features of every block.
        num_layers: residual recurrent blocks.
        length: the task's ``T``.
        method: passed to :func:`jaxrnn.scan`.

    Returns:
        A :class:`LongRangeModel`.

    Raises:
        ValueError: for an unknown ``task``, ``cell`` or ``method``, ``"associative"`` with a
            nonlinear cell, or sizes below 1 (the adding problem needs ``length >= 2``).

    >>> import jax, jaxrnn as jr
    >>> model = jr.models.long_range_model("copy", "gru", 4, length=5)
    >>> xs, ys = model.batch(jax.random.key(0), 2)
    >>> params = jax.jit(model.init)(jax.random.key(1))
    >>> jax.jit(model.apply)(params, xs).shape, round(model.baseline, 4)
    ((2, 25, 10), 0.8318)
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if not (isinstance(cell, str) and cell in LONG_RANGE_CELLS):
        raise ValueError(f"cell: expected one of {sorted(LONG_RANGE_CELLS)}, got {cell!r}")
    hidden_size = check_size("hidden_size", hidden_size)
    num_layers = check_size("num_layers", num_layers)
    length = check_int("length", length, low=2 if task == "adding" else 1)
    method = _check_method(method, cell)
    cells = tuple(LONG_RANGE_CELLS[cell](hidden_size, hidden_size) for _ in range(num_layers))
    in_size, out_size, baseline, batch = _task_data(task, length)
    spec = _Spec(task, cells, hidden_size, in_size, out_size, method)
    bind = functools.partial
    return LongRangeModel(bind(_init, spec), bind(_apply, spec), bind(_loss, spec), baseline, batch)


class _Spec(NamedTuple):
    """What :func:`long_range_model` resolves once and its pure functions read."""

    task: str
    cells: tuple  # one per residual block
    hidden_size: int
    in_size: int
    out_size: int
    method: Any


def _adding_batch(length: int, key, batch_size: int, *, held_out=False):
    """A fresh batch of the adding problem (there is no held-out part)."""
    del held_out
    return _data.adding_problem(key, batch_size, length)


def _copy_batch(length: int, key, batch_size: int, *, held_out=False):
    """A fresh batch of copy memory (there is no held-out part)."""
    del held_out
    return _data.copy_memory(
        key, batch_size, length, num_symbols=COPY_SYMBOLS, copy_length=COPY_LENGTH
    )


def _char_batch(train_ids, val_ids, length: int, key, batch_size: int, *, held_out=False):
    """Random windows of the training (or, ``held_out``, the validation) text."""
    return _windows(val_ids if held_out else train_ids, key, batch_size, length)


def _task_data(task: str, length: int) -> tuple[int, int, float, Callable[..., Any]]:
    """``(input size, output size, memoryless baseline, batch function)`` of ``task``."""
    if task == "adding":
        return 2, 1, 1.0 / 6.0, functools.partial(_adding_batch, length)
    if task == "copy":
        size = COPY_SYMBOLS + 2
        baseline = COPY_LENGTH * math.log(COPY_SYMBOLS) / (length + 2 * COPY_LENGTH)
        return size, size, baseline, functools.partial(_copy_batch, length)
    vocab, train_ids, val_ids, baseline = _char_data()
    train_ids, val_ids = jnp.asarray(train_ids), jnp.asarray(val_ids)
    batch = functools.partial(_char_batch, train_ids, val_ids, length)
    return vocab.size, vocab.size, baseline, batch


def _init(spec: _Spec, key):
    """``LongRangeModel.init``: input map, residual blocks and head, from one key."""
    lecun = jax.nn.initializers.lecun_normal()
    hidden = spec.hidden_size
    k_in, k_out, *k_cells = jax.random.split(key, 2 + len(spec.cells))
    return {
        "w_in": lecun(k_in, (spec.in_size, hidden), jnp.float32),
        "b_in": jnp.zeros((hidden,), jnp.float32),
        "blocks": [
            {
                "scale": jnp.ones((hidden,), jnp.float32),
                "bias": jnp.zeros((hidden,), jnp.float32),
                "cell": c.init(k),
            }
            for c, k in zip(spec.cells, k_cells, strict=True)
        ],
        "w_out": lecun(k_out, (hidden, spec.out_size), jnp.float32),
        "b_out": jnp.zeros((spec.out_size,), jnp.float32),
    }


def _apply(spec: _Spec, params, xs):
    """``LongRangeModel.apply``: the last step's output (adding), else every step's logits."""
    # token ids: a one-hot input times w_in is a row lookup
    u = xs @ params["w_in"] if spec.task == "adding" else _lookup(params["w_in"], xs)
    u = u + params["b_in"]
    for c, block in zip(spec.cells, params["blocks"], strict=True):
        normed = _layer_norm(u, block["scale"], block["bias"])
        _, ys = jaxrnn.scan(c, block["cell"], normed, method=spec.method)
        u = u + ys
    if spec.task == "adding":
        return (u[:, -1] @ params["w_out"] + params["b_out"])[:, 0]
    return u @ params["w_out"] + params["b_out"]


def _lookup(table, ids):
    """``table[ids]``; under an explicit mesh the rows come out split as ``ids`` is."""
    sharding = getattr(jax.typeof(ids), "sharding", None)
    spec = tuple(getattr(sharding, "spec", ()) or ())
    if not any(p is not None for p in spec):
        return table[ids]
    spec += (None,) * (ids.ndim - len(spec))
    out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec, None))
    return table.at[ids].get(out_sharding=out)


def _loss(spec: _Spec, params, xs, ys):
    """``LongRangeModel.loss``: ``(loss, metric)`` of the task."""
    out = _apply(spec, params, xs)
    if spec.task == "adding":
        mse = jnp.mean(jnp.square(out - ys))
        return mse, mse
    logp = jax.nn.log_softmax(out)
    ce = -jnp.mean(jnp.take_along_axis(logp, ys[..., None], axis=-1))
    if spec.task == "char":
        return ce, ce / math.log(2.0)
    # the last COPY_LENGTH steps, by a mask (slicing a time axis split over devices is not)
    copied = (jnp.argmax(out, -1) == ys).astype(jnp.float32)
    tail = (jnp.arange(ys.shape[-1]) >= ys.shape[-1] - COPY_LENGTH).astype(jnp.float32)
    return ce, jnp.sum(copied * tail) / (ys.shape[0] * COPY_LENGTH)


def _solved(task: str, metric: float) -> bool:
    if task == "adding":
        return metric < ADDING_SOLVED_MSE
    return task == "copy" and metric >= COPY_SOLVED_ACCURACY


def train_long_range(
    config: LongRangeConfig, *, log: Callable[[str], None] | None = None
) -> LongRangeResult:
    """Train :func:`long_range_model` on fresh batches of ``config.task``; evaluate as it goes.

    Every step draws a new batch (the tasks are generated, or windows at random places of the
    text, so there is hardly any overfitting to measure); every ``eval_every`` steps, and after
    the last, the model is scored on one fixed held-out batch. The optimizer is
    :func:`jaxrnn.train.default_optimizer` (gradient clipping, AdamW, warm-up and cosine decay
    over ``steps``), the step :func:`jaxrnn.train.make_train_step`.

    Args:
        config: the run.
        log: called with one line per evaluation (e.g. ``print``).

    Returns:
        A :class:`LongRangeResult`.

    Raises:
        TypeError: if ``config`` is not a :class:`LongRangeConfig`.
        ValueError: for a field out of range (the message names it), as
            :func:`long_range_model` for the model's fields.

    >>> import jaxrnn as jr
    >>> config = jr.models.LongRangeConfig(task="adding", length=4, cell="min_gru",
    ...                                    hidden_size=2, steps=1, batch_size=2, eval_size=2)
    >>> result = jr.models.train_long_range(config)
    >>> result.steps, result.solved_at is None or result.solved_at == 1
    ([1], True)
    """
    if not isinstance(config, LongRangeConfig):
        raise TypeError(f"config: expected a LongRangeConfig, got {type(config).__name__}")
    steps = check_int("steps", config.steps, low=1)
    eval_every = check_int("eval_every", config.eval_every, low=1)
    batch_size = check_size("batch_size", config.batch_size)
    eval_size = check_size("eval_size", config.eval_size)
    seed = check_int("seed", config.seed)
    lr = check_scalar("learning_rate", config.learning_rate, low=0.0, low_open=True)
    model = long_range_model(
        config.task,
        config.cell,
        config.hidden_size,
        num_layers=config.num_layers,
        length=config.length,
        method=config.method,
    )
    k_init, k_data, k_eval, k_state = jax.random.split(jax.random.key(seed), 4)
    optimizer = _train.default_optimizer(float(lr), steps)
    state = _train.init_state(jax.jit(model.init)(k_init), optimizer, k_state)

    def loss_fn(params, carry, batch, key):
        del key
        loss, _ = model.loss(params, *batch)
        return loss, carry

    train_step = _train.make_train_step(loss_fn, optimizer)
    draw = jax.jit(functools.partial(model.batch, batch_size=batch_size))
    eval_batch = jax.jit(functools.partial(model.batch, batch_size=eval_size, held_out=True))(
        k_eval
    )
    evaluate = jax.jit(model.loss)
    result = LongRangeResult(config, [], [], [], [], model.baseline, None, 0.0)
    solved_at = None
    start = time.perf_counter()
    for step in range(1, steps + 1):
        state, metrics = train_step(state, draw(jax.random.fold_in(k_data, step)))
        if step % eval_every and step != steps:
            continue
        eval_loss, metric = (float(v) for v in evaluate(state.params, *eval_batch))
        result.steps.append(step)
        result.train_loss.append(float(metrics["loss"]))
        result.eval_loss.append(eval_loss)
        result.eval_metric.append(metric)
        if solved_at is None and _solved(config.task, metric):
            solved_at = step
        if log is not None:
            log(
                f"{config.cell} {config.task} T={config.length} step {step}: loss "
                f"{eval_loss:.4f} (baseline {model.baseline:.4f}) metric {metric:.4f}"
            )
    return result._replace(solved_at=solved_at, seconds=time.perf_counter() - start)
