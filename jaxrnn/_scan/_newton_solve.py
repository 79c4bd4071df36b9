r"""The solvers behind :mod:`jaxrnn.newton`'s derivatives, and what a failed solve does.

The tangent and adjoint recurrences of a Newton solution (:func:`jaxrnn._scan.newton`'s
``_trajectory_jvp``) are linear: :class:`_LinearSolver` solves them with one associative scan
for full Jacobians, or by iterative refinement (:func:`_refine`) around the diagonal ones.
:func:`_on_failure` decides what an unconverged solve returns: the sequential result, or a
:class:`NewtonConvergenceError` raised from the host.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._scan._newton_linear import _linear_scan, _unshift

__all__ = ["NewtonConvergenceError"]

# ``cfg`` below is a ``jaxrnn._scan.newton._Config`` (typed ``Any``: this module is imported by
# that one, not the other way round).


class NewtonConvergenceError(RuntimeError):
    """Newton's iteration did not reach its tolerance and ``on_failure="error"``."""


def _on_failure(cfg: Any, converged, value, sequential, what: str, k, err):
    """``value`` when converged; else the sequential result, or an error."""
    if cfg.on_failure == "sequential":
        return jax.lax.cond(converged, lambda: value, sequential)
    jax.debug.callback(functools.partial(_raise_unless, what=what, tol=cfg.tol), converged, k, err)
    return value


def _raise_unless(converged, iterations, residual, *, what: str, tol: float) -> None:
    if not np.all(converged):
        raise NewtonConvergenceError(
            f"newton_scan: {what} did not converge: residual {np.max(residual):.3g} after "
            f"{np.max(iterations)} iterations, tolerance {tol:.3g}. Raise max_iters, loosen "
            'tol, add damping, or use on_failure="sequential".'
        )


class _LinearSolver(NamedTuple):
    r"""Solvers of the tangent recurrence :math:`v = S v + b` and of the adjoint one
    :math:`\lambda = S^\top \lambda + b`, :math:`(S v)_t = J_t v_{t-1}`.

    Full Jacobians: one associative scan each. Diagonal ones: iterative refinement,
    :math:`v \leftarrow v + (I - S_d)^{-1} (b - (I - S) v)` with the diagonal part :math:`S_d`
    solved by an associative scan and :math:`(I - S) v` applied exactly (Jacobian-vector or
    vector-Jacobian products); as for the forward iteration, step :math:`t` is exact after
    :math:`t` rounds, and the rounds stop at ``tol``.
    """

    step: Any
    cfg: Any
    consts: Any
    prev: jax.Array
    xs: Any
    jac: jax.Array

    def forward(self, matvec, rhs):
        full, axis = self.cfg.full, self.cfg.axis
        if full:
            return _linear_scan(self.jac, rhs, full, axis=axis)
        approx = functools.partial(_linear_scan, self.jac, full=full, axis=axis)
        return _refine(self.cfg, matvec, rhs, approx, self._sequential_forward)._finish(
            self.cfg, "the tangent recurrence"
        )

    def adjoint(self, vecmat, rhs):
        full, axis = self.cfg.full, self.cfg.axis
        # lambda_t = b_t + J_{t+1}^T lambda_{t+1}: the coefficient at t is J_{t+1}^T.
        coef = _unshift(jnp.swapaxes(self.jac, -1, -2) if full else self.jac, axis)
        if full:
            return _linear_scan(coef, rhs, full, reverse=True, axis=axis)
        approx = functools.partial(_linear_scan, coef, full=full, reverse=True, axis=axis)
        return _refine(self.cfg, vecmat, rhs, approx, self._sequential_adjoint)._finish(
            self.cfg, "the adjoint (gradient) recurrence"
        )

    def _step_at(self, h, x):
        return self.step(h, x, *self.consts)[0]

    def _sequential_forward(self, rhs):
        def one(v, inputs):
            h, x, b = inputs
            v = jax.jvp(lambda h: self._step_at(h, x), (h,), (v,))[1] + b
            return v, v

        zero = jnp.zeros_like(self.prev[0])
        return self._whole(lambda *inputs: jax.lax.scan(one, zero, inputs)[1], rhs)

    def _sequential_adjoint(self, rhs):
        def one(carried, inputs):  # carried: J_{t+1}^T lambda_{t+1}
            h, x, b = inputs
            lam = b + carried
            return jax.vjp(lambda h: self._step_at(h, x), h)[1](lam)[0], lam

        zero = jnp.zeros_like(self.prev[0])
        return self._whole(lambda *inputs: jax.lax.scan(one, zero, inputs, reverse=True)[1], rhs)

    def _whole(self, scan, rhs):
        """``scan(prev, xs, rhs)`` over the whole sequence (gathered from the devices' chunks
        when the time axis is split)."""
        if self.cfg.axis is None:
            return scan(self.prev, self.xs, rhs)
        return self.cfg.axis.on_whole(scan, self.prev, self.xs, rhs)


class _Refined(NamedTuple):
    value: jax.Array
    iterations: jax.Array
    residual: jax.Array
    sequential: Any

    def _finish(self, cfg: Any, what: str):
        converged = self.residual <= cfg.tol
        return _on_failure(
            cfg, converged, self.value, self.sequential, what, self.iterations, self.residual
        )


def _refine(cfg: Any, operator, rhs, approx_solve, sequential) -> _Refined:
    r"""Iterative refinement for :math:`\text{operator}(v) = b`: up to ``max_iters`` rounds of
    :math:`v \leftarrow v + \text{approx\_solve}(b - \text{operator}(v))` from :math:`v = 0`,
    until the residual is at most ``tol`` times :math:`\max |v|`."""
    tiny = jnp.finfo(rhs.dtype).tiny

    def largest(x):
        m = jnp.max(jnp.abs(x))
        return m if cfg.axis is None else cfg.axis.maximum(m)

    def error(v, r):
        return largest(r) / jnp.maximum(largest(v), tiny)

    def iterate(loop):
        k, v, r, _ = loop
        v = v + approx_solve(r)
        r = rhs - operator(v)
        return k + 1, v, r, error(v, r)

    def unfinished(loop):
        k, _, _, err = loop
        return (err > cfg.tol) & jnp.isfinite(err) & (k < cfg.max_iters)

    zero = jnp.zeros_like(rhs)
    loop = (jnp.int32(0), zero, rhs, error(zero, rhs))
    k, v, _, err = jax.lax.while_loop(unfinished, iterate, loop)
    return _Refined(v, k, err, lambda: sequential(rhs))
