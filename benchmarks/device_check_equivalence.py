"""Part 1 of the GPU check (``device_check.py``), ``equivalence``: cuDNN against the scan path.

Where ``jr.rnn(jr.lstm, ...)`` dispatches (:func:`decision_rows`), then ``cudnn=True`` against
``cudnn=False`` on random params, carry and inputs: outputs, final carry and gradients
(:func:`equivalence_row`), and the bf16 policy against float32 (:func:`bf16_row`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from device_check_common import NO_GPU, TOLERANCE, Deadline, error_text, guarded, rel_err, row
from device_check_cudnn import count_kernel_calls, cudnn_backend

import jaxrnn as jr
from jaxrnn.layers import _cudnn

# (B, T, I, H) of the equivalence check.
EQ_SIZE, DRY_EQ_SIZE = (8, 50, 24, 32), (4, 6, 3, 5)


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
