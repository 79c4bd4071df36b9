"""The pieces every built-in cell factory shares, apart from the initialisers (:mod:`jaxrnn._init`).

A trace-time check of the input features, ``batch_shape`` as a tuple of ints, the zeros
``initial_carry`` of a cell with a single state vector, and the input-side projection
``x @ w + b`` that :func:`jaxrnn.scan` hoists out of the time loop. :mod:`jaxrnn.cells` imports
them for its own cells and re-exports them to the other cell modules (:mod:`jaxrnn.mgu`,
:mod:`jaxrnn.slstm`, :mod:`jaxrnn.linear`, :mod:`jaxrnn.layernorm`, :mod:`jaxrnn.conv`) and to
:mod:`jaxrnn.carry`; the conventions they implement are described in :mod:`jaxrnn.cells`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_int
from jaxrnn.precision import Policy

Array = jax.Array


def _check_features(name: str, x: Array, size: int) -> None:
    """Trace-time check that the last axis of ``x`` is ``size``."""
    shape = jnp.shape(x)
    if len(shape) == 0 or shape[-1] != size:
        got = shape[-1] if shape else "a scalar"
        raise ValueError(
            f"{name}: expected feature size (last axis) {size}, got {got} ({name}.shape={shape})"
        )


def _zeros_carry(size: int, default_dtype) -> Callable[..., Array]:
    """``initial_carry`` returning zeros of shape ``(*batch_shape, size)``."""

    def initial_carry(batch_shape=(), dtype=None):
        return jnp.zeros((*_as_shape(batch_shape), size), default_dtype if dtype is None else dtype)

    return initial_carry


def _as_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` (an int or a sequence of ints, each >= 0) as a tuple of Python ints."""
    if not isinstance(batch_shape, bool) and isinstance(batch_shape, int | np.integer):
        batch_shape = (batch_shape,)
    try:
        dims = tuple(batch_shape)
    except TypeError:
        raise TypeError(
            f"batch_shape: expected a tuple of ints, got {type(batch_shape).__name__}"
        ) from None
    try:
        return tuple(check_int("batch_shape", d, low=0) for d in dims)
    except ValueError:
        raise ValueError(
            f"batch_shape: expected a tuple of ints >= 0, got {batch_shape!r}"
        ) from None


def _affine_project(input_size: int, weight: str, bias: str, pol: Policy):
    """``project(params, x) = x @ params.<weight> + params.<bias>`` with a feature-size check,
    in the accumulation dtype of ``pol``."""

    def project(params, x):
        _check_features("x", x, input_size)
        return pol.dot(x, getattr(params, weight)) + pol.acc(getattr(params, bias))

    return project
