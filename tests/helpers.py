"""Small shared test helpers: comparing pytrees, drawing parameters without compiling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    """Asserts two pytrees have the same structure and numerically close leaves.

    Args:
      a: First pytree (arrays or array-likes as leaves; ``None`` leaves allowed).
      b: Second pytree, compared against ``a``.
      rtol: Relative tolerance passed to ``np.testing.assert_allclose``.
      atol: Absolute tolerance passed to ``np.testing.assert_allclose``.

    Raises:
      AssertionError: If the tree structures differ, a leaf's shape differs,
        or any leaf differs beyond the tolerances. The message names the path
        of the offending leaf.
    """
    chex.assert_trees_all_equal_structs(a, b)
    leaves_a = jax.tree_util.tree_flatten_with_path(a)[0]
    leaves_b = jax.tree_util.tree_flatten_with_path(b)[0]
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        name = jax.tree_util.keystr(path) or "<root>"
        x = np.asarray(x)
        y = np.asarray(y)
        if x.shape != y.shape:
            raise AssertionError(f"leaf {name}: shape {x.shape} != {y.shape}")
        np.testing.assert_allclose(
            x.astype(np.float64) if x.dtype.kind in "fc" else x,
            y.astype(np.float64) if y.dtype.kind in "fc" else y,
            rtol=rtol,
            atol=atol,
            err_msg=f"leaf {name} differs",
        )


def numpy_init(init, *args, seed=0, scale=0.3):
    """Random values in the structure, shapes and dtypes ``init(*args)`` returns.

    ``init`` is only traced (``jax.eval_shape``, which compiles nothing) and the values are
    drawn by NumPy (``scale`` standard normals): compiling initialisers (orthogonal, truncated
    normal, the PRNG) costs far more than the small models of the tests run. For tests whose
    point is not the initial values; the initialisers have their own tests.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, *args)
    draw = lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype)
    return jax.tree.map(draw, shapes)
