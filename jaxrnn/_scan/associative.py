"""``jaxrnn.scan(..., method="associative")``: a cell's linear recurrence
(:class:`~jaxrnn.LinearRecurrence`) evaluated by a parallel prefix scan,
``jax.lax.associative_scan``, in linear space or, for positive coefficients, in log space.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_step_keeps_carry_dtype
from jaxrnn._core import Array
from jaxrnn._masks import expand
from jaxrnn._scan.sequential import save_nonlinear, scan_steps, step_policy

# method="associative". The carries of h_t = a_t h_(t-1) + b_t are the prefix compositions of
# the affine maps h -> a_t h + b_t; composing (a1, b1) then (a2, b2) gives (a1 a2, a2 b1 + b2),
# an associative operation, so jax.lax.associative_scan evaluates all T prefixes in O(log T)
# depth. The masks of jr.scan fold into the coefficients, and the initial carry is applied to
# the composed maps at the end: h_t = A_t h_0 + B_t.


def associative_steps(cell, params, xs, carry, valid, reverse, remat, reset=None, axis=None):
    """The cell's linear recurrence over time-major ``xs`` by ``jax.lax.associative_scan``, with
    the masks of :func:`~jaxrnn._scan.sequential.scan_steps`; the same ``(carry, ys)``.

    With ``axis`` (a :class:`~jaxrnn._scan.sequence_parallel.SeqAxis`, inside ``shard_map``)
    ``xs`` is this device's chunk of the sequence: the chunks' composed maps are combined
    across the devices, ``ys`` is the chunk's outputs and the carry the whole sequence's."""
    if xs.shape[0] == 0:  # nothing to compose: the loop's empty result
        return scan_steps(cell, params, xs, carry, valid, False, reverse, 1, save_nonlinear)
    if valid is not None:
        xs = jnp.where(expand(valid, xs), xs, jnp.zeros((), xs.dtype))
    check_step_keeps_carry_dtype(cell.apply, params, carry, xs, xs.dtype)
    flags, initial = (None, carry) if reset is None else reset
    lin = cell.linear

    def evaluate(params, xs, carry, initial):
        xp = xs if cell.project is None else cell.project(params, xs)
        options = dict(valid=valid, flags=flags, reverse=reverse, axis=axis)
        if lin.log_coefficients is not None:
            coefficients = lin.log_coefficients(params, xp)
            compose = functools.partial(_log_space, **options)
        else:
            coefficients = lin.coefficients(params, xp)
            compose = functools.partial(_linear_space, **options)
        treedef = jax.tree.structure(carry)
        leaves = (treedef.flatten_up_to(t) for t in (*coefficients, carry, initial))
        pairs = [compose(*leaf) for leaf in zip(*leaves, strict=True)]
        hs = treedef.unflatten([h for h, _ in pairs])
        ys = lin.readout(params, hs, xp)
        if valid is not None:
            ys = jax.tree.map(lambda v: jnp.where(expand(valid, v), v, jnp.zeros((), v.dtype)), ys)
        return treedef.unflatten([final for _, final in pairs]), ys

    if remat is not False:
        evaluate = jax.checkpoint(evaluate, prevent_cse=False, policy=step_policy(remat))
    return evaluate(params, xs, carry, initial)


def _linear_space(a, b, h0, h_reset, *, valid, flags, reverse, axis):
    """All ``h_t`` of ``h_t = a_t h_(t-1) + b_t`` from ``h_0`` (one leaf; time axis 0), and the
    carry after the step processed last.

    A step beyond ``lengths`` is the identity map ``(1, 0)``; the carry entering a reset step
    is ``h_reset``, so a reset step maps to ``(0, a h_reset + b)``, a masked one included (as
    in the loop, which resets the carry there too). With ``axis``, the map of the chunks
    processed before this device's, :math:`(A_e, B_e)`, gives the carry entering the chunk,
    :math:`A_e h_0 + B_e`."""
    if valid is not None:
        ok = expand(valid, a)
        a = jnp.where(ok, a, jnp.ones((), a.dtype))
        b = jnp.where(ok, b, jnp.zeros((), b.dtype))
    if flags is not None:
        restart = expand(flags, a)
        b = jnp.where(restart, a * h_reset + b, b)
        a = jnp.where(restart, jnp.zeros((), a.dtype), a)
    a, b = jax.lax.associative_scan(_compose_affine, (a, b), reverse=reverse)
    last = 0 if reverse else -1  # the step processed last
    if axis is None:
        hs = a * h0 + b
        return hs, hs[last]
    one, zero = jnp.ones((), a.dtype), jnp.zeros((), b.dtype)
    (a_e, b_e), (a_t, b_t) = axis.exclusive(_compose_affine, (a[last], b[last]), (one, zero))
    return a * (a_e * h0 + b_e) + b, a_t * h0 + b_t


def _compose_affine(first, then):
    """The map ``h -> a2 (a1 h + b1) + b2`` of ``first = (a1, b1)``, ``then = (a2, b2)``."""
    a1, b1 = first
    a2, b2 = then
    return a1 * a2, a2 * b1 + b2


def _log_space(log_a, log_b, h0, h_reset, *, valid, flags, reverse, axis):
    """``_linear_space`` for positive ``a = exp(log_a)``, ``b = exp(log_b)``, composed in log
    space. Each composed map is ``(keep, S, Q)``: ``h -> exp(S) h + exp(Q)`` if ``keep`` (no
    reset inside it), else ``h -> exp(S) h_reset + exp(Q)``, with ``S`` the sum of ``log_a``
    since its last reset. ``h_0`` and ``h_reset`` enter linearly and may have any sign."""
    keep = jnp.ones_like(log_a, dtype=bool)  # log_a's type: its sharding under explicit meshes
    if flags is not None:
        keep = jnp.broadcast_to(~expand(flags, log_a), log_a.shape)
    if valid is not None:  # a step beyond `lengths` is the identity map: exp(0) h + exp(-inf)
        ok = expand(valid, log_a)
        log_a = jnp.where(ok, log_a, jnp.zeros((), log_a.dtype))
        log_b = jnp.where(ok, log_b, jnp.full((), -jnp.inf, log_b.dtype))
    keep, log_a, log_b = jax.lax.associative_scan(
        _compose_log, (keep, log_a, log_b), reverse=reverse
    )
    last = 0 if reverse else -1  # the step processed last
    if axis is None:
        hs = _apply_log((keep, log_a, log_b), h0, h_reset, flags)
        return hs, hs[last]
    total = (keep[last], log_a[last], log_b[last])
    identity = (jnp.ones((), bool), jnp.zeros((), log_a.dtype), jnp.full((), -jnp.inf, log_b.dtype))
    before, everything = axis.exclusive(_compose_log, total, identity)
    entering = _apply_log(before, h0, h_reset, flags)
    return _apply_log((keep, log_a, log_b), entering, h_reset, flags), _apply_log(
        everything, h0, h_reset, flags
    )


def _apply_log(maps, h, h_reset, flags):
    """The log-space maps ``(keep, S, Q)`` applied to ``h``: ``exp(S) h + exp(Q)``, with
    ``h_reset`` in place of ``h`` where a reset is inside the map."""
    keep, log_a, log_b = maps
    start = h if flags is None else jnp.where(keep, h, h_reset)
    return jnp.exp(log_a) * start + jnp.exp(log_b)


def _compose_log(first, then):
    """``_compose_affine`` of two ``(keep, S, Q)`` maps in log space (see :func:`_log_space`)."""
    k1, s1, q1 = first
    k2, s2, q2 = then
    neg_inf = jnp.full((), -jnp.inf, s2.dtype)
    s = s2 + jnp.where(k2, s1, jnp.zeros((), s1.dtype))
    q = _logaddexp(jnp.where(k2, s2, neg_inf) + q1, q2)
    return k1 & k2, s, q


@jax.custom_jvp
def _logaddexp(x: Array, y: Array) -> Array:
    """``jnp.logaddexp`` whose derivative is 0, not NaN, where both arguments are ``-inf``
    (the empty sums of masked steps)."""
    return jnp.logaddexp(x, y)


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    out = jnp.logaddexp(x, y)
    ref = jnp.where(jnp.isfinite(out), out, jnp.zeros((), out.dtype))
    return out, jnp.exp(x - ref) * tx + jnp.exp(y - ref) * ty
