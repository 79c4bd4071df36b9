"""``jr.models.long_range`` trains with the batch and the time axis split on a 2-D mesh
("data", "seq") of ``jax.make_mesh((2, 4), ...)`` (Explicit axes), equal to one device.

The training steps are written with ``jax.jit`` and Optax here (the model's pure functions),
not with ``jr.train``, whose mesh support is another part of the work.
"""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxrnn as jr


def _train(model, params, batches, shard=None):
    optimizer = optax.sgd(0.1, momentum=0.9)  # (adam is not strict-promotion clean)

    @jax.jit
    def step(params, state, xs, ys):
        (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, xs, ys)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = jax.jit(optimizer.init)(params)
    losses = []
    for xs, ys in batches:
        if shard is not None:
            xs, ys = shard(xs), shard(ys)
        params, state, loss = step(params, state, xs, ys)
        losses.append(float(loss))
    return params, losses


@pytest.mark.parametrize("cell,method", [("lru", "associative"), ("min_gru", "associative")])
def test_long_range_trains_batch_and_time_sharded(cell, method):
    mesh = jax.make_mesh((2, 4), ("data", "seq"))
    # copy memory: T + 20 = 32 steps, 8 per device of "seq"; 4 sequences, 2 per "data" device
    model = jr.models.long_range_model("copy", cell, 8, length=12, method=method)
    params = jax.jit(model.init)(jax.random.key(0))
    batches = [model.batch(k, 4) for k in jax.random.split(jax.random.key(1), 3)]
    want, losses1 = _train(model, params, batches)

    def shard(x):
        return jax.device_put(x, NamedSharding(mesh, P("data", "seq")))

    on_mesh = jax.device_put(params, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        got, losses8 = _train(model, on_mesh, batches, shard)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-6)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)
    assert losses1[-1] < losses1[0]  # it trains
    # the scan inside ran time-split: a traced loss of the sharded batch keeps "seq"
    xs = shard(batches[0][0])
    with jax.set_mesh(mesh):
        logits = jax.jit(model.apply)(on_mesh, xs)
    assert tuple(jax.typeof(logits).sharding.spec[:2]) == ("data", "seq")
