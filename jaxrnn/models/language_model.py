r"""A character-level language model, trained with :mod:`jaxrnn.train` like any user's model.

Embedding, recurrent layers (:func:`jaxrnn.rnn`), and a dense head over the vocabulary, as pure
functions (:func:`char_lm`); its next-character loss in the form
:func:`jaxrnn.train.make_train_step` takes (:func:`lm_loss`); held-out evaluation with the carry
passed from chunk to chunk (:func:`evaluate_lm`, :func:`bits_per_char`); and sampling, one
``lax.scan`` step per generated token (:func:`sample`). The end-to-end run behind
``python -m jaxrnn demo`` (its settings, training resumable from checkpoints, reloading a trained
model) is :mod:`jaxrnn.models.char_lm_run`.

This module uses only the public API of :mod:`jaxrnn.train` and :mod:`jaxrnn.losses`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import losses as _losses
from jaxrnn import train as _train
from jaxrnn._checks import (
    check_ids,
    check_int,
    check_memory,
    check_probability,
    check_scalar,
    check_size,
    is_concrete,
)
from jaxrnn._sharding import batch_spec as _batch_spec
from jaxrnn._sharding import explicit_mesh as _explicit_mesh
from jaxrnn.cells import gru, lstm, simple_rnn
from jaxrnn.layers import rnn
from jaxrnn.precision import policy
from jaxrnn.regularizers import embedding_dropout as _embedding_dropout
from jaxrnn.regularizers import regularize

__all__ = [
    "CELLS",
    "CharLM",
    "CharLMParams",
    "bits_per_char",
    "char_lm",
    "evaluate_lm",
    "lm_loss",
    "sample",
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

    Raises:
        ValueError: if ``cell`` is unknown, ``vocab_size`` or another size is not a positive
            int, or a rate is not in ``[0, 1)``.

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
    vocab_size = check_size("vocab_size", vocab_size)
    embed_size = check_size("embed_size", embed_size)
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
    spec = _LMSpec(net, pol, vocab_size, embed_size, dropout, embedding_dropout, keyed)
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
    init, apply = functools.partial(_lm_init, spec), functools.partial(_lm_apply, spec)
    return CharLM(init, apply, net.initial_carry, vocab_size, config)


class _LMSpec(NamedTuple):
    """What :func:`char_lm` resolves once and its pure functions read."""

    net: Any  # the recurrent layers (jr.rnn)
    pol: Any
    vocab_size: int
    embed_size: int
    dropout: float
    embedding_dropout: float
    keyed: bool  # whether a key draws any mask


def _lm_init(spec: _LMSpec, key) -> CharLMParams:
    """``CharLM.init``: embedding N(0, 1), recurrent layers, LeCun-normal head, zero bias."""
    pdt = spec.pol.param_dtype
    k_embed, k_rnn, k_out = jax.random.split(key, 3)
    return CharLMParams(
        embed=jax.nn.initializers.normal(1.0)(k_embed, (spec.vocab_size, spec.embed_size), pdt),
        rnn=spec.net.init(k_rnn),
        w_out=jax.nn.initializers.lecun_normal()(
            k_out, (spec.net.output_size, spec.vocab_size), pdt
        ),
        b_out=jnp.zeros((spec.vocab_size,), pdt),
    )


def _reset_carry(carry, reset):
    """``carry`` with zeros (of each leaf's dtype) in the rows where ``reset`` is set."""
    return jax.tree.map(
        lambda c: jnp.where(reset.reshape((-1,) + (1,) * (c.ndim - 1)), jnp.zeros((), c.dtype), c),
        carry,
    )


def _lm_apply(spec: _LMSpec, params, carry, ids, *, reset=None, key=None):
    """``CharLM.apply``: ``(carry, logits)``, dropout drawn from ``key`` when given."""
    dropout, embedding_dropout = spec.dropout, spec.embedding_dropout
    if reset is not None:  # zeros of each leaf's dtype (zoneout counts steps in int32)
        carry = _reset_carry(carry, reset)
    k_net = k_out = k_embed = None
    if key is not None and spec.keyed:
        if embedding_dropout > 0.0:
            k_net, k_out, k_embed = jax.random.split(key, 3)
        else:
            k_net, k_out = jax.random.split(key)
    xs = _lookup(_embedding_dropout(k_embed, params.embed, embedding_dropout), ids)
    carry, ys = spec.net.apply(params.rnn, xs, carry, key=k_net)
    if k_out is not None and dropout > 0.0:
        keep = jax.random.bernoulli(k_out, 1.0 - dropout, ys.shape)
        ys = jnp.where(keep, ys / (1.0 - dropout), jnp.zeros((), ys.dtype))
    ys, w_out, b_out = _head_operands(ys, params.w_out, params.b_out)
    return carry, spec.pol.dot(ys, w_out) + spec.pol.acc(b_out)


def _lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``table[ids]``, split like ``ids`` under an explicit mesh.

    With ``ids`` sharded over an ``Explicit`` mesh axis (the batch rows), the gather's result
    sharding is ambiguous to JAX: it is the ids' sharding, the table's rows gathered whole
    (a table split over ``"model"`` is gathered first). Elsewhere a plain ``table[ids]``.
    """
    mesh = _explicit_mesh(ids, table)
    if mesh is None:
        return table[ids]
    spec = _batch_spec(ids, tuple(range(ids.ndim))) or (None,) * ids.ndim
    table = jax.sharding.reshard(table, jax.sharding.NamedSharding(mesh, jax.P()))
    out = jax.sharding.NamedSharding(mesh, jax.P(*spec, None))
    return table.at[ids].get(out_sharding=out)


def _head_operands(ys: jax.Array, w_out: jax.Array, b_out: jax.Array):
    """The output layer's operands, unambiguous under an explicit mesh.

    Under a mesh whose ``"model"`` axis splits the features of ``ys`` and the rows of
    ``w_out``, the product's sharding is ambiguous to JAX (a contraction over a split axis):
    ``ys`` keeps its batch split and gathers its features, the head's weights are gathered
    whole (their gradients come back with the weights' own sharding), so the logits are split
    by rows only. Elsewhere the operands as they are.
    """
    mesh = _explicit_mesh(ys)
    if mesh is None:
        return ys, w_out, b_out
    rows = _batch_spec(ys, (0, 1)) or (None, None)
    ys = jax.sharding.reshard(ys, jax.sharding.NamedSharding(mesh, jax.P(*rows, None)))
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    return ys, jax.sharding.reshard(w_out, replicated), jax.sharding.reshard(b_out, replicated)


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
    # The result alone, int32 ids: sizes no machine holds are refused before any work.
    check_memory(
        f"sample(length={length}, num_samples={num_samples}): the samples",
        4 * length * num_samples,
        "draw fewer or shorter samples (the jaxrnn command streams samples of any size)",
    )
    fn = _sampler(model, length, temperature, num_samples)
    return fn(params, key, prompt)


def _sample_chunks(
    model: CharLM,
    params: CharLMParams,
    key: jax.Array,
    prompt: Any,
    length: int,
    *,
    temperature: float,
    chunk: int,
):
    """The tokens of one sample after ``prompt``, ``chunk`` at a time: a generator of ``(n,)``
    int32 NumPy arrays, ``n <= chunk``, ``length`` tokens in all.

    For samples too long to hold at once (``jaxrnn sample --length`` of any size): memory is
    bounded by ``chunk``, and each chunk is a jitted ``lax.scan`` of :func:`sample`'s step
    (chunk ``i`` draws from ``fold_in(key, i)``, so the tokens differ from :func:`sample`'s).
    Arguments are checked as :func:`sample` checks them.
    """
    prompt = check_ids("prompt", np.asarray(prompt).reshape(-1), model.vocab_size)
    if prompt.size < 1:
        raise ValueError("prompt: the prompt needs at least one token, got none")
    temperature = check_scalar("temperature", temperature, low=0.0)
    length = check_int("length", length, low=0)
    chunk = check_int("chunk", chunk, low=1)
    start, steps = _chunked_sampler(model, float(temperature))
    state = start(params, jnp.asarray(prompt, jnp.int32))
    for i, done in enumerate(range(0, length, chunk)):
        state, tokens = steps(params, state, jax.random.fold_in(key, i), min(chunk, length - done))
        yield np.asarray(tokens)


@functools.lru_cache(maxsize=8)
def _chunked_sampler(model: CharLM, temperature: float):
    """``(start, steps)`` of :func:`_sample_chunks`: read the prompt; draw ``n`` tokens."""

    @jax.jit
    def start(params, prompt):
        carry, logits = model.apply(params, model.initial_carry((1,)), prompt[None])
        return carry, logits[:, -1]

    @functools.partial(jax.jit, static_argnums=3)
    def steps(params, state, key, n):
        def body(state, k):
            carry, last = state
            if temperature > 0.0:
                token = jax.random.categorical(k, last / temperature, axis=-1)
            else:
                token = jnp.argmax(last, axis=-1)
            token = token.astype(jnp.int32)
            carry, logits = model.apply(params, carry, token[:, None])
            return (carry, logits[:, 0]), token[0]

        return jax.lax.scan(body, state, jax.random.split(key, n))

    return start, steps


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


def bits_per_char(loss: float) -> float:
    """Convert a cross-entropy in nats to bits."""
    return loss / math.log(2.0)
