"""Flax Linen modules around jaxrnn cells and layers.

Each module stores the parameters of the wrapped cell (or layer) as **one** Linen param, the
cell's own params NamedTuple as its ``init`` makes it, and its ``__call__`` is a single call to
:func:`jaxrnn.scan` (or ``layer.apply``). The math lives in jaxrnn only: a module computes
exactly what the pure function computes with the same params, and the param is the same object
the pure API takes, so ``variables["params"]["cell"]`` can be passed straight to
:func:`jaxrnn.scan`, to :mod:`optax`, or to another cell of the same kind.

>>> import jax, jax.numpy as jnp, jaxrnn as jr
>>> import jaxrnn.flax as jrf
>>> model = jrf.RNN(jr.gru(3, 4))
>>> xs = jnp.ones((2, 5, 3))
>>> variables = model.init(jax.random.key(0), xs)
>>> params = variables["params"]["cell"]
>>> type(params).__name__, params.w_hh.shape
('GRUParams', (4, 12))
>>> _, ys = jr.scan(model.cell, params, xs)
>>> bool((model.apply(variables, xs) == ys).all())
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn

from jaxrnn import seq2seq as _seq2seq
from jaxrnn._checks import check_cell
from jaxrnn._core import Array, Cell
from jaxrnn.flax._common import check_layer, existing_or_new, run_cell, uses_key
from jaxrnn.layers import Layer as _Layer
from jaxrnn.seq2seq import Seq2Seq as _Seq2Seq
from jaxrnn.seq2seq import Seq2SeqOutput

__all__ = ["RNN", "Layer", "Seq2Seq"]


class RNN(nn.Module):
    """A jaxrnn cell run over a sequence by :func:`jaxrnn.scan`, as a Linen module.

    The cell's params NamedTuple (for :func:`jaxrnn.lstm`, :class:`~jaxrnn.LSTMParams` with
    fields ``w_ih, w_hh, b, w_peep, w_proj``) is one param named ``"cell"``, initialised by
    ``cell.init`` with a key from the ``"params"`` rng stream.

    Attributes:
        cell: the :class:`~jaxrnn.Cell`.
        reverse: run from the last step to the first (see :func:`jaxrnn.scan`).
        time_major: ``xs`` and ``ys`` are ``(T, *batch, F)`` instead of ``(*batch, T, F)``.
        unroll: passed to ``jax.lax.scan``.
        remat: what each step keeps for the backward pass: ``False`` (default) the outputs of
            matmuls and nonlinearities, ``True`` only the carry, ``"sqrt"`` only the carries
            between segments of about ``sqrt(T)`` steps (for very long sequences), or a
            ``jax.checkpoint`` policy; see :func:`jaxrnn.scan`.
        method: how :func:`jaxrnn.scan` evaluates the recurrence: ``"sequential"``
            (default), ``"associative"`` (cells with a linear recurrence, such as
            :func:`jaxrnn.min_gru`), ``"newton"``, ``"auto"`` or a
            :class:`jaxrnn.newton.Newton`.
        kernel: run on the native CPU kernels (:mod:`jaxrnn.kernels`): ``None`` (default)
            wherever they compute the same, ``True`` to require them, ``False`` never; see
            :func:`jaxrnn.scan`.
        transform: a regulariser ``transform(cell, key) -> cell`` such as
            ``functools.partial(jr.variational_dropout, rate=0.25, recurrent_rate=0.25)``
            (:mod:`jaxrnn.regularizers`). Outside deterministic mode it gets a key from the
            ``"dropout"`` rng stream, in deterministic mode ``None`` (its expectation).
        deterministic: with a ``transform``, disable it; set here or at call time (exactly one
            of the two), as for ``flax.linen.Dropout``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn as jr, jaxrnn.flax as jrf
    >>> class Tagger(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, tokens, lengths):
    ...         x = nn.Embed(10, 3)(tokens)
    ...         h = jrf.RNN(jr.lstm(3, 8))(x, lengths=lengths)
    ...         return nn.Dense(2)(h)
    >>> tokens, lengths = jnp.zeros((4, 7), jnp.int32), jnp.array([7, 5, 2, 0])
    >>> variables = Tagger().init(jax.random.key(0), tokens, lengths)
    >>> Tagger().apply(variables, tokens, lengths).shape
    (4, 7, 2)
    >>> variables["params"]["RNN_0"]["cell"]._fields
    ('w_ih', 'w_hh', 'b', 'w_peep', 'w_proj')
    """

    cell: Cell
    reverse: bool = False
    time_major: bool = False
    unroll: int | bool = 1
    remat: bool | Literal["sqrt"] | Callable[..., bool] = False
    transform: Callable[[Cell, Any], Cell] | None = None
    deterministic: bool | None = None
    method: Any = "sequential"
    kernel: bool | None = None

    @nn.compact
    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: Any = None,
        return_carry: bool = False,
        deterministic: bool | None = None,
    ) -> Array | tuple[Any, Array]:
        """Run the cell over ``xs``.

        Args:
            xs: ``(*batch, T, F)`` inputs, or ``(T, *batch, F)`` when ``time_major``.
            lengths: optional integer array of the batch shape (see :func:`jaxrnn.scan`).
            resets: optional bool array marking where segments start (see :func:`jaxrnn.scan`).
            initial_carry: the initial carry; ``None`` means zeros.
            return_carry: also return the final carry.
            deterministic: with a ``transform``, disable it; here or on the module, not both.

        Returns:
            ``ys``, or ``(carry, ys)`` when ``return_carry``.
        """
        check_cell("cell", self.cell)
        params = existing_or_new(self, "cell", self.cell.init)
        key = None
        if self.transform is not None and not nn.merge_param(
            "deterministic", self.deterministic, deterministic
        ):
            key = self.make_rng("dropout")
        return run_cell(self, params, xs, initial_carry, lengths, return_carry, key, resets)


class Layer(nn.Module):
    """A jaxrnn :class:`~jaxrnn.Layer` (bidirectional, stacked, ...) as a Linen module.

    The layer's params pytree (e.g. a tuple of :class:`~jaxrnn.Bidirectional` of
    :class:`~jaxrnn.LSTMParams` for ``jr.rnn(jr.lstm, ..., bidirectional=True)``) is one param
    named ``"layer"``, initialised by ``layer.init``; ``__call__`` is ``layer.apply``.

    Dropout (of :func:`jaxrnn.rnn` / :func:`jaxrnn.stack` layers with ``dropout > 0``) follows
    Linen's convention: ``deterministic`` is set on the module or at call time (exactly one of
    the two), and when it is ``False`` the layer gets a key from the ``"dropout"`` rng stream.
    Layers without dropout ignore ``deterministic`` and need no rng. A layer not built by
    jaxrnn's factories is assumed to use its key.

    Attributes:
        layer: the :class:`~jaxrnn.Layer`.
        deterministic: disable dropout (``None``: decided at call time).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr, jaxrnn.flax as jrf
    >>> net = jrf.Layer(jr.rnn(jr.lstm, 3, 8, num_layers=2, bidirectional=True, dropout=0.2))
    >>> xs = jnp.ones((4, 7, 3))
    >>> variables = net.init(jax.random.key(0), xs, deterministic=True)
    >>> rngs = {"dropout": jax.random.key(1)}
    >>> carry, ys = net.apply(variables, xs, deterministic=False, rngs=rngs, return_carry=True)
    >>> ys.shape, carry[1].backward.h.shape
    ((4, 7, 16), (4, 8))
    """

    layer: _Layer
    deterministic: bool | None = None

    @nn.compact
    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: Any = None,
        return_carry: bool = False,
        deterministic: bool | None = None,
    ) -> Array | tuple[Any, Array]:
        """Apply the layer to ``xs``.

        Args:
            xs: the input sequence, laid out as the layer expects.
            lengths: optional integer array of the batch shape.
            resets: optional bool array marking where segments start (see :func:`jaxrnn.scan`).
            initial_carry: the initial carry (the layer's structure); ``None`` means zeros.
            return_carry: also return the final carry.
            deterministic: disable dropout; give it here or on the module, not both.

        Returns:
            ``ys``, or ``(carry, ys)`` when ``return_carry``.
        """
        check_layer("layer", self.layer)
        params = existing_or_new(self, "layer", self.layer.init)
        key = None
        if uses_key(self.layer) and not nn.merge_param(
            "deterministic", self.deterministic, deterministic
        ):
            key = self.make_rng("dropout")
        seqs = {} if resets is None else {"resets": resets}
        carry, ys = self.layer.apply(params, xs, initial_carry, lengths=lengths, key=key, **seqs)
        return (carry, ys) if return_carry else ys


class Seq2Seq(nn.Module):
    """A jaxrnn encoder–decoder (:func:`jaxrnn.seq2seq.encoder_decoder`) as a Linen module.

    The model's :class:`~jaxrnn.seq2seq.Seq2SeqParams` are one param named ``"model"``,
    initialised by ``model.init``. ``__call__`` is ``model.apply`` (teacher forcing);
    :meth:`generate` is :func:`jaxrnn.seq2seq.generate` (greedy or beam-search decoding).
    Dropout in the encoder follows Linen's convention, as in :class:`Layer`.

    Attributes:
        model: the :class:`~jaxrnn.seq2seq.Seq2Seq`.
        deterministic: disable dropout (``None``: decided at call time).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr, jaxrnn.flax as jrf
    >>> model = jr.seq2seq.encoder_decoder(
    ...     jr.rnn(jr.gru, 8, 16, bidirectional=True), jr.gru(8 + 32, 16),
    ...     src_vocab=20, tgt_vocab=20,
    ...     attention=jr.attention.additive(query_size=16, key_size=32, hidden_size=16),
    ... )
    >>> net = jrf.Seq2Seq(model)
    >>> src, src_len = jnp.ones((2, 7), jnp.int32), jnp.array([7, 4])
    >>> tgt_in = jr.seq2seq.shift_right(jnp.full((2, 5), 3, jnp.int32), bos_id=1)
    >>> variables = net.init(jax.random.key(0), src, tgt_in, src_lengths=src_len)
    >>> out = net.apply(variables, src, tgt_in, src_lengths=src_len)
    >>> out.logits.shape, out.weights.shape
    ((2, 5, 20), (2, 5, 7))
    >>> tokens = net.apply(variables, src, src_len, bos_id=1, eos_id=2, max_len=6,
    ...                    method="generate")
    >>> tokens.shape
    (2, 6)
    """

    model: _Seq2Seq
    deterministic: bool | None = None

    def setup(self):
        self.params_ = existing_or_new(self, "model", self.model.init)

    def _dropout_key(self, deterministic: bool | None):
        encoder = dict(self.model.config).get("encoder")
        if encoder is None or not uses_key(encoder):
            return None
        if nn.merge_param("deterministic", self.deterministic, deterministic):
            return None
        return self.make_rng("dropout")

    def __call__(
        self,
        src: Array,
        tgt_in: Array,
        *,
        src_lengths: Array | None = None,
        tgt_lengths: Array | None = None,
        deterministic: bool | None = None,
    ) -> Seq2SeqOutput:
        """Teacher-forced logits (and attention weights) for ``tgt_in``; see ``model.apply``."""
        return self.model.apply(
            self.params_,
            src,
            tgt_in,
            src_lengths=src_lengths,
            tgt_lengths=tgt_lengths,
            dropout_key=self._dropout_key(deterministic),
        )

    def generate(self, src: Array, src_lengths: Array | None = None, **kwargs):
        """Decode ``src``: :func:`jaxrnn.seq2seq.generate` with this module's params
        (``bos_id``, ``eos_id``, ``max_len``, and ``beam_size`` for beam search)."""
        return _seq2seq.generate(self.model, self.params_, src, src_lengths, **kwargs)
