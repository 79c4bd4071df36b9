"""jaxrnn LSTM stacks on cuDNN: the layers cuDNN computes exactly, run by its fused kernel.

:func:`jaxrnn.rnn` built with ``cell_fn=jr.lstm`` computes the same function as cuDNN's
``CUDNN_LSTM`` (what ``torch.nn.LSTM`` and :func:`jax.experimental.rnn.lstm` run), as long as
the cells use none of jaxrnn's extensions. On a CUDA GPU, :func:`jaxrnn.rnn` then hands the
whole stack to :func:`jax.experimental.rnn.lstm`: one fused kernel for all layers, directions
and time steps instead of one ``lax.scan`` per layer and direction.

Dispatch rules (``jr.rnn(..., cudnn=None | True | False)``):

* ``cudnn=False``: never; always the :func:`jaxrnn.scan` path.
* ``cudnn=None`` (default, automatic): cuDNN when all of the following hold, else the scan path.
  :func:`supports` holds for the layer (``cell_fn=jr.lstm``; no ``peephole``, ``coupled`` or
  ``proj_size``; float32 parameters and computation; any ``num_layers``, bidirectional or not,
  either ``time_major``; ``unroll`` and ``remat`` are ignored, cuDNN has its own loop and
  backward pass); the call does not apply dropout (``dropout > 0`` together with a ``key``:
  cuDNN's dropout masks differ from jaxrnn's); ``xs`` and every parameter are float32; the
  computation runs on a CUDA GPU (``jax.default_backend() == "gpu"`` with a CUDA
  ``platform_version``, and no ``jax.default_device`` context naming another platform; ROCm is
  excluded, MIOpen orders the gates differently); and ``jax_default_matmul_precision`` does not
  ask for bfloat16 matmuls, which :func:`jax.experimental.rnn.lstm` does not implement; and
  neither ``xs`` nor a parameter is split over an explicit mesh (``jax.make_mesh``: the cuDNN
  call is not partitioned, the scan path is). The decision is made each time ``apply`` is
  traced, so it follows the backend in use then.
* ``cudnn=True``: require cuDNN; :func:`jaxrnn.rnn` raises ``ValueError`` naming the reason when
  the layer is unsupported or the backend is not a CUDA GPU, and ``apply`` raises when a call
  cannot be dispatched (dropout with a key, non-float32 inputs or parameters, inputs on an
  explicit mesh).

Both paths return the same ``(carry, ys)`` (up to float32 rounding; both honour
``jax_default_matmul_precision``, so both may use TF32 matmuls on GPUs that have them), with
the same ``lengths`` semantics: steps past a sequence's length leave the carry unchanged and
output zeros, and the backward direction starts at each sequence's own last valid element.
cuDNN does not take zero lengths, so those rows run one step on zeros and their results are
then replaced by the initial carry and zero outputs. Extra batch dimensions are flattened into
cuDNN's one batch axis and restored. Under :func:`jax.vmap` the kernel runs once per mapped
element (:func:`jax.custom_batching.sequential_vmap`; fold the mapped axis into the batch
instead where possible); forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) and
second derivatives are not available on the cuDNN path, which has only a reverse-mode rule:
use ``cudnn=False`` for those.

Weight layout. cuDNN reads one flat float32 vector. For ``L`` layers and ``D`` directions it
holds ``L * D`` pseudo-layers in the order layer 0 forward, layer 0 backward, layer 1 forward,
..., first every pseudo-layer's matrices, then every pseudo-layer's biases::

    W_ih^0, W_hh^0, W_ih^1, W_hh^1, ..., b_ih^0, b_hh^0, b_ih^1, b_hh^1, ...

each stored row-major, output-major as in ``torch.nn.LSTM``: ``W_ih (4H, in)`` with ``in = I``
for layer 0 and ``D * H`` above it, ``W_hh (4H, H)``, ``b_ih (4H,)``, ``b_hh (4H,)``, gate blocks
``i, f, g, o`` along the first axis: the gate order of jaxrnn's :class:`~jaxrnn.LSTMParams`
(and of :func:`jax.experimental.rnn.lstm_ref`), so packing only transposes:
``W_ih = w_ih.T``, ``W_hh = w_hh.T``, ``b_ih = b``, ``b_hh = 0`` (jaxrnn has one bias; cuDNN
adds both). :func:`pack_lstm_weights` builds the vector and :func:`unpack_lstm_weights` reads
it back (``b = b_ih + b_hh``), in the layout :func:`jax.experimental.rnn.unpack_lstm_weights`
reads.
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import check_carry, check_lengths
from jaxrnn._core import Array, Bidirectional, Carry, Layer, Params
from jaxrnn.cells import LSTMCarry, LSTMParams, lstm

__all__ = [
    "apply_cudnn",
    "dispatch",
    "pack_lstm_weights",
    "require",
    "supports",
    "unpack_lstm_weights",
]

# Options of jr.lstm's config that do not change what a step computes (or are checked apart).
_LSTM_OPTIONS = frozenset(
    {
        "factory",
        "input_size",
        "hidden_size",
        "peephole",
        "coupled",
        "forget_bias",
        "proj_size",
        "dtype",
        "param_dtype",
    }
)
# jax_default_matmul_precision values that mean bfloat16 matmuls (Precision.DEFAULT), for which
# jax.experimental.rnn.lstm raises NotImplementedError.
_BF16_PRECISIONS = frozenset({"default", "bfloat16", "fastest"})


# --------------------------------------------------------------------------------------------
# Which layers and calls cuDNN computes exactly.


# The factory whose layers the dispatch knows: jr.rnn. This module sits below the layers (they
# call it), so it knows the factory by name rather than by importing it.
_RNN = "jaxrnn.layers._layers.rnn"


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def _name(obj) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _is_float32(dtype) -> bool:
    return dtype is not None and jnp.dtype(dtype) == jnp.float32


def supports(layer: Layer, *, key: jax.Array | None = None) -> tuple[bool, str]:
    """Whether cuDNN computes ``layer.apply(..., key=key)`` exactly, and if not, why.

    Supported: layers built by :func:`jaxrnn.rnn` with ``cell_fn=jr.lstm`` and no
    ``peephole``, ``coupled`` or ``proj_size`` (jr.lstm's activations are fixed: sigmoid gates,
    tanh candidate and output, as cuDNN's), with float32 parameters and float32 computation
    (the cell config's ``dtype``, and ``param_dtype`` where present, with ``dtype=None``
    meaning ``param_dtype``); any ``num_layers``, bidirectional or not, either ``time_major``.
    ``unroll`` and ``remat`` are ignored by cuDNN, which has its own loop and backward pass.

    Dropout: :func:`jaxrnn.stack` applies dropout between layers only when ``apply`` gets a
    ``key``, and cuDNN's dropout masks cannot be made equal to jaxrnn's. A layer with
    ``dropout > 0`` is therefore supported for calls without a key (no dropout happens) and
    not for calls with one, which run the scan path.

    This checks the layer (and the key) only: the backend and the dtypes of the actual inputs
    are checked by the dispatch in :func:`jaxrnn.rnn` (see the module docstring).

    Args:
        layer: the layer.
        key: the key ``apply`` would receive; only whether it is ``None`` matters.

    Returns:
        ``(True, "")``, or ``(False, reason)`` with a sentence naming the obstacle.

    >>> import jax, jaxrnn as jr
    >>> from jaxrnn.cudnn import supports
    >>> supports(jr.rnn(jr.lstm, 3, 8, num_layers=2, bidirectional=True))
    (True, '')
    >>> supports(jr.rnn(jr.lstm, 3, 8, peephole=True))[1]
    'lstm(peephole=True): cuDNN has no peephole connections'
    """
    if not isinstance(layer, Layer):
        return False, f"expected a jaxrnn Layer, got {type(layer).__name__}"
    cfg = dict(layer.config)
    factory = cfg.get("factory")
    if _qualified_name(factory) != _RNN:
        built = _name(factory) if factory is not None else "hand"
        return (
            False,
            f"only layers built by jr.rnn are dispatched to cuDNN, got one built by {built}",
        )
    cell_fn = cfg["cell_fn"]
    if cell_fn is not lstm:
        return False, (
            f"cell_fn={_name(cell_fn)}: only jr.lstm runs on cuDNN (jax.experimental.rnn "
            "implements LSTM only)"
        )
    cell = lstm(cfg["input_size"], cfg["hidden_size"], **dict(cfg["cell_kwargs"]))
    reason = _lstm_reason(dict(cell.config))
    if reason:
        return False, reason
    if key is not None and cfg["dropout"] > 0.0:
        return False, (
            f"dropout={cfg['dropout']} with a key: cuDNN's dropout masks differ from jaxrnn's, "
            "so dropout runs on the scan path"
        )
    return True, ""


def _lstm_reason(cell_cfg: dict) -> str:
    """Why cuDNN does not compute a jr.lstm of this config exactly, or ``""`` if it does."""
    for opt, why in (
        ("peephole", "cuDNN has no peephole connections"),
        ("coupled", "cuDNN has no coupled input and forget gates"),
    ):
        if cell_cfg.get(opt):
            return f"lstm({opt}=True): {why}"
    if cell_cfg.get("proj_size"):
        return (
            f"lstm(proj_size={cell_cfg['proj_size']}): jax.experimental.rnn.lstm has no projection"
        )
    unknown = sorted(set(cell_cfg) - _LSTM_OPTIONS)
    if unknown:
        return (
            f"lstm option(s) {', '.join(unknown)}: not known to the cuDNN dispatch, which "
            "cannot tell whether cuDNN computes them"
        )
    if "param_dtype" in cell_cfg:
        param_dtype = cell_cfg["param_dtype"]
        dtype = param_dtype if cell_cfg.get("dtype") is None else cell_cfg["dtype"]
    else:
        param_dtype = dtype = cell_cfg.get("dtype")
    for what, value in (("param_dtype", param_dtype), ("dtype", dtype)):
        if not _is_float32(value):
            return (
                f"lstm {what}={getattr(value, '__name__', value)}: the cuDNN path computes in "
                "float32 only"
            )
    return ""


def _backend_reason() -> str | None:
    """Why the current computation would not run on a CUDA GPU, or ``None`` if it would."""
    device = jax.config.jax_default_device
    if device is None:
        platform = jax.default_backend()
        version = None
    elif isinstance(device, str):
        platform, version = device, None
    else:
        platform, version = device.platform, device.client.platform_version
    if platform not in ("gpu", "cuda"):
        return f"the computation runs on {platform!r}, not on a CUDA GPU"
    if version is None:
        from jax.extend import backend

        version = backend.get_backend("gpu").platform_version
    if "cuda" not in str(version).lower():
        return f"the GPU backend is not CUDA ({version!r}); only cuDNN is supported"
    precision = jax.config.jax_default_matmul_precision
    if precision is not None and str(precision).lower() in _BF16_PRECISIONS:
        return (
            f"jax_default_matmul_precision={precision!r} asks for bfloat16 matmuls, which "
            "jax.experimental.rnn.lstm does not implement"
        )
    return None


def _call_reason(layer: Layer, params: Params, xs, key) -> str | None:
    """Why this call cannot run on cuDNN (backend, dropout, dtypes), or ``None``."""
    ok, reason = supports(layer, key=key)
    if not ok:
        return reason
    reason = _backend_reason()
    if reason is not None:
        return reason
    if _sharding.explicit_mesh(xs, params) is not None:
        return (
            "xs or params are split over an explicit mesh (jax.make_mesh); the cuDNN call is "
            "not partitioned there, the scan path is"
        )
    dtype = jnp.result_type(xs)
    if dtype != jnp.float32:
        return f"xs has dtype {dtype}; the cuDNN path computes in float32 only"
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.result_type(leaf) != jnp.float32:
            return (
                f"params{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}; the "
                "cuDNN path computes in float32 only"
            )
    return None


def dispatch(layer: Layer, params: Params, xs, key, require: bool) -> bool:
    """Whether :func:`jaxrnn.rnn`'s ``apply`` takes the cuDNN path (raising if required)."""
    reason = _call_reason(layer, params, xs, key)
    if reason is not None and require:
        raise ValueError(f"jr.rnn(cudnn=True): cannot run on cuDNN: {reason}")
    return reason is None


def require(layer: Layer) -> None:
    """Build-time check of ``jr.rnn(cudnn=True)``: the layer and the backend."""
    ok, reason = supports(layer)
    if ok:
        reason = _backend_reason()
    if reason:
        raise ValueError(
            f"jr.rnn(cudnn=True): cannot run on cuDNN: {reason}. Pass cudnn=None to use cuDNN "
            "only where it applies, or cudnn=False never to."
        )


# --------------------------------------------------------------------------------------------
# The flat weight vector.


def _rows(params: Params) -> list[list[LSTMParams]]:
    """The per-layer params of a ``jr.rnn(jr.lstm, ...)`` as rows of 1 or 2 directions."""
    if not isinstance(params, (tuple, list)) or not params:
        raise TypeError(
            "params: expected the tuple of per-layer params of jr.rnn(jr.lstm, ...), got "
            f"{type(params).__name__}"
        )
    rows = [list(p) if isinstance(p, Bidirectional) else [p] for p in params]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("params: layers mix unidirectional and Bidirectional entries")
    for k, row in enumerate(rows):
        for p in row:
            if not isinstance(p, LSTMParams):
                raise TypeError(f"params[{k}]: expected LSTMParams, got {type(p).__name__}")
            if p.w_peep is not None or p.w_proj is not None:
                raise ValueError(
                    f"params[{k}]: peephole or projection weights have no place in cuDNN's layout"
                )
    return rows


def pack_lstm_weights(params: Params) -> Array:
    """The flat cuDNN weight vector of a ``jr.rnn(jr.lstm, ...)``'s params.

    Layout in the module docstring: per pseudo-layer ``W_ih = w_ih.T`` and ``W_hh = w_hh.T``,
    then per pseudo-layer ``b_ih = b`` and ``b_hh = 0``. Sizes and directions are read from
    the params.

    Args:
        params: a tuple with one :class:`~jaxrnn.LSTMParams` per layer, or one
            :class:`~jaxrnn.Bidirectional` of them per layer, without peephole or projection
            weights.

    Returns:
        A 1-D array of ``jax.experimental.rnn.get_num_params_in_lstm(I, H, L, bidirectional)``
        elements, of the params' dtype.

    Raises:
        TypeError: if ``params`` is not such a tuple.
        ValueError: if shapes disagree with one LSTM stack, or the params hold peephole or
            projection weights.

    >>> import jax, jaxrnn as jr
    >>> from jaxrnn.cudnn import pack_lstm_weights
    >>> net = jr.rnn(jr.lstm, 3, 4, num_layers=2, bidirectional=True)
    >>> flat = pack_lstm_weights(net.init(jax.random.key(0)))
    >>> from jax.experimental.rnn import get_num_params_in_lstm
    >>> flat.shape, get_num_params_in_lstm(3, 4, 2, True)
    ((736,), 736)
    """
    rows = _rows(params)
    first = rows[0][0]
    in_size, gates = first.w_ih.shape
    hidden = first.w_hh.shape[0]
    if gates != 4 * hidden:
        raise ValueError(
            f"params[0]: w_ih has {gates} gate columns, expected 4 * hidden_size = {4 * hidden}"
        )
    dtype = jnp.result_type(first.w_ih)
    matrices, biases = [], []
    for k, row in enumerate(rows):
        for p in row:
            expected = {"w_ih": (in_size, 4 * hidden), "w_hh": (hidden, 4 * hidden)}
            expected["b"] = (4 * hidden,)
            for name, shape in expected.items():
                leaf = getattr(p, name)
                if jnp.shape(leaf) != shape:
                    raise ValueError(
                        f"params[{k}].{name}: expected shape {shape}, got {jnp.shape(leaf)}"
                    )
                if jnp.result_type(leaf) != dtype:
                    raise ValueError(
                        f"params[{k}].{name}: dtype {jnp.result_type(leaf)} differs from "
                        f"params[0].w_ih's {dtype}"
                    )
            matrices += [p.w_ih.T.reshape(-1), p.w_hh.T.reshape(-1)]
            biases += [p.b, jnp.zeros((4 * hidden,), dtype)]
        in_size = len(row) * hidden
    return jnp.concatenate(matrices + biases)


def _flat_sizes(input_size, hidden_size, num_layers, directions) -> list[tuple[int, ...]]:
    """Shapes of the pieces of the flat vector, in order (matrices, then biases)."""
    matrices, biases = [], []
    for layer in range(num_layers):
        in_size = input_size if layer == 0 else directions * hidden_size
        for _ in range(directions):
            matrices += [(4 * hidden_size, in_size), (4 * hidden_size, hidden_size)]
            biases += [(4 * hidden_size,), (4 * hidden_size,)]
    return matrices + biases


def unpack_lstm_weights(
    weights: Array, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool
) -> tuple:
    """jaxrnn params from a flat cuDNN weight vector; the inverse of :func:`pack_lstm_weights`.

    ``w_ih = W_ih.T``, ``w_hh = W_hh.T`` and ``b = b_ih + b_hh`` (``b = b_ih`` exactly where
    ``b_hh`` is zero, so packing then unpacking returns the params bit for bit). Vectors made
    elsewhere in this layout, e.g. by :func:`jax.experimental.rnn.init_lstm_weight`, convert
    the same way.

    Args:
        weights: the 1-D vector.
        input_size: ``I``.
        hidden_size: ``H``.
        num_layers: ``L``.
        bidirectional: whether each layer has a backward direction.

    Returns:
        The params of ``jr.rnn(jr.lstm, input_size, hidden_size, num_layers=num_layers,
        bidirectional=bidirectional)``: a tuple of :class:`~jaxrnn.LSTMParams` (or of
        :class:`~jaxrnn.Bidirectional` of them), one per layer.

    Raises:
        ValueError: if ``weights`` has the wrong number of elements.

    >>> import jax, jaxrnn as jr
    >>> from jaxrnn.cudnn import pack_lstm_weights, unpack_lstm_weights
    >>> net = jr.rnn(jr.lstm, 3, 4, bidirectional=True)
    >>> params = net.init(jax.random.key(0))
    >>> back = unpack_lstm_weights(pack_lstm_weights(params), 3, 4, 1, True)
    >>> all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    True
    """
    directions = 2 if bidirectional else 1
    shapes = _flat_sizes(input_size, hidden_size, num_layers, directions)
    total = sum(math.prod(s) for s in shapes)
    if jnp.shape(weights) != (total,):
        raise ValueError(
            f"weights: expected shape ({total},) for input_size={input_size}, "
            f"hidden_size={hidden_size}, num_layers={num_layers}, bidirectional={bidirectional}"
            f", got {jnp.shape(weights)}"
        )
    pieces, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(weights[offset : offset + size].reshape(shape))
        offset += size
    count = num_layers * directions
    matrices, biases = pieces[: 2 * count], pieces[2 * count :]
    cells = []
    for k in range(count):
        w_ih, w_hh = matrices[2 * k], matrices[2 * k + 1]
        b_ih, b_hh = biases[2 * k], biases[2 * k + 1]
        b = jnp.where(b_hh == 0, b_ih, b_ih + b_hh)
        cells.append(LSTMParams(w_ih=w_ih.T, w_hh=w_hh.T, b=b))
    return _per_layer(cells, num_layers, bidirectional)


def _per_layer(entries: list, num_layers: int, bidirectional: bool) -> tuple:
    """Per-pseudo-layer entries nested as jr.rnn nests them: one per layer, or Bidirectional."""
    if bidirectional:
        return tuple(Bidirectional(entries[2 * k], entries[2 * k + 1]) for k in range(num_layers))
    return tuple(entries)


# --------------------------------------------------------------------------------------------
# The kernel call: forward and backward functions, swappable for testing without a GPU.


def _precision_kwargs(fn) -> dict:
    """``precision=None`` where ``jax.experimental.rnn`` takes one (jax versions differ)."""
    return {"precision": None} if "precision" in inspect.signature(fn).parameters else {}


def _backend_forward(x, h0, c0, w, lengths, sizes):
    """cuDNN's forward pass: ``((y, h_n, c_n), residuals)``."""
    from jax.experimental import rnn as jrnn

    input_size, hidden_size, num_layers, bidirectional = sizes
    return jrnn.lstm_fwd(
        x,
        h0,
        c0,
        w,
        lengths,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=0.0,
        bidirectional=bidirectional,
        **_precision_kwargs(jrnn.lstm_fwd),
    )


def _backend_backward(sizes, residuals, cotangents):
    """cuDNN's backward pass: ``(dx, dh0, dc0, dw)``."""
    from jax.experimental import rnn as jrnn

    input_size, hidden_size, num_layers, bidirectional = sizes
    head = (input_size, hidden_size, num_layers, 0.0, bidirectional)
    if _precision_kwargs(jrnn.lstm_bwd):
        head += (None,)
    dx, dh0, dc0, dw, _ = jrnn.lstm_bwd(*head, residuals, cotangents)
    return dx, dh0, dc0, dw


# The kernel has no batching rule, so under vmap each mapped element runs in turn
# (sequential_vmap); the custom_vjp keeps reverse-mode differentiation on cuDNN's backward.
@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _lstm_core(x, h0, c0, w, lengths, sizes):
    forward = jax.custom_batching.sequential_vmap(lambda *args: _backend_forward(*args, sizes)[0])
    return forward(x, h0, c0, w, lengths)


def _lstm_core_fwd(x, h0, c0, w, lengths, sizes):
    forward = jax.custom_batching.sequential_vmap(lambda *args: _backend_forward(*args, sizes))
    return forward(x, h0, c0, w, lengths)


def _lstm_core_bwd(sizes, residuals, cotangents):
    backward = jax.custom_batching.sequential_vmap(
        lambda res, cts: _backend_backward(sizes, res, cts)
    )
    return (*backward(residuals, cotangents), None)


_lstm_core.defvjp(_lstm_core_fwd, _lstm_core_bwd)


# --------------------------------------------------------------------------------------------
# The layer's apply on cuDNN.


def _full_carry(cell, carry, num_layers: int, bidirectional: bool, batch_shape) -> list:
    """The per-pseudo-layer initial carries, ``None`` entries filled with zeros, all checked.

    Mirrors how :func:`jaxrnn.stack`, :func:`jaxrnn.bidirectional` and :func:`jaxrnn.scan`
    accept a carry: ``None`` for the whole carry, a layer or a direction means zeros.
    """
    carry = (None,) * num_layers if carry is None else tuple(carry)
    if len(carry) != num_layers:
        raise ValueError(f"carry: expected {num_layers} layer entries, got {len(carry)}")
    out = []
    for entry in carry:
        if bidirectional:
            entry = Bidirectional(None, None) if entry is None else entry
            if not isinstance(entry, Bidirectional):
                raise TypeError(
                    "carry: expected jr.Bidirectional(forward, backward), "
                    f"got {type(entry).__name__}"
                )
            directions = list(entry)
        else:
            directions = [entry]
        for c in directions:
            if c is None:
                c = cell.initial_carry(batch_shape)
            else:
                check_carry(cell, c, batch_shape)
            out.append(c)
    return out


def apply_cudnn(
    layer: Layer,
    params: Params,
    xs: Array,
    carry: Carry | None = None,
    lengths: Array | None = None,
) -> tuple[Carry, Array]:
    """``layer.apply(params, xs, carry, lengths=lengths)`` computed by cuDNN.

    Runs on a CUDA GPU (the kernel has no other lowering). Returns exactly what
    ``layer.apply`` returns without a key: the carry tuple of :func:`jaxrnn.rnn`, one entry per
    layer (an :class:`~jaxrnn.LSTMCarry`, or a :class:`~jaxrnn.Bidirectional` of them), and
    ``ys`` of shape ``(*batch, T, D * H)`` (``(T, *batch, D * H)`` when ``time_major``).
    Dropout is not applied (as ``layer.apply`` without a key).

    Args:
        layer: a layer :func:`supports` accepts.
        params: its params.
        xs: float32 inputs, ``(*batch, T, I)`` (``(T, *batch, I)`` when ``time_major``), any
            number of batch dimensions.
        carry: the initial carry, or ``None`` (zeros; also per layer or direction).
        lengths: optional integer lengths of the batch shape, in ``[0, T]``.

    Returns:
        ``(carry, ys)``.

    Raises:
        ValueError: if :func:`supports` rejects the layer, or shapes are wrong.
        TypeError: if ``xs`` is not float32, or the carry's structure or dtype is wrong.
    """
    ok, reason = supports(layer)
    if not ok:
        raise ValueError(f"apply_cudnn: {reason}")
    cfg = dict(layer.config)
    input_size, hidden_size = cfg["input_size"], cfg["hidden_size"]
    num_layers, bidirectional = cfg["num_layers"], cfg["bidirectional"]
    time_major = cfg["time_major"]
    cell = lstm(input_size, hidden_size, **dict(cfg["cell_kwargs"]))
    xs = _check_xs(xs, input_size, time_major)
    if time_major:
        xs = jnp.moveaxis(xs, 0, -2)
    batch_shape, num_steps = xs.shape[:-2], xs.shape[-2]
    carries = _full_carry(cell, carry, num_layers, bidirectional, batch_shape)
    weights = _checked_weights(params, cfg)
    if lengths is not None:
        lengths = check_lengths(lengths, batch_shape, num_steps)
    out_size = (2 if bidirectional else 1) * hidden_size
    if math.prod(batch_shape) == 0 or num_steps == 0:  # nothing to run: the carry is unchanged
        ys = jnp.zeros((*batch_shape, num_steps, out_size), xs.dtype)
        new_carries = carries
    else:
        y, h_n, c_n = _run_kernel(xs, carries, weights, lengths, cfg)
        ys = y.reshape(*batch_shape, num_steps, out_size)
        state_shape = (*batch_shape, hidden_size)
        new_carries = [
            LSTMCarry(h.reshape(state_shape), c.reshape(state_shape))
            for h, c in zip(h_n, c_n, strict=True)
        ]
    if time_major:
        ys = jnp.moveaxis(ys, -2, 0)
    return _per_layer(new_carries, num_layers, bidirectional), ys


def _check_xs(xs, input_size: int, time_major: bool) -> Array:
    """``xs`` as a float32 array of at least 2 dims with ``input_size`` features, checked."""
    xs = jnp.asarray(xs)
    if xs.ndim < 2:
        layout = "(time, *batch, features)" if time_major else "(*batch, time, features)"
        raise ValueError(f"xs: expected at least 2 dims {layout}, got shape {xs.shape}")
    if xs.shape[-1] != input_size:
        raise ValueError(
            f"xs: expected feature size (last axis) {input_size} (the cell's input_size), "
            f"got {xs.shape[-1]} (xs.shape={xs.shape})"
        )
    if xs.dtype != jnp.float32:
        raise TypeError(f"xs: the cuDNN path computes in float32, got dtype {xs.dtype}")
    return xs


def _checked_weights(params: Params, cfg: dict) -> Array:
    """``params`` packed into cuDNN's flat float32 vector, checked against the layer's sizes."""
    input_size, hidden_size = cfg["input_size"], cfg["hidden_size"]
    num_layers, bidirectional = cfg["num_layers"], cfg["bidirectional"]
    weights = pack_lstm_weights(params)
    expected = _flat_sizes(input_size, hidden_size, num_layers, 2 if bidirectional else 1)
    if weights.shape != (sum(math.prod(s) for s in expected),):
        raise ValueError(
            f"params: sizes differ from the layer's (input_size={input_size}, "
            f"hidden_size={hidden_size}, num_layers={num_layers}, bidirectional={bidirectional})"
        )
    if weights.dtype != jnp.float32:
        raise TypeError(f"params: the cuDNN path computes in float32, got dtype {weights.dtype}")
    return weights


def _run_kernel(xs, carries: list, weights, lengths, cfg: dict):
    """``(y (B, T, D * H), h_n, c_n (L * D, B, H))`` from cuDNN, batch dimensions flattened.

    Padding is never read (as in jr.scan, NaN there changes nothing); zero-length rows run one
    step on zeros, and their results are replaced by the initial state (and zeros in ``y``).
    """
    input_size, hidden_size = cfg["input_size"], cfg["hidden_size"]
    num_steps = xs.shape[-2]
    batch = math.prod(xs.shape[:-2])
    x = xs.reshape(batch, num_steps, input_size)
    h0 = jnp.stack([c.h.reshape(batch, hidden_size) for c in carries])
    c0 = jnp.stack([c.c.reshape(batch, hidden_size) for c in carries])
    if lengths is None:
        run_lengths = jnp.full((batch,), num_steps, jnp.int32)
        return _lstm_core(x, h0, c0, weights, run_lengths, _sizes(cfg))
    lengths = lengths.reshape(batch).astype(jnp.int32)
    valid = jnp.arange(num_steps, dtype=jnp.int32) < lengths[:, None]  # (B, T)
    empty = (lengths == 0)[None, :, None]  # broadcasts against (L * D, B, H)
    zero = jnp.zeros((), xs.dtype)
    x = jnp.where(valid[..., None], x, zero)
    run_lengths = jnp.maximum(lengths, 1)
    y, h_n, c_n = _lstm_core(
        x,
        jnp.where(empty, zero, h0),
        jnp.where(empty, zero, c0),
        weights,
        run_lengths,
        _sizes(cfg),
    )
    y = jnp.where(valid[..., None], y, zero)
    return y, jnp.where(empty, h0, h_n), jnp.where(empty, c0, c_n)


def _sizes(cfg: dict) -> tuple[int, int, int, bool]:
    return (cfg["input_size"], cfg["hidden_size"], cfg["num_layers"], bool(cfg["bidirectional"]))
