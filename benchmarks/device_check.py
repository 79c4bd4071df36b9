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
import math  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402

# JAX's backend starts before PyTorch is imported (by peers): the CUDA libraries it loads, cuDNN
# above all, are then the ones jaxlib was built for, whatever PyTorch bundles.
jax.devices()

import bench_sweep  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from jax.experimental import rnn as jrnn  # noqa: E402

import jaxrnn as jr  # noqa: E402
from jaxrnn.layers import _cudnn  # noqa: E402  (the dispatch; its backend is swapped in dry runs)
from jaxrnn.newton import Newton, newton_scan  # noqa: E402

torch = peers.torch  # None when PyTorch cannot be imported

DEFAULT_OUT = _HERE / "results" / "device_check.json"
PARTS = ("equivalence", "lstm_speed", "parallel_scan", "newton")
SHARES = {"equivalence": 1.0, "lstm_speed": 3.0, "parallel_scan": 2.0, "newton": 2.5}
# Sizes: (B, T, I, H) of the equivalence check and of the LSTM timings; T of the scan methods.
EQ_SIZE, DRY_EQ_SIZE = (8, 50, 24, 32), (4, 6, 3, 5)
LSTM_SIZES, DRY_LSTM_SIZES = bench_sweep.SIZES, ((2, 5, 3, 4),)
TIMES, DRY_TIMES = (1024, 4096, 16384, 65536), (16, 64)
SCAN_BATCH, SCAN_HIDDEN, DRY_SCAN_BATCH, DRY_SCAN_HIDDEN = 8, 64, 2, 4
NEWTON_HIDDEN, NEWTON_BATCH, DRY_NEWTON_BATCH = (4, 16), 8, 2
NEWTON_MAX_ITERS = 200  # beyond it Newton falls back to the sequential scan (on_failure)
# max|got - ref| / max(1, max|ref|) allowed, (values, gradients), per comparison.
TOLERANCE = {
    "highest": (2e-5, 1e-4),  # float32 matmuls on both paths
    "default": (2e-2, 5e-2),  # TF32 allowed on both paths (cuDNN and XLA)
    "bf16": (5e-2, 1e-1),  # the bf16 policy against float32
    "method": (1e-3, 1e-3),  # associative / Newton against sequential
}
MIN_SAMPLE_MS, MAX_CALLS = 20.0, 10  # calls per round: a sample of at least this, at most this
MIN_GROUP_S = 3.0  # the least time left for a part's first timing group to start
TABLE_WIDTH = 110  # result cells are cut to this in the printed table (the JSON has them whole)
NO_GPU = "skipped: no GPU"


# --------------------------------------------------------------------------------------------
# Rows, time budget, environment.


def row(part: str, check: str, result: str = "", status: str = "ok", **data) -> dict:
    """One line of the table (and of the JSON): what was checked, what came out, the verdict.

    Printed as it is made, so that a run cut short still shows how far it got.
    """
    print(f"  {part} | {check}: {result} [{status}]", flush=True)
    return {"part": part, "check": check, "result": result, "status": status, **data}


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


class Deadline:
    """A point in time; :meth:`share` hands out a fraction of what is left before it.

    ``measured`` is set by :func:`time_tasks`: ``(compile_s, call_s)``, the seconds its first
    calls took and those of one call of every task, from which the next group is predicted.
    """

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        self.measured: tuple[float, float] | None = None

    def left(self) -> float:
        return self.end - time.perf_counter()

    def share(self, fraction: float) -> Deadline:
        return Deadline(max(0.0, self.left()) * min(1.0, fraction))


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
# The dry run's stand-in kernel (tests/test_cudnn.py's fake_gpu fixture, as a context).


def _lstm_ref(x, h0, c0, weights, lengths, sizes):
    input_size, hidden_size, num_layers, bidirectional = sizes
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    return jrnn.lstm_ref(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size, num_layers, 0.0,
        bidirectional,
    )  # fmt: skip


def _ref_forward(x, h0, c0, w, lengths, sizes):
    return _lstm_ref(x, h0, c0, w, lengths, sizes), (x, h0, c0, w, lengths)


def _ref_backward(sizes, residuals, cotangents):
    x, h0, c0, w, lengths = residuals
    run = lambda x, h0, c0, w: _lstm_ref(x, h0, c0, w, lengths, sizes)
    return jax.vjp(run, x, h0, c0, w)[1](cotangents)


@contextlib.contextmanager
def cudnn_backend(dry_run: bool):
    """The real backend; in a dry run, a fake CUDA GPU whose kernel is ``lstm_ref``."""
    if not dry_run:
        yield
        return
    fake = {
        "_backend_reason": lambda: None,
        "_backend_forward": _ref_forward,
        "_backend_backward": _ref_backward,
    }
    saved = {name: getattr(_cudnn, name) for name in fake}
    for name, value in fake.items():
        setattr(_cudnn, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_cudnn, name, value)


@contextlib.contextmanager
def count_kernel_calls():
    """Count the traces of the cuDNN path (``apply_cudnn``) inside the block: ``[n]``."""
    count, original = [0], _cudnn.apply_cudnn

    def counted(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    _cudnn.apply_cudnn = counted
    try:
        yield count
    finally:
        _cudnn.apply_cudnn = original


# --------------------------------------------------------------------------------------------
# Part 1: the dispatch decisions, and cuDNN against the scan path.


def random_params(shapes, rng: np.random.Generator):
    """Random normal params of the shapes and dtypes of ``shapes`` (a pytree of arrays).

    Matrices are scaled by ``1 / sqrt(rows)`` (their fan-in) as an initialiser would, so the
    recurrence stays stable and bf16 rounding does not grow chaotically; biases by 0.5 (not
    zero, so that a wrongly mapped bias shows).
    """

    def draw(s):
        std = 1.0 / math.sqrt(s.shape[-2]) if len(s.shape) >= 2 else 0.5
        return jnp.asarray(std * rng.standard_normal(s.shape), s.dtype)

    return jax.tree.map(draw, shapes)


def lstm_problem(size, layers: int, bidirectional: bool, with_lengths: bool, seed: int) -> dict:
    """Params, initial carry, xs, lengths (with a zero) and an output projection for the loss."""
    b, t, i, h = size
    net = jr.rnn(jr.lstm, i, h, num_layers=layers, bidirectional=bidirectional, cudnn=False)
    lengths = np.resize(np.array([t, 0, max(1, t // 2), 1], np.int32), b) if with_lengths else None
    rng = np.random.default_rng(seed)
    carry = jax.eval_shape(lambda: net.initial_carry((b,)))
    return {
        "params": random_params(jax.eval_shape(net.init, jax.random.key(0)), rng),
        "carry": jax.tree.map(
            lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), carry
        ),
        "xs": jnp.asarray(rng.standard_normal((b, t, i)), jnp.float32),
        "lengths": None if lengths is None else jnp.asarray(lengths),
        "proj": jnp.asarray(rng.standard_normal((b, t, (1 + bidirectional) * h)), jnp.float32),
    }


def outputs_and_grads(net, prob: dict):
    """``((carry, ys), (d params, d xs))`` of ``net`` on the problem, compiled and run once."""

    def loss(params, xs):
        final, ys = net.apply(params, xs, prob["carry"], lengths=prob["lengths"])
        tail = sum(jnp.sum(jnp.tanh(leaf)) for leaf in jax.tree.leaves(final))
        return jnp.vdot(prob["proj"], ys.astype(jnp.float32)) + tail, (final, ys)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, outs), grads = step(prob["params"], prob["xs"])
    return jax.block_until_ready((outs, grads))


def to_numpy(a) -> np.ndarray:
    """A JAX array or a (CPU or CUDA) torch tensor as a float32 NumPy array."""
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, np.float32)


def rel_err(got, ref) -> float:
    """Worst leaf's ``max|got - ref| / max(1, max|ref|)``, in float32."""
    worst = 0.0
    is_leaf = lambda x: torch is not None and isinstance(x, torch.Tensor)
    leaves = lambda tree: jax.tree.leaves(tree, is_leaf=is_leaf)
    for a, b in zip(leaves(got), leaves(ref), strict=True):
        a, b = to_numpy(a), to_numpy(b)
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0) / max(1.0, np.max(np.abs(b)))))
    return worst


def verdict(errors: tuple[float, float], tol: tuple[float, float]) -> tuple[str, str]:
    """(result text, status) of a values/gradients comparison against its tolerances."""
    text = f"values {errors[0]:.1e}, grads {errors[1]:.1e} (tol {tol[0]:.0e} / {tol[1]:.0e})"
    ok = errors[0] <= tol[0] and errors[1] <= tol[1]
    return text, "ok" if ok else "FAIL"


def decision(net, params, xs, key=None) -> str:
    """Where ``net.apply(params, xs, key=key)`` runs: ``"cuDNN"`` or ``"scan: <reason>"``."""
    reason = _cudnn._call_reason(net, params, xs, key)
    return "cuDNN" if reason is None else f"scan: {reason}"


def build_error(build: Callable[[], Any]) -> str | None:
    """The error ``build()`` raises (type and first line), or ``None``."""
    try:
        build()
    except (ValueError, TypeError) as err:
        return error_text(err)
    return None


def decision_rows(size, label: str) -> list[dict]:
    """The dispatch's choices for the current backend, each with the expected one."""
    b, t, i, h = size
    on_gpu = _cudnn._backend_reason() is None
    net = jr.rnn(jr.lstm, i, h, num_layers=2, bidirectional=True, dropout=0.3)
    net16 = jr.rnn(jr.lstm, i, h, num_layers=2, bidirectional=True, dtype=jnp.bfloat16)
    params = jax.eval_shape(net.init, jax.random.key(0))
    xs = jax.ShapeDtypeStruct((b, t, i), jnp.float32)
    cases = [
        ("f32, cudnn=None", decision(net, params, xs), "cuDNN" if on_gpu else "scan"),
        ("bf16 policy, cudnn=None", decision(net16, params, xs), "scan"),
        ("f32 dropout with a key", decision(net, params, xs, jax.random.key(1)), "scan"),
    ]
    rows = [
        row(
            "equivalence",
            f"dispatch ({label}): {what}",
            got,
            "ok" if got.startswith(want) else "FAIL",
        )
        for what, got, want in cases
    ]
    for what, kw, want_error in (
        ("f32, cudnn=True", {}, not on_gpu),
        ("bf16 policy, cudnn=True", {"dtype": jnp.bfloat16}, True),
    ):
        err = build_error(lambda kw=kw: jr.rnn(jr.lstm, i, h, num_layers=2, cudnn=True, **kw))
        status = "ok" if (err is not None) == want_error else "FAIL"
        rows.append(row("equivalence", f"dispatch ({label}): {what}", err or "builds", status))
    return rows


def equivalence_row(size, layers, bidirectional, with_lengths, precision, dry_run) -> dict:
    """cuDNN (``cudnn=True``) against the scan path (``cudnn=False``) on one configuration."""
    i, h = size[2:]
    what = f"{layers} layer{'s' * (layers > 1)}{', bidirectional' if bidirectional else ''}"
    what = f"cuDNN = scan: {what}{', lengths with 0' if with_lengths else ''}, f32 {precision}"
    no_gpu = _cudnn._backend_reason()
    if no_gpu is not None:  # a full run on a machine without a CUDA GPU
        return row("equivalence", what, "", f"n/a: {no_gpu}")
    prob = lstm_problem(size, layers, bidirectional, with_lengths, seed=layers + 10)
    kw = dict(num_layers=layers, bidirectional=bidirectional)
    ctx = jax.default_matmul_precision(precision) if precision != "default" else None
    with ctx or contextlib.nullcontext(), count_kernel_calls() as calls:
        got = outputs_and_grads(jr.rnn(jr.lstm, i, h, cudnn=True, **kw), prob)
        ref = outputs_and_grads(jr.rnn(jr.lstm, i, h, cudnn=False, **kw), prob)
    text, status = verdict((rel_err(got[0], ref[0]), rel_err(got[1], ref[1])), TOLERANCE[precision])
    if calls[0] != 1:
        text, status = f"cuDNN path traced {calls[0]} times (expected 1); {text}", "FAIL"
    if dry_run and status == "ok":
        status, text = NO_GPU, f"{text}; lstm_ref in place of cuDNN"
    return row("equivalence", what, text, status)


def bf16_row(size, dry_run) -> dict:
    """The bf16 policy: on cuDNN where ``supports()`` takes it, else the scan path = f32."""
    i, h = size[2:]
    prob = lstm_problem(size, 2, True, True, seed=20)
    kw = dict(num_layers=2, bidirectional=True)
    net16 = jr.rnn(jr.lstm, i, h, dtype=jnp.bfloat16, **kw)
    supported, why = _cudnn.supports(net16)
    if supported:  # a future dispatch that runs bf16 on cuDNN: compare it with bf16 on the scan
        with count_kernel_calls() as calls:
            got = outputs_and_grads(
                jr.rnn(jr.lstm, i, h, dtype=jnp.bfloat16, cudnn=True, **kw), prob
            )
        ref = outputs_and_grads(jr.rnn(jr.lstm, i, h, dtype=jnp.bfloat16, cudnn=False, **kw), prob)
        what, where = "bf16 policy: cuDNN = scan (bf16)", "dispatched to cuDNN"
    else:
        with count_kernel_calls() as calls:
            got = outputs_and_grads(net16, prob)
        ref = outputs_and_grads(jr.rnn(jr.lstm, i, h, cudnn=False, **kw), prob)
        what, where = "bf16 policy (dtype=bfloat16) = f32 scan", f"scan path ({why})"
    text, status = verdict((rel_err(got[0], ref[0]), rel_err(got[1], ref[1])), TOLERANCE["bf16"])
    if (calls[0] > 0) != supported:
        status = "FAIL"
    text = f"{where}, cuDNN traced {calls[0]}x; {text}"
    if dry_run and supported and status == "ok":
        status = NO_GPU
    return row("equivalence", what + ", 2 layers, bidirectional, lengths with 0", text, status)


def equivalence_cases(dry_run: bool) -> list:
    """``((layers, bidirectional, with_lengths), precision)`` pairs: all four on a GPU; in a
    dry run (where the precisions do not differ) each shape once, each precision once."""
    shapes = [(1, False, False), (2, True, True)]
    if dry_run:
        return list(zip(shapes, ("highest", "default"), strict=True))
    return [(shape, precision) for shape in shapes for precision in ("highest", "default")]


def part_equivalence(args, deadline: Deadline) -> list[dict]:
    size = DRY_EQ_SIZE if args.dry_run else EQ_SIZE
    rows = decision_rows(size, jax.default_backend())
    with cudnn_backend(args.dry_run):
        if args.dry_run:
            rows += decision_rows(size, "dry run: fake CUDA GPU")
        for (layers, bidirectional, with_lengths), precision in equivalence_cases(args.dry_run):
            what = f"cuDNN = scan: {layers} layer(s), f32 {precision}"
            config = (size, layers, bidirectional, with_lengths, precision, args.dry_run)
            rows.append(guarded("equivalence", what, equivalence_row, *config))
        rows.append(guarded("equivalence", "bf16 policy", bf16_row, size, args.dry_run))
    return rows


def guarded(part: str, check: str, fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)``, or an ``error`` row naming the exception."""
    try:
        return fn(*args)
    except Exception as err:  # a failing check is a row; the rest runs on
        traceback.print_exc()
        return row(part, check, error_text(err), "error")


# --------------------------------------------------------------------------------------------
# Timing: pre-measured entries, rounds that fit the time share, paired ratios.


def time_tasks(tasks: dict, deadline: Deadline, args) -> tuple[dict, dict, dict]:
    """Compile and call every task once, then as many interleaved rounds as fit the deadline.

    Returns ``(stats, first, errors)``: ``harness.time_interleaved``'s stats (or, where fewer
    than two rounds fit, the single measured call with ``one_call: True``), every task's first
    result, and the tasks that raised (left out of the rounds).
    """
    first, once, errors, t_start = {}, {}, {}, time.perf_counter()
    for key, fn in tasks.items():
        try:
            first[key] = fn()  # compiles
            t0 = time.perf_counter()
            fn()
            once[key] = (time.perf_counter() - t0) * 1e3
        except Exception as err:
            traceback.print_exc()
            errors[key] = error_text(err)
    if not once:
        return {}, first, errors
    call_s = sum(once.values()) / 1e3
    deadline.measured = (time.perf_counter() - t_start - call_s, call_s)
    calls = max(1, min(MAX_CALLS, math.ceil(MIN_SAMPLE_MS / max(min(once.values()), 1e-3))))
    round_ms = sum(once.values()) * (calls + 1)
    fit = int((deadline.left() * 1e3 - 2 * sum(once.values())) // round_ms)
    repeats = min(args.repeats, fit)
    if repeats < 2:
        stats = {
            k: {**harness.summary([v]), "samples_ms": [v], "one_call": True}
            for k, v in once.items()
        }
        return stats, first, errors
    ok = {k: tasks[k] for k in once}
    stats, _ = harness.time_interleaved(ok, repeats, calls, args.seed)
    return stats, first, errors


def ratio(stats: dict, a, b) -> dict:
    """A / B: paired per-round ratios, or the plain ratio where either has one call only."""
    sa, sb = stats[a], stats[b]
    if sa.get("one_call") or sb.get("one_call"):
        r = sa["median_ms"] / sb["median_ms"]
        return {"ratio": r, "ratio_q25": r, "ratio_q75": r, "ratio_of_medians": r, "one_call": True}
    return harness.paired_ratio(sa["samples_ms"], sb["samples_ms"])


def ratio_text(stats: dict, a, b) -> str:
    r = ratio(stats, a, b)
    rounds = len(stats[a]["samples_ms"])
    spread = f"IQR {r['ratio_q25']:.2f}-{r['ratio_q75']:.2f}, {rounds} rounds"
    return (
        f"{r['ratio']:.2f}x ({'one call' if r.get('one_call') else spread}); "
        f"{stats[a]['median_ms']:.3g} / {stats[b]['median_ms']:.3g} ms"
    )


def groups_in_turn(part, groups, weights, deadline, run_group, name=str, steps=None) -> list:
    """``run_group(group, group_deadline)`` for each group, each given its weight's share.

    A group runs only if the part has time left for its predicted least cost: the previous
    group's compiling plus two calls of each task, the calls scaled by ``steps`` (the groups'
    step counts; ``None``: alike). It gets at least that, so its first calls are never cut
    short; the groups after it then get less, and are skipped when too little is left.
    """
    rows, prev = [], None
    for k, group in enumerate(groups):
        growth = 1.0 if steps is None or k == 0 else steps[k] / steps[k - 1]
        need = MIN_GROUP_S if prev is None else prev[0] + 2 * prev[1] * growth
        if deadline.left() < need:
            status = f"skipped: time budget ({deadline.left():.0f} s left, ~{need:.0f} s needed)"
            rows.append(row(part, name(group), "", status))
            continue
        gd = deadline.share(weights[k] / sum(weights[k:]))
        gd.end = max(gd.end, time.perf_counter() + need)
        try:
            rows += run_group(group, gd)
        except Exception as err:
            traceback.print_exc()
            rows.append(row(part, name(group), error_text(err), "error"))
        prev = gd.measured or prev
    return rows


# --------------------------------------------------------------------------------------------
# Part 2: LSTM on cuDNN vs the scan path vs Flax vs torch.


def torch_device(dry_run: bool) -> tuple[str | None, str]:
    """Where torch's LSTM runs (``"cuda"``; ``"cpu"`` in a dry run), or ``None`` and why not."""
    if torch is None:
        return None, "n/a: torch is not installed"
    if torch.cuda.is_available() and torch.backends.cudnn.is_available():
        return "cuda", ""
    if dry_run:
        return "cpu", ""
    return None, f"n/a: torch {torch.__version__} has no CUDA/cuDNN here"


def torch_lstm_entry(p, xs, target, device: str) -> peers.Entry:
    """``torch.nn.LSTM`` with the jaxrnn weights ``p`` on ``device``; calls synchronise."""
    module = peers.torch_module("lstm", p).to(device)
    x_t, y_t = peers.torch_tensor(xs).to(device), peers.torch_tensor(target).to(device)
    weights = list(module.parameters())
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def run_infer():  # results stay on the device, as the JAX entries' do
        with torch.inference_mode():
            out = module(x_t)[0]
        sync()
        return out

    def run_train():
        loss = torch.mean(torch.square(module(x_t)[0] - y_t))
        torch.autograd.grad(loss, weights)
        sync()
        return loss.detach()

    return peers.Entry("lstm", f"torch nn.LSTM ({device})", "torch", run_infer, run_train)


def lstm_entries(size, seed: int, device: str | None) -> tuple[dict, dict]:
    """The timed LSTM entries of one size, same weights, and why any is missing."""
    b, t, i, h = size
    xs = jax.random.normal(jax.random.key(seed), (b, t, i))
    target = jax.random.normal(jax.random.key(seed + 1), (b, t, h))
    fp = peers.flax_params("lstm", h, xs, jax.random.key(seed + 2))
    jp = (peers.flax_lstm_to_jaxrnn(fp),)
    entries, missing = {}, {}
    for key, flag in (("cudnn", True), ("scan", False)):
        try:
            net = jr.rnn(jr.lstm, i, h, cudnn=flag)
        except ValueError as err:  # cudnn=True where the dispatch cannot use cuDNN
            missing[key] = f"n/a: {_cudnn._backend_reason() or error_text(err)}"
            continue
        forward = lambda params, xs, net=net: net.apply(params, xs)[1]
        entries[key] = peers.jax_entry(
            "lstm", f"jr.rnn cudnn={flag}", "jaxrnn", forward, jp, xs, target
        )
    flax_fwd = peers.flax_forward(peers.flax_cell(nn.OptimizedLSTMCell, h), unroll=1)
    entries["flax"] = peers.jax_entry(
        "lstm", "flax OptimizedLSTMCell", "flax", flax_fwd, fp, xs, target
    )
    if device is not None:
        entries["torch"] = torch_lstm_entry(jp[0], xs, target, device)
    return entries, missing


LSTM_PAIRS = (("cudnn", "scan"), ("cudnn", "flax"), ("cudnn", "torch"), ("scan", "flax"))
LABELS = {"cudnn": "cuDNN", "scan": "scan", "flax": "Flax OptimizedLSTMCell", "torch": "torch"}


def lstm_group(group, deadline: Deadline, args, device, no_torch: str) -> list[dict]:
    size, mode = group
    name = f"LSTM {bench_sweep.size_name(size)} {mode}"
    entries, missing = lstm_entries(size, args.seed, device)
    if device is None:
        missing["torch"] = no_torch
    tasks = {key: getattr(e, mode) for key, e in entries.items()}
    stats, first, errors = time_tasks(tasks, deadline, args)
    missing.update({k: f"error: {v}" for k, v in errors.items()})
    ref = to_numpy(first.get("scan", np.nan))
    rows = []
    for a, b in LSTM_PAIRS:
        label_b = f"torch ({device or 'n/a'})" if b == "torch" else LABELS[b]
        check = f"{name}: {LABELS[a]} / {label_b}"
        gone = [missing[k] for k in (a, b) if k in missing]
        if gone:
            rows.append(row("lstm_speed", check, "", gone[0]))
            continue
        other = a if b == "scan" else b  # the entry compared with the scan path's output
        text = (
            f"{ratio_text(stats, a, b)}; {LABELS[other]} vs scan {rel_err(first[other], ref):.1e}"
        )
        status = NO_GPU if args.dry_run and "cudnn" in (a, b) else "ok"
        rows.append(
            row("lstm_speed", check, text, status, ratio=ratio(stats, a, b), a=stats[a], b=stats[b])
        )
    return rows


def part_lstm_speed(args, deadline: Deadline) -> list[dict]:
    sizes = DRY_LSTM_SIZES if args.dry_run else LSTM_SIZES
    device, no_torch = torch_device(args.dry_run)
    groups = [(size, mode) for size in sizes for mode in peers.MODES]
    run = lambda group, gd: lstm_group(group, gd, args, device, no_torch)
    name = lambda group: f"LSTM {bench_sweep.size_name(group[0])} {group[1]}"
    with cudnn_backend(args.dry_run):
        return groups_in_turn("lstm_speed", groups, [1.0] * len(groups), deadline, run, name)


# --------------------------------------------------------------------------------------------
# Parts 3 and 4: parallel evaluation methods against the sequential scan, over long T.


def length_weights(times: Sequence[int]) -> list[float]:
    """Time shares of the groups of each T: compiling costs the same at every T, steps grow."""
    return [2.0 + t / 4096 for t in times]


def train_step(cell, params, xs, method) -> Callable[[], Any]:
    """One compiled training step: ``value_and_grad`` of the mean square of ``jr.scan``'s ys."""

    def loss(p, xs):
        return jnp.mean(jnp.square(jr.scan(cell, p, xs, method=method)[1]))

    return harness.jax_call(jax.jit(jax.value_and_grad(loss)), params, xs)


def method_rows(part, length, cells: dict, method_name: str, method, deadline, args, note=None):
    """Time ``method`` against ``"sequential"`` for every cell at one T; a row per cell.

    ``cells`` maps a label to ``(cell, params, xs)``; ``note(label)`` adds to a row's result.
    """
    tasks = {}
    for label, (cell, params, xs) in cells.items():
        tasks[(label, "sequential")] = train_step(cell, params, xs, "sequential")
        tasks[(label, method_name)] = train_step(cell, params, xs, method)
    stats, first, errors = time_tasks(tasks, deadline, args)
    rows = []
    for label in cells:
        a, b = (label, method_name), (label, "sequential")
        check = f"{label} T={length}: {method_name} / sequential"
        if a in errors or b in errors:
            rows.append(row(part, check, errors.get(a) or errors.get(b), "error"))
            continue
        diff = max(rel_err(first[a][0], first[b][0]), rel_err(first[a][1], first[b][1]))
        status = "ok" if diff <= TOLERANCE["method"][0] else "FAIL"
        text = f"{ratio_text(stats, a, b)}; max diff {diff:.1e}"
        if note is not None:
            text += f"; {note(label)}"
        rows.append(row(part, check, text, status, T=length, ratio=ratio(stats, a, b)))
    return rows


def part_parallel_scan(args, deadline: Deadline) -> list[dict]:
    times = DRY_TIMES if args.dry_run else TIMES
    b, h = (DRY_SCAN_BATCH, DRY_SCAN_HIDDEN) if args.dry_run else (SCAN_BATCH, SCAN_HIDDEN)

    def run(length, gd):
        xs = jax.random.normal(jax.random.key(args.seed), (b, length, h))
        cells = {}
        for name, factory in (("min_gru", jr.min_gru), ("lru", jr.lru)):
            cell = factory(h, h)
            cells[name] = (cell, cell.init(jax.random.key(args.seed + 1)), xs)
        return method_rows("parallel_scan", length, cells, "associative", "associative", gd, args)

    weights, name = length_weights(times), lambda t: f"T={t}"
    return groups_in_turn("parallel_scan", times, weights, deadline, run, name, steps=times)


def newton_info(cell, params, xs, options: Newton) -> str:
    """Newton's iterations on this input (a forward ``newton_scan`` with ``return_info``)."""

    def run(xs, h0):
        return newton_scan(
            lambda c, x: cell.apply(params, c, x), h0, xs, options=options, batch_ndim=1,
            return_info=True,
        )[2]  # fmt: skip

    h0 = cell.initial_carry((xs.shape[0],))
    info = jax.jit(run)(jnp.swapaxes(xs, 0, 1), h0)
    state = "converged" if bool(info.converged) else "NOT converged (sequential fallback)"
    return f"{int(info.iterations)}/{options.max_iters} iterations, {state}"


def part_newton(args, deadline: Deadline) -> list[dict]:
    times = DRY_TIMES if args.dry_run else TIMES
    b = DRY_NEWTON_BATCH if args.dry_run else NEWTON_BATCH

    def run(length, gd):
        options = Newton(max_iters=min(length, NEWTON_MAX_ITERS))
        cells = {}
        for h in NEWTON_HIDDEN:
            cell = jr.gru(h, h)
            xs = jax.random.normal(jax.random.key(args.seed + h), (b, length, h))
            cells[f"gru H={h}"] = (cell, cell.init(jax.random.key(args.seed + 1)), xs)

        def note(label):
            try:
                return newton_info(*cells[label], options)
            except Exception as err:  # the timing row stands without it
                return f"iterations unknown ({error_text(err)})"

        return method_rows("newton", length, cells, "newton", options, gd, args, note)

    weights, name = length_weights(times), lambda t: f"T={t}"
    return groups_in_turn("newton", times, weights, deadline, run, name, steps=times)


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
