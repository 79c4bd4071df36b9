"""The training step and glibc's malloc: fresh pages for every large buffer, or kept memory.

One idea: a training step allocates buffers of tens of MB (XLA's temporaries, PyTorch's
activations). glibc's ``malloc`` serves a request above its mmap threshold (at most 32 MiB)
with a fresh ``mmap`` and returns it to the kernel at ``free``, so every step faults in and
zeroes those pages again. ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=N``
makes ``malloc`` serve everything from its heap and keep freed memory up to ``N`` bytes, so
later steps reuse warm pages. This script measures what that does to the jaxrnn and PyTorch
LSTM/GRU training steps of ``bench_sweep.py`` (same weights, same MSE loss).

A process's malloc settings are fixed at its start, so the two settings cannot share a
process. Each round therefore runs one child process per setting, in a shuffled order; a
child times the jaxrnn and PyTorch steps interleaved (``harness.time_interleaved``) and counts
the minor page faults per step (``getrusage``). The table reports, per implementation, the
median over rounds of the per-round ratio kept / default (paired across the two children of a
round), and jaxrnn / PyTorch within each setting (paired within each child).

Run from the repository root::

    python benchmarks/bench_malloc.py                      # LSTM and GRU, 32x128x128x256
    python benchmarks/bench_malloc.py --rounds 6 --cells lstm --size 64x64x512x1024
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

if __name__ == "__main__" and "--child" in sys.argv[1:]:
    harness.pin_from_argv()  # before JAX and PyTorch size their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

# Every request from malloc's heap (no mmap), freed memory kept up to 4 GiB.
KEEP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"
SETTINGS = {"default": None, "kept": KEEP}


def child(args) -> dict:
    """Time the jaxrnn and PyTorch training steps of each cell in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import peers

    harness.set_torch_threads()
    batch, steps, n_in, hidden = args.size
    rng = np.random.default_rng(args.seed)
    xs = jnp.asarray(rng.standard_normal((batch, steps, n_in), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((batch, steps, hidden), dtype=np.float32))
    out = {}
    for k, cell_name in enumerate(args.cells):
        fp = peers.flax_params(cell_name, hidden, xs, jax.random.key(args.seed + k))
        cell, jp, _ = peers.jaxrnn_from_flax(cell_name, n_in, hidden, fp)
        forward = peers.jaxrnn_forward(cell, unroll=1)
        entries = {
            "jaxrnn": peers.jax_entry(cell_name, "jaxrnn", "jaxrnn", forward, jp, xs, target),
            "torch": peers.torch_entry(cell_name, jp, xs, target),
        }
        tasks = {name: e.train for name, e in entries.items()}
        stats, _ = harness.time_interleaved(tasks, args.repeats, args.calls, args.seed)
        faults = {}
        for name, fn in tasks.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(args.calls):
                fn()
            faults[name] = (
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            ) / args.calls
        out[cell_name] = {
            name: {"ms": stats[name]["median_ms"], "faults": faults[name]} for name in tasks
        }
    return out


def run_child(args, setting: str) -> dict:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if SETTINGS[setting]:
        env["GLIBC_TUNABLES"] = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.json"
        cmd = [sys.executable, __file__, "--child", "--json", str(path)]
        cmd += ["--size", "x".join(map(str, args.size)), "--cells", *args.cells]
        cmd += ["--repeats", str(args.repeats), "--calls", str(args.calls)]
        cmd += ["--seed", str(args.seed)] + (["--cores", str(args.cores)] if args.cores else [])
        subprocess.run(cmd, check=True, env=env)
        return json.loads(path.read_text())


def ratio_text(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.2f} ({q[0]:.2f}-{q[2]:.2f})"


def report(args, rounds: list[dict]) -> str:
    env = harness.environment(("jax", "torch", "jaxrnn"))
    flags = harness.simd_flags(("avx", "fma"))
    lines = [
        f"{env.get('cpu_model')}, CPU flags: {flags}; {args.cores or harness.usable_cpus()} "
        f"core(s); size {'x'.join(map(str, args.size))}; {len(rounds)} rounds; kept: "
        f"GLIBC_TUNABLES={KEEP}",
        "",
    ]
    header = ["cell", "impl", "ms default", "ms kept", "kept / default", "faults/step default",
              "faults/step kept"]  # fmt: skip
    rows = []
    for cell in args.cells:
        for impl in ("jaxrnn", "torch"):
            per = {s: [r[s][cell][impl] for r in rounds] for s in SETTINGS}
            ratios = [k["ms"] / d["ms"] for k, d in zip(per["kept"], per["default"], strict=True)]
            rows.append(
                [cell.upper(), impl]
                + [f"{statistics.median(x['ms'] for x in per[s]):.1f}" for s in SETTINGS]
                + [ratio_text(ratios)]
                + [f"{statistics.median(x['faults'] for x in per[s]):.0f}" for s in SETTINGS]
            )
        for s in SETTINGS:
            ratios = [r[s][cell]["jaxrnn"]["ms"] / r[s][cell]["torch"]["ms"] for r in rounds]
            rows.append([cell.upper(), f"jaxrnn / torch, {s}", "", "", ratio_text(ratios), "", ""])
    return "\n".join(lines) + harness.fmt_table(header, rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=harness.parse_size, default=(32, 128, 128, 256), help="BxTxIxH")
    p.add_argument("--cells", nargs="+", choices=("lstm", "gru"), default=["lstm", "gru"])
    p.add_argument("--rounds", type=int, default=5, help="child-process pairs")
    p.add_argument("--child", action="store_true", help="time in this process (internal)")
    harness.add_common_args(p, repeats=5, calls=3)
    args = p.parse_args(argv)
    if args.child:
        harness.write_json(args.json, child(args))
        return
    order = random.Random(args.seed)
    rounds = []
    for _ in range(args.rounds):
        names = list(SETTINGS)
        order.shuffle(names)
        rounds.append({s: run_child(args, s) for s in names})
    print(report(args, rounds))
    if args.json:
        harness.write_json(args.json, {"config": harness.config(args), "rounds": rounds})


if __name__ == "__main__":
    main()
