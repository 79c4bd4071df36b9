"""Helpers of the 8-device tests."""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def put(x, mesh, *spec):
    """``x`` on ``mesh`` split as ``spec``."""
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
    """Leaf by leaf ``allclose``, with the largest difference in the message."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
