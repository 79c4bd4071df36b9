r"""Attention over an encoder memory, and a decoder cell that reads it.

An :class:`Attention` scores a query :math:`s` (a decoder state) against every key
:math:`h_t` of a memory (encoder outputs) and returns the context vector and the weights:

.. math::

    e_{t' t} = a(s_{t'-1}, h_t), \qquad
    \alpha_{t' t} = \frac{\exp(e_{t' t})}{\sum_{k=1}^T \exp(e_{t' k})}, \qquad
    c_{t'} = \sum_{t=1}^T \alpha_{t' t} h_t

with the scores :math:`a` of :func:`additive` (Bahdanau et al. 2015) or :func:`dot` and
:func:`general` (Luong et al. 2015, optionally scaled as in Vaswani et al. 2017).

Every score splits into a part that depends only on the memory (e.g. :math:`W_h h_t`) and a
part that depends on the query. :meth:`Attention.precompute` computes the first once per
sequence and returns a :class:`Memory`; :meth:`Attention.attend` reads it at every decoder
step. ``apply(params, query, keys, values=None, mask=None)`` is the two in one call.

Precision (:mod:`jaxrnn.precision`): the projections and the weighted sum run with operands in
``dtype`` and float32 sums; scores, softmax and weights are float32; the context comes out in
``dtype``.

Masks: ``mask[..., t]`` is ``True`` for a real memory element and ``False`` for padding.
Padded elements get weight exactly ``0`` and are never read (garbage or NaN there changes
nothing, not even gradients); the weights sum to 1 over the valid elements. A row with no valid
element at all gets all-zero weights and a zero context, with finite (zero) gradients; so does
an empty memory (``T = 0``): weights of shape ``(*batch, 0)`` and a zero context. Scores that
overflow (inputs near the float32 range) saturate the softmax instead of giving NaN weights.

:func:`decoder` wraps a recurrent cell into an attention decoder: bound to a memory, it is a
:class:`jaxrnn.Cell`, so :func:`jaxrnn.scan` runs it and returns the attention weights of every
step (the alignment history) next to its outputs.

Sharding: under an explicit mesh (``jax.make_mesh``) with the batch of the memory or the query
split over it, parameters that are on no mesh are put on it, replicated, so their gradients
come out replicated; parameters split over ``"model"`` keep their sharding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _sharding
from jaxrnn._checks import check_key, check_size
from jaxrnn._core import Array, Carry, Cell, Params, PRNGKey
from jaxrnn._masks import length_mask
from jaxrnn.precision import Policy, policy

__all__ = [
    "AdditiveParams",
    "Attention",
    "AttentionDecoder",
    "AttentionDecoderParams",
    "DecoderOutput",
    "DotParams",
    "GeneralParams",
    "Memory",
    "additive",
    "decoder",
    "dot",
    "general",
    "length_mask",
    "masked_softmax",
]

_lecun_normal = jax.nn.initializers.lecun_normal()


# --------------------------------------------------------------------------------------------
# Types.


class Memory(NamedTuple):
    """What a decoder attends to, with the query-independent part of the score precomputed.

    Attributes:
        keys: the processed keys, ``(*batch, T, D)``: ``h W_h (+ b)`` for :func:`additive`,
            ``h W_a^T`` for :func:`general`, the keys themselves for :func:`dot` (divided by
            ``sqrt(key_size)`` when scaled). Zero at padded positions.
        values: ``(*batch, T, V)``, what the weights average; zero at padded positions.
        mask: ``(*batch, T)`` bool, ``True`` at valid positions (all ``True`` if none given).
    """

    keys: Array
    values: Array
    mask: Array


class Attention(NamedTuple):
    """An attention mechanism as pure functions.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, query, keys, values=None, mask=None) -> (context, weights)``;
            ``query (*batch, Q)``, ``keys (*batch, T, K)``, ``values (*batch, T, V)`` (default:
            the keys), ``mask (*batch, T)`` bool; ``context (*batch, V)``,
            ``weights (*batch, T)``.
        precompute: ``precompute(params, keys, values=None, mask=None) -> Memory``, the
            query-independent work, done once per sequence.
        attend: ``attend(params, memory, query) -> (context, weights)``, the per-query work.
        query_size: ``Q``.
        key_size: ``K``.
        config: how it was built, ``(name, value)`` pairs starting with ``("factory", ...)``.
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., tuple[Array, Array]]
    precompute: Callable[..., Memory]
    attend: Callable[[Params, Memory, Array], tuple[Array, Array]]
    query_size: int
    key_size: int
    config: tuple[tuple[str, Any], ...] = ()


class AdditiveParams(NamedTuple):
    """Parameters of :func:`additive`.

    ``w_q (Q, A)`` (:math:`W_s^\\top`), ``w_k (K, A)`` (:math:`W_h^\\top`), ``v (A,)``,
    ``b (A,)`` or ``None``, ``g ()`` (weight-norm gain) or ``None``.
    """

    w_q: Array
    w_k: Array
    v: Array
    b: Array | None = None
    g: Array | None = None


class DotParams(NamedTuple):
    """:func:`dot` has no parameters."""


class GeneralParams(NamedTuple):
    """Parameters of :func:`general`: ``w (Q, K)``, :math:`W_a` with :math:`e = s^\\top W_a h`."""

    w: Array


# --------------------------------------------------------------------------------------------
# Shared pieces.


def masked_softmax(scores: Array, mask: Array | None = None) -> Array:
    r"""Softmax over the last axis restricted to ``mask``; all-zero for a fully masked row.

    .. math::

        \alpha_t = \frac{m_t \exp(e_t)}{\sum_k m_k \exp(e_k)}, \qquad
        \alpha = 0 \text{ if } \textstyle\sum_k m_k = 0

    Masked scores are never read (NaN there is harmless, in values and in gradients). Infinite
    scores (e.g. a dot product of two vectors of 1e20 overflows float32) are clamped to the
    largest finite value first, so they saturate the weights instead of turning them into NaN:
    a ``-inf`` score next to a finite one gets weight exactly 0, and a row whose unmasked
    scores are all ``-inf`` weighs them equally (the limit of equal scores), never NaN; the
    gradients are finite too. An empty last axis (a memory of ``T = 0`` elements) gives empty
    weights.

    Args:
        scores: ``(..., T)`` floating-point scores.
        mask: ``None`` or a bool array of the shape of ``scores`` (or one that broadcasts to
            it), ``True`` where a score takes part.

    Raises:
        TypeError: ``mask`` not a bool array.
        ValueError: ``mask`` of a shape that does not broadcast to ``scores``' shape.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> e = jnp.array([[1.0, 1.0, jnp.nan], [0.0, 0.0, 0.0]])
    >>> m = jnp.array([[True, True, False], [False, False, False]])
    >>> jr.attention.masked_softmax(e, m).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    >>> jr.attention.masked_softmax(jnp.array([jnp.inf, 1.0, -jnp.inf])).tolist()
    [1.0, 0.0, 0.0]
    >>> jr.attention.masked_softmax(jnp.array([-jnp.inf, -jnp.inf])).tolist()
    [0.5, 0.5]
    """
    scores = jnp.asarray(scores)
    if mask is not None:
        if not isinstance(mask, jax.Array):
            mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask: expected a bool array, got dtype {mask.dtype}")
        try:
            ok = np.broadcast_shapes(mask.shape, scores.shape) == scores.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"mask: expected the shape of scores {scores.shape} (or one broadcasting to it), "
                f"got {mask.shape}"
            )
    if scores.shape[-1:] == (0,):
        return scores  # nothing to weigh
    big = jnp.finfo(scores.dtype).max
    scores = jnp.clip(scores, -big, big)  # inf - inf would be NaN; NaN stays NaN
    if mask is None:
        mask = jnp.ones(scores.shape, bool)
    zero = jnp.zeros((), scores.dtype)
    safe = jnp.where(mask, scores, zero)  # masked entries never reach exp or the gradient
    m = jnp.max(jnp.where(mask, safe, -jnp.inf), axis=-1, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, zero))  # softmax is shift-invariant
    z = jnp.where(mask, jnp.exp(safe - m), zero)
    total = jnp.sum(z, axis=-1, keepdims=True)
    return z / jnp.where(total > 0, total, jnp.ones((), scores.dtype))


def _prepare_memory(keys, values, mask, key_size: int):
    """Validate ``keys``/``values``/``mask``; zero padded positions; default mask/values."""
    keys = jnp.asarray(keys)
    if keys.ndim < 2:
        raise ValueError(f"keys: expected at least 2 dims (*batch, T, K), got shape {keys.shape}")
    if keys.shape[-1] != key_size:
        raise ValueError(
            f"keys: expected feature size (last axis) {key_size} (the attention's key_size), "
            f"got {keys.shape[-1]} (keys.shape={keys.shape})"
        )
    values = keys if values is None else jnp.asarray(values)
    if values.ndim != keys.ndim or values.shape[:-1] != keys.shape[:-1]:
        raise ValueError(
            f"values: expected shape (*batch, T, V) with (*batch, T) = {keys.shape[:-1]} as in "
            f"keys, got {values.shape}"
        )
    if mask is None:
        mask = jnp.ones(keys.shape[:-1], bool)
    else:
        if not isinstance(mask, jax.Array):
            mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask: expected a bool array, got dtype {mask.dtype}")
        if mask.shape != keys.shape[:-1]:
            raise ValueError(
                f"mask: expected shape (*batch, T) = {keys.shape[:-1]} (keys' leading axes), "
                f"got {mask.shape}"
            )
        mask = jnp.asarray(mask)
        keys = jnp.where(mask[..., None], keys, jnp.zeros((), keys.dtype))
        values = jnp.where(mask[..., None], values, jnp.zeros((), values.dtype))
    return keys, values, mask


def _check_query(query, memory: Memory, query_size: int) -> Array:
    query = jnp.asarray(query)
    if query.ndim < 1 or query.shape[-1] != query_size:
        got = query.shape[-1] if query.ndim else "a scalar"
        raise ValueError(
            f"query: expected feature size (last axis) {query_size} (the attention's "
            f"query_size), got {got} (query.shape={query.shape})"
        )
    batch = memory.mask.shape[:-1]
    if query.shape[:-1] != batch:
        raise ValueError(
            f"query: expected batch shape {batch} (the memory's), got {query.shape[:-1]} "
            f"(query.shape={query.shape})"
        )
    return query


def _finish(memory: Memory, scores: Array, pol: Policy) -> tuple[Array, Array]:
    weights = masked_softmax(scores, memory.mask)
    context = pol.einsum("...t,...tv->...v", weights, memory.values)
    return pol.out(context), weights


def _make_attention(init, project, scores, query_size, key_size, pol, config) -> Attention:
    """An :class:`Attention` from its parts. Under an explicit mesh (the memory or the query
    sharded in its type), mesh-less params are put on that mesh, replicated, so that their
    gradients (sums over the sharded batch) come out replicated."""

    def precompute(params, keys, values=None, mask=None):
        params = _sharding.onto_mesh(params, _sharding.explicit_mesh(keys, values, mask))
        return project(params, keys, values, mask)

    def attend(params, memory, query):
        params = _sharding.onto_mesh(params, _sharding.explicit_mesh(memory, query))
        query = _check_query(query, memory, query_size)
        return _finish(memory, pol.acc(scores(params, memory, query)), pol)

    def apply(params, query, keys, values=None, mask=None):
        return attend(params, precompute(params, keys, values, mask), query)

    return Attention(init, apply, precompute, attend, query_size, key_size, config)


# --------------------------------------------------------------------------------------------
# Scores.


def additive(
    query_size: int,
    key_size: int,
    hidden_size: int,
    *,
    bias: bool = False,
    normalize: bool = False,
    param_dtype=jnp.float32,
    dtype=None,
) -> Attention:
    r"""Additive (Bahdanau, "concat") attention.

    .. math::

        e_{t' t} = v^\top \tanh(W_s s_{t'-1} + W_h h_t + b)

    stored input-major: ``e = tanh(s @ w_q + h @ w_k + b) @ v``. :meth:`Attention.precompute`
    computes ``h @ w_k + b`` once per memory. With ``normalize=True`` the score vector is
    weight-normalised (Salimans & Kingma 2016), :math:`v \to g\, v / \lVert v \rVert` with a
    learned scalar gain :math:`g` (initialised to :math:`1/\sqrt{A}`), and a bias ``b`` is
    always used, as in TensorFlow's ``BahdanauAttention(normalize=True)``.

    Args:
        query_size: ``Q``, features of the query :math:`s`.
        key_size: ``K``, features of the keys :math:`h`.
        hidden_size: ``A``, size of the hidden layer of the score.
        bias: add the bias ``b`` inside the ``tanh`` (implied by ``normalize``).
        normalize: weight-normalise ``v``.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of the context (default ``param_dtype``).

    Returns:
        An :class:`Attention` with :class:`AdditiveParams`.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> attn = jr.attention.additive(query_size=4, key_size=6, hidden_size=5)
    >>> params = attn.init(jax.random.key(0))
    >>> keys = jnp.ones((2, 7, 6))  # (batch, T, K)
    >>> mask = jr.attention.length_mask(jnp.array([7, 3]), 7)
    >>> context, weights = attn.apply(params, jnp.ones((2, 4)), keys, mask=mask)
    >>> context.shape, weights.shape, [round(float(w), 3) for w in weights[1]]
    ((2, 6), (2, 7), [0.333, 0.333, 0.333, 0.0, 0.0, 0.0, 0.0])
    """
    check_size("query_size", query_size)
    check_size("key_size", key_size)
    check_size("hidden_size", hidden_size)
    use_bias = bias or normalize
    pol = policy(param_dtype, dtype)
    pdt = pol.param_dtype

    def init(key):
        k_q, k_k, k_v = jax.random.split(check_key("key", key), 3)
        return AdditiveParams(
            w_q=_lecun_normal(k_q, (query_size, hidden_size), pdt),
            w_k=_lecun_normal(k_k, (key_size, hidden_size), pdt),
            v=_lecun_normal(k_v, (hidden_size, 1), pdt)[:, 0],
            b=jnp.zeros((hidden_size,), pdt) if use_bias else None,
            g=jnp.asarray(1.0 / math.sqrt(hidden_size), pdt) if normalize else None,
        )

    def precompute(params, keys, values=None, mask=None):
        keys, values, mask = _prepare_memory(keys, values, mask, key_size)
        projected = pol.dot(keys, params.w_k)
        if use_bias:
            projected = projected + pol.acc(params.b)
        return Memory(projected, values, mask)

    def scores(params, memory, query):
        v = pol.acc(params.v)
        if normalize:
            v = pol.acc(params.g) * v * jax.lax.rsqrt(jnp.sum(v * v))
        hidden = jnp.tanh(memory.keys + pol.dot(query, params.w_q)[..., None, :])
        return pol.dot(hidden, v)

    config = (
        ("factory", additive),
        ("query_size", query_size),
        ("key_size", key_size),
        ("hidden_size", hidden_size),
        ("bias", bias),
        ("normalize", normalize),
        *pol.config(),
    )
    return _make_attention(init, precompute, scores, query_size, key_size, pol, config)


def dot(size: int, *, scaled: bool = False, dtype=jnp.float32) -> Attention:
    r"""Dot-product (Luong "dot") attention, optionally scaled.

    .. math::

        e_{t' t} = s_{t'}^\top h_t \qquad\text{or, scaled,}\qquad
        e_{t' t} = \frac{s_{t'}^\top h_t}{\sqrt{d}}

    with :math:`d` = ``size``; query and keys must have the same size. No parameters.

    Args:
        size: features of the query and of the keys.
        scaled: divide the scores by :math:`\sqrt{d}` (Vaswani et al. 2017).
        dtype: dtype of the matmul operands and of the context (sums in float32).

    Returns:
        An :class:`Attention` with :class:`DotParams` (empty).

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> attn = jr.attention.dot(2)
    >>> keys = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    >>> context, weights = attn.apply(attn.init(None), jnp.array([1.0, 0.0]), keys)
    >>> [round(float(w), 4) for w in weights]
    [0.2689, 0.7311]
    """
    check_size("size", size)
    scale = 1.0 / math.sqrt(size) if scaled else None
    pol = policy(dtype)

    def init(key):
        check_key("key", key, optional=True)  # no params: None is fine, a wrong key is not
        return DotParams()

    def precompute(params, keys, values=None, mask=None):
        del params
        keys, values, mask = _prepare_memory(keys, values, mask, size)
        return Memory(keys if scale is None else keys * scale, values, mask)

    def scores(params, memory, query):
        return pol.einsum("...td,...d->...t", memory.keys, query)

    config = (("factory", dot), ("size", size), ("scaled", scaled), ("dtype", pol.dtype))
    return _make_attention(init, precompute, scores, size, size, pol, config)


def general(
    query_size: int, key_size: int, *, scaled: bool = False, param_dtype=jnp.float32, dtype=None
) -> Attention:
    r"""Bilinear (Luong "general", multiplicative) attention, optionally scaled.

    .. math::

        e_{t' t} = s_{t'}^\top W_a h_t \qquad\text{(scaled: divided by } \sqrt{K}\text{)}

    stored as ``w = W_a`` of shape ``(Q, K)``; :meth:`Attention.precompute` computes
    :math:`W_a h_t` (``h @ w.T``) once per memory.

    Args:
        query_size: ``Q``.
        key_size: ``K``.
        scaled: divide the scores by :math:`\sqrt{K}`.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of the context (default ``param_dtype``).

    Returns:
        An :class:`Attention` with :class:`GeneralParams`.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> attn = jr.attention.general(3, 5, scaled=True)
    >>> params = attn.init(jax.random.key(0))
    >>> context, weights = attn.apply(params, jnp.ones((4, 3)), jnp.ones((4, 9, 5)))
    >>> params.w.shape, context.shape, weights.shape
    ((3, 5), (4, 5), (4, 9))
    """
    check_size("query_size", query_size)
    check_size("key_size", key_size)
    scale = 1.0 / math.sqrt(key_size) if scaled else None
    pol = policy(param_dtype, dtype)

    def init(key):
        key = check_key("key", key)
        return GeneralParams(w=_lecun_normal(key, (query_size, key_size), pol.param_dtype))

    def precompute(params, keys, values=None, mask=None):
        keys, values, mask = _prepare_memory(keys, values, mask, key_size)
        projected = pol.dot(keys, params.w.T)
        return Memory(projected if scale is None else projected * scale, values, mask)

    def scores(params, memory, query):
        return pol.einsum("...tq,...q->...t", memory.keys, query)

    config = (
        ("factory", general),
        ("query_size", query_size),
        ("key_size", key_size),
        ("scaled", scaled),
        *pol.config(),
    )
    return _make_attention(init, precompute, scores, query_size, key_size, pol, config)


# --------------------------------------------------------------------------------------------
# Attention decoder.


class AttentionDecoderParams(NamedTuple):
    """Parameters of :func:`decoder`: the wrapped cell's and the attention's."""

    cell: Any
    attention: Any


class DecoderOutput(NamedTuple):
    """Per-step output of an attention decoder cell.

    Attributes:
        output: ``[s_t; c_t]``, the new decoder state's output and the context,
            ``(*batch, H + V)``; the model's readout (e.g. a Dense layer to logits) reads both.
        weights: the attention weights :math:`\\alpha_{t, \\cdot}`, ``(*batch, T_mem)``; under
            :func:`jaxrnn.scan` they stack into the alignment history ``(*batch, T, T_mem)``.
    """

    output: Array
    weights: Array


class AttentionDecoder(NamedTuple):
    """A recurrent cell wrapped with attention; :meth:`bind` a memory to get a :class:`Cell`.

    Attributes:
        init: ``init(key) -> AttentionDecoderParams``.
        initial_carry: the wrapped cell's ``initial_carry``.
        precompute: ``precompute(params, keys, values=None, mask=None) -> Memory``, the
            attention's precomputation with ``params.attention``; call once per sequence.
        bind: ``bind(memory) -> Cell``, the decoder step reading that memory.
        input_size: features of the decoder input ``x`` (e.g. the target embedding), without
            the context.
        output_size: features of :attr:`DecoderOutput.output`, ``H + V``.
        value_size: ``V``, features of the context.
        config: ``(name, value)`` pairs starting with ``("factory", decoder)``.
    """

    init: Callable[[PRNGKey], AttentionDecoderParams]
    initial_carry: Callable[..., Carry]
    precompute: Callable[..., Memory]
    bind: Callable[[Memory], Cell]
    input_size: int
    output_size: int
    value_size: int
    config: tuple[tuple[str, Any], ...] = ()


def _default_query(carry):
    """The hidden state inside a cell's carry: the carry itself, or its ``h`` field."""
    if isinstance(carry, jax.Array | np.ndarray | jax.ShapeDtypeStruct):
        return carry
    if hasattr(carry, "h"):
        return carry.h
    raise TypeError(
        f"decoder: cannot find the hidden state in a carry of type {type(carry).__name__}; "
        "pass query_fn=lambda carry: ..."
    )


def _check_decoder_parts(cell, attention, value_size, query_fn):
    """``(value_size, input_size, query_fn)`` of :func:`decoder`, the parts checked to fit."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn.Cell, got {type(cell).__name__}")
    if not isinstance(attention, Attention):
        raise TypeError(f"attention: expected a jaxrnn.attention.Attention, got {type(attention)}")
    value_size = attention.key_size if value_size is None else check_size("value_size", value_size)
    if cell.input_size is None or cell.output_size is None:
        raise ValueError("cell: the decoder needs a cell with known input_size and output_size")
    input_size = cell.input_size - value_size
    if input_size < 1:
        raise ValueError(
            f"cell: input_size {cell.input_size} must be the decoder input's size plus the "
            f"context size {value_size}, leaving at least 1 feature for the input"
        )
    query_fn = _default_query if query_fn is None else query_fn
    query = jax.eval_shape(lambda: query_fn(cell.initial_carry()))
    if query.shape != (attention.query_size,):
        raise ValueError(
            f"attention: query_size {attention.query_size} must be the size of the decoder "
            f"state the query is read from, which is {query.shape}"
        )
    return value_size, input_size, query_fn


def decoder(
    cell: Cell,
    attention: Attention,
    *,
    value_size: int | None = None,
    query_fn: Callable[[Carry], Array] | None = None,
) -> AttentionDecoder:
    r"""Attention decoder: the context enters the cell's input and the step's output.

    One step, in the notation of Bahdanau et al. (2015) as d2l's attention chapter writes it:

    .. math::

        e_{t' t} &= a(s_{t'-1}, h_t), \qquad
        \alpha_{t' \cdot} = \operatorname{softmax}(e_{t' \cdot}), \qquad
        c_{t'} = \textstyle\sum_t \alpha_{t' t} h_t \\
        s_{t'} &= \text{cell}(s_{t'-1}, [x_{t'}; c_{t'}]) \\
        y_{t'} &= ([s_{t'}; c_{t'}], \alpha_{t' \cdot})

    The query is the previous state :math:`s_{t'-1}` (for an LSTM, its ``h``), the context is
    fed into the cell's input and returned next to the new state, so a readout layer sees both.
    ``x`` is typically the embedding of the previous target token (teacher forcing). The memory
    projection of the score is computed once by :meth:`AttentionDecoder.precompute`, and the
    bound cell only does the per-step work.

    Args:
        cell: the recurrent cell; its ``input_size`` must be ``E + V`` (input plus context).
        attention: the score; its ``query_size`` must be the cell's state size.
        value_size: ``V``, features of the values (context); default: the attention's
            ``key_size`` (keys and values the same encoder outputs).
        query_fn: extracts the query from the cell's carry (default: the carry itself, or its
            ``h`` field, as for :class:`jaxrnn.LSTMCarry`).

    Returns:
        An :class:`AttentionDecoder`.

    Raises:
        ValueError: if the cell's input size leaves no room for the context or the query size
            does not match the attention's ``query_size``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> attn = jr.attention.additive(query_size=8, key_size=6, hidden_size=5)
    >>> dec = jr.attention.decoder(jr.lstm(3 + 6, 8), attn)
    >>> params = dec.init(jax.random.key(0))
    >>> enc_out, mask = jnp.ones((2, 7, 6)), jr.attention.length_mask(jnp.array([7, 4]), 7)
    >>> cell = dec.bind(dec.precompute(params, enc_out, mask=mask))  # a jr.Cell
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)))
    >>> ys.output.shape, ys.weights.shape  # the alignment history is ys.weights
    ((2, 5, 14), (2, 5, 7))
    """
    value_size, input_size, query_fn = _check_decoder_parts(cell, attention, value_size, query_fn)
    output_size = cell.output_size + value_size

    def init(key):
        k_cell, k_attn = jax.random.split(check_key("key", key))
        return AttentionDecoderParams(cell.init(k_cell), attention.init(k_attn))

    def precompute(params, keys, values=None, mask=None):
        memory = attention.precompute(params.attention, keys, values, mask)
        if memory.values.shape[-1] != value_size:
            raise ValueError(
                f"values: expected feature size {value_size} (the decoder's value_size), got "
                f"{memory.values.shape[-1]}"
            )
        return memory

    def bind(memory: Memory) -> Cell:
        if not isinstance(memory, Memory):
            raise TypeError(f"memory: expected a Memory from precompute, got {type(memory)}")

        def apply(params, carry, x):
            x = jnp.asarray(x)
            if x.ndim < 1 or x.shape[-1] != input_size:
                raise ValueError(
                    f"x: expected feature size (last axis) {input_size} (the decoder's "
                    f"input_size), got shape {x.shape}"
                )
            context, weights = attention.attend(params.attention, memory, query_fn(carry))
            # Under an explicit mesh the pieces are joined with one sharding: the context's.
            inputs = jnp.concatenate([_sharding.like(x, context), context.astype(x.dtype)], -1)
            carry, h = cell.apply(params.cell, carry, inputs)
            h = _sharding.like(h, context)
            return carry, DecoderOutput(jnp.concatenate([h, context.astype(h.dtype)], -1), weights)

        return Cell(
            init,
            apply,
            cell.initial_carry,
            input_size,
            output_size,
            config=(("factory", bind), ("decoder", config)),
        )

    config = (
        ("factory", decoder),
        ("cell", cell),
        ("attention", attention),
        ("value_size", value_size),
        ("query_fn", query_fn),
    )
    return AttentionDecoder(
        init, cell.initial_carry, precompute, bind, input_size, output_size, value_size, config
    )
