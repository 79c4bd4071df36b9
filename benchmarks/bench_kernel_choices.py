"""The native kernels' own choices, each against its alternative in one process.

One idea: the kernels choose, per call, how to run a layer: whether the forward pass hoists the
input projection ``x W_ih`` of all steps out of its loop or fuses it into each step's tile,
whether bf16 matmuls run on AMX tiles or on AVX512-BF16 dot products, and how the weight
gradients' matmuls take their transposed operand. The test switches of
``jaxrnn.kernels._library.configure`` apply to calls executed after them, compiled or not, so
one compiled function runs both ways: each choice is two tasks of ``harness.time_interleaved``
that set their switch and call the same jitted LSTM or GRU layer (inference, and a training
step: ``jax.grad`` of the mean of the outputs). The weight-gradient choice is made when a call
is traced, so each of its tasks has its own jitted layer, traced under its setting. The table
gives each side's median ms and the paired ratio A / B (median and IQR of the per-round
ratios); below 1, A is faster.

- ``hoist``: A hoisted, B fused (the kernels hoist for an LSTM at B = 1, a bf16 GRU at B = 1
  where the CPU has AMX, and a float32 LSTM whose packed weights exceed 16 MiB per thread,
  ``rnn_impl.inc``);
- ``amx``: A AMX tiles, B AVX512-BF16 dot products (bf16 rows; only where the CPU has AMX);
- ``transpose``: the training step only; A materialises the transposed operand of the weight
  gradients' matmuls (``sum_t h_{t-1}^T dG_t``, ``sum_t x_t^T dG_t``) row-major, B leaves
  the contraction over rows to XLA's ``dot_general`` (``jaxrnn.kernels._ops._t_matmul``: A on
  bf16 units, B otherwise), both on XLA;
- ``gemm``: bf16 training steps where the CPU has AMX; A runs the backward pass's matmuls over
  all steps (the weight gradients and ``dx_t = dG_t W_ih^T``) on the library's GEMMs on AMX
  tiles (``jaxrnn_tn_matmul``, ``jaxrnn_nt_matmul``: the default there), B on XLA's (the
  transposed operand materialised, as ``transpose``'s A).

Run from the repository root::

    python benchmarks/bench_kernel_choices.py
    python benchmarks/bench_kernel_choices.py --cores 1 --sizes 64x64x512x1024 --choices hoist
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

if __name__ == "__main__":
    harness.pin_from_argv()  # before JAX sizes its thread pools

import argparse  # noqa: E402
import itertools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxrnn as jr  # noqa: E402
from jaxrnn.kernels import _library, _ops  # noqa: E402

SIZES = ((32, 128, 128, 256), (64, 64, 512, 1024), (16, 1024, 32, 64))
CELLS = {
    "lstm": lambda i, h, dtype: jr.lstm(i, h, dtype=dtype),
    "gru": lambda i, h, dtype: jr.gru(i, h, reset_after=True, dtype=dtype),
}
PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}
# Each choice: (A's switches, B's switches); the rest of configure's switches stay default.
CHOICES = {
    "hoist": ({"hoist": True}, {"hoist": False}),
    "amx": ({"amx": True}, {"amx": False}),
    "transpose": (
        {"materialise": True, "native_gemm": False},
        {"materialise": False, "native_gemm": False},
    ),
    "gemm": ({"native_gemm": True}, {"native_gemm": False}),
}
TRACED = {"materialise", "native_gemm"}  # switches read when a call is traced, not when it runs


def layer_calls(cell, size, seed):
    """The jitted inference and training-step calls of ``cell`` on random ``xs``."""
    batch, steps, n_in, _ = size
    params = cell.init(jax.random.key(seed))
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, steps, n_in))
    infer = jax.jit(lambda p, x: jr.scan(cell, p, x)[1])
    train = jax.jit(jax.grad(lambda p, x: jnp.mean(jr.scan(cell, p, x)[1].astype(jnp.float32))))
    return {
        "infer": harness.jax_call(infer, params, xs),
        "train": harness.jax_call(train, params, xs),
    }


def switched(settings, call):
    """``call`` run under the kernels' ``settings`` (traced under them, for a traced switch:
    ``call`` is then its own jitted function, traced at its first run)."""

    def run():
        _library.configure(**{k: v for k, v in settings.items() if k not in TRACED})
        _ops.MATERIALISE_T = settings.get("materialise")
        _ops.NATIVE_GEMM = settings.get("native_gemm")
        try:
            return call()
        finally:
            _ops.MATERIALISE_T = _ops.NATIVE_GEMM = None

    return run


def applies(choice: str, precision: str, mode: str, status) -> bool:
    """Whether the choice exists for this precision and mode on this CPU."""
    if choice == "amx":
        return precision == "bf16" and status.amx
    if choice == "transpose":
        return mode == "train"
    if choice == "gemm":
        return mode == "train" and precision == "bf16" and status.amx
    return True


def time_choice(choice: str, calls, args) -> dict:
    """A's and B's median ms and their paired ratio for one call: ``calls`` is the call, or
    A's and B's own (a traced choice)."""
    a_set, b_set = CHOICES[choice]
    call_a, call_b = calls if isinstance(calls, tuple) else (calls, calls)
    tasks = {"A": switched(a_set, call_a), "B": switched(b_set, call_b)}
    stats, _ = harness.time_interleaved(tasks, args.repeats, args.calls, args.seed)
    _library.configure()
    ratio = harness.paired_ratio(stats["A"]["samples_ms"], stats["B"]["samples_ms"])
    return {"a_ms": stats["A"]["median_ms"], "b_ms": stats["B"]["median_ms"], **ratio}


def run(args, status) -> list[dict]:
    rows = []
    for size, cell_name, prec in itertools.product(args.sizes, args.cells, args.precisions):
        cell = CELLS[cell_name](size[2], size[3], PRECISIONS[prec])
        calls = layer_calls(cell, size, args.seed)
        for choice, mode in itertools.product(args.choices, calls):
            if not applies(choice, prec, mode, status):
                continue
            call = calls[mode]
            if TRACED & set(CHOICES[choice][0]):  # A and B each trace a layer of their own
                call = tuple(layer_calls(cell, size, args.seed)[mode] for _ in "AB")
            row = {"size": list(size), "cell": cell_name, "precision": prec, "choice": choice}
            rows.append({**row, "mode": mode, **time_choice(choice, call, args)})
            print(f"  {rows[-1]}", flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_sizes(p, SIZES)
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--choices", nargs="+", choices=list(CHOICES), default=list(CHOICES))
    p.add_argument("--repeats", type=int, default=7, help="timed rounds")
    p.add_argument("--calls", type=int, default=3, help="calls per task and round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=None, help="CPUs to pin to (command line only)")
    p.add_argument("--quick", action="store_true", help="a tiny size, 1 round of 1 call")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    harness.require_pinned(args.cores, "bench_kernel_choices.py")
    if args.quick:
        args.sizes, args.repeats, args.calls = [(2, 5, 4, 6)], 1, 1
    status = jr.kernels.status()
    if not status.available:
        raise SystemExit(f"jaxrnn kernels not available: {status.reason}")
    flags = harness.simd_flags()
    cores = harness.pinned_cores() or harness.usable_cpus()
    print(f"jax {jax.__version__}; {cores} core(s); CPU flags: {flags}")
    print(f"kernels: {status.isa}, bf16 dot products {status.bf16_dot}, AMX tiles {status.amx}")
    rows = run(args, status)
    header = ["B x T x I x H", "cell", "prec", "mode", "A / B", "A ms", "B ms", "A / B (IQR)"]
    names = {
        "hoist": "hoisted / fused",
        "amx": "AMX / dot products",
        "transpose": "a^T materialised / dot_general",
        "gemm": "AMX GEMMs / XLA",
    }
    table = [
        [
            harness.size_name(r["size"]),
            r["cell"],
            r["precision"],
            r["mode"],
            names[r["choice"]],
            f"{r['a_ms']:.2f}",
            f"{r['b_ms']:.2f}",
            f"{r['ratio']:.2f} ({r['ratio_q25']:.2f}-{r['ratio_q75']:.2f})",
        ]
        for r in rows
    ]
    print(harness.fmt_table(header, table) if table else "(no choice applies here)")
    results = {
        "config": harness.config(args),
        "environment": harness.environment(("jax", "jaxrnn")),
        "kernels": status._asdict(),
        "rows": rows,
    }
    if args.json:
        harness.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
