r"""RNN architectures of Goodfellow et al., *Deep Learning*, chapter 10, as small models.

* :func:`many_to_many`: one output per input step, :math:`\hat y^{(t)} = g(W_y a^{(t)} + b_y)`
  (in Ng's *Sequence Models* notation);
* :func:`many_to_one`: one output for the whole sequence, read from the final state;
* :func:`one_to_many`: a fixed vector in, a sequence out, the previous output fed back;
* :func:`jordan_teacher_forcing`: the output-to-hidden recurrence (:func:`jaxrnn.jordan_rnn`)
  trained with teacher forcing, all time steps at once;
* the encoder–decoder with attention is :func:`jaxrnn.seq2seq.encoder_decoder`.

Each model returns unnormalised outputs (logits, or real values for regression); the output
nonlinearity :math:`g` belongs to the loss (:mod:`jaxrnn.losses`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_cell, check_int, check_size
from jaxrnn._core import Array, Bidirectional, Cell, Layer, PRNGKey
from jaxrnn._dense import DenseParams, dense, dense_init
from jaxrnn.layers import layer
from jaxrnn.precision import Policy, policy

__all__ = [
    "Model",
    "ModelParams",
    "final_hidden",
    "jordan_teacher_forcing",
    "many_to_many",
    "many_to_one",
    "one_to_many",
]


class ModelParams(NamedTuple):
    """Parameters of a recipe: the recurrent part's (``rnn``) and the output layer's (``head``)."""

    rnn: Any
    head: DenseParams


class Model(NamedTuple):
    """A recipe model: ``init(key) -> ModelParams``, ``apply(params, ...)``, and for
    :func:`one_to_many` a free-running ``generate(params, vector, length)``."""

    init: Callable[[PRNGKey], ModelParams]
    apply: Callable[..., Array]
    generate: Callable[..., Array] | None = None
    config: tuple[tuple[str, Any], ...] = ()


def _as_layer(rnn: Layer | Cell) -> Layer:
    if isinstance(rnn, Cell):
        return layer(rnn)
    if isinstance(rnn, Layer):
        return rnn
    raise TypeError(f"rnn: expected a jaxrnn.Cell or jaxrnn.Layer, got {type(rnn).__name__}")


def _init(rnn_init, in_size: int, out_size: int, pol: Policy):
    def init(key):
        k_rnn, k_head = jax.random.split(key)
        head = dense_init(k_head, in_size, out_size, pol.param_dtype)
        return ModelParams(rnn_init(k_rnn), head)

    return init


def final_hidden(carry) -> Array:
    r"""The hidden state inside a layer's final carry.

    The last layer of a stack; both directions concatenated (forward first) for a bidirectional
    layer, i.e. :math:`[\overrightarrow{a}^{(n)}; \overleftarrow{a}^{(1)}]`; the ``h`` of an
    LSTM carry; the carry itself otherwise.

    >>> import jaxrnn as jr
    >>> net = jr.rnn(jr.lstm, 3, 4, num_layers=2, bidirectional=True)
    >>> carry = net.initial_carry((2,))  # stands for the carry returned by net.apply
    >>> jr.recipes.final_hidden(carry).shape
    (2, 8)
    """
    if type(carry) is tuple:  # a jr.stack: one carry per layer
        return final_hidden(carry[-1])
    if isinstance(carry, Bidirectional):
        return jnp.concatenate([final_hidden(carry.forward), final_hidden(carry.backward)], -1)
    if hasattr(carry, "h"):
        return carry.h
    return carry


def many_to_many(
    rnn: Layer | Cell, output_size: int, *, param_dtype=jnp.float32, dtype=None
) -> Model:
    r"""Sequence in, sequence of the same length out.

    .. math::

        a^{(t)} = \text{rnn}(a^{(t-1)}, x^{(t)}), \qquad o^{(t)} = W_y a^{(t)} + b_y

    ``apply(params, xs, *, lengths=None, key=None) -> (*batch, T, output_size)``: outputs are
    zero past each sequence's length; ``key`` drives the layer's dropout, if any.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.recipes.many_to_many(jr.gru(3, 8), output_size=5)
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.ones((2, 7, 3))).shape
    (2, 7, 5)
    """
    net = _as_layer(rnn)
    check_size("output_size", output_size)
    pol = policy(param_dtype, dtype)

    def apply(params, xs, *, lengths=None, key=None):
        _, ys = net.apply(params.rnn, xs, lengths=lengths, key=key)
        out = dense(params.head, ys, pol)
        if lengths is not None:
            valid = jnp.arange(out.shape[-2]) < jnp.asarray(lengths)[..., None]
            out = jnp.where(valid[..., None], out, jnp.zeros((), out.dtype))
        return out

    config = (("factory", many_to_many), ("rnn", net), ("output_size", output_size))
    return Model(_init(net.init, net.output_size, output_size, pol), apply, None, config)


def many_to_one(
    rnn: Layer | Cell, output_size: int, *, param_dtype=jnp.float32, dtype=None
) -> Model:
    r"""Sequence in, one output out, read from the final state (e.g. classification).

    .. math::

        o = W_y a^{(n)} + b_y

    where :math:`a^{(n)}` is the state after each sequence's last valid step (with
    ``lengths``), see :func:`final_hidden` for stacked and bidirectional layers.
    ``apply(params, xs, *, lengths=None, key=None) -> (*batch, output_size)``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.recipes.many_to_one(jr.gru(3, 8), output_size=4)  # or any jr.rnn(...)
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 2])).shape
    (2, 4)
    """
    net = _as_layer(rnn)
    check_size("output_size", output_size)
    pol = policy(param_dtype, dtype)

    def apply(params, xs, *, lengths=None, key=None):
        carry, _ = net.apply(params.rnn, xs, lengths=lengths, key=key)
        return dense(params.head, final_hidden(carry), pol)

    config = (("factory", many_to_one), ("rnn", net), ("output_size", output_size))
    return Model(_init(net.init, net.output_size, output_size, pol), apply, None, config)


def _check_vector(vector_size: int, vector) -> Array:
    """``vector`` as an array whose last axis has ``vector_size`` features."""
    vector = jnp.asarray(vector)
    if vector.ndim < 1 or vector.shape[-1] != vector_size:
        raise ValueError(
            f"vector: expected feature size (last axis) {vector_size}, got shape {vector.shape}"
        )
    return vector


def one_to_many(
    cell: Cell,
    vector_size: int,
    output_size: int,
    *,
    feedback: Callable[[Array], Array] | None = None,
    param_dtype=jnp.float32,
    dtype=None,
) -> Model:
    r"""A fixed vector in, a sequence out (Goodfellow et al., fig. 10.9).

    The vector :math:`x` is an input at every step, next to the previous output:

    .. math::

        a^{(t)} = \text{cell}(a^{(t-1)}, [x; y^{(t-1)}]), \qquad o^{(t)} = W_y a^{(t)} + b_y,
        \qquad y^{(0)} = 0

    In training (``apply``), :math:`y^{(t-1)}` is the ground truth (teacher forcing); in
    ``generate`` it is ``feedback(o^{(t-1)})``, the model's own previous output (identity by
    default, for real-valued sequences; e.g. a one-hot argmax for classes).

    * ``apply(params, vector, targets) -> (*batch, T, output_size)``, ``vector (*batch, D)``,
      ``targets (*batch, T, output_size)`` (shifted internally);
    * ``generate(params, vector, length) -> (*batch, length, output_size)``, ``length`` an
      int >= 0.

    Args:
        cell: its ``input_size`` must be ``vector_size + output_size``.
        vector_size: ``D``.
        output_size: features of :math:`o` and :math:`y`.
        feedback: maps an output to the next step's :math:`y^{(t-1)}` in ``generate``.
        param_dtype: storage dtype of the output layer.
        dtype: dtype of its matmul operands (default ``param_dtype``); outputs are float32.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> model = jr.recipes.one_to_many(jr.gru(2 + 1, 8), vector_size=2, output_size=1)
    >>> params = model.init(jax.random.key(0))
    >>> model.generate(params, jnp.ones((4, 2)), length=6).shape
    (4, 6, 1)
    """
    check_cell("cell", cell)
    vector_size = check_size("vector_size", vector_size)
    output_size = check_size("output_size", output_size)
    if cell.input_size != vector_size + output_size:
        raise ValueError(
            f"cell: input_size {cell.input_size} must be vector_size + output_size = "
            f"{vector_size} + {output_size}"
        )
    feedback = (lambda o: o) if feedback is None else feedback
    net = layer(cell)
    pol = policy(param_dtype, dtype)

    check_vector = functools.partial(_check_vector, vector_size)

    def apply(params, vector, targets):
        vector, targets = check_vector(vector), jnp.asarray(targets)
        if targets.shape[:-2] != vector.shape[:-1] or targets.shape[-1:] != (output_size,):
            raise ValueError(
                f"targets: expected shape (*batch, T, {output_size}) with batch "
                f"{vector.shape[:-1]} (as vector), got {targets.shape}"
            )
        prev = jnp.concatenate([jnp.zeros_like(targets[..., :1, :]), targets[..., :-1, :]], -2)
        xs = jnp.broadcast_to(vector[..., None, :], (*prev.shape[:-1], vector_size))
        _, ys = net.apply(params.rnn, jnp.concatenate([xs, prev.astype(xs.dtype)], -1))
        return dense(params.head, ys, pol)

    def generate(params, vector, length: int):
        length = check_int("length", length, low=0)
        vector = check_vector(vector)
        batch = vector.shape[:-1]

        def body(state, _):
            carry, prev = state
            carry, h = cell.apply(params.rnn, carry, jnp.concatenate([vector, prev], -1))
            out = dense(params.head, h, pol)
            return (carry, feedback(out).astype(prev.dtype)), out

        state = (cell.initial_carry(batch), jnp.zeros((*batch, output_size), vector.dtype))
        _, outs = jax.lax.scan(body, state, None, length=length)
        return jnp.moveaxis(outs, 0, len(batch))

    config = (
        ("factory", one_to_many),
        ("cell", cell),
        ("vector_size", vector_size),
        ("output_size", output_size),
        ("feedback", feedback),
    )
    return Model(_init(cell.init, cell.output_size, output_size, pol), apply, generate, config)


def jordan_teacher_forcing(
    cell: Cell, params: Any, xs: Array, targets: Array, *, initial: Array | None = None
) -> Array:
    r"""Outputs of an output-to-hidden cell fed the ground truth instead of its own outputs.

    For :func:`jaxrnn.jordan_rnn` (Goodfellow et al. §10.2.1), teacher forcing replaces the
    carry :math:`o^{(t-1)}` by the target :math:`y^{(t-1)}`:

    .. math::

        h^{(t)} = \tanh(b + W y^{(t-1)} + U x^{(t)}), \qquad o^{(t)} = c + V h^{(t)},
        \qquad y^{(0)} = \text{initial} \ (\text{default } 0)

    No step depends on another, so all steps run at once, without a scan (training
    parallelises over time). At test time run the cell freely with :func:`jaxrnn.scan`, which
    feeds back :math:`o^{(t-1)}`; the outputs must therefore live in the space of the targets
    (e.g. regression targets).

    Args:
        cell: a cell whose carry is its previous output (as :func:`jaxrnn.jordan_rnn`).
        params: its parameters.
        xs: inputs ``(*batch, T, I)``.
        targets: ground truth ``(*batch, T, O)``.
        initial: :math:`y^{(0)}`, ``(*batch, O)``; zeros by default.

    Returns:
        :math:`o^{(1..T)}`, ``(*batch, T, O)``; equal to :func:`jaxrnn.scan` outputs when the
        targets are the model's own outputs.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.jordan_rnn(2, 8, 1)
    >>> params = cell.init(jax.random.key(0))
    >>> xs = jnp.ones((3, 5, 2))
    >>> _, free = jr.scan(cell, params, xs)  # feeds back its own outputs
    >>> forced = jr.recipes.jordan_teacher_forcing(cell, params, xs, free)
    >>> bool(jnp.allclose(forced, free, atol=1e-6))
    True
    """
    xs, targets = jnp.asarray(xs), jnp.asarray(targets)
    out = cell.output_size
    carry = jax.eval_shape(lambda: cell.initial_carry())
    carry_shape = carry.shape if isinstance(carry, jax.ShapeDtypeStruct) else type(carry).__name__
    if out is None or carry_shape != (out,):
        raise ValueError(
            f"cell: teacher forcing needs a carry equal to the previous output (as "
            f"jr.jordan_rnn), got carry shape {carry_shape} and output_size {out}"
        )
    if xs.ndim < 2 or targets.shape != (*xs.shape[:-1], out):
        raise ValueError(
            f"targets: expected shape {(*xs.shape[:-1], out)} (xs' (*batch, T) and the cell's "
            f"output_size), got {targets.shape}"
        )
    if initial is None:
        initial = jnp.zeros_like(targets[..., 0, :])
    prev = jnp.concatenate([jnp.asarray(initial)[..., None, :], targets[..., :-1, :]], axis=-2)
    _, o = cell.apply(params, prev, xs)
    return o
