"""Remat benchmark: what each ``remat`` form of ``jr.scan`` costs and buys in a training step.

One idea: compile the jaxrnn training step of a long sequence once per ``remat`` form and
report XLA's temporary buffer size next to the time per step. The forms are what a step keeps
for the backward pass:

* ``everything_saveable``: every intermediate (plain JAX autodiff,
  ``remat=jax.checkpoint_policies.everything_saveable``);
* ``False`` (the default): the outputs of matmuls and nonlinearities (``jr.save_nonlinear``),
  recomputing the elementwise arithmetic between them;
* ``True``: only the carry, recomputing the whole step.

Memory is ``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``; the steps
are timed interleaved (``harness.py``, one call per round). All forms compute the same loss,
which is recorded. ``--variants nohoist`` adds the same for the cell without
``project``/``step`` (``variants.py``).

Run from the repository root::

    python benchmarks/bench_remat.py                  # B=32, T=1024, I=128, H=256, 5 rounds
    python benchmarks/bench_remat.py --quick          # tiny smoke run
    python benchmarks/bench_remat.py --cores 1 --json out.json
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
from peers import CELLS, mse  # noqa: E402
from variants import SAVE_ALL, without_hoisting  # noqa: E402

import jaxrnn as jr  # noqa: E402

# What a step keeps for the backward pass, by the label in the table.
REMAT_FORMS = {"everything_saveable": SAVE_ALL, "False": False, "True": True}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32, help="B (default 32)")
    p.add_argument("--time", type=int, default=1024, help="T, sequence length (default 1024)")
    p.add_argument("--input", type=int, default=128, help="I, input features (default 128)")
    p.add_argument("--hidden", type=int, default=256, help="H, hidden features (default 256)")
    harness.add_common_args(p, repeats=5, calls=1)
    p.add_argument("--unroll", type=int, default=1, help="scan unroll (default 1)")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS), help="cells to run")
    p.add_argument(
        "--variants",
        nargs="*",
        choices=("nohoist",),
        default=[],
        help="nohoist: also measure the cell without project/step",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.time, args.input, args.hidden = 2, 16, 3, 4
        args.calls = 1
    for name in ("batch", "time", "input", "hidden", "repeats", "calls", "unroll"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def run_remat(args, key) -> list[dict]:
    """Temp memory, compile time, step time and loss for each cell, form and remat."""
    rng = np.random.default_rng(args.seed + 1)
    T = args.time
    xs = jnp.asarray(rng.standard_normal((args.batch, T, args.input), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((args.batch, T, args.hidden), dtype=np.float32))
    rows, tasks = [], []
    keys = dict(zip(("lstm", "gru"), jax.random.split(key), strict=True))
    for cell_name in args.cells:
        if cell_name == "lstm":
            cell = jr.lstm(args.input, args.hidden)
        else:
            cell = jr.gru(args.input, args.hidden, reset_after=True)
        params = cell.init(keys[cell_name])
        forms = [("jr.scan", cell)]
        if "nohoist" in args.variants:
            forms.append(("no hoist", without_hoisting(cell)))
        for form, c in forms:
            for remat in REMAT_FORMS:

                def loss(p, x, y, c=c, remat=remat):
                    return mse(jr.scan(c, p, x, unroll=args.unroll, remat=REMAT_FORMS[remat])[1], y)

                lowered = jax.jit(jax.value_and_grad(loss)).lower(params, xs, target)
                t0 = time.perf_counter()
                compiled = lowered.compile()
                compile_s = time.perf_counter() - t0
                mem = compiled.memory_analysis()

                def run(compiled=compiled, params=params):
                    return jax.block_until_ready(compiled(params, xs, target))[0]

                rows.append(
                    {
                        "cell": cell_name,
                        "form": form,
                        "remat": remat,
                        "T": T,
                        "temp_bytes": None if mem is None else int(mem.temp_size_in_bytes),
                        "argument_bytes": None if mem is None else int(mem.argument_size_in_bytes),
                        "compile_s": compile_s,
                    }
                )
                tasks.append(((cell_name, form, remat), run))
    stats, first = harness.time_interleaved(tasks, args.repeats, args.calls, args.seed)
    for r in rows:
        key_ = (r["cell"], r["form"], r["remat"])
        r["median_ms"] = stats[key_]["median_ms"]
        r["samples_ms"] = stats[key_]["samples_ms"]
        r["loss"] = float(first[key_])
    return rows


def report(results: dict) -> str:
    cfg = results["config"]
    env = results["env"]
    rem = results["rows"]
    parts = [
        f"jaxrnn remat benchmark: B={cfg['batch']} T={cfg['time']} I={cfg['input']} "
        f"H={cfg['hidden']}, unroll={cfg['unroll']}, {cfg['repeats']} rounds x {cfg['calls']} "
        f"calls, median ms per step",
        f"jax {env['jax']} ({env['jax_backend']}), {env['usable_cpus']} usable CPUs"
        + (f" (pinned with --cores {cfg['cores']})" if cfg.get("cores") else ""),
        "",
        f"Remat: jaxrnn training step at T={rem[0]['T']}; ratios relative to jr.scan with its "
        "default remat=False",
        "",
    ]
    body = []
    for cell in dict.fromkeys(r["cell"] for r in rem):
        base = next(
            r for r in rem if r["cell"] == cell and r["form"] == "jr.scan" and r["remat"] == "False"
        )
        for r in (r for r in rem if r["cell"] == cell):
            less = (
                f"{base['temp_bytes'] / r['temp_bytes']:.2f}x"
                if r["temp_bytes"] and r is not base
                else ""
            )
            body.append(
                [
                    cell.upper(),
                    r["form"],
                    r["remat"],
                    harness.mib(r["temp_bytes"]),
                    less,
                    f"{r['median_ms']:.1f}",
                    f"{r['median_ms'] / base['median_ms']:.2f}",
                ]
            )
    header = ["cell", "form", "remat", "XLA temp memory", "memory ratio", "median ms"]
    parts.append(harness.fmt_table([*header, "time ratio"], body))
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the report, and return all results as a dict."""
    args = parse_args(argv)
    harness.require_pinned(args.cores, "bench_remat.py")
    # The same key as the remat part of the former bench_core.py, hence the same weights.
    _k_params, k_remat = jax.random.split(jax.random.key(args.seed))
    results = {
        "config": harness.config(args),
        "env": harness.environment(("jax", "jaxrnn")),
        "rows": run_remat(args, k_remat),
    }
    print(report(results), flush=True)
    if args.json is not None:
        harness.write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
