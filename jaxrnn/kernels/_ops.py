r"""One direction of an LSTM or GRU layer over a sequence, on the native kernels.

Each function computes what :func:`jaxrnn.scan` of the cell computes, with the batch flattened:
``xs (B, T, I)`` when ``batch_major``, else ``(T, B, I)`` (the outputs in the same layout),
carries ``(B, H)``, ``lengths (B,)`` in ``[0, T]``. Work is split where each part runs fastest:

* the forward kernel runs the whole recurrence: per step one register-tiled matmul of
  :math:`x_t W_{ih} + h_{t-1} W_{hh}` with the gate nonlinearities fused after it, the hidden
  units split across the cores;
* the backward kernel runs the recurrence backwards, producing the gate pre-activation
  cotangents :math:`\delta G_t` of every step; the weight and input gradients then are single
  matmuls over all steps: :math:`\partial W_{hh} = \sum_t h_{t-1}^\top \delta G_t`,
  :math:`\partial W_{ih} = \sum_t x_t^\top \delta G_t`, :math:`\partial x_t = \delta G_t
  W_{ih}^\top` (large enough for XLA's GEMM to run near the machine's peak; in bf16 on AMX
  tiles they run on the library's own GEMMs, ``jaxrnn_tn_matmul`` and ``jaxrnn_nt_matmul``).

Precision follows :mod:`jaxrnn.precision`: ``dtype`` is the matmul operand dtype (float32, or
bfloat16 with float32 sums); the carry, gates and cotangents are float32. In bfloat16, where the
CPU has bf16 units (``jr.kernels.status().bf16_dot``), the backward pass's matmuls round their
cotangent operand to bf16 as well, in the kernel and in XLA's weight-gradient GEMMs, which then
run on those units (AMX tiles, where the CPU has them); elsewhere they take it in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _sharding
from jaxrnn.kernels import _library

__all__ = ["gru_sequence", "lstm_sequence"]

_F32 = jnp.float32


def _ffi(target: str, shapes, *args, aliases=None, **attrs):
    """An FFI call of ``target`` (its handler runs the batch of a ``vmap`` one at a time).

    ``aliases`` maps argument indices to the indices of results written in place over them.
    """
    _library.require()
    call = jax.ffi.ffi_call(
        target,
        [jax.ShapeDtypeStruct(s, _F32) for s in shapes],
        vmap_method="sequential",
        input_output_aliases=aliases,
    )
    outs = call(*args, **{k: np.int32(v) for k, v in attrs.items()})
    # Inside jax.shard_map (a batch split over an explicit mesh, _dispatch.run) the results
    # differ per device as the operands do; the FFI types them as the same on every device.
    varying = sorted(set().union(*(_sharding.varying_axes(a) for a in args)))
    if varying:
        outs = [jax.lax.pcast(o, tuple(varying), to="varying") for o in outs]
    return outs


def _kernel_weight(w, dtype):
    """A weight as the kernels take it: in the matmul ``dtype``, except float32 weights of bf16
    matmuls, which the kernels round to bf16 themselves as they pack them (as ``astype`` does:
    to nearest, ties to even), saving a pass over the weights and their bf16 copy."""
    return w if dtype == jnp.bfloat16 and w.dtype == _F32 else w.astype(dtype)


def _operands(xs, w_ih, dtype):
    """``xs`` and ``w_ih`` as the kernels take them (:func:`_kernel_weight`); in bfloat16 an odd
    input size is padded to even with a zero feature (bf16 dot products read pairs), which
    changes no sum."""
    x, w = xs.astype(dtype), _kernel_weight(w_ih, dtype)
    if dtype == jnp.bfloat16 and x.shape[-1] % 2:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, 1)])
        w = jnp.pad(w, [(0, 1), (0, 0)])
    return x, w


def _on_bf16_units(dtype) -> bool:
    """Whether the backward pass's matmuls take bf16 cotangents: ``dtype`` is bfloat16 and the
    CPU has bf16 units (``jr.kernels.status().bf16_dot``), as the backward kernel decides too."""
    return dtype == jnp.bfloat16 and _library.status().bf16_dot


# Whether _t_matmul materialises a^T for XLA: None, where it pays (bf16 on the CPU's bf16
# units). Whether the backward pass's matmuls over all steps run on the library's own GEMMs on
# AMX tiles (jaxrnn_tn_matmul, jaxrnn_nt_matmul): None, in bf16 where the CPU's bf16 units are
# AMX tiles. benchmarks/bench_kernel_choices.py sets both to time each way; they are read when
# a call is traced.
MATERIALISE_T: bool | None = None
NATIVE_GEMM: bool | None = None


def _native_gemm(dtype) -> bool:
    """Whether the backward pass's matmuls in ``dtype`` run on the library's AMX GEMMs."""
    on_tiles = dtype == jnp.bfloat16 and _library.status().amx
    return on_tiles if NATIVE_GEMM is None else bool(NATIVE_GEMM) and on_tiles


def _t_matmul(a, g, dtype):
    """``a^T g`` over the leading (T, B) axes, ``a`` rounded to the matmul ``dtype``.

    Where the CPU has AMX tiles, a bf16 product runs on the library's GEMM on them
    (``jaxrnn_tn_matmul``: both operands packed into tiles, ``g`` rounded to bf16 as it is
    packed), which beats XLA's there (``bench_kernel_choices.py --choices gemm``). Elsewhere,
    in float32 (and bf16 emulated as float32 products) one ``dot_general`` contracting the
    rows of both: XLA:CPU's GEMM packs its operands itself, and a transpose materialised
    before it costs more than it saves (``a`` is an XLA fusion here, whose transpose XLA
    computes in a slow loop). On the CPU's bf16 units it is the other way round, and ``a^T``
    is materialised row-major. Measured with ``bench_kernel_choices.py --choices transpose``
    (benchmarks/README.md).
    """
    a = a.reshape(-1, a.shape[-1]).astype(dtype)
    g = g.reshape(-1, g.shape[-1])
    if _native_gemm(dtype):
        return _ffi("jaxrnn_tn_matmul", [(a.shape[1], g.shape[1])], a, g.astype(_F32))[0]
    units = _on_bf16_units(dtype)
    if units:  # both operands bf16, on the CPU's bf16 units
        g = g.astype(dtype)
    else:
        a = a.astype(_F32)
    if units if MATERIALISE_T is None else MATERIALISE_T:
        return jnp.matmul(_materialised_t(a), g, preferred_element_type=_F32)
    rows = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, g, rows, preferred_element_type=_F32)


def _materialised_t(a):
    """``a.T`` as a row-major array. The barrier keeps XLA from folding the transpose into the
    matmul; with it alone XLA:CPU gives the bfloat16 transpose a column-major layout, which
    sends the matmul to its slow generic GEMM again, so the transpose is also split into rows
    of 16 (a reshape that only the row-major layout allows) and merged back."""
    rows, cols = a.shape[1], a.shape[0]
    if cols % 16:
        return jax.lax.optimization_barrier(a.T)
    return jax.lax.optimization_barrier(a.T.reshape(rows, cols // 16, 16)).reshape(rows, cols)


def _after(x, *deps):
    """``x`` unchanged, but computed after ``deps``: a zero made of the first element of each
    (none of an empty one) is added, ``nan_to_num`` keeping it zero for any value. XLA:CPU
    drops optimization barriers before it schedules, so only a data dependency orders two
    operations; the backward passes order their passes over (T, B, *) arrays with it, so that
    a buffer is free before the next is made or can take its place. A training step whose
    temporaries exceed 32 MiB, the most glibc's malloc serves from its heap, maps and faults
    in fresh pages at every step (benchmarks/bench_malloc.py)."""
    zero = sum(jnp.nan_to_num(d.ravel()[:1].astype(_F32).sum()) for d in deps) * 0
    return x + zero.astype(x.dtype)


def _input_grads(xs, w_ih, dg, dtype):
    """``(dxs, dw_ih, db)`` from the gate cotangents of the input side ``dg (T, B, G H)``."""
    w = w_ih.astype(dtype)
    if _native_gemm(dtype):  # dG W_ih^T on the library's AMX GEMM, as _t_matmul's products
        rows = dg.reshape(-1, dg.shape[-1]).astype(_F32)
        dxs = _ffi("jaxrnn_nt_matmul", [(rows.shape[0], w.shape[0])], rows, w)[0]
        dxs = dxs.reshape(*dg.shape[:-1], w.shape[0])
    elif _on_bf16_units(dtype):
        dxs = jnp.matmul(dg.astype(dtype), w.T, preferred_element_type=_F32)
    else:
        dxs = jnp.matmul(dg, w.astype(_F32).T)
    return dxs.astype(xs.dtype), _t_matmul(xs, dg, dtype).astype(w_ih.dtype), dg.sum(axis=(0, 1))


# ---------------------------------------------------------------------------------------------
# LSTM


def _sizes(xs, w_hh, batch_major):
    steps, batch = (xs.shape[1], xs.shape[0]) if batch_major else xs.shape[:2]
    return steps, batch, w_hh.shape[0]


def _seq(steps, batch, width, batch_major):
    return (batch, steps, width) if batch_major else (steps, batch, width)


def _lstm_forward(xs, w_ih, w_hh, b, h0, c0, lengths, reverse, dtype, batch_major, train):
    steps, batch, hidden = _sizes(xs, w_hh, batch_major)
    seq = functools.partial(_seq, steps, batch, batch_major=batch_major)
    saved = (seq(4 * hidden), seq(hidden)) if train else ((0,), (0,))
    shapes = (seq(hidden), (batch, hidden), (batch, hidden), *saved)
    x, w_x = _operands(xs, w_ih, dtype)
    return _ffi(
        "jaxrnn_lstm_forward",
        shapes,
        x,
        w_x,
        _kernel_weight(w_hh, dtype),
        b.astype(_F32),
        h0,
        c0,
        lengths,
        reverse=reverse,
        train=train,
        batch_major=batch_major,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def lstm_sequence(xs, w_ih, w_hh, b, h0, c0, lengths, reverse: bool, dtype, batch_major: bool):
    """``(ys, h_T, c_T)`` of ``jr.lstm`` (no peephole, coupling or projection) over ``xs``.

    ``ys`` in ``dtype``, zero past each row's length, where the carry is frozen.
    """
    ys, hn, cn, _, _ = _lstm_forward(
        xs, w_ih, w_hh, b, h0, c0, lengths, reverse, dtype, batch_major, False
    )
    return ys.astype(dtype), hn, cn


def _lstm_fwd(xs, w_ih, w_hh, b, h0, c0, lengths, reverse, dtype, batch_major):
    ys, hn, cn, acts, cs = _lstm_forward(
        xs, w_ih, w_hh, b, h0, c0, lengths, reverse, dtype, batch_major, True
    )
    residuals = (xs, w_ih, w_hh, b, h0, c0, lengths, acts, cs)
    return (ys.astype(dtype), hn, cn), residuals


def _lstm_bwd(reverse, dtype, batch_major, residuals, cotangents):
    xs, w_ih, w_hh, b, h0, c0, lengths, acts, cs = residuals
    dys, dhn, dcn = cotangents
    steps, batch, hidden = _sizes(xs, w_hh, batch_major)
    seq = functools.partial(_seq, steps, batch, batch_major=batch_major)
    shapes = (seq(4 * hidden), seq(hidden), (batch, hidden), (batch, hidden))
    # Written in place, each element read before it is written: the gate cotangents over the
    # saved activations, and the carries h_{t-1} entering each step (dW_hh's operand) over the
    # saved cell states. The training step keeps no (T, B, 4H) or (T, B, H) buffer more.
    dg, hprev, dh0, dc0 = _ffi(
        "jaxrnn_lstm_backward",
        shapes,
        acts,
        cs,
        h0,
        c0,
        _kernel_weight(w_hh, dtype),
        lengths,
        dys.astype(_F32),
        dhn.astype(_F32),
        dcn.astype(_F32),
        aliases={0: 0, 1: 1},
        reverse=reverse,
        batch_major=batch_major,
        bf16=dtype == jnp.bfloat16,
    )
    dxs, dw_ih, db = _input_grads(xs, w_ih, dg, dtype)
    dw_hh = _t_matmul(hprev, dg, dtype).astype(w_hh.dtype)
    return dxs, dw_ih, dw_hh, db.astype(b.dtype), dh0, dc0, None


lstm_sequence.defvjp(_lstm_fwd, _lstm_bwd)


# ---------------------------------------------------------------------------------------------
# GRU


def _gru_forward(xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, reset_after, dtype, bm, train):
    steps, batch, hidden = _sizes(xs, w_hh, bm)
    # Saved: r, z, n, and with reset_after h W_hn + b_hn (apart: see _gru_bwd).
    hns = _seq(steps, batch, hidden, bm) if reset_after else (0,)
    saved = (_seq(steps, batch, 3 * hidden, bm), hns) if train else ((0,), (0,))
    shapes = (_seq(steps, batch, hidden, bm), (batch, hidden), *saved)
    x, w_x = _operands(xs, w_ih, dtype)
    return _ffi(
        "jaxrnn_gru_forward",
        shapes,
        x,
        w_x,
        _kernel_weight(w_hh, dtype),
        b_ih.astype(_F32),
        b_hh.astype(_F32),
        h0,
        lengths,
        reverse=reverse,
        reset_after=reset_after,
        train=train,
        batch_major=bm,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def gru_sequence(
    xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse: bool, reset_after: bool, dtype, bm: bool
):
    """``(ys, h_T)`` of ``jr.gru(reset_after=reset_after)`` over ``xs`` (batch-major if
    ``bm``); ``ys`` in ``dtype``."""
    args = (xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, reset_after, dtype, bm)
    ys, hn, _, _ = _gru_forward(*args, False)
    return ys.astype(dtype), hn


def _gru_fwd(xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, reset_after, dtype, bm):
    args = (xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, reset_after, dtype, bm)
    ys, hn, acts, hns = _gru_forward(*args, True)
    residuals = (xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, ys, acts, hns)
    return (ys.astype(dtype), hn), residuals


def _gru_bwd(reverse, reset_after, dtype, bm, residuals, cotangents):
    xs, w_ih, w_hh, b_ih, b_hh, h0, lengths, ys, acts, hns = residuals
    dys, dhn = cotangents
    steps, batch, hidden = _sizes(xs, w_hh, bm)
    seq = functools.partial(_seq, steps, batch, batch_major=bm)
    # The cotangents overwrite what they are computed from, as the LSTM's do: dg the saved
    # r, z, n (each read before it is written). The second result, (T, B, H), is dpn with
    # reset_after (written over the saved h W_hn + b_hn), else r * h, the operand of dW_hn; the
    # third the carries h_{t-1} entering each step, written over the outputs.
    dg, aux, hprev, dh0 = _ffi(
        "jaxrnn_gru_backward",
        (seq(3 * hidden), seq(hidden), seq(hidden), (batch, hidden)),
        acts,
        hns,
        ys,
        h0,
        _kernel_weight(w_hh, dtype),
        lengths,
        dys.astype(_F32),
        dhn.astype(_F32),
        aliases={0: 0, 1: 1, 2: 2} if reset_after else {0: 0, 2: 2},
        reverse=reverse,
        reset_after=reset_after,
        batch_major=bm,
        bf16=dtype == jnp.bfloat16,
    )
    # Each order below keeps one (T, B, *) array fewer alive than XLA's own schedule would: a
    # training step's temporaries above 32 MiB are fresh pages at every step (see _after).
    db_hh = dg.sum(axis=(0, 1))
    if reset_after:  # dg is the recurrent side [dr, dz, r * dn]; the input side has dn
        dw_hh = _t_matmul(hprev, dg, dtype)
        # The input side, [dr, dz, dn], written over dg once the recurrent side's reads are done.
        n_block = jnp.arange(3 * hidden) >= 2 * hidden
        dgx = jnp.where(n_block, jnp.tile(_after(aux, dw_hh, db_hh), 3), dg)
    else:  # dg = [dr, dz, dn] on both sides; W_hn reads r * h
        dgx = dg
        dw_hn = _t_matmul(aux, dg[..., 2 * hidden :], dtype)
        # Each column slice is a copy for XLA's matmul: the second is made once the first is free.
        dw_hrz = _t_matmul(hprev, _after(dg[..., : 2 * hidden], dw_hn), dtype)
        dw_hh = jnp.concatenate([dw_hrz, dw_hn], axis=-1)
    dxs, dw_ih, db_ih = _input_grads(xs, w_ih, dgx, dtype)
    return (
        dxs,
        dw_ih,
        dw_hh.astype(w_hh.dtype),
        db_ih.astype(b_ih.dtype),
        db_hh.astype(b_hh.dtype),
        dh0,
        None,
    )


gru_sequence.defvjp(_gru_fwd, _gru_bwd)
