"""The affine read-out and bridge layers of the encoder-decoders and recipes: ``x @ w + b``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._core import Array, PRNGKey
from jaxrnn.precision import Policy

__all__ = ["DenseParams", "dense", "dense_init"]

_LECUN_NORMAL = jax.nn.initializers.lecun_normal()


class DenseParams(NamedTuple):
    """An affine map ``x @ w + b``: ``w (in, out)``, ``b (out,)``."""

    w: Array
    b: Array


def dense_init(key: PRNGKey, in_size: int, out_size: int, dtype) -> DenseParams:
    """LeCun-normal ``w`` and zero ``b`` in ``dtype``."""
    return DenseParams(
        _LECUN_NORMAL(key, (in_size, out_size), dtype), jnp.zeros((out_size,), dtype)
    )


def dense(params: DenseParams, x: Array, pol: Policy) -> Array:
    """``x @ w + b``, operands in ``pol.dtype``, result in the accumulation dtype."""
    return pol.dot(x, params.w) + pol.acc(params.b)
