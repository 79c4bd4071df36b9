"""Flax interop: Linen and NNX RNN cells and jaxrnn cells, same weights.

Cells only: Flax's ``nn.RNN``/``nnx.RNN`` scan a cell, as :func:`jaxrnn.scan` does. Linen
parameter dicts convert with :func:`from_flax_linen` and :func:`to_flax_linen`, NNX modules
with :func:`from_flax_nnx` and :func:`to_flax_nnx`. Only :func:`to_flax_nnx` imports Flax
(``flax.nnx``, when called); the rest reads and writes plain dicts and arrays.

=================================== ================================ ======= =======
Flax cell                           jaxrnn cell                      Linen   NNX
=================================== ================================ ======= =======
``LSTMCell``, ``OptimizedLSTMCell`` :func:`jaxrnn.lstm`              yes     yes
``GRUCell``                         ``jaxrnn.gru(reset_after=True)`` yes     yes
``SimpleCell``                      :func:`jaxrnn.simple_rnn`        yes     yes
``MGUCell`` (both ``reset_gate``)   :func:`jaxrnn.mgu`               yes     no
``ConvLSTMCell`` (1-D, 2-D, 3-D...) :func:`jaxrnn.conv_lstm`         yes     no
=================================== ================================ ======= =======

``flax.nnx`` (0.12) has no ``MGUCell`` and no ``ConvLSTMCell``: the NNX converters refuse
these cells with an error that says so; convert the Linen cell instead (an NNX model can hold
it through ``flax.nnx.bridge.ToNNX``).

The correspondence:

- Flax's LSTM carry (dense and convolutional) is ``(c, h)``, jaxrnn's ``LSTMCarry(h, c)``:
  :func:`carry_from_flax` and :func:`carry_to_flax` convert.
- Linen's gated cells and NNX's ``LSTMCell`` keep one kernel per gate (LSTM ``ii, if, ig, io``
  and ``hi, hf, hg, ho``, GRU ``ir, iz, in`` and ``hr, hz, hn``, MGU ``if, in`` and ``hf, hn``);
  NNX's other cells fuse them in ``dense_i`` and ``dense_h``. jaxrnn fuses them, in the same
  gate order, into ``w_ih`` and ``w_hh`` (input-major, as Flax's kernels are).
- Flax puts the LSTM bias on the hidden-side kernels only (``hi, hf, hg, ho``), which is
  jaxrnn's ``b``.
- Flax's GRU computes the ``reset_after=True`` form with input-side biases ``b_ir, b_iz, b_in``
  and, in Linen only, a hidden-side ``b_hn`` (NNX's ``GRUCell`` has no ``b_hn``).
- Flax's MGU is jaxrnn's (:func:`jaxrnn.mgu` follows it): ``b_ih`` is the biases of ``if, in``,
  ``b_hh`` that of ``hn``, which Flax has only with ``reset_gate=True``.
- Flax's ``ConvLSTMCell`` has two biased convolutions ``ih`` and ``hh`` with kernels
  ``(*kernel_size, in, 4H)``, as jaxrnn's ``w_ih``/``w_hh``, but gate blocks ordered
  ``i, g, f, o`` (jaxrnn: ``i, f, g, o``), and adds 1 to the forget-gate pre-activation in
  every step. jaxrnn's one bias ``b`` is the sum of Flax's two plus that 1.

What Flax cannot compute (a GRU with ``reset_after=False``, peepholes, coupled gates, a
projection, a Jordan cell, a convolutional GRU, a nonzero ``b_hn`` for NNX, a computation
``dtype`` other than the parameters'; non-default gate functions, a residual ``SimpleCell``, a
``ConvLSTMCell`` with strides or padding other than ``"SAME"`` coming in) is refused with a
``ValueError`` naming what blocks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._core import Cell
from jaxrnn.cells import ConvLSTMParams, GRUParams, LSTMCarry, MGUParams, conv_gru, conv_lstm, mgu
from jaxrnn.interop._common import (
    _GRU_GATES,
    _LSTM_GATES,
    _SIGMOID,
    _TANH,
    _build,
    _cell_fields,
    _cell_kind,
    _check_dtypes,
    _dtype_kwargs,
    _is,
    _name,
    _split,
)
from jaxrnn.interop._flax_conv import _conv_lstm_from_linen, _conv_lstm_to_linen

__all__ = [
    "carry_from_flax",
    "carry_to_flax",
    "from_flax_linen",
    "from_flax_nnx",
    "to_flax_linen",
    "to_flax_nnx",
]

_FLAX_KINDS = ("lstm", "optimized_lstm", "gru", "simple", "mgu", "conv_lstm")
_CLASS_KINDS = {
    "LSTMCell": "lstm",
    "OptimizedLSTMCell": "optimized_lstm",
    "GRUCell": "gru",
    "SimpleCell": "simple",
    "MGUCell": "mgu",
    "ConvLSTMCell": "conv_lstm",
}
# Cells flax.nnx does not have (flax 0.12): converted through Linen only.
_LINEN_ONLY = {"mgu": "MGUCell", "conv_lstm": "ConvLSTMCell"}
_NNX_MISSING = (
    "flax.nnx has no MGUCell or ConvLSTMCell (its cells are LSTMCell, OptimizedLSTMCell, "
    "GRUCell and SimpleCell)"
)


def _flax_class_kind(obj, namespace: str) -> str | None:
    """``kind`` of a Flax cell (module instance) from ``namespace`` ("linen" or "nnx")."""
    cls = type(obj)
    if not cls.__module__.startswith(f"flax.{namespace}"):
        return None
    kind = _CLASS_KINDS.get(cls.__name__)
    return None if namespace == "nnx" and kind in _LINEN_ONLY else kind


def _check_flax_dtype(module, param_dtype) -> None:
    """Refuse a Flax cell whose computation ``dtype`` is not its parameters' (``param_dtype``):
    Flax casts operands to it and keeps its sums there, jaxrnn's precision policy sums in
    float32, so the two would not compute the same numbers."""
    dtype = getattr(module, "dtype", None)
    if dtype is not None and jnp.dtype(dtype) != jnp.dtype(param_dtype):
        raise ValueError(
            f"{type(module).__name__}(dtype={jnp.dtype(dtype).name}) computes in "
            f"{jnp.dtype(dtype).name} with {jnp.dtype(param_dtype).name} parameters; jaxrnn "
            "cells convert only when the computation dtype is the parameters' (dtype=None)"
        )


def _flax_activation(module, kind: str):
    """Check a Flax cell's functions are those jaxrnn's cell computes; the activation to use."""
    name = type(module).__name__
    if kind == "conv_lstm":  # Flax's ConvLSTMCell has sigmoid and tanh built in
        return None
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
    r"""Convert the parameters of a Flax Linen RNN cell to ``(cell, params)``.

    ``LSTMCell`` and ``OptimizedLSTMCell`` -> :func:`jaxrnn.lstm` (``b`` = the hidden-side
    biases ``hi, hf, hg, ho``; Flax has no input-side LSTM bias); ``GRUCell`` ->
    ``jaxrnn.gru(reset_after=True)`` (``b_ih`` = the biases of ``ir, iz, in``, ``b_hh`` =
    ``(0, 0, b_hn)``); ``SimpleCell`` -> :func:`jaxrnn.simple_rnn`; ``MGUCell`` ->
    :func:`jaxrnn.mgu` with its ``reset_gate`` (``b_hh`` = the bias of ``hn``, zero without the
    reset gate); ``ConvLSTMCell`` -> :func:`jaxrnn.conv_lstm` with its ``kernel_size``, any
    number of spatial dimensions, gate blocks reordered from Flax's ``i, g, f, o`` and the
    biases folded into one,

    .. math::

        b = b^{ih} + b^{hh} + (0, 1, 0, 0) \quad \text{(blocks } i, f, g, o\text{)},

    the 1 being the offset Flax adds to the forget gate in every step. Run the result with
    :func:`jaxrnn.scan`, converting Flax carries with :func:`carry_from_flax`.

    Args:
        variables: the dict from ``module.init``, with or without its ``"params"`` level.
        kind: ``"lstm"``, ``"optimized_lstm"``, ``"gru"``, ``"simple"``, ``"mgu"`` or
            ``"conv_lstm"``, or the Linen cell itself (e.g. ``nn.GRUCell(features=4)``).
            Given the cell, its options are checked: ``gate_fn`` and ``activation_fn`` (a
            ``SimpleCell``'s activation is carried over), an ``MGUCell``'s ``reset_gate``, a
            ``ConvLSTMCell``'s ``kernel_size``, ``strides``, ``padding`` and ``use_bias``, and
            for these two cells ``dtype``. Given a string they are assumed to be Flax's
            defaults, except an MGU's ``reset_gate``, read from whether ``hn`` has a bias.

    Returns:
        ``(cell, params)``, with the parameters' dtype.

    Raises:
        ValueError: for an unknown ``kind``, missing parameters, kernels or biases whose
            shapes disagree (each is checked against the hidden-side kernel, so a bad variable
            fails here, not later inside :func:`jaxrnn.scan`), or a cell jaxrnn cannot
            reproduce (non-default gate/activation functions, ``SimpleCell(residual=True)``, a
            ``ConvLSTMCell`` with strides or non-``"SAME"`` padding, an ``MGUCell`` or
            ``ConvLSTMCell`` whose ``dtype`` is not its parameters').
        TypeError: if the parameters disagree on their dtype.

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
    module, kind = _linen_kind(kind)
    activation = None if module is None else _flax_activation(module, kind)
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables: expected a dict of parameters, got {type(variables).__name__}")
    params = variables.get("params", variables)
    if kind == "conv_lstm":
        cell, conv_params = _conv_lstm_from_linen(params, module)
        if module is not None:
            _check_flax_dtype(module, conv_params.b.dtype)
        return cell, conv_params
    r = _linen_reader(params, kind)
    if kind in ("lstm", "optimized_lstm", "gru"):
        return _gated_from_linen(r)
    if kind == "mgu":
        return _mgu_from_linen(r, module)
    biases = {"b": _linen_get(r, "i", "bias", (r.hidden,))}
    w_ih = _linen_get(r, "i", "kernel", r.kernels["i"])
    return _build(kind, w_ih, _linen_get(r, "h", "kernel", r.kernels["h"]), biases, activation)


def _linen_kind(kind) -> tuple[Any, str]:
    """``(Linen cell or None, kind)`` from :func:`from_flax_linen`'s ``kind``, checked."""
    if isinstance(kind, str):
        if kind not in _FLAX_KINDS:
            raise ValueError(f"kind: expected one of {_FLAX_KINDS}, got {kind!r}")
        return None, kind
    module, kind = kind, _flax_class_kind(kind, "linen")
    if kind is None:
        raise ValueError(
            "kind: expected a string or a flax.linen LSTMCell, OptimizedLSTMCell, GRUCell, "
            f"SimpleCell, MGUCell or ConvLSTMCell, got {type(module).__name__}"
        )
    return module, kind


class _LinenReader(NamedTuple):
    """A dense Linen cell's parameters, with the sizes read from its first hidden kernel."""

    params: Mapping
    kind: str
    first: str  # the hidden-side kernel the sizes come from: hi, hr, hf or h
    first_shape: tuple[int, ...]
    features_in: int
    hidden: int

    @property
    def kernels(self) -> dict[str, tuple[int, int]]:
        return {"i": (self.features_in, self.hidden), "h": (self.hidden, self.hidden)}


def _linen_leaf(params, kind: str, name: str, leaf: str):
    """``params[name][leaf]`` as an array, or a ``ValueError`` saying it is missing."""
    try:
        return jnp.asarray(params[name][leaf])
    except (KeyError, TypeError):
        raise ValueError(
            f"variables: no {name}/{leaf} parameter for a Linen {kind} cell (found "
            f"{sorted(params)})"
        ) from None


def _linen_reader(params, kind: str) -> _LinenReader:
    """The input and hidden sizes, from the kernels of ``i*`` and of the first ``h*`` gate."""
    first = {"lstm": "hi", "optimized_lstm": "hi", "gru": "hr", "simple": "h", "mgu": "hf"}[kind]
    features_in = _linen_leaf(params, kind, "i" + first[1:], "kernel").shape[0]  # ii, ir, if, i
    first_shape = _linen_leaf(params, kind, first, "kernel").shape
    if len(first_shape) != 2 or first_shape[0] != first_shape[1]:
        raise ValueError(
            f"variables['params']['{first}']['kernel']: expected a square (features, features) "
            f"matrix, got shape {first_shape}"
        )
    return _LinenReader(params, kind, first, first_shape, features_in, first_shape[1])


def _linen_get(r: _LinenReader, name: str, leaf: str, shape: tuple[int, ...]):
    """``params[name][leaf]``, checked to have ``shape``."""
    value = _linen_leaf(r.params, r.kind, name, leaf)
    if value.shape != shape:
        raise ValueError(
            f"variables['params']['{name}']['{leaf}']: expected shape {shape} (from "
            f"{r.first}/kernel, {r.first_shape}: input size {r.features_in}, {r.hidden} "
            f"features), got {value.shape}"
        )
    return value


def _linen_fused(r: _LinenReader, side: str, leaf: str, gates) -> jnp.ndarray:
    """The per-gate kernels (or biases) of one side, concatenated in ``gates`` order."""
    shape = r.kernels[side] if leaf == "kernel" else (r.hidden,)
    return jnp.concatenate([_linen_get(r, side + g, leaf, shape) for g in gates], axis=-1)


def _gated_from_linen(r: _LinenReader) -> tuple[Cell, Any]:
    """An LSTM (``b`` = the hidden-side biases) or a GRU (``b_hh = (0, 0, b_hn)``)."""
    if r.kind in ("lstm", "optimized_lstm"):
        w_ih = _linen_fused(r, "i", "kernel", _LSTM_GATES)
        w_hh = _linen_fused(r, "h", "kernel", _LSTM_GATES)
        b = _linen_fused(r, "h", "bias", _LSTM_GATES)
        return _build(r.kind, w_ih, w_hh, {"b": b})
    w_ih = _linen_fused(r, "i", "kernel", _GRU_GATES)
    w_hh = _linen_fused(r, "h", "kernel", _GRU_GATES)
    b_ih = _linen_fused(r, "i", "bias", _GRU_GATES)
    b_hn = _linen_get(r, "hn", "bias", (r.hidden,))
    b_hh = jnp.concatenate([jnp.zeros_like(b_hn), jnp.zeros_like(b_hn), b_hn], axis=-1)
    return _build(r.kind, w_ih, w_hh, {"b_ih": b_ih, "b_hh": b_hh})


def _mgu_from_linen(r: _LinenReader, module) -> tuple[Cell, Any]:
    """An MGU, its ``reset_gate`` from ``module`` or else from whether ``hn`` has a bias."""
    hn = r.params.get("hn")
    has_b_hn = isinstance(hn, Mapping) and "bias" in hn
    reset_gate = has_b_hn if module is None else module.reset_gate
    if has_b_hn and not reset_gate:
        raise ValueError(
            "variables: hn/bias is there, but MGUCell(reset_gate=False) has no bias on hn "
            "(only reset_gate=True has one)"
        )
    arrays = {
        "w_ih": _linen_fused(r, "i", "kernel", ("f", "n")),
        "w_hh": _linen_fused(r, "h", "kernel", ("f", "n")),
        "b_ih": _linen_fused(r, "i", "bias", ("f", "n")),
    }
    if reset_gate:
        b_hh = _linen_get(r, "hn", "bias", (r.hidden,))
    else:
        b_hh = jnp.zeros_like(arrays["b_ih"][r.hidden :])
    _check_dtypes({**arrays, "b_hh": b_hh})
    dtype = arrays["w_ih"].dtype
    if module is not None:
        _check_flax_dtype(module, dtype)
    cell = mgu(r.features_in, r.hidden, reset_gate=reset_gate, **_dtype_kwargs(dtype))
    return cell, MGUParams(**arrays, b_hh=b_hh)


def _gru_flax_biases(params: GRUParams) -> tuple:
    """Input-side biases ``b_ir + b_hr, b_iz + b_hz, b_in`` and the hidden-side ``b_hn``."""
    b_ir, b_iz, b_in = _split(params.b_ih, 3)
    b_hr, b_hz, b_hn = _split(params.b_hh, 3)
    return b_ir + b_hr, b_iz + b_hz, b_in, b_hn


def _flax_kind(cell: Cell, params) -> str:
    """:func:`_cell_kind` for Flax, which also has ``"mgu"`` and ``"conv_lstm"`` cells."""
    cfg = _cell_fields(cell)
    factory = cfg.get("factory")
    if factory is conv_gru:
        raise ValueError(
            "conv_gru has no Flax cell equivalent (Flax's convolutional cell is ConvLSTMCell)"
        )
    if factory not in (mgu, conv_lstm):
        return _cell_kind(cell, params, "Flax")
    kind, expected = ("mgu", MGUParams) if factory is mgu else ("conv_lstm", ConvLSTMParams)
    if cfg["dtype"] != cfg["param_dtype"]:
        raise ValueError(
            f"{kind}(dtype={cfg['dtype'].name}) computes in {cfg['dtype'].name} with "
            f"{cfg['param_dtype'].name} parameters, summing in float32; a Flax {_LINEN_ONLY[kind]} "
            "casts to its dtype and sums there: not the same numbers (convert a cell whose dtype "
            "is its param_dtype)"
        )
    if not isinstance(params, expected):
        raise TypeError(f"params: expected {expected.__name__}, got {type(params).__name__}")
    return kind


def to_flax_linen(cell: Cell, params) -> dict:
    r"""The Linen variables of the Flax cell that computes what ``cell`` computes.

    The target is ``nn.LSTMCell``/``nn.OptimizedLSTMCell`` (same parameters), ``nn.GRUCell``,
    ``nn.SimpleCell``, ``nn.MGUCell`` or ``nn.ConvLSTMCell`` with ``features = hidden_size``
    (and the cell's ``reset_gate``, ``kernel_size``; ``param_dtype`` the parameters' dtype);
    for a :func:`jaxrnn.simple_rnn` with a non-tanh activation, build the ``SimpleCell`` with
    that ``activation_fn``. A GRU's hidden-side ``r, z`` biases are added to the input-side ones
    (Flax has only the latter); ``b_hn`` keeps its place. An MGU without reset gate has its
    ``b_hh`` added to the bias of ``in`` (Flax has no bias on ``hn`` then). A convolutional
    LSTM's kernels are reordered to Flax's ``i, g, f, o`` blocks; its bias ``b`` goes to ``ih``
    and ``hh`` gets a bias cancelling Flax's forget offset,

    .. math::

        b^{ih} = b, \qquad b^{hh} = (0, -1, 0, 0) \quad \text{(blocks } i, f, g, o\text{)},

    so that :func:`from_flax_linen` gives back ``params`` bit for bit.

    Args:
        cell: a :func:`jaxrnn.lstm` (no peepholes, coupling or projection),
            :func:`jaxrnn.gru` (``reset_after=True``), :func:`jaxrnn.simple_rnn`,
            :func:`jaxrnn.mgu` or :func:`jaxrnn.conv_lstm` cell (for the last two, with no
            computation ``dtype`` apart from ``param_dtype``).
        params: its parameters.

    Returns:
        ``{"params": {...}}``, ready for ``flax_cell.apply``.

    Raises:
        ValueError: if Flax has no such cell (``gru(reset_after=False)``, peepholes, coupled
            gates, projection, ``jordan_rnn``, ``conv_gru``, custom cells, an MGU or
            convolutional LSTM computing in another dtype than its parameters').
        TypeError: if ``params`` are not the cell's parameter type.

    >>> import jax, jaxrnn as jr
    >>> cell = jr.gru(3, 4, reset_after=True)
    >>> variables = jr.interop.to_flax_linen(cell, cell.init(jax.random.key(0)))
    >>> sorted(variables["params"]), variables["params"]["hn"]["bias"].shape
    (['hn', 'hr', 'hz', 'in', 'ir', 'iz'], (4,))

    A convolutional LSTM, for ``nn.ConvLSTMCell(features=2, kernel_size=(3, 3))``: the gate
    blocks ``i, f, g, o`` become Flax's ``i, g, f, o``, and ``hh``'s bias cancels the 1 Flax
    adds to the forget gate.

    >>> import jax.numpy as jnp
    >>> cell = jr.conv_lstm(1, 2, (3, 3))
    >>> b = jnp.arange(8.0)  # i: 0, 1; f: 2, 3; g: 4, 5; o: 6, 7
    >>> params = jr.ConvLSTMParams(jnp.ones((3, 3, 1, 8)), jnp.ones((3, 3, 2, 8)), b)
    >>> v = jr.interop.to_flax_linen(cell, params)["params"]
    >>> v["ih"]["kernel"].shape, v["ih"]["bias"].tolist()
    ((3, 3, 1, 8), [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0])
    >>> v["hh"]["bias"].tolist()
    [0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0]
    """
    kind = _flax_kind(cell, params)
    out: dict[str, dict] = {}
    if kind == "conv_lstm":
        out = _conv_lstm_to_linen(params)
    elif kind == "mgu":
        (w_if, w_in), (w_hf, w_hn) = _split(params.w_ih, 2), _split(params.w_hh, 2)
        b_if, b_in = _split(params.b_ih, 2)
        b_hh = jnp.asarray(params.b_hh)
        out = {
            "if": {"kernel": w_if, "bias": b_if},
            "hf": {"kernel": w_hf},
            "in": {"kernel": w_in, "bias": b_in},
            "hn": {"kernel": w_hn},
        }
        if dict(cell.config)["reset_gate"]:
            out["hn"]["bias"] = b_hh
        else:  # f does not multiply h W_hn + b_hh then: b_hh is one more input-side bias
            out["in"]["bias"] = jnp.where(b_hh == 0, b_in, b_in + b_hh)
    elif kind == "lstm":
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
    :func:`from_flax_linen`. The module is only read. ``flax.nnx`` has no ``MGUCell`` and no
    ``ConvLSTMCell``: those are Linen cells, converted by :func:`from_flax_linen` (from
    ``nnx.bridge.ToNNX(linen_cell)``, pass ``nnx.to_pure_dict(nnx.state(module, nnx.Param))``
    and ``module.to_nnx__module``).

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
            f"SimpleCell, got {type(module).__name__} ({_NNX_MISSING}; Linen cells, also "
            "inside nnx.bridge.ToNNX, convert with from_flax_linen)"
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
        ValueError: if NNX has no such cell: those :func:`to_flax_linen` refuses,
            :func:`jaxrnn.mgu` and :func:`jaxrnn.conv_lstm` (``flax.nnx`` has no ``MGUCell``
            and no ``ConvLSTMCell``: use :func:`to_flax_linen`), and a GRU with a nonzero
            ``b_hn`` (``params.b_hh[2H:]``): ``nnx.GRUCell`` has no bias inside
            ``r * (h @ W_hn)``, and ``r`` varies, so no other bias can absorb it.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 4)
    >>> params = cell.init(jax.random.key(0))
    >>> flax_cell = jr.interop.to_flax_nnx(cell, params, kind="optimized_lstm")
    >>> type(flax_cell).__name__, flax_cell.dense_h.bias[...].tolist()[4:8]
    ('OptimizedLSTMCell', [1.0, 1.0, 1.0, 1.0])
    """
    family = _flax_kind(cell, params)
    if family in _LINEN_ONLY:
        raise ValueError(
            f"{_NNX_MISSING}: convert jr.{family} with to_flax_linen and run it in "
            f"flax.linen.{_LINEN_ONLY[family]} (nnx.bridge.ToNNX wraps that as an NNX module)"
        )
    from flax import nnx

    if family == "lstm":
        kind = kind or "lstm"
        if kind not in ("lstm", "optimized_lstm"):
            raise ValueError(f"kind: expected 'lstm' or 'optimized_lstm', got {kind!r}")
    else:
        kind = family
    w_ih, w_hh = jnp.asarray(params.w_ih), jnp.asarray(params.w_hh)
    in_size, hidden = w_ih.shape[0], w_hh.shape[0]
    opts = dict(param_dtype=w_ih.dtype, rngs=nnx.Rngs(0))
    if kind in ("lstm", "optimized_lstm"):
        return _nnx_lstm(nnx, kind, w_ih, w_hh, params.b, opts)
    if kind == "gru":
        return _nnx_gru(nnx, params, w_ih, w_hh, opts)
    activation = dict(cell.config)["activation"]
    module = nnx.SimpleCell(in_size, hidden, activation_fn=activation, **opts)
    _nnx_put(module.dense_i.kernel, w_ih)
    _nnx_put(module.dense_i.bias, params.b)
    _nnx_put(module.dense_h.kernel, w_hh)
    return module


def _nnx_put(var, value) -> None:
    """Write ``value`` into the NNX variable ``var``, in its dtype."""
    var[...] = jnp.asarray(value, var[...].dtype)


def _nnx_lstm(nnx, kind: str, w_ih, w_hh, b, opts: dict):
    """An ``nnx.LSTMCell`` (one kernel per gate) or ``nnx.OptimizedLSTMCell`` (fused)."""
    in_size, hidden = w_ih.shape[0], w_hh.shape[0]
    if kind == "optimized_lstm":
        module = nnx.OptimizedLSTMCell(in_size, hidden, **opts)
        _nnx_put(module.dense_i.kernel, w_ih)
        _nnx_put(module.dense_h.kernel, w_hh)
        _nnx_put(module.dense_h.bias, b)
        return module
    module = nnx.LSTMCell(in_size, hidden, **opts)
    names = {"i": "ii", "f": "if_", "g": "ig", "o": "io"}
    parts = zip(_LSTM_GATES, _split(w_ih, 4), _split(w_hh, 4), _split(b, 4), strict=True)
    for g, w_i, w_h, b_g in parts:
        _nnx_put(getattr(module, names[g]).kernel, w_i)
        _nnx_put(getattr(module, "h" + g).kernel, w_h)
        _nnx_put(getattr(module, "h" + g).bias, b_g)
    return module


def _nnx_gru(nnx, params: GRUParams, w_ih, w_hh, opts: dict):
    """An ``nnx.GRUCell``, refused for a nonzero ``b_hn`` (it has no such bias)."""
    b_r, b_z, b_n, b_hn = _gru_flax_biases(params)
    if bool(jnp.any(b_hn != 0)):
        raise ValueError(
            "this GRU has a nonzero b_hn (params.b_hh[2H:], inside r * (h @ W_hn + b_hn)); "
            "flax.nnx.GRUCell has no such bias and r varies, so no other bias can hold it "
            "(flax.linen.GRUCell has it: use to_flax_linen)"
        )
    module = nnx.GRUCell(w_ih.shape[0], w_hh.shape[0], **opts)
    _nnx_put(module.dense_i.kernel, w_ih)
    _nnx_put(module.dense_i.bias, jnp.concatenate([b_r, b_z, b_n], axis=-1))
    _nnx_put(module.dense_h.kernel, w_hh)
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
    if _is_state(carry):
        return carry
    if isinstance(carry, (tuple, list)) and len(carry) == 2 and all(map(_is_state, carry)):
        c, h = carry
        if jnp.shape(c) != jnp.shape(h):
            raise ValueError(
                f"carry: expected an LSTM's (c, h) pair of arrays of one shape, got shapes "
                f"{jnp.shape(c)} and {jnp.shape(h)}"
            )
        return LSTMCarry(h=h, c=c)
    what = type(carry).__name__
    if hasattr(carry, "dtype"):
        what += f" of dtype {carry.dtype} and shape {jnp.shape(carry)}"
    raise TypeError(
        "carry: expected a Flax cell carry: a floating-point array (*batch, H) (a GRU's or a "
        f"simple cell's) or an LSTM's (c, h) pair of such arrays, got {what}"
    )


def _is_state(x) -> bool:
    """A floating-point array of at least one dimension (the features): a cell state."""
    return (
        isinstance(x, jax.Array | np.ndarray)
        and jnp.ndim(x) >= 1
        and jnp.issubdtype(x.dtype, jnp.floating)
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
