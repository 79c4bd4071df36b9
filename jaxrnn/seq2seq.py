r"""Encoder–decoder (sequence-to-sequence) models, with or without attention.

An encoder (any :class:`jaxrnn.Layer`: uni- or bidirectional, stacked, with lengths) reads the
embedded source :math:`x^{(1)}, \dots, x^{(n_x)}` into outputs :math:`h_t` and a final state; a
bridge maps the final state to the decoder's initial state; the decoder (a cell, wrapped with
:func:`jaxrnn.attention.decoder` when attention is used) then models

.. math::

    p(y^{(1)}, \dots, y^{(n_y)} \mid x) = \prod_{t'} p(y^{(t')} \mid y^{(<t')}, x), \qquad
    p(\cdot \mid y^{(<t')}, x) = \operatorname{softmax}(W_o [s_{t'}; c_{t'}] + b_o)

where :math:`s_{t'}` is the decoder state and :math:`c_{t'}` the attention context (absent
without attention). Training uses *teacher forcing*: the decoder input at step :math:`t'` is the
ground truth :math:`y^{(t'-1)}` (with :math:`y^{(0)}` = BOS), so the whole target runs through
one :func:`jaxrnn.scan`; :meth:`Seq2Seq.scheduled_sampling` replaces some of those inputs by
the model's own predictions (Bengio et al. 2015): at every step after the first, with
probability ``rate``, the input is a token drawn from the model's output distribution of the
previous step (or its argmax, ``greedy=True``) instead of the ground truth; no gradient flows
through that choice. For inference, :meth:`Seq2Seq.encode` and
:meth:`Seq2Seq.decode_step` plug into :mod:`jaxrnn.decode`.

Sharding: with the token batch split over an explicit mesh (``jax.make_mesh``), embeddings,
carries and logits follow the batch sharding and parameters on no mesh are put on it,
replicated (their gradients come out replicated).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _sharding
from jaxrnn import attention as _attention
from jaxrnn import decode as _decode
from jaxrnn._checks import (
    check_ids,
    check_int,
    check_key,
    check_lengths,
    check_probability,
    check_size,
)
from jaxrnn._core import Array, Carry, Cell, Layer, PRNGKey
from jaxrnn._dense import DenseParams, dense, dense_init
from jaxrnn._scan.scan import scan
from jaxrnn.precision import policy

__all__ = [
    "Bridge",
    "DecodeState",
    "DenseParams",
    "Seq2Seq",
    "Seq2SeqOutput",
    "Seq2SeqParams",
    "bridge",
    "encoder_decoder",
    "generate",
    "shift_right",
]


def shift_right(targets: Array, bos_id: int) -> Array:
    """Teacher-forcing decoder inputs: ``[bos, y_1, ..., y_{T-1}]`` from targets ``y``.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> jr.seq2seq.shift_right(jnp.array([[5, 6, 7]]), bos_id=1).tolist()
    [[1, 5, 6]]
    """
    targets = jnp.asarray(targets)
    if targets.ndim < 1 or not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets: expected integer tokens (*batch, T), got {targets.dtype}")
    bos = jnp.full((*targets.shape[:-1], 1), bos_id, targets.dtype)
    return jnp.concatenate([bos, targets[..., :-1]], axis=-1)


# --------------------------------------------------------------------------------------------
# Bridge.


class Bridge(NamedTuple):
    """Maps an encoder's final carry to a decoder cell's initial carry.

    Attributes:
        init: ``init(key) -> DenseParams``.
        apply: ``apply(params, encoder_carry) -> decoder_carry``.
        input_size: features of the concatenated final state read.
        output_size: features of the decoder carry written (all leaves together).
    """

    init: Callable[[PRNGKey], DenseParams]
    apply: Callable[[DenseParams, Carry], Carry]
    input_size: int
    output_size: int


def _last_layer(carry):
    """The carry of the last layer of a :func:`jaxrnn.stack` (a plain tuple), else the carry."""
    return carry[-1] if type(carry) is tuple else carry


def bridge(encoder: Layer, decoder_cell: Cell, *, param_dtype=jnp.float32, dtype=None) -> Bridge:
    r"""Dense + tanh from the encoder's final state to the decoder's initial state.

    .. math::

        s_0 = \tanh(W_b [\overrightarrow{h}_{n}; \overleftarrow{h}_{1}] + b_b)

    The input concatenates every leaf of the final carry of the encoder's last layer (both
    directions when bidirectional; ``h`` and ``c`` for an LSTM), in ``jax.tree.leaves`` order;
    the output is split into the leaves of the decoder cell's carry (e.g. ``h`` and ``c``), each
    in that carry's dtype. ``param_dtype`` and ``dtype`` are the precision policy of the dense
    map (:mod:`jaxrnn.precision`).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> enc = jr.rnn(jr.lstm, 3, 4, num_layers=2, bidirectional=True)
    >>> br = jr.seq2seq.bridge(enc, jr.gru(5, 6))
    >>> final = enc.initial_carry((2,))  # stands for the carry returned by enc.apply
    >>> br.input_size, br.apply(br.init(jax.random.key(1)), final).shape  # fwd/bwd h and c
    (16, (2, 6))
    """
    pol = policy(param_dtype, dtype)
    enc_leaves = jax.tree.leaves(jax.eval_shape(lambda: _last_layer(encoder.initial_carry((1,)))))
    dec_shape = jax.eval_shape(lambda: decoder_cell.initial_carry((1,)))
    dec_leaves, dec_tree = jax.tree.flatten(dec_shape)
    for leaf in (*enc_leaves, *dec_leaves):
        if leaf.ndim != 2:
            raise ValueError(f"bridge: expected carries of (batch, features) leaves, got {leaf}")
    in_size = sum(leaf.shape[-1] for leaf in enc_leaves)
    sizes = [leaf.shape[-1] for leaf in dec_leaves]
    out_size = sum(sizes)
    splits = np.cumsum(sizes)[:-1].tolist()

    def init(key):
        return dense_init(key, in_size, out_size, pol.param_dtype)

    def apply(params, encoder_carry):
        leaves = [pol.acc(leaf) for leaf in jax.tree.leaves(_last_layer(encoder_carry))]
        s0 = jnp.tanh(dense(params, jnp.concatenate(leaves, axis=-1), pol))
        parts = jnp.split(s0, splits, axis=-1)
        parts = [p.astype(d.dtype) for p, d in zip(parts, dec_leaves, strict=True)]
        return jax.tree.unflatten(dec_tree, parts)

    return Bridge(init, apply, in_size, out_size)


# --------------------------------------------------------------------------------------------
# The model.


class Seq2SeqParams(NamedTuple):
    """Parameters of :func:`encoder_decoder`.

    ``src_embed (V_src, E_src)``, ``tgt_embed (V_tgt, E_tgt)``, ``encoder`` (the encoder
    layer's), ``bridge`` (:class:`DenseParams` or ``None``), ``decoder`` (the cell's, or
    :class:`jaxrnn.attention.AttentionDecoderParams`), ``readout`` (:class:`DenseParams`,
    decoder output to logits).
    """

    src_embed: Array
    tgt_embed: Array
    encoder: Any
    bridge: DenseParams | None
    decoder: Any
    readout: DenseParams


class DecodeState(NamedTuple):
    """Decoding carry: the decoder cell's ``carry`` and the encoder ``memory`` it attends to
    (a :class:`jaxrnn.attention.Memory`, or ``None`` without attention)."""

    carry: Any
    memory: Any


class Seq2SeqOutput(NamedTuple):
    """``logits (*batch, T, V_tgt)`` and attention ``weights (*batch, T, S)`` (or ``None``)."""

    logits: Array
    weights: Array | None


class Seq2Seq(NamedTuple):
    """An encoder–decoder model as pure functions (see :func:`encoder_decoder`).

    Token ids (``src``, ``tgt_in``) must lie in ``[0, V)`` of their vocabulary at the steps
    within their lengths (padding may hold anything); ``rate`` is a probability in ``[0, 1]``.
    Concrete values are checked (``ValueError`` naming the argument); under ``jax.jit`` traced
    ids and rates have only their dtype and shape checked, and an out-of-range id then reads a
    wrapped or clamped embedding row.

    Attributes:
        init: ``init(key) -> Seq2SeqParams``.
        apply: ``apply(params, src, tgt_in, *, src_lengths=None, tgt_lengths=None,
            dropout_key=None) -> Seq2SeqOutput``, teacher forcing.
        scheduled_sampling: ``scheduled_sampling(params, src, tgt_in, key, *, rate,
            src_lengths=None, tgt_lengths=None, greedy=False, dropout_key=None)
            -> Seq2SeqOutput``.
        encode: ``encode(params, src, src_lengths=None, *, dropout_key=None) -> DecodeState``,
            the decoder's initial state (bridge applied, attention memory precomputed).
        decode_step: ``decode_step(params) -> step`` with
            ``step(state, tokens) -> (state, logits)`` for :mod:`jaxrnn.decode`.
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        config: ``(name, value)`` pairs starting with ``("factory", encoder_decoder)``.
    """

    init: Callable[[PRNGKey], Seq2SeqParams]
    apply: Callable[..., Seq2SeqOutput]
    scheduled_sampling: Callable[..., Seq2SeqOutput]
    encode: Callable[..., DecodeState]
    decode_step: Callable[[Seq2SeqParams], Callable[[DecodeState, Array], tuple[Any, Array]]]
    src_vocab: int
    tgt_vocab: int
    config: tuple[tuple[str, Any], ...] = ()


def _check_tokens(name: str, tokens, vocab: int, lengths=None) -> tuple[Array, Array | None]:
    """``(tokens, lengths)`` checked: integer ids ``(batch, T)`` in ``[0, vocab)`` at the steps
    ``t < lengths`` (all steps without lengths; values only when concrete)."""
    if not isinstance(tokens, jax.Array | np.ndarray):
        tokens = np.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{name}: expected integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"{name}: expected token ids of shape (batch, T), got {tokens.shape}")
    valid = None
    if lengths is not None:
        lengths = check_lengths(lengths, tokens.shape[:1], tokens.shape[1])
        valid = _attention.length_mask(lengths, tokens.shape[1])
    return jnp.asarray(check_ids(name, tokens, vocab, valid=valid)), lengths


class _Parts(NamedTuple):
    """What :func:`encoder_decoder` resolves once and its pure functions read."""

    encoder: Layer
    decoder_cell: Cell
    dec: Any  # the attention decoder (jaxrnn.attention.decoder), or None without attention
    bridge: Bridge | None
    pol: Any
    src_vocab: int
    tgt_vocab: int
    src_embed_size: int
    tgt_embed_size: int
    readout_size: int


def _attention_decoder(decoder_cell: Cell, attention, memory_size: int):
    """``(attention decoder or None, target embedding size, readout size)``, checked."""
    if attention is None:
        return None, decoder_cell.input_size, decoder_cell.output_size
    if attention.key_size != memory_size:
        raise ValueError(
            f"attention: key_size {attention.key_size} must equal the encoder's output_size "
            f"{memory_size}"
        )
    dec = _attention.decoder(decoder_cell, attention, value_size=memory_size)
    return dec, dec.input_size, dec.output_size


def _init(m: _Parts, key: PRNGKey) -> Seq2SeqParams:
    """``Seq2Seq.init``: embeddings, encoder, bridge, decoder and readout from six keys."""
    keys = jax.random.split(check_key("key", key), 6)
    pdt = m.pol.param_dtype
    dec_init = m.dec.init if m.dec is not None else m.decoder_cell.init
    return Seq2SeqParams(
        src_embed=jax.random.normal(keys[0], (m.src_vocab, m.src_embed_size), pdt),
        tgt_embed=jax.random.normal(keys[1], (m.tgt_vocab, m.tgt_embed_size), pdt),
        encoder=m.encoder.init(keys[2]),
        bridge=m.bridge.init(keys[3]) if m.bridge is not None else None,
        decoder=dec_init(keys[4]),
        readout=dense_init(keys[5], m.readout_size, m.tgt_vocab, pdt),
    )


def _encode(m: _Parts, params, src, src_lengths=None, *, dropout_key=None) -> DecodeState:
    """``Seq2Seq.encode``: the decoder's initial carry and the attention memory."""
    src, src_lengths = _check_tokens("src", src, m.src_vocab, src_lengths)
    dropout_key = check_key("dropout_key", dropout_key, optional=True)
    params = _sharding.onto_mesh(params, _sharding.explicit_mesh(src))
    batch, src_len = src.shape
    mask = None
    if src_lengths is not None:
        mask = _attention.length_mask(src_lengths, src_len)
    enc_carry, enc_out = m.encoder.apply(
        params.encoder,
        _sharding.lookup(params.src_embed, src),
        lengths=src_lengths,
        key=dropout_key,
    )
    if m.bridge is not None:
        carry = m.bridge.apply(params.bridge, enc_carry)
    else:
        carry = m.decoder_cell.initial_carry((batch,))
    memory = m.dec.precompute(params.decoder, enc_out, mask=mask) if m.dec is not None else None
    return DecodeState(carry, memory)


def _decoder_for(m: _Parts, memory) -> Cell:
    """The decoder cell, bound to the attention ``memory`` when there is attention."""
    return m.dec.bind(memory) if m.dec is not None else m.decoder_cell


def _split_output(m: _Parts, y):
    """(readout input, attention weights or None) from a decoder step's output."""
    if m.dec is not None:
        return y.output, y.weights
    return y, None


def _step(m: _Parts, params, state: DecodeState, tokens) -> tuple[DecodeState, Array]:
    """One decoding step: ``(state, tokens) -> (state, logits)``."""
    params = _sharding.onto_mesh(params, _sharding.explicit_mesh(state, tokens))
    cell = _decoder_for(m, state.memory)
    carry, y = cell.apply(params.decoder, state.carry, _sharding.lookup(params.tgt_embed, tokens))
    out, _ = _split_output(m, y)
    return DecodeState(carry, state.memory), dense(params.readout, out, m.pol)


def _decode_step(m: _Parts, params):
    """``Seq2Seq.decode_step``: the step function of :mod:`jaxrnn.decode` for ``params``."""
    return functools.partial(_step, m, params)


def _zero_past_end(x: Array, lengths: Array, steps: int) -> Array:
    """``x (batch, T, ...)`` with zeros at the steps ``t >= lengths``."""
    valid = _attention.length_mask(lengths, steps)
    return jnp.where(valid[..., None], x, jnp.zeros((), x.dtype))


def _apply(
    m: _Parts, params, src, tgt_in, *, src_lengths=None, tgt_lengths=None, dropout_key=None
) -> Seq2SeqOutput:
    """``Seq2Seq.apply``: teacher forcing, the whole target through one scan."""
    tgt_in, tgt_lengths = _check_tokens("tgt_in", tgt_in, m.tgt_vocab, tgt_lengths)
    params = _sharding.onto_mesh(params, _sharding.explicit_mesh(src, tgt_in))
    state = _encode(m, params, src, src_lengths, dropout_key=dropout_key)
    cell = _decoder_for(m, state.memory)
    _, ys = scan(
        cell,
        params.decoder,
        _sharding.lookup(params.tgt_embed, tgt_in),
        state.carry,
        lengths=tgt_lengths,
    )
    out, weights = _split_output(m, ys)
    logits = dense(params.readout, out, m.pol)
    if tgt_lengths is not None:  # zero like every other output past the end
        logits = _zero_past_end(logits, tgt_lengths, tgt_in.shape[1])
    return Seq2SeqOutput(logits, weights)


def _sampled_step(m: _Parts, cell: Cell, params, loop_carry, inputs):
    """One scheduled-sampling step: feed the truth or the previous step's (noisy) argmax."""
    carry, prev_logits = loop_carry
    truth, coin, g = inputs
    predicted = jnp.argmax(jax.lax.stop_gradient(prev_logits) + g, axis=-1)
    tokens = jnp.where(coin, predicted.astype(truth.dtype), truth)
    carry, y = cell.apply(params.decoder, carry, _sharding.lookup(params.tgt_embed, tokens))
    out, weights = _split_output(m, y)
    logits = dense(params.readout, out, m.pol)
    new = _sharding.like((carry, logits), loop_carry)  # explicit meshes: the carry's own type
    return new, (logits, weights)


def _rows_like(tgt_in: Array, use_model: Array, noise: Array, first: Array):
    """Under an explicit mesh, the coins and noise ``(T, batch, ...)`` and the first logits
    ``(batch, V)`` of scheduled sampling sharded over the batch as ``tgt_in``'s rows."""
    mesh = _sharding.explicit_mesh(tgt_in)
    if mesh is None:
        return use_model, noise, first
    spec = _sharding.batch_spec(tgt_in, (0,))
    use_model, noise = (
        jnp.moveaxis(_sharding.shard_like_batch(jnp.moveaxis(a, 1, 0), mesh, spec), 0, 1)
        for a in (use_model, noise)
    )
    return use_model, noise, _sharding.shard_like_batch(first, mesh, spec)


def _scheduled_sampling(
    m: _Parts,
    params,
    src,
    tgt_in,
    key,
    *,
    rate,
    src_lengths=None,
    tgt_lengths=None,
    greedy=False,
    dropout_key=None,
) -> Seq2SeqOutput:
    """``Seq2Seq.scheduled_sampling``: some inputs replaced by the model's own predictions."""
    tgt_in, tgt_lengths = _check_tokens("tgt_in", tgt_in, m.tgt_vocab, tgt_lengths)
    batch, tgt_len = tgt_in.shape
    rate = check_probability("rate", rate, include_one=True)
    key = check_key("key", key)
    params = _sharding.onto_mesh(params, _sharding.explicit_mesh(src, tgt_in))
    state = _encode(m, params, src, src_lengths, dropout_key=dropout_key)
    cell = _decoder_for(m, state.memory)  # the memory stays out of the loop carry
    k_coin, k_draw = jax.random.split(key)
    use_model = jax.random.bernoulli(k_coin, rate, (tgt_len, batch))
    use_model = use_model.at[0].set(False)  # the first input is always BOS
    accum = m.pol.accum_dtype
    if greedy:
        noise = jnp.zeros((tgt_len, batch, m.tgt_vocab), accum)
    else:  # Gumbel-max: argmax(z + g) is a draw from softmax(z)
        noise = jax.random.gumbel(k_draw, (tgt_len, batch, m.tgt_vocab), accum)
    body = functools.partial(_sampled_step, m, cell, params)
    first = jnp.zeros((batch, m.tgt_vocab), accum)
    use_model, noise, first = _rows_like(tgt_in, use_model, noise, first)
    _, (logits, weights) = jax.lax.scan(body, (state.carry, first), (tgt_in.T, use_model, noise))
    logits = jnp.moveaxis(logits, 0, 1)
    weights = None if weights is None else jnp.moveaxis(weights, 0, 1)
    if tgt_lengths is not None:
        logits = _zero_past_end(logits, tgt_lengths, tgt_len)
        if weights is not None:
            weights = _zero_past_end(weights, tgt_lengths, tgt_len)
    return Seq2SeqOutput(logits, weights)


def encoder_decoder(
    encoder: Layer,
    decoder_cell: Cell,
    *,
    src_vocab: int,
    tgt_vocab: int,
    attention: _attention.Attention | None = None,
    use_bridge: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
) -> Seq2Seq:
    r"""Build an encoder–decoder model from an encoder layer and a decoder cell.

    Sizes follow from the parts: the source embedding has ``encoder.input_size`` features, the
    memory ``encoder.output_size``, and the target embedding
    ``decoder_cell.input_size - encoder.output_size`` with attention (the context is appended to
    the decoder input, see :func:`jaxrnn.attention.decoder`) or ``decoder_cell.input_size``
    without. The readout is linear, :math:`z = W_o [s; c] + b_o`.

    Args:
        encoder: e.g. ``jr.rnn(jr.gru, E, H, bidirectional=True)``.
        decoder_cell: e.g. ``jr.gru(E_tgt + 2 * H, H_dec)``.
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        attention: an :class:`jaxrnn.attention.Attention` with ``key_size ==
            encoder.output_size`` and ``query_size`` the decoder state size, or ``None`` for a
            plain encoder–decoder (Sutskever et al. 2014; Cho et al. 2014) whose only link is
            the bridge.
        use_bridge: initialise the decoder with :func:`bridge` (else with zeros; only sensible
            with attention).
        param_dtype: storage dtype of the embeddings, bridge and readout (the encoder, decoder
            and attention have their own policies, set when they are built).
        dtype: dtype of the bridge's and readout's matmul operands (default ``param_dtype``);
            logits are float32 (the accumulation dtype), ready for the loss.

    Returns:
        A :class:`Seq2Seq`.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.seq2seq.encoder_decoder(
    ...     jr.rnn(jr.gru, 8, 16),  # memory: 16 features (32 if bidirectional=True)
    ...     jr.gru(8 + 16, 16),  # target embedding 8 + context 16
    ...     src_vocab=10, tgt_vocab=12,
    ...     attention=jr.attention.additive(query_size=16, key_size=16, hidden_size=16),
    ... )
    >>> params = model.init(jax.random.key(0))
    >>> src, src_len = jnp.ones((2, 7), jnp.int32), jnp.array([7, 4])
    >>> tgt_in = jr.seq2seq.shift_right(jnp.ones((2, 5), jnp.int32), bos_id=1)
    >>> out = model.apply(params, src, tgt_in, src_lengths=src_len)
    >>> out.logits.shape, out.weights.shape
    ((2, 5, 12), (2, 5, 7))

    Decoding (see :mod:`jaxrnn.decode`)::

        state = model.encode(params, src, src_len)
        tokens = jr.decode.greedy(model.decode_step(params), state, bos_id=1, eos_id=2, max_len=6)
        beams, scores = jr.decode.beam_search(
            model.decode_step(params), state, bos_id=1, eos_id=2, beam_size=4, max_len=6
        )
    """
    if not isinstance(encoder, Layer):
        raise TypeError(f"encoder: expected a jaxrnn.Layer, got {type(encoder).__name__}")
    if not isinstance(decoder_cell, Cell):
        raise TypeError(f"decoder_cell: expected a jaxrnn.Cell, got {type(decoder_cell).__name__}")
    check_size("src_vocab", src_vocab)
    check_size("tgt_vocab", tgt_vocab)
    if None in (encoder.input_size, encoder.output_size):
        raise ValueError("encoder: needs known input_size and output_size")
    dec, tgt_embed_size, readout_size = _attention_decoder(
        decoder_cell, attention, encoder.output_size
    )
    pol = policy(param_dtype, dtype)
    br = None
    if use_bridge:
        br = bridge(encoder, decoder_cell, param_dtype=pol.param_dtype, dtype=pol.dtype)
    m = _Parts(
        encoder=encoder,
        decoder_cell=decoder_cell,
        dec=dec,
        bridge=br,
        pol=pol,
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        src_embed_size=encoder.input_size,
        tgt_embed_size=tgt_embed_size,
        readout_size=readout_size,
    )
    config = (
        ("factory", encoder_decoder),
        ("encoder", encoder),
        ("decoder_cell", decoder_cell),
        ("src_vocab", src_vocab),
        ("tgt_vocab", tgt_vocab),
        ("attention", attention),
        ("use_bridge", use_bridge),
        *pol.config(),
    )
    fns = (_init, _apply, _scheduled_sampling, _encode, _decode_step)
    return Seq2Seq(*(functools.partial(f, m) for f in fns), src_vocab, tgt_vocab, config)


def generate(
    model: Seq2Seq,
    params: Seq2SeqParams,
    src: Array,
    src_lengths: Array | None = None,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int | None = None,
    length_penalty: float = 0.0,
):
    """Translate ``src``: :func:`jaxrnn.decode.greedy`, or beam search when ``beam_size``.

    Raises:
        ValueError: if ``src`` holds ids outside ``[0, src_vocab)`` (at valid steps, when
            concrete), ``bos_id``/``eos_id`` lie outside ``[0, tgt_vocab)``, or an argument of
            :func:`jaxrnn.decode.greedy`/:func:`~jaxrnn.decode.beam_search` is invalid.

    Returns:
        Greedy tokens ``[batch, max_len]``, or with ``beam_size`` the
        ``(tokens [batch, beam, max_len], scores [batch, beam])`` of
        :func:`jaxrnn.decode.beam_search`, best first. BOS is not included.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.seq2seq.encoder_decoder(jr.rnn(jr.gru, 4, 8), jr.gru(4, 8), src_vocab=9,
    ...                                    tgt_vocab=9)
    >>> params = model.init(jax.random.key(0))
    >>> src = jnp.ones((2, 5), jnp.int32)
    >>> jr.seq2seq.generate(model, params, src, bos_id=1, eos_id=2, max_len=4).shape
    (2, 4)
    """
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model: expected a jr.seq2seq.Seq2Seq, got {type(model).__name__}")
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        check_int(name, value, low=0, high=model.tgt_vocab - 1)
    state = model.encode(params, src, src_lengths)
    step = model.decode_step(params)
    if beam_size is None:
        return _decode.greedy(step, state, bos_id=bos_id, eos_id=eos_id, max_len=max_len)
    return _decode.beam_search(
        step,
        state,
        bos_id=bos_id,
        eos_id=eos_id,
        beam_size=beam_size,
        max_len=max_len,
        length_penalty=length_penalty,
    )
