"""The implementations the benchmarks compare, all carrying the same weights.

One idea: every implementation of a layer (jaxrnn, Flax, Equinox, PyTorch) gets the *same*
weights, so a benchmark can check that all of them compute the same outputs and losses before
it compares their speed. The weights are Flax's initialisation with randomised biases
(:func:`flax_params`; Flax's zero biases would hide a wrongly mapped bias), mapped to jaxrnn
(:func:`flax_lstm_to_jaxrnn`, :func:`flax_gru_to_jaxrnn`) and from there to Equinox
(:func:`equinox_model`) and PyTorch (:func:`torch_module`).

An :class:`Entry` is one implementation of one cell with two timing callables: ``infer``
(compiled forward returning ``ys``) and ``train`` (compiled ``value_and_grad`` of the mean
squared error of ``ys`` against a fixed target, with respect to the parameters; for PyTorch,
forward plus ``torch.autograd.grad``). :func:`jax_entry` and :func:`torch_entry` build them;
:func:`peer_entries` builds the Flax, Equinox and PyTorch entries of one cell.

Mixed precision (``dtype=jnp.bfloat16``): jaxrnn's and Flax's cells keep float32 parameters and
run bfloat16 matmuls; PyTorch runs its float32 module under ``torch.autocast``. Equinox's cells
have no such option and take part in float32 only.

Equinox and PyTorch are optional peers: ``eqx`` and ``torch`` are ``None`` here when they cannot
be imported. Import this module only after :func:`harness.pin_from_argv`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn as jr

try:
    import equinox as eqx
except ImportError:  # optional peer
    eqx = None

try:
    import torch
except ImportError:  # optional peer
    torch = None

CELLS = ("lstm", "gru")
MODES = ("infer", "train")
LSTM_GATES = "ifgo"  # Flax's per-gate dense names and jaxrnn's fused block order agree
GRU_GATES = "rzn"
# The Flax cells of each kind, as (label, class).
FLAX_CELLS = {
    "lstm": [("nn.LSTMCell", nn.LSTMCell), ("nn.OptimizedLSTMCell", nn.OptimizedLSTMCell)],
    "gru": [("nn.GRUCell", nn.GRUCell)],
}
GRU_MODE_NOTE = (
    "flax GRUCell computes n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), i.e. the reset gate "
    "multiplies the recurrent projection including its bias; that is jr.gru(reset_after=True) "
    "(also torch.nn.GRU and eqx.nn.GRUCell). Flax has no recurrent bias on r and z; mapped to "
    "jaxrnn, b_hh is zero in those blocks."
)


@dataclass
class Entry:
    """One implementation of one cell, with its compiled inference and training calls."""

    cell: str  # "lstm" | "gru"
    impl: str  # label in the table
    family: str  # "jaxrnn" | "flax" | "equinox" | "torch" | "...-variant"
    infer: Callable[[], Any]  # one inference call; returns ys (computed, i.e. blocked)
    train: Callable[[], Any]  # one training step; returns the loss (blocked)
    baseline: bool = False  # the jaxrnn row the ratios refer to
    note: str = ""


def mse(ys, target):
    """Mean squared error, the training loss of every entry, summed in ``target``'s dtype.

    Under mixed precision ``ys`` may be bfloat16; it is cast to the (float32) target's dtype
    first, which also keeps JAX's strict dtype promotion happy.
    """
    return jnp.mean(jnp.square(ys.astype(target.dtype) - target))


def to_numpy(a) -> np.ndarray:
    """A JAX or PyTorch result as a NumPy array (a bfloat16 tensor as float32: NumPy has none)."""
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach()
        return (a.float() if a.dtype == torch.bfloat16 else a).numpy()
    return np.asarray(a)


def dtype_name(a) -> str:
    """The dtype of a JAX, NumPy or PyTorch array as a short name: ``float32``, ``bfloat16``."""
    if torch is not None and isinstance(a, torch.Tensor):
        return str(a.dtype).removeprefix("torch.")
    return np.dtype(a.dtype).name


# --------------------------------------------------------------------------------------------
# Shared weights: Flax's initialisation (with random biases), mapped to every other layout.


def flax_params(cell_name: str, hidden: int, xs: jax.Array, key: jax.Array):
    """Initialise ``nn.RNN`` of the Flax cell and replace every bias by random values.

    Flax initialises biases to zero, which would hide a wrongly mapped bias; random ones make
    the cross-implementation agreement check meaningful. ``nn.LSTMCell`` and
    ``nn.OptimizedLSTMCell`` share this parameter layout.
    """
    k_init, k_bias = jax.random.split(key)
    cell = nn.LSTMCell(hidden) if cell_name == "lstm" else nn.GRUCell(hidden)
    params = nn.RNN(cell).init(k_init, xs[:1, :1])["params"]
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(k_bias, len(leaves))
    new = [
        v + 0.5 * jax.random.normal(k, v.shape, v.dtype) if path[-1].key == "bias" else v
        for (path, v), k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, new)


def flax_lstm_to_jaxrnn(params) -> jr.LSTMParams:
    """Flax ``LSTMCell``/``OptimizedLSTMCell`` params -> :class:`jaxrnn.LSTMParams`.

    Flax keeps one dense layer per gate: ``i<gate>`` (input side, no bias) and ``h<gate>``
    (hidden side, with bias), gates ``i, f, g, o``: the same order as jaxrnn's fused blocks.
    """
    p = params["cell"]
    return jr.LSTMParams(
        w_ih=jnp.concatenate([p["i" + g]["kernel"] for g in LSTM_GATES], axis=-1),
        w_hh=jnp.concatenate([p["h" + g]["kernel"] for g in LSTM_GATES], axis=-1),
        b=jnp.concatenate([p["h" + g]["bias"] for g in LSTM_GATES], axis=-1),
    )


def flax_gru_to_jaxrnn(params) -> jr.GRUParams:
    """Flax ``GRUCell`` params -> :class:`jaxrnn.GRUParams` for ``jr.gru(reset_after=True)``.

    Flax's input-side denses ``ir, iz, in`` carry biases; of the hidden-side ones only ``hn``
    does, so ``b_hh`` is zero in the ``r`` and ``z`` blocks.
    """
    p = params["cell"]
    b_hn = p["hn"]["bias"]
    zeros = jnp.zeros_like(b_hn)
    return jr.GRUParams(
        w_ih=jnp.concatenate([p["i" + g]["kernel"] for g in GRU_GATES], axis=-1),
        w_hh=jnp.concatenate([p["h" + g]["kernel"] for g in GRU_GATES], axis=-1),
        b_ih=jnp.concatenate([p["i" + g]["bias"] for g in GRU_GATES], axis=-1),
        b_hh=jnp.concatenate([zeros, zeros, b_hn], axis=-1),
    )


def jaxrnn_from_flax(cell_name: str, input_size: int, hidden: int, fp, dtype=None):
    """The jaxrnn cell matching the Flax one, its mapped params, and its table label.

    ``dtype`` is the cell's matmul operand dtype (``None``: float32, like the params); the
    params stay float32 either way, so the same mapped params serve every ``dtype``.
    """
    kw = {} if dtype is None else {"dtype": dtype}
    if cell_name == "lstm":
        return jr.lstm(input_size, hidden, **kw), flax_lstm_to_jaxrnn(fp), "jr.lstm"
    cell = jr.gru(input_size, hidden, reset_after=True, **kw)
    return cell, flax_gru_to_jaxrnn(fp), "jr.gru(reset_after=True)"


# --------------------------------------------------------------------------------------------
# Forward functions: ``forward(params, xs) -> ys`` with batch-major ``xs``.


def jaxrnn_forward(
    cell: jr.Cell, unroll: int, hoist: bool | None = None, remat=False, kernel: bool | None = None
):
    """``jr.scan`` of ``cell`` with the given options, returning ``ys``. ``kernel=None`` (the
    default, what users get): the native CPU kernels where they apply; ``False``: the XLA
    path."""

    def forward(params, xs):
        opts = dict(unroll=unroll, hoist=hoist, remat=remat, kernel=kernel)
        return jr.scan(cell, params, xs, **opts)[1]

    return forward


def flax_label(name: str) -> str:
    """The table label of the Flax cell called ``name`` (e.g. ``"nn.LSTMCell"``)."""
    return f"flax nn.RNN({name})"


def flax_cell(cls, hidden: int, dtype=None):
    """A Flax cell of class ``cls``; with ``dtype``, its matmuls run in it on float32 params."""
    return cls(hidden) if dtype is None else cls(hidden, dtype=dtype, param_dtype=jnp.float32)


def flax_forward(flax_cell, unroll: int):
    """``nn.RNN(flax_cell)`` applied to the Flax params.

    Traced under standard dtype promotion: with ``dtype=jnp.bfloat16`` Flax's cells add
    bfloat16 matmul outputs to their float32 carry, which strict promotion (on in the tests)
    rejects. In float32 nothing is promoted, so this changes nothing there.
    """
    model = nn.RNN(flax_cell, unroll=unroll)

    def forward(params, xs):
        with jax.numpy_dtype_promotion("standard"):
            return model.apply({"params": params}, xs)

    return forward


def equinox_model(cell_name: str, p, key):
    """``eqx.nn.LSTMCell``/``GRUCell`` carrying the jaxrnn weights ``p`` (rows = outputs)."""
    input_size, hidden = p.w_ih.shape[0], p.w_hh.shape[0]
    if cell_name == "lstm":
        m = eqx.nn.LSTMCell(input_size, hidden, key=key)
        return eqx.tree_at(
            lambda m: (m.weight_ih, m.weight_hh, m.bias), m, (p.w_ih.T, p.w_hh.T, p.b)
        )
    m = eqx.nn.GRUCell(input_size, hidden, key=key)
    # eqx adds ``bias`` on the input side and ``bias_n`` inside the reset product.
    bias = p.b_ih + p.b_hh.at[2 * hidden :].set(0.0)
    return eqx.tree_at(
        lambda m: (m.weight_ih, m.weight_hh, m.bias, m.bias_n),
        m,
        (p.w_ih.T, p.w_hh.T, bias, p.b_hh[2 * hidden :]),
    )


def equinox_forward(cell_name: str, hidden: int, unroll: int):
    """Idiomatic Equinox: the per-example cell vmapped over the batch, scanned over time."""

    def forward(model, xs):
        batch = xs.shape[0]
        h0 = jnp.zeros((batch, hidden), xs.dtype)
        carry0 = (h0, h0) if cell_name == "lstm" else h0

        def body(carry, x):
            carry = jax.vmap(model)(x, carry)
            return carry, carry[0] if cell_name == "lstm" else carry

        _, ys = jax.lax.scan(body, carry0, jnp.swapaxes(xs, 0, 1), unroll=unroll)
        return jnp.swapaxes(ys, 0, 1)

    return forward


# --------------------------------------------------------------------------------------------
# Entries.


def jax_entry(cell, impl, family, forward, params, xs, target, **kw) -> Entry:
    """Compile ``forward`` for inference and its MSE ``value_and_grad`` for training."""
    infer = jax.jit(forward)
    train = jax.jit(jax.value_and_grad(lambda p, x, y: mse(forward(p, x), y)))

    def run_infer():
        return jax.block_until_ready(infer(params, xs))

    def run_train():
        loss, _grads = jax.block_until_ready(train(params, xs, target))
        return loss

    return Entry(cell, impl, family, run_infer, run_train, **kw)


def torch_module(cell_name: str, p):
    """``torch.nn.LSTM``/``GRU`` (batch_first, float32) carrying the jaxrnn weights ``p``.

    PyTorch has an input-side and a hidden-side bias in every gate; jaxrnn's LSTM bias goes to
    the input side (the hidden side is zero), the GRU biases map one to one.
    """
    input_size, hidden = p.w_ih.shape[0], p.w_hh.shape[0]
    cls = torch.nn.LSTM if cell_name == "lstm" else torch.nn.GRU
    module = cls(input_size, hidden, batch_first=True)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch_tensor(p.w_ih.T))
        module.weight_hh_l0.copy_(torch_tensor(p.w_hh.T))
        if cell_name == "lstm":
            module.bias_ih_l0.copy_(torch_tensor(p.b))
            module.bias_hh_l0.zero_()
        else:
            module.bias_ih_l0.copy_(torch_tensor(p.b_ih))
            module.bias_hh_l0.copy_(torch_tensor(p.b_hh))
    return module


def torch_tensor(a):
    """A float32 CPU tensor holding a copy of the JAX or NumPy array ``a``."""
    return torch.from_numpy(np.array(a, dtype=np.float32))


@contextlib.contextmanager
def onednn_off():
    """PyTorch with oneDNN (``torch.backends.mkldnn``) off inside the block, then as before.

    Only the ``enabled`` flag: ``torch.backends.mkldnn.flags`` would reset the others too.
    """
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def torch_entry(cell_name: str, p, xs, target, autocast=None) -> Entry:
    """An entry timing :func:`torch_module` on ``xs`` (inference mode) and its MSE gradient.

    With ``autocast`` (e.g. ``torch.bfloat16``) every call runs under
    ``torch.autocast("cpu", dtype=autocast)``: float32 weights, lower-precision matmuls, the
    loss taken in float32. On a CPU without bfloat16 support (e.g. AVX2 only) oneDNN's fused
    LSTM fails to create its bfloat16 primitive; there the calls run with oneDNN off, i.e.
    PyTorch's native RNN, whose matmuls autocast still lowers, and the entry's ``note`` says so.
    """
    module = torch_module(cell_name, p)
    x_t, y_t = torch_tensor(xs), torch_tensor(target)
    weights = list(module.parameters())
    label = f"torch nn.{type(module).__name__}"
    mkldnn = True

    def context():
        if autocast is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast("cpu", dtype=autocast))
        if not mkldnn:
            stack.enter_context(onednn_off())
        return stack

    def run_infer():
        with torch.inference_mode(), context():
            return module(x_t)[0]

    def run_train():
        with context():  # the forward pass; the backward runs in the dtypes it chose
            loss = torch.mean(torch.square(module(x_t)[0].float() - y_t))
        torch.autograd.grad(loss, weights)
        return loss.detach()

    note = ""
    if autocast is not None:
        label += f" (autocast {str(autocast).removeprefix('torch.')})"
        try:
            run_infer()
        except RuntimeError as err:  # no oneDNN kernel for this dtype on this CPU
            mkldnn = False
            note = f"oneDNN off (its {type(module).__name__} failed: {str(err).split('.')[0]})"
    return Entry(cell_name, label, "torch", run_infer, run_train, note=note)


def peer_entries(
    cell_name: str,
    fp,
    jp,
    xs,
    target,
    eqx_key,
    *,
    unroll: int = 1,
    skip=(),
    dtype=None,
) -> list[Entry]:
    """The Flax, Equinox and PyTorch entries of one cell, all with the same weights.

    Args:
        cell_name: ``"lstm"`` or ``"gru"``.
        fp: the Flax params (:func:`flax_params`); ``jp``: the same mapped to jaxrnn.
        xs: batch-major inputs; ``target``: the training target (float32).
        eqx_key: key for building the Equinox cell (its weights are then replaced).
        unroll: ``unroll`` of the JAX scans.
        skip: families to leave out (``"flax"``, ``"equinox"``, ``"torch"``); so are those
            that cannot be imported.
        dtype: ``None`` for float32; else the mixed-precision dtype (``jnp.bfloat16``): Flax
            cells with ``dtype``, PyTorch under autocast, and no Equinox entry.

    Returns:
        Flax entries (in :data:`FLAX_CELLS` order), then Equinox, then PyTorch.
    """
    hidden = jp.w_hh.shape[0]
    entries = []
    if "flax" not in skip:
        for name, cls in FLAX_CELLS[cell_name]:
            forward = flax_forward(flax_cell(cls, hidden, dtype), unroll)
            label = flax_label(name) + ("" if dtype is None else f" dtype={jnp.dtype(dtype).name}")
            entries.append(jax_entry(cell_name, label, "flax", forward, fp, xs, target))
    if "equinox" not in skip and eqx is not None and dtype is None:
        name = "LSTMCell" if cell_name == "lstm" else "GRUCell"
        entries.append(
            jax_entry(
                cell_name,
                f"equinox eqx.nn.{name} + lax.scan",
                "equinox",
                equinox_forward(cell_name, hidden, unroll),
                equinox_model(cell_name, jp, eqx_key),
                xs,
                target,
            )
        )
    if "torch" not in skip and torch is not None:
        autocast = None if dtype is None else getattr(torch, jnp.dtype(dtype).name)
        entries.append(torch_entry(cell_name, jp, xs, target, autocast=autocast))
    return entries
