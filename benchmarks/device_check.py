"""GPU check: the cuDNN dispatch against the scan path, and GPU timings, in under 8 minutes.

Written before any GPU was at hand, to run the day one is lent: one command, one table, one
JSON file. On a machine with one NVIDIA GPU, from the repository root::

    python benchmarks/device_check.py                  # -> benchmarks/results/device_check.json
    python benchmarks/device_check.py --out gpu.json --budget-s 300

and on any machine, the same code at tiny sizes on the CPU (what ``tests/test_device_check.py``
runs; about 30 s)::

    python benchmarks/device_check.py --dry-run --out /tmp/device_check.json

Four parts, each guarded (a failure becomes an ``error`` row and the next part still runs):

1. ``equivalence``: where ``jr.rnn(jr.lstm, ...)`` dispatches (cuDNN or the scan path, with
   the reason, for float32, the bf16 policy, ``cudnn=True`` and dropout with a key), then
   ``cudnn=True`` against ``cudnn=False``: outputs, final carry and gradients w.r.t. params and
   ``xs``, for one layer and for two bidirectional layers with ``lengths`` including zero and a
   random initial carry, under ``highest`` matmul precision (tight tolerance) and the default
   (TF32 allowed: loose tolerance). The bf16 policy (``dtype=jnp.bfloat16``) is not dispatched
   to cuDNN (``supports()`` says why), so its row checks that it runs on the scan path and
   equals float32 within bf16 tolerance.
2. ``lstm_speed``: ``jr.rnn`` LSTM on cuDNN vs the scan path vs Flax ``nn.RNN(
   nn.OptimizedLSTMCell)`` vs ``torch.nn.LSTM`` on cuDNN (an ``n/a`` row, with the reason,
   without torch or CUDA in torch), at the sizes of ``bench_sweep.py``, infer and train, same
   weights (``peers.py``), as paired ratios of interleaved rounds (``harness.py``).
3. ``parallel_scan``: ``method="associative"`` / ``"sequential"`` for ``jr.min_gru`` and
   ``jr.lru``, one training step, T = 1k, 4k, 16k, 64k.
4. ``newton``: ``method=Newton(max_iters=...)`` / ``"sequential"`` for ``jr.gru`` with H = 4 and
   16, one training step, T = 1k to 64k, with Newton's iteration count.

Time: a global budget (``--budget-s``, default 390 s; the rest of the 8 minutes is for imports and
for a group started just before its share ran out) is shared between the parts in
proportion to ``SHARES``, time a part leaves unused going to the next ones. Each timing group
first compiles and calls every entry once, then runs as many interleaved rounds as fit its
share (at most ``--repeats``); where fewer than two fit, that single call is the sample (the
row says ``one call``), and a group whose share is gone is a ``skipped: time budget`` row.

``--dry-run`` forces the CPU (``JAX_PLATFORMS=cpu``, fast-compile XLA settings) and tiny sizes.
There is no cuDNN there, so after the dispatch decisions of the real backend are checked (the
scan path, ``cudnn=True`` an error) the dispatch is made to believe it runs on a CUDA GPU and
``jax.experimental.rnn.lstm_ref`` stands in for the kernel (as ``tests/test_cudnn.py`` does):
everything around the kernel runs, and the rows that would need the real one say
``skipped: no GPU``. torch runs on the CPU there.

The parts live next to this file: ``device_check_equivalence.py`` (part 1),
``device_check_speed.py`` (parts 2 to 4), timed with ``device_check_timing.py``; what they share
is in ``device_check_common.py``, and the dry run's stand-in kernel in ``device_check_cudnn.py``.
This file sets up JAX's environment before any of them imports JAX, runs the parts in turn,
and prints and writes the results.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The shared harness next to this file; the working tree's jaxrnn even if another is installed.
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

import harness  # noqa: E402

FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"  # as conftest.py: compiles faster
if __name__ == "__main__" and "--dry-run" in sys.argv[1:]:  # before JAX reads its environment
    os.environ["JAX_PLATFORMS"] = "cpu"
    if FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import jax  # noqa: E402

# JAX's backend starts before PyTorch is imported (by peers, through the parts' modules): the
# CUDA libraries it loads, cuDNN above all, are then the ones jaxlib was built for, whatever
# PyTorch bundles.
jax.devices()

from device_check_common import Deadline, error_text, row, torch  # noqa: E402
from device_check_equivalence import part_equivalence  # noqa: E402
from device_check_speed import part_lstm_speed, part_newton, part_parallel_scan  # noqa: E402

DEFAULT_OUT = _HERE / "results" / "device_check.json"
PARTS = ("equivalence", "lstm_speed", "parallel_scan", "newton")
SHARES = {"equivalence": 1.0, "lstm_speed": 3.0, "parallel_scan": 2.0, "newton": 2.5}
TABLE_WIDTH = 110  # result cells are cut to this in the printed table (the JSON has them whole)


# --------------------------------------------------------------------------------------------
# Environment.


def device_info() -> dict:
    """Device name, platform, jax/jaxlib, CUDA and cuDNN versions where the backend has them."""
    import jaxlib

    dev = jax.devices()[0]
    info = {
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "platform_version": getattr(dev.client, "platform_version", None),
    }
    try:
        from jax._src.lib import cuda_versions  # private; None without the CUDA plugin
    except ImportError:
        cuda_versions = None
    for name, fn in (("cuda_runtime", "cuda_runtime_get_version"), ("cudnn", "cudnn_get_version")):
        with contextlib.suppress(Exception):  # absent or failing without a GPU
            info[name] = getattr(cuda_versions, fn)() if dev.platform == "gpu" else None
    with contextlib.suppress(Exception):  # the driver's view, where nvidia-smi is installed
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"]
        smi = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        info["nvidia_smi"] = smi.stdout.strip().splitlines()[1:]
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["torch_cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return info


# --------------------------------------------------------------------------------------------
# Running, reporting, command line.

PART_FUNCTIONS = {
    "equivalence": part_equivalence,
    "lstm_speed": part_lstm_speed,
    "parallel_scan": part_parallel_scan,
    "newton": part_newton,
}


def run_parts(args, budget: Deadline, results: dict, t_start: float) -> None:
    """Every part in turn, each with its share of the budget left; failures become rows.

    Fills ``results["parts"]``, writing the JSON after each part (a run killed at its time
    limit leaves the parts it finished).
    """
    parts = results["parts"] = {}
    for k, name in enumerate(PARTS):
        share = SHARES[name] / sum(SHARES[n] for n in PARTS[k:])
        t0 = time.perf_counter()
        print(f"[{name}] {budget.left():.0f} s left, share {share:.0%}", flush=True)
        try:
            rows = PART_FUNCTIONS[name](args, budget.share(share))
        except Exception as err:
            traceback.print_exc()
            rows = [row(name, "part", error_text(err), "error")]
        parts[name] = {"rows": rows, "seconds": time.perf_counter() - t0}
        results["total_s"] = time.perf_counter() - t_start
        harness.write_json(args.out, results)


def report(results: dict) -> str:
    d, cfg = results["device"], results["config"]
    mode = "DRY RUN on the CPU, tiny sizes" if cfg["dry_run"] else "GPU run"
    versions = ", ".join(
        f"{k} {d[k]}" for k in ("jax", "jaxlib", "cuda_runtime", "cudnn", "torch", "torch_cuda")
        if d.get(k) is not None
    )  # fmt: skip
    lines = [
        f"jaxrnn device check ({mode}): {results['total_s']:.0f} s "
        f"(budget {cfg['budget_s']:.0f} s for the parts)",
        f"device: {d['device']} ({d['platform']}, {d['device_count']} device(s)); "
        f"{d.get('platform_version')}",
        versions,
        *(f"nvidia-smi: {line}" for line in d.get("nvidia_smi", [])),
        "",
    ]
    cut = lambda text: text if len(text) <= TABLE_WIDTH else text[: TABLE_WIDTH - 3] + "..."
    body = [
        [r["part"], r["check"], cut(r["result"]), r["status"]]
        for part in results["parts"].values()
        for r in part["rows"]
    ]
    lines.append(harness.fmt_table(["part", "check", "result", "status"], body))
    counts: dict[str, int] = {}
    for _, _, _, status in body:
        counts[status.split(":")[0]] = counts.get(status.split(":")[0], 0) + 1
    lines += ["", "rows by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (see above)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for all parts (390; dry run 300, never reached)",
    )
    p.add_argument("--repeats", type=int, default=None, help="most rounds per group (10; dry 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 300.0 if args.dry_run else 390.0
    if args.repeats is None:
        args.repeats = 2 if args.dry_run else 10
    if args.repeats < 1 or args.budget_s <= 0:
        p.error("--repeats must be >= 1 and --budget-s > 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run every part, print the table, write the JSON; return the results."""
    args, t0 = parse_args(argv), time.perf_counter()
    if args.dry_run and jax.default_backend() != "cpu":
        raise SystemExit("--dry-run runs on the CPU: run it as a script (it sets JAX_PLATFORMS)")
    results = {"config": harness.config(args)}
    results["device"] = device_info()
    results["env"] = harness.environment(("jax", "jaxlib", "flax", "torch", "jaxrnn"))
    run_parts(args, Deadline(args.budget_s), results, t0)
    results["total_s"] = time.perf_counter() - t0
    print(report(results), flush=True)
    harness.write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
