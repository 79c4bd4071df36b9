"""What every interop backend shares: recognising a jaxrnn cell and moving its fused gate blocks.

jaxrnn cells keep their gates fused along the last axis of input-major matrices (``w_ih`` of
shape ``(input_size, G * H)``, ``w_hh`` of shape ``(H, G * H)``), in the gate order
``_LSTM_GATES`` (LSTM ``i, f, g, o``) and ``_GRU_GATES`` (GRU ``r, z, n``) that PyTorch,
Flax and Equinox also use. A backend converting *to* another library asks :func:`_cell_kind`
which cell it holds (refusing what the target cannot compute) and cuts blocks with
:func:`_split`; one converting *from* another library concatenates its blocks and hands them to
:func:`_build`. Nothing here imports a foreign library.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells import (
    Cell,
    GRUParams,
    LSTMParams,
    SimpleRNNParams,
    gru,
    jordan_rnn,
    lstm,
    simple_rnn,
)

# The functions other libraries' cells may name, recognised by identity.
_TANH = (jnp.tanh, jax.lax.tanh)
_RELU = (jax.nn.relu,)
_SIGMOID = (jax.nn.sigmoid,)

# Gate blocks, in their order along the fused axis.
_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")

# jaxrnn cell factory behind each cell kind (for messages).
_KIND_FACTORY = {"lstm": "lstm", "gru": "gru", "simple": "simple_rnn"}


def _is(fn, candidates) -> bool:
    """Whether ``fn`` is one of ``candidates`` (identity, not equality)."""
    return any(fn is c for c in candidates)


def _name(fn) -> str:
    """A function's name for an error message."""
    return getattr(fn, "__name__", None) or repr(fn)


def _check_shape(where: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a NumPy array, or a ``ValueError`` naming ``where`` if its shape differs."""
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {value.shape}")
    return value


def _check_dtypes(arrays: dict) -> None:
    """A ``TypeError`` if the named arrays do not all have the first one's dtype."""
    (first, value), *rest = arrays.items()
    for name, other in rest:
        if other.dtype != value.dtype:
            raise TypeError(
                f"{name}: expected the dtype of {first} ({value.dtype}), got {other.dtype}"
            )


def _cell_fields(cell: Cell) -> dict:
    """The configuration of a jaxrnn cell, or a ``TypeError`` for anything else."""
    if not isinstance(cell, Cell):
        raise TypeError(f"expected a jaxrnn Cell, got {type(cell).__name__}")
    return dict(cell.config)


def _cell_kind(
    cell: Cell, params, target: str, kinds: tuple[str, ...] = ("lstm", "gru", "simple")
) -> str:
    """``"lstm"``, ``"gru"`` or ``"simple"`` for a jaxrnn cell ``target`` can represent, else raise.

    The target library's cells are assumed to be the plain ones: an LSTM without peepholes,
    coupled gates or projection, a GRU in the ``reset_after=True`` form, a simple cell with any
    activation (the caller checks whether the target can hold it).

    Args:
        cell: the jaxrnn cell.
        params: its parameters (their type must match the cell's).
        target: the library's name in error messages (``"Flax"``).
        kinds: the cell kinds the target has.

    Returns:
        The cell's kind.

    Raises:
        ValueError: for a cell the target has no equivalent of.
        TypeError: if ``cell`` is not a cell or ``params`` not of its parameter type.
    """
    cfg = _cell_fields(cell)
    factory = cfg.get("factory")
    if factory is lstm and "lstm" in kinds:
        for opt in ("peephole", "coupled", "proj_size"):
            if cfg[opt]:
                raise ValueError(f"lstm({opt}={cfg[opt]!r}) has no {target} LSTMCell equivalent")
        expected = LSTMParams
    elif factory is gru and "gru" in kinds:
        if not cfg["reset_after"]:
            raise ValueError(
                "gru(reset_after=False) applies the reset gate before the recurrent matmul; "
                f"{target}'s GRUCell computes the reset_after=True form, a different function"
            )
        expected = GRUParams
    elif factory is simple_rnn and "simple" in kinds:
        expected = SimpleRNNParams
    elif factory in (lstm, gru, simple_rnn):
        raise ValueError(f"{_name(factory)} has no {target} cell equivalent")
    elif factory is jordan_rnn:
        raise ValueError(
            f"jordan_rnn (output-to-hidden recurrence) has no {target} cell equivalent"
        )
    else:
        names = [_KIND_FACTORY[k] for k in kinds]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        raise ValueError(
            f"custom cell (factory {_name(factory) if factory else 'unknown'}); only {listed} "
            f"cells map to {target} cells"
        )
    if not isinstance(params, expected):
        raise TypeError(f"params: expected {expected.__name__}, got {type(params).__name__}")
    return {LSTMParams: "lstm", GRUParams: "gru", SimpleRNNParams: "simple"}[expected]


def _split(x, n: int) -> list:
    """The ``n`` gate blocks of a fused array, cut along its last axis."""
    return jnp.split(jnp.asarray(x), n, axis=-1)


def _dtype_kwargs(dtype) -> dict:
    """The ``param_dtype=`` argument a jaxrnn cell factory needs (none for its default float32);
    the cell then computes in its parameters' dtype, as the converted module does."""
    return {} if jnp.dtype(dtype) == jnp.float32 else {"param_dtype": dtype}


def _build(kind: str, w_ih, w_hh, biases: dict, activation=None) -> tuple[Cell, Any]:
    """A jaxrnn cell and params from fused, input-major ``w_ih``/``w_hh`` and biases.

    Args:
        kind: ``"lstm"`` (or Flax's ``"optimized_lstm"``, the same cell), ``"gru"`` (built with
            ``reset_after=True``) or ``"simple"``.
        w_ih: ``(input_size, G * H)``, gate blocks in jaxrnn's order.
        w_hh: ``(H, G * H)``.
        biases: ``{"b": ...}`` for an LSTM or simple cell, ``{"b_ih": ..., "b_hh": ...}`` for
            a GRU.
        activation: a simple cell's activation (``None``: tanh).

    Returns:
        ``(cell, params)``, the cell in ``w_ih``'s dtype.

    Raises:
        ValueError: if the shapes are not those of one cell (checked here so that a
            conversion fails at once, not later inside :func:`jaxrnn.scan`).
        TypeError: if the arrays disagree on their dtype.
    """
    w_ih, w_hh = jnp.asarray(w_ih), jnp.asarray(w_hh)
    gates = {"lstm": 4, "optimized_lstm": 4, "gru": 3}.get(kind, 1)
    if w_hh.ndim != 2 or w_hh.shape[1] != gates * w_hh.shape[0]:
        raise ValueError(
            f"w_hh: expected the fused recurrent kernel (H, {gates} * H) of a {kind} cell, got "
            f"shape {w_hh.shape}"
        )
    hidden = w_hh.shape[0]
    if w_ih.ndim != 2 or w_ih.shape[1] != gates * hidden:
        raise ValueError(
            f"w_ih: expected the fused input kernel (input_size, {gates * hidden}) of a {kind} "
            f"cell with H = {hidden}, got shape {w_ih.shape}"
        )
    for name, b in biases.items():
        if jnp.shape(b) != (gates * hidden,):
            raise ValueError(f"{name}: expected shape ({gates * hidden},), got {jnp.shape(b)}")
        if jnp.result_type(b) != w_ih.dtype or w_hh.dtype != w_ih.dtype:
            raise TypeError(
                f"{name}: expected the dtype of w_ih ({w_ih.dtype}), got {jnp.result_type(b)} "
                f"(w_hh: {w_hh.dtype})"
            )
    input_size = w_ih.shape[0]
    kw = _dtype_kwargs(w_ih.dtype)
    if kind in ("lstm", "optimized_lstm"):
        return lstm(input_size, hidden, **kw), LSTMParams(w_ih, w_hh, biases["b"])
    if kind == "gru":
        cell = gru(input_size, hidden, reset_after=True, **kw)
        return cell, GRUParams(w_ih, w_hh, biases["b_ih"], biases["b_hh"])
    act = {} if activation is None or _is(activation, _TANH) else {"activation": activation}
    return simple_rnn(input_size, hidden, **act, **kw), SimpleRNNParams(w_ih, w_hh, biases["b"])


def _fold_gru_biases(params: GRUParams) -> tuple:
    """A ``reset_after=True`` GRU's biases as ``(b_r, b_z, b_n, b_hn)``, hidden-side ``r, z``
    biases folded into the input side (``b_r = b_ir + b_hr``, ``b_z = b_iz + b_hz``).

    For targets with one bias per gate outside the reset product plus ``b_hn`` inside it. Where
    a hidden-side bias is zero the input-side one is returned bit for bit (no ``+ 0.0``, which
    would turn ``-0.0`` into ``+0.0``), so folding what :func:`_build` built from such a target
    gives back its arrays exactly.
    """
    b_ir, b_iz, b_in = _split(params.b_ih, 3)
    b_hr, b_hz, b_hn = _split(params.b_hh, 3)
    b_r = jnp.where(b_hr == 0, b_ir, b_ir + b_hr)
    b_z = jnp.where(b_hz == 0, b_iz, b_iz + b_hz)
    return b_r, b_z, b_in, b_hn
