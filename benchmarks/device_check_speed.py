"""The timed parts of the GPU check (``device_check.py``), as paired ratios.

Part 2, ``lstm_speed``: ``jr.rnn`` LSTM on cuDNN vs the scan path vs Flax vs torch. Parts 3 and
4, ``parallel_scan`` and ``newton``: the parallel evaluation methods against the sequential
scan, over long T. Timed with ``device_check_timing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import bench_sweep
import flax.linen as nn
import harness
import jax
import jax.numpy as jnp
import numpy as np
import peers
from device_check_common import (
    NO_GPU,
    TOLERANCE,
    Deadline,
    error_text,
    rel_err,
    row,
    to_numpy,
    torch,
)
from device_check_cudnn import cudnn_backend
from device_check_timing import groups_in_turn, ratio, ratio_text, time_tasks

import jaxrnn as jr
from jaxrnn.layers import _cudnn
from jaxrnn.newton import Newton, newton_scan

# Sizes: (B, T, I, H) of the LSTM timings; T of the scan methods.
LSTM_SIZES, DRY_LSTM_SIZES = bench_sweep.SIZES, ((2, 5, 3, 4),)
TIMES, DRY_TIMES = (1024, 4096, 16384, 65536), (16, 64)
SCAN_BATCH, SCAN_HIDDEN, DRY_SCAN_BATCH, DRY_SCAN_HIDDEN = 8, 64, 2, 4
NEWTON_HIDDEN, NEWTON_BATCH, DRY_NEWTON_BATCH = (4, 16), 8, 2
NEWTON_MAX_ITERS = 200  # beyond it Newton falls back to the sequential scan (on_failure)


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
    name = f"LSTM {harness.size_name(size)} {mode}"
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
    name = lambda group: f"LSTM {harness.size_name(group[0])} {group[1]}"
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
