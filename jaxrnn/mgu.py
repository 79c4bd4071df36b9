r"""The minimal gated unit: a gated recurrence with a single gate.

Zhou, Wu, Zhang & Zhou (2016), "Minimal Gated Unit for Recurrent Neural Networks", keep one
gate of the GRU, the forget gate :math:`f`, and let it do both the GRU's jobs: it resets the
state the candidate reads and it interpolates between the old state and the candidate. Fewer
parameters than a GRU (two gate blocks instead of three) at similar accuracy in their
experiments.

jaxrnn follows Flax's ``MGUCell`` (``flax.linen.recurrent``) exactly, so that weights move
between the two: the forget gate multiplies the recurrent projection *after* the matmul
(:math:`f \odot (h W_{hn} + b_{hn})`, the form cuDNN uses for the GRU), ``reset_gate=False``
drops that product, the update is :math:`h' = (1 - f) \odot n + f \odot h`, and the forget-gate
bias starts at 1 (Jozefowicz et al. 2015). Zhou et al. write the reset before the matmul,
:math:`W_h [f \odot h, x]`, and the update with :math:`f` and :math:`1 - f` exchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import _init
from jaxrnn._init import Initializer
from jaxrnn.cells import Array, Cell, _affine_project, _check_size, _make_cell, _zeros_carry
from jaxrnn.precision import policy

__all__ = ["MGUParams", "mgu"]


class MGUParams(NamedTuple):
    """Parameters of :func:`mgu`: ``w_ih (I, 2H)``, ``w_hh (H, 2H)`` with gate blocks ``f, n``,
    ``b_ih (2H,)`` (``b_if``, ``b_in``) and ``b_hh (H,)`` (``b_hn``, the recurrent candidate
    bias)."""

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


def mgu(
    input_size: int,
    hidden_size: int,
    *,
    reset_gate: bool = True,
    forget_bias: float = 1.0,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Minimal gated unit (Zhou et al. 2016), in Flax's ``MGUCell`` convention.

    .. math::

        f_t &= \sigma(x_t W_{xf} + b_{xf} + h_{t-1} W_{hf}) \\
        n_t &= \tanh\big(x_t W_{xn} + b_{xn} + f_t \odot (h_{t-1} W_{hn} + b_{hn})\big) \\
        h_t &= (1 - f_t) \odot n_t + f_t \odot h_{t-1}

    With ``reset_gate=False`` the candidate is :math:`\tanh(x_t W_{xn} + b_{xn} + h_{t-1}
    W_{hn} + b_{hn})` (Flax has no :math:`b_{hn}` then; jaxrnn keeps it, initialised to zero).

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        reset_gate: multiply the recurrent candidate projection by :math:`f_t` (Flax's
            ``reset_gate``).
        forget_bias: initial value of :math:`b_{xf}` (Flax: ``forget_bias_init=ones``), added
            to what ``bias_init`` gives.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of ``w_ih``, called per gate ``f, n`` with ``(I, H)``
            (``None``: LeCun normal); see "Custom initialisers" in :mod:`jaxrnn.cells`.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(H, H)`` (``None``:
            orthogonal).
        bias_init: initialiser of the blocks ``b_xf``, ``b_xn`` of ``b_ih`` and of ``b_hh``,
            each ``(H,)`` (``None``: zeros). Flax's ``MGUCell`` has ``forget_bias_init`` in
            place of ``bias_init + forget_bias`` for :math:`b_{xf}` and ``activation_bias_init``
            for the others.

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`MGUParams` and carry ``h (*batch, H)``; ``y`` is
        ``h``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.mgu(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)))
    >>> params.w_hh.shape, ys.shape, params.b_ih[:8].tolist() == [1.0] * 8
    ((8, 16), (2, 5, 8), True)
    """
    _check_size("input_size", input_size)
    _check_size("hidden_size", hidden_size)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H = hidden_size
    pol = policy(param_dtype, dtype)
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_hh, k_b = _init.split(key, 2, bias_init)
        b_ih, b_hh = _init.biases(bias_init, k_b, H, (2, 1), pdt)
        return MGUParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 2, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (H, H), 2, pdt),
            b_ih=_init.add_forget_bias(b_ih, 0, H, forget_bias, bias_init),
            b_hh=b_hh,
        )

    def step(params, h, xp):
        x_f, x_n = jnp.split(xp, 2, axis=-1)
        h_f, h_n = jnp.split(pol.dot(h, params.w_hh), 2, axis=-1)
        f = jax.nn.sigmoid(x_f + h_f)
        h_n = h_n + pol.acc(params.b_hh)
        n = jnp.tanh(x_n + (f * h_n if reset_gate else h_n))
        h = (1.0 - f) * n + f * h
        return h, pol.out(h)

    return _make_cell(
        init,
        _zeros_carry(H, pol.accum_dtype),
        input_size,
        H,
        _affine_project(input_size, "w_ih", "b_ih", pol),
        step,
        config=(
            ("factory", mgu),
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("reset_gate", reset_gate),
            ("forget_bias", forget_bias),
            *pol.config(),
        ),
    )
