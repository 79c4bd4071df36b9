r"""Linear-recurrence cells: the state is updated by :math:`h_t = a_t \odot h_{t-1} + b_t`.

In every cell here the gates and the candidate read the input only, never the state, so the
recurrence is an elementwise affine map whose coefficients :math:`a_t, b_t` are known for all
steps at once. Each cell is an ordinary :class:`~jaxrnn.Cell` (its ``apply`` is one step,
computed in linear space) that also declares the recurrence as a
:class:`~jaxrnn.LinearRecurrence` (``cell.linear``), so ``jaxrnn.scan(..., method=
"associative")`` can evaluate it in :math:`O(\log T)` depth with ``jax.lax.associative_scan``.

* :func:`min_gru`, :func:`min_lstm`: Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), "Were
  RNNs All We Needed?"; with ``log_space=True`` (default) the candidate is made positive and
  the parallel form runs in log space, for long sequences;
* :func:`lru`: Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De (2023), "Resurrecting
  Recurrent Neural Networks for Long Sequences": a complex diagonal recurrence;
* :func:`rg_lru`: De et al. (2024), "Griffin: Mixing Gated Linear Recurrences with Local
  Attention for Efficient Language Models", the RG-LRU of RecurrentGemma.

Initialisers: ``kernel_init`` and ``bias_init`` take ``jax.nn.initializers``-style callables
``init(key, shape, dtype)``, called once per weight block (one gate's matrix or bias) with its
own key; ``None`` means the default each factory documents. ``recurrent_kernel_init`` sets
RG-LRU's decay parameter; the other cells have no recurrent weights to initialise (LRU's
eigenvalues have their own arguments), so they take only ``None`` there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_features, check_scalar, check_size
from jaxrnn._core import Array, Cell, Initializer, LinearRecurrence
from jaxrnn.cells._build import built_cell, cell_config, make_cell, zeros_carry
from jaxrnn.cells._init import lecun_normal
from jaxrnn.precision import Policy, policy

__all__ = [
    "LRUParams",
    "MinGRUParams",
    "MinLSTMParams",
    "RGLRUParams",
    "lru",
    "min_gru",
    "min_lstm",
    "rg_lru",
    "ring_init",
]


class MinGRUParams(NamedTuple):
    """Parameters of :func:`min_gru`: ``w_ih (I, 2H)`` with blocks ``z, h`` (update gate,
    candidate) and ``b (2H,)``."""

    w_ih: Array
    b: Array


class MinLSTMParams(NamedTuple):
    """Parameters of :func:`min_lstm`: ``w_ih (I, 3H)`` with blocks ``f, i, h`` (forget gate,
    input gate, candidate) and ``b (3H,)``."""

    w_ih: Array
    b: Array


class LRUParams(NamedTuple):
    r"""Parameters of :func:`lru` (``I`` inputs and outputs, ``N`` states), named after the
    paper's: ``nu_log``, ``theta_log``, ``gamma_log`` ``(N,)``; :math:`B^\top` as ``b_re``,
    ``b_im`` ``(I, N)``; :math:`C^\top` as ``c_re``, ``c_im`` ``(N, I)``; ``d (I,)``."""

    nu_log: Array
    theta_log: Array
    gamma_log: Array
    b_re: Array
    b_im: Array
    c_re: Array
    c_im: Array
    d: Array


class RGLRUParams(NamedTuple):
    """Parameters of :func:`rg_lru`: ``w_gates (H, 2H)`` with blocks ``r, i`` (recurrence gate,
    RecurrentGemma's ``a_gate``; input gate), ``b_gates (2H,)``, ``a_param (H,)``, and the input
    projection ``w_in (I, H)``, ``b_in (H,)`` (``None`` when ``I == H``)."""

    w_gates: Array
    b_gates: Array
    a_param: Array
    w_in: Array | None = None
    b_in: Array | None = None


# --------------------------------------------------------------------------------------------
# Shared pieces.


def _linear_cell(init, initial_carry, sizes, project, recurrence, config) -> Cell:
    """A :class:`Cell` whose step is one step of ``recurrence`` (a :class:`LinearRecurrence`),
    computed in linear space: ``h = a * h + b``."""

    def step(params, h, xp):
        a, b = recurrence.coefficients(params, xp)
        h = a * h + b
        return h, recurrence.readout(params, h, xp)

    input_size, output_size = sizes
    if project is None:
        return built_cell(
            Cell(
                init, step, initial_carry, input_size, output_size, config=config, linear=recurrence
            )
        )
    return make_cell(
        init, initial_carry, input_size, output_size, project, step, config, linear=recurrence
    )


def _no_init(name: str, value, why: str) -> None:
    if value is not None:
        raise ValueError(f"{name} must be None: {why}")


def _blocks(init: Initializer, key, shape: tuple[int, ...], count: int, dtype) -> Array:
    """``count`` blocks of ``shape``, each from ``init`` with its own key, side by side."""
    keys = jax.random.split(key, count)
    return jnp.concatenate([jnp.asarray(init(k, shape, dtype), dtype) for k in keys], axis=-1)


def _gate_project(input_size: int, pol: Policy):
    def project(params, x):
        check_features("x", x, input_size)
        return pol.dot(x, params.w_ih) + pol.acc(params.b)

    return project


def _log_g(x: Array) -> Array:
    """``log g(x)`` of Feng et al.: ``log(x + 1/2)`` for ``x >= 0``, ``log sigmoid(x)`` below."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _g(x: Array) -> Array:
    """Feng et al.'s positive candidate ``g(x) = x + 1/2`` (``x >= 0``), ``sigmoid(x)`` below."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def _log_space_config(log_space) -> bool:
    if not isinstance(log_space, bool | np.bool_):
        raise TypeError(f"log_space must be a bool, got {log_space!r}")
    return bool(log_space)


_NO_RECURRENT = "{} has no recurrent weights (its gates read the input only)"


# --------------------------------------------------------------------------------------------
# minGRU and minLSTM (Feng et al. 2024).


def min_gru(
    input_size: int,
    hidden_size: int,
    *,
    log_space: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate
    read only the input.

    .. math::

        z_t &= \sigma(x_t W_z + b_z), \qquad \tilde h_t = g(x_t W_h + b_h) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    a linear recurrence with :math:`a_t = 1 - z_t`, :math:`b_t = z_t \odot \tilde h_t`. With
    ``log_space=True`` (default), :math:`g(v) = v + \tfrac12` for :math:`v \ge 0` and
    :math:`\sigma(v)` below, which keeps :math:`\tilde h_t > 0`, so ``method="associative"``
    composes the steps in log space (:math:`\log a_t = -\operatorname{softplus}(k_z)`,
    :math:`\log b_t = -\operatorname{softplus}(-k_z) + \log g(k_h)`), the paper's form for long
    sequences; ``apply`` computes the same step in linear space. With ``log_space=False``,
    :math:`g` is the identity (the paper's plain minGRU) and the parallel form is composed in
    linear space.

    The paper's parallel code feeds :math:`g(h_0)` to the scan in place of the initial state;
    here the initial carry :math:`h_0` itself starts every method (zeros by default), enters
    the log-space form linearly and may have any sign, so all methods agree.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        log_space: positive candidate and log-space parallel form (see above).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of each ``(I, H)`` block of ``w_ih`` (default LeCun normal).
        recurrent_kernel_init: must be ``None``: the cell has no recurrent weights.
        bias_init: initialiser of each ``(H,)`` block of ``b`` (default zeros).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`MinGRUParams`, carry ``h (*batch, H)``, ``y = h``,
        and ``linear`` set.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.min_gru(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    >>> _, ys = jr.scan(cell, params, xs)
    >>> _, ys_par = jr.scan(cell, params, xs, method="associative")
    >>> ys.shape, bool(jnp.allclose(ys, ys_par, atol=1e-6))
    ((2, 5, 8), True)
    """
    return _min_cell(
        min_gru,
        MinGRUParams,
        2,  # blocks z, h
        lambda k_z: k_z,  # log(z / (1 - z))
        input_size,
        hidden_size,
        log_space,
        kernel_init,
        recurrent_kernel_init,
        bias_init,
        policy(param_dtype, dtype),
    )


def min_lstm(
    input_size: int,
    hidden_size: int,
    *,
    log_space: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): an LSTM whose gates read only
    the input, with normalised gates and no output gate or cell state.

    .. math::

        f_t &= \sigma(x_t W_f + b_f), \qquad i_t = \sigma(x_t W_i + b_i), \qquad
            \tilde h_t = g(x_t W_h + b_h) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    so :math:`a_t = f'_t`, :math:`b_t = i'_t \odot \tilde h_t`, and the state stays a convex
    combination, independent of time-step scaling. The normalised gates are computed as
    :math:`f'_t = \sigma(-\delta_t)`, :math:`i'_t = \sigma(\delta_t)` with
    :math:`\delta_t = \log i_t - \log f_t = \operatorname{softplus}(-k_f) -
    \operatorname{softplus}(-k_i)`, the same numbers without the division. ``log_space`` and
    :math:`g` are as in :func:`min_gru` (log space: :math:`\log a_t =
    -\operatorname{softplus}(\delta_t)`, :math:`\log b_t = -\operatorname{softplus}(-\delta_t) +
    \log g(k_h)`), and so is the initial carry (used as it is, any sign).

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        log_space: positive candidate and log-space parallel form (see :func:`min_gru`).
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of each ``(I, H)`` block of ``w_ih`` (default LeCun normal).
        recurrent_kernel_init: must be ``None``: the cell has no recurrent weights.
        bias_init: initialiser of each ``(H,)`` block of ``b`` (default zeros).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`MinLSTMParams`, carry ``h (*batch, H)``, ``y = h``,
        and ``linear`` set.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.min_lstm(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> params.w_ih.shape, params.b.shape
    ((3, 24), (24,))
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)), method="associative")
    >>> carry.shape, ys.shape
    ((2, 8), (2, 5, 8))
    """
    return _min_cell(
        min_lstm,
        MinLSTMParams,
        3,  # blocks f, i, h
        lambda k_f, k_i: jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i),  # log i - log f
        input_size,
        hidden_size,
        log_space,
        kernel_init,
        recurrent_kernel_init,
        bias_init,
        policy(param_dtype, dtype),
    )


def _min_cell(
    factory,
    params_type,
    num_blocks: int,
    log_odds: Callable[..., Array],
    input_size,
    hidden_size,
    log_space,
    kernel_init,
    recurrent_kernel_init,
    bias_init,
    pol: Policy,
) -> Cell:
    r"""The cell of :func:`min_gru` and :func:`min_lstm`: both are
    :math:`h_t = \sigma(-d_t) h_{t-1} + \sigma(d_t) \tilde h_t`, with ``d_t = log_odds(*gate
    blocks)`` of the projected input (the update gate's log-odds; for minLSTM the normalised
    :math:`\log i_t - \log f_t`) and the candidate from the last of ``num_blocks`` blocks."""
    input_size = check_size("input_size", input_size)
    H = hidden_size = check_size("hidden_size", hidden_size)
    log_space = _log_space_config(log_space)
    name = factory.__name__
    _no_init("recurrent_kernel_init", recurrent_kernel_init, _NO_RECURRENT.format(name))
    kernel = lecun_normal if kernel_init is None else kernel_init
    bias = jax.nn.initializers.zeros if bias_init is None else bias_init
    pdt = pol.param_dtype

    def init(key):
        k_w, k_b = jax.random.split(key)
        return params_type(
            w_ih=_blocks(kernel, k_w, (input_size, H), num_blocks, pdt),
            b=_blocks(bias, k_b, (H,), num_blocks, pdt),
        )

    def gates(xp):
        *gate_blocks, k_h = jnp.split(xp, num_blocks, axis=-1)
        return log_odds(*gate_blocks), k_h

    def coefficients(params, xp):
        d, k_h = gates(xp)
        candidate = _g(k_h) if log_space else k_h
        return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * candidate

    def log_coefficients(params, xp):
        d, k_h = gates(xp)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(k_h)

    recurrence = LinearRecurrence(
        coefficients, lambda params, h, xp: pol.out(h), log_coefficients if log_space else None
    )
    return _linear_cell(
        init,
        zeros_carry(H, pol.accum_dtype),
        (input_size, H),
        _gate_project(input_size, pol),
        recurrence,
        config=cell_config(
            factory,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            log_space=log_space,
            kernel_init=kernel_init,
            bias_init=bias_init,
        ),
    )


# --------------------------------------------------------------------------------------------
# LRU (Orvieto et al. 2023).


def _complex_dtype(real_dtype) -> np.dtype:
    return np.dtype(np.complex128 if np.dtype(real_dtype).itemsize > 4 else np.complex64)


def lru(
    input_size: int,
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: None = None,
    bias_init: None = None,
) -> Cell:
    r"""Linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
    Long Sequences"): a complex diagonal linear recurrence with real inputs and outputs.

    .. math::

        \lambda &= \exp\big(-\exp(\nu^{\log}) + i \exp(\theta^{\log})\big), \qquad
            \gamma = \exp(\gamma^{\log}) \\
        h_t &= \lambda \odot h_{t-1} + \gamma \odot (B x_t) \\
        y_t &= \operatorname{Re}(C h_t) + D \odot x_t

    with :math:`h_t \in \mathbb{C}^N`, complex :math:`B \in \mathbb{C}^{N \times I}`,
    :math:`C \in \mathbb{C}^{I \times N}` and real :math:`D \in \mathbb{R}^I` (the output has
    the input's size ``I``). The exponential parametrisation keeps :math:`|\lambda| < 1`
    (stable) for any parameters. Initialisation as in the paper's code (its Appendix A):
    :math:`|\lambda|^2` uniform in :math:`[r_{\min}^2, r_{\max}^2]` (uniform on the ring's
    area), phase :math:`\arg\lambda` uniform in :math:`[0, \text{max\_phase}]`, the
    normalisation :math:`\gamma^{\log}` a parameter initialised to
    :math:`\log\sqrt{1 - |\lambda|^2}` (so that the state's variance does not grow as
    :math:`|\lambda| \to 1`), :math:`B` with real and imaginary parts
    :math:`\mathcal N(0, 1/(2I))`, :math:`C` with :math:`\mathcal N(0, 1/N)` parts and
    :math:`D \sim \mathcal N(0, 1)`. Stored input-major: ``b_re + i b_im`` is :math:`B^\top`,
    ``c_re + i c_im`` is :math:`C^\top`. The cell has no ``project`` (``xp = x``).

    Args:
        input_size: ``I``, features of ``x`` and of ``y``.
        hidden_size: ``N``, the (complex) state size.
        r_min: smallest initial :math:`|\lambda|`, in ``[0, r_max)``.
        r_max: largest initial :math:`|\lambda|`, in ``(r_min, 1]``.
        max_phase: largest initial phase of :math:`\lambda`, in ``(0, 2 pi]``.
        param_dtype: storage dtype of the (real) parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`); the carry
            is complex64 (complex128 for float64).
        kernel_init: initialiser of ``b_re`` and of ``b_im``, each ``(I, N)`` (default normal
            with standard deviation :math:`1/\sqrt{2I}`).
        recurrent_kernel_init: must be ``None``: :math:`\lambda` is set by ``r_min``,
            ``r_max`` and ``max_phase``.
        bias_init: must be ``None``: the cell has no bias.

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`LRUParams`, a complex carry ``h (*batch, N)``,
        real ``y (*batch, I)``, and ``linear`` set.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lru(3, 16, r_min=0.9, r_max=0.999)
    >>> params = cell.init(jax.random.key(0))
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)))
    >>> carry.dtype, carry.shape, ys.dtype, ys.shape
    (dtype('complex64'), (2, 16), dtype('float32'), (2, 5, 3))
    >>> radius = jnp.exp(-jnp.exp(params.nu_log))
    >>> bool(((0.9 <= radius) & (radius <= 0.999)).all())
    True
    """
    input_size = check_size("input_size", input_size)
    N = hidden_size = check_size("hidden_size", hidden_size)
    r_max = check_scalar("r_max", r_max, low=0.0, high=1.0, low_open=True)
    r_min = check_scalar("r_min", r_min, low=0.0, high=r_max, high_open=True)
    max_phase = check_scalar("max_phase", max_phase, low=0.0, high=2 * math.pi, low_open=True)
    _no_init(
        "recurrent_kernel_init",
        recurrent_kernel_init,
        "lru's eigenvalues are initialised by r_min, r_max and max_phase",
    )
    _no_init("bias_init", bias_init, "lru has no bias")
    pol = policy(param_dtype, dtype)
    pdt, acc = pol.param_dtype, pol.accum_dtype
    cdt = _complex_dtype(acc)
    draw = np.dtype(np.float64) if pdt.itemsize > 4 else np.dtype(np.float32)
    kernel = (
        jax.nn.initializers.variance_scaling(0.5, "fan_in", "normal")  # std 1/sqrt(2 I)
        if kernel_init is None
        else kernel_init
    )
    output = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")  # std 1/sqrt(N)

    def init(key):
        k_r, k_p, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 7)
        u1 = jax.random.uniform(k_r, (N,), draw)
        u2 = jax.random.uniform(k_p, (N,), draw)
        radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2  # uniform on the ring's area
        # Keep |lambda| off 0 and 1 (u1 = 0, or rounding up to 1), where the logs are infinite.
        radius_sq = jnp.clip(radius_sq, 1e-8, 1.0 - jnp.finfo(draw).eps)
        return LRUParams(
            nu_log=jnp.log(-0.5 * jnp.log(radius_sq)).astype(pdt),
            theta_log=jnp.log(max_phase * jnp.clip(u2, 1e-8, None)).astype(pdt),
            gamma_log=(0.5 * jnp.log1p(-radius_sq)).astype(pdt),
            b_re=jnp.asarray(kernel(k_bre, (input_size, N), pdt), pdt),
            b_im=jnp.asarray(kernel(k_bim, (input_size, N), pdt), pdt),
            c_re=output(k_cre, (N, input_size), pdt),
            c_im=output(k_cim, (N, input_size), pdt),
            d=jax.random.normal(k_d, (input_size,), pdt),
        )

    def eigenvalues(params):
        nu_log, theta_log = pol.acc((params.nu_log, params.theta_log))
        radius, phase = jnp.exp(-jnp.exp(nu_log)), jnp.exp(theta_log)
        return jax.lax.complex(radius * jnp.cos(phase), radius * jnp.sin(phase))

    def coefficients(params, x):
        check_features("x", x, input_size)
        gamma = jnp.exp(pol.acc(params.gamma_log))
        bx = jax.lax.complex(gamma * pol.dot(x, params.b_re), gamma * pol.dot(x, params.b_im))
        return jnp.broadcast_to(eigenvalues(params), bx.shape), bx

    def readout(params, h, x):
        y = pol.dot(h.real, params.c_re) - pol.dot(h.imag, params.c_im)
        return pol.out(y + pol.acc(params.d) * pol.acc(x))

    return _linear_cell(
        init,
        zeros_carry(N, cdt),
        (input_size, input_size),
        None,
        LinearRecurrence(coefficients, readout),
        config=cell_config(
            lru,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            r_min=r_min,
            r_max=r_max,
            max_phase=max_phase,
            kernel_init=kernel_init,
        ),
    )


# --------------------------------------------------------------------------------------------
# RG-LRU (De et al. 2024, Griffin; RecurrentGemma's conventions).


def ring_init(min_rad: float = 0.9, max_rad: float = 0.999) -> Initializer:
    r"""RecurrentGemma's initialiser of RG-LRU's ``a_param``: :math:`a = \sigma(-a_{param})`
    with :math:`a^2` uniform in ``[min_rad**2, max_rad**2]`` (uniform on the ring's area).

    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn.cells import ring_init
    >>> a = jax.nn.sigmoid(-ring_init()(jax.random.key(0), (1000,), jnp.float32))
    >>> bool(((0.9 <= a) & (a <= 0.999)).all())
    True
    """

    def init(key, shape, dtype=jnp.float32):
        draw = jnp.float64 if jnp.dtype(dtype).itemsize > 4 else jnp.float32
        u = jax.random.uniform(key, shape, draw)
        log_a = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2)
        return jnp.log(jnp.expm1(-log_a)).astype(dtype)  # softplus(a_param) = -log a

    return init


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sqrt_bounded_grad(x: Array, max_grad: float) -> Array:
    """``sqrt(x)`` whose derivative is capped at ``max_grad`` (at ``x`` near 0, where
    ``a_t -> 1``), as RecurrentGemma does to keep training free of infinities."""
    return jnp.sqrt(x)


@_sqrt_bounded_grad.defjvp
def _sqrt_bounded_grad_jvp(max_grad, primals, tangents):
    (x,), (tx,) = primals, tangents
    floor = jnp.asarray(1.0 / (4.0 * max_grad**2), x.dtype)
    return jnp.sqrt(x), tx * 0.5 / jnp.sqrt(jnp.maximum(x, floor))


def rg_lru(
    input_size: int,
    hidden_size: int,
    *,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    param_dtype=jnp.float32,
    dtype=None,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> Cell:
    r"""Real-gated linear recurrent unit (De et al. 2024, Griffin; RecurrentGemma's RG-LRU).

    .. math::

        r_t &= \sigma(u_t W_r + b_r), \qquad i_t = \sigma(u_t W_i + b_i) \\
        a_t &= a^{c\, r_t}, \qquad a = \sigma(\Lambda) = \sigma(-a_{param}) \\
        h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot u_t)

    with :math:`u_t = x_t` when ``input_size == hidden_size`` and :math:`u_t = x_t W_{in} +
    b_{in}` otherwise: an input projection to the recurrence's width (in Griffin's recurrent
    block that is the linear branch before the RG-LRU), which the gates then read. ``y = h``.
    Conventions follow RecurrentGemma's ``RGLRU`` (``recurrentgemma/jax/layers.py``) so that
    weights port: the decay is stored as ``a_param`` with :math:`\log a_t = -c\, r_t\,
    \operatorname{softplus}(a_{param})` (the paper's :math:`\Lambda` is :math:`-a_{param}`),
    initialised by :func:`ring_init` (``min_rad=0.9``, ``max_rad=0.999``); :math:`1 - a_t^2`
    is computed as :math:`-\operatorname{expm1}(2 \log a_t)` and its square root has its
    derivative capped at 1000. Two differences: the gates here are dense (RecurrentGemma's are
    block-diagonal with ``num_heads`` blocks; a dense gate is one block), and every step is
    normalised (RecurrentGemma skips the normalisation, :math:`\sqrt{1 - a_t^2} \to 1`, at the
    first token of a segment).

    Args:
        input_size: ``I``.
        hidden_size: ``H``, the recurrence's width (RecurrentGemma's ``lru_width``).
        c: the fixed scale of the gate in the exponent (8 in the paper).
        min_rad: smallest initial :math:`a` of the default ``recurrent_kernel_init``.
        max_rad: largest initial :math:`a` of the default ``recurrent_kernel_init``.
        param_dtype: storage dtype of the parameters.
        dtype: dtype of the matmul operands and of ``y`` (:mod:`jaxrnn.precision`).
        kernel_init: initialiser of each ``(H, H)`` gate block of ``w_gates`` and of ``w_in``
            (default LeCun normal).
        recurrent_kernel_init: initialiser of ``a_param (H,)`` (default
            ``ring_init(min_rad, max_rad)``).
        bias_init: initialiser of each ``(H,)`` block of ``b_gates`` and of ``b_in`` (default
            zeros).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`RGLRUParams`, carry ``h (*batch, H)``, ``y = h``,
        and ``linear`` set.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.rg_lru(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> params.w_in.shape, params.w_gates.shape, params.a_param.shape
    ((3, 8), (8, 16), (8,))
    >>> carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)), method="associative")
    >>> ys.shape
    (2, 5, 8)
    """
    input_size = check_size("input_size", input_size)
    H = hidden_size = check_size("hidden_size", hidden_size)
    c = check_scalar("c", c, low=0.0, low_open=True)
    max_rad = check_scalar("max_rad", max_rad, low=0.0, high=1.0, low_open=True, high_open=True)
    min_rad = check_scalar("min_rad", min_rad, low=0.0, high=max_rad, low_open=True)
    kernel = lecun_normal if kernel_init is None else kernel_init
    recurrent = recurrent_kernel_init or ring_init(min_rad, max_rad)
    bias = jax.nn.initializers.zeros if bias_init is None else bias_init
    projected = input_size != H
    pol = policy(param_dtype, dtype)
    pdt = pol.param_dtype

    def init(key):
        k_w, k_b, k_a, k_win, k_bin = jax.random.split(key, 5)
        return RGLRUParams(
            w_gates=_blocks(kernel, k_w, (H, H), 2, pdt),
            b_gates=_blocks(bias, k_b, (H,), 2, pdt),
            a_param=jnp.asarray(recurrent(k_a, (H,), pdt), pdt),
            w_in=jnp.asarray(kernel(k_win, (input_size, H), pdt), pdt) if projected else None,
            b_in=jnp.asarray(bias(k_bin, (H,), pdt), pdt) if projected else None,
        )

    def project(params, x):
        check_features("x", x, input_size)
        u = pol.dot(x, params.w_in) + pol.acc(params.b_in) if projected else pol.acc(x)
        return jnp.concatenate([pol.dot(u, params.w_gates) + pol.acc(params.b_gates), u], -1)

    def coefficients(params, xp):
        k_r, k_i, u = jnp.split(xp, 3, axis=-1)
        log_a = -c * jax.nn.sigmoid(k_r) * jax.nn.softplus(pol.acc(params.a_param))
        scale = _sqrt_bounded_grad(-jnp.expm1(2.0 * log_a), 1000.0)
        return jnp.exp(log_a), scale * (jax.nn.sigmoid(k_i) * u)

    return _linear_cell(
        init,
        zeros_carry(H, pol.accum_dtype),
        (input_size, H),
        project,
        LinearRecurrence(coefficients, lambda params, h, xp: pol.out(h)),
        config=cell_config(
            rg_lru,
            pol,
            input_size=input_size,
            hidden_size=hidden_size,
            c=c,
            min_rad=min_rad,
            max_rad=max_rad,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
        ),
    )
