r"""Convolutional recurrences: LSTM and GRU cells whose state is a feature map.

In a convolutional recurrent cell (Shi et al. 2015, "Convolutional LSTM Network: A Machine
Learning Approach for Precipitation Nowcasting") every matrix product of the dense cell becomes a
convolution, so input and state keep their spatial layout: ``x`` is ``(*batch, *spatial, C)``,
the state ``(*batch, *spatial, H)``, and a unit sees a ``kernel_size`` neighbourhood of the
input and of the previous state. Any number of spatial dimensions (1-D signals, 2-D images,
3-D volumes): the length of ``kernel_size`` says how many.

Conventions, shared with Flax's ``ConvLSTMCell`` and Haiku's ``ConvNDLSTM``: stride 1 and
``"SAME"`` padding (for an even kernel size, the extra padding goes after), so the state has the
input's spatial shape; no peephole terms (Shi et al.'s :math:`W_{c\cdot} \circ c` are omitted by
both). Kernels are stored ``(*kernel_size, in_channels, gates * H)``, gate blocks in jaxrnn's
(PyTorch's) order along the last axis, like the dense cells' ``w_ih``/``w_hh``; both kernels are
LeCun-normal initialised (fan-in ``prod(kernel_size) * in_channels``), as Flax's ``Conv``.

:func:`jaxrnn.scan` runs these cells like any other. The cell's ``spatial_dims`` tells it that
sequences are ``(*batch, T, *spatial, C)`` (``(T, *batch, *spatial, C)`` when ``time_major``):
``ys`` come out ``(*batch, T, *spatial, H)``, the carry is ``(*batch, *spatial, H)``, and
``lengths`` has the shape of ``batch`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_size
from jaxrnn._core import Array, Cell, Initializer
from jaxrnn.cells import _init
from jaxrnn.cells._build import cell_config, make_cell, setup, zeros_carry
from jaxrnn.cells._gated import LSTMCarry, gru_update, lstm_update
from jaxrnn.precision import Policy

__all__ = ["ConvGRUParams", "ConvLSTMParams", "conv_gru", "conv_lstm"]


class ConvLSTMParams(NamedTuple):
    """Parameters of :func:`conv_lstm`: kernels ``w_ih (*K, C, 4H)``, ``w_hh (*K, H, 4H)`` and
    bias ``b (4H,)``, gate blocks ``i, f, g, o``."""

    w_ih: Array
    w_hh: Array
    b: Array


class ConvGRUParams(NamedTuple):
    """Parameters of :func:`conv_gru`: kernels ``w_ih (*K, C, 3H)``, ``w_hh (*K, H, 3H)`` and
    biases ``b_ih (3H,)``, ``b_hh (3H,)``, gate blocks ``r, z, n``."""

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


_conv_init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1)  # fan-in: prod(K) * C


def _check_kernel_size(kernel_size) -> tuple[int, ...]:
    if isinstance(kernel_size, int) or not isinstance(kernel_size, Sequence):
        raise TypeError(
            "kernel_size: expected a sequence of positive ints, one per spatial dimension "
            f"(e.g. (3, 3) for images), got {kernel_size!r}"
        )
    kernel = tuple(kernel_size)
    if not kernel:
        raise ValueError("kernel_size: expected at least one spatial dimension, got ()")
    for k in kernel:
        check_size("kernel_size", k)
    return kernel


def _conv(pol: Policy, x: Array, w: Array) -> Array:
    """Stride-1 ``"SAME"`` cross-correlation of ``x (*batch, *spatial, C)`` with
    ``w (*K, C, O)``, operands in ``pol.dtype`` and sums in ``pol.accum_dtype``."""
    n = w.ndim - 2
    batch, feature_map = x.shape[: x.ndim - n - 1], x.shape[x.ndim - n - 1 :]
    lhs = x.reshape((math.prod(batch), *feature_map))
    spec = (0, n + 1, *range(1, n + 1))  # N, C, spatial...
    out = jax.lax.conv_general_dilated(
        lhs.astype(pol.dtype),
        w.astype(pol.dtype),
        window_strides=(1,) * n,
        padding="SAME",
        dimension_numbers=jax.lax.ConvDimensionNumbers(
            lhs_spec=spec, rhs_spec=(n + 1, n, *range(n)), out_spec=spec
        ),
        preferred_element_type=pol.accum_dtype,
    )
    return out.reshape((*batch, *out.shape[1:]))


def _check_map(name: str, x: Array, n: int, channels: int) -> None:
    """Trace-time check that ``x`` is ``(*batch, *spatial, channels)`` with ``n`` spatial dims."""
    shape = jnp.shape(x)
    if len(shape) < n + 1 or shape[-1] != channels:
        raise ValueError(
            f"{name}: expected shape (*batch, <{n} spatial dims>, {channels}), the channels "
            f"last, got {shape}"
        )


def _conv_project(n: int, input_size: int, bias: str, pol: Policy):
    """``project(params, x) = w_ih * x + params.<bias>``, the convolutional counterpart of the
    dense cells' ``affine_project``."""

    def project(params, x):
        _check_map("x", x, n, input_size)
        return _conv(pol, x, params.w_ih) + pol.acc(getattr(params, bias))

    return project


def _check_state_matches(h: Array, xp: Array, n: int) -> None:
    if jnp.shape(h)[:-1] != jnp.shape(xp)[:-1]:
        raise ValueError(
            f"carry: expected batch and spatial shape {jnp.shape(xp)[:-1]} (those of x), "
            f"got {jnp.shape(h)[:-1]} (carry shape {jnp.shape(h)}); the state of a "
            f"convolutional cell has the spatial shape of its input ({n} spatial dims)"
        )


def conv_lstm(
    input_size: int,
    hidden_size: int,
    kernel_size: Sequence[int],
    *,
    forget_bias: float = 1.0,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Convolutional LSTM cell (Shi et al. 2015), without peepholes.

    .. math::

        i_t &= \sigma(W_{xi} * x_t + W_{hi} * h_{t-1} + b_i) \\
        f_t &= \sigma(W_{xf} * x_t + W_{hf} * h_{t-1} + b_f) \\
        g_t &= \tanh(W_{xg} * x_t + W_{hg} * h_{t-1} + b_g) \\
        o_t &= \sigma(W_{xo} * x_t + W_{ho} * h_{t-1} + b_o) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    where :math:`*` is a stride-1, ``"SAME"``-padded convolution over the spatial axes. Flax's
    ``ConvLSTMCell`` adds 1 to the forget-gate pre-activation in every step; here that offset is
    the initial value of the forget bias block (``forget_bias=1.0``), which computes the same
    function at initialisation and stays a trainable parameter, as in :func:`jaxrnn.lstm`
    (Jozefowicz et al. 2015).

    Args:
        input_size: ``C``, channels of ``x`` (its last axis).
        hidden_size: ``H``, channels of the state.
        kernel_size: one positive int per spatial dimension, e.g. ``(3, 3)`` for images.
        forget_bias: initial value of the forget-gate bias block, added to what ``bias_init``
            gives.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the convolution operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of ``w_ih``, called per gate ``i, f, g, o`` with
            ``(*kernel_size, C, H)`` (``None``: LeCun normal); see "Custom initialisers" in
            :mod:`jaxrnn.cells`.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(*kernel_size, H, H)``
            (``None``: LeCun normal).
        bias_init: initialiser of ``b``, per gate ``(H,)`` (``None``: zeros).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`ConvLSTMParams` and carry
        :class:`~jaxrnn.LSTMCarry` ``(h, c)``, each ``(*batch, *spatial, H)``; ``y`` is ``h``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.conv_lstm(2, 4, (3, 3))
    >>> params = cell.init(jax.random.key(0))
    >>> frames = jnp.ones((8, 10, 16, 16, 2))  # (batch, time, height, width, channels)
    >>> carry, ys = jr.scan(cell, params, frames)
    >>> params.w_hh.shape, ys.shape, carry.c.shape
    ((3, 3, 4, 16), (8, 10, 16, 16, 4), (8, 16, 16, 4))
    """
    input_size, hidden_size, pol = setup(
        param_dtype,
        dtype,
        (kernel_init, recurrent_kernel_init, bias_init),
        input_size=input_size,
        hidden_size=hidden_size,
    )
    kernel = _check_kernel_size(kernel_size)
    n, H = len(kernel), hidden_size
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_hh, k_b = _init.split(key, 2, bias_init)
        (b,) = _init.biases(bias_init, k_b, H, (4,), pdt)
        return ConvLSTMParams(
            w_ih=_init.input_kernel(
                kernel_init, k_ih, (*kernel, input_size, H), 4, pdt, _conv_init
            ),
            w_hh=_init.recurrent_kernel(
                recurrent_kernel_init, k_hh, (*kernel, H, H), 4, pdt, _conv_init
            ),
            b=_init.add_forget_bias(b, 1, H, forget_bias, bias_init),
        )

    project = _conv_project(n, input_size, "b", pol)

    def step(params, carry, xp):
        h, c = carry
        _check_state_matches(h, xp, n)
        gates = xp + _conv(pol, h.astype(pol.accum_dtype), params.w_hh)
        h, c = lstm_update(gates, c)
        return LSTMCarry(h, c), pol.out(h)

    initial_carry = zeros_carry((H, H), pol.accum_dtype, LSTMCarry)

    cell = make_cell(
        init,
        initial_carry,
        input_size,
        H,
        project,
        step,
        config=cell_config(
            conv_lstm,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            kernel_size=kernel,
            forget_bias=forget_bias,
        ),
    )
    return cell._replace(spatial_dims=n)


def conv_gru(
    input_size: int,
    hidden_size: int,
    kernel_size: Sequence[int],
    *,
    reset_after: bool = False,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Convolutional GRU cell (Ballas et al. 2016, "Delving Deeper into Convolutional Networks
    for Learning Video Representations"), in :func:`jaxrnn.gru`'s conventions.

    .. math::

        r_t &= \sigma(W_{xr} * x_t + b_{xr} + W_{hr} * h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{xz} * x_t + b_{xz} + W_{hz} * h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{xn} * x_t + b_{xn} + W_{hn} * (r_t \odot h_{t-1}) + b_{hn}) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    with :math:`*` a stride-1, ``"SAME"``-padded convolution. ``reset_after=True`` applies the
    reset gate after the recurrent convolution, :math:`r_t \odot (W_{hn} * h_{t-1} + b_{hn})`
    (the cuDNN/PyTorch form, one fused recurrent convolution per step). Ballas et al. write the
    update with :math:`z` and :math:`1 - z` exchanged, which only renames the gate.

    Args:
        input_size: ``C``, channels of ``x``.
        hidden_size: ``H``, channels of the state.
        kernel_size: one positive int per spatial dimension.
        reset_after: where the reset gate acts (see above).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the convolution operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of ``w_ih``, called per gate ``r, z, n`` with
            ``(*kernel_size, C, H)`` (``None``: LeCun normal); see "Custom initialisers" in
            :mod:`jaxrnn.cells`.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(*kernel_size, H, H)``
            (``None``: LeCun normal).
        bias_init: initialiser of ``b_ih`` and of ``b_hh``, per gate ``(H,)`` (``None``: zeros).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`ConvGRUParams` and a carry ``h`` of shape
        ``(*batch, *spatial, H)``; ``y`` is ``h``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.conv_gru(1, 3, (5,))  # 1-D signals
    >>> carry, ys = jr.scan(cell, cell.init(jax.random.key(0)), jnp.ones((2, 7, 32, 1)))
    >>> ys.shape, carry.shape
    ((2, 7, 32, 3), (2, 32, 3))
    """
    input_size, hidden_size, pol = setup(
        param_dtype,
        dtype,
        (kernel_init, recurrent_kernel_init, bias_init),
        input_size=input_size,
        hidden_size=hidden_size,
    )
    kernel = _check_kernel_size(kernel_size)
    n, H = len(kernel), hidden_size
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_hh, k_b = _init.split(key, 2, bias_init)
        b_ih, b_hh = _init.biases(bias_init, k_b, H, (3, 3), pdt)
        return ConvGRUParams(
            w_ih=_init.input_kernel(
                kernel_init, k_ih, (*kernel, input_size, H), 3, pdt, _conv_init
            ),
            w_hh=_init.recurrent_kernel(
                recurrent_kernel_init, k_hh, (*kernel, H, H), 3, pdt, _conv_init
            ),
            b_ih=b_ih,
            b_hh=b_hh,
        )

    project = _conv_project(n, input_size, "b_ih", pol)

    def step(params, h, xp):
        _check_state_matches(h, xp, n)
        b_hh = pol.acc(params.b_hh)
        if reset_after:
            h_r, h_z, h_n = jnp.split(_conv(pol, h, params.w_hh) + b_hh, 3, axis=-1)
            h = gru_update(xp, h, (h_r, h_z), lambda r: r * h_n)
        else:
            h_rz = _conv(pol, h, params.w_hh[..., : 2 * H]) + b_hh[: 2 * H]
            w_hn, b_hn = params.w_hh[..., 2 * H :], b_hh[2 * H :]
            h = gru_update(
                xp, h, (h_rz[..., :H], h_rz[..., H:]), lambda r: _conv(pol, r * h, w_hn) + b_hn
            )
        return h, pol.out(h)

    initial_carry = zeros_carry(H, pol.accum_dtype)

    cell = make_cell(
        init,
        initial_carry,
        input_size,
        H,
        project,
        step,
        config=cell_config(
            conv_gru,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            kernel_size=kernel,
            reset_after=reset_after,
        ),
    )
    return cell._replace(spatial_dims=n)
