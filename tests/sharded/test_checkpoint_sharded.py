"""Checkpoints of a sharded :class:`~jaxrnn.train.TrainState` on 8 devices: saved, restored
with the template's sharding (under explicit axes: the same type, so the compiled step takes
it as it is, without compiling again), and continued to the same state as an uninterrupted
run."""

import contextlib

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from train_helpers import fit, train_step

import jaxrnn.train as jt
from jaxrnn.train.checkpoints import _to_saveable

MESHES = {
    "make_mesh": lambda: jax.make_mesh((8,), ("data",)),
    "make_mesh_2d": lambda: jax.make_mesh((2, 4), ("data", "model")),
    "data_mesh_auto": lambda: jt.data_mesh(axis_types=AxisType.Auto),
}


def _types(state):
    return [jax.typeof(x) for x in jax.tree.leaves(_to_saveable(state))]


def _equal(a, b):
    la, lb = jax.tree.leaves(_to_saveable(a)), jax.tree.leaves(_to_saveable(b))
    return all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@pytest.mark.parametrize("how", [*sorted(MESHES), "make_mesh_2d+set_mesh"])
def test_save_restore_continue_equals_an_uninterrupted_run(how, lm, tmp_path):
    mesh, fresh = MESHES[how.removesuffix("+set_mesh")](), lm[3]
    context = jax.set_mesh(mesh) if how.endswith("set_mesh") else contextlib.nullcontext()
    traces = []
    step = train_step(lm, mesh, traces)
    with context, jt.Checkpoints(tmp_path, save_every=2, max_to_keep=None) as ckpt:
        state, history = fit(lm, mesh, 4, step=step, checkpoints=ckpt)
        saved = ckpt.restore(jt.shard_state(fresh(), mesh), step=4)
        restored = ckpt.restore(jt.shard_state(fresh(), mesh), step=2)
        # Every restored leaf has the sharding of the template's and of the saved state's:
        # under explicit axes the same type, mesh axis types included.
        assert _types(saved) == _types(state)
        assert _types(restored) == _types(state)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
            assert a.sharding.mesh == b.sharding.mesh, (a.sharding, b.sharding)
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)
        assert _equal(saved, state)
        resumed, resumed_history = fit(lm, mesh, 4, state=restored, step=step)
    assert _equal(resumed, state)  # bit for bit: the same steps, compiled once
    np.testing.assert_array_equal(resumed_history.train["loss"], history.train["loss"][2:])
    assert len(traces) == 1  # the restored state has the types the step was compiled for


def test_restore_onto_another_layout(lm, tmp_path):
    """Split over "model" under explicit axes -> the same layout from an abstract template,
    replicated on an explicit data mesh, and on an Auto mesh: the same values, each with its
    template's sharding."""
    fresh = lm[3]
    split = jax.make_mesh((2, 4), ("data", "model"))
    with jt.Checkpoints(tmp_path) as ckpt:
        state, _ = fit(lm, split, 2, checkpoints=ckpt)
        # An abstract template (jax.eval_shape) with the layout of state_shardings: the types
        # of the state saved, so the step compiled for it would take the restored state.
        shapes = jax.eval_shape(fresh)
        template = jax.tree.map(
            lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
            shapes,
            jt.state_shardings(shapes, split),
        )
        restored = ckpt.restore(template)
        assert _equal(restored, state) and _types(restored) == _types(state)
        for mesh in (jax.make_mesh((8,), ("data",)), jt.data_mesh(axis_types=AxisType.Auto)):
            template = jt.shard_state(fresh(), mesh)
            restored = ckpt.restore(template)
            assert _equal(restored, state)
            assert _types(restored) == _types(template)
            w_hh = restored.params.rnn[0].w_hh
            assert w_hh.sharding.is_fully_replicated and w_hh.sharding.mesh == mesh
