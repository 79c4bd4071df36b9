"""Scale II, sequence parallelism: XLA's temporary memory per device of a long-sequence training
step as the time axis is split over 1, 2, 4 and 8 devices.

The step is one gradient-descent update of ``jr.lru(H, H)`` run by ``jr.scan(...,
method="associative")`` over ``xs`` of shape ``(batch, T, H)`` (loss: the mean square of the
outputs). For each device count ``n`` the step is compiled (never run) with ``xs`` split over a
``("seq",)`` mesh of the first ``n`` of 8 virtual CPU devices (``jax.make_mesh``, Explicit
axes), so ``jr.scan`` runs sequence-parallel; the table reports
``compiled.memory_analysis()``: the temporary bytes per device (what the step allocates beyond
its arguments and outputs: the prefix scans' intermediates, the backward pass's residuals) and
the argument bytes per device, and the temporary bytes relative to one device. A row ``plain``
is the same step without any mesh. Speed on virtual CPU devices is not a figure of merit and is
not reported.

Run from the repository root::

    python benchmarks/bench_sequence_memory.py            # T = 65536, H = 256, batch 1
    python benchmarks/bench_sequence_memory.py --quick    # a tiny configuration (a test)

It sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself and writes
``benchmarks/results/sequence_memory.json`` (``--out`` to change).
"""

from __future__ import annotations

import os

if "device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

import jaxrnn as jr

MiB = 2**20
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def step_fn(cell, steps: int):
    """``steps`` gradient-descent updates of the cell's parameters on one batch."""

    def loss(params, xs):
        _, ys = jr.scan(cell, params, xs, method="associative")
        return jnp.mean(jnp.square(ys))

    def step(params, xs):
        for _ in range(steps):  # a few updates, unrolled (no Python loop per time step)
            grads = jax.grad(loss)(params, xs)
            params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
        return params

    return step


def measure(cell, steps: int, shape: tuple[int, int, int], devices: int | None) -> dict:
    """Compile the step with xs split over ``devices`` (``None``: no mesh); its memory."""
    params = jax.eval_shape(cell.init, jax.random.key(0))
    xs = jax.ShapeDtypeStruct(shape, jnp.float32)
    step = jax.jit(step_fn(cell, steps))
    if devices is None:
        compiled = step.lower(params, xs).compile()
    else:
        mesh = jax.make_mesh((devices,), ("seq",), devices=jax.devices()[:devices])
        replicated = NamedSharding(mesh, PartitionSpec())
        params = jax.tree.map(
            lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=replicated), params
        )
        split = NamedSharding(mesh, PartitionSpec(None, "seq"))
        xs = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=split)
        with jax.set_mesh(mesh):
            compiled = step.lower(params, xs).compile()
    memory = compiled.memory_analysis()
    return {
        "devices": devices,
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=65536, help="T, the sequence length")
    parser.add_argument("--hidden", type=int, default=256, help="H, the lru's size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1, help="updates per compiled step")
    parser.add_argument("--quick", action="store_true", help="T = 512, H = 8: a smoke test")
    parser.add_argument("--out", default=str(RESULTS / "sequence_memory.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.length, args.hidden = 512, 8
    counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
    command = "python benchmarks/bench_sequence_memory.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"command: {command.strip()}")
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} devices")
    print(
        f"training step of jr.lru({args.hidden}, {args.hidden}), method='associative', "
        f"xs ({args.batch}, {args.length}, {args.hidden}) float32, time split over 'seq'"
    )
    cell = jr.lru(args.hidden, args.hidden)
    shape = (args.batch, args.length, args.hidden)
    rows = [measure(cell, args.steps, shape, n) for n in [None, *counts]]
    base = next(r["temp_bytes"] for r in rows if r["devices"] == 1)
    print(f"{'devices':>8} {'temp MiB/device':>16} {'args MiB/device':>16} {'temp / 1 device':>16}")
    for row in rows:
        row["temp_ratio"] = row["temp_bytes"] / base if base else float("nan")
        name = "plain" if row["devices"] is None else str(row["devices"])
        print(
            f"{name:>8} {row['temp_bytes'] / MiB:16.2f} {row['argument_bytes'] / MiB:16.2f} "
            f"{row['temp_ratio']:16.3f}"
        )
    out = {
        "command": command.strip(),
        "jax": jax.__version__,
        "device_count": jax.device_count(),
        "config": vars(args),
        "rows": rows,
    }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
