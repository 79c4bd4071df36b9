"""Diagnostic jaxrnn variants: the same cell built other ways, to find where time goes.

One idea: each variant computes exactly what ``jr.scan(jr.lstm(...))`` or
``jr.scan(jr.gru(..., reset_after=True))`` computes with the same parameters, changing one
thing about *how*, so timing it next to the default isolates that one thing. They are timed by
``benchmarks/bench_cells.py --variants ...`` (and ``nohoist`` by ``bench_remat.py``); see
``benchmarks/README.md`` for what they showed:

* ``hoist``: ``jr.scan(hoist=True)``, the input projection of all steps in one matmul before
  the loop (the default on accelerators);
* ``saveall``: ``remat=jax.checkpoint_policies.everything_saveable``, i.e. plain JAX autodiff
  keeping every intermediate of a step for the backward pass;
* ``nohoist``: the cell without ``project``/``step``, so the input projection runs inside the
  loop whatever ``hoist`` says (:func:`without_hoisting`);
* ``biasstep``: ``project`` is the bare ``x @ w_ih`` and ``step`` adds the bias
  (:func:`bias_in_step`);
* ``pergate``: one matmul per gate for the recurrence, input projection hoisted;
  ``nohoist-pergate``: per-gate matmuls for the input and the recurrence inside the loop, like
  Flax's ``LSTMCell`` (:func:`per_gate`);
* ``chunkK``: an outer scan over chunks of ``K`` steps, each run by ``jr.scan``
  (:func:`chunked_forward`);
* ``unrollN``: ``unroll=N`` (for Flax too);
* ``plaindot``: every matmul a plain ``jnp.matmul``, differentiated by JAX as is, i.e. without
  the materialised ``x^T`` that ``jaxrnn.precision`` gives the weight gradient
  (:func:`blocked` with one block);
* ``colblockK``: the fused gate matmuls (input and recurrent, inside the step) cut into ``K``
  column blocks (:func:`blocked`).

``nohoist``, ``biasstep`` and the per-gate variants are scanned with ``hoist=True``, which is how
they were first measured (when ``jr.scan`` always hoisted); ``chunkK`` and ``unrollN`` keep
``jr.scan``'s default ``hoist``, which on the CPU no longer hoists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from peers import jaxrnn_forward

import jaxrnn as jr

VARIANTS = (
    "hoist",
    "saveall",
    "nohoist",
    "biasstep",
    "pergate",
    "nohoist-pergate",
    "chunk8",
    "chunk32",
    "unroll2",
    "unroll4",
    "unroll8",
    "plaindot",
    "colblock2",
    "colblock4",
)
VARIANTS_HELP = (
    "also time these jaxrnn variants, to diagnose where time goes: hoist (jr.scan "
    "with hoist=True, the input projection of all steps in one matmul before the loop; the "
    "default on accelerators), saveall (remat=jax.checkpoint_policies.everything_saveable: "
    "the backward pass keeps every intermediate of a step, plain JAX autodiff), nohoist (cell "
    "without project/step, so the input projection runs inside the loop), biasstep (project "
    "without the bias, which step adds instead), pergate (the recurrent matmul split into "
    "one matmul per gate, input projection hoisted), nohoist-pergate (per-gate matmuls for "
    "the input and the recurrence inside the loop, like Flax's LSTMCell), chunkK (an outer "
    "scan over chunks of K steps, each run by jr.scan, so only K steps of projected inputs "
    "exist at a time), unrollN (jaxrnn and Flax with unroll=N), plaindot (plain jnp.matmul, "
    "without jaxrnn's weight-gradient layout), colblockK (the fused gate matmuls cut into K "
    "column blocks)"
)
# remat policy of plain JAX autodiff: the backward pass keeps every intermediate of a step.
SAVE_ALL = jax.checkpoint_policies.everything_saveable


def without_hoisting(cell: jr.Cell) -> jr.Cell:
    """The same cell without ``project``/``step``: ``jr.scan`` then runs ``apply`` per step."""
    return jr.Cell(cell.init, cell.apply, cell.initial_carry, cell.input_size, cell.output_size)


def bias_in_step(cell: jr.Cell) -> jr.Cell:
    """The same cell with the input bias moved from ``project`` into ``step``.

    ``project`` becomes the bare matmul ``x @ w_ih``, and ``step`` adds the bias (``b`` for the
    LSTM, ``b_ih`` for the GRU) to its time slice, where XLA fuses it into the gate arithmetic.
    """

    def bias(params):
        return params.b if isinstance(params, jr.LSTMParams) else params.b_ih

    def project(params, x):
        return x @ params.w_ih

    def step(params, carry, xp):
        return cell.step(params, carry, xp + bias(params))

    def apply(params, carry, x):
        return step(params, carry, project(params, x))

    return jr.Cell(
        cell.init, apply, cell.initial_carry, cell.input_size, cell.output_size, project, step
    )


def chunked_forward(cell: jr.Cell, k: int, unroll: int):
    """``jr.scan`` over chunks of ``k`` time steps, inside an outer ``lax.scan`` over chunks.

    Each inner ``jr.scan`` keeps its default ``hoist``. Where that hoists (accelerators; and
    on the CPU too when this variant was measured, before the ``hoist`` option existed), the
    projection covers ``k`` steps only, so the projected inputs of a chunk stay small
    (``k * B * G * H`` floats) instead of covering all of ``T``. On the CPU today the default
    does not hoist, and this only adds the outer loop.
    """

    def forward(params, xs):
        batch, steps, features = xs.shape
        chunks = jnp.swapaxes(xs, 0, 1).reshape(steps // k, k, batch, features)

        def body(carry, chunk):
            return jr.scan(cell, params, chunk, carry, time_major=True, unroll=unroll)

        carry0 = cell.initial_carry((batch,), xs.dtype)
        _, ys = jax.lax.scan(body, carry0, chunks)  # (T / k, k, B, H)
        return jnp.swapaxes(ys.reshape(steps, batch, -1), 0, 1)

    return forward


def per_gate(cell_name: str, cell: jr.Cell, *, hoist: bool) -> jr.Cell:
    """The same cell, computing each gate's matmuls separately instead of one fused matmul.

    Same parameters and math as ``jr.lstm`` / ``jr.gru(reset_after=True)``; only the matmuls
    are split along the gate axis (``h @ w_hh[:, k*H:(k+1)*H]`` for each gate ``k``). XLA:CPU
    can run such independent matmuls concurrently on different cores, whereas one
    ``(B, H) @ (H, G*H)`` matmul with a small ``B`` runs on one. With ``hoist=False`` the input
    projection is split per gate too and computed inside the loop, as Flax's ``LSTMCell`` does;
    with ``hoist=True`` it stays one hoisted matmul over all time steps.
    """
    gates = 4 if cell_name == "lstm" else 3
    hidden = cell.output_size

    def cols(a, k):
        return a[..., k * hidden : (k + 1) * hidden]

    def core(params, carry, xps):
        if cell_name == "lstm":
            h, c = carry
            i, f, g, o = (xps[k] + h @ cols(params.w_hh, k) for k in range(gates))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return jr.LSTMCarry(h, c), h
        h = carry
        hr, hz, hn = (h @ cols(params.w_hh, k) + cols(params.b_hh, k) for k in range(gates))
        r = jax.nn.sigmoid(xps[0] + hr)
        z = jax.nn.sigmoid(xps[1] + hz)
        n = jnp.tanh(xps[2] + r * hn)
        h = n + z * (h - n)
        return h, h

    def bias(params):
        return params.b if cell_name == "lstm" else params.b_ih

    if hoist:

        def step(params, carry, xp):
            return core(params, carry, [cols(xp, k) for k in range(gates)])

        def apply(params, carry, x):
            return step(params, carry, cell.project(params, x))

        return jr.Cell(
            cell.init, apply, cell.initial_carry, cell.input_size, hidden, cell.project, step
        )

    def apply(params, carry, x):
        xps = [x @ cols(params.w_ih, k) + cols(bias(params), k) for k in range(gates)]
        return core(params, carry, xps)

    return jr.Cell(cell.init, apply, cell.initial_carry, cell.input_size, hidden)


def blocked(cell_name: str, cell: jr.Cell, blocks: int, dot=None) -> jr.Cell:
    """The same cell with its fused gate matmuls cut into ``blocks`` column blocks.

    Same parameters and math as ``jr.lstm`` / ``jr.gru(reset_after=True)`` (float32), both
    matmuls inside the step as on the CPU by default; ``x @ w`` becomes ``blocks`` matmuls of
    ``w[:, j*N:(j+1)*N]``, concatenated. ``dot`` is the matmul used (default: the library's
    ``Policy.dot``; ``jnp.matmul`` for plain JAX autodiff).
    """
    dot = jr.precision.policy().dot if dot is None else dot

    def mm(x, w):
        n = w.shape[-1] // blocks
        parts = [dot(x, w[:, j * n : (j + 1) * n]) for j in range(blocks)]
        return parts[0] if blocks == 1 else jnp.concatenate(parts, axis=-1)

    def apply(params, carry, x):
        if cell_name == "lstm":
            h, c = carry
            i, f, g, o = jnp.split(mm(x, params.w_ih) + params.b + mm(h, params.w_hh), 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return jr.LSTMCarry(h, c), h
        h = carry
        xr, xz, xn = jnp.split(mm(x, params.w_ih) + params.b_ih, 3, -1)
        hr, hz, hn = jnp.split(mm(h, params.w_hh) + params.b_hh, 3, -1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = n + z * (h - n)
        return h, h

    return jr.Cell(cell.init, apply, cell.initial_carry, cell.input_size, cell.output_size)


def unroll_of(variant: str) -> int:
    """``N`` of ``unrollN``."""
    return int(variant.removeprefix("unroll"))


def jaxrnn_variant(variant: str, cell_name: str, cell: jr.Cell, unroll: int, steps: int):
    """``(label, forward)`` of one variant of ``cell``, or ``None`` if it does not apply.

    ``chunkK`` needs ``steps`` (T) to be a multiple of ``K``; otherwise a note is printed and
    ``None`` returned.
    """
    if variant == "hoist":
        return "hoist=True", jaxrnn_forward(cell, unroll, hoist=True)
    if variant == "saveall":
        return "remat=everything_saveable", jaxrnn_forward(cell, unroll, remat=SAVE_ALL)
    if variant == "nohoist":
        return "no hoist", jaxrnn_forward(without_hoisting(cell), unroll, hoist=True)
    if variant == "biasstep":
        return "bias in step", jaxrnn_forward(bias_in_step(cell), unroll, hoist=True)
    if variant == "pergate":
        c = per_gate(cell_name, cell, hoist=True)
        return "per-gate matmuls", jaxrnn_forward(c, unroll, hoist=True)
    if variant == "nohoist-pergate":
        c = per_gate(cell_name, cell, hoist=False)
        return "no hoist, per-gate matmuls", jaxrnn_forward(c, unroll, hoist=True)
    if variant.startswith("chunk"):
        k = int(variant.removeprefix("chunk"))
        if steps % k:
            print(f"skipping variant {variant}: T={steps} is not a multiple of {k}")
            return None
        return f"chunks of {k} steps", chunked_forward(cell, k, unroll)
    if variant.startswith("unroll"):
        return f"unroll={unroll_of(variant)}", jaxrnn_forward(cell, unroll_of(variant))
    if variant == "plaindot":
        c = blocked(cell_name, cell, 1, dot=jnp.matmul)
        return "plain jnp.matmul autodiff", jaxrnn_forward(c, unroll)
    if variant.startswith("colblock"):
        k = int(variant.removeprefix("colblock"))
        return f"{k} column blocks", jaxrnn_forward(blocked(cell_name, cell, k), unroll)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
