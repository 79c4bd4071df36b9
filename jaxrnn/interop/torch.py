"""PyTorch interop: ``torch.nn.RNN``/``GRU``/``LSTM`` modules and :func:`jaxrnn.rnn` layers.

``torch`` is imported only inside :func:`to_torch` and :func:`from_torch`; everything else
works on NumPy/JAX arrays (and accepts torch tensors without importing torch), so
:func:`torch_state_dict`, :func:`torch_state` and :func:`carry_from_torch` run without it.

:func:`from_torch` turns a ``torch.nn.RNN`` (tanh or relu), ``torch.nn.GRU`` or
``torch.nn.LSTM`` into a :func:`jaxrnn.rnn` layer and its parameters; :func:`to_torch` goes
back. The correspondence:

==========================  =================================================================
torch                       jaxrnn
==========================  =================================================================
``RNN(nonlinearity=...)``   ``jr.simple_rnn`` (``activation=jnp.tanh`` or ``jax.nn.relu``)
``GRU``                     ``jr.gru(reset_after=True)``
``LSTM(proj_size=P)``       ``jr.lstm(proj_size=P or None)``
``num_layers``,             ``jr.rnn(num_layers=..., bidirectional=...)``
``bidirectional``
``batch_first``             ``time_major=not batch_first``
``dropout``                 ``jr.rnn(dropout=...)`` (active only when ``apply`` gets a ``key``)
``bias=False``              biases held at zero
``weight_ih_l{k}``          ``w_ih = weight_ih.T`` (torch is output-major, jaxrnn input-major)
``weight_hh_l{k}``          ``w_hh = weight_hh.T``
``weight_hr_l{k}``          ``w_proj = weight_hr.T``
``bias_ih + bias_hh``       ``b`` (RNN, LSTM: one bias); GRU keeps ``b_ih`` and ``b_hh``
``..._reverse``             ``params[k].backward``
==========================  =================================================================

Gate blocks are in the same order on both sides (GRU ``r, z, n``; LSTM ``i, f, g, o``). Where
jaxrnn keeps one bias, :func:`to_torch` writes it to ``bias_ih`` and zeros to ``bias_hh``, so
``torch -> jaxrnn -> torch`` returns the same function with ``bias_ih`` replaced by the sum of
the two biases (every other tensor, and the whole GRU, come back bit for bit).

States: torch stacks every layer and direction on a leading axis, ``h_n`` of shape
``(num_layers * num_directions, batch, H_out)``, row ``2 * k + d`` for layer ``k`` and direction
``d``; a jaxrnn :func:`~jaxrnn.rnn` carry is a tuple with one entry per layer (a
:class:`~jaxrnn.Bidirectional` when bidirectional, an :class:`~jaxrnn.LSTMCarry` ``(h, c)`` for
an LSTM). :func:`torch_state` turns a carry into ``h_n`` (or ``(h_n, c_n)``) and
:func:`carry_from_torch` turns ``h_0`` (and ``c_0``) into a carry. Variable lengths: jaxrnn's
``lengths=`` computes what torch computes on
``pack_padded_sequence(xs, lengths, enforce_sorted=False)`` followed by
``pad_packed_sequence(..., total_length=T)`` (zeros past each length; the backward direction
starts at each sequence's last element).

What torch cannot compute (a GRU with ``reset_after=False``, peepholes, coupled gates,
activations other than tanh and relu, a Jordan cell, a reverse-only layer, nonzero biases for
``bias=False``) is refused with a ``ValueError`` naming what blocks it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells import (
    Cell,
    GRUParams,
    LSTMCarry,
    LSTMParams,
    SimpleRNNParams,
    gru,
    jordan_rnn,
    lstm,
    simple_rnn,
)
from jaxrnn.interop._common import _RELU, _TANH, _check_shape, _is, _name
from jaxrnn.layers import Bidirectional, Layer, bidirectional, layer, rnn, stack

__all__ = ["carry_from_torch", "from_torch", "to_torch", "torch_state", "torch_state_dict"]


class _TorchSpec(NamedTuple):
    """What a torch ``RNNBase`` module is, read from a jaxrnn layer or a torch module."""

    mode: str  # torch's RNNBase.mode: "RNN_TANH", "RNN_RELU", "GRU" or "LSTM"
    input_size: int
    hidden_size: int
    proj_size: int  # 0: no projection
    num_layers: int
    bidirectional: bool
    batch_first: bool
    dropout: float
    dtype: Any
    wrapper: str  # how params/carry are nested: "stack" (tuple per layer) or "single"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:  # size of h
        return self.proj_size or self.hidden_size

    @property
    def gates(self) -> int:
        return {"GRU": 3, "LSTM": 4}.get(self.mode, 1)


def _single_layout(lay, where: str) -> tuple[list[Cell], bool]:
    """Cells (one per direction) and ``time_major`` of a non-stacked layer or a bare cell."""
    if isinstance(lay, Cell):
        return [lay], False
    if not isinstance(lay, Layer):
        raise TypeError(f"{where}: expected a jaxrnn Layer or Cell, got {type(lay).__name__}")
    cfg = dict(lay.config)
    factory = cfg.get("factory")
    if factory is layer:
        if cfg["reverse"]:
            raise ValueError(
                f"{where}: a reverse-only layer (jr.layer(..., reverse=True)) has no torch "
                "equivalent; torch runs a backward direction only next to a forward one "
                "(bidirectional=True)"
            )
        return [cfg["cell"]], cfg["time_major"]
    if factory is bidirectional:
        return [cfg["forward"], cfg["backward"]], cfg["time_major"]
    raise ValueError(
        f"{where}: cannot convert a layer built by {_name(factory) if factory else 'hand'} "
        "(expected jr.rnn, jr.stack, jr.layer or jr.bidirectional)"
    )


def _cell_mode(cell: Cell, where: str) -> str:
    cfg = dict(cell.config)
    factory = cfg.get("factory")
    if factory is simple_rnn:
        act = cfg["activation"]
        if _is(act, _TANH):
            return "RNN_TANH"
        if _is(act, _RELU):
            return "RNN_RELU"
        raise ValueError(
            f"{where}: simple_rnn with activation {_name(act)}: torch.nn.RNN supports only "
            "tanh (jnp.tanh) and relu (jax.nn.relu)"
        )
    if factory is gru:
        if not cfg["reset_after"]:
            raise ValueError(
                f"{where}: gru(reset_after=False) applies the reset gate before the recurrent "
                "matmul; torch.nn.GRU computes the reset_after=True form, which is a different "
                "function"
            )
        return "GRU"
    if factory is lstm:
        for opt in ("peephole", "coupled"):
            if cfg[opt]:
                raise ValueError(f"{where}: lstm({opt}=True) has no torch.nn.LSTM equivalent")
        return "LSTM"
    if factory is jordan_rnn:
        raise ValueError(
            f"{where}: jordan_rnn (output-to-hidden recurrence) has no torch.nn equivalent"
        )
    raise ValueError(
        f"{where}: custom cell (factory {_name(factory) if factory else 'unknown'}); only "
        "simple_rnn, gru and lstm cells map to torch modules"
    )


def _torch_rows(obj) -> tuple[list[list[Cell]], set[bool], float, str]:
    """``(cells per layer and direction, time_major values, dropout, wrapper)`` of a layer."""
    if isinstance(obj, Layer) and dict(obj.config).get("factory") is rnn:
        cfg = dict(obj.config)
        kwargs = dict(cfg["cell_kwargs"])
        rows, size = [], cfg["input_size"]
        for _ in range(cfg["num_layers"]):
            row = [cfg["cell_fn"](size, cfg["hidden_size"], **kwargs)]
            row *= 2 if cfg["bidirectional"] else 1
            rows.append(row)
            size = len(row) * row[0].output_size
        return rows, {cfg["time_major"]}, cfg["dropout"], "stack"
    if isinstance(obj, Layer) and dict(obj.config).get("factory") is stack:
        cfg = dict(obj.config)
        rows, time_majors = [], set()
        for k, lay in enumerate(cfg["layers"]):
            cells, tm = _single_layout(lay, f"layer {k} of the stack")
            rows.append(cells)
            time_majors.add(tm)
        return rows, time_majors, cfg["dropout"], "stack"
    cells, tm = _single_layout(obj, "layer")
    return [cells], {tm}, 0.0, "single"


def _check_rows_agree(rows: list[list[Cell]], mode: str) -> None:
    """Every cell has layer 0's kind and options and the input size torch feeds it."""
    first = rows[0][0]
    ref = dict(first.config)
    in_size = first.input_size
    for k, row in enumerate(rows):
        for d, cell in enumerate(row):
            where = f"layer {k}" + (" (backward)" if d else "")
            if _cell_mode(cell, where) != mode:
                raise ValueError(f"{where}: cell kind differs from layer 0's ({mode})")
            cfg = dict(cell.config)
            for opt in ("hidden_size", "proj_size", "param_dtype", "dtype"):
                if cfg.get(opt) != ref.get(opt):
                    raise ValueError(
                        f"{where}: {opt}={cfg.get(opt)!r} differs from layer 0's "
                        f"{ref.get(opt)!r}; torch uses one value for every layer"
                    )
            if cell.input_size != in_size:
                raise ValueError(
                    f"{where}: input_size {cell.input_size}, but torch feeds it {in_size} "
                    "features (the input size, or the previous layer's output size)"
                )
        in_size = len(row) * first.output_size


def _torch_spec(obj) -> _TorchSpec:
    """Read the torch configuration a jaxrnn layer corresponds to, or raise why there is none."""
    rows, time_majors, dropout, wrapper = _torch_rows(obj)
    if len(time_majors) != 1:
        raise ValueError("the layers of the stack disagree on time_major; torch has one layout")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(
            "the stack mixes unidirectional and bidirectional layers; a torch module is "
            "bidirectional in every layer or in none"
        )
    first = rows[0][0]
    ref = dict(first.config)
    mode = _cell_mode(first, "layer 0")
    _check_rows_agree(rows, mode)
    return _TorchSpec(
        mode=mode,
        input_size=first.input_size,
        hidden_size=ref["hidden_size"],
        proj_size=ref.get("proj_size") or 0,
        num_layers=len(rows),
        bidirectional=len(rows[0]) == 2,
        batch_first=not time_majors.pop(),
        dropout=float(dropout),
        dtype=ref.get("param_dtype", jnp.float32),
        wrapper=wrapper,
    )


def _grid(spec: _TorchSpec, tree, what: str) -> list[list[Any]]:
    """Split params or carry of a layer into ``[layer][direction]`` entries."""
    if spec.wrapper == "stack":
        if type(tree) not in (tuple, list) or len(tree) != spec.num_layers:
            got = type(tree).__name__
            if type(tree) in (tuple, list):
                got += f" of length {len(tree)}"
            raise TypeError(
                f"{what}: expected a tuple with one entry per layer ({spec.num_layers}), got {got}"
            )
        rows = list(tree)
    else:
        rows = [tree]
    grid = []
    for k, row in enumerate(rows):
        if spec.bidirectional:
            if not isinstance(row, Bidirectional):
                where = f"{what}[{k}]" if spec.wrapper == "stack" else what
                raise TypeError(f"{where}: expected a jr.Bidirectional, got {type(row).__name__}")
            grid.append([row.forward, row.backward])
        else:
            grid.append([row])
    return grid


def _ungrid(spec: _TorchSpec, grid: list[list[Any]]):
    rows = [Bidirectional(*r) if spec.bidirectional else r[0] for r in grid]
    return tuple(rows) if spec.wrapper == "stack" else rows[0]


def _suffix(k: int, d: int) -> str:
    return f"_l{k}" + ("_reverse" if d else "")


def torch_state_dict(lay, params, *, bias: bool = True) -> dict[str, np.ndarray]:
    """The ``state_dict`` of the torch module that computes what ``lay`` computes.

    Torch-free: values are NumPy arrays under torch's parameter names (``weight_ih_l0``,
    ``bias_hh_l1_reverse``, ...). Load them into an existing module with
    ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``, or let
    :func:`to_torch` build the module.

    Args:
        lay: a :func:`jaxrnn.rnn` layer, a :func:`jaxrnn.stack` of :func:`jaxrnn.layer` or
            :func:`jaxrnn.bidirectional` layers, one such layer, or a bare cell.
        params: its parameters.
        bias: whether the torch module has biases. With ``bias=False`` every bias in
            ``params`` must be zero.

    Returns:
        ``{name: array}`` in torch's layout (output-major weights). Where a jaxrnn cell keeps
        one bias ``b`` (simple RNN, LSTM), ``bias_ih = b`` and ``bias_hh = 0``.

    Raises:
        ValueError: if torch cannot represent the layer (see :func:`to_torch`), ``bias=False``
            with a nonzero bias, or a parameter of the wrong shape.
        TypeError: if ``params`` is not nested as the layer's params are.

    >>> import jax, jaxrnn as jr
    >>> net = jr.rnn(jr.gru, 3, 4, num_layers=2, bidirectional=True, reset_after=True)
    >>> sd = jr.interop.torch_state_dict(net, net.init(jax.random.key(0)))
    >>> sd["weight_ih_l1_reverse"].shape, sd["bias_hh_l0"].shape, len(sd)
    ((12, 8), (12,), 16)
    """
    spec = _torch_spec(lay)
    grid = _grid(spec, params, "params")
    G, H, P, R = spec.gates, spec.hidden_size, spec.proj_size, spec.out_size
    out: dict[str, np.ndarray] = {}
    for k, row in enumerate(grid):
        in_size = spec.input_size if k == 0 else spec.num_directions * R
        for d, p in enumerate(row):
            sfx = _suffix(k, d)
            where = f"params[{k}]" if spec.wrapper == "stack" else "params"
            where += ".backward" if d else (".forward" if spec.bidirectional else "")
            expected = {"GRU": GRUParams, "LSTM": LSTMParams}.get(spec.mode, SimpleRNNParams)
            if not isinstance(p, expected):
                raise TypeError(f"{where}: expected {expected.__name__}, got {type(p).__name__}")
            out["weight_ih" + sfx] = _check_shape(f"{where}.w_ih", p.w_ih, (in_size, G * H)).T
            out["weight_hh" + sfx] = _check_shape(f"{where}.w_hh", p.w_hh, (R, G * H)).T
            if spec.mode == "GRU":
                biases = {
                    "bias_ih": _check_shape(f"{where}.b_ih", p.b_ih, (G * H,)),
                    "bias_hh": _check_shape(f"{where}.b_hh", p.b_hh, (G * H,)),
                }
                names = {"bias_ih": "b_ih", "bias_hh": "b_hh"}
            else:
                b = _check_shape(f"{where}.b", p.b, (G * H,))
                biases = {"bias_ih": b, "bias_hh": np.zeros_like(b)}
                names = {"bias_ih": "b", "bias_hh": "b"}
            if bias:
                out.update({name + sfx: v for name, v in biases.items()})
            else:
                for name, v in biases.items():
                    if np.any(v != 0):
                        raise ValueError(
                            f"bias=False, but {where}.{names[name]} is nonzero; a torch module "
                            "without biases cannot hold it"
                        )
            if P:
                out["weight_hr" + sfx] = _check_shape(f"{where}.w_proj", p.w_proj, (H, P)).T
    return out


def _import_torch():
    """``torch``, or an ``ImportError`` that says how to install it."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f'jaxrnn.interop\'s torch converters need PyTorch: pip install "jaxrnn[torch]" ({err})'
        ) from err
    return torch


def to_torch(lay, params, *, bias: bool = True):
    """A ``torch.nn.RNN``/``GRU``/``LSTM`` computing the same function as ``lay`` with ``params``.

    The module is built from ``lay.config`` (cell kind, sizes, ``num_layers``,
    ``bidirectional``, ``dropout``, ``batch_first = not time_major``, ``proj_size``) in the
    parameters' dtype, and holds the same weights (see :func:`torch_state_dict`). It is in
    torch's default training mode, where its ``dropout`` (if any) is active: call ``.eval()``
    for the deterministic function jaxrnn computes without a ``key``. A bare cell becomes a
    one-layer module with ``batch_first=True`` (the layout of :func:`jaxrnn.scan`). A cell whose
    precision policy runs its matmuls in another ``dtype`` than it stores its parameters in
    (``jr.lstm(I, H, dtype=jnp.bfloat16)``) converts to a module in ``param_dtype``; run it
    under ``torch.autocast(..., dtype=torch.bfloat16)`` for the same mixed precision.

    Args:
        lay: a :func:`jaxrnn.rnn` layer, a :func:`jaxrnn.stack` of :func:`jaxrnn.layer` or
            :func:`jaxrnn.bidirectional` layers, one such layer, or a cell.
        params: its parameters.
        bias: build the module with biases (``bias=False`` requires every bias to be zero).

    Returns:
        The torch module.

    Raises:
        ValueError: for what torch cannot represent: ``gru(reset_after=False)``, peephole or
            coupled LSTMs, activations other than tanh and relu, ``jordan_rnn``, custom cells,
            reverse-only layers, stacks mixing directions or options, nonzero biases with
            ``bias=False``, wrongly shaped parameters.
        ImportError: without PyTorch installed (``pip install "jaxrnn[torch]"``).
    """
    torch = _import_torch()

    spec = _torch_spec(lay)
    weights = torch_state_dict(lay, params, bias=bias)
    dtype = {
        "float32": torch.float32,
        "float64": torch.float64,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[jnp.dtype(spec.dtype).name]
    kwargs = dict(
        input_size=spec.input_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        bias=bias,
        batch_first=spec.batch_first,
        dropout=spec.dropout,
        bidirectional=spec.bidirectional,
        dtype=dtype,
    )
    if spec.mode.startswith("RNN"):
        module = torch.nn.RNN(nonlinearity=spec.mode[4:].lower(), **kwargs)
    elif spec.mode == "GRU":
        module = torch.nn.GRU(**kwargs)
    else:
        module = torch.nn.LSTM(proj_size=spec.proj_size, **kwargs)
    names = {name for name, _ in module.named_parameters()}
    if names != set(weights):
        raise AssertionError(f"torch parameters {sorted(names)} != {sorted(weights)}")
    with torch.no_grad():
        for name, p in module.named_parameters():
            value = np.asarray(weights[name])
            # float32 holds float16/bfloat16 exactly; copy_ casts to the module's dtype.
            value = value.astype(np.float64 if value.dtype == np.float64 else np.float32)
            p.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def _torch_to_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    if not t.dtype.is_floating_point:
        raise TypeError(f"expected a floating-point tensor, got {t.dtype}")
    if str(t.dtype) in ("torch.float16", "torch.bfloat16"):
        t = t.float()  # NumPy has no bfloat16; float32 holds both exactly
    return t.numpy()


def from_torch(module):
    """Convert a ``torch.nn.RNN``, ``torch.nn.GRU`` or ``torch.nn.LSTM`` to ``(layer, params)``.

    ``layer`` is ``jr.rnn(cell_fn, input_size, hidden_size, num_layers=..., bidirectional=...,
    dropout=..., time_major=not batch_first, ...)`` with ``jr.simple_rnn`` (tanh or relu),
    ``jr.gru(reset_after=True)`` or ``jr.lstm(proj_size=...)``, and
    ``layer.apply(params, xs, carry, lengths=lengths)`` returns ``(carry, ys)`` with ``ys``
    equal to the module's ``output`` in the module's layout (with ``lengths``: the output of
    the packed, then zero-padded sequence), and ``torch_state(carry)`` equal to its ``h_n`` (or
    ``(h_n, c_n)``). Pass torch-style initial states as ``carry_from_torch(layer, h_0, c_0)``.

    Biases: a module with ``bias=False`` gets zero biases; where a jaxrnn cell has one bias
    (simple RNN, LSTM) it is ``bias_ih + bias_hh``. Parameters keep the module's dtype (a
    float64 module needs ``jax_enable_x64``). The module's ``dropout`` becomes the layer's,
    applied only when ``apply`` gets a ``key`` (as torch applies it only in training mode).

    Args:
        module: the torch module (any device; it is not modified).

    Returns:
        ``(layer, params)``; ``params[k]`` is layer ``k``'s cell params, or a
        :class:`~jaxrnn.Bidirectional` of them (``backward`` holds the ``_reverse`` weights).

    Raises:
        TypeError: if ``module`` is not one of these three torch classes (subclasses count
            when they keep torch's ``forward``).
        ValueError: if ``module`` is a subclass overriding ``forward`` (its function may
            differ from torch's, so the conversion could not reproduce it), a parameter has
            another shape than the module's configuration implies, or the module is float64
            while ``jax_enable_x64`` is off (the parameters would silently become float32).
        ImportError: without PyTorch installed (``pip install "jaxrnn[torch]"``).
    """
    torch = _import_torch()
    _check_torch_class(torch, module)
    dtype = _jax_dtype(torch, module)
    net = _layer_like(module, dtype)
    grid = [
        [_cell_params_from_torch(torch, module, dtype, k, d) for d in range(_directions(module))]
        for k in range(module.num_layers)
    ]
    spec = _torch_spec(net)
    return net, _ungrid(spec, grid)


def _check_torch_class(torch, module) -> None:
    """``module`` is a torch RNN, GRU or LSTM that keeps torch's own ``forward``."""
    bases = (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM)
    if not isinstance(module, bases):
        raise TypeError(f"module: expected torch.nn.RNN, GRU or LSTM, got {type(module).__name__}")
    base = next(b for b in bases if isinstance(module, b))
    cls = type(module)
    if cls.forward is not base.forward:
        raise ValueError(
            f"module: {cls.__module__}.{cls.__qualname__} overrides forward() of "
            f"torch.nn.{base.__name__}; jaxrnn can only reproduce torch's own forward, so it "
            "refuses to convert a module whose function may differ"
        )


def _jax_dtype(torch, module):
    """The JAX dtype of ``module``'s parameters (float64 only with ``jax_enable_x64``)."""
    torch_dtype = module.weight_ih_l0.dtype
    dtypes = {
        torch.float32: jnp.float32,
        torch.float64: jnp.float64,
        torch.float16: jnp.float16,
        torch.bfloat16: jnp.bfloat16,
    }
    if torch_dtype not in dtypes:
        raise TypeError(f"module: expected floating-point parameters, got {torch_dtype}")
    dtype = dtypes[torch_dtype]
    if dtype is jnp.float64 and jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
        raise ValueError(
            "module: its parameters are float64, but jax_enable_x64 is off, so JAX would "
            "silently compute in float32; enable it (jax.config.update('jax_enable_x64', True)) "
            "or convert a float32 copy of the module (module.float())"
        )
    return dtype


def _layer_like(module, dtype) -> Layer:
    """The :func:`jaxrnn.rnn` layer with ``module``'s configuration, parameters in ``dtype``."""
    mode = module.mode
    if mode == "RNN_TANH":
        cell_fn, kwargs = simple_rnn, {}
    elif mode == "RNN_RELU":
        cell_fn, kwargs = simple_rnn, {"activation": jax.nn.relu}
    elif mode == "GRU":
        cell_fn, kwargs = gru, {"reset_after": True}
    elif mode == "LSTM":
        cell_fn, kwargs = lstm, {"proj_size": module.proj_size or None}
    else:  # pragma: no cover - torch has no other RNNBase modes
        raise TypeError(f"from_torch: unsupported torch RNN mode {mode!r}")
    if dtype is not jnp.float32:
        kwargs["param_dtype"] = dtype
    return rnn(
        cell_fn,
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
        time_major=not module.batch_first,
        **kwargs,
    )


def _directions(module) -> int:
    """1, or 2 for a bidirectional torch module."""
    return 2 if module.bidirectional else 1


def _torch_weight(torch, module, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """``module.<name>`` as NumPy, checked: the dtype of ``weight_ih_l0``, then ``shape``."""
    torch_dtype = module.weight_ih_l0.dtype
    value = _torch_to_numpy(getattr(module, name))
    if value.dtype != np.dtype(jnp.dtype(dtype)) and not (
        value.dtype == np.float32 and torch_dtype in (torch.float16, torch.bfloat16)
    ):
        raise TypeError(
            f"module.{name}: expected dtype {torch_dtype} (that of weight_ih_l0), got "
            f"{getattr(module, name).dtype}"
        )
    return _check_shape(f"module.{name}", value, shape)


def _in_dtype(x, dtype) -> jax.Array:
    """``x`` as a JAX array of ``dtype``."""
    return jnp.asarray(np.asarray(x).astype(jnp.dtype(dtype)))


def _cell_params_from_torch(torch, module, dtype, k: int, d: int):
    """The jaxrnn cell params of layer ``k``, direction ``d`` (1: ``_reverse``) of ``module``."""
    mode = module.mode
    G = {"GRU": 3, "LSTM": 4}.get(mode, 1)
    H = module.hidden_size
    R = module.proj_size or H  # size of h
    in_size = module.input_size if k == 0 else _directions(module) * R
    sfx = _suffix(k, d)

    def get(name, shape):
        return _torch_weight(torch, module, name + sfx, shape, dtype)

    w_ih = get("weight_ih", (G * H, in_size)).T
    w_hh = get("weight_hh", (G * H, R)).T
    if module.bias:
        b_ih, b_hh = get("bias_ih", (G * H,)), get("bias_hh", (G * H,))
    else:
        b_ih = b_hh = np.zeros((G * H,), w_ih.dtype)
    if mode == "GRU":
        return GRUParams(*(_in_dtype(x, dtype) for x in (w_ih, w_hh, b_ih, b_hh)))
    if mode == "LSTM":
        w_proj = _in_dtype(get("weight_hr", (R, H)).T, dtype) if module.proj_size else None
        w_ih, w_hh, b = (_in_dtype(x, dtype) for x in (w_ih, w_hh, b_ih + b_hh))
        return LSTMParams(w_ih, w_hh, b, None, w_proj)
    return SimpleRNNParams(*(_in_dtype(x, dtype) for x in (w_ih, w_hh, b_ih + b_hh)))


def _carry_rows(carry) -> list:
    """Per layer and direction, in torch's order, the cell carries of a layer's carry."""
    if isinstance(carry, LSTMCarry) or not isinstance(carry, (tuple, list)):
        return [carry]
    if isinstance(carry, Bidirectional):
        return _carry_rows(carry.forward) + _carry_rows(carry.backward)
    return [c for entry in carry for c in _carry_rows(entry)]


def torch_state(carry):
    """Torch's ``h_n`` (or ``(h_n, c_n)`` for an LSTM) from the carry of a jaxrnn layer.

    Rows are stacked on a new leading axis in torch's order (layer 0 forward, layer 0
    backward, layer 1 forward, ...), giving ``(num_layers * num_directions, *batch, H_out)``;
    for an LSTM, ``h_n`` has the projected size and ``c_n`` the hidden size.

    Args:
        carry: the carry returned by the ``apply`` of a :func:`jaxrnn.rnn` layer (also a stack,
            a bidirectional or plain layer, or a single cell carry).

    Returns:
        ``h_n`` as a JAX array, or ``(h_n, c_n)`` when the cells are LSTMs.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> net = jr.rnn(jr.lstm, 3, 4, num_layers=2, bidirectional=True, proj_size=2)
    >>> carry, ys = net.apply(net.init(jax.random.key(0)), jnp.ones((5, 7, 3)))
    >>> h_n, c_n = jr.interop.torch_state(carry)
    >>> h_n.shape, c_n.shape
    ((4, 5, 2), (4, 5, 4))
    >>> bool((h_n[3] == carry[1].backward.h).all())
    True
    """
    rows = _carry_rows(carry)
    lstm_rows = [isinstance(r, LSTMCarry) for r in rows]
    if all(lstm_rows):
        return jnp.stack([r.h for r in rows]), jnp.stack([r.c for r in rows])
    if any(lstm_rows):
        raise TypeError("torch_state: the carry mixes LSTM and non-LSTM cells")
    return jnp.stack([jnp.asarray(r) for r in rows])


def _as_jax(x, what: str):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor; torch itself not needed
        x = _torch_to_numpy(x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{what}: expected a floating-point array, got dtype {x.dtype}")
    return x


def carry_from_torch(lay, h_0, c_0=None):
    """The carry of ``lay`` holding torch's initial state ``h_0`` (and ``c_0`` for an LSTM).

    The inverse of :func:`torch_state`: ``carry_from_torch(lay, *torch_state(carry))`` rebuilds
    ``carry``. ``h_0`` and ``c_0`` may be torch tensors, NumPy or JAX arrays; their dtype is
    kept and must equal the dtype of the inputs ``xs`` passed to ``apply``.

    Args:
        lay: the layer (e.g. from :func:`from_torch`).
        h_0: ``(num_layers * num_directions, *batch, H_out)``.
        c_0: ``(num_layers * num_directions, *batch, H)``; required for an LSTM, else ``None``.

    Returns:
        A carry for ``lay.apply``.

    Raises:
        ValueError: on a wrong shape, or ``c_0`` missing for an LSTM (given for another cell).

    >>> import numpy as np, jax.numpy as jnp, jaxrnn as jr
    >>> net = jr.rnn(jr.gru, 3, 4, num_layers=2, reset_after=True)
    >>> h_0 = np.arange(16, dtype=np.float32).reshape(2, 2, 4)  # (layers, batch, H)
    >>> carry = jr.interop.carry_from_torch(net, h_0)
    >>> [h.shape for h in carry], bool((jr.interop.torch_state(carry) == h_0).all())
    ([(2, 4), (2, 4)], True)
    """
    spec = _torch_spec(lay)
    rows = spec.num_layers * spec.num_directions
    h_0 = _as_jax(h_0, "h_0")
    if h_0.ndim < 2 or h_0.shape[0] != rows or h_0.shape[-1] != spec.out_size:
        raise ValueError(
            f"h_0: expected shape ({rows}, *batch, {spec.out_size}) (num_layers * "
            f"num_directions, batch, {'proj_size' if spec.proj_size else 'hidden_size'}), "
            f"got {h_0.shape}"
        )
    if spec.mode == "LSTM":
        if c_0 is None:
            raise ValueError("c_0: an LSTM needs both h_0 and c_0")
        c_0 = _as_jax(c_0, "c_0")
        expected = (rows, *h_0.shape[1:-1], spec.hidden_size)
        if c_0.shape != expected:
            raise ValueError(f"c_0: expected shape {expected}, got {c_0.shape}")
    elif c_0 is not None:
        raise ValueError(f"c_0: only an LSTM has a cell state; this layer's cells are {spec.mode}")
    grid = []
    for k in range(spec.num_layers):
        row = []
        for d in range(spec.num_directions):
            i = k * spec.num_directions + d
            row.append(LSTMCarry(h_0[i], c_0[i]) if spec.mode == "LSTM" else h_0[i])
        grid.append(row)
    return _ungrid(spec, grid)
