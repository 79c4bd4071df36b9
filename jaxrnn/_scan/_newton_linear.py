r"""The linear recurrences of :mod:`jaxrnn.newton`, solved in parallel over time by prefix scans.

Each Newton iteration, and each derivative of its solution, comes down to a linear recurrence
:math:`v_t = A_t v_{t-1} + b_t` whose coefficients :math:`A_t` are the Jacobians of the steps,
either whole :math:`D \times D` matrices ("full") or their diagonals. :func:`_linear_scan`
solves one with :func:`_prefix_scan`, a Hillis-Steele scan of the affine maps
:math:`v \mapsto A_t v + b_t`, and :func:`_kalman_gains` computes ELK's damping gains by the
same kind of scan. :func:`_apply` and :func:`_diagonal` act on either form of the Jacobians;
:func:`_shift` and :func:`_unshift` move a trajectory by one step (to the state entering each
step, and back).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# --- trajectories and Jacobians ------------------------------------------------------------


def _shift(states, first, axis=None):
    """``(first, states_1, ..., states_{T-1})``: the state entering each step.

    With ``axis`` (a :class:`~jaxrnn._scan.sequence_parallel.SeqAxis`) ``states`` is this
    device's chunk: the state entering it is the previous device's last (``first`` on the
    first device)."""
    if axis is not None:
        # the ppermute leaves zeros on the first device; a product, not a select, whose
        # transpose keeps the per-device types of shard_map
        only_first = axis.is_first().astype(first.dtype)
        first = axis.vary(first) * only_first + axis.from_previous(states[-1])
    return jnp.concatenate([first[None], states[:-1]], axis=0)


def _unshift(states, axis=None):
    """``(states_2, ..., states_T, 0)``: the inverse of :func:`_shift` up to its first entry
    (with ``axis``, the next device's first state in place of the 0, except on the last)."""
    after = jnp.zeros_like(states[:1]) if axis is None else axis.from_next(states[0])[None]
    return jnp.concatenate([states[1:], after], axis=0)


def _diagonal(jac, full: bool):
    return jnp.diagonal(jac, axis1=-2, axis2=-1) if full else jac


def _apply(jac, v, full: bool):
    if full:
        return jnp.einsum("...ij,...j->...i", jac, v, precision=jax.lax.Precision.HIGHEST)
    return jac * v


# --- linear recurrences by parallel prefix scan --------------------------------------------


def _prefix_scan(compose, elems, identity, axis=None):
    r"""All prefixes :math:`e_t \circ \dots \circ e_1` of an associative ``compose(earlier,
    later)`` over the leading axis, in :math:`\lceil \log_2 T \rceil` parallel rounds.

    Round :math:`k` composes every prefix with the one :math:`2^k` steps before it (the
    identity before the start), as Hillis and Steele (1986): :math:`O(T \log T)` work in
    :math:`O(\log T)` depth, in one ``fori_loop`` whose program does not grow with :math:`T`.
    (``jax.lax.associative_scan`` does :math:`O(T)` work but unrolls its :math:`2 \log_2 T`
    levels into the program; inside the Newton loop it compiled 4-7 times slower, and the
    slower the longer the sequence.)

    With ``axis``, ``elems`` is this device's chunk: its prefixes are composed after the
    composition of the chunks of the devices before it (one exchange of their totals).
    """
    num_steps = jax.tree.leaves(elems)[0].shape[0]
    # zeros_like(e) + identity: the padding has the elements' type (their sharding included)
    pad = jax.tree.map(lambda i, e: jnp.zeros_like(e) + i, identity, elems)

    def round_(k, prefixes):
        shift = jnp.left_shift(1, k)
        before = jax.tree.map(
            lambda p, e: jax.lax.dynamic_slice_in_dim(
                jnp.concatenate([p, e]), num_steps - shift, num_steps
            ),
            pad,
            prefixes,
        )
        return compose(before, prefixes)

    rounds = max(num_steps - 1, 0).bit_length()  # ceil(log2 T)
    prefixes = jax.lax.fori_loop(0, rounds, round_, elems)
    if axis is None:
        return prefixes
    before, _ = axis.exclusive(compose, jax.tree.map(lambda p: p[-1], prefixes), identity)
    return compose(jax.tree.map(lambda b: b[None], before), prefixes)


def _linear_scan(coef, rhs, full: bool, reverse: bool = False, axis=None):
    r"""Solve :math:`v_t = A_t v_{t-1} + b_t` (:math:`v_0 = 0`) over the leading axis, or
    :math:`v_t = A_t v_{t+1} + b_t` (:math:`v_{T+1} = 0`) when ``reverse``; :math:`A_t` are
    matrices when ``full``, diagonals otherwise. The affine maps :math:`v \mapsto A_t v + b_t`
    compose as :math:`(A_2, b_2) \circ (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2)`. With ``axis``,
    the recurrence runs over the devices' chunks in order (the opposite order when
    ``reverse``)."""
    if reverse:
        coef, rhs = jnp.flip(coef, 0), jnp.flip(rhs, 0)
        axis = None if axis is None else axis.flipped()

    def compose(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        a = jnp.matmul(a2, a1, precision=jax.lax.Precision.HIGHEST) if full else a2 * a1
        return a, _apply(a2, b1, full) + b2

    size = coef.shape[-1]
    one = jnp.eye(size, dtype=coef.dtype) if full else jnp.ones((size,), coef.dtype)
    _, v = _prefix_scan(compose, (coef, rhs), (one, jnp.zeros((size,), rhs.dtype)), axis)
    return jnp.flip(v, 0) if reverse else v


def _kalman_gains(a, damping: float, axis=None):
    r"""ELK's Kalman gains :math:`K_t` for diagonal dynamics ``a`` ``(T, *batch, D)``.

    The filtered variance follows :math:`P_t = (a_t^2 P_{t-1} + 1) / (\lambda a_t^2 P_{t-1} +
    \lambda + 1)`, a Möbius map of :math:`P_{t-1}`: the maps compose as the 2x2 matrices
    :math:`[[a_t^2, 1], [\lambda a_t^2, \lambda + 1]]` (normalised, since only their ratios
    matter), so one prefix scan gives every :math:`P_t` from :math:`P_0 = 0`.
    """
    a2 = a * a
    one = jnp.ones_like(a2)
    mats = jnp.stack(
        [jnp.stack([a2, one], -1), jnp.stack([damping * a2, (1 + damping) * one], -1)], -2
    )

    def compose(earlier, later):
        m = jnp.matmul(later, earlier, precision=jax.lax.Precision.HIGHEST)
        return m / jnp.max(m, axis=(-2, -1), keepdims=True)  # entries are >= 0

    prod = _prefix_scan(compose, mats, jnp.eye(2, dtype=a.dtype), axis)
    variance = prod[..., 0, 1] / prod[..., 1, 1]  # P_t, t = 1..T
    predicted = a2 * _shift(variance, jnp.zeros_like(variance[0]), axis) + 1
    return damping * predicted / (damping * predicted + 1)
