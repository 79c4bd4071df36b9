r"""The sLSTM: an LSTM with exponential gates, a normaliser state and a log-domain stabiliser.

Beck et al. (2024), "xLSTM: Extended Long Short-Term Memory", let the input gate (and
optionally the forget gate) be an exponential, :math:`i_t = \exp(\tilde i_t)`, so that a new
input can outweigh everything stored before it: the cell can *revise* a storage decision, which
a sigmoid gate bounded by 1 cannot. The cell state is divided by a normaliser :math:`n_t` that
sums the same gates, so :math:`h_t` stays a gated weighted average of the cell inputs. The
exponentials would overflow, so the cell carries a stabiliser :math:`m_t`, the running maximum
of the log-gates, and stores :math:`c_t` and :math:`n_t` divided by :math:`e^{m_t}`; since
:math:`h_t` is the ratio of the two, the stabiliser changes no output, only the range of the
stored numbers. The recurrent matrices are block-diagonal: ``num_heads`` heads, each mixing
only its own ``hidden_size / num_heads`` units.

jaxrnn follows the official implementation (github.com/NX-AI/xlstm, ``xlstm/blocks/slstm``:
the cell, its vanilla PyTorch step and its CUDA kernel) wherever the paper leaves a choice
open, so weights move between the two (the gate order, the layout of the recurrent kernel, the
first step from a zero state; see :func:`slstm`), and takes the house defaults for the
initialisers the official code does not tie to the sLSTM.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import check_scalar, check_size
from jaxrnn._core import Array, Cell, Initializer
from jaxrnn.cells import _init
from jaxrnn.cells._build import affine_project, cell_config, make_cell, zeros_carry
from jaxrnn.cells._init import lecun_normal, orthogonal
from jaxrnn.precision import policy

__all__ = ["SLSTMCarry", "SLSTMParams", "slstm"]

_GATES = 4  # i, f, z, o
_FORGET_GATES = ("sigmoid", "exp")
# The official "powerlaw_blockdependent" forget-gate bias of the first block of a stack: unit
# e of a head of d units starts at 5 - 12 (e / (d - 1)) ** 0.3, from +5 (sigmoid 0.993, a
# memory of ~150 steps) down to -7 (forgets at once), a spread of time scales in every head.
_POWERLAW_START, _POWERLAW_SPAN, _POWERLAW_EXPONENT = 5.0, 12.0, 0.3


class SLSTMParams(NamedTuple):
    """Parameters of :func:`slstm`; gate blocks ``i, f, z, o`` (``K`` heads of ``d`` units).

    ``w_ih (I, 4H)`` and ``b (4H,)`` with the gate blocks side by side along the last axis;
    ``w_hh (K, d, 4, d)``: ``w_hh[k, :, g, :]`` is the input-major ``(d, d)`` block of gate
    ``g`` and head ``k`` (the official ``sLSTMCell.recurrent_kernel`` layout), i.e. the
    recurrent matrix of gate ``g`` is ``block_diag(w_hh[0, :, g], ..., w_hh[K-1, :, g])``.
    """

    w_ih: Array
    w_hh: Array
    b: Array


class SLSTMCarry(NamedTuple):
    """sLSTM state, each ``(*batch, H)``: hidden ``h``, cell ``c``, normaliser ``n`` and
    stabiliser ``m`` (the official code's state order ``y, c, n, m``). ``c`` and ``n`` are
    stored divided by :math:`e^{m}`. All zeros is the empty memory :func:`slstm` starts from.
    """

    h: Array
    c: Array
    n: Array
    m: Array


def _powerlaw_forget_bias(hidden_size: int, num_heads: int, dtype) -> Array:
    """The official sLSTM forget-gate bias, the same power-law profile in every head."""
    head_dim = hidden_size // num_heads
    grid = jnp.linspace(0.0, 1.0, head_dim)  # e / (d - 1); [0.] for one-unit heads
    head = _POWERLAW_START - _POWERLAW_SPAN * grid**_POWERLAW_EXPONENT
    return jnp.tile(head, num_heads).astype(dtype)


def slstm(
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    forget_gate: str = "sigmoid",
    forget_bias: float | str | None = "powerlaw",
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""sLSTM cell (Beck et al. 2024, xLSTM, section 2.2 and appendix A.2).

    .. math::

        \tilde g_t &= x_t W_g + h_{t-1} R_g + b_g, \qquad g \in \{i, f, z, o\},
            \qquad R_g = \operatorname{diag}(R_g^{(1)}, \dots, R_g^{(K)}) \\
        z_t &= \tanh \tilde z_t, \qquad o_t = \sigma(\tilde o_t), \qquad
            \log i_t = \tilde i_t, \qquad
            \log f_t = \log \sigma(\tilde f_t) \ \text{or}\ \tilde f_t \\
        m_t &= \max(\log f_t + m_{t-1},\ \log i_t) \\
        i'_t &= \exp(\log i_t - m_t), \qquad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
        c_t &= f'_t \odot c_{t-1} + i'_t \odot z_t, \qquad
            n_t = f'_t \odot n_{t-1} + i'_t \\
        h_t &= o_t \odot c_t / n_t

    Without the stabiliser (:math:`i_t`, :math:`f_t` in place of :math:`i'_t`, :math:`f'_t`)
    the cell is the paper's equations (8)-(14); the stabilised :math:`c_t, n_t` are the
    unstabilised ones times :math:`e^{-m_t}`, so :math:`h_t` is the same and nothing overflows:
    :math:`i'_t, f'_t \le 1` always. Gradients flow through :math:`m_t` too (it changes no
    output, so its contribution cancels; keeping it makes the step's Jacobian that of the
    function it computes, which a Newton solve of the recurrence needs).

    Conventions the paper leaves open, taken from the official code (NX-AI/xlstm):

    * gate order ``i, f, z, o`` in the fused blocks;
    * the forget gate: the paper allows :math:`\sigma` or :math:`\exp` without choosing;
      the official sLSTM uses the sigmoid (``forget_gate="sigmoid"``, the default);
    * the state starts at zeros, and a zero normaliser marks an empty memory: where
      :math:`n_{t-1} = 0`, :math:`\log f_t + m_{t-1}` counts as :math:`-\infty`, so the first
      step sets :math:`m_1 = \tilde i_1`, :math:`n_1 = 1`, :math:`c_1 = z_1` (the official
      CUDA kernel's rule). Then :math:`n_t \ge 1` at every step (one of :math:`i'_t, f'_t` is 1),
      so :math:`h_t = o_t c_t / n_t` needs no :math:`\epsilon`, and the official code has none;
    * the recurrent kernel: per gate *and* per head, ``w_hh (K, d, 4, d)`` as the official
      ``recurrent_kernel``; its bias ``b`` is the official ``bias`` (``(K, 4, d)``) as
      ``bias.transpose(1, 0, 2).reshape(-1)``. The official layer computes the input
      projections outside the cell (head-wise, no bias); here ``x_t W`` is a dense ``w_ih``.

    Initialisers: each is a ``jax.nn.initializers``-style ``init(key, shape, dtype)``, called
    once per block with its own key. ``kernel_init`` per gate, shape ``(I, H)`` (default LeCun
    normal); ``recurrent_kernel_init`` per gate and head, ``(d, d)`` (default orthogonal, so
    every ``R_g`` is orthogonal; the official default is zeros, ``jax.nn.initializers.zeros``);
    ``bias_init`` per gate, ``(H,)`` (default zeros). The forget-gate block is then set by
    ``forget_bias``.

    Args:
        input_size: ``I``.
        hidden_size: ``H``, a multiple of ``num_heads``.
        num_heads: ``K``, the number of diagonal blocks of every recurrent matrix (the official
            default, 4); ``1`` mixes all units.
        forget_gate: ``"sigmoid"`` (:math:`f = \sigma(\tilde f)`, the official code's) or
            ``"exp"`` (:math:`f = \exp(\tilde f)`).
        forget_bias: the initial forget-gate bias: ``"powerlaw"`` (the official default for a
            sigmoid forget gate: unit :math:`e` of each head of :math:`d` units starts at
            :math:`5 - 12\,(e/(d-1))^{0.3}`, from +5 down to -7, so every head holds a spread
            of time scales), a number (that constant, like :func:`~jaxrnn.lstm`'s), or
            ``None`` (``bias_init`` initialises this block like the others).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`); the four
            states stay in the accumulation dtype.
        kernel_init: initialiser of the input weights, per gate block.
        recurrent_kernel_init: initialiser of the recurrent weights, per gate and head block.
        bias_init: initialiser of the bias, per gate block.

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`SLSTMParams` and carry :class:`SLSTMCarry`
        ``(h, c, n, m)``; ``y`` is ``h``.

    Raises:
        ValueError: if ``hidden_size`` is not a multiple of ``num_heads``, or ``forget_gate`` or
            ``forget_bias`` is not one of the values above.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.slstm(3, 8, num_heads=2)
    >>> params = cell.init(jax.random.key(0))
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)))
    >>> params.w_hh.shape, ys.shape, bool((carry.n >= 1).all())
    ((2, 4, 4, 4), (2, 5, 8), True)
    """
    input_size = check_size("input_size", input_size)
    hidden_size = check_size("hidden_size", hidden_size)
    num_heads = check_size("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}): "
            "every head has hidden_size / num_heads units"
        )
    if forget_gate not in _FORGET_GATES:
        raise ValueError(f"forget_gate must be 'sigmoid' or 'exp', got {forget_gate!r}")
    if isinstance(forget_bias, str):
        if forget_bias != "powerlaw":
            raise ValueError(
                f"forget_bias must be 'powerlaw', a number or None, got {forget_bias!r}"
            )
    elif forget_bias is not None:
        forget_bias = check_scalar("forget_bias", forget_bias)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H, K = hidden_size, num_heads
    d = H // K
    pol = policy(param_dtype, dtype)
    pdt = pol.param_dtype
    w_init = kernel_init or lecun_normal
    r_init = recurrent_kernel_init or orthogonal
    b_init = bias_init or jax.nn.initializers.zeros

    def init(key):
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        w_ih = jnp.concatenate(
            [w_init(k, (input_size, H), pdt) for k in jax.random.split(k_ih, _GATES)], axis=-1
        )
        r_keys = jax.random.split(k_hh, (K, _GATES))
        w_hh = jnp.stack(  # (K, d, 4, d): head k, input unit, gate, output unit
            [
                jnp.stack([r_init(r_keys[k, g], (d, d), pdt) for g in range(_GATES)], 1)
                for k in range(K)
            ]
        )
        b = jnp.concatenate([b_init(k, (H,), pdt) for k in jax.random.split(k_b, _GATES)])
        if isinstance(forget_bias, str):  # "powerlaw"
            b = b.at[H : 2 * H].set(_powerlaw_forget_bias(H, K, pdt))
        elif forget_bias is not None:
            b = b.at[H : 2 * H].set(forget_bias)
        return SLSTMParams(w_ih=w_ih.astype(pdt), w_hh=w_hh.astype(pdt), b=b.astype(pdt))

    def step(params, carry, xp):
        h, c, n, m = carry
        heads = h.reshape(*h.shape[:-1], K, d)
        rec = pol.einsum("...kd,kdge->...gke", heads, params.w_hh)  # gate-major, like xp
        rec = _sharding.unsplit_trailing(rec, 3)  # w_hh split over "model": whole gates
        raw = xp + rec.reshape(*rec.shape[:-3], _GATES * H)
        i_raw, f_raw, z_raw, o_raw = jnp.split(raw, _GATES, axis=-1)
        log_f = jax.nn.log_sigmoid(f_raw) if forget_gate == "sigmoid" else f_raw
        # n == 0 is the empty memory: its scale e^m is 0, so log f + m_{t-1} is -inf there and
        # the first step starts the stabiliser at the input gate (a constant branch, so no NaN
        # reaches the gradients).
        log_fm = jnp.where(n == 0, -jnp.inf, log_f + m)
        m = jnp.maximum(log_fm, i_raw)
        i_gate = jnp.exp(i_raw - m)  # i'_t <= 1
        f_gate = jnp.exp(log_fm - m)  # f'_t <= 1
        c = f_gate * c + i_gate * jnp.tanh(z_raw)
        n = f_gate * n + i_gate
        h = jax.nn.sigmoid(o_raw) * (c / n)
        return SLSTMCarry(h, c, n, m), pol.out(h)

    initial_carry = zeros_carry((H,) * 4, pol.accum_dtype, SLSTMCarry)

    return make_cell(
        init,
        initial_carry,
        input_size,
        H,
        affine_project(input_size, "w_ih", "b", pol),
        step,
        config=cell_config(
            slstm,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            forget_gate=forget_gate,
            forget_bias=forget_bias,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
        ),
    )
