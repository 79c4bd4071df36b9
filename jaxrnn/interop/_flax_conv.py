r"""Flax's ``ConvLSTMCell`` and :func:`jaxrnn.conv_lstm`: one function, two parameter layouts.

Both cells convolve with stride 1 and ``"SAME"`` padding, in any number of spatial dimensions,
with kernels laid out ``(*kernel_size, in_channels, 4 * H)`` (Flax's ``Conv`` layout is
jaxrnn's), so kernels move as they are, with two differences: Flax orders the gate blocks
``i, g, f, o`` (jaxrnn ``i, f, g, o``, PyTorch's order) and adds 1 to the forget-gate
pre-activation in every step, where jaxrnn has it in its bias. Flax's two bias vectors
(``ih`` and ``hh``) sum, with that 1, to jaxrnn's one:

.. math::

    b = b^{ih} + b^{hh} + (0, 1, 0, 0) \quad \text{(blocks } i, f, g, o\text{)}.

Going to Flax, ``b`` goes to ``ih`` and ``hh`` holds the :math:`-1` that cancels the offset,
so that coming back gives ``b`` bit for bit. Flax's other options (strides, other padding) have
no jaxrnn counterpart and are refused. Used by :mod:`jaxrnn.interop.flax`; imports no Flax.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._core import Cell
from jaxrnn.cells import ConvLSTMParams, conv_lstm
from jaxrnn.interop._common import _check_dtypes, _dtype_kwargs, _split


def _same_padding(kernel: tuple[int, ...]) -> list[tuple[int, int]]:
    """The ``(low, high)`` pads of stride-1 ``"SAME"`` padding (the extra one after)."""
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]


def _check_conv_lstm_module(module, kernel: tuple[int, ...]) -> None:
    """Refuse a Linen ``ConvLSTMCell`` computing other than :func:`jaxrnn.conv_lstm` with
    kernels of spatial shape ``kernel``: another ``kernel_size``, strides, or padding that is
    not ``"SAME"`` (explicit pads equal to ``"SAME"``'s are accepted)."""
    name = type(module).__name__
    size = module.kernel_size
    if isinstance(size, int) or tuple(size) != kernel:
        raise ValueError(
            f"{name}(kernel_size={size!r}): the variables' kernels have spatial shape {kernel}"
        )
    strides = 1 if module.strides is None else module.strides
    if (isinstance(strides, int) and strides != 1) or (
        not isinstance(strides, int) and any(s != 1 for s in strides)
    ):
        raise ValueError(
            f"{name}(strides={module.strides!r}): jr.conv_lstm convolves with stride 1 (a "
            "strided state would shrink every step)"
        )
    padding = module.padding
    if isinstance(padding, str):
        ok = padding.upper() == "SAME"
    else:
        pads = [padding] * len(kernel) if isinstance(padding, int) else list(padding)
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in pads]
        ok = pads == _same_padding(kernel)
    if not ok:
        raise ValueError(
            f"{name}(padding={padding!r}): jr.conv_lstm pads 'SAME' (for kernel_size "
            f"{kernel}: {_same_padding(kernel)})"
        )


def _swap_gf(a):
    """Exchange the second and third of four gate blocks along the last axis: Flax's
    ``ConvLSTMCell`` order ``i, g, f, o`` <-> jaxrnn's ``i, f, g, o`` (its own inverse)."""
    i, x, y, o = _split(a, 4)
    return jnp.concatenate([i, y, x, o], axis=-1)


def _forget_offset(hidden: int, dtype, value: float = 1.0):
    """Flax's ``ConvLSTMCell`` adds 1 to the forget gate: that 1 (or ``value``) as a bias, in
    Flax's gate order, zero (``+0.0``) elsewhere."""
    return jnp.zeros((4 * hidden,), dtype).at[2 * hidden : 3 * hidden].set(value)


def _conv_lstm_from_linen(params, module) -> tuple[Cell, ConvLSTMParams]:
    """:func:`~jaxrnn.interop.from_flax_linen` for a ``ConvLSTMCell``: ``params`` is its
    ``"params"`` dict, ``module`` the Linen cell (its options checked) or ``None`` (Flax's
    defaults assumed); the module's ``dtype`` is the caller's to check."""

    def get(name, leaf):
        try:
            return jnp.asarray(params[name][leaf])
        except (KeyError, TypeError):
            raise ValueError(
                f"variables: no {name}/{leaf} parameter for a Linen conv_lstm cell (found "
                f"{sorted(params)})"
            ) from None

    w_hh = get("hh", "kernel")
    if w_hh.ndim < 3 or w_hh.shape[-1] != 4 * w_hh.shape[-2]:
        raise ValueError(
            "variables['params']['hh']['kernel']: expected shape (*kernel_size, H, 4 * H), got "
            f"{w_hh.shape}"
        )
    kernel, hidden = w_hh.shape[:-2], w_hh.shape[-2]
    w_ih = get("ih", "kernel")
    if w_ih.shape[:-2] != kernel or w_ih.ndim != w_hh.ndim or w_ih.shape[-1] != 4 * hidden:
        raise ValueError(
            f"variables['params']['ih']['kernel']: expected shape (*{kernel}, in_channels, "
            f"{4 * hidden}) (from hh/kernel, {w_hh.shape}), got {w_ih.shape}"
        )
    if module is not None:
        _check_conv_lstm_module(module, kernel)
    if module is None or module.use_bias:
        b_ih, b_hh = get("ih", "bias"), get("hh", "bias")
        for name, b in (("ih", b_ih), ("hh", b_hh)):
            if b.shape != (4 * hidden,):
                raise ValueError(
                    f"variables['params']['{name}']['bias']: expected shape ({4 * hidden},), "
                    f"got {b.shape}"
                )
    else:
        for name in ("ih", "hh"):
            if "bias" in params.get(name, {}):
                raise ValueError(
                    f"variables: {name}/bias is there, but ConvLSTMCell(use_bias=False) has none"
                )
        b_ih = b_hh = jnp.zeros((4 * hidden,), w_hh.dtype)
    _check_dtypes({"w_hh": w_hh, "w_ih": w_ih, "b_ih": b_ih, "b_hh": b_hh})
    # b_ih + (b_hh + offset), the input-side bias kept bit for bit where the rest is zero
    # (as _conv_lstm_to_linen writes it), so that a round trip through Flax is exact.
    rest = b_hh + _forget_offset(hidden, b_hh.dtype)
    b = jnp.where(rest == 0, b_ih, b_ih + rest)
    cell = conv_lstm(w_ih.shape[-2], hidden, kernel, **_dtype_kwargs(w_hh.dtype))
    return cell, ConvLSTMParams(_swap_gf(w_ih), _swap_gf(w_hh), _swap_gf(b))


def _conv_lstm_to_linen(params: ConvLSTMParams) -> dict:
    """The ``"params"`` dict of the Linen ``ConvLSTMCell`` computing what ``params`` compute in
    :func:`jaxrnn.conv_lstm` (biases as in the module docstring)."""
    b = jnp.asarray(params.b)
    return {
        "ih": {"kernel": _swap_gf(params.w_ih), "bias": _swap_gf(b)},
        "hh": {
            "kernel": _swap_gf(params.w_hh),
            "bias": _forget_offset(b.shape[-1] // 4, b.dtype, -1.0),
        },
    }
