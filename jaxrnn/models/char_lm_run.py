"""The end-to-end run behind ``python -m jaxrnn demo``: train :func:`char_lm` on a text, resumably.

:class:`CharLMConfig` holds a run's hyperparameters and builds its model, optimizer and initial
state; :func:`train_char_lm` trains on a text with truncated BPTT, saving and resuming from
checkpoints whose metadata (:func:`run_metadata`) describes the run (:class:`CharLMRun` is what
it returns); :func:`stored_run` reads back the validated settings of a checkpoint directory, to
resume with, and :func:`load_char_lm` rebuilds the model from one, for sampling. Stored metadata
is data, never trusted: anything else than what :func:`run_metadata` writes is refused.

The model itself (:func:`char_lm`, its loss, evaluation and sampler) is
:mod:`jaxrnn.models.language_model`. This module uses only the public API of
:mod:`jaxrnn.train` and :mod:`jaxrnn.data`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxrnn import data as _data
from jaxrnn import train as _train
from jaxrnn.models.language_model import CELLS, CharLM, char_lm, evaluate_lm, lm_loss

__all__ = [
    "CharLMConfig",
    "CharLMRun",
    "load_char_lm",
    "run_metadata",
    "stored_run",
    "train_char_lm",
]


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
        mesh: a mesh with a ``"data"`` axis (:func:`jaxrnn.train.data_mesh`,
            :func:`jaxrnn.train.model_mesh` to split the parameters over ``"model"`` too, or
            ``jax.make_mesh``; explicit or auto axes), ``None``, or ``"auto"``: a
            :func:`jaxrnn.train.data_mesh` of every device when there are several and they
            divide the batch (with several processes, each feeding its own rows: the devices
            of all of them).
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
    eval_fn = _validation(model, config, vocab.encode(val_text))
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
                _check_resumes_run(ckpt, meta)
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


def _validation(model: CharLM, config: CharLMConfig, val_ids):
    """``eval_fn(state) -> {"loss": ...}`` on up to ``eval_chunks`` held-out chunks, or
    ``None`` (no evaluation asked for, or too little held-out text for one batch)."""
    if config.eval_chunks > 0 and val_ids.size >= (config.batch_size + 1) * config.seq_len:
        val = _data.TextBatches(val_ids, config.batch_size, config.seq_len)
        n = min(config.eval_chunks, val.num_chunks)
        chunks = jax.tree.map(lambda *xs: jnp.stack(xs), *[val(k) for k in range(n)])
        return lambda s: {"loss": evaluate_lm(model, _train.local_copy(s.params), chunks)}
    return None


def _check_resumes_run(ckpt, meta: Mapping[str, Any]) -> None:
    """The run stored in ``ckpt`` is the one described by ``meta`` (else a ValueError)."""
    stored_config, stored_vocab, corpus_info = _parse_run(ckpt.metadata(), ckpt.directory)
    stored = {
        "config": dataclasses.asdict(stored_config),
        "vocab": stored_vocab.to_json(),
        "corpus": corpus_info,
    }
    _check_same_run(stored, meta, ckpt.directory)


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
