r"""The gated cells: GRU (Cho et al. 2014), LSTM (Hochreiter & Schmidhuber 1997, with peepholes,
coupled gates and a projection) and the minimal gated unit (Zhou et al. 2016).

The LSTM and GRU state updates (what follows the gate pre-activations) are written once here,
as :func:`lstm_update` and :func:`gru_update`, and shared by the convolutional
(:mod:`._conv`) and layer-normalised (:mod:`._layernorm`) variants.

The minimal gated unit (Zhou, Wu, Zhang & Zhou 2016) keeps one gate of the GRU, the forget gate
:math:`f`, and lets it do both the GRU's jobs: it resets the state the candidate reads and it
interpolates between the old state and the candidate. jaxrnn follows Flax's ``MGUCell``
(``flax.linen.recurrent``) exactly, so that weights move between the two: the forget gate
multiplies the recurrent projection *after* the matmul (:math:`f \odot (h W_{hn} + b_{hn})`, the
form cuDNN uses for the GRU), ``reset_gate=False`` drops that product, the update is
:math:`h' = (1 - f) \odot n + f \odot h`, and the forget-gate bias starts at 1 (Jozefowicz et
al. 2015). Zhou et al. write the reset before the matmul, :math:`W_h [f \odot h, x]`, and the
update with :math:`f` and :math:`1 - f` exchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_scalar, check_size
from jaxrnn._core import Array, Cell, Initializer
from jaxrnn.cells import _init
from jaxrnn.cells._build import affine_project, cell_config, make_cell, setup, zeros_carry

__all__ = [
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "MGUParams",
    "gru",
    "lstm",
    "mgu",
]


class GRUParams(NamedTuple):
    """Parameters of :func:`gru`; gate blocks ``r, z, n`` along the last axis.

    ``w_ih (I, 3H)``, ``w_hh (H, 3H)``, ``b_ih (3H,)``, ``b_hh (3H,)``.
    """

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


class LSTMParams(NamedTuple):
    """Parameters of :func:`lstm`.

    ``w_ih (I, G*H)``, ``w_hh (H or P, G*H)``, ``b (G*H,)`` with gate blocks ``i, f, g, o``
    (``G = 4``), or ``f, g, o`` (``G = 3``) for the coupled cell; ``w_peep`` is ``(3, H)`` with rows
    ``i, f, o`` (coupled: ``(2, H)``, rows ``f, o``) or ``None``; ``w_proj`` is ``(H, P)`` or
    ``None``.
    """

    w_ih: Array
    w_hh: Array
    b: Array
    w_peep: Array | None = None
    w_proj: Array | None = None


class LSTMCarry(NamedTuple):
    """LSTM state: hidden ``h (*batch, H or P)`` and cell ``c (*batch, H)``."""

    h: Array
    c: Array


def gru(
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = False,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Gated recurrent unit (Cho et al. 2014).

    .. math::

        r_t &= \sigma(x_t W_{xr} + b_{xr} + h_{t-1} W_{hr} + b_{hr}) \\
        z_t &= \sigma(x_t W_{xz} + b_{xz} + h_{t-1} W_{hz} + b_{hz}) \\
        n_t &= \tanh(x_t W_{xn} + b_{xn} + (r_t \odot h_{t-1}) W_{hn} + b_{hn})
            \quad\text{(reset_after=False)} \\
        n_t &= \tanh(x_t W_{xn} + b_{xn} + r_t \odot (h_{t-1} W_{hn} + b_{hn}))
            \quad\text{(reset_after=True)} \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    ``reset_after=False`` is the formulation of Cho et al., d2l and Ng's *Sequence Models*
    course (d2l's :math:`\tilde H_t` is :math:`n_t`); ``reset_after=True`` is cuDNN's, PyTorch's
    and Keras' default. Ng's update gate :math:`\Gamma_u` gates the candidate,
    :math:`c_t = \Gamma_u \odot \tilde c_t + (1 - \Gamma_u) \odot c_{t-1}`, which is this cell
    with :math:`z = 1 - \Gamma_u`.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        reset_after: where the reset gate is applied (see above).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (default ``param_dtype``); see
            :mod:`jaxrnn.precision`.
        kernel_init: initialiser of ``w_ih``, called per gate ``r, z, n`` with ``(I, H)``
            (``None``: LeCun normal); see "Custom initialisers" in the module docstring.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(H, H)`` (``None``:
            orthogonal).
        bias_init: initialiser of ``b_ih`` and of ``b_hh``, per gate ``(H,)`` (``None``: zeros).

    Returns:
        A :class:`Cell` with :class:`GRUParams` (gate blocks ``r, z, n``) and a carry ``h`` of
        shape ``(*batch, H)``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.gru(3, 4, reset_after=True)
    >>> params = cell.init(jax.random.key(0))
    >>> params.w_ih.shape, params.w_hh.shape, params.b_hh.shape
    ((3, 12), (4, 12), (12,))
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
        b_ih, b_hh = _init.biases(bias_init, k_b, H, (3, 3), pdt)
        return GRUParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 3, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (H, H), 3, pdt),
            b_ih=b_ih,
            b_hh=b_hh,
        )

    def step(params, h, xp):
        b_hh = pol.acc(params.b_hh)
        if reset_after:
            hr, hz, hn = jnp.split(pol.dot(h, params.w_hh) + b_hh, 3, axis=-1)
            h = gru_update(xp, h, (hr, hz), lambda r: r * hn)
        else:
            hrz = pol.dot(h, params.w_hh[:, : 2 * H]) + b_hh[: 2 * H]
            w_hn, b_hn = params.w_hh[:, 2 * H :], b_hh[2 * H :]
            h = gru_update(xp, h, jnp.split(hrz, 2, axis=-1), lambda r: pol.dot(r * h, w_hn) + b_hn)
        return h, pol.out(h)

    return make_cell(
        init,
        zeros_carry(H, pol.accum_dtype),
        input_size,
        H,
        affine_project(input_size, "w_ih", "b_ih", pol),
        step,
        config=cell_config(
            gru,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            reset_after=reset_after,
        ),
    )


def lstm(
    input_size: int,
    hidden_size: int,
    *,
    peephole: bool = False,
    coupled: bool = False,
    forget_bias: float = 1.0,
    proj_size: int | None = None,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Long short-term memory cell, with optional peepholes, coupled gates and projection.

    .. math::

        i_t &= \sigma(x_t W_{xi} + h_{t-1} W_{hi} + w_{ci} \odot c_{t-1} + b_i) \\
        f_t &= \sigma(x_t W_{xf} + h_{t-1} W_{hf} + w_{cf} \odot c_{t-1} + b_f) \\
        \tilde c_t &= \tanh(x_t W_{xc} + h_{t-1} W_{hc} + b_c) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot \tilde c_t \\
        o_t &= \sigma(x_t W_{xo} + h_{t-1} W_{ho} + w_{co} \odot c_t + b_o) \\
        h_t &= o_t \odot \tanh(c_t)

    The peephole terms :math:`w_{c\cdot} \odot c` (diagonal) are present only with
    ``peephole=True``. ``coupled=True`` (CIFG) drops the input gate and sets
    :math:`i_t = 1 - f_t`. With ``proj_size=P``, :math:`h_t = (o_t \odot \tanh c_t) W_{proj}`
    as in PyTorch, and the recurrent weights read the ``P``-sized ``h``.
    The candidate block is called ``g`` in the fused layout (PyTorch's name for
    :math:`\tilde c`).

    Args:
        input_size: ``I``.
        hidden_size: ``H``, size of the cell state ``c``.
        peephole: add diagonal peephole connections (Gers & Schmidhuber 2000).
        coupled: couple input and forget gates, ``i = 1 - f`` (Greff et al. 2017).
        forget_bias: initial value of the forget-gate bias block, added to what ``bias_init``
            gives.
        proj_size: ``P``, size of the projected hidden state, or ``None``.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (default ``param_dtype``); see
            :mod:`jaxrnn.precision`.
        kernel_init: initialiser of ``w_ih``, called per gate (``i, f, g, o``; coupled:
            ``f, g, o``) with ``(I, H)`` (``None``: LeCun normal); see "Custom initialisers" in
            the module docstring.
        recurrent_kernel_init: initialiser of ``w_hh``, per gate ``(H, H)``, or ``(P, H)`` with
            a projection (``None``: orthogonal).
        bias_init: initialiser of ``b``, per gate ``(H,)`` (``None``: zeros). ``w_peep`` and
            ``w_proj`` keep their defaults.

    Returns:
        A :class:`Cell` with :class:`LSTMParams` and carry :class:`LSTMCarry` ``(h, c)``; the
        output ``y`` is ``h``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 4, proj_size=2)
    >>> params = cell.init(jax.random.key(0))
    >>> carry, y = cell.apply(params, cell.initial_carry(), jnp.ones(3))
    >>> carry.h.shape, carry.c.shape, y.shape
    ((2,), (4,), (2,))
    """
    input_size, hidden_size, pol = setup(
        param_dtype,
        dtype,
        (kernel_init, recurrent_kernel_init, bias_init),
        input_size=input_size,
        hidden_size=hidden_size,
    )
    if proj_size is not None:
        proj_size = check_size("proj_size", proj_size)
    forget_bias = check_scalar("forget_bias", forget_bias)
    H = hidden_size
    R = proj_size or hidden_size  # size of h, which the recurrent weights read
    G = 3 if coupled else 4  # fused gate blocks: (i,) f, g, o
    f_block = 0 if coupled else 1
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_hh, k_peep, k_proj, k_b = _init.split(key, 4, bias_init)
        (b,) = _init.biases(bias_init, k_b, H, (G,), pdt)
        bound = 1.0 / math.sqrt(H)  # PyTorch's default init range for RNN weights
        return LSTMParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), G, pdt),
            w_hh=_init.recurrent_kernel(recurrent_kernel_init, k_hh, (R, H), G, pdt),
            b=_init.add_forget_bias(b, f_block, H, forget_bias, bias_init),
            w_peep=(
                jax.random.uniform(k_peep, (G - 1, H), pdt, -bound, bound) if peephole else None
            ),
            w_proj=_init.lecun_normal(k_proj, (H, R), pdt) if proj_size else None,
        )

    def step(params, carry, xp):
        gates = xp + pol.dot(carry.h, params.w_hh)
        w_peep = pol.acc(params.w_peep) if peephole else None
        h, c = lstm_update(gates, carry.c, w_peep=w_peep, coupled=coupled)
        if proj_size:
            h = pol.dot(h, params.w_proj)
        return LSTMCarry(h, c), pol.out(h)

    initial_carry = zeros_carry((R, H), pol.accum_dtype, LSTMCarry)

    return make_cell(
        init,
        initial_carry,
        input_size,
        R,
        affine_project(input_size, "w_ih", "b", pol),
        step,
        config=cell_config(
            lstm,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            peephole=peephole,
            coupled=coupled,
            forget_bias=forget_bias,
            proj_size=proj_size,
        ),
    )


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

    return make_cell(
        init,
        zeros_carry(H, pol.accum_dtype),
        input_size,
        H,
        affine_project(input_size, "w_ih", "b_ih", pol),
        step,
        config=cell_config(
            mgu,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            reset_gate=reset_gate,
            forget_bias=forget_bias,
        ),
    )


# --------------------------------------------------------------------------------------------
# The state updates, shared with the convolutional and layer-normalised cells.


def lstm_update(gates, c, *, w_peep=None, coupled=False, normalise_c=None) -> LSTMCarry:
    r"""The LSTM's new state from its fused gate pre-activations (blocks ``i, f, g, o``; coupled:
    ``f, g, o``) and the previous cell state ``c``.

    .. math::

        c_t = \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g), \qquad
        h_t = \sigma(o) \odot \tanh(c_t)

    with the peephole terms ``w_peep`` (rows ``i, f, o``; coupled: ``f, o``) added to the gates
    that read ``c``, :math:`i = 1 - \sigma(f)` when ``coupled``, and ``normalise_c`` (the
    layer-normalised cell's LayerNorm) applied to :math:`c_t` before the output gate reads it.
    """
    if coupled:
        f, g, o = jnp.split(gates, 3, axis=-1)
    else:
        i, f, g, o = jnp.split(gates, 4, axis=-1)
    if w_peep is not None:
        if coupled:
            f = f + w_peep[0] * c
        else:
            i = i + w_peep[0] * c
            f = f + w_peep[1] * c
    f = jax.nn.sigmoid(f)
    i = 1.0 - f if coupled else jax.nn.sigmoid(i)
    c = f * c + i * jnp.tanh(g)
    if normalise_c is not None:
        c = normalise_c(c)
    if w_peep is not None:
        o = o + w_peep[-1] * c
    return LSTMCarry(jax.nn.sigmoid(o) * jnp.tanh(c), c)


def gru_update(xp, h, h_rz, candidate: Callable[[Array], Array]) -> Array:
    r"""The GRU's new state from the input side ``xp`` (blocks ``r, z, n``), the recurrent
    pre-activations ``h_rz = (h_r, h_z)`` of the reset and update gates, and
    ``candidate(r)``, the recurrent term of the candidate given the reset gate (``r * h_n``
    with ``reset_after``, ``(r * h) W_hn + b_hn`` without).

    .. math::

        n_t = \tanh(x_n + \text{candidate}(r_t)), \qquad
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    written with one multiply, :math:`n_t + z_t \odot (h_{t-1} - n_t)`.
    """
    x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
    h_r, h_z = h_rz
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + candidate(r))
    return n + z * (h - n)
