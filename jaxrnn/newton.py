"""Parallel-in-time evaluation of any recurrence by Newton iterations (DEER).

Work in progress (issue 13): the pinned interface only. ``newton_scan`` is a drop-in for
``jax.lax.scan(f, init, xs, reverse=reverse)`` that :func:`jaxrnn.scan` calls for
``method="newton"`` (or a :class:`Newton` instance).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["Newton", "newton_scan"]


class Newton(NamedTuple):
    """Options of ``jaxrnn.scan(..., method=Newton(...))``; ``method="newton"`` is ``Newton()``.

    Attributes:
        tol: convergence tolerance on the change of the trajectory between iterations.
        max_iters: iteration cap (``None``: the number of steps ``T``, after which Newton's
            method on a recurrence is exact).
        jacobian: ``"full"`` (DEER), ``"diagonal"`` (quasi-DEER) or ``"auto"``.
        damping: ELK-style damping (0: plain Newton).
        on_failure: what happens when ``max_iters`` iterations do not reach ``tol``.
    """

    tol: float = 1e-5
    max_iters: int | None = None
    jacobian: Literal["full", "diagonal", "auto"] = "auto"
    damping: float = 0.0
    on_failure: Literal["error", "sequential"] = "sequential"


_DEFAULT = Newton()


def newton_scan(f, init, xs, *, reverse: bool = False, options: Newton = _DEFAULT):
    """``jax.lax.scan(f, init, xs, reverse=reverse)`` evaluated by Newton iterations."""
    raise NotImplementedError("newton_scan: issue 13, in progress")
