"""The classic recurrences: the vanilla (Elman) cell and the output-to-hidden (Jordan) cell."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from jaxrnn._core import Array, Cell, Initializer
from jaxrnn.cells import _init
from jaxrnn.cells._build import affine_project, cell_config, make_cell, setup, zeros_carry

__all__ = ["JordanParams", "SimpleRNNParams", "jordan_rnn", "simple_rnn"]


class SimpleRNNParams(NamedTuple):
    """Parameters of :func:`simple_rnn`: ``w_ih (I, H)``, ``w_hh (H, H)``, ``b (H,)``."""

    w_ih: Array
    w_hh: Array
    b: Array


class JordanParams(NamedTuple):
    """Parameters of :func:`jordan_rnn`.

    ``w_ih (I, H)`` (U), ``w_oh (O, H)`` (W), ``b (H,)``, ``w_ho (H, O)`` (V), ``b_o (O,)`` (c).
    """

    w_ih: Array
    w_oh: Array
    b: Array
    w_ho: Array
    b_o: Array


def simple_rnn(
    input_size: int,
    hidden_size: int,
    *,
    activation: Callable[[Array], Array] = jnp.tanh,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Vanilla (Elman) recurrent cell, in the notation of Ng's *Sequence Models* course.

    .. math::

        a^{(t)} = f(W_{aa} a^{(t-1)} + W_{ax} x^{(t)} + b_a), \qquad y^{(t)} = a^{(t)}

    stored input-major: ``a_t = f(x_t @ w_ih + a_{t-1} @ w_hh + b)`` with ``w_ih = W_ax^T``,
    ``w_hh = W_aa^T`` (``docs/notation.md`` maps the other textbooks' symbols). The output layer
    :math:`\hat y = g(W_y a + b_y)` is left to the model (a Dense head), so one cell serves every
    head.

    Args:
        input_size: ``I``, features of ``x``.
        hidden_size: ``H``, features of the state ``a``.
        activation: ``f``; ``jnp.tanh`` (default) or e.g. ``jax.nn.relu``.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (default ``param_dtype``); see
            :mod:`jaxrnn.precision`.
        kernel_init: initialiser of ``w_ih``, called with ``(I, H)`` (``None``: LeCun normal);
            see "Custom initialisers" in the module docstring.
        recurrent_kernel_init: initialiser of ``w_hh``, ``(H, H)`` (``None``: orthogonal).
        bias_init: initialiser of ``b``, ``(H,)`` (``None``: zeros).

    Returns:
        A :class:`Cell` with :class:`SimpleRNNParams` and a carry ``a`` of shape
        ``(*batch, H)``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.simple_rnn(3, 5)
    >>> params = cell.init(jax.random.key(0))
    >>> a, y = cell.apply(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> a.shape, bool((a == y).all())
    ((2, 5), True)
    """
    input_size, hidden_size, pol = setup(
        param_dtype,
        dtype,
        (kernel_init, recurrent_kernel_init, bias_init),
        input_size=input_size,
        hidden_size=hidden_size,
    )
    H = hidden_size
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_hh, k_b = _init.split(key, 2, bias_init)
        return SimpleRNNParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 1, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (H, H), 1, pdt),
            b=_init.biases(bias_init, k_b, H, (1,), pdt)[0],
        )

    def step(params, a, xp):
        a = activation(xp + pol.dot(a, params.w_hh))
        return a, pol.out(a)

    return make_cell(
        init,
        zeros_carry(hidden_size, pol.accum_dtype),
        input_size,
        hidden_size,
        affine_project(input_size, "w_ih", "b", pol),
        step,
        config=cell_config(
            simple_rnn,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            activation=activation,
        ),
    )


def jordan_rnn(
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Output-to-hidden recurrence (Goodfellow et al., *Deep Learning*, fig. 10.4; Jordan 1986).

    The only recurrence is from the previous *output* to the hidden units:

    .. math::

        h^{(t)} &= \tanh(b + W o^{(t-1)} + U x^{(t)}) \\
        o^{(t)} &= c + V h^{(t)}

    so the carry is :math:`o^{(t-1)}`, and training can replace it by the ground truth
    (teacher forcing), which decouples the time steps. Stored input-major: ``w_ih = U^T``,
    ``w_oh = W^T``, ``w_ho = V^T``, ``b_o = c``.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        output_size: ``O``, size of :math:`o` (e.g. the number of classes; apply the softmax in
            the loss).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (default ``param_dtype``); see
            :mod:`jaxrnn.precision`.
        kernel_init: initialiser of ``w_ih`` (U), called with ``(I, H)`` (``None``: LeCun
            normal); see "Custom initialisers" in the module docstring.
        recurrent_kernel_init: initialiser of ``w_oh`` (W), ``(O, H)`` (``None``: LeCun normal).
        bias_init: initialiser of ``b``, ``(H,)`` (``None``: zeros). The output layer ``w_ho``,
            ``b_o`` keeps its defaults (LeCun normal, zeros).

    Returns:
        A :class:`Cell` with :class:`JordanParams`; carry and output are :math:`o` of shape
        ``(*batch, O)``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.jordan_rnn(3, 8, 2)
    >>> o, y = cell.apply(cell.init(jax.random.key(0)), cell.initial_carry((4,)), jnp.ones((4, 3)))
    >>> o.shape
    (4, 2)
    """
    input_size, hidden_size, output_size, pol = setup(
        param_dtype,
        dtype,
        (kernel_init, recurrent_kernel_init, bias_init),
        input_size=input_size,
        hidden_size=hidden_size,
        output_size=output_size,
    )
    H, n_out = hidden_size, output_size
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_oh, k_ho, k_b = _init.split(key, 3, bias_init)
        return JordanParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 1, pdt),
            w_oh=_init.recurrent_kernel(
                recurrent_kernel_init, k_oh, (n_out, H), 1, pdt, _init.lecun_normal
            ),
            b=_init.biases(bias_init, k_b, H, (1,), pdt)[0],
            w_ho=_init.lecun_normal(k_ho, (hidden_size, output_size), pdt),
            b_o=jnp.zeros((output_size,), pdt),
        )

    def step(params, o, xp):
        h = jnp.tanh(xp + pol.dot(o, params.w_oh))
        o = pol.dot(h, params.w_ho) + pol.acc(params.b_o)
        return o, pol.out(o)

    return make_cell(
        init,
        zeros_carry(output_size, pol.accum_dtype),
        input_size,
        output_size,
        affine_project(input_size, "w_ih", "b", pol),
        step,
        config=cell_config(
            jordan_rnn,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            output_size=output_size,
        ),
    )
