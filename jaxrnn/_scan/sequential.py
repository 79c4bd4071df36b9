"""The sequential evaluation of :func:`jaxrnn.scan`: a ``jax.lax.scan`` over time with the masks
of ``lengths`` and ``resets``, what each step keeps for the backward pass (``remat``), and
``remat="sqrt"``'s two-level checkpointing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import check_step_keeps_carry_dtype
from jaxrnn._masks import expand
from jaxrnn._scan.newton import newton_scan

__all__ = ["save_nonlinear"]

# Primitives whose outputs the backward pass of a step keeps (``remat=False``): matmuls,
# transcendental functions and reductions, which cost far more to recompute than to store.
# Everything else in a step (adds, multiplies, ``1 - s``, splits, selects) is cheap elementwise
# work that XLA recomputes inside the backward loop's fusions instead of writing it to memory and
# reading it back (benchmarks/README.md, "What the backward pass keeps", has the measurement).
_SAVED_PRIMITIVES = frozenset(
    {
        "dot_general",
        "conv_general_dilated",
        "logistic",
        "tanh",
        "exp",
        "exp2",
        "log",
        "log1p",
        "expm1",
        "erf",
        "erfc",
        "erf_inv",
        "sin",
        "cos",
        "tan",
        "atan2",
        "pow",
        "sqrt",
        "rsqrt",
        "cbrt",
        "cumsum",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "argmax",
        "argmin",
    }
)


def save_nonlinear(prim, *_, **__) -> bool:
    """``jax.checkpoint`` policy of ``jaxrnn.scan(remat=False)``.

    Saves the outputs of matmuls, convolutions, transcendental functions and reductions; the
    elementwise arithmetic between them is recomputed in the backward pass.

    >>> import jax, jaxrnn as jr
    >>> jr.save_nonlinear(jax.lax.logistic_p), jr.save_nonlinear(jax.lax.mul_p)
    (True, False)
    """
    return prim.name in _SAVED_PRIMITIVES


# remat="sqrt": two-level checkpointing. Even remat=True keeps one carry per step, O(T), which
# for long sequences (T in the tens of thousands) dominates a training step's memory. Cutting
# the sequence into segments of S ~ sqrt(T) steps and keeping only the carries at segment
# boundaries, the backward pass recomputes one segment at a time, keeping that segment's
# per-step residuals (policy save_nonlinear) only while it is differentiated: O(sqrt(T))
# memory for about one more forward pass of compute, the same cost as remat=True.
SQRT = object()  # the sentinel step_policy returns for remat="sqrt"


def step_policy(remat):
    """The ``jax.checkpoint`` policy of one step for ``remat`` (``SQRT`` for ``"sqrt"``)."""
    if remat is True:
        return None  # keep nothing but the carry: recompute the whole step
    if remat is False:
        return save_nonlinear
    if isinstance(remat, str):
        if remat == "sqrt":
            return SQRT
    elif callable(remat):
        return remat
    raise TypeError(
        f'remat: expected False, True, "sqrt" or a jax.checkpoint policy, got {remat!r}'
    )


def _segment_length(num_steps: int) -> int:
    """Steps per segment of ``remat="sqrt"``: ``ceil(sqrt(T))`` (1 for ``T = 0``).

    The memory of the backward pass is about ``T / S`` boundary carries plus ``S`` steps'
    residuals, least near ``S = sqrt(T)``. (A step's residuals are a few carries' worth, so a
    somewhat shorter segment would do slightly better; this is the place to tune it.)
    """
    return math.isqrt(num_steps - 1) + 1 if num_steps > 0 else 1


def sqrt_scan(run, carry, num_steps: int, reverse: bool):
    """``remat="sqrt"``: ``run`` over ``T // S`` checkpointed segments of ``S`` steps, then rest.

    The outer scan keeps only each segment's initial carry; its backward pass recomputes one
    segment at a time with the per-step policy. The ``T mod S`` remaining steps (the last ones
    in time order, hence run first when ``reverse``) form one short scan of their own, so xs is
    neither padded nor copied: every segment slices its own steps out of it.
    """
    seg_len = _segment_length(num_steps)
    num_segs, rest = divmod(num_steps, seg_len)

    def segment(carry, k):
        return run(carry, k * seg_len, seg_len, save_nonlinear)

    def segments(carry):
        body = jax.checkpoint(segment, prevent_cse=False, policy=None)  # keep only the carry
        carry, ys = jax.lax.scan(body, carry, jnp.arange(num_segs), reverse=reverse)
        return carry, jax.tree.map(lambda v: v.reshape((num_steps - rest, *v.shape[2:])), ys)

    def remainder(carry):
        return run(carry, num_steps - rest, rest, save_nonlinear)

    if not num_segs:  # T = 0
        return remainder(carry)
    if not rest:
        return segments(carry)
    if reverse:
        carry, ys_rest = remainder(carry)
        carry, ys = segments(carry)
    else:
        carry, ys = segments(carry)
        carry, ys_rest = remainder(carry)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_rest)


def _masked_body(step, params, initial):
    """The scan body of :func:`scan_steps`: restart the carry where flagged, then step, keeping
    the carry (and zeroing the output) at padded steps."""

    def body(carry, inp):
        x, ok, restart = inp
        if restart is not None:
            carry = jax.tree.map(lambda c, c0: jnp.where(expand(restart, c), c0, c), carry, initial)
        new_carry, y = step(params, carry, x)
        new_carry = _sharding.like(new_carry, carry)  # explicit meshes: the carry's own type
        if ok is not None:
            new_carry = jax.tree.map(lambda n, o: jnp.where(expand(ok, n), n, o), new_carry, carry)
            y = jax.tree.map(lambda v: jnp.where(expand(ok, v), v, jnp.zeros((), v.dtype)), y)
        return new_carry, y

    return body


def scan_steps(
    cell,
    params,
    xs,
    carry,
    valid,
    hoist,
    reverse,
    unroll,
    policy,
    reset=None,
    newton=None,
    remat=False,
    axis=None,
):
    """``lax.scan`` of the cell over time-major ``xs``, masked by ``valid`` ``(T, *batch)``;
    ``reset = (flags (T, *batch), initial carry)`` restarts the carry where a flag is set.
    With ``newton`` (a :class:`~jaxrnn.newton.Newton`), ``jaxrnn.newton.newton_scan`` replaces
    ``lax.scan``; the step is then not checkpointed, and ``remat`` other than ``False``
    checkpoints the whole solve instead. ``axis`` (a
    :class:`~jaxrnn._scan.sequence_parallel.SeqAxis`, Newton only): ``xs`` is this device's
    chunk of a sequence split over that mesh axis."""
    if valid is not None:
        # Padding is never read: zero it before any arithmetic so that NaN or inf there cannot
        # leak into values or gradients.
        xs = jnp.where(expand(valid, xs), xs, jnp.zeros((), xs.dtype))
    if hoist:
        inputs, step = cell.project(params, xs), cell.step  # one matmul for all steps
    else:
        inputs, step = xs, cell.apply

    check_step_keeps_carry_dtype(step, params, carry, inputs, xs.dtype)

    flags, initial = (None, None) if reset is None else reset

    scan_inputs = (inputs, valid, flags)

    if newton is not None:
        batch_ndim = xs.ndim - 2 - cell.spatial_dims  # xs: (T, *batch, *spatial, features)

        split = {} if axis is None else {"sequence_axis": axis.name}

        def solve(params, carry, scan_inputs, initial):
            body = _masked_body(step, params, initial)
            return newton_scan(
                body,
                carry,
                scan_inputs,
                reverse=reverse,
                options=newton,
                batch_ndim=batch_ndim,
                **split,
            )

        if remat is not False:
            solve = jax.checkpoint(solve, prevent_cse=False, policy=policy)
        return solve(params, carry, scan_inputs, initial)

    body = jax.checkpoint(_masked_body(step, params, initial), prevent_cse=False, policy=policy)
    return jax.lax.scan(body, carry, scan_inputs, reverse=reverse, unroll=unroll)
