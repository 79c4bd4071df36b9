r"""A cell's recurrence declared linear in its carry, so that it can run in parallel over time.

A :class:`jaxrnn.Cell` whose step is :math:`h_t = a_t \odot h_{t-1} + b_t`, with ``a_t`` and
``b_t`` computed from the input alone, can say so in its ``linear`` field with a
:class:`LinearRecurrence`: the coefficients of every step, and how a step's output follows from
its new carry. :func:`jaxrnn.scan` then evaluates the sequence of carries with
``method="associative"``, a prefix scan of the affine maps in :math:`O(\log T)` depth, in
linear space or, for positive coefficients, in log space. The cells of :mod:`jaxrnn.linear`
declare one; any custom cell may.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Array = jax.Array
Params = Any
Carry = Any

__all__ = ["LinearRecurrence"]


class LinearRecurrence(NamedTuple):
    r"""A cell's recurrence declared linear: :math:`h_t = a_t \odot h_{t-1} + b_t`.

    ``a_t`` and ``b_t`` depend on the input only, never on the carry, so the whole sequence of
    carries is a prefix "sum" under the associative composition of affine maps
    :math:`(a_1, b_1) \circ (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2)`, which
    ``jaxrnn.scan(..., method="associative")`` evaluates with ``jax.lax.associative_scan``
    (:mod:`jaxrnn.linear` has the cells that declare one).

    Attributes:
        coefficients: ``coefficients(params, xp) -> (a, b)``, where ``xp`` is
            ``cell.project(params, x)`` when the cell has a ``project`` and ``x`` otherwise, with
            any number of leading axes (time and batch); ``a`` and ``b`` have the carry's
            structure and shapes (with those leading axes) and may be complex.
        readout: ``readout(params, h, xp) -> y``, the output of a step from the new carry ``h``
            and the same ``xp``, again for any leading axes.
        log_coefficients: optional ``log_coefficients(params, xp) -> (log_a, log_b)``, real,
            for a recurrence whose ``a`` and ``b`` are positive (``a = exp(log_a)``, ``b =
            exp(log_b)``: the same numbers as ``coefficients``). When given,
            ``method="associative"`` composes the steps in log space (products as sums, sums
            as ``logaddexp``; the parallel form of Feng et al. 2024), which neither
            underflows nor loses the small terms of long sums. The initial carry enters
            linearly, ``h_t = exp(S_t) h_0 + exp(Q_t)`` with ``S_t`` the summed ``log_a``
            and ``Q_t`` the log-sum of the ``b`` terms, so it may have any sign (zeros
            included): only ``a`` and ``b`` must be positive, not the state.

    The cell's ``step`` (or ``apply``) must be one step of this recurrence: ``step(p, h, xp)
    == (a * h + b, readout(p, a * h + b, xp))``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> leaky = jr.LinearRecurrence(
    ...     coefficients=lambda decay, x: (jnp.broadcast_to(decay, x.shape), x),
    ...     readout=lambda decay, h, x: h,
    ... )
    >>> cell = jr.Cell(
    ...     init=lambda key: jnp.float32(0.5),
    ...     apply=lambda decay, h, x: (decay * h + x, decay * h + x),
    ...     initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros(
    ...         (*batch_shape, 1), dtype
    ...     ),
    ...     linear=leaky,
    ... )
    >>> _, ys = jr.scan(cell, jnp.float32(0.5), jnp.ones((4, 1)), method="associative")
    >>> ys[:, 0].tolist()
    [1.0, 1.5, 1.75, 1.875]
    """

    coefficients: Callable[[Params, Array], tuple[Carry, Carry]]
    readout: Callable[[Params, Carry, Array], Array]
    log_coefficients: Callable[[Params, Array], tuple[Carry, Carry]] | None = None
