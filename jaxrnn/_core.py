"""The types everything in jaxrnn builds on; this module imports nothing else of jaxrnn.

* :class:`Cell`: one step of a recurrence as a NamedTuple of pure functions (``init``,
  ``apply``, ``initial_carry``), in the spirit of ``optax.GradientTransformation``;
* :class:`LinearRecurrence`: a cell's recurrence declared linear in its carry,
  :math:`h_t = a_t \\odot h_{t-1} + b_t`, so that it can run in parallel over time;
* :class:`Layer`: a whole sequence-to-sequence map (:func:`jaxrnn.layer`, :func:`jaxrnn.rnn`);
  :class:`Bidirectional`: the params or carry of a bidirectional layer, one entry per direction;
* the aliases the signatures use: ``Array``, ``PRNGKey``, ``Params``, ``Carry``,
  ``Initializer`` (a ``jax.nn.initializers``-style ``init(key, shape, dtype) -> Array``) and
  ``Transform`` (a cell transformation such as :func:`jaxrnn.zoneout`,
  ``transform(cell, key or None) -> cell``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any
Carry = Any
Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]

__all__ = [
    "Array",
    "Bidirectional",
    "Carry",
    "Cell",
    "Initializer",
    "Layer",
    "LinearRecurrence",
    "PRNGKey",
    "Params",
    "Transform",
]


class LinearRecurrence(NamedTuple):
    r"""A cell's recurrence declared linear: :math:`h_t = a_t \odot h_{t-1} + b_t`.

    ``a_t`` and ``b_t`` depend on the input only, never on the carry, so the whole sequence of
    carries is a prefix "sum" under the associative composition of affine maps
    :math:`(a_1, b_1) \circ (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2)`, which
    ``jaxrnn.scan(..., method="associative")`` evaluates with ``jax.lax.associative_scan``
    (:mod:`jaxrnn.cells._linear` has the cells that declare one).

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


class Cell(NamedTuple):
    """One step of a recurrence as pure functions.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, carry, x) -> (carry, y)``, one time step.
        initial_carry: ``initial_carry(batch_shape=(), dtype=None) -> carry`` (zeros; ``None``
            means the cell's own carry dtype, float32 for the built-in cells unless their
            ``param_dtype`` is float64).
        input_size: feature size ``x`` must have (``None``: unchecked).
        output_size: feature size of ``y``.
        project: optional ``project(params, xs) -> xp``, the carry-independent input-side part of
            a step, applicable to any number of leading axes at once.
        step: optional ``step(params, carry, xp) -> (carry, y)``, the recurrent remainder, such
            that ``apply(p, c, x) == step(p, c, project(p, x))``. When both are given,
            :func:`jaxrnn.scan` hoists ``project`` out of the time loop.
        config: how the cell was built, as ``(name, value)`` pairs (``dict(cell.config)``),
            starting with ``("factory", <the factory function>)``; read by converters such as
            :mod:`jaxrnn.interop`. A tuple, so a Cell stays hashable (usable as a static arg).
        spatial_dims: number of spatial axes between the time axis and the features in the
            sequences :func:`jaxrnn.scan` takes, ``(*batch, T, *spatial, F)``: 0 for the dense
            cells, ``len(kernel_size)`` for the convolutional ones (:mod:`jaxrnn.cells._conv`).
        linear: the cell's recurrence as a :class:`LinearRecurrence` when it is linear in the
            carry (the cells of :mod:`jaxrnn.cells._linear`), which lets
            ``jaxrnn.scan(..., method="associative")`` run it in parallel over time; ``None``
            for every other cell.

    A custom cell needs only the first three fields:

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> leaky = jr.Cell(
    ...     init=lambda key: jnp.float32(0.9),
    ...     apply=lambda decay, h, x: (decay * h + x, decay * h + x),
    ...     initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros(
    ...         (*batch_shape, 2), dtype
    ...     ),
    ... )
    >>> carry, ys = jr.scan(leaky, leaky.init(None), jnp.ones((3, 2)))
    >>> ys[:, 0].tolist()
    [1.0, 1.899999976158142, 2.7100000381469727]
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    initial_carry: Callable[..., Carry]
    input_size: int | None = None
    output_size: int | None = None
    project: Callable[[Params, Array], Array] | None = None
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]] | None = None
    config: tuple[tuple[str, Any], ...] = ()
    spatial_dims: int = 0
    linear: LinearRecurrence | None = None


class Layer(NamedTuple):
    """A recurrent layer: a sequence-to-sequence map as pure functions.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, xs, carry=None, *, lengths=None, key=None) -> (carry, ys)``;
            ``key`` drives dropout and is ignored by layers without any.
        initial_carry: ``initial_carry(batch_shape=(), dtype=None) -> carry`` (``None``: the
            cells' own carry dtypes).
        input_size: features of ``xs``.
        output_size: features of ``ys``.
        config: how the layer was built, as ``(name, value)`` pairs (``dict(layer.config)``),
            starting with ``("factory", <the factory function>)``.
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., tuple[Carry, Array]]
    initial_carry: Callable[..., Carry]
    input_size: int | None
    output_size: int | None
    config: tuple[tuple[str, Any], ...] = ()


class Bidirectional(NamedTuple):
    """Params or carry of a bidirectional layer, one entry per direction."""

    forward: Any
    backward: Any


# A cell transformation such as jr.zoneout: transform(cell, key or None) -> cell.
Transform = Callable[[Cell, Any], Cell]
