"""Data parallelism on 8 devices: the same train step on 1 and on 8 devices gives the same
training; so does the step with parameters and optimizer state split 4 ways (tensor
parallelism on a (2, 4) mesh); sharded checkpoints round-trip, and re-shard. On the meshes
``data_mesh`` and ``model_mesh`` build by default (explicit axes).

(Moved from tests/test_parallel.py, where each ran in an 8-device subprocess of its own.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec
from train_helpers import report

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn import data
from jaxrnn.train.checkpoints import _to_saveable

TEXT = "to be, or not to be, that is the question: " * 6


@pytest.fixture(scope="module")
def lstm_lm():
    vocab = data.Vocab.from_text(TEXT)
    model = jm.char_lm(vocab.size, 16, cell="lstm", embed_size=8, dropout=0.1)
    batches = data.TextBatches(vocab.encode(TEXT), 8, 10, seed=0)
    opt = jt.default_optimizer(1e-2, 6, warmup_steps=1)

    def fresh():
        return jt.init_state(
            model.init(jax.random.key(0)), opt, jax.random.key(1), model.initial_carry((8,))
        )

    return model, batches, opt, fresh


def _train(lstm_lm, mesh):
    model, batches, opt, fresh = lstm_lm
    step = jt.make_train_step(jm.lm_loss(model), opt, mesh=mesh)
    return jt.fit(fresh(), step, batches, 6, mesh=mesh, progress=False)


def _same(a, b):
    return all(
        bool(np.array_equal(x, y))
        for x, y in zip(
            jax.tree.leaves(_to_saveable(a)), jax.tree.leaves(_to_saveable(b)), strict=True
        )
    )


def _rows(x):
    return [s.data.shape[0] for s in x.addressable_shards]


def test_one_and_eight_devices_give_the_same_training(lstm_lm, tmp_path):
    fresh = lstm_lm[3]
    one, one_history = _train(lstm_lm, jt.data_mesh(jax.devices()[:1]))
    mesh = jt.data_mesh()
    eight, eight_history = _train(lstm_lm, mesh)

    # Really spread over 8 devices: batch and carry split by rows, parameters replicated.
    assert _rows(jt.shard_batch(lstm_lm[1](0), mesh)["inputs"]) == [1] * 8
    assert _rows(eight.carry[0].h) == [1] * 8
    w_out = eight.params.w_out
    assert len(w_out.sharding.device_set) == 8 and w_out.sharding.is_fully_replicated
    assert len(one.params.w_out.sharding.device_set) == 1 and _rows(one.carry[0].h) == [8]

    # Same losses (float32 tolerance: the gradient all-reduce sums in another order).
    one_loss, eight_loss = one_history.train["loss"], eight_history.train["loss"]
    assert len(one_loss) == len(eight_loss) == 6
    report("data_mesh() vs a 1-device mesh", eight_loss, one_loss, eight.params, one.params)
    np.testing.assert_allclose(eight_loss, one_loss, rtol=1e-5)
    assert one_loss[-1] < one_loss[0]  # it trained
    for a, b in zip(jax.tree.leaves(eight.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # Sharded checkpoints round-trip, with the template's shardings.
    with jt.Checkpoints(tmp_path) as ckpt:
        ckpt.save(eight)
        restored = ckpt.restore(jt.shard_state(fresh(), mesh))
    assert _same(restored, eight) and _rows(restored.carry[0].c) == [1] * 8
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        jt.shard_batch({"x": jnp.ones((6, 2))}, mesh)

    # Parameters split 4 ways along the gate axis: the losses of the replicated run.
    split_mesh = jt.model_mesh(4)
    split, split_history = _train(lstm_lm, split_mesh)
    w_hh, mu = split.params.rnn[0].w_hh, split.opt_state[1][0].mu.rnn[0].w_hh
    assert w_hh.sharding.spec == PartitionSpec(None, "model")
    assert {s.data.shape for s in w_hh.addressable_shards} == {(16, 16)}  # (16, 64) in 4
    assert {s.data.shape for s in mu.addressable_shards} == {(16, 16)}
    assert _rows(split.carry[0].h) == [4] * 8  # rows split 2 ways, over "data"
    report("model_mesh(4) vs data_mesh()", split_history.train["loss"], eight_loss,
           split.params, eight.params)  # fmt: skip
    np.testing.assert_allclose(split_history.train["loss"], eight_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(split.params), jax.tree.leaves(eight.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # Checkpoints sharded alike, and re-sharded: split <-> replicated, both verified.
    with jt.Checkpoints(tmp_path / "split") as ckpt:
        ckpt.save(split)
        back = ckpt.restore(jt.shard_state(fresh(), split_mesh))
        replicated = ckpt.restore(jt.shard_state(fresh(), jt.data_mesh()))
    assert _same(back, split) and _same(replicated, split)
    assert back.params.rnn[0].w_hh.sharding.spec == w_hh.sharding.spec
    assert replicated.params.rnn[0].w_hh.sharding.is_fully_replicated


@pytest.mark.parametrize("axis_types", [AxisType.Explicit, AxisType.Auto])
@pytest.mark.parametrize("kind", ["data", "model"])
def test_train_step_on_a_mesh_explains_an_indivisible_batch(kind, axis_types):
    """``make_train_step(..., mesh=...)`` given a batch (or carry) the devices do not divide:
    the one-line ``ValueError`` of ``shard_batch``/``fit``, not JAX's ``IndivisibleError``."""

    def loss_fn(w, carry, batch, key):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2), carry

    opt = optax.sgd(0.1)

    def state(rows):
        return jt.init_state(jnp.zeros((2, 4)), opt, jax.random.key(0), jnp.zeros((rows, 4)))

    def batch(rows):
        return {"x": jnp.ones((rows, 2)), "y": jnp.ones((rows, 4))}

    if kind == "data":
        mesh, devices = jt.data_mesh(axis_types=axis_types), 8
    else:
        mesh, devices = jt.model_mesh(4, axis_types=axis_types), 2  # rows split 2 ways
    step = jt.make_train_step(loss_fn, opt, mesh=mesh)
    expected = f"must be divisible by the {devices} devices of mesh axis 'data'"
    messages = {}
    for case, (s, b) in {"batch": (8, 5), "state.carry": (5, 8)}.items():
        with pytest.raises(ValueError, match=r"^train_step: the batch axis of ") as error:
            step(state(s), batch(b))
        messages[case] = str(error.value)
        assert str(error.value).startswith(f"train_step: the batch axis of {case}")
    with pytest.raises(ValueError, match=r"^shard_batch: the batch axis of batch") as error:
        jt.fit(state(8), step, lambda s: batch(5), 1, mesh=mesh, progress=False)
    messages["fit"] = str(error.value)
    for message in messages.values():
        assert "(first axis, got shape (5," in message and expected in message, message
        assert "Indivisible" not in message and "\n" not in message
    _, metrics = step(state(8), batch(8))  # divisible: it trains
    assert float(metrics["loss"]) > 0
