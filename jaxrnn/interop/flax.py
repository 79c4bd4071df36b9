"""Flax interop: Linen and NNX RNN cells and jaxrnn cells, same weights.

Cells only: Flax's ``nn.RNN``/``nnx.RNN`` scan a cell, as :func:`jaxrnn.scan` does. Supported
are ``LSTMCell`` and ``OptimizedLSTMCell`` (identical parameters in Linen), ``GRUCell`` and
``SimpleCell``, from Linen parameter dicts (:func:`from_flax_linen`, :func:`to_flax_linen`) or
NNX modules (:func:`from_flax_nnx`, :func:`to_flax_nnx`). Only :func:`to_flax_nnx` imports
Flax (``flax.nnx``, when called); the rest reads and writes plain dicts and arrays.

The correspondence:

- Flax's LSTM carry is ``(c, h)``, jaxrnn's ``LSTMCarry(h, c)``: :func:`carry_from_flax` and
  :func:`carry_to_flax` convert.
- Linen's gated cells and NNX's ``LSTMCell`` keep one kernel per gate (LSTM ``ii, if, ig, io``
  and ``hi, hf, hg, ho``, GRU ``ir, iz, in`` and ``hr, hz, hn``); NNX's other cells fuse them in
  ``dense_i`` and ``dense_h``. jaxrnn fuses them, in the same gate order, into ``w_ih`` and
  ``w_hh`` (input-major, as Flax's kernels are).
- Flax puts the LSTM bias on the hidden-side kernels only (``hi, hf, hg, ho``), which is
  jaxrnn's ``b``.
- Flax's GRU computes the ``reset_after=True`` form with input-side biases ``b_ir, b_iz, b_in``
  and, in Linen only, a hidden-side ``b_hn`` (NNX's ``GRUCell`` has no ``b_hn``).

What Flax cannot compute (a GRU with ``reset_after=False``, peepholes, coupled gates, a
projection, a Jordan cell, a nonzero ``b_hn`` for NNX; non-default gate functions or a
residual ``SimpleCell`` coming in) is refused with a ``ValueError`` naming what blocks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxrnn.cells import Cell, GRUParams, LSTMCarry
from jaxrnn.interop._common import (
    _GRU_GATES,
    _LSTM_GATES,
    _SIGMOID,
    _TANH,
    _build,
    _cell_kind,
    _is,
    _name,
    _split,
)

__all__ = [
    "carry_from_flax",
    "carry_to_flax",
    "from_flax_linen",
    "from_flax_nnx",
    "to_flax_linen",
    "to_flax_nnx",
]

_FLAX_KINDS = ("lstm", "optimized_lstm", "gru", "simple")


def _flax_class_kind(obj, namespace: str) -> str | None:
    """``kind`` of a Flax cell (module instance) from ``namespace`` ("linen" or "nnx")."""
    cls = type(obj)
    if not cls.__module__.startswith(f"flax.{namespace}"):
        return None
    return {
        "LSTMCell": "lstm",
        "OptimizedLSTMCell": "optimized_lstm",
        "GRUCell": "gru",
        "SimpleCell": "simple",
    }.get(cls.__name__)


def _flax_activation(module, kind: str):
    """Check a Flax cell's functions are those jaxrnn's cell computes; the activation to use."""
    name = type(module).__name__
    if kind == "simple":
        if getattr(module, "residual", False):
            raise ValueError(
                f"{name}(residual=True) adds h before the activation; jr.simple_rnn has no "
                "residual term"
            )
        return module.activation_fn
    if not _is(module.gate_fn, _SIGMOID):
        raise ValueError(
            f"{name} with gate_fn={_name(module.gate_fn)}: jaxrnn's gated cells use sigmoid"
        )
    if not _is(module.activation_fn, _TANH):
        raise ValueError(
            f"{name} with activation_fn={_name(module.activation_fn)}: jaxrnn's gated cells "
            "use tanh"
        )
    return None


def from_flax_linen(variables, kind) -> tuple[Cell, Any]:
    """Convert the parameters of a Flax Linen RNN cell to ``(cell, params)``.

    ``LSTMCell`` and ``OptimizedLSTMCell`` -> :func:`jaxrnn.lstm` (``b`` = the hidden-side
    biases ``hi, hf, hg, ho``; Flax has no input-side LSTM bias); ``GRUCell`` ->
    ``jaxrnn.gru(reset_after=True)`` (``b_ih`` = the biases of ``ir, iz, in``, ``b_hh`` =
    ``(0, 0, b_hn)``); ``SimpleCell`` -> :func:`jaxrnn.simple_rnn`. Run the result with
    :func:`jaxrnn.scan`, converting Flax carries with :func:`carry_from_flax`.

    Args:
        variables: the dict from ``module.init``, with or without its ``"params"`` level.
        kind: ``"lstm"``, ``"optimized_lstm"``, ``"gru"`` or ``"simple"``, or the Linen cell
            itself (e.g. ``nn.GRUCell(features=4)``); given the cell, its ``gate_fn`` and
            ``activation_fn`` are checked (a ``SimpleCell``'s activation is carried over),
            given a string they are assumed to be Flax's defaults.

    Returns:
        ``(cell, params)``, with the parameters' dtype.

    Raises:
        ValueError: for an unknown ``kind``, missing parameters, kernels or biases whose
            shapes disagree (each is checked against the hidden-side kernel, so a bad variable
            fails here, not later inside :func:`jaxrnn.scan`), or a cell jaxrnn cannot
            reproduce (non-default gate/activation functions, ``SimpleCell(residual=True)``).

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn as jr
    >>> flax_cell = nn.LSTMCell(features=4)
    >>> x = jnp.ones((2, 3))
    >>> carry = flax_cell.initialize_carry(jax.random.key(0), x.shape)
    >>> variables = flax_cell.init(jax.random.key(1), carry, x)
    >>> cell, params = jr.interop.from_flax_linen(variables, "lstm")
    >>> (c, h), y = flax_cell.apply(variables, carry, x)
    >>> new, y_jr = cell.apply(params, jr.interop.carry_from_flax(carry), x)
    >>> bool(jnp.allclose(y, y_jr, atol=1e-6)), bool(jnp.allclose(c, new.c, atol=1e-6))
    (True, True)
    """
    activation = None
    if isinstance(kind, str):
        if kind not in _FLAX_KINDS:
            raise ValueError(f"kind: expected one of {_FLAX_KINDS}, got {kind!r}")
    else:
        module, kind = kind, _flax_class_kind(kind, "linen")
        if kind is None:
            raise ValueError(
                "kind: expected a string or a flax.linen LSTMCell, OptimizedLSTMCell, GRUCell "
                f"or SimpleCell, got {type(module).__name__}"
            )
        activation = _flax_activation(module, kind)
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables: expected a dict of parameters, got {type(variables).__name__}")
    params = variables.get("params", variables)
    first = {"lstm": "hi", "optimized_lstm": "hi", "gru": "hr", "simple": "h"}[kind]

    def get(name, leaf, shape=None):
        try:
            value = jnp.asarray(params[name][leaf])
        except (KeyError, TypeError):
            raise ValueError(
                f"variables: no {name}/{leaf} parameter for a Linen {kind} cell (found "
                f"{sorted(params)})"
            ) from None
        if shape is not None and value.shape != shape:
            raise ValueError(
                f"variables['params']['{name}']['{leaf}']: expected shape {shape} (from "
                f"{first}/kernel, {first_shape}: input size {features_in}, {hidden} features), "
                f"got {value.shape}"
            )
        return value

    features_in = get("i" + first[1:], "kernel").shape[0]  # ii, ir or i
    first_shape = get(first, "kernel").shape
    if len(first_shape) != 2 or first_shape[0] != first_shape[1]:
        raise ValueError(
            f"variables['params']['{first}']['kernel']: expected a square (features, features) "
            f"matrix, got shape {first_shape}"
        )
    hidden = first_shape[1]
    kernels = {"i": (features_in, hidden), "h": (hidden, hidden)}
    bias_shape = (hidden,)

    def fused(side, leaf, gates):
        shape = kernels[side] if leaf == "kernel" else bias_shape
        return jnp.concatenate([get(side + g, leaf, shape) for g in gates], axis=-1)

    if kind in ("lstm", "optimized_lstm"):
        w_ih = fused("i", "kernel", _LSTM_GATES)
        w_hh = fused("h", "kernel", _LSTM_GATES)
        b = fused("h", "bias", _LSTM_GATES)
        return _build(kind, w_ih, w_hh, {"b": b})
    if kind == "gru":
        w_ih = fused("i", "kernel", _GRU_GATES)
        w_hh = fused("h", "kernel", _GRU_GATES)
        b_ih = fused("i", "bias", _GRU_GATES)
        b_hn = get("hn", "bias", bias_shape)
        b_hh = jnp.concatenate([jnp.zeros_like(b_hn), jnp.zeros_like(b_hn), b_hn], axis=-1)
        return _build(kind, w_ih, w_hh, {"b_ih": b_ih, "b_hh": b_hh})
    biases = {"b": get("i", "bias", bias_shape)}
    w_ih = get("i", "kernel", kernels["i"])
    return _build(kind, w_ih, get("h", "kernel", kernels["h"]), biases, activation)


def _gru_flax_biases(params: GRUParams) -> tuple:
    """Input-side biases ``b_ir + b_hr, b_iz + b_hz, b_in`` and the hidden-side ``b_hn``."""
    b_ir, b_iz, b_in = _split(params.b_ih, 3)
    b_hr, b_hz, b_hn = _split(params.b_hh, 3)
    return b_ir + b_hr, b_iz + b_hz, b_in, b_hn


def to_flax_linen(cell: Cell, params) -> dict:
    """The Linen variables of the Flax cell that computes what ``cell`` computes.

    The target is ``nn.LSTMCell``/``nn.OptimizedLSTMCell`` (same parameters), ``nn.GRUCell``
    or ``nn.SimpleCell`` with ``features = hidden_size``; for a :func:`jaxrnn.simple_rnn` with a
    non-tanh activation, build the ``SimpleCell`` with that ``activation_fn``. A GRU's
    hidden-side ``r, z`` biases are added to the input-side ones (Flax has only the latter);
    ``b_hn`` keeps its place.

    Args:
        cell: a :func:`jaxrnn.lstm` (no peepholes, coupling or projection),
            :func:`jaxrnn.gru` (``reset_after=True``) or :func:`jaxrnn.simple_rnn` cell.
        params: its parameters.

    Returns:
        ``{"params": {...}}``, ready for ``flax_cell.apply``.

    Raises:
        ValueError: if Flax has no such cell (``gru(reset_after=False)``, peepholes, coupled
            gates, projection, ``jordan_rnn``, custom cells).

    >>> import jax, jaxrnn as jr
    >>> cell = jr.gru(3, 4, reset_after=True)
    >>> variables = jr.interop.to_flax_linen(cell, cell.init(jax.random.key(0)))
    >>> sorted(variables["params"]), variables["params"]["hn"]["bias"].shape
    (['hn', 'hr', 'hz', 'in', 'ir', 'iz'], (4,))
    """
    kind = _cell_kind(cell, params, "Flax")
    out: dict[str, dict] = {}
    if kind == "lstm":
        parts = zip(
            _LSTM_GATES,
            _split(params.w_ih, 4),
            _split(params.w_hh, 4),
            _split(params.b, 4),
            strict=True,
        )
        for g, w_i, w_h, b in parts:
            out["i" + g] = {"kernel": w_i}
            out["h" + g] = {"kernel": w_h, "bias": b}
    elif kind == "gru":
        w_i, w_h = _split(params.w_ih, 3), _split(params.w_hh, 3)
        b_r, b_z, b_n, b_hn = _gru_flax_biases(params)
        for k, (g, b) in enumerate(zip(_GRU_GATES, (b_r, b_z, b_n), strict=True)):
            out["i" + g] = {"kernel": w_i[k], "bias": b}
            out["h" + g] = {"kernel": w_h[k]}
        out["hn"]["bias"] = b_hn
    else:
        out = {"i": {"kernel": params.w_ih, "bias": params.b}, "h": {"kernel": params.w_hh}}
    return {"params": out}


def _nnx_value(var):
    return jnp.asarray(var[...])


def from_flax_nnx(module) -> tuple[Cell, Any]:
    """Convert a Flax NNX RNN cell module to ``(cell, params)``.

    Supports ``nnx.LSTMCell``, ``nnx.OptimizedLSTMCell``, ``nnx.GRUCell`` (it has no ``b_hn``:
    ``b_hh`` comes out zero) and ``nnx.SimpleCell``, with the mapping of
    :func:`from_flax_linen`. The module is only read.

    Args:
        module: the NNX cell.

    Returns:
        ``(cell, params)``.

    Raises:
        TypeError: if ``module`` is not one of these NNX cells.
        ValueError: if it uses functions jaxrnn's cell does not (non-default ``gate_fn`` or
            ``activation_fn`` in a gated cell, ``SimpleCell(residual=True)``).

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> from flax import nnx
    >>> flax_cell = nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell, params = jr.interop.from_flax_nnx(flax_cell)
    >>> x, h = jnp.ones((2, 3)), jnp.full((2, 4), 0.5)
    >>> bool(jnp.allclose(flax_cell(h, x)[0], cell.apply(params, h, x)[0], atol=1e-6))
    True
    """
    kind = _flax_class_kind(module, "nnx")
    if kind is None:
        raise TypeError(
            "from_flax_nnx: expected a flax.nnx LSTMCell, OptimizedLSTMCell, GRUCell or "
            f"SimpleCell, got {type(module).__name__}"
        )
    activation = _flax_activation(module, kind)
    if kind == "lstm":
        names = {"i": "ii", "f": "if_", "g": "ig", "o": "io"}
        w_ih = jnp.concatenate(
            [_nnx_value(getattr(module, names[g]).kernel) for g in _LSTM_GATES], axis=-1
        )
        hidden = [getattr(module, "h" + g) for g in _LSTM_GATES]
        w_hh = jnp.concatenate([_nnx_value(m.kernel) for m in hidden], axis=-1)
        b = jnp.concatenate([_nnx_value(m.bias) for m in hidden], axis=-1)
        return _build(kind, w_ih, w_hh, {"b": b})
    w_ih = _nnx_value(module.dense_i.kernel)
    w_hh = _nnx_value(module.dense_h.kernel)
    if kind == "optimized_lstm":
        return _build(kind, w_ih, w_hh, {"b": _nnx_value(module.dense_h.bias)})
    b_ih = _nnx_value(module.dense_i.bias)
    if kind == "gru":
        return _build(kind, w_ih, w_hh, {"b_ih": b_ih, "b_hh": jnp.zeros_like(b_ih)})
    return _build(kind, w_ih, w_hh, {"b": b_ih}, activation)


def to_flax_nnx(cell: Cell, params, *, kind: str | None = None):
    """A new Flax NNX cell module computing what ``cell`` computes with ``params``.

    Args:
        cell: a :func:`jaxrnn.lstm` (no peepholes, coupling or projection), :func:`jaxrnn.gru`
            (``reset_after=True``) or :func:`jaxrnn.simple_rnn` cell.
        params: its parameters.
        kind: for an LSTM, ``"lstm"`` (default, ``nnx.LSTMCell``) or ``"optimized_lstm"``
            (``nnx.OptimizedLSTMCell``); ignored otherwise (``nnx.GRUCell``,
            ``nnx.SimpleCell``, which gets the cell's activation).

    Returns:
        The module, with ``param_dtype`` the parameters' dtype.

    Raises:
        ValueError: if NNX has no such cell: those :func:`to_flax_linen` refuses, and a GRU
            with a nonzero ``b_hn`` (``params.b_hh[2H:]``): ``nnx.GRUCell`` has no bias inside
            ``r * (h @ W_hn)``, and ``r`` varies, so no other bias can absorb it.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 4)
    >>> params = cell.init(jax.random.key(0))
    >>> flax_cell = jr.interop.to_flax_nnx(cell, params, kind="optimized_lstm")
    >>> type(flax_cell).__name__, flax_cell.dense_h.bias[...].tolist()[4:8]
    ('OptimizedLSTMCell', [1.0, 1.0, 1.0, 1.0])
    """
    from flax import nnx

    family = _cell_kind(cell, params, "Flax")
    if family == "lstm":
        kind = kind or "lstm"
        if kind not in ("lstm", "optimized_lstm"):
            raise ValueError(f"kind: expected 'lstm' or 'optimized_lstm', got {kind!r}")
    else:
        kind = family
    w_ih, w_hh = jnp.asarray(params.w_ih), jnp.asarray(params.w_hh)
    in_size, hidden = w_ih.shape[0], w_hh.shape[0]
    opts = dict(param_dtype=w_ih.dtype, rngs=nnx.Rngs(0))

    def put(var, value):
        var[...] = jnp.asarray(value, var[...].dtype)

    if kind == "lstm":
        module = nnx.LSTMCell(in_size, hidden, **opts)
        names = {"i": "ii", "f": "if_", "g": "ig", "o": "io"}
        parts = zip(
            _LSTM_GATES,
            _split(w_ih, 4),
            _split(w_hh, 4),
            _split(params.b, 4),
            strict=True,
        )
        for g, w_i, w_h, b in parts:
            put(getattr(module, names[g]).kernel, w_i)
            put(getattr(module, "h" + g).kernel, w_h)
            put(getattr(module, "h" + g).bias, b)
    elif kind == "optimized_lstm":
        module = nnx.OptimizedLSTMCell(in_size, hidden, **opts)
        put(module.dense_i.kernel, w_ih)
        put(module.dense_h.kernel, w_hh)
        put(module.dense_h.bias, params.b)
    elif kind == "gru":
        b_r, b_z, b_n, b_hn = _gru_flax_biases(params)
        if bool(jnp.any(b_hn != 0)):
            raise ValueError(
                "this GRU has a nonzero b_hn (params.b_hh[2H:], inside r * (h @ W_hn + b_hn)); "
                "flax.nnx.GRUCell has no such bias and r varies, so no other bias can hold it "
                "(flax.linen.GRUCell has it: use to_flax_linen)"
            )
        module = nnx.GRUCell(in_size, hidden, **opts)
        put(module.dense_i.kernel, w_ih)
        put(module.dense_i.bias, jnp.concatenate([b_r, b_z, b_n], axis=-1))
        put(module.dense_h.kernel, w_hh)
    else:
        activation = dict(cell.config)["activation"]
        module = nnx.SimpleCell(in_size, hidden, activation_fn=activation, **opts)
        put(module.dense_i.kernel, w_ih)
        put(module.dense_i.bias, params.b)
        put(module.dense_h.kernel, w_hh)
    return module


def _is_leaf(x) -> bool:
    return not isinstance(x, (tuple, list, dict))


def carry_from_flax(carry):
    """A Flax cell carry as a jaxrnn carry: an LSTM's ``(c, h)`` becomes ``LSTMCarry(h, c)``.

    A GRU or simple-cell carry (one array) is returned as is. For the ``(forward, backward)``
    carry of Flax's ``Bidirectional``, convert each direction.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> jr.interop.carry_from_flax((jnp.zeros(4), jnp.ones(4))).h.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    if _is_leaf(carry):
        return carry
    if isinstance(carry, (tuple, list)) and len(carry) == 2 and all(map(_is_leaf, carry)):
        c, h = carry
        return LSTMCarry(h=h, c=c)
    raise TypeError(
        "carry_from_flax: expected a cell carry, an array or a (c, h) pair of arrays, got "
        f"{type(carry).__name__}"
    )


def carry_to_flax(carry):
    """A jaxrnn cell carry as a Flax carry: ``LSTMCarry(h, c)`` becomes ``(c, h)``.

    Arrays (GRU and simple-cell carries) are returned as is.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> c, h = jr.interop.carry_to_flax(jr.LSTMCarry(h=jnp.ones(2), c=jnp.zeros(2)))
    >>> c.tolist(), h.tolist()
    ([0.0, 0.0], [1.0, 1.0])
    """
    if isinstance(carry, LSTMCarry):
        return (carry.c, carry.h)
    if _is_leaf(carry):
        return carry
    raise TypeError(
        "carry_to_flax: expected a cell carry, an array or a jr.LSTMCarry, got "
        f"{type(carry).__name__}"
    )
