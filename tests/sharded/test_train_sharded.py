"""``jr.train`` on 8 devices equals one device, step for step: the character-level LM trained
under ``jax.make_mesh`` (Explicit axes, with and without ``jax.set_mesh``), under Auto axes,
and on ``data_mesh``/``model_mesh``; with parameters split over ``"model"`` on a 2-D mesh.

The largest differences against one device: ``JAXRNN_SHOW_DIFF=1 pytest -s`` on this file
(``train_helpers.report``).
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from sharding_helpers import assert_trees_close, put
from train_helpers import CELL, fit, report, train_step

import jaxrnn.models as jm
import jaxrnn.train as jt

STEPS = 4


@pytest.fixture(scope="module")
def one_device(lm):
    """The reference: ``STEPS`` steps on one device, no mesh."""
    state, history = fit(lm, None, STEPS)
    assert history.train["loss"][-1] < history.train["loss"][0]  # it trained
    return state, history


def _mesh(how):
    if how.startswith("make_mesh"):
        return jax.make_mesh((8,), ("data",))
    if how == "auto":
        return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    if how == "data_mesh":
        return jt.data_mesh()
    if how == "data_mesh_auto":
        return jt.data_mesh(axis_types=AxisType.Auto)
    raise ValueError(how)


def _spec(x):
    """The partition spec in ``x``'s type (explicit axes) or of its sharding (auto axes)."""
    spec = jax.typeof(x).sharding.spec
    return tuple(spec) if any(p is not None for p in spec) else tuple(x.sharding.spec)


@pytest.mark.parametrize(
    "how", ["make_mesh", "make_mesh+set_mesh", "auto", "data_mesh", "data_mesh_auto"]
)
def test_char_lm_on_a_data_mesh_equals_one_device(how, lm, one_device):
    mesh = _mesh(how)
    context = jax.set_mesh(mesh) if how.endswith("set_mesh") else contextlib.nullcontext()
    with context:
        state, history = fit(lm, mesh, STEPS)
    ref, ref_history = one_device
    report(how, history.train["loss"], ref_history.train["loss"], state.params, ref.params)
    np.testing.assert_allclose(history.train["loss"], ref_history.train["loss"], rtol=1e-5)
    assert_trees_close(state.params, ref.params, rtol=1e-4, atol=1e-5)
    assert_trees_close(state.carry, ref.carry, rtol=1e-4, atol=1e-5)
    # Parameters and optimizer state replicated on all 8 devices; the carry split by rows.
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    for leaf in jax.tree.leaves(state.carry):
        assert [s.data.shape[0] for s in leaf.addressable_shards] == [1] * 8
    explicit = mesh.axis_types == (AxisType.Explicit,)
    for leaf in jax.tree.leaves(state.carry):  # under explicit axes, in the type too
        assert (_spec(leaf)[0] == "data") and (jax.typeof(leaf).sharding.spec[0] == "data") == (
            explicit
        )


@pytest.mark.parametrize(
    "how", ["make_mesh", "make_mesh+set_mesh", "model_mesh", "model_mesh_auto"]
)
def test_char_lm_with_params_split_over_model_equals_one_device(how, lm, one_device):
    if how.startswith("make_mesh"):
        mesh = jax.make_mesh((2, 4), ("data", "model"))
    else:
        types = AxisType.Auto if how.endswith("auto") else AxisType.Explicit
        mesh = jt.model_mesh(4, axis_types=types)
    context = jax.set_mesh(mesh) if how.endswith("set_mesh") else contextlib.nullcontext()
    with context:
        state, history = fit(lm, mesh, STEPS)
    ref, ref_history = one_device
    losses, ref_losses = history.train["loss"], ref_history.train["loss"]
    report(f"(2, 4) {how}", losses, ref_losses, state.params, ref.params)
    np.testing.assert_allclose(history.train["loss"], ref_history.train["loss"], rtol=1e-5)
    assert_trees_close(state.params, ref.params, rtol=1e-4, atol=1e-5)
    # The recurrent weights and their Adam moments split 4 ways along the gate axis.
    w_hh, mu = state.params.rnn[0].w_hh, state.opt_state[1][0].mu.rnn[0].w_hh
    assert _spec(w_hh) == (None, "model") == _spec(mu)
    shard = (16, w_hh.shape[1] // 4)
    assert {s.data.shape for s in w_hh.addressable_shards} == {shard}
    assert {s.data.shape for s in mu.addressable_shards} == {shard}
    for leaf in jax.tree.leaves(state.carry):  # rows split 2 ways, over "data"
        assert [s.data.shape[0] for s in leaf.addressable_shards] == [4] * 8


@pytest.mark.parametrize("set_mesh", [False, True])
def test_lm_gradients_come_out_replicated_without_an_out_sharding(set_mesh, lm):
    """``jax.grad`` of the LM's loss, parameters never put on the mesh, the batch split over an
    explicit "data" axis: the gradients are replicated in their type and equal one device's."""
    model, batches, _, fresh = lm
    state, batch = fresh(), batches(0)
    grad = jax.jit(jax.value_and_grad(jm.lm_loss(model), has_aux=True))
    (loss1, carry1), grads1 = grad(state.params, state.carry, batch, jax.random.key(2))
    mesh = jax.make_mesh((8,), ("data",))
    sharded = jax.tree.map(lambda x: put(x, mesh, "data"), (state.carry, batch))
    context = jax.set_mesh(mesh) if set_mesh else contextlib.nullcontext()
    with context:
        (loss8, carry8), grads8 = grad(state.params, *sharded, jax.random.key(2))
    for g in jax.tree.leaves(grads8):
        assert jax.typeof(g).sharding.mesh.axis_names == ("data",)
        assert all(p is None for p in jax.typeof(g).sharding.spec), jax.typeof(g)
    for c in jax.tree.leaves(carry8):
        assert jax.typeof(c).sharding.spec[0] == "data"
    report(f"grads set_mesh={set_mesh}", loss8, loss1, grads8, grads1)
    assert_trees_close((loss8, carry8, grads8), (loss1, carry1, grads1), rtol=1e-5, atol=1e-6)


def test_lm_gradients_keep_the_split_of_their_parameters(lm):
    """On a 2-D explicit mesh, parameters split over "model" (``shard_state``), the batch over
    "data": every gradient has its parameter's sharding, without an ``out_sharding``."""
    model, batches, _, fresh = lm
    state, batch = fresh(), batches(0)
    grad = jax.jit(jax.value_and_grad(jm.lm_loss(model), has_aux=True))
    (loss1, _), grads1 = grad(state.params, state.carry, batch, jax.random.key(2))
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    placed = jt.shard_state(fresh(), mesh)
    with jax.set_mesh(mesh):
        (loss8, _), grads8 = grad(
            placed.params, placed.carry, jt.shard_batch(batch, mesh), jax.random.key(2)
        )
    split = 0
    for g, p in zip(jax.tree.leaves(grads8), jax.tree.leaves(placed.params), strict=True):
        assert jax.typeof(g).sharding == jax.typeof(p).sharding, (jax.typeof(g), jax.typeof(p))
        split += "model" in jax.typeof(g).sharding.spec
    assert split >= 4  # the embedding, the LSTM's matrices and bias, the head's matrix
    report("grads split over model", loss8, loss1, grads8, grads1)
    assert_trees_close((loss8, grads8), (loss1, grads1), rtol=1e-5, atol=1e-6)


def test_a_step_on_an_explicit_mesh_places_its_own_inputs(lm, one_device):
    """``make_train_step(mesh=jax.make_mesh(...))`` called directly (no ``fit``) on a state and
    batches never put on the mesh: the step puts them there; the same training."""
    _, batches, _, fresh = lm
    mesh = jax.make_mesh((8,), ("data",))
    traces = []
    step, state = train_step(lm, mesh, traces), fresh()
    losses = []
    for s in range(STEPS):
        state, metrics = step(state, batches(s))
        losses.append(float(metrics["loss"]))
    ref, ref_history = one_device
    report("step without fit", losses, ref_history.train["loss"], state.params, ref.params)
    np.testing.assert_allclose(losses, ref_history.train["loss"], rtol=1e-5)
    assert_trees_close(state.params, ref.params, rtol=1e-4, atol=1e-5)
    assert all(jax.typeof(c).sharding.spec[0] == "data" for c in jax.tree.leaves(state.carry))
    assert len(traces) == 1  # compiled once: the step's own outputs have its input types


@pytest.mark.parametrize("shape", [(8,), (2, 4)])
def test_train_char_lm_under_make_mesh_equals_one_device(shape):
    """What the CLI runs (``train_char_lm``), with validation, on ``jax.make_mesh``: the
    losses of one device, and the same samples from the trained parameters."""
    text = "to be, or not to be, that is the question: whether tis nobler in the mind " * 20
    config = jm.CharLMConfig(
        cell=CELL, hidden_size=16, embed_size=8, batch_size=8, seq_len=10, steps=4,
        warmup_steps=1, eval_chunks=2,
    )  # fmt: skip
    one = jm.train_char_lm(text, config, mesh=None, eval_every=2, progress=False)
    mesh = jax.make_mesh(shape, ("data", "model")[: len(shape)])
    run = jm.train_char_lm(text, config, mesh=mesh, eval_every=2, progress=False)
    report(f"train_char_lm{shape}", run.history.train["loss"], one.history.train["loss"],
           run.state.params, one.state.params)  # fmt: skip
    np.testing.assert_allclose(run.history.train["loss"], one.history.train["loss"], rtol=1e-5)
    assert run.history.eval["step"] == [2, 4]
    np.testing.assert_allclose(run.history.eval["loss"], one.history.eval["loss"], rtol=1e-5)
    assert_trees_close(run.state.params, one.state.params, rtol=1e-4, atol=1e-5)
    prompt = one.vocab.encode("to ")
    samples = [jm.sample(r.model, r.state.params, jax.random.key(3), prompt, 8) for r in (one, run)]
    np.testing.assert_array_equal(*samples)


@pytest.mark.parametrize("axis_types", [AxisType.Explicit, AxisType.Auto])
def test_an_ambiguous_loss_under_explicit_axes_says_what_to_do(axis_types):
    """A loss whose embedding lookup JAX cannot shard under explicit axes (``table[ids]``, the
    ids split by rows): JAX's error, with a note naming ``out_sharding=`` and ``Auto`` axes;
    the same loss trains on a mesh with ``Auto`` axes."""

    def loss_fn(table, carry, batch, key):
        return jnp.mean(table[batch["ids"]] ** 2), carry

    opt = optax.sgd(0.1)
    mesh = jt.data_mesh(axis_types=axis_types)
    step = jt.make_train_step(loss_fn, opt, mesh=mesh)
    state = jt.init_state(jnp.ones((5, 3)), opt, jax.random.key(0))
    batch = {"ids": jnp.arange(16).reshape(8, 2) % 5}
    if axis_types == AxisType.Auto:
        _, metrics = step(state, batch)
        assert float(metrics["loss"]) == 1.0
        return
    with pytest.raises(Exception, match="out_sharding") as error:
        step(state, batch)
    assert type(error.value).__name__ == "ShardingTypeError"
    assert any("axis_types=jax.sharding.AxisType.Auto" in n for n in error.value.__notes__)
