"""When :func:`jaxrnn.scan` runs a cell on the native kernels, and how.

The rule mirrors the cuDNN dispatch (:mod:`jaxrnn.cudnn`): ``kernel=None`` uses the kernel
exactly where it computes what the XLA path computes, ``True`` requires it (a ``ValueError``
naming the obstacle otherwise), ``False`` never uses it. The decision is made when ``scan`` is
traced, from the cell, the call's options and the backend.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import check_switch
from jaxrnn._core import Array, Carry, Cell, Params
from jaxrnn.cells import LSTMCarry, gru, lstm
from jaxrnn.cells._build import as_built
from jaxrnn.kernels import _library
from jaxrnn.kernels._ops import gru_sequence, lstm_sequence

__all__ = ["check_option", "reason", "run", "sharding_reason", "supports"]

# Operand and parameter dtypes the kernels implement (sums, gates and carry are float32).
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def check_option(kernel) -> bool | None:
    """``kernel`` itself, if it is ``None``, ``True`` or ``False``."""
    return check_switch("kernel", kernel)


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def supports(cell: Cell) -> tuple[bool, str]:
    """Whether the kernels compute ``cell`` exactly, and if not, why.

    Supported: :func:`jaxrnn.lstm` without ``peephole``, ``coupled`` or ``proj_size`` (any
    ``forget_bias``), and :func:`jaxrnn.gru` (either ``reset_after``), as their factories built
    them (not wrapped by a regulariser or otherwise modified), with ``param_dtype`` and
    ``dtype`` each float32 or bfloat16.

    >>> import jaxrnn as jr
    >>> from jaxrnn.kernels import supports
    >>> supports(jr.lstm(3, 8))
    (True, '')
    >>> supports(jr.lstm(3, 8, peephole=True))[1]
    'lstm(peephole=True): the kernels have no peephole connections'
    """
    if not isinstance(cell, Cell):
        return False, f"expected a jaxrnn Cell, got {type(cell).__name__}"
    cfg = dict(cell.config or ())
    factory = cfg.get("factory")
    if factory not in (lstm, gru):
        built = f"{_name(factory)} cells" if factory is not None else "custom cells"
        return False, f"the kernels implement jr.lstm and jr.gru only, not {built}"
    if not as_built(cell):
        return False, (
            f"this {factory.__name__} cell is not as jr.{factory.__name__} built it (a "
            "regulariser or another wrapper changed its functions)"
        )
    for opt, why in (
        ("peephole", "the kernels have no peephole connections"),
        ("coupled", "the kernels have no coupled input and forget gates"),
        ("proj_size", "the kernels have no projection"),
    ):
        if cfg.get(opt):
            return False, f"lstm({opt}={cfg[opt]!r}): {why}"
    for what in ("param_dtype", "dtype"):
        if jnp.dtype(cfg[what]) not in _DTYPES:
            return False, (
                f"{factory.__name__}({what}={jnp.dtype(cfg[what]).name}): the kernels compute "
                "with float32 or bfloat16 operands only"
            )
    return True, ""


def _backend_reason() -> str:
    device = jax.config.jax_default_device
    if device is None:
        platform = jax.default_backend()
    else:
        platform = device if isinstance(device, str) else device.platform
    if platform != "cpu":
        return f"the computation runs on {platform!r}; the kernels are for the CPU"
    return ""


def reason(cell: Cell, *, method, remat, resets) -> str:
    """Why :func:`jaxrnn.scan` of ``cell`` with these options keeps the XLA path, or ``""``."""
    ok, why = supports(cell)
    if not ok:
        return why
    if not (isinstance(method, str) and method == "sequential"):
        return f"method={method!r}: the kernels run the sequential recurrence only"
    if remat is not False:
        return f"remat={remat!r}: the kernels keep their own residuals (no rematerialisation)"
    if resets is not None:
        return "resets: the kernels do not restart segments"
    status = _library.status()
    if not status.available:
        return status.reason
    return _backend_reason()


def sharding_reason(params: Params) -> str:
    """Why the kernels cannot run on these shardings (explicit meshes), or ``""``.

    A kernel runs one device's rows over the whole sequence with whole weights: a batch split
    over a mesh runs per shard (:func:`run`), and a time axis split over one is gathered before
    a sequential scan (:func:`jaxrnn.scan`), but weights split over a mesh axis keep the XLA
    path.
    """
    if _sharding.explicit_mesh(params) is not None:
        return "params split over a mesh axis: the kernels need whole weights on every device"
    return ""


def run(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    time_major: bool,
) -> tuple[Carry, Array]:
    """``(carry, ys)`` of ``cell`` over ``xs`` on the kernels, as :func:`jaxrnn.scan` returns
    them: ``xs (*batch, T, I)``, or ``(T, *batch, I)`` when ``time_major``, and ``ys`` in the
    same layout and the cell's ``dtype``.

    ``carry`` and ``lengths`` are checked already; a traced length outside ``[0, T]`` acts as
    the nearest end, as on the XLA path. Under an explicit mesh that splits the batch of
    ``xs`` (:mod:`jaxrnn._sharding`), each device runs the kernels on its own rows
    (``jax.shard_map``), with the weights replicated; their gradients are summed over the
    devices.
    """
    batch_axes = tuple(range(1, xs.ndim - 1)) if time_major else tuple(range(xs.ndim - 2))
    mesh = _sharding.explicit_mesh(xs)
    spec = _sharding.batch_spec(xs, batch_axes) if mesh is not None else None
    if spec is None or all(s is None for s in spec):
        return _run_local(cell, params, xs, carry, lengths, reverse, time_major)
    axes = _sharding.axis_names(spec)
    rows = jax.sharding.PartitionSpec(*spec)
    time = jax.sharding.PartitionSpec(None, *spec) if time_major else rows
    carry_specs = jax.tree.map(lambda _: rows, carry)
    lengths_spec = None if lengths is None else rows

    def local(params, xs, carry, lengths):
        params = jax.tree.map(lambda w: jax.lax.pcast(w, axes, to="varying"), params)  # grads: psum
        return _run_local(cell, params, xs, carry, lengths, reverse, time_major)

    per_shard = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec(), time, carry_specs, lengths_spec),
        out_specs=(carry_specs, time),
        axis_names=frozenset(axes),
    )
    return per_shard(params, xs, carry, lengths)


def _run_local(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    time_major: bool,
) -> tuple[Carry, Array]:
    """:func:`run` on one device's arrays."""
    cfg = dict(cell.config)
    dtype = jnp.dtype(cfg["dtype"])
    hidden = cfg["hidden_size"]
    if time_major:
        num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    else:
        num_steps, batch_shape = xs.shape[-2], xs.shape[:-2]
    batch = math.prod(batch_shape)
    out_shape = (
        (num_steps, *batch_shape, hidden) if time_major else (*batch_shape, num_steps, hidden)
    )
    if num_steps == 0 or batch == 0:
        return carry, jnp.zeros(out_shape, dtype)
    seq = (num_steps, batch) if time_major else (batch, num_steps)
    x = xs.reshape(*seq, xs.shape[-1])
    if lengths is None:
        lens = jnp.full((batch,), num_steps, jnp.int32)
    else:
        lens = jnp.clip(lengths.reshape(batch), 0, num_steps).astype(jnp.int32)
        # Padding is never read: zeroed, NaN there cannot reach the weight gradients' matmuls.
        valid = jnp.arange(num_steps)[:, None] < lens[None, :]  # (T, B)
        valid = valid if time_major else valid.T
        x = jnp.where(valid[..., None], x, jnp.zeros((), x.dtype))
    flat = lambda a: a.reshape(batch, hidden)
    restore = lambda a: a.reshape(*batch_shape, hidden)
    reverse, batch_major = bool(reverse), not time_major
    try:
        if cfg["factory"] is lstm:
            p = params
            ys, hn, cn = lstm_sequence(
                x,
                p.w_ih,
                p.w_hh,
                p.b,
                flat(carry.h),
                flat(carry.c),
                lens,
                reverse,
                dtype,
                batch_major,
            )
            new_carry = LSTMCarry(restore(hn), restore(cn))
        else:
            p, reset_after = params, bool(cfg["reset_after"])
            ys, hn = gru_sequence(
                x,
                p.w_ih,
                p.w_hh,
                p.b_ih,
                p.b_hh,
                flat(carry),
                lens,
                reverse,
                reset_after,
                dtype,
                batch_major,
            )
            new_carry = restore(hn)
    except (TypeError, ValueError) as err:
        _explain_autodiff(err)
        raise
    return new_carry, ys.reshape(out_shape)


def _explain_autodiff(err: Exception) -> None:
    """Re-raises JAX's errors for forward-mode and second-order derivatives of the kernels as
    errors that say what to do."""
    text = str(err)
    if "forward-mode" in text or "cannot be differentiated" in text:
        what = "forward-mode" if "forward-mode" in text else "second-order"
        raise type(err)(
            f"the native kernels have reverse-mode derivatives only, not {what} ones "
            "(jax.jvp, jax.jacfwd, jax.hessian, or grad of grad): pass kernel=False to "
            "jr.scan / jr.layer / jr.bidirectional / jr.rnn for those"
        ) from err
