"""Sweep benchmark: jaxrnn against PyTorch (and Flax, Equinox) over sizes, cores and precisions.

One idea: for every size, core count, cell, precision and mode, time all implementations of the
same layer interleaved in one process, with the same weights, and report the paired ratio
jaxrnn / PyTorch (the headline), jaxrnn / best Flax cell and, in bfloat16, jaxrnn bf16 / jaxrnn
f32, each as the median and IQR of the per-round ratios (``harness.paired_ratio``).

The sweep:

* sizes ``(B, T, I, H)``: ``1x256x64x128`` (one sequence, small), ``32x128x128x256`` (the
  ``bench_cells.py`` size), ``64x64x512x1024`` (large matmuls), ``16x1024x32x64`` (long and
  thin); ``--sizes`` picks others;
* cores 1 and 2: thread pools are sized once per process, so this script (the parent) runs
  itself once per core count with ``--in-process --cores N`` (``harness.run_script``); each
  child pins itself before importing JAX and PyTorch, and the parent merges their results;
* cells: LSTM (``jr.lstm``) and GRU (``jr.gru(reset_after=True)``, the PyTorch/Flax/Equinox
  convention);
* precisions: ``f32``, and ``bf16``: float32 parameters, bfloat16 matmul operands with float32
  sums (``jr.lstm(I, H, dtype=jnp.bfloat16)``, see :mod:`jaxrnn.precision`);
* modes: ``infer`` (compiled forward returning ``ys``) and ``train`` (compiled
  ``value_and_grad`` of the MSE of ``ys`` against a fixed target, w.r.t. the parameters).

Implementations per cell and precision (``peers.py``; all with the same weights):

===========  ================================  =============================================
             f32                               bf16
===========  ================================  =============================================
jaxrnn       ``jr.scan`` of the cell           the cell with ``dtype=jnp.bfloat16``, plus the
                                               f32 one (for bf16 / f32 and as the reference)
Flax         ``nn.RNN`` of ``nn.LSTMCell``,    the same cells with ``dtype=jnp.bfloat16,
             ``nn.OptimizedLSTMCell``,         param_dtype=jnp.float32``
             ``nn.GRUCell``
Equinox      ``eqx.nn.LSTMCell``/``GRUCell``   (none: its cells have no mixed precision)
PyTorch      ``nn.LSTM``/``nn.GRU``            the same under ``torch.autocast("cpu",
                                               dtype=torch.bfloat16)``
===========  ================================  =============================================

Each (size, cell, precision, mode) group is one ``harness.time_interleaved`` call. Every entry's
first output (``ys`` for infer, the loss for train) is compared with jaxrnn f32's; the
``max|diff|`` column reports the worst entry of the group and whether it is within the
tolerance (``TOLERANCE``, scaled by the reference's size), which is reported, not asserted.

By default the rounds and calls of each group follow a cost model (``estimate``): large
groups get few rounds of one call, small ones more calls per round; ``--repeats`` and
``--calls`` fix both for every group. The estimated run time is printed at the start.

Run from the repository root::

    python benchmarks/bench_sweep.py --json sweep.json       # everything, 1 and 2 cores
    python benchmarks/bench_sweep.py --estimate              # the plan and its time only
    python benchmarks/bench_sweep.py --cores 1 --sizes 32x128x128x256 --cells lstm
    python benchmarks/bench_sweep.py --quick --in-process    # tiny smoke run (what tests run)
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The shared harness next to this file; the working tree's jaxrnn even if another is installed.
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

if __name__ == "__main__" and "--in-process" in sys.argv[1:]:
    harness.pin_from_argv()  # a child: pin before JAX and PyTorch size their thread pools

import argparse  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from peers import MODES, Entry  # noqa: E402

import jaxrnn as jr  # noqa: E402

# The CPU flags a table's header lists: the vector instruction sets the kernels and XLA use.
VECTOR_FLAGS = ("avx", "fma", "f16c", "amx")
SIZES = ((1, 256, 64, 128), (32, 128, 128, 256), (64, 64, 512, 1024), (16, 1024, 32, 64))
QUICK_SIZES = ((2, 5, 3, 4),)  # one: compiling dominates a quick run
PRECISIONS = ("f32", "bf16")
DTYPES = {"f32": None, "bf16": jnp.bfloat16}
# Agreement with jaxrnn f32, reported per group: max|out - ref| <= TOLERANCE * max(1, max|ref|).
TOLERANCE = {"f32": 1e-4, "bf16": 5e-2}
PEERS = ("flax", "equinox", "torch")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU features for native bfloat16 matmuls

# The cost model behind the default plan and the printed estimate (calibrated on the
# bench_cells size: a 32x128x128x256 LSTM forward takes ~20 ms on one core, ~160 GFLOP/s).
GFLOPS_PER_CORE = 150.0
STEP_MS = 0.01  # per-step overhead of a scan / RNN loop
TRAIN_FACTOR = 5.0  # a training step takes ~5 forward passes
BF16_FACTOR = 1.5  # bf16 without native support (no avx512_bf16): conversions on top
COMPILE_S = {"infer": 1.0, "train": 2.0}  # per JAX entry
PROCESS_S = 10.0  # starting a child: imports, building weights
SAMPLE_MS = 50.0  # default: enough calls per round for a sample of at least this long


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # No abbreviations: the pinning above looks for the literal ``--in-process``.
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--sizes",
        type=harness.parse_size,
        nargs="+",
        default=None,
        help="sizes BxTxIxH (default: " + " ".join(harness.size_name(s) for s in SIZES) + "; "
        "with --quick: " + " ".join(harness.size_name(s) for s in QUICK_SIZES) + ")",
    )
    p.add_argument(
        "--cores",
        type=int,
        nargs="+",
        default=None,
        help="core counts, one child process each (default 1 2, capped at the usable CPUs); "
        "with --in-process, the one count to pin this process to",
    )
    p.add_argument("--cells", nargs="+", choices=peers.CELLS, default=list(peers.CELLS))
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--skip", nargs="*", choices=PEERS, default=[], help="peers to leave out")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per group (default: by size)"
    )
    p.add_argument(
        "--calls", type=int, default=None, help="calls timed per round (default: by size)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    p.add_argument(
        "--torch-threads", type=int, default=None, help="default: the usable CPUs, like XLA"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round of 1 call")
    p.add_argument("--estimate", action="store_true", help="print the plan and its time; exit")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run here, for this process's CPUs (what each child does); no child processes",
    )
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else SIZES)
    if args.quick:
        args.repeats, args.calls = 1, 1
    for name in ("repeats", "calls"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    usable = harness.usable_cpus()
    if args.in_process:
        if args.cores is not None and len(args.cores) != 1:
            p.error("--in-process runs one core count: give --cores N once")
    elif args.cores is None:
        args.cores = [c for c in (1, 2) if c <= usable]
    elif not all(1 <= c <= usable for c in args.cores):
        p.error(f"--cores: expected values in 1..{usable}, got {args.cores}")
    return args


# --------------------------------------------------------------------------------------------
# The plan: rounds and calls per group, and the estimated time.


def call_ms(size, cell: str, precision: str, mode: str, cores: int) -> float:
    """The cost model's time of one call of one entry (ms)."""
    B, T, n_in, H = size
    gates = 4 if cell == "lstm" else 3
    flops = 2.0 * B * (n_in + H) * gates * H  # the two matmuls of one step
    ms = T * (STEP_MS + flops / (GFLOPS_PER_CORE * 1e9 * cores**0.6) * 1e3)
    return (
        ms
        * (TRAIN_FACTOR if mode == "train" else 1.0)
        * (BF16_FACTOR if precision == "bf16" else 1.0)
    )


def entry_count(cell: str, precision: str, skip: Sequence[str]) -> tuple[int, int]:
    """(JAX entries, all entries) of one group; see :func:`build_group`."""
    n_flax = len(peers.FLAX_CELLS[cell]) * ("flax" not in skip)
    n_eqx = int("equinox" not in skip and peers.eqx is not None and precision == "f32")
    n_torch = int("torch" not in skip and peers.torch is not None)
    n_jax = (2 if precision == "f32" else 3) + n_flax + n_eqx  # jaxrnn (+ f32), its XLA path
    return n_jax, n_jax + n_torch


def plan(args, cores: int) -> list[dict]:
    """One dict per group: its rounds, calls, and estimated seconds."""
    groups = []
    for size in args.sizes:
        for cell in args.cells:
            for precision in args.precisions:
                for mode in MODES:
                    ms = call_ms(size, cell, precision, mode, cores)
                    f32_ms = call_ms(size, cell, "f32", mode, cores)  # same plan in f32 and bf16
                    calls = args.calls or max(1, min(10, math.ceil(SAMPLE_MS / f32_ms)))
                    repeats = args.repeats or (15 if f32_ms < 100 else 9 if f32_ms < 400 else 5)
                    n_jax, n_all = entry_count(cell, precision, args.skip)
                    seconds = n_all * (2 + repeats * (calls + 1)) * ms / 1e3
                    seconds += n_jax * COMPILE_S[mode]
                    groups.append(
                        {
                            "size": list(size),
                            "cell": cell,
                            "precision": precision,
                            "mode": mode,
                            "repeats": repeats,
                            "calls": calls,
                            "entries": n_all,
                            "estimate_s": seconds,
                        }
                    )
    return groups


def estimate(args) -> dict:
    """Estimated seconds per core count and in total, with the plan of each core count."""
    counts = args.cores or [harness.pinned_cores() or harness.usable_cpus()]
    plans = {c: plan(args, c) for c in counts}
    per_cores = {c: PROCESS_S + sum(g["estimate_s"] for g in p) for c, p in plans.items()}
    return {"per_cores_s": per_cores, "total_s": sum(per_cores.values()), "plans": plans}


def estimate_text(est: dict) -> str:
    each = ", ".join(f"{c} core(s) ~{s / 60:.1f} min" for c, s in est["per_cores_s"].items())
    return (
        f"estimated run time ~{est['total_s'] / 60:.1f} min ({each}) on a quiet machine; "
        "a loaded one takes longer"
    )


# --------------------------------------------------------------------------------------------
# Running one core count in this process.


def build_group(cell_name, precision, base: Entry, weights, xs, target, skip):
    """The entries of one (size, cell, precision) group, jaxrnn's first.

    ``base`` is the jaxrnn f32 entry (shared by the f32 and bf16 groups, so it compiles once);
    ``weights`` are ``(fp, jp, eqx_key)``: Flax params, the same mapped to jaxrnn, and the key
    of the Equinox cell. Returns ``(entries, roles)``: ``roles`` names the entries the ratios
    need: ``jaxrnn`` (in the group's precision), ``ref`` (jaxrnn f32, the agreement
    reference), ``torch``, ``flax`` (a list).
    """
    fp, jp, eqx_key = weights
    dtype = DTYPES[precision]
    entries = [base]
    if dtype is not None:
        n_in, hidden = jp.w_ih.shape[0], jp.w_hh.shape[0]
        cell, _, label = peers.jaxrnn_from_flax(cell_name, n_in, hidden, fp, dtype=dtype)
        impl = f"jaxrnn {label} dtype={jnp.dtype(dtype).name}"
        forward = peers.jaxrnn_forward(cell, unroll=1)
        entries.insert(0, peers.jax_entry(cell_name, impl, "jaxrnn", forward, jp, xs, target))
    # jaxrnn on its XLA path (kernel=False), in the group's precision: what the kernels replace.
    n_in, hidden = jp.w_ih.shape[0], jp.w_hh.shape[0]
    cell, _, label = peers.jaxrnn_from_flax(cell_name, n_in, hidden, fp, dtype=dtype)
    xla = peers.jaxrnn_forward(cell, unroll=1, kernel=False)
    entries.append(
        peers.jax_entry(cell_name, f"jaxrnn {label} XLA path", "xla", xla, jp, xs, target)
    )
    entries += peers.peer_entries(cell_name, fp, jp, xs, target, eqx_key, skip=skip, dtype=dtype)
    roles = {
        "jaxrnn": 0,
        "ref": 0 if dtype is None else 1,
        "xla": next(i for i, e in enumerate(entries) if e.family == "xla"),
        "torch": next((i for i, e in enumerate(entries) if e.family == "torch"), None),
        "flax": [i for i, e in enumerate(entries) if e.family == "flax"],
    }
    return entries, roles


def time_group(entries, roles, group: dict, seed: int) -> tuple[list[dict], dict]:
    """Time one group interleaved; rows per entry and the group's ratios and agreement."""
    mode, precision = group["mode"], group["precision"]
    tasks = [(i, getattr(e, mode)) for i, e in enumerate(entries)]
    stats, first = harness.time_interleaved(tasks, group["repeats"], group["calls"], seed)
    ref = peers.to_numpy(first[roles["ref"]]).astype(np.float32)
    scale = max(1.0, float(np.max(np.abs(ref))))
    rows = []
    for i, e in enumerate(entries):
        out = peers.to_numpy(first[i]).astype(np.float32)
        diff = float(np.max(np.abs(out - ref))) if out.shape == ref.shape else None
        is_ref = i == roles["ref"] and i != roles["jaxrnn"]  # jaxrnn f32 in a bf16 group
        rows.append(
            {
                **group,
                "impl": e.impl,
                "family": e.family,
                "role": "ref" if is_ref else e.family,
                # What the entry computes in: f32 for jaxrnn f32 and Equinox in any group.
                "compute": "f32" if is_ref or e.family == "equinox" else precision,
                **stats[i],
                "out_dtype": peers.dtype_name(first[i]),
                "out_shape": list(out.shape),
                "max_abs_diff_vs_f32": diff,
                "within_tol": diff is not None and diff <= TOLERANCE[precision] * scale,
                "note": e.note,
            }
        )

    def paired(a, b):
        return harness.paired_ratio(stats[a]["samples_ms"], stats[b]["samples_ms"])

    j, t = roles["jaxrnn"], roles["torch"]
    best = min(roles["flax"], key=lambda i: stats[i]["median_ms"], default=None)
    # The entry furthest from the reference (a shape mismatch counts as furthest).
    worst = max(
        (r for i, r in enumerate(rows) if i != roles["ref"]),
        key=lambda r: math.inf if r["max_abs_diff_vs_f32"] is None else r["max_abs_diff_vs_f32"],
        default=rows[roles["ref"]],
    )
    summary = {
        **group,
        "jaxrnn_impl": entries[j].impl,
        "jaxrnn_ms": stats[j]["median_ms"],
        "torch_impl": None if t is None else entries[t].impl,
        "torch_ms": None if t is None else stats[t]["median_ms"],
        "vs_torch": None if t is None else paired(j, t),
        "best_flax": None if best is None else entries[best].impl,
        "best_flax_ms": None if best is None else stats[best]["median_ms"],
        "vs_flax": None if best is None else paired(j, best),
        "bf16_vs_f32": None if j == roles["ref"] else paired(j, roles["ref"]),
        "vs_xla": paired(j, roles["xla"]),
        "gflops": flops(group) / stats[j]["median_ms"] / 1e6,
        "worst_impl": worst["impl"],
        "max_abs_diff": worst["max_abs_diff_vs_f32"],
        "tolerance": TOLERANCE[precision] * scale,
        "agree": all(r["within_tol"] for r in rows),
    }
    return rows, summary


def flops(group: dict) -> float:
    """The multiply-adds of one call, times 2: the input and recurrent matmuls of every step
    (infer), and three times that for a training step (the forward pass, then the matmuls for
    the input, recurrent and weight cotangents)."""
    B, T, n_in, H = group["size"]
    gates = 4 if group["cell"] == "lstm" else 3
    forward = 2.0 * B * T * (n_in + H) * gates * H
    return forward * (3.0 if group["mode"] == "train" else 1.0)


def matmul_peak(cores: int, size: int = 2048, rounds: int = 5) -> float:
    """The machine's measured float32 matmul rate per core (GFLOP/s): XLA's best time of a
    ``size``-square matmul on this process's cores, divided by the cores."""
    a = jnp.ones((size, size), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, a).block_until_ready()
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        mm(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9 / cores


def run_here(args) -> dict:
    """The whole sweep for this process's CPUs: its rows, group summaries and notes."""
    harness.set_torch_threads(args.torch_threads)
    cores = harness.pinned_cores() or harness.usable_cpus()
    peak = matmul_peak(cores, size=256 if args.quick else 2048)
    groups = {
        (tuple(g["size"]), g["cell"], g["precision"], g["mode"]): g for g in plan(args, cores)
    }
    rows, summaries = [], []
    for si, size in enumerate(args.sizes):
        B, T, n_in, H = size
        rng = np.random.default_rng([args.seed, si])
        xs = jnp.asarray(rng.standard_normal((B, T, n_in), dtype=np.float32))
        target = jnp.asarray(rng.standard_normal((B, T, H), dtype=np.float32))
        k_lstm, k_gru, k_eqx = jax.random.split(
            jax.random.fold_in(jax.random.key(args.seed), si), 3
        )
        cell_keys = {"lstm": k_lstm, "gru": k_gru}
        eqx_keys = dict(zip(peers.CELLS, jax.random.split(k_eqx), strict=True))
        for cell_name in args.cells:
            fp = peers.flax_params(cell_name, H, xs, cell_keys[cell_name])
            cell, jp, label = peers.jaxrnn_from_flax(cell_name, n_in, H, fp)
            forward = peers.jaxrnn_forward(cell, unroll=1)
            base = peers.jax_entry(cell_name, f"jaxrnn {label}", "jaxrnn", forward, jp, xs, target)
            for precision in args.precisions:
                weights = (fp, jp, eqx_keys[cell_name])
                entries, roles = build_group(
                    cell_name, precision, base, weights, xs, target, args.skip
                )
                for mode in MODES:
                    group = groups[(tuple(size), cell_name, precision, mode)]
                    r, summary = time_group(entries, roles, group, args.seed)
                    rows += r
                    summaries.append(summary)
                    print(progress_line(summary), flush=True)
    flags = harness.cpu_flags()
    return {
        "cores": cores,
        "matmul_gflops_per_core": peak,
        "env": {
            **harness.environment(),
            "kernels": jr.kernels.status()._asdict(),
            "bf16_cpu_flags": [f for f in BF16_FLAGS if f in flags],
            "cpu_flags_vector": sorted(f for f in flags if f.startswith(VECTOR_FLAGS)),
            "torch_cpu_capability": None
            if peers.torch is None
            else peers.torch.backends.cpu.get_cpu_capability(),
        },
        "rows": rows,
        "groups": summaries,
        "notes": notes(args, rows),
    }


def notes(args, rows: list[dict]) -> list[str]:
    """What a reader of the tables must know: left-out peers, fallbacks, output dtypes."""
    out = []
    if "equinox" not in args.skip and peers.eqx is not None and "bf16" in args.precisions:
        out.append("Equinox: f32 rows only (eqx.nn cells have no mixed-precision option).")
    for name in ("equinox", "torch"):
        if name not in args.skip and getattr(peers, "eqx" if name == "equinox" else name) is None:
            out.append(f"{name}: not importable, left out.")
    for note in dict.fromkeys(f"{r['impl']}: {r['note']}" for r in rows if r["note"]):
        out.append(note)
    bf16_infer = [r for r in rows if r["precision"] == "bf16" and r["mode"] == "infer"]
    dtypes = {}
    for r in bf16_infer:
        if r["role"] != "ref":
            dtypes.setdefault(r["family"], set()).add(r["out_dtype"])
    if dtypes:
        out.append(
            "bf16 output dtypes of ys: "
            + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in dtypes.items())
            + " (compared as float32 with jaxrnn f32)."
        )
    return out


# --------------------------------------------------------------------------------------------
# Reporting.


def fmt_ratio(p: dict | None) -> str:
    """``median (q25-q75)`` of a paired ratio, or ``n/a``."""
    if p is None:
        return "n/a"
    return f"{p['ratio']:.2f} ({p['ratio_q25']:.2f}-{p['ratio_q75']:.2f})"


def fmt_ms(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:.2f}"


def short_flax(impl: str | None) -> str:
    """``flax nn.RNN(nn.OptimizedLSTMCell) dtype=bfloat16`` -> ``OptimizedLSTMCell``."""
    if impl is None:
        return "n/a"
    return impl.split("nn.RNN(nn.", 1)[-1].split(")", 1)[0]


def progress_line(s: dict) -> str:
    return (
        f"  {harness.size_name(s['size'])} {s['cell']} {s['precision']} {s['mode']}: "
        f"jaxrnn {fmt_ms(s['jaxrnn_ms'])} ms, torch {fmt_ms(s['torch_ms'])} ms, "
        f"jaxrnn/torch {fmt_ratio(s['vs_torch'])}"
    )


def report_run(run: dict) -> str:
    """The table of one core count, and its notes."""
    env = run["env"]
    parts = [
        f"### {run['cores']} core(s): median ms per call; ratios are paired (median and IQR "
        "of per-round ratios; < 1: jaxrnn faster)",
        "",
        f"jax {env['jax']}, flax {env['flax']}, equinox {env['equinox']}, torch {env['torch']} "
        f"(threads={env['torch_threads']}, {env['torch_cpu_capability']}), "
        f"{env['cpu_model']}, native bf16: {', '.join(env['bf16_cpu_flags']) or 'no'}",
        "",
        f"CPU flags: {' '.join(env.get('cpu_flags_vector', [])) or 'n/a'}; jaxrnn kernels: "
        + _kernels_text(env.get("kernels")),
        f"measured f32 matmul peak (XLA, 2048^3): {run.get('matmul_gflops_per_core', 0):.0f} "
        f"GFLOP/s per core, {run.get('matmul_gflops_per_core', 0) * run['cores']:.0f} on "
        f"{run['cores']} core(s); jaxrnn GFLOP/s below is its share of that",
        "",
    ]
    header = ["B x T x I x H", "cell", "mode", "prec", "jaxrnn ms", "torch ms", "jaxrnn / torch"]
    header += ["jaxrnn / XLA path", "jaxrnn GFLOP/s (% peak)"]
    header += ["jaxrnn / best Flax", "best Flax", "jaxrnn bf16 / f32", "max|diff| vs f32"]
    peak = run.get("matmul_gflops_per_core", 0.0) * run["cores"]
    body = []
    # Sizes and cells in the order run; within them infer, train; f32 next to bf16.
    first = {}
    for g in run["groups"]:
        first.setdefault((tuple(g["size"]), g["cell"]), len(first))
    for s in sorted(
        run["groups"],
        key=lambda s: (
            first[(tuple(s["size"]), s["cell"])],
            MODES.index(s["mode"]),
            PRECISIONS.index(s["precision"]),
        ),
    ):
        diff = "n/a" if s["max_abs_diff"] is None else f"{s['max_abs_diff']:.1e}"
        body.append(
            [
                harness.size_name(s["size"]),
                s["cell"].upper(),
                s["mode"],
                s["precision"],
                fmt_ms(s["jaxrnn_ms"]),
                fmt_ms(s["torch_ms"]),
                fmt_ratio(s["vs_torch"]),
                fmt_ratio(s.get("vs_xla")),
                _gflops_text(s.get("gflops"), peak),
                fmt_ratio(s["vs_flax"]),
                short_flax(s["best_flax"]),
                fmt_ratio(s["bf16_vs_f32"]) if s["precision"] != "f32" else "",
                diff + ("" if s["agree"] else " (!)"),
            ]
        )
    parts.append(harness.fmt_table(header, body))
    parts.append(
        "\ntorch: nn.LSTM/nn.GRU in f32 rows, under torch.autocast bf16 in bf16 rows. "
        f"max|diff|: worst implementation's ys (infer) or loss (train) against jaxrnn f32; (!) "
        f"marks one beyond {TOLERANCE['f32']:g} (f32) or {TOLERANCE['bf16']:g} (bf16) times "
        "max(1, max|ref|)."
    )
    parts += [f"- {n}" for n in run["notes"]]
    return "\n".join(parts)


def _kernels_text(status: dict | None) -> str:
    if not status:
        return "n/a"
    if not status["available"]:
        return f"not available ({status['reason']})"
    dot = "AVX512-BF16 dot products" if status["bf16_dot"] else "bf16 as f32 FMAs"
    if status.get("amx"):
        dot = "bf16 on AMX tiles (AVX512-BF16 dot products at B = 1)"
    return f"{status['isa']}, {dot}, {status['threads']} thread(s)"


def _gflops_text(gflops: float | None, peak: float) -> str:
    if gflops is None:
        return "n/a"
    return f"{gflops:.3g} ({100 * gflops / peak:.0f}%)" if peak else f"{gflops:.3g}"


def report(results: dict) -> str:
    return "\n\n".join(report_run(run) for run in results["runs"])


# --------------------------------------------------------------------------------------------
# Entry point.


def child_argv(args) -> list[str]:
    """The command line of one child: this run's options, in process (``--cores`` added)."""
    argv = ["--in-process", "--sizes", *map(harness.size_name, args.sizes), "--cells", *args.cells]
    argv += ["--precisions", *args.precisions, "--seed", str(args.seed)]
    if args.skip:
        argv += ["--skip", *args.skip]
    for name in ("repeats", "calls", "torch_threads"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the sweep (children per core count, or ``--in-process``); print and return it."""
    args = parse_args(argv)
    est = estimate(args)
    print(estimate_text(est), flush=True)
    results = {"config": harness.config(args), "estimate": est}
    if args.estimate:
        for cores, groups in est["plans"].items():
            header = ["B x T x I x H", "cell", "prec", "mode", "entries", "rounds x calls", "s"]
            body = [
                [
                    harness.size_name(g["size"]),
                    g["cell"],
                    g["precision"],
                    g["mode"],
                    str(g["entries"]),
                    f"{g['repeats']} x {g['calls']}",
                    f"{g['estimate_s']:.0f}",
                ]
                for g in groups
            ]
            print(f"\n{cores} core(s):\n" + harness.fmt_table(header, body))
        return results
    if args.in_process:
        harness.require_pinned(args.cores[0] if args.cores else None, "bench_sweep.py")
        results["runs"] = [run_here(args)]
    else:
        results["runs"], results["failed_cores"] = [], []
        for cores in args.cores:
            print(f"\n--- {cores} core(s): a child process ---", flush=True)
            try:
                child = harness.run_script(__file__, child_argv(args), cores=cores)
            except subprocess.CalledProcessError as err:  # keep the other core counts
                print(f"--- {cores} core(s) failed (exit code {err.returncode}) ---", flush=True)
                results["failed_cores"].append(cores)
                continue
            results["runs"] += child["runs"]
        print("\n=== all core counts ===", flush=True)
    print("\n" + report(results), flush=True)
    if args.json is not None:
        harness.write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
