r"""Layer-normalised recurrent cells (Ba, Kiros & Hinton 2016, "Layer Normalization").

Layer normalisation re-centres and re-scales a vector of pre-activations by its own mean and
variance over the features, then applies a learned gain :math:`\gamma` and bias :math:`\beta`:

.. math::

    \mathrm{LN}(a; \gamma, \beta) = \gamma \odot \frac{a - \mu(a)}{\sqrt{\sigma^2(a) + \epsilon}}
    + \beta, \qquad \mu(a) = \frac1n \sum_k a_k, \quad
    \sigma^2(a) = \frac1n \sum_k (a_k - \mu(a))^2

In a recurrent cell it keeps the scale of the summed inputs of every step the same, whatever the
length of the sequence, which is what makes it the normalisation of choice for RNNs (batch
statistics vary over time steps and sequence lengths).

Both cells follow PyTorch's benchmark ``LayerNormLSTMCell`` (``benchmarks/fastrnns/
custom_lstms.py`` in the PyTorch repository), which TF Addons' ``LayerNormLSTMCell`` matches in
structure: one LayerNorm over the fused input projection :math:`x W_{ih}` (all gates at once),
one over the fused recurrent projection :math:`h W_{hh}`, their LN biases in place of the gate
biases, and one LayerNorm over the new cell state :math:`c_t` before the output :math:`\tanh`;
the normalised :math:`c_t` is the state carried on. :math:`\epsilon = 10^{-5}` as in PyTorch's
``nn.LayerNorm`` (TF Addons uses Keras' :math:`10^{-3}`). One deviation, as in
:func:`jaxrnn.lstm`: the forget-gate block of the input LayerNorm's bias starts at
``forget_bias = 1.0`` (PyTorch's benchmark starts at 0; pass ``forget_bias=0.0`` for its
initialisation). Statistics are computed in the accumulation dtype (float32 under a bf16
policy, :mod:`jaxrnn.precision`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_features
from jaxrnn._core import Array, Cell, Initializer
from jaxrnn.cells import _init
from jaxrnn.cells._build import cell_config, make_cell, setup, zeros_carry
from jaxrnn.cells._gated import LSTMCarry, gru_update, lstm_update

__all__ = ["LayerNormGRUParams", "LayerNormLSTMParams", "layer_norm_gru", "layer_norm_lstm"]

EPSILON = 1e-5  # PyTorch's nn.LayerNorm default; keeps the division finite for constant rows


class LayerNormLSTMParams(NamedTuple):
    """Parameters of :func:`layer_norm_lstm`: ``w_ih (I, 4H)``, ``w_hh (H, 4H)`` (gate blocks
    ``i, f, g, o``), the gains and biases of the three LayerNorms, ``ln_ih_scale``,
    ``ln_ih_bias``, ``ln_hh_scale``, ``ln_hh_bias`` ``(4H,)`` and ``ln_c_scale``, ``ln_c_bias``
    ``(H,)``."""

    w_ih: Array
    w_hh: Array
    ln_ih_scale: Array
    ln_ih_bias: Array
    ln_hh_scale: Array
    ln_hh_bias: Array
    ln_c_scale: Array
    ln_c_bias: Array


class LayerNormGRUParams(NamedTuple):
    """Parameters of :func:`layer_norm_gru`: ``w_ih (I, 3H)``, ``w_hh (H, 3H)`` (gate blocks
    ``r, z, n``) and the gains and biases ``(3H,)`` of the input and recurrent LayerNorms."""

    w_ih: Array
    w_hh: Array
    ln_ih_scale: Array
    ln_ih_bias: Array
    ln_hh_scale: Array
    ln_hh_bias: Array


def layer_norm(a: Array, scale: Array, bias: Array) -> Array:
    r""":math:`\mathrm{LN}(a; \gamma, \beta)` over the last axis (biased variance, as PyTorch).

    >>> import jax.numpy as jnp
    >>> from jaxrnn.cells._layernorm import layer_norm
    >>> y = layer_norm(jnp.array([1.0, 2.0, 3.0]), jnp.ones(3), jnp.zeros(3))
    >>> [round(v, 4) for v in y.tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    mean = jnp.mean(a, axis=-1, keepdims=True)
    centred = a - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + EPSILON) * scale + bias


def _normalised_project(input_size: int, pol):
    """``project(params, x) = LN(x @ w_ih; ln_ih_scale, ln_ih_bias)``, shared by both cells."""

    def project(params, x):
        check_features("x", x, input_size)
        gain, bias = pol.acc((params.ln_ih_scale, params.ln_ih_bias))
        return layer_norm(pol.dot(x, params.w_ih), gain, bias)

    return project


def layer_norm_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Layer-normalised LSTM cell (Ba et al. 2016; PyTorch's benchmark ``LayerNormLSTMCell``).

    .. math::

        (i_t, f_t, g_t, o_t) &= \mathrm{LN}(x_t W_{ih}; \gamma_{ih}, \beta_{ih})
            + \mathrm{LN}(h_{t-1} W_{hh}; \gamma_{hh}, \beta_{hh}) \\
        c_t &= \mathrm{LN}\big(\sigma(f_t) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t);
            \gamma_c, \beta_c\big) \\
        h_t &= \sigma(o_t) \odot \tanh(c_t)

    with the LayerNorms over all ``4H`` gate pre-activations at once and over the ``H`` units of
    the cell state; see the module docstring for the conventions.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        forget_bias: initial value of the forget-gate block of ``ln_ih_bias``, added to what
            ``bias_init`` gives.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of ``w_ih``, called per gate ``i, f, g, o`` with ``(I, H)``
            (``None``: LeCun normal); see "Custom initialisers" in :mod:`jaxrnn.cells`.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(H, H)`` (``None``:
            orthogonal).
        bias_init: initialiser of the gate biases ``ln_ih_bias`` and ``ln_hh_bias``, per gate
            ``(H,)`` (``None``: zeros). The gains and ``ln_c_bias`` keep their defaults.

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`LayerNormLSTMParams` and carry
        :class:`~jaxrnn.LSTMCarry` ``(h, c)``; ``y`` is ``h``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.layer_norm_lstm(3, 8)
    >>> carry, ys = jr.scan(cell, cell.init(jax.random.key(0)), jnp.ones((2, 5, 3)))
    >>> ys.shape, carry.c.shape
    ((2, 5, 8), (2, 8))
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
        ln_ih_bias, ln_hh_bias = _init.biases(bias_init, k_b, H, (4, 4), pdt)
        return LayerNormLSTMParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 4, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (H, H), 4, pdt),
            ln_ih_scale=jnp.ones((4 * H,), pdt),
            ln_ih_bias=_init.add_forget_bias(ln_ih_bias, 1, H, forget_bias, bias_init),
            ln_hh_scale=jnp.ones((4 * H,), pdt),
            ln_hh_bias=ln_hh_bias,
            ln_c_scale=jnp.ones((H,), pdt),
            ln_c_bias=jnp.zeros((H,), pdt),
        )

    project = _normalised_project(input_size, pol)

    def step(params, carry, xp):
        h, c = carry
        gain, bias, c_gain, c_bias = pol.acc(
            (params.ln_hh_scale, params.ln_hh_bias, params.ln_c_scale, params.ln_c_bias)
        )
        gates = xp + layer_norm(pol.dot(h, params.w_hh), gain, bias)
        h, c = lstm_update(gates, c, normalise_c=lambda c: layer_norm(c, c_gain, c_bias))
        return LSTMCarry(h, c), pol.out(h)

    initial_carry = zeros_carry((H, H), pol.accum_dtype, LSTMCarry)

    return make_cell(
        init,
        initial_carry,
        input_size,
        H,
        project,
        step,
        config=cell_config(
            layer_norm_lstm,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            forget_bias=forget_bias,
        ),
    )


def layer_norm_gru(
    input_size: int,
    hidden_size: int,
    *,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Layer-normalised GRU cell (Ba et al. 2016, supplementary "layer-normalized GRU").

    .. math::

        (a^x_r, a^x_z, a^x_n) &= \mathrm{LN}(x_t W_{ih}; \gamma_{ih}, \beta_{ih}), \qquad
        (a^h_r, a^h_z, a^h_n) = \mathrm{LN}(h_{t-1} W_{hh}; \gamma_{hh}, \beta_{hh}) \\
        r_t &= \sigma(a^x_r + a^h_r), \qquad z_t = \sigma(a^x_z + a^h_z) \\
        n_t &= \tanh(a^x_n + r_t \odot a^h_n) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    The reset gate acts on the normalised recurrent projection, as in Ba et al.'s formulation
    (and :func:`jaxrnn.gru` with ``reset_after=True``); the LayerNorms span all ``3H`` gate
    pre-activations at once, as in :func:`layer_norm_lstm`, and their biases replace the gate
    biases. The update uses jaxrnn's (PyTorch's) :math:`z` convention.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of ``w_ih``, called per gate ``r, z, n`` with ``(I, H)``
            (``None``: LeCun normal); see "Custom initialisers" in :mod:`jaxrnn.cells`.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(H, H)`` (``None``:
            orthogonal).
        bias_init: initialiser of the gate biases ``ln_ih_bias`` and ``ln_hh_bias``, per gate
            ``(H,)`` (``None``: zeros). The gains keep their defaults.

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`LayerNormGRUParams` and carry ``h (*batch, H)``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.layer_norm_gru(3, 8)
    >>> carry, ys = jr.scan(cell, cell.init(jax.random.key(0)), jnp.ones((2, 5, 3)))
    >>> ys.shape
    (2, 5, 8)
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
        ln_ih_bias, ln_hh_bias = _init.biases(bias_init, k_b, H, (3, 3), pdt)
        return LayerNormGRUParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 3, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (H, H), 3, pdt),
            ln_ih_scale=jnp.ones((3 * H,), pdt),
            ln_ih_bias=ln_ih_bias,
            ln_hh_scale=jnp.ones((3 * H,), pdt),
            ln_hh_bias=ln_hh_bias,
        )

    project = _normalised_project(input_size, pol)

    def step(params, h, xp):
        gain, bias = pol.acc((params.ln_hh_scale, params.ln_hh_bias))
        hp = layer_norm(pol.dot(h, params.w_hh), gain, bias)
        h_r, h_z, h_n = jnp.split(hp, 3, axis=-1)
        h = gru_update(xp, h, (h_r, h_z), lambda r: r * h_n)
        return h, pol.out(h)

    return make_cell(
        init,
        zeros_carry(H, pol.accum_dtype),
        input_size,
        H,
        project,
        step,
        config=cell_config(layer_norm_gru, pol, input_size=input_size, hidden_size=hidden_size),
    )
