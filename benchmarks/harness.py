"""The timing harness shared by the scripts in ``benchmarks/``: fair timings on a shared CPU.

One idea: time several implementations of the same computation in one process, interleaved, so
that background load on a shared machine slows them all alike, and compare them by *paired*
per-round ratios, which cancel most of that load. Nothing here knows about JAX, PyTorch or
recurrent networks; an entry to time is any zero-argument callable that returns only once its
work is done (:func:`jax_call` wraps a JAX function with ``jax.block_until_ready``; a PyTorch
CPU call is synchronous already).

The pieces:

* CPU pinning: :func:`pin_from_argv` applies ``--cores N`` before JAX and PyTorch size their
  thread pools at import, :func:`require_pinned` rejects ``--cores`` given any other way,
  :func:`set_torch_threads` matches PyTorch's thread count to XLA's.
* :func:`time_interleaved`: the timer. Every round visits every entry in a freshly shuffled
  order, makes one untimed call, then times ``calls`` consecutive calls; one sample per round
  is kept.
* :func:`summary` (median, quartiles, min) and :func:`paired_ratio` (median and IQR of the
  per-round ratios of two entries, and the ratio of their medians).
* :func:`environment`: versions, CPU model, cores and threads, for the record;
  :func:`cpu_flags` for features such as native bfloat16.
* :func:`fmt_table` (Markdown), :func:`mib`, :func:`write_json` / :func:`read_json`, and
  :func:`run_script`, which runs a benchmark script in a fresh process (thread pools are sized
  once per process, so comparing core counts needs one process per count).

A benchmark script starts like this (run as ``python benchmarks/<script>.py`` from the
repository root, or loaded by the tests with :mod:`importlib`)::

    import sys
    from pathlib import Path

    _HERE = Path(__file__).resolve().parent
    sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # this harness; the working tree's jaxrnn

    import harness  # noqa: E402

    if __name__ == "__main__":
        harness.pin_from_argv()  # before jax/torch are imported

    import jax  # noqa: E402
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Packages whose thread pools are sized at import: pinning after them would come too late.
_THREADED = ("jax", "torch")
_pinned_cores: int | None = None


# --------------------------------------------------------------------------------------------
# CPUs and threads.


def usable_cpus() -> int:
    """How many CPUs this process may run on (after any pinning)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pin_from_argv(argv: Sequence[str] | None = None) -> int | None:
    """Apply ``--cores N`` from the command line, restricting the process to ``N`` CPUs.

    Call this at the top of a script, before importing JAX or PyTorch: both size their thread
    pools when imported (XLA and PyTorch then start ``N`` threads each). The process is
    restricted to its first ``N`` usable CPUs with ``os.sched_setaffinity``. Every other
    argument is left for the script's own parser.

    Args:
        argv: the arguments to look in; ``None`` means ``sys.argv[1:]``.

    Returns:
        ``N``, or ``None`` if ``--cores`` was not given.

    Raises:
        SystemExit: if ``N`` is out of range, or JAX or PyTorch was imported already.
    """
    global _pinned_cores
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cores", type=int)
    cores = pre.parse_known_args(sys.argv[1:] if argv is None else argv)[0].cores
    if cores is None:
        return None
    late = [name for name in _THREADED if name in sys.modules]
    if late:
        raise SystemExit(f"--cores: {', '.join(late)} imported before pin_from_argv()")
    usable = sorted(os.sched_getaffinity(0))
    if not 1 <= cores <= len(usable):
        raise SystemExit(f"--cores: expected 1..{len(usable)}, got {cores}")
    os.sched_setaffinity(0, usable[:cores])
    _pinned_cores = cores
    return cores


def pinned_cores() -> int | None:
    """The ``N`` that :func:`pin_from_argv` applied, or ``None``."""
    return _pinned_cores


def require_pinned(cores: int | None, script: str) -> None:
    """Reject a ``--cores`` that :func:`pin_from_argv` did not apply (e.g. passed to ``main``).

    Raises:
        SystemExit: if ``cores`` is set and differs from the pinned count.
    """
    if cores is not None and cores != _pinned_cores:
        raise SystemExit(f"--cores works only on the command line (python benchmarks/{script})")


def set_torch_threads(threads: int | None = None) -> int | None:
    """``torch.set_num_threads(threads or usable_cpus())`` if PyTorch is imported.

    XLA:CPU uses every CPU the process may run on; by default PyTorch is given the same count.
    Returns the count set, or ``None`` when PyTorch is not imported.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    torch.set_num_threads(threads or usable_cpus())
    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------
# Timing.


def jax_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A timing entry: ``fn(*args, **kwargs)`` blocked with ``jax.block_until_ready``.

    JAX dispatches asynchronously, so an unblocked call would time only the dispatch.
    """
    import jax  # only when a JAX entry is built, i.e. after any pinning

    def call():
        return jax.block_until_ready(fn(*args, **kwargs))

    return call


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, first and third quartile, and minimum of the samples (ms)."""
    s = list(samples_ms)
    if not s:
        raise ValueError("summary of no samples")
    q = np.percentile(s, [25, 75]) if len(s) > 1 else (s[0], s[0])
    return {
        "median_ms": statistics.median(s),
        "q25_ms": float(q[0]),
        "q75_ms": float(q[1]),
        "min_ms": min(s),
    }


def time_interleaved(
    tasks: Mapping[Hashable, Callable[[], Any]] | Iterable[tuple[Hashable, Callable[[], Any]]],
    repeats: int,
    calls: int,
    seed: int = 0,
) -> tuple[dict[Hashable, dict[str, Any]], dict[Hashable, Any]]:
    """Time every task in ``repeats`` interleaved rounds.

    First each task is called twice in turn: the first call compiles (its time is reported as
    ``warmup_s``, its result kept), the second warms caches. Then every round visits the tasks
    in an order shuffled by ``random.Random(seed)``; at each visit one untimed call lets caches
    and thread pools settle after the switch from the previous task, then ``calls`` consecutive
    calls are timed together, giving that round's sample (ms per call).

    Args:
        tasks: ``{key: fn}`` or ``(key, fn)`` pairs; each ``fn()`` must return only when its work
            is done (see :func:`jax_call`).
        repeats: number of rounds (samples per task).
        calls: timed calls per task and round.
        seed: seed of the round order.

    Returns:
        ``(stats, first)``: ``stats[key]`` is :func:`summary` of the samples plus
        ``samples_ms`` (one per round, in round order, so that two tasks' samples pair up) and
        ``warmup_s``; ``first[key]`` is the first call's result.
    """
    pairs = list(tasks.items()) if isinstance(tasks, Mapping) else list(tasks)
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("time_interleaved: duplicate task keys")
    if repeats < 1 or calls < 1:
        raise ValueError(
            f"time_interleaved: repeats and calls must be >= 1, got {repeats}, {calls}"
        )
    first, warm = {}, {}
    for key, fn in pairs:
        t0 = time.perf_counter()
        first[key] = fn()  # compiles
        warm[key] = time.perf_counter() - t0
        fn()
    samples: dict[Hashable, list[float]] = {key: [] for key in keys}
    order = list(pairs)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for key, fn in order:
            fn()  # untimed: lets caches and thread pools settle after switching tasks
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[key].append((time.perf_counter() - t0) * 1e3 / calls)
    stats = {
        key: {**summary(s), "samples_ms": s, "warmup_s": warm[key]} for key, s in samples.items()
    }
    return stats, first


def paired_ratio(a_ms: Sequence[float], b_ms: Sequence[float]) -> dict[str, float]:
    """Compare entry A with entry B through their per-round samples.

    The two samples of one round share that round's background load, so their ratio cancels
    most of it; the median of the per-round ratios is the robust comparison, and their
    quartiles its spread. The plain ratio of the two medians is given alongside.

    Args:
        a_ms: A's samples, one per round (``stats[a]["samples_ms"]``).
        b_ms: B's samples from the same rounds.

    Returns:
        ``ratio`` (median of ``a[i] / b[i]``), ``ratio_q25``, ``ratio_q75`` and
        ``ratio_of_medians``; below 1 means A is faster.
    """
    if len(a_ms) != len(b_ms) or not a_ms:
        raise ValueError(f"paired_ratio needs equally many samples, got {len(a_ms)}, {len(b_ms)}")
    per_round = [a / b for a, b in zip(a_ms, b_ms, strict=True)]
    q25, q75 = np.percentile(per_round, [25, 75])
    return {
        "ratio": statistics.median(per_round),
        "ratio_q25": float(q25),
        "ratio_q75": float(q75),
        "ratio_of_medians": statistics.median(a_ms) / statistics.median(b_ms),
    }


# --------------------------------------------------------------------------------------------
# Environment.


def package_version(name: str) -> str | None:
    """The version of an imported module, else of an installed distribution, else ``None``."""
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def parse_size(text: str) -> tuple[int, int, int, int]:
    """``"32x128x128x256"`` -> ``(32, 128, 128, 256)`` (B, T, I, H)."""
    try:
        size = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected BxTxIxH with positive ints, got {text!r}")
    return size


def size_name(size: Sequence[int]) -> str:
    return "x".join(str(v) for v in size)


def add_sizes(parser: argparse.ArgumentParser, default: Sequence[Sequence[int]]) -> None:
    """``--sizes BxTxIxH ...`` (parsed by :func:`parse_size`), ``default`` when not given."""
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=list(default),
                        help="BxTxIxH")  # fmt: skip


def cpu_flags() -> set[str]:
    """The CPU's feature flags, e.g. ``avx512_bf16`` (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def simd_flags(prefixes: Sequence[str] = ("avx", "amx", "fma")) -> str:
    """The CPU's vector-unit flags (those starting with one of ``prefixes``), sorted, as one
    line for a benchmark's header."""
    return " ".join(sorted(f for f in cpu_flags() if f.startswith(tuple(prefixes))))


def environment(packages: Sequence[str] = ("jax", "flax", "equinox", "torch", "jaxrnn")) -> dict:
    """Where the numbers come from: Python, platform, CPU, cores, threads, package versions.

    Call it after the benchmark's imports: the JAX backend and PyTorch's thread count are read
    from the imported modules (``None`` when not imported).
    """
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "pinned_cores": _pinned_cores,
    }
    env.update({name: package_version(name) for name in packages})
    jax = sys.modules.get("jax")
    env["jax_backend"] = jax.default_backend() if jax is not None else None
    torch = sys.modules.get("torch")
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    env["thread_env"] = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")
        if k in os.environ
    }
    return env


# --------------------------------------------------------------------------------------------
# Reporting and results.


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded so it also reads in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def mib(n: int | None) -> str:
    """A byte count as MiB (or KiB below one MiB); ``n/a`` for ``None``."""
    if n is None:
        return "n/a"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def config(args: argparse.Namespace) -> dict:
    """The parsed command line as a JSON-ready dict."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path | str, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON (paths and NumPy values converted), creating dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    return path


def read_json(path: Path | str) -> dict:
    """Results written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def add_common_args(p: argparse.ArgumentParser, *, repeats: int, calls: int) -> None:
    """The flags every benchmark script takes: rounds, calls, seed, ``--cores``, ``--json``."""
    p.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    p.add_argument(
        "--calls", type=int, default=calls, help=f"calls timed per round (default {calls})"
    )
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="run on the first N usable CPUs only (command line only: applied before JAX and "
        "PyTorch start their thread pools); --cores 1 gives the steadiest timings",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")


def run_script(
    script: Path | str, argv: Sequence[str] = (), *, cores: int | None = None, check: bool = True
) -> dict:
    """Run a benchmark script in a fresh Python process and return the results it wrote.

    The script gets ``argv``, plus ``--cores`` when given and ``--json`` pointing at a
    temporary file; its report goes to this process's stdout. A fresh process is the only way
    to compare core counts, since thread pools are sized once per process.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        cmd = [sys.executable, str(script), *argv, "--json", str(out)]
        if cores is not None:
            cmd += ["--cores", str(cores)]
        subprocess.run(cmd, check=check)
        return read_json(out)
