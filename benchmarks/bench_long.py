"""Long-sequence benchmark: memory and compile time of ``jr.scan``'s ``remat`` forms as T grows.

One idea: the training step of a many-to-one LSTM (the loss reads the final ``h`` only, the
gradient is taken w.r.t. the params) compiled for each sequence length ``T`` and each
``remat`` form, reporting XLA's temporary buffer size
(``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``), the time to lower
and compile, and the median time of a few steps. ``remat=False`` keeps several vectors per
step and ``True`` one carry per step, both O(T); ``"sqrt"`` keeps the carries between
segments of ``ceil(sqrt(T))`` steps and one segment's residuals, O(sqrt(T)). Compile time
should not grow with ``T``: every form is a loop whose body does not depend on it.

Run from the repository root::

    python benchmarks/bench_long.py                       # T = 1k, 4k, 16k, 64k; 3 steps each
    python benchmarks/bench_long.py --repeats 0           # memory and compile time only
    python benchmarks/bench_long.py --quick               # tiny smoke run
    python benchmarks/bench_long.py --cores 1 --json out.json
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The shared harness next to this file; the working tree's jaxrnn even if another is installed.
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

if __name__ == "__main__":
    harness.pin_from_argv()  # before JAX sizes its thread pool (hence E402)

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxrnn as jr  # noqa: E402

REMAT_FORMS = {"False": False, "True": True, "sqrt": "sqrt"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--times",
        type=int,
        nargs="+",
        default=[1024, 4096, 16384, 65536],
        help="sequence lengths T (default 1024 4096 16384 65536)",
    )
    p.add_argument("--remat", nargs="+", choices=REMAT_FORMS, default=list(REMAT_FORMS))
    p.add_argument("--batch", type=int, default=8, help="B (default 8)")
    p.add_argument("--input", type=int, default=32, help="I, input features (default 32)")
    p.add_argument("--hidden", type=int, default=128, help="H, hidden features (default 128)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed steps after one warm-up (default 3; 0: none)"
    )
    p.add_argument("--cores", type=int, default=None, help="run on the first N usable CPUs only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.times, args.batch, args.input, args.hidden, args.repeats = [16, 64], 2, 3, 4, 1
    for name in ("batch", "input", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.repeats < 0 or min(args.times) < 1:
        p.error("--repeats must be >= 0 and every T >= 1")
    return args


def run(args) -> list[dict]:
    """Temp memory, compile time, step time and loss for each T and remat form."""
    cell = jr.lstm(args.input, args.hidden)
    params = cell.init(jax.random.key(args.seed))
    rng = np.random.default_rng(args.seed + 1)
    rows = []
    for T in args.times:
        xs = jnp.asarray(rng.standard_normal((args.batch, T, args.input), dtype=np.float32))
        for label in args.remat:

            def loss(p, x, remat=REMAT_FORMS[label]):
                return jnp.mean(jr.scan(cell, p, x, remat=remat)[0].h ** 2)  # final h only

            t0 = time.perf_counter()
            compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
            row = {"T": T, "remat": label, "compile_s": time.perf_counter() - t0}
            mem = compiled.memory_analysis()
            row["temp_bytes"] = None if mem is None else int(mem.temp_size_in_bytes)
            if args.repeats:
                row["loss"] = float(jax.block_until_ready(compiled(params, xs))[0])  # warm-up
                samples = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(compiled(params, xs))
                    samples.append((time.perf_counter() - t0) * 1e3)
                row.update(harness.summary(samples), samples_ms=samples)
            rows.append(row)
            print(f"  T={T} remat={label}: {harness.mib(row['temp_bytes'])}", flush=True)
    return rows


def report(results: dict) -> str:
    cfg, env, rows = results["config"], results["env"], results["rows"]
    step = f"median of {cfg['repeats']} steps" if cfg["repeats"] else "steps not run"
    parts = [
        f"jaxrnn long-sequence benchmark: many-to-one LSTM, B={cfg['batch']} I={cfg['input']} "
        f"H={cfg['hidden']}, grad w.r.t. params; {step}",
        f"jax {env['jax']} ({env['jax_backend']}), {env['usable_cpus']} usable CPUs",
        "",
    ]
    body = [
        [
            str(r["T"]),
            r["remat"],
            harness.mib(r["temp_bytes"]),
            f"{r['compile_s']:.2f}",
            f"{r['median_ms']:.1f}" if "median_ms" in r else "-",
        ]
        for r in rows
    ]
    parts.append(harness.fmt_table(["T", "remat", "XLA temp memory", "compile s", "step ms"], body))
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the report, and return all results as a dict."""
    args = parse_args(argv)
    harness.require_pinned(args.cores, "bench_long.py")
    results = {
        "config": harness.config(args),
        "env": harness.environment(("jax", "jaxrnn")),
        "rows": run(args),
    }
    print(report(results), flush=True)
    if args.json is not None:
        harness.write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
