"""Long-range tasks: does each cell learn, how fast, and what parallel-in-time evaluation costs.

One idea: compare the recurrent cells of jaxrnn on the long-range benchmarks of the literature,
with one model and training loop (:mod:`jaxrnn.models.long_range`) so that only the cell
differs, and next to what the papers report. Three parts, each its own flag:

* ``--table``: train every cell (LSTM, GRU, minGRU, minLSTM, LRU, RG-LRU, sLSTM) on the adding
  problem (T = 100, 400, 1000), copy memory (delays 100 and 200) and the character-level task,
  with a fixed step budget and seed; record the first evaluation that solves the task (adding:
  held-out MSE below 0.01; copy: at least 99% of the copied symbols right) and the final
  metric; write ``benchmarks/results/long_range.json`` and print a Markdown table with the
  published results beside it.
* ``--speed``: time of one training step (loss and gradient of a one-layer scan) against T
  = 1k..64k, GRU vs minGRU vs LRU under each ``jr.scan`` method that applies, timed in paired
  interleaved rounds (``harness.time_interleaved``); ratios against ``"sequential"``. A step
  slower than ``--single-call-s`` is timed by one call instead; the results file keeps the rows
  of the T not run, so each T can be its own run.
* ``--newton``: Newton (DEER) iterations to converge against T and hidden size, for GRU and
  LSTM at initialisation, with full and diagonal Jacobians (iteration counts, not timings).

Run from the repository root (``nice`` the table on a shared machine; it trains 42 models)::

    nice -n 19 python benchmarks/bench_long_range.py --table
    python benchmarks/bench_long_range.py --newton
    python benchmarks/bench_long_range.py --speed --cores 1 --json speed.json
    python benchmarks/bench_long_range.py --table --newton --speed --quick   # smoke test
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

import jaxrnn as jr  # noqa: E402
from jaxrnn import newton as lr_newton  # noqa: E402
from jaxrnn.models import long_range as lr  # noqa: E402
from jaxrnn.newton import Newton, newton_scan  # noqa: E402

RESULTS = _HERE / "results" / "long_range.json"
CELLS = list(lr.LONG_RANGE_CELLS)

# (task, T, steps, eval_every): sized so that the whole table trains in about 40 minutes on
# two shared CPU cores (B = 32, H = 64); --scale multiplies the step budgets.
TABLE_RUNS = [
    ("adding", 100, 600, 50),
    ("copy", 100, 500, 50),
    ("char", 128, 200, 50),
    ("adding", 400, 300, 50),
    ("copy", 200, 300, 50),
    ("adding", 1000, 150, 25),
]
QUICK_RUNS = [("adding", 10, 3, 1), ("copy", 5, 3, 1), ("char", 8, 3, 1)]

# What the papers report for these tasks, quoted by setting; "-" where a paper has no such
# experiment. Short, to fit a table cell.
PUBLISHED = {
    ("adding", "lstm"): "reported solved for T = 100, 500, 1000 (Hochreiter & Schmidhuber "
    "1997, exp. 4) and T = 100-750 (Arjovsky et al. 2016)",
    ("adding", "gru"): "-",
    ("adding", "min_gru"): "- (Feng et al. 2024 test selective copying, char LM, RL)",
    ("adding", "min_lstm"): "- (as minGRU)",
    ("adding", "lru"): "- (Orvieto et al. 2023 test Long Range Arena)",
    ("adding", "rg_lru"): "- (De et al. 2024 test language modelling, synthetic recall)",
    ("adding", "slstm"): "- (Beck et al. 2024 test formal languages, MQAR, LM)",
    ("copy", "lstm"): "reported not to beat the memoryless baseline, T = 100-500 (Arjovsky "
    "et al. 2016; the uRNN does)",
    ("copy", "gru"): "-",
    ("copy", "min_gru"): "selective copying solved with 3 layers (Feng et al. 2024)",
    ("copy", "min_lstm"): "selective copying solved with 3 layers (Feng et al. 2024)",
    ("copy", "lru"): "-",
    ("copy", "rg_lru"): "-",
    ("copy", "slstm"): "-",
    ("char", "min_gru"): "Shakespeare char LM: on par with Mamba/Transformer (Feng et al. 2024)",
    ("char", "min_lstm"): "Shakespeare char LM: on par with Mamba/Transformer (Feng et al. 2024)",
}

SPEED_CELLS = {
    "gru": (jr.gru, ("sequential", "newton")),
    "min_gru": (jr.min_gru, ("sequential", "associative", "newton")),
    "lru": (jr.lru, ("sequential", "associative")),  # complex state: no Newton
}
NEWTON_MAX_ITERS = 300  # --newton: iteration cap ("> 300": not converged)
NEWTON_MAX_DIAGONAL = 32  # --newton: diagonal Jacobians up to this state size (CPU time)
SPEED_NEWTON = Newton(jacobian="diagonal")  # full Jacobians of 64k steps do not fit in memory
# --speed: a step slower than this many seconds (the Newton GRU at T = 64k takes minutes) is
# timed by one call after its compiling call instead of 2 + 2 * repeats calls in the rounds.
SINGLE_CALL_S = 60.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help="train every cell on every task")
    p.add_argument("--speed", action="store_true", help="training-step time against T")
    p.add_argument("--newton", action="store_true", help="Newton iterations against T and H")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=CELLS)
    p.add_argument("--hidden", type=int, default=64, help="H of the table's models (default 64)")
    p.add_argument("--batch", type=int, default=32, help="B of the table's models (default 32)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the step budgets")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="TASK:T",
        help="--table: run only these (e.g. adding:400 copy:200), keeping the other rows of "
        "the results file",
    )
    p.add_argument(
        "--times",
        type=int,
        nargs="+",
        default=[1024, 4096, 16384, 65536],
        help="--speed: sequence lengths (default 1024 4096 16384 65536)",
    )
    p.add_argument("--speed-batch", type=int, default=4, help="--speed: B (default 4)")
    p.add_argument("--speed-hidden", type=int, default=64, help="--speed: H (default 64)")
    p.add_argument(
        "--single-call-s",
        type=float,
        default=SINGLE_CALL_S,
        help="--speed: a step slower than this (s) is timed once, outside the rounds "
        f"(default {SINGLE_CALL_S:g})",
    )
    p.add_argument("--newton-times", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--newton-hidden", type=int, nargs="+", default=[4, 16, 64])
    harness.add_common_args(p, repeats=5, calls=1)
    args = p.parse_args(argv)
    if not (args.table or args.speed or args.newton):
        p.error("choose at least one of --table, --speed, --newton")
    if args.quick:
        args.hidden, args.batch = 4, 2
        args.times, args.speed_batch, args.speed_hidden = [16, 32], 2, 4
        args.newton_times, args.newton_hidden = [8, 32], [2, 4]
        args.repeats = min(args.repeats, 2)
    for name in ("hidden", "batch", "speed_batch", "speed_hidden", "repeats", "calls"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.scale <= 0:
        p.error("--scale must be > 0")
    known = [f"{task}:{length}" for task, length, _, _ in TABLE_RUNS + QUICK_RUNS]
    for item in args.only or ():
        if item not in known:
            p.error(f"--only: expected some of {' '.join(known)}, got {item}")
    return args


# --------------------------------------------------------------------------------------------
# --table


def run_table(args, out: dict, path: Path | None) -> list[dict]:
    """Train every cell on every task; rows are appended (and written) as they finish."""
    runs = QUICK_RUNS if args.quick else TABLE_RUNS
    if args.only is not None:
        runs = [r for r in runs if f"{r[0]}:{r[1]}" in args.only]
    rows = out.setdefault("table", [])
    for task, length, steps, eval_every in runs:
        for cell in args.cells:
            config = lr.LongRangeConfig(
                task=task,
                length=length,
                cell=cell,
                hidden_size=args.hidden,
                batch_size=args.batch,
                steps=max(1, round(steps * args.scale)),
                eval_every=eval_every,
                eval_size=8 if args.quick else 128,
                seed=args.seed,
            )
            res = lr.train_long_range(config)
            row = {
                "task": task,
                "T": length,
                "cell": cell,
                "steps": config.steps,
                "hidden": config.hidden_size,
                "batch": config.batch_size,
                "solved_at": res.solved_at,
                "final_metric": res.eval_metric[-1],
                "final_loss": res.eval_loss[-1],
                "baseline": res.baseline,
                "seconds": res.seconds,
                "curve": {
                    "steps": res.steps,
                    "eval_loss": res.eval_loss,
                    "eval_metric": res.eval_metric,
                },
            }
            same = (task, length, cell)
            rows[:] = [r for r in rows if (r["task"], r["T"], r["cell"]) != same]
            rows.append(row)
            print(
                f"  {task} T={length} {cell}: solved at {res.solved_at}, final "
                f"{row['final_metric']:.4f} (baseline loss {res.baseline:.4f}), "
                f"{res.seconds:.0f} s",
                flush=True,
            )
            if path is not None:
                harness.write_json(path, out)
    return rows


def _metric_name(task: str) -> str:
    return {"adding": "MSE", "copy": "accuracy", "char": "bits/char"}[task]


def table_report(rows: list[dict]) -> str:
    body = []
    for r in rows:
        published = PUBLISHED.get((r["task"], r["cell"]), "-")
        base = r["baseline"] if r["task"] != "char" else r["baseline"] / 0.6931471805599453
        body.append(
            [
                r["task"],
                str(r["T"]),
                r["cell"],
                str(r["solved_at"]) if r["solved_at"] is not None else "no",
                f"{r['final_metric']:.4f} {_metric_name(r['task'])}",
                f"{r['final_loss']:.4f} / {base:.4f}",
                str(r["steps"]),
                published,
            ]
        )
    header = ["task", "T", "cell", "solved at step", "final metric", "loss / baseline"]
    return harness.fmt_table([*header, "budget", "published"], body)


# --------------------------------------------------------------------------------------------
# --newton


def run_newton(args) -> list[dict]:
    """Iterations of newton_scan at initialisation, GRU and LSTM, full and diagonal Jacobians."""
    rows = []
    batch = 2 if args.quick else 4
    for name, factory in (("gru", jr.gru), ("lstm", jr.lstm)):
        for hidden in args.newton_hidden:
            cell = factory(hidden, hidden)
            params = cell.init(jax.random.key(args.seed))
            state = hidden * (2 if name == "lstm" else 1)
            for length in args.newton_times:
                xs = jax.random.normal(jax.random.key(args.seed + 1), (length, batch, hidden))
                h0 = cell.initial_carry((batch,))
                for jac in ("full", "diagonal"):
                    if jac == "full" and state > lr_newton.AUTO_FULL_MAX:
                        continue  # O(T B D^2) Jacobians: what jacobian="auto" avoids
                    if jac == "diagonal" and state > NEWTON_MAX_DIAGONAL:
                        continue  # D Jacobian-vector products per iteration, many iterations
                    opts = Newton(jacobian=jac, max_iters=min(length, NEWTON_MAX_ITERS))

                    def run(xs, h0, opts=opts, cell=cell, params=params):
                        def f(c, x):
                            return cell.apply(params, c, x)

                        return newton_scan(f, h0, xs, options=opts, batch_ndim=1, return_info=True)

                    _, _, info = jax.jit(run)(xs, h0)
                    row = {
                        "cell": name,
                        "hidden": hidden,
                        "state": state,
                        "T": length,
                        "jacobian": jac,
                        "iterations": int(info.iterations),
                        "converged": bool(info.converged),
                        "residual": float(info.residual),
                        "max_iters": opts.max_iters,
                    }
                    rows.append(row)
                    print(
                        f"  newton {name} H={hidden} T={length} {jac}: {row['iterations']} "
                        f"iterations, converged {row['converged']}",
                        flush=True,
                    )
    return rows


def newton_report(rows: list[dict]) -> str:
    times = sorted({r["T"] for r in rows})
    keys = sorted({(r["cell"], r["hidden"], r["jacobian"]) for r in rows})
    by = {(r["cell"], r["hidden"], r["jacobian"], r["T"]): r for r in rows}
    body = []
    for cell, hidden, jac in keys:
        cells = []
        for t in times:
            r = by.get((cell, hidden, jac, t))
            if r is None:
                cells.append("-")
            else:
                cells.append(str(r["iterations"]) if r["converged"] else f">{r['max_iters']}")
        body.append([cell, str(hidden), jac, *cells])
    return harness.fmt_table(["cell", "H", "Jacobian", *(f"T={t}" for t in times)], body)


# --------------------------------------------------------------------------------------------
# --speed


def run_speed(args) -> list[dict]:
    """Paired interleaved timings of one training step per T, every (cell, method).

    Each step is called twice first (compile, then one timed call); a step slower than
    ``--single-call-s`` keeps that one sample (``"single_call": True``) and stays out of the
    interleaved rounds, where every other step is timed.
    """
    rows = []
    b, h = args.speed_batch, args.speed_hidden
    for length in args.times:
        xs = jax.random.normal(jax.random.key(args.seed), (b, length, h))
        tasks, single = {}, {}
        for name, (factory, methods) in SPEED_CELLS.items():
            cell = factory(h, h)
            params = cell.init(jax.random.key(args.seed + 1))
            for method in methods:
                m = SPEED_NEWTON if method == "newton" else method

                def loss(p, xs, cell=cell, m=m):
                    return jnp.mean(jnp.square(jr.scan(cell, p, xs, method=m)[1]))

                step = harness.jax_call(jax.jit(jax.value_and_grad(loss)), params, xs)
                t0 = time.perf_counter()
                step()  # compiles
                warmup_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                step()
                once_ms = (time.perf_counter() - t0) * 1e3
                if once_ms > args.single_call_s * 1e3:
                    single[(name, method)] = {
                        **harness.summary([once_ms]),
                        "samples_ms": [once_ms],
                        "warmup_s": warmup_s,
                        "single_call": True,
                    }
                else:
                    tasks[(name, method)] = step
        stats, _ = harness.time_interleaved(tasks, args.repeats, args.calls, args.seed)
        stats.update(single)
        for name, (_, methods) in SPEED_CELLS.items():
            base = stats[(name, "sequential")]
            for method in methods:
                s = stats[(name, method)]
                if s.get("single_call") or base.get("single_call"):
                    r = s["median_ms"] / base["median_ms"]
                    ratio = {"ratio": r, "ratio_q25": r, "ratio_q75": r, "ratio_of_medians": r}
                else:
                    ratio = harness.paired_ratio(s["samples_ms"], base["samples_ms"])
                rows.append(
                    {"T": length, "cell": name, "method": method, **s, "vs_sequential": ratio}
                )
                print(
                    f"  T={length} {name} {method}: {s['median_ms']:.1f} ms "
                    f"(x{ratio['ratio']:.2f} of sequential"
                    f"{', one call' if s.get('single_call') else ''})",
                    flush=True,
                )
    return rows


def speed_report(rows: list[dict]) -> str:
    body = [
        [
            str(r["T"]),
            r["cell"],
            r["method"],
            f"{r['median_ms']:.1f}",
            f"{r['vs_sequential']['ratio']:.2f} (one call)"
            if r.get("single_call")
            else f"{r['vs_sequential']['ratio']:.2f} "
            f"[{r['vs_sequential']['ratio_q25']:.2f}, {r['vs_sequential']['ratio_q75']:.2f}]",
        ]
        for r in rows
    ]
    header = ["T", "cell", "method", "step ms (median)", "/ sequential (paired, IQR)"]
    return harness.fmt_table(header, body)


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the chosen parts, print their reports, and return all results as a dict."""
    args = parse_args(argv)
    harness.require_pinned(args.cores, "bench_long_range.py")
    path = args.json
    if path is None and not args.quick:
        path = RESULTS
    out = harness.read_json(path) if path is not None and path.exists() else {}
    out.update(config=harness.config(args), env=harness.environment(("jax", "jaxrnn")))
    if args.table:
        if args.only is None:
            out["table"] = []
        print(table_report(run_table(args, out, path)), flush=True)
    if args.newton:
        out["newton"] = run_newton(args)
        print(newton_report(out["newton"]), flush=True)
    if args.speed:
        rows = run_speed(args)
        kept = [r for r in out.get("speed", []) if r["T"] not in args.times]
        out["speed"] = sorted(kept + rows, key=lambda r: r["T"])  # other T's rows are kept
        print(speed_report(rows), flush=True)
    if path is not None:
        harness.write_json(path, out)
        print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
