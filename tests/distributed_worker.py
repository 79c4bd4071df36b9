"""One process of the multi-process tests (tests/test_distributed.py): runs every scenario.

``python tests/distributed_worker.py OUT --world 2x2 --port P --process-id I`` is one of two
processes of 2 CPU devices each, joined by ``jax.distributed`` (coordinator on 127.0.0.1, gloo
collectives); ``--world 1x4`` is the single-process reference on 4 devices. Both run the same
scenarios, in order, and write what they saw to ``OUT/<world>-<process>.json`` for the tests to
compare:

* ``plain``: a linear regression (no carry), 5 steps of Adam;
* ``lm``: the character-level LSTM with dropout and carries (truncated BPTT), 6 steps, saved
  every 3; then resumed from step 3 (``resumed``), which must reproduce steps 4 to 6 and find
  step 6 already saved with the same contents;
* ``model`` (``--model``, not in the suite: its compilation costs 10 s): the same LM on a
  ``model_mesh(model=2)``, parameters and optimizer state split in two within each process;
* ``from_one``: (2x2) restores the step-0 checkpoint a single process wrote (``--from-one``)
  and trains 6 steps from it;
* ``from_two``: (1x4) restores step 3 of the 2x2 run's checkpoints (``--from-two``), once that
  run has written its results, and trains to step 6;
* ``sequence``: sequence parallelism, a ``jr.scan`` (``lru`` associative, ``gru`` Newton) with
  the time axis split over the 4 devices of the world, and the same scan on one device of this
  process: loss and gradients of both.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

# This checkout's jaxrnn, whatever else is installed (run as a script, tests/ is on the path).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--world", choices=("2x2", "1x4"), required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--from-one")
    parser.add_argument("--from-two")
    parser.add_argument("--model", action="store_true")
    args = parser.parse_args()
    os.nice(10)  # behind the suite's other tests, some of which time themselves
    devices = 2 if args.world == "2x2" else 4
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    t0 = time.perf_counter()

    import jax

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    cli = run_cli(args) if args.world == "2x2" else None  # joins the job: --distributed
    out = run(args)
    out["cli"] = cli
    out["seconds"] = time.perf_counter() - t0
    path = os.path.join(args.out, f"{args.world}-{jax.process_index()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)


def run_cli(args) -> dict:
    """``jaxrnn demo --distributed`` in this process: process 0 by its options, process 1 by
    the environment. It initialises ``jax.distributed`` for the scenarios that follow."""
    import contextlib
    import io

    from jaxrnn.__main__ import main as cli_main

    corpus = os.path.join(args.out, "corpus.txt")
    if args.process_id == 0:
        with open(corpus + f".{os.getpid()}", "w") as f:
            f.write(
                "".join(
                    f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(40)
                )
            )
        os.replace(corpus + f".{os.getpid()}", corpus)
    while not os.path.exists(corpus):  # written by process 0 before the job is joined
        time.sleep(0.05)
    argv = ["demo", "--distributed", "--corpus", corpus, "--steps", "4", "--hidden-size", "8"]
    argv += ["--embed-size", "4", "--batch-size", "4", "--seq-len", "8", "--save-every", "2"]
    argv += ["--eval-every", "2", "--length", "12", "--no-progress", "--prompt", "the "]
    argv += ["--checkpoint-dir", os.path.join(args.out, "cli")]
    address = f"127.0.0.1:{args.port}"
    if args.process_id == 0:
        argv += ["--coordinator", address, "--num-processes", "2", "--process-id", "0"]
    else:
        os.environ.update(
            JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"
        )
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli_main(argv)
    # What `jaxrnn sample` loads, in each process: whole arrays on this process's device.
    import numpy as np

    from jaxrnn.models import load_char_lm

    _, params, _, _, meta = load_char_lm(os.path.join(args.out, "cli"))
    return {
        "status": status,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "loaded": {"step": meta["step"], "w_out_sum": float(np.sum(params.w_out))},
    }


TEXT = "to be, or not to be, that is the question: " * 8


def lm_setup():
    """``(model, text_batches, optimizer, fresh)``: the LM scenario; ``fresh()`` is a new copy
    of its step-0 state (the same in every process, and in the tests' own process)."""
    import jax
    import numpy as np

    import jaxrnn.models as jm
    import jaxrnn.train as jt
    from jaxrnn import data

    vocab = data.Vocab.from_text(TEXT)
    model = jm.char_lm(vocab.size, 8, cell="lstm", embed_size=4, dropout=0.1)
    text_batches = data.TextBatches(vocab.encode(TEXT), 8, 8, seed=0)
    opt = jt.default_optimizer(1e-2, 6, warmup_steps=1)
    # Parameters of the model's structure drawn with NumPy: nothing to compile (the model's
    # own initialisers cost seconds of XLA compilation, in every process).
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    rng = np.random.default_rng(0)
    host = jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)

    def fresh():
        params = jax.tree.map(np.copy, host)
        return jt.init_state(params, opt, jax.random.key(1), model.initial_carry((8,)))

    return model, text_batches, opt, fresh


def run(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxrnn.models as jm
    import jaxrnn.train as jt
    from jaxrnn.train._digest import content_digest
    from jaxrnn.train.checkpoints import _to_saveable

    assert len(jax.devices()) == 4, jax.devices()
    out: dict = {"process_count": jax.process_count(), "local_devices": jax.local_device_count()}
    times = out["cpu_seconds"] = {"start": time.process_time()}
    mesh = jt.data_mesh()

    # Plain regression: each process feeds its own rows of the global batch of step s.
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(3, 4)).astype(np.float32)

    x_all = rng.normal(size=(8, 3)).astype(np.float32)

    def regression_batch(s):  # the same global batch at every step (the loss must fall)
        return {"x": x_all, "y": np.tanh(x_all @ w_true)}

    def regression_loss(params, carry, batch, key):
        pred = batch["x"] @ params["w"] + params["b"]
        return jnp.mean((pred - batch["y"]) ** 2), carry

    opt = optax.adam(0.05)
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    step = jt.make_train_step(regression_loss, opt, mesh=mesh)
    state = jt.init_state(params, opt, jax.random.key(0))
    local = lambda s: jt.local_rows(regression_batch(s), mesh)
    out["local_rows"] = int(local(0)["x"].shape[0])
    state, history = jt.fit(state, step, local, 5, mesh=mesh, progress=False)
    out["plain"] = {"loss": history.train["loss"], "grad_norm": history.train["grad_norm"]}
    times["plain"] = time.process_time()

    # The character-level LSTM with dropout and carries, checkpointed and resumed.
    model, text_batches, lm_opt, fresh = lm_setup()
    loss = jm.lm_loss(model)
    batches = lambda s: jt.local_rows(text_batches(s), mesh)
    lm_step = jt.make_train_step(loss, lm_opt, mesh=mesh)
    directory = os.path.join(args.out, f"lm-{args.world}")
    with jt.Checkpoints(directory, save_every=3, max_to_keep=None) as ckpt:
        try:  # a second writer of the same directory: refused in every process
            jt.Checkpoints(directory)
            out["second_writer"] = None
        except jt.CheckpointError as e:
            out["second_writer"] = str(e)
        state, history = jt.fit(
            fresh(), lm_step, batches, 6, mesh=mesh, checkpoints=ckpt, progress=False
        )
        final = content_digest(_to_saveable(state))
        meta = ckpt.metadata(6)
        resumed = ckpt.restore(jt.shard_state(fresh(), mesh), step=3)
        state, resumed_history = jt.fit(
            resumed, lm_step, batches, 6, mesh=mesh, checkpoints=ckpt, progress=False
        )
        out["lm"] = {
            "loss": history.train["loss"],
            "history": history.to_json(),
            "final_digest": final,
            "resumed_loss": resumed_history.train["loss"],
            "resumed_digest": content_digest(_to_saveable(state)),
            "digest": meta["digest"],
            "steps": ckpt.steps(),
            "carry_rows": [s.data.shape[0] for s in state.carry[0].h.addressable_shards],
        }

    # Directories that are not shared by the processes (one per process here) are refused.
    try:
        jt.Checkpoints(os.path.join(args.out, f"private-{args.world}-{jax.process_index()}"))
        out["private_dir"] = None
    except jt.CheckpointError as e:
        out["private_dir"] = str(e)
    times["lm"] = time.process_time()

    # Tensor parallelism (with --model; test_parallel.py compares it on 8 devices): parameters
    # and optimizer state split in two along their gate/feature axis, within each process.
    if args.model:
        split = jt.model_mesh(2)
        split_step = jt.make_train_step(loss, lm_opt, mesh=split)
        split_batches = lambda s: jt.local_rows(text_batches(s), split)
        state, history = jt.fit(fresh(), split_step, split_batches, 6, mesh=split, progress=False)
        w_hh, mu = state.params.rnn[0].w_hh, state.opt_state[1][0].mu.rnn[0].w_hh
        out["model"] = {
            "loss": history.train["loss"],
            "w_hh_shard": list(w_hh.addressable_shards[0].data.shape),
            "mu_shard": list(mu.addressable_shards[0].data.shape),
        }
    times["model"] = time.process_time()
    if args.from_one:  # a single process's checkpoint, restored by two
        with jt.Checkpoints(args.from_one, create=False) as ckpt:
            restored = ckpt.restore(jt.shard_state(fresh(), mesh))
            digest = content_digest(_to_saveable(restored))
            state, history = jt.fit(restored, lm_step, batches, 6, mesh=mesh, progress=False)
        out["from_one"] = {"loss": history.train["loss"], "digest": digest}

    if args.from_two:  # the two processes' checkpoint, restored by one, continued
        while not os.path.exists(os.path.join(args.out, "2x2-0.json")):  # they are done
            time.sleep(0.1)
        with jt.Checkpoints(args.from_two, create=False) as ckpt:
            restored = ckpt.restore(jt.shard_state(fresh(), mesh), step=3)
            digest = content_digest(_to_saveable(restored))
            state, history = jt.fit(
                restored, lm_step, batches, 6, mesh=mesh, history=jt.History(), progress=False
            )
        out["from_two"] = {"loss": history.train["loss"], "digest": digest}
    times["restore"] = time.process_time()
    out["sequence"] = sequence_parallel()
    times["sequence"] = time.process_time()
    return out


def sequence_parallel() -> dict:
    """Loss and gradients of time-split scans over the world's 4 devices and on one device."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxrnn as jr

    mesh = jax.make_mesh((4,), ("seq",))
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(2, 16, 3)).astype(np.float32)
    lengths = np.array([16, 9], np.int32)
    split = jax.make_array_from_callback(
        xs.shape, NamedSharding(mesh, PartitionSpec(None, "seq")), lambda index: xs[index]
    )
    result = {}
    for name, cell, method in (
        ("lru", jr.lru(3, 4), "associative"),
        ("gru", jr.gru(3, 4), jr.Newton(jacobian="full")),
    ):
        params = jax.tree.map(np.asarray, cell.init(jax.random.key(0)))

        def loss(params, xs, cell=cell, method=method):
            _, ys = jr.scan(cell, params, xs, lengths=lengths, reverse=True, method=method)
            return jnp.sum(jnp.abs(ys) ** 2)

        f = jax.jit(jax.value_and_grad(loss))
        with jax.set_mesh(mesh):
            value, grads = f(params, split)
        ref_value, ref_grads = f(params, xs)

        def flat(value, grads):
            return [float(value)] + [float(v) for g in jax.tree.leaves(grads) for v in np.ravel(g)]

        result[name] = {"split": flat(value, grads), "one": flat(ref_value, ref_grads)}
    return result


if __name__ == "__main__":
    sys.exit(main())
