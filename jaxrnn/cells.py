"""Recurrent cells: one time step of a recurrence, as pure functions.

A :class:`Cell` bundles three pure functions, in the spirit of ``optax.GradientTransformation``:

* ``init(key) -> params``: a NamedTuple of arrays with named fields (the layout is part of the
  contract: users port weights by name);
* ``apply(params, carry, x) -> (carry, y)``: one step, exactly the signature ``jax.lax.scan``
  wants for its body once ``params`` is bound;
* ``initial_carry(batch_shape=(), dtype=None) -> carry``: zeros, in the cell's carry dtype
  unless ``dtype`` says otherwise.

``x`` has shape ``(*batch, input_size)`` with any number of leading batch dimensions (or none);
the cell does nothing about the batch beyond ordinary broadcasting. Use :func:`jaxrnn.scan` to
run a cell over a sequence: it validates shapes and never broadcasts silently.

Layout conventions (shared by every cell here):

* weights are stored input-major, so a projection is ``x @ w`` with ``w`` of shape
  ``(in_features, out_features)``;
* the gates of a gated cell are fused into one matrix, gate blocks side by side along the output
  axis in PyTorch's order (GRU: ``r, z, n``; LSTM: ``i, f, g, o``), so ``w[:, k*H:(k+1)*H]`` is
  gate ``k``.

Precision (:mod:`jaxrnn.precision`): every factory takes ``param_dtype`` (storage, default
float32) and ``dtype`` (matmul operands, default ``param_dtype``). Matmuls sum in float32; biases,
gate nonlinearities and the carry stay in that accumulation dtype whatever ``dtype`` is; outputs
``y`` come out in ``dtype``. ``jr.lstm(I, H, dtype=jnp.bfloat16)`` stores float32 parameters and
runs its matmuls in bf16.

Every cell also exposes its step split in two (``project`` then ``step``): ``project`` holds
the input-side work (``x @ w_ih + b``), which depends on no carry, so :func:`jaxrnn.scan` can
compute it for all time steps in one large matmul before the loop; ``step`` is the recurrent
remainder. ``apply(p, c, x) == step(p, c, project(p, x))`` by construction.

Default initialisers (``init`` splits its key once per parameter and never reuses a key):

* input weights ``w_ih``: LeCun normal (truncated normal, variance ``1 / fan_in``), drawn for the
  fused matrix at once (the same distribution as gate by gate: every block has the same fan-in);
* recurrent weights ``w_hh``: orthogonal, drawn independently for each gate's square block
  (orthogonal recurrent matrices neither explode nor vanish at initialisation); LeCun normal
  for :func:`jordan_rnn`'s ``w_oh`` and the convolutional cells' kernels;
* biases: zeros, except the LSTM forget-gate block, set to ``forget_bias`` (1.0 by default, as
  Jozefowicz et al. 2015 recommend, so the cell starts out remembering);
* LSTM peephole weights and output/projection matrices: LeCun normal where a matrix, uniform in
  ``[-1/sqrt(H), 1/sqrt(H)]`` for the diagonal peephole vectors (PyTorch's RNN default range).

Custom initialisers: every cell factory (here and in :mod:`jaxrnn.mgu`, :mod:`jaxrnn.conv`,
:mod:`jaxrnn.layernorm`) takes the keyword arguments ``kernel_init``, ``recurrent_kernel_init``
and ``bias_init`` (Flax's names), each ``None`` for the default above or a
``jax.nn.initializers``-style callable ``init(key, shape, dtype) -> Array``; with all three
``None``, ``init`` returns the same bits as it always did. A given initialiser is called once
per gate block, as by the per-gate ``Dense`` layers of Flax's cells: with that block's shape
(input kernel ``(I, H)``, recurrent kernel ``(H, H)``, or ``(P, H)`` for an LSTM with a
projection, bias ``(H,)``; a convolutional cell's kernels ``(*kernel_size, C, H)`` and
``(*kernel_size, H, H)``), a key of its own and the parameter dtype; the blocks are
concatenated in the cell's gate order. ``recurrent_kernel_init=jax.nn.initializers.orthogonal()``
thus gives an orthogonal matrix per gate, which is the default (the same matrices, in float32
and float64; the default also draws half-precision ones, in float32, which JAX's QR needs).
Further rules:

* ``bias_init`` initialises every gate bias: in a cell with two bias vectors (a GRU's ``b_ih``
  and ``b_hh``, the MGU's) every block of each, and in the layer-normalised cells, whose
  LayerNorm biases are the gate biases, those of the input and recurrent LayerNorms;
* ``forget_bias`` is added to what ``bias_init`` gives for the forget-gate block (Keras'
  ``unit_forget_bias``), so ``bias_init=jax.nn.initializers.zeros`` gives the default biases
  and ``forget_bias=0.0`` leaves the block to ``bias_init`` alone;
* parameters that are neither a kernel nor a gate bias keep their defaults: peepholes,
  projection, LayerNorm gains and the cell-state LayerNorm, the output layer of
  :func:`jordan_rnn`;
* a value that is not callable raises ``TypeError`` when the cell is built; an initialiser
  returning another shape or dtype than it was asked for raises ``ValueError`` when ``init``
  runs, naming the argument;
* the initialisers are not recorded in ``config``: they choose the starting point, not the
  function a step computes, which is what the converters (:mod:`jaxrnn.interop`) read. With
  ``bias_init`` given, ``init`` splits its key into one more part, for the biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import _init
from jaxrnn._cell_parts import _affine_project, _as_shape, _zeros_carry
from jaxrnn._cell_parts import _check_features as _check_features  # re-exported
from jaxrnn._checks import check_scalar
from jaxrnn._checks import check_size as _check_size
from jaxrnn._init import Initializer
from jaxrnn._init import _block_orthogonal as _block_orthogonal  # re-exported (private helpers)
from jaxrnn._init import _lecun_normal as _lecun_normal
from jaxrnn._init import _orthogonal as _orthogonal
from jaxrnn.linear_recurrence import LinearRecurrence  # Cell.linear; jaxrnn.cells.LinearRecurrence
from jaxrnn.precision import policy

Array = jax.Array
PRNGKey = jax.Array
Params = Any
Carry = Any

__all__ = [
    "Cell",
    "GRUParams",
    "JordanParams",
    "LSTMCarry",
    "LSTMParams",
    "SimpleRNNParams",
    "gru",
    "jordan_rnn",
    "lstm",
    "simple_rnn",
]


class Cell(NamedTuple):
    """One step of a recurrence as pure functions.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, carry, x) -> (carry, y)``, one time step.
        initial_carry: ``initial_carry(batch_shape=(), dtype=None) -> carry`` (zeros; ``None``
            means the cell's own carry dtype, float32 for the built-in cells unless their
            ``param_dtype`` is float64).
        input_size: feature size ``x`` must have (``None``: unchecked).
        output_size: feature size of ``y``.
        project: optional ``project(params, xs) -> xp``, the carry-independent input-side part of
            a step, applicable to any number of leading axes at once.
        step: optional ``step(params, carry, xp) -> (carry, y)``, the recurrent remainder, such
            that ``apply(p, c, x) == step(p, c, project(p, x))``. When both are given,
            :func:`jaxrnn.scan` hoists ``project`` out of the time loop.
        config: how the cell was built, as ``(name, value)`` pairs (``dict(cell.config)``),
            starting with ``("factory", <the factory function>)``; read by converters such as
            :mod:`jaxrnn.interop`. A tuple, so a Cell stays hashable (usable as a static arg).
        spatial_dims: number of spatial axes between the time axis and the features in the
            sequences :func:`jaxrnn.scan` takes, ``(*batch, T, *spatial, F)``: 0 for the dense
            cells, ``len(kernel_size)`` for the convolutional ones (:mod:`jaxrnn.conv`).
        linear: the cell's recurrence as a :class:`LinearRecurrence` when it is linear in the
            carry (the cells of :mod:`jaxrnn.linear`), which lets
            ``jaxrnn.scan(..., method="associative")`` run it in parallel over time; ``None``
            for every other cell.

    A custom cell needs only the first three fields:

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> leaky = jr.Cell(
    ...     init=lambda key: jnp.float32(0.9),
    ...     apply=lambda decay, h, x: (decay * h + x, decay * h + x),
    ...     initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros(
    ...         (*batch_shape, 2), dtype
    ...     ),
    ... )
    >>> carry, ys = jr.scan(leaky, leaky.init(None), jnp.ones((3, 2)))
    >>> ys[:, 0].tolist()
    [1.0, 1.899999976158142, 2.7100000381469727]
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    initial_carry: Callable[..., Carry]
    input_size: int | None = None
    output_size: int | None = None
    project: Callable[[Params, Array], Array] | None = None
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]] | None = None
    config: tuple[tuple[str, Any], ...] = ()
    spatial_dims: int = 0
    linear: LinearRecurrence | None = None


class SimpleRNNParams(NamedTuple):
    """Parameters of :func:`simple_rnn`: ``w_ih (I, H)``, ``w_hh (H, H)``, ``b (H,)``."""

    w_ih: Array
    w_hh: Array
    b: Array


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


class JordanParams(NamedTuple):
    """Parameters of :func:`jordan_rnn`.

    ``w_ih (I, H)`` (U), ``w_oh (O, H)`` (W), ``b (H,)``, ``w_ho (H, O)`` (V), ``b_o (O,)`` (c).
    """

    w_ih: Array
    w_oh: Array
    b: Array
    w_ho: Array
    b_o: Array


# --------------------------------------------------------------------------------------------
# Shared pieces (the initialisers are in jaxrnn._init, the other pieces in jaxrnn._cell_parts).


def _make_cell(init, initial_carry, input_size, output_size, project, step, config) -> Cell:
    def apply(params, carry, x):
        return step(params, carry, project(params, x))

    return Cell(init, apply, initial_carry, input_size, output_size, project, step, config)


# --------------------------------------------------------------------------------------------
# Cells.


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
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H = hidden_size
    pol = policy(param_dtype, dtype)
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

    return _make_cell(
        init,
        _zeros_carry(hidden_size, pol.accum_dtype),
        input_size,
        hidden_size,
        _affine_project(input_size, "w_ih", "b", pol),
        step,
        config=(
            ("factory", simple_rnn),
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("activation", activation),
            *pol.config(),
        ),
    )


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
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H = hidden_size
    pol = policy(param_dtype, dtype)
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
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        b_hh = pol.acc(params.b_hh)
        if reset_after:
            hr, hz, hn = jnp.split(pol.dot(h, params.w_hh) + b_hh, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
        else:
            hrz = pol.dot(h, params.w_hh[:, : 2 * H]) + b_hh[: 2 * H]
            hr, hz = jnp.split(hrz, 2, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + pol.dot(r * h, params.w_hh[:, 2 * H :]) + b_hh[2 * H :])
        # (1 - z) * n + z * h, written with one multiply.
        h = n + z * (h - n)
        return h, pol.out(h)

    return _make_cell(
        init,
        _zeros_carry(H, pol.accum_dtype),
        input_size,
        H,
        _affine_project(input_size, "w_ih", "b_ih", pol),
        step,
        config=(
            ("factory", gru),
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("reset_after", reset_after),
            *pol.config(),
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
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if proj_size is not None:
        proj_size = _check_size("proj_size", proj_size)
    forget_bias = check_scalar("forget_bias", forget_bias)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H = hidden_size
    R = proj_size or hidden_size  # size of h, which the recurrent weights read
    G = 3 if coupled else 4  # fused gate blocks: (i,) f, g, o
    f_block = 0 if coupled else 1
    pol = policy(param_dtype, dtype)
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
            w_proj=_lecun_normal(k_proj, (H, R), pdt) if proj_size else None,
        )

    def step(params, carry, xp):
        h, c = carry
        gates = xp + pol.dot(h, params.w_hh)
        if coupled:
            f, g, o = jnp.split(gates, 3, axis=-1)
        else:
            i, f, g, o = jnp.split(gates, 4, axis=-1)
        w_peep = pol.acc(params.w_peep) if peephole else None
        if peephole:
            if coupled:
                f = f + w_peep[0] * c
            else:
                i = i + w_peep[0] * c
                f = f + w_peep[1] * c
        f = jax.nn.sigmoid(f)
        i = 1.0 - f if coupled else jax.nn.sigmoid(i)
        c = f * c + i * jnp.tanh(g)
        if peephole:
            o = o + w_peep[-1] * c
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        if proj_size:
            h = pol.dot(h, params.w_proj)
        return LSTMCarry(h, c), pol.out(h)

    def initial_carry(batch_shape=(), dtype=None):
        batch_shape, dtype = _as_shape(batch_shape), pol.accum_dtype if dtype is None else dtype
        return LSTMCarry(
            h=jnp.zeros((*batch_shape, R), dtype), c=jnp.zeros((*batch_shape, H), dtype)
        )

    return _make_cell(
        init,
        initial_carry,
        input_size,
        R,
        _affine_project(input_size, "w_ih", "b", pol),
        step,
        config=(
            ("factory", lstm),
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("peephole", peephole),
            ("coupled", coupled),
            ("forget_bias", forget_bias),
            ("proj_size", proj_size),
            *pol.config(),
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
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    output_size = _check_size("output_size", output_size)
    _init.check_initializers(kernel_init, recurrent_kernel_init, bias_init)
    H, n_out = hidden_size, output_size
    pol = policy(param_dtype, dtype)
    pdt = pol.param_dtype

    def init(key):
        k_ih, k_oh, k_ho, k_b = _init.split(key, 3, bias_init)
        return JordanParams(
            w_ih=_init.input_kernel(kernel_init, k_ih, (input_size, H), 1, pdt),
            w_oh=_init.recurrent_kernel(
                recurrent_kernel_init, k_oh, (n_out, H), 1, pdt, _lecun_normal
            ),
            b=_init.biases(bias_init, k_b, H, (1,), pdt)[0],
            w_ho=_lecun_normal(k_ho, (hidden_size, output_size), pdt),
            b_o=jnp.zeros((output_size,), pdt),
        )

    def step(params, o, xp):
        h = jnp.tanh(xp + pol.dot(o, params.w_oh))
        o = pol.dot(h, params.w_ho) + pol.acc(params.b_o)
        return o, pol.out(o)

    return _make_cell(
        init,
        _zeros_carry(output_size, pol.accum_dtype),
        input_size,
        output_size,
        _affine_project(input_size, "w_ih", "b", pol),
        step,
        config=(
            ("factory", jordan_rnn),
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("output_size", output_size),
            *pol.config(),
        ),
    )
