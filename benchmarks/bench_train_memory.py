"""XLA's temporary memory of one LSTM or GRU training step, on the native kernels and on XLA.

One idea: compile (never run) the sweep's training step, ``jax.value_and_grad`` of the MSE of
``jr.scan``'s outputs w.r.t. the parameters, for each cell at each size, in float32 and in the
bf16 policy (``dtype=jnp.bfloat16``), once on the kernels (the default on the CPU) and once
with ``kernel=False``, and read XLA's own memory analysis of
the compiled program (``compiled.memory_analysis().temp_size_in_bytes``): the buffers a step
allocates besides its arguments and outputs (saved activations, cotangents, transposes).
Figures from the compiler are exact and need no quiet machine.

Run from the repository root::

    python benchmarks/bench_train_memory.py
    python benchmarks/bench_train_memory.py --sizes 32x128x128x256 --precisions f32 --json out.json
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import argparse  # noqa: E402

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxrnn as jr  # noqa: E402

SIZES = ((32, 128, 128, 256), (64, 64, 512, 1024), (16, 1024, 32, 64))
CELLS = {
    "LSTM": lambda i, h, dtype: jr.lstm(i, h, dtype=dtype),
    "GRU": lambda i, h, dtype: jr.gru(i, h, dtype=dtype),
    "GRU reset_after": lambda i, h, dtype: jr.gru(i, h, reset_after=True, dtype=dtype),
}
PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def temp_mib(cell, size, kernel: bool) -> float:
    """XLA temp MiB of the compiled training step (batch-major ``xs``, as the sweep's)."""
    batch, steps, n_in, hidden = size
    params = cell.init(jax.random.key(0))
    xs = jax.ShapeDtypeStruct((batch, steps, n_in), jnp.float32)
    target = jax.ShapeDtypeStruct((batch, steps, hidden), jnp.float32)

    def loss(p, x, y):
        return jnp.mean((jr.scan(cell, p, x, kernel=kernel)[1].astype(jnp.float32) - y) ** 2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xs, target).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def run(sizes, cells, precisions) -> list[dict]:
    rows = []
    for size in sizes:
        for name in cells:
            for prec in precisions:
                cell = CELLS[name](size[2], size[3], PRECISIONS[prec])
                kernel, xla = temp_mib(cell, size, True), temp_mib(cell, size, False)
                row = {"size": list(size), "cell": name, "precision": prec}
                rows.append({**row, "kernel_mib": kernel, "xla_mib": xla})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_sizes(p, SIZES)
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    status = jr.kernels.status()
    print(f"jax {jax.__version__}; kernels: {status.isa or status.reason}")
    rows = run(args.sizes, args.cells, args.precisions)
    table = [
        [harness.size_name(r["size"]), r["cell"], r["precision"], *mib]
        for r in rows
        for mib in [(f"{r['kernel_mib']:.1f}", f"{r['xla_mib']:.1f}")]
    ]
    header = ["B x T x I x H", "cell", "prec", "kernels MiB", "XLA path MiB"]
    print(harness.fmt_table(header, table))
    results = {"config": harness.config(args), "kernels": status.isa, "rows": rows}
    if args.json:
        harness.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
