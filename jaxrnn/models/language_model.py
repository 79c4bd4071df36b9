r"""A character-level language model, trained with :mod:`jaxrnn.train` like any user's model.

Embedding, recurrent layers (:func:`jaxrnn.rnn`), and a dense head over the vocabulary, as pure
functions (:func:`char_lm`); its next-character loss in the form
:func:`jaxrnn.train.make_train_step` takes (:func:`lm_loss`); held-out evaluation with the carry
passed from chunk to chunk (:func:`evaluate_lm`); sampling, one ``lax.scan`` step per generated
token (:func:`sample`); and the end-to-end run behind ``python -m jaxrnn demo``:
:class:`CharLMConfig`, :func:`train_char_lm` (truncated BPTT over a text, resumable from
checkpoints), :func:`load_char_lm` (rebuild the model from a checkpoint directory) and
:func:`stored_run` (the validated settings of a checkpoint directory, to resume with).

This module uses only the public API of :mod:`jaxrnn.train`, :mod:`jaxrnn.data` and
:mod:`jaxrnn.losses`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxrnn import data as _data
from jaxrnn import losses as _losses
from jaxrnn import train as _train
from jaxrnn._checks import check_ids, check_int, check_probability, check_scalar, is_concrete
from jaxrnn.cells import gru, lstm, simple_rnn
from jaxrnn.layers import rnn
from jaxrnn.precision import policy
from jaxrnn.regularizers import embedding_dropout as _embedding_dropout
from jaxrnn.regularizers import regularize

__all__ = [
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
    "stored_run",
    "train_char_lm",
]


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
            zero carry; ``key`` (a fresh one per batch) enables dropout and the other
            regularisers, without one the model is deterministic (their expectation).
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
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    weight_drop: float = 0.0,
    embedding_dropout: float = 0.0,
    param_dtype: Any = jnp.float32,
    dtype: Any = None,
) -> CharLM:
    """Embedding -> recurrent layers (:func:`jaxrnn.rnn`) -> dense head over the vocabulary.

    .. math::

        e_t = E[x_t], \\qquad (a_t, h_t) = \\text{cell}(a_{t-1}, e_t), \\qquad
        p(x_{t+1} \\mid x_{\\le t}) = \\operatorname{softmax}(h_t W + b)

    The regularisers (rates in ``[0, 1)``, all 0 by default: the plain model) act only when
    ``apply`` gets a ``key``, as in training; without one the model computes their expectation.
    The cell-level ones are :func:`jaxrnn.regularize`'s, applied to every layer.

    Args:
        vocab_size: ``V``.
        hidden_size: ``H`` of every recurrent layer.
        cell: one of :data:`CELLS`: ``lstm``, ``gru``, ``rnn`` (Elman), ``peephole`` (LSTM
            with peepholes), ``coupled`` (LSTM with coupled input and forget gates).
        embed_size: ``E``.
        num_layers: stacked recurrent layers.
        dropout: dropout between layers and before the head, a new mask at every step.
        input_dropout: variational dropout on every recurrent layer's inputs, one mask per
            sequence (:func:`jaxrnn.variational_dropout`, Gal & Ghahramani 2016).
        recurrent_dropout: variational dropout on the hidden state the cells read.
        zoneout: probability that a unit of the state (``h``, and an LSTM's ``c``) keeps its
            previous value (:func:`jaxrnn.zoneout`, Krueger et al. 2017).
        weight_drop: DropConnect on the recurrent matrices ``w_hh``, one mask per batch
            (:func:`jaxrnn.weight_drop`, Merity et al. 2018).
        embedding_dropout: probability of dropping a whole character type for a batch
            (:func:`jaxrnn.embedding_dropout`).
        param_dtype: storage dtype of every parameter (float32: the optimizer's master
            weights).
        dtype: dtype of the matmul operands, recurrent and head (default ``param_dtype``;
            ``jnp.bfloat16`` for mixed precision, see :mod:`jaxrnn.precision`). The carry and
            the logits stay float32.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.models.char_lm(10, 16, cell="gru", embed_size=8)
    >>> params = model.init(jax.random.key(0))
    >>> ids = jnp.zeros((2, 5), jnp.int32)  # (batch, time)
    >>> carry, logits = jax.jit(model.apply)(params, model.initial_carry((2,)), ids)
    >>> logits.shape, carry[0].shape
    ((2, 5, 10), (2, 16))
    """
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
    dropout = check_probability("dropout", dropout)
    cell_rates = {
        "input_dropout": check_probability("input_dropout", input_dropout),
        "recurrent_dropout": check_probability("recurrent_dropout", recurrent_dropout),
        "zoneout": check_probability("zoneout", zoneout),
        "weight_drop": check_probability("weight_drop", weight_drop),
    }
    embedding_dropout = check_probability("embedding_dropout", embedding_dropout)
    regularised = any(cell_rates.values())
    keyed = dropout > 0.0 or embedding_dropout > 0.0 or regularised
    cell_fn, cell_kwargs = CELLS[cell]
    pol = policy(param_dtype, dtype)
    net = rnn(
        cell_fn,
        embed_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        transform=functools.partial(regularize, **cell_rates) if regularised else None,
        param_dtype=pol.param_dtype,
        dtype=pol.dtype,
        **cell_kwargs,
    )
    embed_init = jax.nn.initializers.normal(1.0)
    head_init = jax.nn.initializers.lecun_normal()

    def init(key):
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return CharLMParams(
            embed=embed_init(k_embed, (vocab_size, embed_size), pol.param_dtype),
            rnn=net.init(k_rnn),
            w_out=head_init(k_out, (net.output_size, vocab_size), pol.param_dtype),
            b_out=jnp.zeros((vocab_size,), pol.param_dtype),
        )

    def apply(params, carry, ids, *, reset=None, key=None):
        if reset is not None:  # zeros of each leaf's dtype (zoneout counts steps in int32)
            carry = jax.tree.map(
                lambda c: jnp.where(
                    reset.reshape((-1,) + (1,) * (c.ndim - 1)), jnp.zeros((), c.dtype), c
                ),
                carry,
            )
        k_net = k_out = k_embed = None
        if key is not None and keyed:
            if embedding_dropout > 0.0:
                k_net, k_out, k_embed = jax.random.split(key, 3)
            else:
                k_net, k_out = jax.random.split(key)
        xs = _embedding_dropout(k_embed, params.embed, embedding_dropout)[ids]
        carry, ys = net.apply(params.rnn, xs, carry, key=k_net)
        if k_out is not None and dropout > 0.0:
            keep = jax.random.bernoulli(k_out, 1.0 - dropout, ys.shape)
            ys = jnp.where(keep, ys / (1.0 - dropout), jnp.zeros((), ys.dtype))
        return carry, pol.dot(ys, params.w_out) + pol.acc(params.b_out)

    config = (
        ("factory", "char_lm"),
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("cell", cell),
        ("embed_size", embed_size),
        ("num_layers", num_layers),
        ("dropout", dropout),
        *cell_rates.items(),
        ("embedding_dropout", embedding_dropout),
        *pol.config(),
    )
    return CharLM(init, apply, net.initial_carry, vocab_size, config)


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean negative log-likelihood (nats) of integer ``targets`` under ``logits``."""
    return _losses.softmax_cross_entropy(logits, targets, reduction="mean")


def lm_loss(model: CharLM) -> _train.state.LossFn:
    """The next-character cross-entropy of ``model`` as a :func:`jaxrnn.train.make_train_step` loss.

    The batch is a :class:`jaxrnn.data.TextBatches` batch: ``inputs``, ``targets`` ``(B, T)``
    and ``reset`` ``(B,)``; the carry runs from chunk to chunk.
    """

    def loss_fn(params, carry, batch, key):
        carry, logits = model.apply(
            params, carry, batch["inputs"], reset=batch.get("reset"), key=key
        )
        return _cross_entropy(logits, batch["targets"]), carry

    return loss_fn


def evaluate_lm(model: CharLM, params: CharLMParams, chunks: Any) -> jax.Array:
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
        return carry, _cross_entropy(logits, batch["targets"])

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
        prompt: ``(P,)`` integer token ids in ``[0, V)``, ``P >= 1``.
        length: number of tokens to generate, an int ``>= 0``.
        temperature: softmax temperature, a finite number ``>= 0`` (Python, NumPy or a
            concrete JAX scalar; it selects the compiled sampler, so it cannot be traced).
        num_samples: independent samples drawn in parallel, an int ``>= 1``.

    Returns:
        ``(num_samples, length)`` int32 token ids (the prompt excluded).

    Raises:
        ValueError: if the prompt is empty or holds ids outside ``[0, V)`` (a traced prompt,
            under ``jax.jit``, is not range-checked), or ``temperature``, ``length`` or
            ``num_samples`` is out of range (NaN or infinite temperatures included).
        TypeError: if the prompt is not integer or ``temperature`` not a real number.

    >>> import jax, jaxrnn as jr
    >>> model = jr.models.char_lm(5, 8, embed_size=4)
    >>> params = model.init(jax.random.key(0))
    >>> ids = jr.models.sample(model, params, jax.random.key(1), [0, 1], 7, num_samples=3)
    >>> ids.shape, ids.dtype.name
    ((3, 7), 'int32')
    """
    if not isinstance(prompt, jax.Array | np.ndarray):
        prompt = np.asarray(prompt)
    if prompt.size < 1:
        raise ValueError("prompt: the prompt needs at least one token, got none")
    prompt = check_ids("prompt", prompt.reshape(-1), model.vocab_size).astype(jnp.int32)
    temperature = check_scalar("temperature", temperature, low=0.0)
    if not is_concrete(temperature):
        raise TypeError("temperature: expected a concrete number, got a traced value")
    length = check_int("length", length, low=0)
    num_samples = check_int("num_samples", num_samples, low=1)
    fn = _sampler(model, length, temperature, num_samples)
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
    dtype: str = "float32"  # matmul operands (jaxrnn.precision); parameters stay float32
    # char_lm's other regularisers: rates in [0, 1), used in training only. (Added last, so
    # that positional arguments keep their meaning.)
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0

    def model(self, vocab_size: int) -> CharLM:
        """The :func:`char_lm` these settings describe."""
        return char_lm(
            vocab_size,
            self.hidden_size,
            cell=self.cell,
            embed_size=self.embed_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout,
            weight_drop=self.weight_drop,
            embedding_dropout=self.embedding_dropout,
            dtype=jnp.dtype(self.dtype),
        )

    def optimizer(self) -> optax.GradientTransformation:
        """The :func:`jaxrnn.train.default_optimizer` these settings describe."""
        return _train.default_optimizer(
            self.learning_rate,
            self.steps,
            warmup_steps=self.warmup_steps,
            clip_norm=self.clip_norm,
            weight_decay=self.weight_decay,
        )

    def init_state(self, model: CharLM) -> _train.TrainState:
        """The step-0 :class:`jaxrnn.train.TrainState` (params from ``seed``, zero carry)."""
        k_init, k_train = jax.random.split(jax.random.key(self.seed))
        return _train.init_state(
            model.init(k_init),
            self.optimizer(),
            k_train,
            model.initial_carry((self.batch_size,)),
        )


class CharLMRun(NamedTuple):
    """What :func:`train_char_lm` returns."""

    model: CharLM
    state: _train.TrainState
    history: _train.History
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
        corpus: a name for the corpus, stored in checkpoint metadata (e.g. a path); only a
            name: resuming compares the digest of ``text`` with the stored one and never
            reads the stored name (see :func:`stored_run`).
        stop_at: stop after this many steps in total (default ``config.steps``, the length of
            the learning-rate schedule).
        checkpoint_dir: where to save and resume.
        save_every: checkpoint period.
        max_to_keep: checkpoints kept.
        eval_every: validation period.
        mesh: a data-parallel mesh, ``None``, or ``"auto"``: every device when there are
            several and they divide the batch (with several processes, each feeding its own
            rows: the devices of all of them).
        progress: show the progress bar.

    Raises:
        jaxrnn.train.CheckpointError: if the checkpoint directory is unusable (not a
            directory, not writable, in use by another writer) or its latest checkpoint cannot
            be restored (invalid metadata, corrupt state).
        ValueError: if the checkpoints were written for another config or corpus.
        jaxrnn.train.NonFiniteLossError: if the loss becomes NaN or infinite (the latest
            checkpoint is the last good state).
        jaxrnn.train.Interrupted: on Ctrl-C or ``SIGTERM``, after saving the last completed
            step (with ``checkpoint_dir``).
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
        eval_fn = lambda s: {"loss": evaluate_lm(model, _train.local_copy(s.params), chunks)}
    if mesh == "auto":
        n_dev = len(jax.devices())
        mesh = _train.data_mesh() if n_dev > 1 and config.batch_size % n_dev == 0 else None
    batches = _train.local_batches(batches, mesh)  # with several processes, their own rows

    state, history, ckpt = config.init_state(model), _train.History(), None
    if mesh is not None:
        state = _train.shard_state(state, mesh)
    if checkpoint_dir is not None:
        meta = run_metadata(config, vocab, corpus, text)
        ckpt = _train.Checkpoints(
            checkpoint_dir, save_every=save_every, max_to_keep=max_to_keep, config=meta
        )
    try:
        if ckpt is not None:
            if ckpt.latest_step() is not None:
                stored_config, stored_vocab, corpus_info = _parse_run(
                    ckpt.metadata(), ckpt.directory
                )
                stored = {
                    "config": dataclasses.asdict(stored_config),
                    "vocab": stored_vocab.to_json(),
                    "corpus": corpus_info,
                }
                _check_same_run(stored, meta, ckpt.directory)
            state, history = ckpt.resume(state)
        step = _train.make_train_step(lm_loss(model), config.optimizer(), mesh=mesh)
        state, history = _train.fit(
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


def _check_same_run(stored: Mapping[str, Any], current: Mapping[str, Any], where: str):
    """``stored`` and ``current`` are validated run metadata (:func:`_parse_run`)."""
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


_POSITIVE_INTS = ("hidden_size", "embed_size", "num_layers", "batch_size", "seq_len", "steps")
_NON_NEGATIVE_INTS = ("warmup_steps", "eval_chunks", "seed")
_DTYPES = ("float32", "bfloat16", "float16")
_RATES = ("dropout", "input_dropout", "recurrent_dropout", "zoneout", "weight_drop")
_PROBABILITIES = (*_RATES, "embedding_dropout", "val_fraction")


def _config_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid stored ``CharLMConfig.<name>``, or ``None`` if it is."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_real = (is_int or isinstance(value, float)) and math.isfinite(value)
    if name in _POSITIVE_INTS:
        return None if is_int and value >= 1 else "a positive int"
    if name in _NON_NEGATIVE_INTS:
        return None if is_int and value >= 0 else "an int >= 0"
    if name in _PROBABILITIES:
        return None if is_real and 0 <= value < 1 else "a number in [0, 1)"
    if name == "learning_rate":
        return None if is_real and value > 0 else "a finite number > 0"
    if name in ("clip_norm", "weight_decay"):
        return None if is_real and value >= 0 else "a finite number >= 0"
    if name == "cell":
        return None if isinstance(value, str) and value in CELLS else f"one of {sorted(CELLS)}"
    if name == "dtype":
        return None if isinstance(value, str) and value in _DTYPES else f"one of {_DTYPES}"
    return "a known setting"  # pragma: no cover (every field is listed above)


def _parse_run(
    meta: Mapping[str, Any], where: str
) -> tuple[CharLMConfig, _data.Vocab, dict[str, Any]]:
    """Validate the run metadata of a checkpoint's ``meta``: ``(config, vocab, corpus)``.

    Stored metadata is data, never trusted: anything else than what :func:`run_metadata`
    writes (or a vocabulary of another size than the stored embedding) is a
    :class:`jaxrnn.train.CheckpointError` naming the problem.
    """

    def bad(problem: str):
        raise _train.CheckpointError(f"{where}: {problem}")

    stored = meta.get("config")

    if not isinstance(stored, Mapping) or stored.get("kind") != "char_lm":
        bad("holds no train_char_lm checkpoint (its metadata names no char_lm run)")
    unknown = sorted(set(stored) - {"kind", "config", "vocab", "corpus"})
    if unknown:
        bad(f"unknown keys in the stored run metadata: {', '.join(map(str, unknown))}")
    raw = stored.get("config")
    if not isinstance(raw, Mapping):
        bad("the stored config is not a JSON object")
    fields = {f.name for f in dataclasses.fields(CharLMConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        bad(f"unknown keys in the stored config: {', '.join(map(str, unknown))}")
    for name, value in raw.items():
        problem = _config_problem(name, value)
        if problem is not None:
            bad(f"the stored config's {name} is {value!r}, expected {problem}")
    config = CharLMConfig(**raw)  # settings it lacks (older versions) take their defaults
    tokens = stored.get("vocab")
    if not isinstance(tokens, list) or not tokens:
        bad("the stored vocabulary is empty or not a list of tokens")
    try:
        vocab = _data.Vocab.from_json(tokens)
    except ValueError as e:
        bad(f"the stored vocabulary is invalid ({e})")
    corpus = stored.get("corpus")
    if not (
        isinstance(corpus, Mapping)
        and isinstance(corpus.get("source"), str)
        and isinstance(corpus.get("chars"), int)
        and not isinstance(corpus.get("chars"), bool)
        and corpus["chars"] >= 0
        and isinstance(corpus.get("sha256"), str)
        and len(corpus["sha256"]) == 64
        and all(c in "0123456789abcdef" for c in corpus["sha256"])
    ):
        bad("the stored corpus description is malformed (expected source, chars, sha256)")
    tree = meta.get("tree")
    for row in tree if isinstance(tree, list) else ():
        is_embed = isinstance(row, list) and len(row) == 3 and row[0] == "params.embed"
        if is_embed and (not isinstance(row[2], list) or row[2][:1] != [vocab.size]):
            bad(
                f"the stored vocabulary has {vocab.size} tokens but the stored embedding has "
                f"shape {row[2]}"
            )
    return config, vocab, dict(corpus)


def stored_run(
    checkpoint_dir: str | os.PathLike, *, step: int | None = None
) -> tuple[CharLMConfig, dict[str, Any]] | None:
    """The validated settings of the :func:`train_char_lm` run in ``checkpoint_dir``.

    Read-only (no lock, nothing written), so it can look at a directory another process
    trains in. Nothing stored is trusted: the run metadata is validated as
    :func:`load_char_lm` does, and nothing in it is acted on. In particular the corpus is
    described (``meta["config"]["corpus"]``: ``source``, a name; ``chars``; ``sha256``) but
    never opened: to resume, read the text the user names (or the default corpus) and pass it
    to :func:`train_char_lm`, which refuses it unless its digest is the stored one.

    Args:
        checkpoint_dir: a directory written by :func:`train_char_lm`.
        step: which checkpoint (default: the latest).

    Returns:
        ``(config, meta)``: the run's :class:`CharLMConfig` and the checkpoint's metadata
        (``meta["step"]``; ``meta["config"]``, the validated :func:`run_metadata`), or
        ``None`` if the directory does not exist or holds no checkpoint (a fresh start).

    Raises:
        jaxrnn.train.CheckpointError: if the metadata is unreadable or not a valid
            ``train_char_lm`` run.
    """
    try:
        ckpt = _train.Checkpoints(checkpoint_dir, create=False)
    except FileNotFoundError:
        return None
    with ckpt:
        if step is None and ckpt.latest_step() is None:
            return None
        meta = ckpt.metadata(step)
        config, _, _ = _parse_run(meta, ckpt.directory)
    return config, meta


def load_char_lm(checkpoint_dir: str | os.PathLike, *, step: int | None = None, verify=True):
    """Rebuild a :func:`train_char_lm` model from its checkpoint directory, for sampling.

    Read-only: it takes no lock, so it may read a directory another process trains in. The
    stored settings are validated (:func:`stored_run`) and the state verified against its
    digest.

    Args:
        checkpoint_dir: a directory written by :func:`train_char_lm`.
        step: which checkpoint (default: the latest).
        verify: verify the state's digest (``False`` is dangerous: see
            :class:`jaxrnn.train.Checkpoints`).

    Returns:
        ``(model, params, vocab, config, meta)`` where ``meta`` is the checkpoint's metadata.

    Raises:
        FileNotFoundError: if the directory does not exist.
        jaxrnn.train.CheckpointError: if it holds no readable, valid checkpoint (settings of
            the wrong type or unknown, an empty vocabulary or one that does not match the
            stored embedding, a state failing its digest).
    """
    with _train.Checkpoints(checkpoint_dir, create=False, verify=verify) as ckpt:
        meta = ckpt.metadata(step)
        config, vocab, _ = _parse_run(meta, ckpt.directory)
        model = config.model(vocab.size)
        template = jax.eval_shape(lambda: config.init_state(model))
        state = ckpt.restore(template, step=meta["step"])
    return model, state.params, vocab, config, meta


def bits_per_char(loss: float) -> float:
    """Convert a cross-entropy in nats to bits."""
    return loss / math.log(2.0)
