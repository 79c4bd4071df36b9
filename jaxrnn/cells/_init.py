"""Parameter initialisers of the built-in cells: the defaults, and user initialisers per gate.

A cell factory takes ``kernel_init``, ``recurrent_kernel_init`` and ``bias_init``, each ``None``
(the cell's default) or a ``jax.nn.initializers``-style callable ``init(key, shape, dtype)``.
A given initialiser is called once per gate block, with that block's shape and its own key, and
the blocks are concatenated along the last axis in the cell's gate order (what Flax's cells do
with one ``Dense`` per gate). The rules are documented in :mod:`jaxrnn.cells`; this module holds
the helpers that every cell module (cells, mgu, conv, layernorm) shares, so the rules live in
one place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._core import Array

ARG_NAMES = ("kernel_init", "recurrent_kernel_init", "bias_init")

lecun_normal = jax.nn.initializers.lecun_normal()
_orthogonal_init = jax.nn.initializers.orthogonal()


def orthogonal(key: jax.Array, shape: tuple[int, ...], dtype) -> Array:
    """Orthogonal init; half-precision dtypes are drawn in float32 (LAPACK has no bf16 QR)."""
    draw_dtype = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
    return _orthogonal_init(key, shape, draw_dtype).astype(dtype)


def check_initializers(kernel_init, recurrent_kernel_init, bias_init) -> None:
    """A ``TypeError`` naming the first argument that is neither ``None`` nor callable."""
    for name, value in zip(ARG_NAMES, (kernel_init, recurrent_kernel_init, bias_init), strict=True):
        if value is not None and not callable(value):
            raise TypeError(
                f"{name}: expected None (the default) or an initialiser "
                f"init(key, shape, dtype) -> array, such as jax.nn.initializers.zeros, got "
                f"{type(value).__name__} {value!r}"
            )


def split(key: jax.Array, n: int, bias_init) -> tuple[jax.Array | None, ...]:
    """``n`` keys from ``key`` as the cell's default init splits it, then a key for the biases
    (``None`` without ``bias_init``, so the default init splits exactly as it always did)."""
    keys = tuple(jax.random.split(key, n + (bias_init is not None)))
    return keys if bias_init is not None else (*keys, None)


def _call(name: str, init, key: jax.Array, shape: tuple[int, ...], dtype) -> Array:
    """``init(key, shape, dtype)``, or a ``ValueError`` naming ``name`` if the result has another
    shape or dtype."""
    out = init(key, shape, dtype)
    got_shape, got_dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    try:
        same_dtype = np.dtype(got_dtype) == np.dtype(dtype)
    except TypeError:  # no dtype, or not a NumPy one (a key array, ...)
        same_dtype = False
    if got_shape is None or tuple(got_shape) != shape or not same_dtype:
        got = (
            f"shape {tuple(got_shape)}, dtype {got_dtype}"
            if got_shape is not None and got_dtype is not None
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"{name}: the initialiser must return an array of the requested shape {shape} and "
            f"dtype {np.dtype(dtype)} (one gate block), got {got}"
        )
    return out


def gate_blocks(
    name: str, init, key: jax.Array, shape: tuple[int, ...], blocks: int, dtype
) -> Array:
    """``blocks`` calls ``init(key_k, shape, dtype)``, each with its own key (``key`` itself when
    there is one block), concatenated along the last axis."""
    keys = [key] if blocks == 1 else list(jax.random.split(key, blocks))
    return jnp.concatenate([_call(name, init, k, shape, dtype) for k in keys], axis=-1)


def _kernel(name: str, init, default, key, shape: tuple[int, ...], blocks: int, dtype) -> Array:
    """A fused kernel of ``blocks`` gate blocks of ``shape``: drawn whole by ``default`` when
    ``init`` is ``None``, else one ``init`` call per block."""
    if init is None:
        return default(key, (*shape[:-1], blocks * shape[-1]), dtype)
    return gate_blocks(name, init, key, shape, blocks, dtype)


def input_kernel(init, key, shape: tuple[int, ...], blocks: int, dtype, default=lecun_normal):
    """A cell's input kernel: ``init`` per gate block, or ``default`` (LeCun normal) drawn for
    the fused kernel at once."""
    return _kernel("kernel_init", init, default, key, shape, blocks, dtype)


def recurrent_kernel(init, key, shape: tuple[int, ...], blocks: int, dtype, default=None):
    """A cell's recurrent kernel: ``init`` per gate block, or ``default`` drawn for the fused
    kernel at once; ``default=None`` is the dense cells' default, an orthogonal matrix per gate
    block (per block, unlike the other defaults)."""
    if init is None and default is None:
        init = orthogonal
    return _kernel("recurrent_kernel_init", init, default, key, shape, blocks, dtype)


def biases(init, key: jax.Array | None, hidden: int, blocks: tuple[int, ...], dtype) -> list:
    """One bias vector per entry of ``blocks`` (its number of gate blocks of size ``hidden``):
    zeros when ``init`` is ``None``, else one ``init(key_k, (hidden,), dtype)`` call per block,
    every block of every vector with its own key."""
    if init is None:
        return [jnp.zeros((n * hidden,), dtype) for n in blocks]
    keys = [key] if len(blocks) == 1 else list(jax.random.split(key, len(blocks)))
    return [
        gate_blocks("bias_init", init, k, (hidden,), n, dtype)
        for k, n in zip(keys, blocks, strict=True)
    ]


def add_forget_bias(b: Array, block: int, hidden: int, forget_bias, init) -> Array:
    """``b`` with ``forget_bias`` added to gate block ``block`` (set, on the default zeros, which
    is the same value and keeps the default init's bits as they always were)."""
    where = slice(block * hidden, (block + 1) * hidden)
    return b.at[where].set(forget_bias) if init is None else b.at[where].add(forget_bias)
