"""Data parallelism: the same train step on 1 and on 8 (virtual CPU) devices gives the same losses;
so does the step with parameters and optimizer state split 4 ways (tensor parallelism on a
(2, 4) mesh).

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect before JAX initialises
its backend, so the comparison runs in a fresh subprocess that prints its results as JSON.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from jax.sharding import PartitionSpec

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_debug_key_reuse", True)
    import jaxrnn.models as jm
    import jaxrnn.train as jt
    from jaxrnn.train.checkpoints import _to_saveable
    from jaxrnn import data

    assert len(jax.devices()) == 8, jax.devices()
    text = "to be, or not to be, that is the question: " * 6
    vocab = data.Vocab.from_text(text)
    model = jm.char_lm(vocab.size, 16, cell="lstm", embed_size=8, dropout=0.1)
    batches = data.TextBatches(vocab.encode(text), 8, 10, seed=0)
    opt = jt.default_optimizer(1e-2, 6, warmup_steps=1)
    out = {}

    def fresh():
        return jt.init_state(
            model.init(jax.random.key(0)), opt, jax.random.key(1), model.initial_carry((8,))
        )

    for name, mesh in [("mesh1", jt.data_mesh(jax.devices()[:1])), ("mesh8", jt.data_mesh())]:
        step = jt.make_train_step(jm.lm_loss(model), opt, mesh=mesh)
        state, history = jt.fit(fresh(), step, batches, 6, mesh=mesh, progress=False)
        out[name] = {
            "loss": history.train["loss"],
            "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)],
            "param_devices": len(state.params.w_out.sharding.device_set),
            "params_replicated": bool(state.params.w_out.sharding.is_fully_replicated),
            "carry_shard_rows": [s.data.shape[0] for s in state.carry[0].h.addressable_shards],
        }
        if name == "mesh8":
            sharded = jt.shard_batch(batches(0), mesh)
            out[name]["batch_shard_rows"] = [
                s.data.shape[0] for s in sharded["inputs"].addressable_shards
            ]
            # Sharded checkpoints round-trip, with the template's shardings.
            with tempfile.TemporaryDirectory() as tmp:
                with jt.Checkpoints(tmp) as ckpt:
                    ckpt.save(state)
                    template = jt.shard_state(fresh(), mesh)
                    restored = ckpt.restore(template)
            same = jax.tree.map(
                lambda a, b: bool(np.array_equal(a, b)),
                _to_saveable(restored), _to_saveable(state),
            )
            out[name]["restored_equal"] = all(jax.tree.leaves(same))
            out[name]["restored_carry_rows"] = [
                s.data.shape[0] for s in restored.carry[0].c.addressable_shards
            ]
            try:
                jt.shard_batch({"x": jnp.ones((6, 2))}, mesh)
            except ValueError as e:
                out[name]["indivisible_error"] = str(e)

    # Parameters and optimizer state split 4 ways (a (2, 4) mesh): the same training.
    mesh = jt.model_mesh(4)
    step = jt.make_train_step(jm.lm_loss(model), opt, mesh=mesh)
    state, history = jt.fit(fresh(), step, batches, 6, mesh=mesh, progress=False)
    w_hh = state.params.rnn[0].w_hh
    mu = state.opt_state[1][0].mu.rnn[0].w_hh
    out["model"] = {
        "loss": history.train["loss"],
        "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)],
        "w_hh_spec": str(w_hh.sharding.spec),
        "w_hh_shards": sorted({s.data.shape for s in w_hh.addressable_shards}),
        "mu_shards": sorted({s.data.shape for s in mu.addressable_shards}),
        "carry_shard_rows": [s.data.shape[0] for s in state.carry[0].h.addressable_shards],
    }
    # Checkpoints sharded alike, and re-sharded: split <-> replicated, both verified.
    with tempfile.TemporaryDirectory() as tmp:
        with jt.Checkpoints(tmp) as ckpt:
            ckpt.save(state)
            back = ckpt.restore(jt.shard_state(fresh(), mesh))
            replicated = ckpt.restore(jt.shard_state(fresh(), jt.data_mesh()))
    same = lambda a, b: all(
        bool(np.array_equal(x, y))
        for x, y in zip(jax.tree.leaves(_to_saveable(a)), jax.tree.leaves(_to_saveable(b)))
    )
    out["model"]["restored_equal"] = same(back, state) and same(replicated, state)
    out["model"]["restored_spec"] = str(back.params.rnn[0].w_hh.sharding.spec)
    rep_w_hh = replicated.params.rnn[0].w_hh
    out["model"]["replicated_restore"] = bool(rep_w_hh.sharding.is_fully_replicated)
    print("RESULT " + json.dumps(out))
    """
)


def _run_on_eight_devices(script: str) -> dict:
    """``script`` in a fresh process with 8 virtual CPU devices; the JSON of its RESULT line."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def test_one_and_eight_devices_give_the_same_training():
    out = _run_on_eight_devices(SCRIPT)
    one, eight = out["mesh1"], out["mesh8"]

    # Really spread over 8 devices: batch and carry split by rows, parameters replicated.
    assert eight["batch_shard_rows"] == [1] * 8
    assert eight["carry_shard_rows"] == [1] * 8
    assert eight["param_devices"] == 8 and eight["params_replicated"]
    assert one["param_devices"] == 1 and one["carry_shard_rows"] == [8]

    # Same losses (float32 tolerance: the gradient all-reduce sums in another order).
    assert len(one["loss"]) == len(eight["loss"]) == 6
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    assert one["loss"][-1] < one["loss"][0]  # it trained
    for a, b in zip(eight["params"], one["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    assert eight["restored_equal"] and eight["restored_carry_rows"] == [1] * 8
    assert "divisible by the 8 devices" in eight["indivisible_error"]

    # Parameters split 4 ways along the gate axis: the losses of the replicated run.
    split = out["model"]
    assert split["w_hh_spec"] == str(PartitionSpec(None, "model")), split
    assert split["w_hh_shards"] == split["mu_shards"] == [[16, 16]]  # (16, 64) split in 4
    assert split["carry_shard_rows"] == [4] * 8  # rows split 2 ways, over "data"
    np.testing.assert_allclose(split["loss"], eight["loss"], rtol=1e-5)
    for a, b in zip(split["params"], eight["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert split["restored_equal"] and split["restored_spec"] == split["w_hh_spec"]
    assert split["replicated_restore"]


def test_memory_table_counts_every_shard():
    """benchmarks/bench_memory.py: per-device bytes of parameters and AdamW state, from the
    shardings on an abstract 8-device mesh, against a count by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_memory", REPO / "benchmarks/bench_memory.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.memory_table([8], devices=8, models=(2, 8))
    h, v, e = 8, 256, 256  # hidden; vocabulary and embedding of the benchmark's model
    params = v * e + e * 4 * h + h * 4 * h + 4 * h + h * v + v
    assert row["params"] == params
    scalars = row["replicated"] - 3 * 4 * params  # float32 parameters and two moments
    assert 0 <= scalars <= 64  # the optimizer's step counts
    # Every array has an axis divisible by 8 here: each device holds an eighth (or a half).
    assert row["model=8"] == 3 * 4 * params // 8 + scalars
    assert row["model=2"] == 3 * 4 * params // 2 + scalars
    assert "| 8 | 0.1 M |" in bench.markdown([row], 8)


INDIVISIBLE = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, optax
    import jaxrnn.train as jt

    assert len(jax.devices()) == 8, jax.devices()

    def loss_fn(w, carry, batch, key):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2), carry

    opt = optax.sgd(0.1)
    out = {}

    def state(rows):
        return jt.init_state(jnp.zeros((2, 4)), opt, jax.random.key(0), jnp.zeros((rows, 4)))

    def batch(rows):
        return {"x": jnp.ones((rows, 2)), "y": jnp.ones((rows, 4))}

    for name, mesh in [("data", jt.data_mesh()), ("model", jt.model_mesh(4))]:
        step = jt.make_train_step(loss_fn, opt, mesh=mesh)
        for case, (s, b) in {"batch": (8, 5), "carry": (5, 8)}.items():
            try:
                step(state(s), batch(b))
                out[f"{name}-{case}"] = "no error"
            except Exception as e:
                out[f"{name}-{case}"] = f"{type(e).__name__}: {e}"
        new, metrics = step(state(8), batch(8))  # divisible: it trains
        out[f"{name}-ok"] = float(metrics["loss"])
        try:  # fit reports the same, through shard_batch
            jt.fit(state(8), step, lambda s: batch(5), 1, mesh=mesh, progress=False)
        except Exception as e:
            out[f"{name}-fit"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(out))
    """
)


def test_train_step_on_a_mesh_explains_an_indivisible_batch():
    """``make_train_step(..., mesh=...)`` given a batch (or carry) the devices do not divide:
    the one-line ``ValueError`` of ``shard_batch``/``fit``, not JAX's ``IndivisibleError``."""
    out = _run_on_eight_devices(INDIVISIBLE)
    for mesh, devices in [("data", 8), ("model", 2)]:  # model_mesh(4): rows split 2 ways
        batch, carry = out[f"{mesh}-batch"], out[f"{mesh}-carry"]
        assert batch.startswith("ValueError: train_step: the batch axis of batch['x']"), batch
        assert carry.startswith("ValueError: train_step: the batch axis of state.carry"), carry
        for message in (batch, carry, out[f"{mesh}-fit"]):
            assert "(first axis, got shape (5," in message, message
            assert f"must be divisible by the {devices} devices of mesh axis 'data'" in message
            assert "Indivisible" not in message and "\n" not in message
        assert out[f"{mesh}-fit"].startswith("ValueError: shard_batch: the batch axis of batch")
        assert out[f"{mesh}-ok"] > 0
