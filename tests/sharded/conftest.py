"""Fixtures of the 8-device tests: meshes from ``jax.make_mesh`` (Explicit axes) and with
``Auto`` axes (what ``jax.sharding.Mesh`` gives, and :func:`jaxrnn.train.data_mesh` with
``axis_types=AxisType.Auto``)."""

import jax
import pytest
from jax.sharding import AxisType

assert jax.device_count() == 8, "tests/sharded runs with 8 devices (see tests/test_sharded.py)"


@pytest.fixture(scope="session")
def explicit_mesh():
    """``("data",)`` over 8 devices with ``Explicit`` axes, what ``jax.make_mesh`` gives."""
    mesh = jax.make_mesh((8,), ("data",))
    assert mesh.axis_types == (AxisType.Explicit,)
    return mesh


@pytest.fixture(scope="session")
def auto_mesh():
    """``("data",)`` over 8 devices with ``Auto`` axes."""
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


# The small character-level LM of the jr.train tests (test_train_sharded, test_checkpoint_sharded).
from train_helpers import lm  # noqa: E402, F401
