"""Masks from sequence lengths, shared by the scans, attention and the losses."""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._checks import check_int
from jaxrnn._core import Array

__all__ = ["expand", "length_mask"]


def length_mask(lengths: Array, max_len: int) -> Array:
    """Boolean mask ``(*batch, max_len)``, ``True`` at positions ``t < lengths[...]``.

    A length above ``max_len`` masks nothing and a negative one everything: lengths act clipped
    to ``[0, max_len]``, the meaning :func:`jaxrnn.scan` gives traced lengths.

    Raises:
        TypeError: ``lengths`` not integer.
        ValueError: ``max_len`` not an int >= 0.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> jr.attention.length_mask(jnp.array([3, 1]), 4).astype(int).tolist()
    [[1, 1, 1, 0], [1, 0, 0, 0]]
    """
    max_len = check_int("max_len", max_len, low=0)
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
    return jnp.arange(max_len) < lengths[..., None]


def expand(mask: Array, like: Array) -> Array:
    """Append trailing unit axes to the batch-shaped ``mask`` so it lines up with ``like``."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(like) - mask.ndim))
