"""One layer call, repeated for a while, for a sampling profiler to look at.

One idea: where a layer call's time goes is a question for ``perf``, not for a timer. This
script compiles one of ``bench_kernel_choices.py``'s layer calls (``jr.scan`` of the sweep's
LSTM or GRU with ``reset_after``, float32 or the bf16 policy, inference or a training step:
``jax.grad`` of the mean of the outputs), runs it once to compile, then calls it until
``--seconds`` have passed and prints the median and fastest call. Run under ``perf record``,
the report splits the time between the kernels' matmuls (``microkernel``), their gate
functions (``lstm_epilogue``, ``backward_rows``), XLA's own code and the rest of the
process::

    perf record -o step.data python benchmarks/profile_step.py --cores 1 \\
        --size 16x1024x32x64 --cell lstm --precision bf16 --mode infer --seconds 6
    perf report -i step.data --no-children --sort dso,sym

The process's start (imports, compiling) is in the profile too; it is the same for every
call compared, and a longer ``--seconds`` shrinks its share. Shares of two profiles compare
as times once each is multiplied by its run's length and divided by its number of calls.

Run from the repository root (``--cores`` on the command line only).
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
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
from bench_kernel_choices import CELLS, PRECISIONS, layer_calls  # noqa: E402

import jaxrnn as jr  # noqa: E402

MODES = ("infer", "train")


def run(call, seconds: float) -> list[float]:
    """Milliseconds of each call after the first (which compiles), for ``seconds``; one at
    least."""
    call()
    times, end = [], time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=harness.parse_size, default=(16, 1024, 32, 64))
    p.add_argument("--cell", choices=list(CELLS), default="lstm")
    p.add_argument("--precision", choices=list(PRECISIONS), default="f32")
    p.add_argument("--mode", choices=MODES, default="infer")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to keep calling")
    p.add_argument("--cores", type=int, default=None, help="CPUs to pin to (command line only)")
    args = p.parse_args(argv)
    harness.require_pinned(args.cores, "profile_step.py")
    flags = harness.simd_flags()
    status = jr.kernels.status()
    cores = harness.pinned_cores() or harness.usable_cpus()
    print(f"jax {jax.__version__}; {cores} core(s); CPU flags: {flags}")
    print(f"kernels: {status.isa or status.reason}")
    cell = CELLS[args.cell](args.size[2], args.size[3], PRECISIONS[args.precision])
    times = run(layer_calls(cell, args.size, seed=0)[args.mode], args.seconds)
    result = {
        "size": list(args.size),
        "cell": args.cell,
        "precision": args.precision,
        "mode": args.mode,
        "calls": len(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }
    name = harness.size_name(args.size)
    print(
        f"{name} {args.cell} {args.precision} {args.mode}: {len(times)} calls, "
        f"median {result['median_ms']:.3f} ms, fastest {result['min_ms']:.3f} ms"
    )
    return result


if __name__ == "__main__":
    main()
