"""Timing for the GPU check (``device_check.py``): rounds that fit a time share, paired ratios.

:func:`time_tasks` compiles and calls every task once, then runs as many interleaved rounds as
fit its :class:`~device_check_common.Deadline` (``harness.time_interleaved``); :func:`ratio` and
:func:`ratio_text` give the paired ratio of two tasks; :func:`groups_in_turn` runs a part's
timing groups in turn, each in its share of the part's time.
"""

from __future__ import annotations

import math
import time
import traceback

import harness
from device_check_common import Deadline, error_text, row

MIN_SAMPLE_MS, MAX_CALLS = 20.0, 10  # calls per round: a sample of at least this, at most this
MIN_GROUP_S = 3.0  # the least time left for a part's first timing group to start


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
