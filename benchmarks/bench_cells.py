"""Cell speed benchmark: one jaxrnn LSTM and GRU layer against Flax, Equinox and PyTorch on CPU.

One idea: with the same weights everywhere, time each implementation of the same layer in one
process, interleaved, and check jaxrnn against the fastest Flax cell by a paired ratio.

Implementations (each only if importable):

* jaxrnn: ``jr.scan`` with ``jr.lstm`` / ``jr.gru(reset_after=True)``;
* Flax: ``nn.RNN(nn.LSTMCell)``, ``nn.RNN(nn.OptimizedLSTMCell)``, ``nn.RNN(nn.GRUCell)``;
* Equinox (optional): ``eqx.nn.LSTMCell`` / ``eqx.nn.GRUCell``, vmapped over the batch inside a
  ``jax.lax.scan`` over time;
* PyTorch (optional): ``torch.nn.LSTM`` / ``torch.nn.GRU`` with ``batch_first=True``.

Two modes per implementation: ``infer`` (compiled forward returning the outputs ``ys``) and
``train`` (compiled ``value_and_grad`` of the mean squared error of ``ys`` against a fixed target,
with respect to the parameters; for torch, forward + ``torch.autograd.grad``).

Every implementation gets the same weights (``peers.py``: Flax's initialisation with randomised
biases, mapped to the other layouts), so the benchmark also checks that all of them compute the
same ``ys`` and loss (``max|diff|`` column), and that Flax's GRU is ``jr.gru(reset_after=True)``
(the GRU mode check).

Timing (``harness.py``): each entry is compiled and warmed up first; then ``--repeats`` rounds,
each of which visits every entry in a shuffled order and times ``--calls`` consecutive calls
(after one untimed call), blocking on the result. The table reports the median over rounds of
the time per call; the acceptance table the median of the per-round ratios jaxrnn / best Flax
cell.

``--variants`` adds jaxrnn built other ways (``variants.py``) to find where time goes; see
benchmarks/README.md for what they showed. The remat comparison is ``bench_remat.py``.

Run from the repository root::

    python benchmarks/bench_cells.py                  # full size: B=32, T=128, I=128, H=256
    python benchmarks/bench_cells.py --quick          # tiny smoke run
    python benchmarks/bench_cells.py --cores 1        # pinned to one core: steadiest timings
    python benchmarks/bench_cells.py --json out.json  # also dump all results
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The shared harness next to this file; the working tree's jaxrnn even if another is installed.
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

if __name__ == "__main__":
    harness.pin_from_argv()  # before JAX and PyTorch size their thread pools (hence E402)

import argparse  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from peers import GRU_MODE_NOTE, MODES, Entry  # noqa: E402
from variants import VARIANTS, VARIANTS_HELP, jaxrnn_variant, unroll_of  # noqa: E402

import jaxrnn as jr  # noqa: E402

# The optional peers, ``None`` when not importable.
eqx = peers.eqx
torch = peers.torch


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32, help="B (default 32)")
    p.add_argument("--time", type=int, default=128, help="T, sequence length (default 128)")
    p.add_argument("--input", type=int, default=128, help="I, input features (default 128)")
    p.add_argument("--hidden", type=int, default=256, help="H, hidden features (default 256)")
    harness.add_common_args(p, repeats=20, calls=3)
    p.add_argument(
        "--unroll", type=int, default=1, help="scan unroll for every JAX implementation (default 1)"
    )
    p.add_argument(
        "--cells", nargs="+", choices=peers.CELLS, default=list(peers.CELLS), help="cells to run"
    )
    p.add_argument(
        "--skip",
        nargs="*",
        choices=("flax", "equinox", "torch"),
        default=[],
        help="peer implementations to leave out",
    )
    p.add_argument("--variants", nargs="*", choices=VARIANTS, default=[], help=VARIANTS_HELP)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: every core this process may run on, like XLA)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.time, args.input, args.hidden = 2, 5, 3, 4
        args.calls = 1
    for name in ("batch", "time", "input", "hidden", "repeats", "calls", "unroll"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def build_entries(args, xs, target, key) -> tuple[list[Entry], list[dict]]:
    """All entries to time, plus extra correctness checks (the GRU mode check)."""
    entries: list[Entry] = []
    checks: list[dict] = []
    hidden, unroll = args.hidden, args.unroll
    k_lstm, k_gru, k_eqx = jax.random.split(key, 3)
    cell_keys = {"lstm": k_lstm, "gru": k_gru}
    eqx_keys = dict(zip(("lstm", "gru"), jax.random.split(k_eqx), strict=True))
    for cell_name in args.cells:
        fp = peers.flax_params(cell_name, hidden, xs, cell_keys[cell_name])
        cell, jp, label = peers.jaxrnn_from_flax(cell_name, args.input, hidden, fp)

        def add(impl, family, forward, params, cell_name=cell_name, **kw):
            entries.append(
                peers.jax_entry(cell_name, impl, family, forward, params, xs, target, **kw)
            )

        forward = peers.jaxrnn_forward(cell, unroll)
        add(f"jaxrnn {label}", "jaxrnn", forward, jp, baseline=True)
        for v in args.variants:
            built = jaxrnn_variant(v, cell_name, cell, unroll, args.time)
            if built is not None:
                add(f"jaxrnn {label} [{built[0]}]", "jaxrnn-variant", built[1], jp)
        flax_classes = {peers.flax_label(name): cls for name, cls in peers.FLAX_CELLS[cell_name]}
        peer = peers.peer_entries(
            cell_name, fp, jp, xs, target, eqx_keys[cell_name], unroll=unroll, skip=args.skip
        )
        for e in peer:
            entries.append(e)
            for v in args.variants if e.impl in flax_classes else ():
                if v.startswith("unroll"):  # this Flax cell at another unroll, right after it
                    forward = peers.flax_forward(flax_classes[e.impl](hidden), unroll_of(v))
                    add(f"{e.impl} [unroll={unroll_of(v)}]", "flax-variant", forward, fp)
        if cell_name == "gru" and "flax" not in args.skip:
            checks += gru_mode_check(args, fp, jp, xs)
    return entries, checks


def gru_mode_check(args, fp, jp, xs) -> list[dict]:
    """Evidence for the GRU mode choice: the same weights through both jaxrnn GRU forms."""
    ref = np.asarray(peers.flax_forward(nn.GRUCell(args.hidden), args.unroll)(fp, xs))
    checks = []
    for reset_after in (True, False):
        c = jr.gru(args.input, args.hidden, reset_after=reset_after)
        ys = np.asarray(jax.jit(peers.jaxrnn_forward(c, args.unroll))(jp, xs))
        checks.append(
            {
                "check": f"max|ys - flax GRUCell| for jr.gru(reset_after={reset_after})",
                "value": float(np.max(np.abs(ys - ref))),
            }
        )
    return checks


def run_speed(args, entries: list[Entry]) -> list[dict]:
    """Time every entry in both modes; one row per entry and mode, compared with jaxrnn."""
    tasks = [((i, m), getattr(e, m)) for i, e in enumerate(entries) for m in MODES]
    stats, first = harness.time_interleaved(tasks, args.repeats, args.calls, args.seed)
    rows = []
    for i, e in enumerate(entries):
        base_i = next(j for j, b in enumerate(entries) if b.cell == e.cell and b.baseline)
        for m in MODES:
            out = peers.to_numpy(first[(i, m)])
            ref = peers.to_numpy(first[(base_i, m)])
            rows.append(
                {
                    "cell": e.cell,
                    "impl": e.impl,
                    "family": e.family,
                    "mode": m,
                    **stats[(i, m)],
                    "ratio_vs_jaxrnn": stats[(i, m)]["median_ms"] / stats[(base_i, m)]["median_ms"],
                    "out_shape": list(out.shape),
                    "max_abs_diff_vs_jaxrnn": float(np.max(np.abs(out - ref)))
                    if out.shape == ref.shape
                    else None,
                }
            )
    return rows


def acceptance(rows: list[dict]) -> list[dict]:
    """jaxrnn / best Flax cell, per cell and mode (criterion: paired ratio <= 1.0)."""
    out = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for m in MODES:
            sel = [r for r in rows if r["cell"] == cell and r["mode"] == m]
            base = next(r for r in sel if r["family"] == "jaxrnn")
            flax_rows = [r for r in sel if r["family"] == "flax"]
            if not flax_rows:
                continue
            best = min(flax_rows, key=lambda r: r["median_ms"])
            # Paired: the two entries' times in the same round share that round's background
            # load, so the per-round ratio cancels most of it.
            paired = harness.paired_ratio(base["samples_ms"], best["samples_ms"])
            out.append(
                {
                    "cell": cell,
                    "mode": m,
                    "jaxrnn_ms": base["median_ms"],
                    "best_flax": best["impl"],
                    "best_flax_ms": best["median_ms"],
                    **paired,
                    "pass": paired["ratio"] <= 1.0,
                }
            )
    return out


def report(results: dict) -> str:
    cfg = results["config"]
    env = results["env"]
    parts = [
        f"jaxrnn core benchmark: B={cfg['batch']} T={cfg['time']} I={cfg['input']} "
        f"H={cfg['hidden']}, unroll={cfg['unroll']}, {cfg['repeats']} rounds x {cfg['calls']} "
        f"calls, median ms per call",
        f"jax {env['jax']} ({env['jax_backend']}), flax {env['flax']}, equinox {env['equinox']}, "
        f"torch {env['torch']} (threads={env['torch_threads']}), "
        f"{env['usable_cpus']} usable CPUs"
        + (f" (pinned with --cores {cfg['cores']})" if cfg.get("cores") else ""),
        "GRU: " + GRU_MODE_NOTE,
        "",
    ]
    body = [
        [
            r["cell"].upper(),
            r["impl"],
            r["mode"],
            f"{r['median_ms']:.2f}",
            f"{r['q25_ms']:.2f}-{r['q75_ms']:.2f}",
            f"{r['min_ms']:.2f}",
            f"{r['ratio_vs_jaxrnn']:.2f}",
            f"{r['warmup_s']:.1f}",
            "n/a" if r["max_abs_diff_vs_jaxrnn"] is None else f"{r['max_abs_diff_vs_jaxrnn']:.1e}",
        ]
        for r in sorted(results["rows"], key=lambda r: (r["cell"], r["mode"]))
    ]
    header = ["cell", "implementation", "mode", "median ms", "IQR ms", "min ms"]
    header += ["time / jaxrnn", "warm-up s", "max|diff| vs jaxrnn"]
    parts.append(harness.fmt_table(header, body))
    parts.append(
        "\n(time / jaxrnn > 1: slower than jaxrnn. max|diff|: ys for infer, loss for train, "
        "same weights everywhere.)"
    )
    if results["acceptance"]:
        parts += [
            "",
            "Acceptance: jaxrnn / best Flax cell <= 1.0 (ratio: median over rounds of the "
            "per-round ratio)",
            "",
        ]
        header = ["cell", "mode", "jaxrnn ms", "best flax", "flax ms", "ratio of medians"]
        header += ["ratio", "ratio IQR", "result"]
        body = [
            [
                a["cell"].upper(),
                a["mode"],
                f"{a['jaxrnn_ms']:.2f}",
                a["best_flax"],
                f"{a['best_flax_ms']:.2f}",
                f"{a['ratio_of_medians']:.3f}",
                f"{a['ratio']:.3f}",
                f"{a['ratio_q25']:.3f}-{a['ratio_q75']:.3f}",
                "PASS" if a["pass"] else "FAIL",
            ]
            for a in results["acceptance"]
        ]
        parts.append(harness.fmt_table(header, body))
    if results["checks"]:
        parts += ["", "GRU mode check (same weights):"]
        parts += [f"  {c['check']}: {c['value']:.2e}" for c in results["checks"]]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the report, and return all results as a dict."""
    args = parse_args(argv)
    harness.require_pinned(args.cores, "bench_cells.py")
    harness.set_torch_threads(args.torch_threads)
    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.time)
    xs = jnp.asarray(rng.standard_normal((*shape, args.input), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((*shape, args.hidden), dtype=np.float32))
    # The second key drove the remat comparison, now bench_remat.py (kept for the same weights).
    k_params, _k_remat = jax.random.split(jax.random.key(args.seed))

    entries, checks = build_entries(args, xs, target, k_params)
    rows = run_speed(args, entries)
    results = {
        "config": harness.config(args),
        "env": harness.environment(),
        "gru_mode": GRU_MODE_NOTE,
        "rows": rows,
        "acceptance": acceptance(rows),
        "checks": checks,
    }
    print(report(results), flush=True)
    if args.json is not None:
        harness.write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
