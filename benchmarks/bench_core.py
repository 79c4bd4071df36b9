"""Core speed benchmark: jaxrnn against Flax, Equinox and PyTorch recurrent layers on CPU.

Times one LSTM and one GRU layer over a batch of sequences, in one process, for every
implementation that is importable:

* jaxrnn: ``jr.scan`` with ``jr.lstm`` / ``jr.gru(reset_after=True)``;
* Flax: ``nn.RNN(nn.LSTMCell)``, ``nn.RNN(nn.OptimizedLSTMCell)``, ``nn.RNN(nn.GRUCell)``;
* Equinox (optional): ``eqx.nn.LSTMCell`` / ``eqx.nn.GRUCell``, vmapped over the batch inside a
  ``jax.lax.scan`` over time;
* PyTorch (optional): ``torch.nn.LSTM`` / ``torch.nn.GRU`` with ``batch_first=True``.

Two modes per implementation: ``infer`` (compiled forward returning the outputs ``ys``) and
``train`` (compiled ``value_and_grad`` of the mean squared error of ``ys`` against a fixed target,
with respect to the parameters; for torch, forward + ``torch.autograd.grad``).

Every implementation gets the same weights (Flax's initialisation with randomised biases, mapped
to the other layouts), so the benchmark also checks that all of them compute the same ``ys`` and
loss, which is reported next to the timings.

Timing: each entry is compiled and warmed up first; then ``--repeats`` rounds, each of which
visits every entry in a shuffled order and times ``--calls`` consecutive calls (after one
untimed call), blocking on the result. The table reports the median over rounds of the time per
call. Interleaving the entries spreads background load on a shared machine over all of them
instead of penalising whichever ran during a busy spell.

Finally it measures what each ``remat`` form costs and buys: the compiled training step of a
longer sequence (``--remat-time``) keeping every intermediate of a step (plain JAX autodiff,
``jax.checkpoint_policies.everything_saveable``), keeping the outputs of matmuls and
nonlinearities (the default ``remat=False``, ``jr.save_nonlinear``), or only the carry
(``remat=True``), reporting XLA's temporary buffer size
(``compiled.memory_analysis().temp_size_in_bytes``) and the time per step.

``--variants`` adds jaxrnn built other ways (no hoisted input projection, bias added in the
step, per-gate matmuls, chunked projection, unrolling) to find where time goes; see
benchmarks/README.md for what they showed.

Run from the repository root::

    python benchmarks/bench_core.py                  # full size, (B, T, I, H) = (32, 128, 128, 256)
    python benchmarks/bench_core.py --quick          # tiny smoke run
    python benchmarks/bench_core.py --json out.json  # also dump all results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Benchmark the working tree's jaxrnn even if another copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pin_cores(argv: Sequence[str]) -> int | None:
    """Apply ``--cores N`` before JAX and PyTorch size their thread pools (at import).

    The process is restricted to its first ``N`` usable CPUs (``os.sched_setaffinity``); XLA
    and PyTorch then start ``N`` threads each.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cores", type=int)
    cores = pre.parse_known_args(argv)[0].cores
    if cores is not None:
        usable = sorted(os.sched_getaffinity(0))
        if not 1 <= cores <= len(usable):
            raise SystemExit(f"--cores: expected 1..{len(usable)}, got {cores}")
        os.sched_setaffinity(0, usable[:cores])
    return cores


_PINNED_CORES = _pin_cores(sys.argv[1:]) if __name__ == "__main__" else None

# Imported after the pinning above, which must precede their thread pools (hence E402).
import flax  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxrnn as jr  # noqa: E402

try:
    import equinox as eqx
except ImportError:  # optional peer
    eqx = None

try:
    import torch
except ImportError:  # optional peer
    torch = None

LSTM_GATES = "ifgo"  # Flax's per-gate dense names and jaxrnn's fused block order agree
GRU_GATES = "rzn"
MODES = ("infer", "train")
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
)
GRU_MODE_NOTE = (
    "flax GRUCell computes n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), i.e. the reset gate "
    "multiplies the recurrent projection including its bias; that is jr.gru(reset_after=True) "
    "(also torch.nn.GRU and eqx.nn.GRUCell). Flax has no recurrent bias on r and z; mapped to "
    "jaxrnn, b_hh is zero in those blocks."
)


# --------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32, help="B (default 32)")
    p.add_argument("--time", type=int, default=128, help="T, sequence length (default 128)")
    p.add_argument("--input", type=int, default=128, help="I, input features (default 128)")
    p.add_argument("--hidden", type=int, default=256, help="H, hidden features (default 256)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (default 20)")
    p.add_argument("--calls", type=int, default=3, help="calls timed per round (default 3)")
    p.add_argument(
        "--unroll", type=int, default=1, help="scan unroll for every JAX implementation (default 1)"
    )
    p.add_argument(
        "--cells", nargs="+", choices=("lstm", "gru"), default=["lstm", "gru"], help="cells to run"
    )
    p.add_argument(
        "--skip",
        nargs="*",
        choices=("flax", "equinox", "torch"),
        default=[],
        help="peer implementations to leave out",
    )
    p.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=[],
        help="also time these jaxrnn variants, to diagnose where time goes: hoist (jr.scan "
        "with hoist=True, the input projection of all steps in one matmul before the loop; the "
        "default on accelerators), saveall (remat=jax.checkpoint_policies.everything_saveable: "
        "the backward pass keeps every intermediate of a step, plain JAX autodiff), nohoist (cell "
        "without project/step, so the input projection runs inside the loop), biasstep (project "
        "without the bias, which step adds instead), pergate (the recurrent matmul split into "
        "one matmul per gate, input projection hoisted), nohoist-pergate (per-gate matmuls for "
        "the input and the recurrence inside the loop, like Flax's LSTMCell), chunkK (an outer "
        "scan over chunks of K steps, each run by jr.scan, so only K steps of projected inputs "
        "exist at a time), unrollN (jaxrnn and Flax with unroll=N)",
    )
    p.add_argument(
        "--remat-time", type=int, default=1024, help="T for the remat comparison (default 1024)"
    )
    p.add_argument(
        "--remat-repeats", type=int, default=None, help="timed rounds for remat (default repeats/4)"
    )
    p.add_argument("--no-remat", action="store_true", help="skip the remat comparison")
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="run on the first N usable CPUs only (command line only: applied before JAX and "
        "PyTorch start their thread pools); --cores 1 gives the steadiest timings",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: every core this process may run on, like XLA)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.time, args.input, args.hidden = 2, 5, 3, 4
        args.calls = 1
        args.remat_time = 16
    if args.remat_repeats is None:
        args.remat_repeats = max(1, args.repeats // 4)
    for name in ("batch", "time", "input", "hidden", "repeats", "calls", "unroll", "remat_time"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# --------------------------------------------------------------------------------------------
# Shared weights: Flax's initialisation (with random biases), mapped to every other layout.


def flax_params(cell_name: str, hidden: int, xs: jax.Array, key: jax.Array):
    """Initialise ``nn.RNN`` of the Flax cell and replace every bias by random values.

    Flax initialises biases to zero, which would hide a wrongly mapped bias; random ones make
    the cross-implementation agreement check meaningful.
    """
    k_init, k_bias = jax.random.split(key)
    cell = nn.LSTMCell(hidden) if cell_name == "lstm" else nn.GRUCell(hidden)
    params = nn.RNN(cell).init(k_init, xs[:1, :1])["params"]
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(k_bias, len(leaves))
    new = [
        v + 0.5 * jax.random.normal(k, v.shape, v.dtype) if path[-1].key == "bias" else v
        for (path, v), k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, new)


def flax_lstm_to_jaxrnn(params) -> jr.LSTMParams:
    """Flax ``LSTMCell``/``OptimizedLSTMCell`` params -> :class:`jaxrnn.LSTMParams`.

    Flax keeps one dense layer per gate: ``i<gate>`` (input side, no bias) and ``h<gate>``
    (hidden side, with bias), gates ``i, f, g, o``: the same order as jaxrnn's fused blocks.
    """
    p = params["cell"]
    return jr.LSTMParams(
        w_ih=jnp.concatenate([p["i" + g]["kernel"] for g in LSTM_GATES], axis=-1),
        w_hh=jnp.concatenate([p["h" + g]["kernel"] for g in LSTM_GATES], axis=-1),
        b=jnp.concatenate([p["h" + g]["bias"] for g in LSTM_GATES], axis=-1),
    )


def flax_gru_to_jaxrnn(params) -> jr.GRUParams:
    """Flax ``GRUCell`` params -> :class:`jaxrnn.GRUParams` for ``jr.gru(reset_after=True)``.

    Flax's input-side denses ``ir, iz, in`` carry biases; of the hidden-side ones only ``hn``
    does, so ``b_hh`` is zero in the ``r`` and ``z`` blocks.
    """
    p = params["cell"]
    b_hn = p["hn"]["bias"]
    zeros = jnp.zeros_like(b_hn)
    return jr.GRUParams(
        w_ih=jnp.concatenate([p["i" + g]["kernel"] for g in GRU_GATES], axis=-1),
        w_hh=jnp.concatenate([p["h" + g]["kernel"] for g in GRU_GATES], axis=-1),
        b_ih=jnp.concatenate([p["i" + g]["bias"] for g in GRU_GATES], axis=-1),
        b_hh=jnp.concatenate([zeros, zeros, b_hn], axis=-1),
    )


# --------------------------------------------------------------------------------------------
# Implementations. Each builder returns (forward, params): ``forward(params, xs) -> ys`` for
# JAX implementations.


@dataclass
class Entry:
    """One implementation of one cell, with its compiled inference and training calls."""

    cell: str  # "lstm" | "gru"
    impl: str  # label in the table
    family: str  # "jaxrnn" | "flax" | "equinox" | "torch"
    infer: Callable[[], Any]  # one inference call; returns ys (computed, i.e. blocked)
    train: Callable[[], Any]  # one training step; returns the loss (blocked)
    baseline: bool = False  # the jaxrnn row the ratios refer to
    note: str = ""


def mse(ys, target):
    return jnp.mean(jnp.square(ys - target))


def jax_entry(cell, impl, family, forward, params, xs, target, **kw) -> Entry:
    """Compile ``forward`` for inference and its MSE ``value_and_grad`` for training."""
    infer = jax.jit(forward)
    train = jax.jit(jax.value_and_grad(lambda p, x, y: mse(forward(p, x), y)))

    def run_infer():
        return jax.block_until_ready(infer(params, xs))

    def run_train():
        loss, _grads = jax.block_until_ready(train(params, xs, target))
        return loss

    return Entry(cell, impl, family, run_infer, run_train, **kw)


def jaxrnn_forward(cell: jr.Cell, unroll: int, hoist: bool | None = None, remat=False):
    def forward(params, xs):
        return jr.scan(cell, params, xs, unroll=unroll, hoist=hoist, remat=remat)[1]

    return forward


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

    Each inner ``jr.scan`` still hoists its input projection, but over ``k`` steps only, so the
    projected inputs of a chunk stay small (``k * B * G * H`` floats) instead of covering all of
    ``T``.
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


def unroll_of(variant: str) -> int:
    return int(variant.removeprefix("unroll"))


def flax_forward(flax_cell, unroll: int):
    model = nn.RNN(flax_cell, unroll=unroll)

    def forward(params, xs):
        return model.apply({"params": params}, xs)

    return forward


def equinox_model(cell_name: str, p, key):
    """``eqx.nn.LSTMCell``/``GRUCell`` carrying the jaxrnn weights ``p`` (rows = outputs)."""
    input_size, hidden = p.w_ih.shape[0], p.w_hh.shape[0]
    if cell_name == "lstm":
        m = eqx.nn.LSTMCell(input_size, hidden, key=key)
        return eqx.tree_at(
            lambda m: (m.weight_ih, m.weight_hh, m.bias), m, (p.w_ih.T, p.w_hh.T, p.b)
        )
    m = eqx.nn.GRUCell(input_size, hidden, key=key)
    # eqx adds ``bias`` on the input side and ``bias_n`` inside the reset product.
    bias = p.b_ih + p.b_hh.at[2 * hidden :].set(0.0)
    return eqx.tree_at(
        lambda m: (m.weight_ih, m.weight_hh, m.bias, m.bias_n),
        m,
        (p.w_ih.T, p.w_hh.T, bias, p.b_hh[2 * hidden :]),
    )


def equinox_forward(cell_name: str, hidden: int, unroll: int):
    """Idiomatic Equinox: the per-example cell vmapped over the batch, scanned over time."""

    def forward(model, xs):
        batch = xs.shape[0]
        h0 = jnp.zeros((batch, hidden), xs.dtype)
        carry0 = (h0, h0) if cell_name == "lstm" else h0

        def body(carry, x):
            carry = jax.vmap(model)(x, carry)
            return carry, carry[0] if cell_name == "lstm" else carry

        _, ys = jax.lax.scan(body, carry0, jnp.swapaxes(xs, 0, 1), unroll=unroll)
        return jnp.swapaxes(ys, 0, 1)

    return forward


def torch_entry(cell_name: str, p, xs, target) -> Entry:
    """``torch.nn.LSTM``/``GRU`` (batch_first) carrying the jaxrnn weights ``p``."""
    input_size, hidden = p.w_ih.shape[0], p.w_hh.shape[0]
    cls = torch.nn.LSTM if cell_name == "lstm" else torch.nn.GRU
    module = cls(input_size, hidden, batch_first=True)

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32))

    with torch.no_grad():
        module.weight_ih_l0.copy_(t(p.w_ih.T))
        module.weight_hh_l0.copy_(t(p.w_hh.T))
        if cell_name == "lstm":
            module.bias_ih_l0.copy_(t(p.b))
            module.bias_hh_l0.zero_()
        else:
            module.bias_ih_l0.copy_(t(p.b_ih))
            module.bias_hh_l0.copy_(t(p.b_hh))
    x_t, y_t = t(xs), t(target)
    weights = list(module.parameters())

    def run_infer():
        with torch.inference_mode():
            return module(x_t)[0]

    def run_train():
        loss = torch.mean(torch.square(module(x_t)[0] - y_t))
        torch.autograd.grad(loss, weights)
        return loss.detach()

    label = f"torch nn.{cls.__name__}"
    return Entry(cell_name, label, "torch", run_infer, run_train)


def build_entries(args, xs, target, key) -> tuple[list[Entry], list[dict]]:
    """All entries to time, plus extra correctness checks (the GRU mode check)."""
    entries: list[Entry] = []
    checks: list[dict] = []
    hidden, unroll = args.hidden, args.unroll
    k_lstm, k_gru, k_eqx = jax.random.split(key, 3)
    cell_keys = {"lstm": k_lstm, "gru": k_gru}
    eqx_keys = dict(zip(("lstm", "gru"), jax.random.split(k_eqx), strict=True))
    for cell_name in args.cells:
        fp = flax_params(cell_name, hidden, xs, cell_keys[cell_name])
        if cell_name == "lstm":
            cell, jp, label = jr.lstm(args.input, hidden), flax_lstm_to_jaxrnn(fp), "jr.lstm"
            flax_cells = [
                ("nn.LSTMCell", nn.LSTMCell),
                ("nn.OptimizedLSTMCell", nn.OptimizedLSTMCell),
            ]
        else:
            cell, jp = jr.gru(args.input, hidden, reset_after=True), flax_gru_to_jaxrnn(fp)
            label = "jr.gru(reset_after=True)"
            flax_cells = [("nn.GRUCell", nn.GRUCell)]
        entries.append(
            jax_entry(
                cell_name,
                f"jaxrnn {label}",
                "jaxrnn",
                jaxrnn_forward(cell, unroll),
                jp,
                xs,
                target,
                baseline=True,
            )
        )
        variant_cells = {
            "nohoist": ("no hoist", without_hoisting(cell), unroll),
            "biasstep": ("bias in step", bias_in_step(cell), unroll),
            "pergate": ("per-gate matmuls", per_gate(cell_name, cell, hoist=True), unroll),
            "nohoist-pergate": (
                "no hoist, per-gate matmuls",
                per_gate(cell_name, cell, hoist=False),
                unroll,
            ),
        }
        for v in args.variants:
            if v == "hoist":
                name, forward = "hoist=True", jaxrnn_forward(cell, unroll, hoist=True)
            elif v == "saveall":
                name = "remat=everything_saveable"
                forward = jaxrnn_forward(cell, unroll, remat=SAVE_ALL)
            elif v in variant_cells:
                name, c, u = variant_cells[v]
                forward = jaxrnn_forward(c, u, hoist=True)
            elif v.startswith("chunk"):
                k = int(v.removeprefix("chunk"))
                if args.time % k:
                    print(f"skipping variant {v}: T={args.time} is not a multiple of {k}")
                    continue
                name, forward = f"chunks of {k} steps", chunked_forward(cell, k, unroll)
            else:
                name, forward = f"unroll={unroll_of(v)}", jaxrnn_forward(cell, unroll_of(v))
            entries.append(
                jax_entry(
                    cell_name, f"jaxrnn {label} [{name}]", "jaxrnn-variant", forward, jp, xs, target
                )
            )
        if "flax" not in args.skip:
            for name, cls in flax_cells:
                entries.append(
                    jax_entry(
                        cell_name,
                        f"flax nn.RNN({name})",
                        "flax",
                        flax_forward(cls(hidden), unroll),
                        fp,
                        xs,
                        target,
                    )
                )
                for v in args.variants:
                    if v.startswith("unroll"):
                        entries.append(
                            jax_entry(
                                cell_name,
                                f"flax nn.RNN({name}) [unroll={unroll_of(v)}]",
                                "flax-variant",
                                flax_forward(cls(hidden), unroll_of(v)),
                                fp,
                                xs,
                                target,
                            )
                        )
        if "equinox" not in args.skip and eqx is not None:
            name = "LSTMCell" if cell_name == "lstm" else "GRUCell"
            entries.append(
                jax_entry(
                    cell_name,
                    f"equinox eqx.nn.{name} + lax.scan",
                    "equinox",
                    equinox_forward(cell_name, hidden, unroll),
                    equinox_model(cell_name, jp, eqx_keys[cell_name]),
                    xs,
                    target,
                )
            )
        if "torch" not in args.skip and torch is not None:
            entries.append(torch_entry(cell_name, jp, xs, target))
        if cell_name == "gru" and "flax" not in args.skip:
            # Evidence for the mode choice: the same weights through both jaxrnn GRU forms.
            ref = np.asarray(flax_forward(nn.GRUCell(hidden), unroll)(fp, xs))
            for reset_after in (True, False):
                c = jr.gru(args.input, hidden, reset_after=reset_after)
                ys = np.asarray(jax.jit(jaxrnn_forward(c, unroll))(jp, xs))
                checks.append(
                    {
                        "check": f"max|ys - flax GRUCell| for jr.gru(reset_after={reset_after})",
                        "value": float(np.max(np.abs(ys - ref))),
                    }
                )
    return entries, checks


# --------------------------------------------------------------------------------------------
# Timing.


def to_numpy(a) -> np.ndarray:
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().numpy()
    return np.asarray(a)


def time_entries(tasks: list[tuple[Any, Callable[[], Any]]], repeats: int, calls: int, seed: int):
    """Median ms per call for each ``(key, fn)``; rounds visit the tasks in a shuffled order.

    Returns ``(stats, first)``: ``stats[key]`` holds the median/quartiles/min (ms) and the
    warm-up (compile + first call) time in s; ``first[key]`` is the first call's result.
    """
    first, warm = {}, {}
    for key, fn in tasks:
        t0 = time.perf_counter()
        first[key] = fn()  # compiles
        warm[key] = time.perf_counter() - t0
        fn()
    samples: dict[Any, list[float]] = {key: [] for key, _ in tasks}
    order = list(tasks)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for key, fn in order:
            fn()  # untimed: lets caches and thread pools settle after switching entries
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[key].append((time.perf_counter() - t0) * 1e3 / calls)
    stats = {}
    for key, s in samples.items():
        q = np.percentile(s, [25, 75]) if len(s) > 1 else (s[0], s[0])
        stats[key] = {
            "median_ms": statistics.median(s),
            "q25_ms": float(q[0]),
            "q75_ms": float(q[1]),
            "min_ms": min(s),
            "samples_ms": s,
            "warmup_s": warm[key],
        }
    return stats, first


def run_speed(args, entries: list[Entry]) -> list[dict]:
    tasks = [((i, m), getattr(e, m)) for i, e in enumerate(entries) for m in MODES]
    stats, first = time_entries(tasks, args.repeats, args.calls, args.seed)
    rows = []
    for i, e in enumerate(entries):
        base_i = next(j for j, b in enumerate(entries) if b.cell == e.cell and b.baseline)
        for m in MODES:
            out = to_numpy(first[(i, m)])
            ref = to_numpy(first[(base_i, m)])
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
    """jaxrnn / best Flax cell, per cell and mode (criterion: <= 1.0)."""
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
            paired = [a / b for a, b in zip(base["samples_ms"], best["samples_ms"], strict=True)]
            q25, q75 = np.percentile(paired, [25, 75])
            ratio = statistics.median(paired)
            out.append(
                {
                    "cell": cell,
                    "mode": m,
                    "jaxrnn_ms": base["median_ms"],
                    "best_flax": best["impl"],
                    "best_flax_ms": best["median_ms"],
                    "ratio_of_medians": base["median_ms"] / best["median_ms"],
                    "ratio": ratio,
                    "ratio_q25": float(q25),
                    "ratio_q75": float(q75),
                    "pass": ratio <= 1.0,
                }
            )
    return out


# --------------------------------------------------------------------------------------------
# Remat.


# What a step keeps for the backward pass: every intermediate (plain JAX autodiff), jr.scan's
# default (outputs of matmuls and nonlinearities, jr.save_nonlinear), or only the carry.
SAVE_ALL = jax.checkpoint_policies.everything_saveable
REMAT_FORMS = {"everything_saveable": SAVE_ALL, "False": False, "True": True}


def run_remat(args, key) -> list[dict]:
    """Temp memory and time of the jaxrnn training step for each of ``REMAT_FORMS``.

    With ``--variants nohoist`` the same is measured for the cell without ``project``/``step``.
    """
    rng = np.random.default_rng(args.seed + 1)
    T = args.remat_time
    xs = jnp.asarray(rng.standard_normal((args.batch, T, args.input), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((args.batch, T, args.hidden), dtype=np.float32))
    rows, tasks = [], []
    keys = dict(zip(("lstm", "gru"), jax.random.split(key), strict=True))
    for cell_name in args.cells:
        if cell_name == "lstm":
            cell = jr.lstm(args.input, args.hidden)
        else:
            cell = jr.gru(args.input, args.hidden, reset_after=True)
        params = cell.init(keys[cell_name])
        forms = [("jr.scan", cell)]
        if "nohoist" in args.variants:
            forms.append(("no hoist", without_hoisting(cell)))
        for form, c in forms:
            for remat in REMAT_FORMS:

                def loss(p, x, y, c=c, remat=remat):
                    return mse(jr.scan(c, p, x, unroll=args.unroll, remat=REMAT_FORMS[remat])[1], y)

                lowered = jax.jit(jax.value_and_grad(loss)).lower(params, xs, target)
                t0 = time.perf_counter()
                compiled = lowered.compile()
                compile_s = time.perf_counter() - t0
                mem = compiled.memory_analysis()

                def run(compiled=compiled, params=params):
                    return jax.block_until_ready(compiled(params, xs, target))[0]

                rows.append(
                    {
                        "cell": cell_name,
                        "form": form,
                        "remat": remat,
                        "T": T,
                        "temp_bytes": None if mem is None else int(mem.temp_size_in_bytes),
                        "argument_bytes": None if mem is None else int(mem.argument_size_in_bytes),
                        "compile_s": compile_s,
                    }
                )
                tasks.append(((cell_name, form, remat), run))
    stats, first = time_entries(tasks, args.remat_repeats, 1, args.seed)
    for r in rows:
        key_ = (r["cell"], r["form"], r["remat"])
        r["median_ms"] = stats[key_]["median_ms"]
        r["loss"] = float(first[key_])
    return rows


# --------------------------------------------------------------------------------------------
# Report.


def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (also readable in a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: B905
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def mib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def environment(args) -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "flax": flax.__version__,
        "equinox": getattr(eqx, "__version__", None) if eqx is not None else None,
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "jaxrnn": jr.__version__,
    }


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
    parts.append(
        fmt_table(
            [
                "cell",
                "implementation",
                "mode",
                "median ms",
                "IQR ms",
                "min ms",
                "time / jaxrnn",
                "warm-up s",
                "max|diff| vs jaxrnn",
            ],
            body,
        )
    )
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
        parts.append(
            fmt_table(
                [
                    "cell",
                    "mode",
                    "jaxrnn ms",
                    "best flax",
                    "flax ms",
                    "ratio of medians",
                    "ratio",
                    "ratio IQR",
                    "result",
                ],
                [
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
                ],
            )
        )
    if results["checks"]:
        parts += ["", "GRU mode check (same weights):"]
        parts += [f"  {c['check']}: {c['value']:.2e}" for c in results["checks"]]
    if results["remat"]:
        rem = results["remat"]
        parts += [
            "",
            f"Remat: jaxrnn training step at T={rem[0]['T']} (same B, I, H); ratios relative to "
            "jr.scan with its default remat=False",
            "",
        ]
        body = []
        for cell in dict.fromkeys(r["cell"] for r in rem):
            base = next(
                r
                for r in rem
                if r["cell"] == cell and r["form"] == "jr.scan" and r["remat"] == "False"
            )
            for r in (r for r in rem if r["cell"] == cell):
                less = (
                    f"{base['temp_bytes'] / r['temp_bytes']:.2f}x"
                    if r["temp_bytes"] and r is not base
                    else ""
                )
                body.append(
                    [
                        cell.upper(),
                        r["form"],
                        r["remat"],
                        mib(r["temp_bytes"]),
                        less,
                        f"{r['median_ms']:.1f}",
                        f"{r['median_ms'] / base['median_ms']:.2f}",
                    ]
                )
        parts.append(
            fmt_table(
                [
                    "cell",
                    "form",
                    "remat",
                    "XLA temp memory",
                    "memory ratio",
                    "median ms",
                    "time ratio",
                ],
                body,
            )
        )
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the report, and return all results as a dict."""
    args = parse_args(argv)
    if args.cores is not None and args.cores != _PINNED_CORES:
        raise SystemExit("--cores works only on the command line (python benchmarks/bench_core.py)")
    if torch is not None:
        usable = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        )
        torch.set_num_threads(args.torch_threads or usable)
    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.time)
    xs = jnp.asarray(rng.standard_normal((*shape, args.input), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((*shape, args.hidden), dtype=np.float32))
    k_params, k_remat = jax.random.split(jax.random.key(args.seed))

    entries, checks = build_entries(args, xs, target, k_params)
    rows = run_speed(args, entries)
    remat = [] if args.no_remat else run_remat(args, k_remat)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": environment(args),
        "gru_mode": GRU_MODE_NOTE,
        "rows": rows,
        "acceptance": acceptance(rows),
        "checks": checks,
        "remat": remat,
    }
    print(report(results), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
