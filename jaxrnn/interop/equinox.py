"""Equinox interop: ``equinox.nn.GRUCell``/``LSTMCell`` modules and jaxrnn cells, same weights.

Cells only: an Equinox cell is one step on one example, driven over a sequence by the user's
``jax.lax.scan`` (and over a batch by ``jax.vmap``), as a jaxrnn cell is by :func:`jaxrnn.scan`
(which takes any batch shape itself). :func:`from_equinox` reads a module into ``(cell,
params)``; :func:`to_equinox` builds a module from them. Equinox is an optional dependency
(``pip install "jaxrnn[equinox]"``), imported only inside these two functions.

The correspondence (``H`` the hidden size; Equinox stores weights output-major, jaxrnn
input-major; the gate blocks are in the same order, LSTM ``i, f, g, o`` and GRU ``r, z, n``):

===========================  ===========================================================
Equinox                      jaxrnn
===========================  ===========================================================
``LSTMCell``                 ``jr.lstm`` (no peepholes, coupling or projection)
``GRUCell``                  ``jr.gru(reset_after=True)``
``weight_ih (G*H, I)``       ``w_ih = weight_ih.T``, ``(I, G*H)``
``weight_hh (G*H, H)``       ``w_hh = weight_hh.T``, ``(H, G*H)``
``LSTMCell.bias (4H,)``      ``b``
``GRUCell.bias (3H,)``       ``b_ih`` (input side, outside the reset product)
``GRUCell.bias_n (H,)``      ``b_hh[2H:]`` (``b_hn``, inside ``r * (h W_hn + b_hn)``)
(no field)                   ``b_hh[:2H]``: zero coming in; added to ``bias[:2H]`` going out
``use_bias=False``           every bias zero
carry ``(h, c)`` / ``h``     ``LSTMCarry(h, c)`` (same order: ``jr.LSTMCarry(*state)``) / ``h``
===========================  ===========================================================

Round trips are exact: ``to_equinox(*from_equinox(m))`` holds ``m``'s arrays, and
``from_equinox(to_equinox(cell, params))`` gives back ``params`` bit for bit whenever the GRU's
``b_hh[:2H]`` is zero (as :func:`from_equinox` leaves it; otherwise the same function with
those biases folded into ``b_ih``). What Equinox cannot compute (a GRU with
``reset_after=False``, peepholes, coupled gates, a projection, a simple or Jordan cell, nonzero
biases for ``use_bias=False``) is refused with a ``ValueError`` naming what blocks it, and so
is a subclass that overrides ``__call__`` (its function is no longer the one mapped here).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_bool
from jaxrnn._core import Cell
from jaxrnn.interop._common import _build, _cell_kind, _check_shape, _fold_gru_biases

__all__ = ["from_equinox", "to_equinox"]

# Fused gate blocks of each Equinox cell.
_GATES = {"LSTMCell": 4, "GRUCell": 3}


def _import_equinox():
    """The ``equinox`` package, or an ``ImportError`` saying how to install it."""
    try:
        import equinox
    except ImportError as err:
        raise ImportError(
            "jaxrnn's Equinox interop needs Equinox, an optional dependency: "
            'pip install "jaxrnn[equinox]"'
        ) from err
    return equinox


def _equinox_class(eqx, module) -> str:
    """``"LSTMCell"`` or ``"GRUCell"``: which Equinox cell ``module`` is; else raise."""
    for base in (eqx.nn.LSTMCell, eqx.nn.GRUCell):
        if isinstance(module, base):
            break
    else:
        raise TypeError(
            "from_equinox: expected an equinox.nn.GRUCell or equinox.nn.LSTMCell, got "
            f"{type(module).__name__}"
        )
    for klass in type(module).__mro__:
        if klass is base:
            break
        if "__call__" in vars(klass):
            raise ValueError(
                f"from_equinox: {klass.__name__} overrides {base.__name__}.__call__, so it may "
                f"compute another function than the {base.__name__} mapped here"
            )
    return base.__name__


def from_equinox(module) -> tuple[Cell, Any]:
    """Convert an ``equinox.nn.GRUCell`` or ``equinox.nn.LSTMCell`` to ``(cell, params)``.

    ``LSTMCell`` -> :func:`jaxrnn.lstm` with ``b = bias``; ``GRUCell`` ->
    ``jaxrnn.gru(reset_after=True)`` with ``b_ih = bias`` and ``b_hh = (0, 0, bias_n)``
    (Equinox's GRU has the same function: ``bias`` outside the reset gate, ``bias_n`` inside
    ``r * (W_hn h + b_hn)``). Weights are transposed to jaxrnn's input-major layout. A module
    with ``use_bias=False`` gets zero biases. The parameters keep the module's dtype (a float64
    module needs ``jax_enable_x64``) and the cell computes in it. Subclasses are accepted as
    long as they keep Equinox's ``__call__``. The module is only read.

    ``module(x, state)`` for one example equals ``cell.apply(params, carry, x)[0]`` with the
    same state (an LSTM's ``(h, c)`` as ``jr.LSTMCarry(h, c)``); :func:`jaxrnn.scan` runs the
    cell over whole sequences, with or without batch dimensions.

    Args:
        module: the Equinox cell.

    Returns:
        ``(cell, params)``.

    Raises:
        ImportError: if Equinox is not installed.
        TypeError: if ``module`` is neither an ``equinox.nn.GRUCell`` nor an
            ``equinox.nn.LSTMCell``.
        ValueError: if its class overrides ``__call__``, or a weight has the wrong shape or
            another dtype than ``weight_ih`` (the error names the field).

    >>> import jax, jax.numpy as jnp, equinox as eqx, jaxrnn as jr
    >>> eqx_cell = eqx.nn.GRUCell(3, 4, key=jax.random.key(0))
    >>> cell, params = jr.interop.from_equinox(eqx_cell)
    >>> xs, h0 = jnp.ones((5, 3)), jnp.full(4, 0.5)
    >>> h_eqx, _ = jax.lax.scan(lambda h, x: (eqx_cell(x, h), None), h0, xs)
    >>> h_jr, ys = jr.scan(cell, params, xs, h0)
    >>> bool(jnp.allclose(h_eqx, h_jr, atol=1e-6)), ys.shape
    (True, (5, 4))
    """
    eqx = _import_equinox()
    name = _equinox_class(eqx, module)
    G, In, H = _GATES[name], module.input_size, module.hidden_size
    w_ih = _check_shape(f"{name}.weight_ih", module.weight_ih, (G * H, In))
    dtype = w_ih.dtype

    def field(attr, shape):
        value = _check_shape(f"{name}.{attr}", getattr(module, attr), shape)
        if value.dtype != dtype:
            raise ValueError(
                f"{name}.{attr}: dtype {value.dtype} differs from weight_ih's {dtype}; a "
                "jaxrnn cell keeps all its parameters in one dtype"
            )
        return jnp.asarray(value)

    w_hh = field("weight_hh", (G * H, H))
    if module.use_bias:
        bias = field("bias", (G * H,))
        bias_n = field("bias_n", (H,)) if name == "GRUCell" else None
    else:
        bias = jnp.zeros((G * H,), dtype)
        bias_n = jnp.zeros((H,), dtype)
    w_ih, w_hh = jnp.asarray(w_ih).T, w_hh.T
    if name == "LSTMCell":
        return _build("lstm", w_ih, w_hh, {"b": bias})
    b_hh = jnp.concatenate([jnp.zeros((2 * H,), dtype), bias_n])
    return _build("gru", w_ih, w_hh, {"b_ih": bias, "b_hh": b_hh})


def to_equinox(cell: Cell, params, *, use_bias: bool = True):
    """A new ``equinox.nn.LSTMCell`` or ``equinox.nn.GRUCell`` computing what ``cell`` computes.

    The module has ``input_size`` and ``hidden_size`` of the cell and the parameters' dtype,
    and holds the same weights (transposed to Equinox's output-major layout). A GRU's
    hidden-side ``r, z`` biases (``b_hh[:2H]``) are added to the input-side ones, as Equinox
    has only the latter (``bias``); ``b_hn`` becomes ``bias_n``. A cell whose precision policy
    runs its matmuls in another dtype than it stores its parameters in converts to a module in
    the storage dtype, which Equinox computes in throughout.

    Args:
        cell: a :func:`jaxrnn.lstm` (no peepholes, coupling or projection) or
            :func:`jaxrnn.gru` (``reset_after=True``) cell.
        params: its parameters.
        use_bias: build the module with biases; ``use_bias=False`` requires every bias in
            ``params`` to be zero.

    Returns:
        The Equinox module.

    Raises:
        ImportError: if Equinox is not installed.
        ValueError: for what Equinox cannot compute: ``gru(reset_after=False)``, peephole,
            coupled or projected LSTMs, ``simple_rnn``, ``jordan_rnn``, custom cells, nonzero
            biases with ``use_bias=False``; and for parameters of the wrong shape.
        TypeError: if ``cell`` is not a cell or ``params`` not of its parameter type, or
            ``use_bias`` is not a bool.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 4)
    >>> params = cell.init(jax.random.key(0))
    >>> eqx_cell = jr.interop.to_equinox(cell, params)
    >>> eqx_cell.weight_ih.shape, eqx_cell.bias[4:8].tolist()  # the forget-gate block
    ((16, 3), [1.0, 1.0, 1.0, 1.0])
    >>> carry = jr.LSTMCarry(h=jnp.full(4, 0.5), c=jnp.ones(4))
    >>> h, c = eqx_cell(jnp.ones(3), carry)
    >>> bool(jnp.allclose(h, cell.apply(params, carry, jnp.ones(3))[1], atol=1e-6))
    True
    """
    use_bias = check_bool("use_bias", use_bias)
    eqx = _import_equinox()
    kind = _cell_kind(cell, params, "Equinox", kinds=("lstm", "gru"))
    cfg = dict(cell.config)
    In, H = cfg["input_size"], cfg["hidden_size"]
    G = 4 if kind == "lstm" else 3
    w_ih = _check_shape("params.w_ih", params.w_ih, (In, G * H))
    w_hh = _check_shape("params.w_hh", params.w_hh, (H, G * H))
    if kind == "lstm":
        biases = {"b": _check_shape("params.b", params.b, (G * H,))}
    else:
        biases = {
            "b_ih": _check_shape("params.b_ih", params.b_ih, (G * H,)),
            "b_hh": _check_shape("params.b_hh", params.b_hh, (G * H,)),
        }
    if not use_bias:
        for field, value in biases.items():
            if np.any(value != 0):
                raise ValueError(
                    f"use_bias=False, but params.{field} is nonzero; an Equinox cell without "
                    "biases cannot hold it"
                )
    dtype = w_ih.dtype

    def arr(x):
        return jnp.asarray(x).astype(dtype)

    new = [arr(w_ih.T), arr(w_hh.T)]
    if kind == "lstm":
        module = eqx.nn.LSTMCell(In, H, use_bias=use_bias, dtype=dtype, key=jax.random.key(0))
        if use_bias:
            new.append(arr(biases["b"]))
    else:
        module = eqx.nn.GRUCell(In, H, use_bias=use_bias, dtype=dtype, key=jax.random.key(0))
        if use_bias:
            b_r, b_z, b_n, b_hn = _fold_gru_biases(params._replace(**biases))
            new += [arr(jnp.concatenate([b_r, b_z, b_n])), arr(b_hn)]
    fields = ("weight_ih", "weight_hh", "bias", "bias_n")[: len(new)]
    return eqx.tree_at(lambda m: tuple(getattr(m, f) for f in fields), module, tuple(new))
