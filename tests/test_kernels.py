"""The native CPU kernels (:mod:`jaxrnn.kernels`) against the XLA path they replace.

Every kernel result is compared with ``kernel=False`` (``jax.lax.scan`` of the same cell): the
values and the gradients with respect to params, inputs and initial carry, float32 within
1e-5 relative, bfloat16 operands within bfloat16 tolerance. Both instruction-set versions run
(``isa="avx2"`` runs on an AVX-512 machine too), and so do the bf16 dot products and their
float32 emulation. The dispatch rules, the errors and the fallback without a library have
their own tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.kernels import _library, _ops

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not jr.kernels.available(), reason=f"kernels not available: {jr.kernels.status().reason}"
)

# Instruction-set settings to run: (id, isa, bf16 dot products, AMX tiles for them). "best" is
# what this CPU runs by default (on AMX machines: AMX tiles); "avx512-noamx" the AVX512-BF16 dot
# products without tiles, run where the tiles are what "best" uses.
ISAS = [
    ("best", "best", True, True),
    ("avx512-noamx", "avx512", True, False),
    ("avx2-nodot", "avx2", False, False),
    ("avx512-nodot", "avx512", False, False),
]


@pytest.fixture(params=ISAS, ids=lambda p: p[0])
def isa(request):
    ident, name, dot, amx = request.param
    status = jr.kernels.status()
    if name == "avx512" and status.isa != "avx512":
        pytest.skip("no AVX-512 here")
    if ident == "avx512-noamx" and not status.amx:
        pytest.skip("no AMX here: the same kernels as 'best'")
    settings = dict(isa=name, bf16_dot=dot, amx=amx)
    _library.configure(**settings)
    yield settings
    _library.configure()


CELLS = {
    "lstm": lambda i, h, **kw: jr.lstm(i, h, forget_bias=0.5, **kw),
    "gru": lambda i, h, **kw: jr.gru(i, h, **kw),
    "gru-after": lambda i, h, **kw: jr.gru(i, h, reset_after=True, **kw),
}


def _random_params(cell, key, scale=0.5):
    """Params with random biases too (the default zero biases would hide bias mistakes)."""
    params = cell.init(key)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        leaf + scale * jax.random.normal(k, leaf.shape).astype(leaf.dtype)
        if leaf.ndim == 1
        else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def _carry(cell, batch_shape, key):
    zeros = cell.initial_carry(batch_shape)
    leaves, tree = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [jax.random.normal(k, z.shape, z.dtype) for z, k in zip(leaves, keys, strict=True)]
    )


def _loss(cell, kernel, **opts):
    """A scalar of every output and the final carry, weighted so no cotangent is uniform."""

    def loss(params, xs, carry):
        carry, ys = jr.scan(cell, params, xs, carry, kernel=kernel, **opts)
        ys = ys.astype(jnp.float32)
        weights = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        total = jnp.sum(weights * ys) + jnp.sum(jnp.sin(ys) ** 2)
        for leaf in jax.tree.leaves(carry):
            total = total + jnp.sum(leaf * jnp.linspace(-1.0, 1.0, leaf.shape[-1]))
        return total, (carry, ys)

    return loss


def _compare(cell, params, xs, carry, rtol, atol, value_atol=None, **opts):
    """Kernel vs XLA path: values, final carry, and gradients w.r.t. params, xs and carry
    (each gradient scaled by its largest entry). ``value_atol``: the values' absolute
    tolerance, if not ``atol``."""
    value_atol = atol if value_atol is None else value_atol
    outs = {}
    for kernel in (True, False):
        grad = jax.value_and_grad(_loss(cell, kernel, **opts), argnums=(0, 1, 2), has_aux=True)
        outs[kernel] = jax.jit(grad)(params, xs, carry)
    (_, (carry_k, ys_k)), grads_k = outs[True]
    (_, (carry_x, ys_x)), grads_x = outs[False]
    np.testing.assert_allclose(ys_k, ys_x, rtol=rtol, atol=value_atol, err_msg="ys")
    for a, b in zip(jax.tree.leaves(carry_k), jax.tree.leaves(carry_x), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=value_atol, err_msg="final carry")
    flat_k = jax.tree_util.tree_leaves_with_path(grads_k)
    for (path, a), b in zip(flat_k, jax.tree.leaves(grads_x), strict=True):
        scale = float(np.max(np.abs(np.asarray(b, np.float32)))) or 1.0
        np.testing.assert_allclose(
            np.asarray(a, np.float32) / scale,
            np.asarray(b, np.float32) / scale,
            rtol=rtol,
            atol=atol,
            err_msg=f"gradient {jax.tree_util.keystr(path)}",
        )


# Sizes: hidden sizes that are and are not multiples of the vector widths (8, 16), several
# panels per thread, and the degenerate B = 1, T = 1.
SIZES = [(3, 5, 4, 8), (2, 7, 3, 37), (1, 4, 6, 16), (4, 1, 2, 5), (5, 6, 9, 48)]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_float32_matches_xla(isa, name, size):
    batch, steps, inputs, hidden = size
    cell = CELLS[name](inputs, hidden)
    params = _random_params(cell, jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))
    carry = _carry(cell, (batch,), jax.random.key(2))
    _compare(cell, params, xs, carry, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("regime", ["tiny", "saturated"])
def test_gates_near_zero_and_saturated(isa, name, regime):
    """The kernels' own sigmoid and tanh against XLA's where they are hardest: every
    pre-activation near zero (tanh x ~ x: relative errors show, so the values' absolute
    tolerance shrinks with them), or the input side scaled far into saturation (the recurrent
    weights kept, so the recurrence does not amplify rounding chaotically). Values to 1e-6,
    like every other test; the gradients there to 1e-5 of their largest entry, because both
    paths take sigma' = sigma (1 - sigma) from a sigma within an ulp of 1."""
    cell = CELLS[name](4, 19)
    params = _random_params(cell, jax.random.key(30))
    carry = _carry(cell, (3,), jax.random.key(32))
    if regime == "tiny":
        params = jax.tree.map(lambda p: p * 1e-4, params)
        carry = jax.tree.map(lambda c: c * 1e-4, carry)
    else:
        params = params._replace(w_ih=params.w_ih * 30.0)
    xs = jax.random.normal(jax.random.key(31), (3, 6, 4))
    if regime == "tiny":
        _compare(cell, params, xs, carry, rtol=1e-5, atol=1e-6, value_atol=1e-11)
    else:
        _compare(cell, params, xs, carry, rtol=1e-5, atol=1e-5, value_atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_and_directions(isa, name, reverse):
    cell = CELLS[name](3, 21)
    params = _random_params(cell, jax.random.key(3))
    xs = jax.random.normal(jax.random.key(4), (6, 7, 3))
    lengths = jnp.array([7, 0, 3, 1, 6, 7])
    carry = _carry(cell, (6,), jax.random.key(5))
    _compare(cell, params, xs, carry, 1e-5, 1e-6, lengths=lengths, reverse=reverse)


@pytest.mark.parametrize("name", list(CELLS))
def test_nan_padding_is_never_read(name):
    cell = CELLS[name](3, 10)
    params = _random_params(cell, jax.random.key(6))
    xs = jax.random.normal(jax.random.key(7), (3, 5, 3))
    lengths = jnp.array([5, 2, 0])
    xs = jnp.where((jnp.arange(5)[None, :] < lengths[:, None])[..., None], xs, jnp.nan)
    for reverse in (False, True):
        loss = _loss(cell, True, lengths=lengths, reverse=reverse)
        grad = jax.grad(lambda p, x, loss=loss: loss(p, x, None)[0], (0, 1))
        for leaf in jax.tree.leaves(jax.jit(grad)(params, xs)):
            assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize(
    "dtypes", [dict(dtype=jnp.bfloat16), dict(param_dtype=jnp.bfloat16)], ids=["dtype", "param"]
)
@pytest.mark.parametrize("name", list(CELLS))
def test_bfloat16_matches_xla(isa, name, dtypes):
    """bf16 operands, float32 sums on both paths: the same bf16 rounding of h and weights."""
    cell = CELLS[name](5, 20, **dtypes)
    params = _random_params(cell, jax.random.key(8), scale=0.1)
    xs = jax.random.normal(jax.random.key(9), (4, 6, 5))
    lengths = jnp.array([6, 2, 0, 5])
    carry = _carry(cell, (4,), jax.random.key(10))
    _compare(cell, params, xs, carry, 2e-2, 2e-2, lengths=lengths)


@pytest.mark.parametrize("name", list(CELLS))
def test_bfloat16_over_several_tiles(isa, name):
    """bf16 with more rows than one AMX tile holds (16) and sizes that are no multiple of the
    tiles' 32 pairs, in reverse with zero lengths: the padded operands of the tile path."""
    cell = CELLS[name](7, 37, dtype=jnp.bfloat16)
    params = _random_params(cell, jax.random.key(20), scale=0.1)
    xs = jax.random.normal(jax.random.key(21), (18, 5, 7))
    lengths = jnp.array([5, 0, 3, 1, 5, 2, 4, 5, 0, 5, 1, 3, 5, 5, 2, 4, 5, 3])
    carry = _carry(cell, (18,), jax.random.key(22))
    _compare(cell, params, xs, carry, 2e-2, 2e-2, lengths=lengths, reverse=True)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch-major", "time-major"])
def test_hoisted_input_projection(isa, name, dtype, time_major):
    """The forward kernel's input projection run for all steps before its loop (what it does
    where the weights outgrow the cache) against the XLA path, in reverse, with zero lengths
    and more rows than one AMX tile."""
    _library.configure(**isa, hoist=True)
    cell = CELLS[name](6, 21, dtype=dtype)
    params = _random_params(cell, jax.random.key(23), scale=0.1)
    xs = jax.random.normal(jax.random.key(24), (17, 4, 6))
    lengths = jnp.array([4, 0, 3, 1, 4, 2, 4, 4, 0, 4, 1, 3, 4, 4, 2, 4, 3])
    if time_major:
        xs = xs.swapaxes(0, 1)
    carry = _carry(cell, (17,), jax.random.key(25))
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    opts = dict(lengths=lengths, reverse=True, time_major=time_major)
    _compare(cell, params, xs, carry, tol, tol / 10 if dtype == jnp.float32 else tol, **opts)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("hoist", [None, True], ids=["default", "hoisted"])
def test_bfloat16_single_sequence(isa, name, hoist):
    """bf16 over a single sequence (B = 1), whose steps run on the dot products: the hoisted
    input projection (the default there, for the GRU where the CPU has AMX) runs on AMX tiles
    where the CPU has them, its T rows (no multiple of a tile's 16) and odd input size padded
    with zeros."""
    _library.configure(**isa, hoist=hoist)
    cell = CELLS[name](5, 20, dtype=jnp.bfloat16)
    params = _random_params(cell, jax.random.key(26), scale=0.1)
    xs = jax.random.normal(jax.random.key(27), (1, 37, 5))
    carry = _carry(cell, (1,), jax.random.key(28))
    _compare(cell, params, xs, carry, 2e-2, 2e-2, lengths=jnp.array([29]), reverse=True)


def test_bfloat16_close_to_float32():
    cell16, cell32 = jr.lstm(8, 32, dtype=jnp.bfloat16), jr.lstm(8, 32)
    params = cell32.init(jax.random.key(11))
    xs = jax.random.normal(jax.random.key(12), (4, 20, 8))
    ys16 = jr.scan(cell16, params, xs, kernel=True)[1].astype(jnp.float32)
    ys32 = jr.scan(cell32, params, xs, kernel=True)[1]
    assert float(jnp.max(jnp.abs(ys16 - ys32))) < 3e-2


def test_batch_shapes_and_time_major():
    cell = jr.gru(3, 9, reset_after=True)
    params = _random_params(cell, jax.random.key(13))
    for shape, time_major in (((), False), ((2, 3), False), ((2, 3), True), ((4,), True)):
        xs = jax.random.normal(jax.random.key(14), (*shape, 5, 3))
        if time_major:
            xs = jnp.moveaxis(xs, -2, 0)
        lengths = jnp.ones(shape, jnp.int32) * 3 if shape else None
        carry = _carry(cell, shape, jax.random.key(15))
        opts = dict(time_major=time_major)
        if lengths is not None:
            opts["lengths"] = lengths
        _compare(cell, params, xs, carry, 1e-5, 1e-6, **opts)


def test_zero_steps_and_empty_batch():
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(16))
    carry = _carry(cell, (2,), jax.random.key(17))
    out, ys = jr.scan(cell, params, jnp.zeros((2, 0, 3)), carry, kernel=True)
    assert ys.shape == (2, 0, 4)
    np.testing.assert_array_equal(out.h, carry.h)
    out, ys = jr.scan(cell, params, jnp.zeros((0, 5, 3)), kernel=True)
    assert ys.shape == (0, 5, 4) and out.c.shape == (0, 4)
    grads = jax.grad(
        lambda p: jr.scan(cell, p, jnp.zeros((2, 0, 3)), carry, kernel=True)[0].h.sum()
    )(params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))


def test_traced_lengths_out_of_range_act_as_the_nearest_end():
    cell = jr.lstm(2, 6)
    params = cell.init(jax.random.key(18))
    xs = jax.random.normal(jax.random.key(19), (3, 4, 2))
    run = jax.jit(
        lambda lengths, kernel: jr.scan(cell, params, xs, lengths=lengths, kernel=kernel)[1],
        static_argnums=1,
    )
    got = run(jnp.array([9, -2, 2]), True)
    np.testing.assert_allclose(got, run(jnp.array([4, 0, 2]), False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell_fn", [jr.lstm, jr.gru])
def test_stacked_and_bidirectional_layers(cell_fn, bidirectional):
    nets = {
        k: jr.rnn(cell_fn, 4, 12, num_layers=2, bidirectional=bidirectional, kernel=k)
        for k in (True, False)
    }
    params = nets[True].init(jax.random.key(20))
    xs = jax.random.normal(jax.random.key(21), (3, 6, 4))
    lengths = jnp.array([6, 0, 4])

    def loss(kernel):
        def f(params, xs):
            carry, ys = nets[kernel].apply(params, xs, lengths=lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    (v1, g1), (v2, g2) = loss(True)(params, xs), loss(False)(params, xs)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_vmap_matches_the_batch():
    cell = jr.lstm(3, 10)
    params = cell.init(jax.random.key(22))
    xs = jax.random.normal(jax.random.key(23), (4, 2, 5, 3))
    lengths = jnp.array([[5, 1], [0, 3], [2, 2], [5, 5]])
    one = lambda x, n: jr.scan(cell, params, x, lengths=n, kernel=True)[1]
    mapped = jax.jit(jax.vmap(one))(xs, lengths)
    batched = jr.scan(cell, params, xs, lengths=lengths, kernel=False)[1]
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-6)
    grad = jax.vmap(
        jax.grad(
            lambda p, x, n: (
                one(x, n).sum() if False else jr.scan(cell, p, x, lengths=n, kernel=True)[1].sum()
            )
        ),
        (None, 0, 0),
    )
    per_example = jax.jit(grad)(params, xs, lengths)
    ref = jax.vmap(
        jax.grad(lambda p, x, n: jr.scan(cell, p, x, lengths=n, kernel=False)[1].sum()),
        (None, 0, 0),
    )(params, xs, lengths)
    for a, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CELLS))
def test_backward_twice_from_the_same_residuals(name):
    """Every backward kernel writes its gate cotangents over the saved activations: a pullback
    run twice (eagerly, and twice inside one jit) must find them intact each time."""
    cell = CELLS[name](3, 12)
    params = _random_params(cell, jax.random.key(40))
    xs = jax.random.normal(jax.random.key(41), (4, 6, 3))
    cts = jax.random.normal(jax.random.key(42), (4, 6, 12))

    def run(kernel):
        return lambda p: jr.scan(cell, p, xs, kernel=kernel)[1]

    _, pullback = jax.vjp(run(True), params)
    first, second = pullback(cts), pullback(2.0 * cts)

    def both(p):
        _, pb = jax.vjp(run(True), p)
        return pb(cts), pb(2.0 * cts)

    in_jit = jax.jit(both)(params)
    (ref,) = jax.vjp(run(False), params)[1](cts)
    for got, scale in ((first, 1.0), (second, 2.0), (in_jit[0], 1.0), (in_jit[1], 2.0)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a / scale, b, rtol=1e-5, atol=1e-5)


def _carries_in(ys, h0, lengths, reverse):
    """Float64 reference of the carry entering each valid step of ``ys (T, B, H)``: ``h0`` at a
    row's first step, else the output of the step before it (NaN where the step is past the
    row's length, which the comparison skips)."""
    out = np.full(ys.shape, np.nan)
    for b, length in enumerate(lengths):
        for t in range(length):
            first = t == (length - 1 if reverse else 0)
            out[t, b] = h0[b] if first else ys[t + 1 if reverse else t - 1, b]
    return out


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_major", [False, True], ids=["time-major", "batch-major"])
def test_backward_returns_the_carries_entering_each_step(isa, name, reverse, batch_major):
    """The backward kernels write h_{t-1} of every valid step (dW_hh's operand) over the LSTM's
    saved cell states or the GRU's outputs: against the forward pass's outputs shifted by one
    step, with h0 at each row's first, for lengths 0, partial and T, both directions."""
    steps, batch, n_in, hidden = 7, 4, 3, 20
    cell = CELLS[name](n_in, hidden)
    p = _random_params(cell, jax.random.key(50))
    xs = jax.random.normal(jax.random.key(51), (steps, batch, n_in))
    h0 = jax.random.normal(jax.random.key(52), (batch, hidden))
    lengths = jnp.array([7, 0, 3, 1], jnp.int32)
    x = jnp.swapaxes(xs, 0, 1) if batch_major else xs
    seq = (batch, steps) if batch_major else (steps, batch)
    opts = dict(reverse=reverse, batch_major=batch_major, bf16=False)
    f32 = jnp.float32
    if name == "lstm":
        ys, _, _, acts, cs = _ops._lstm_forward(
            x, p.w_ih, p.w_hh, p.b, h0, h0, lengths, reverse, f32, batch_major, True
        )
        zeros = jnp.zeros_like(h0)
        outs = _ops._ffi(
            "jaxrnn_lstm_backward",
            [acts.shape, ys.shape, h0.shape, h0.shape],
            *(acts, cs, h0, h0, p.w_hh, lengths, jnp.ones((*seq, hidden)), zeros, zeros),
            aliases={0: 0, 1: 1},
            **opts,
        )
        hprev = outs[1]
    else:
        after = name == "gru-after"
        ys, _, acts, hns = _ops._gru_forward(
            x, p.w_ih, p.w_hh, p.b_ih, p.b_hh, h0, lengths, reverse, after, f32, batch_major, True
        )
        outs = _ops._ffi(
            "jaxrnn_gru_backward",
            [acts.shape, ys.shape, ys.shape, h0.shape],
            *(acts, hns, ys, h0, p.w_hh, lengths, jnp.ones((*seq, hidden)), jnp.zeros_like(h0)),
            aliases={0: 0, 1: 1, 2: 2} if after else {0: 0, 2: 2},
            reset_after=after,
            **opts,
        )
        hprev = outs[2]
    if batch_major:
        ys, hprev = jnp.swapaxes(ys, 0, 1), jnp.swapaxes(hprev, 0, 1)
    want = _carries_in(np.asarray(ys, np.float64), np.asarray(h0), np.asarray(lengths), reverse)
    valid = ~np.isnan(want)
    assert valid.any()
    # The LSTM's h_t is recomputed as o_t tanh(c_t) (the forward pass's expression; a compiler
    # may contract it differently in the two kernels), the GRU's copied.
    np.testing.assert_allclose(np.asarray(hprev)[valid], want[valid], rtol=1e-6, atol=1e-7)


def test_inside_train_fit():
    """jr.train.fit of a GRU model: the same losses, step for step, on either path."""
    import optax

    losses = {}
    xs = jax.random.normal(jax.random.key(25), (16, 5, 3))
    ys = jax.random.normal(jax.random.key(26), (16, 5, 2))
    head = jax.random.normal(jax.random.key(24), (8, 2)) * 0.3
    for kernel in (True, False):
        net = jr.rnn(jr.gru, 3, 8, kernel=kernel, reset_after=True)

        def loss_fn(params, carry, batch, key, net=net):
            inputs, targets = batch
            _, hs = net.apply(params, inputs)
            return jnp.mean((hs @ head - targets) ** 2), carry

        optimizer = optax.adam(1e-2)
        state = jr.train.init_state(net.init(jax.random.key(27)), optimizer, jax.random.key(0))
        step = jr.train.make_train_step(loss_fn, optimizer)
        _, history = jr.train.fit(state, step, lambda s: (xs, ys), 5, progress=False, log_every=1)
        losses[kernel] = history.train["loss"]
    assert len(losses[True]) == 5
    np.testing.assert_allclose(np.asarray(losses[True]), np.asarray(losses[False]), rtol=1e-5)


def test_dispatch_rules():
    from jaxrnn.kernels import supports

    assert supports(jr.lstm(3, 4)) == (True, "")
    assert supports(jr.gru(3, 4, reset_after=True)) == (True, "")
    for cell, word in (
        (jr.lstm(3, 4, peephole=True), "peephole"),
        (jr.lstm(3, 4, coupled=True), "coupled"),
        (jr.lstm(3, 4, proj_size=2), "proj_size"),
        (jr.lstm(3, 4, param_dtype=jnp.float64), "float64"),
        (jr.simple_rnn(3, 4), "simple_rnn"),
        (jr.zoneout(jr.lstm(3, 4), None, rate=0.1), "zoneout"),
        (jr.lstm(3, 4)._replace(apply=lambda p, c, x: (c, x)), "not as jr.lstm built it"),
    ):
        ok, why = supports(cell)
        assert not ok and word in why, why
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(28))
    xs = jnp.ones((2, 3, 3))
    for opts, word in (
        (dict(remat=True), "remat"),
        (dict(resets=jnp.zeros((2, 3), bool)), "resets"),
        (dict(method="newton"), "method"),
    ):
        with pytest.raises(ValueError, match=rf"kernel=True.*{word}"):
            jr.scan(cell, params, xs, kernel=True, **opts)
        jr.scan(cell, params, xs, **opts)  # kernel=None: the XLA path
    for value in ("yes", 1, 0):
        with pytest.raises(TypeError, match="kernel: expected None, True or False"):
            jr.scan(cell, params, xs, kernel=value)
    with pytest.raises(
        ValueError, match=r"kernel=True: cannot run on the native kernels: .*peephole"
    ):
        jr.layer(jr.lstm(3, 4, peephole=True), kernel=True)
    with pytest.raises(ValueError, match=r"kernel=True.*transform"):
        jr.rnn(jr.lstm, 3, 4, kernel=True, transform=lambda c, k: c)


def test_the_kernel_is_what_runs():
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(29))
    xs = jnp.ones((2, 3, 3))
    text = str(jax.make_jaxpr(lambda p: jr.scan(cell, p, xs)[1])(params))
    assert "jaxrnn_lstm_forward" in text and "scan[" not in text
    text = str(jax.make_jaxpr(lambda p: jr.scan(cell, p, xs, kernel=False)[1])(params))
    assert "jaxrnn_lstm_forward" not in text and "scan[" in text


def test_bf16_backward_matmuls_run_on_the_tiles():
    """Where the CPU has AMX, a bf16 training step's matmuls over all steps are the library's
    GEMMs: the weight gradients (two for the LSTM and the GRU with reset_after, three for the
    GRU with the reset gate before the matmul) and dx. Elsewhere, and in float32, XLA's."""
    xs = jnp.ones((2, 3, 3))
    amx = jr.kernels.status().amx
    for cell, tn in (
        (jr.lstm(3, 4, dtype=jnp.bfloat16), 2),
        (jr.gru(3, 4, reset_after=True, dtype=jnp.bfloat16), 2),
        (jr.gru(3, 4, reset_after=False, dtype=jnp.bfloat16), 3),
    ):
        params = cell.init(jax.random.key(33))
        loss = lambda p, x, c=cell: jr.scan(c, p, x)[1].astype(jnp.float32).sum()
        text = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, xs))
        assert text.count("jaxrnn_tn_matmul") == (tn if amx else 0)
        assert text.count("jaxrnn_nt_matmul") == (1 if amx else 0)
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(34))
    text = str(jax.make_jaxpr(jax.grad(lambda p: jr.scan(cell, p, xs)[1].sum()))(params))
    assert "tn_matmul" not in text and "nt_matmul" not in text


# (R, K, N): a single element; sizes that are no multiple of the 32 x 32 blocks of the result or
# of the 32 values of a tile's row; a contraction longer than one pass over the result sums
# (1024); more rows and columns of the result than one item of the product (256); no rows.
GEMM_SIZES = [(1, 1, 1), (33, 17, 5), (64, 32, 32), (70, 300, 40), (1100, 48, 64), (0, 3, 4)]


def _native_gemm(target, a, g, tiles):
    """The library's ``target`` under vmap, on the tiles or (turned off after tracing, as a
    test's switch can do) without them."""
    if target == "jaxrnn_tn_matmul":  # a^T g
        shape, args = (a.shape[-1], g.shape[-1]), (a, g)
    else:  # g a^T
        shape, args = (g.shape[-2], a.shape[-2]), (g, a)
    call = jax.jit(jax.vmap(lambda x, y: _ops._ffi(target, [shape], x, y)[0]))
    _library.configure(amx=tiles)
    try:
        return np.asarray(call(*args))
    finally:
        _library.configure()


@pytest.mark.parametrize("tiles", [True, False], ids=["tiles", "without-tiles"])
@pytest.mark.parametrize("size", GEMM_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_backward_gemms_against_float64(size, tiles):
    """jaxrnn_tn_matmul (``a^T g``, the weight gradients) and jaxrnn_nt_matmul (``g a^T``, dx)
    against float64 NumPy on the same bf16 operands, on AMX tiles and without them, under vmap.
    """
    if tiles and not jr.kernels.status().amx:
        pytest.skip("no AMX here")
    rows, k, n = size
    keys = jax.random.split(jax.random.key(35), 3)
    g = jax.random.normal(keys[0], (2, rows, n))
    g16 = np.asarray(g.astype(jnp.bfloat16), np.float64)
    a = jax.random.normal(keys[1], (2, rows, k)).astype(jnp.bfloat16)
    want = np.einsum("brk,brn->bkn", np.asarray(a, np.float64), g16)
    got = _native_gemm("jaxrnn_tn_matmul", a, g, tiles)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(rows, 1))
    w = jax.random.normal(keys[2], (2, k, n)).astype(jnp.bfloat16)
    want = np.einsum("brn,bkn->brk", g16, np.asarray(w, np.float64))
    got = _native_gemm("jaxrnn_nt_matmul", w, g, tiles)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(n, 1))


def test_backward_gemms_check_their_operands():
    a, g = jnp.ones((4, 3), jnp.bfloat16), jnp.ones((4, 5))
    with pytest.raises(Exception, match=r"expected a \(R, K\) bfloat16 and g \(R, N\) float32"):
        _ops._ffi("jaxrnn_tn_matmul", [(3, 5)], a.astype(jnp.float32), g)
    with pytest.raises(Exception, match=r"expected a \(R, K\) bfloat16"):
        _ops._ffi("jaxrnn_tn_matmul", [(3, 5)], a, jnp.ones((5, 5)))
    with pytest.raises(Exception, match=r"expected g \(R, N\) float32 and a \(K, N\)"):
        _ops._ffi("jaxrnn_nt_matmul", [(4, 3)], g, a)


def test_sequence_kernels_check_their_dtypes():
    """The kernels take float32 x and weights, or bf16 x with bf16 or float32 weights (which they
    round as they pack them); the backward handlers are told which by their bf16 attribute."""
    steps, batch, n_in, hidden = 3, 2, 4, 5
    bf16 = jnp.bfloat16
    w_ih, w_hh = jnp.ones((n_in, 4 * hidden)), jnp.ones((hidden, 4 * hidden))
    state, lengths = jnp.zeros((batch, hidden)), jnp.full((batch,), steps, jnp.int32)
    shapes = [(steps, batch, hidden), (batch, hidden), (batch, hidden), (0,), (0,)]
    opts = dict(reverse=0, train=0, batch_major=0)

    def forward(x, w_i, w_h):
        args = (x, w_i, w_h, jnp.zeros(4 * hidden), state, state, lengths)
        return _ops._ffi("jaxrnn_lstm_forward", shapes, *args, **opts)[0]

    x = jnp.ones((steps, batch, n_in))
    with pytest.raises(Exception, match="float32 x needs float32 weights"):
        forward(x, w_ih.astype(bf16), w_hh.astype(bf16))
    with pytest.raises(Exception, match="w_ih and w_hh must have one dtype"):
        forward(x.astype(bf16), w_ih, w_hh.astype(bf16))
    ys16 = forward(x.astype(bf16), w_ih.astype(bf16), w_hh.astype(bf16))
    np.testing.assert_array_equal(forward(x.astype(bf16), w_ih, w_hh), ys16)
    seq = jnp.zeros((steps, batch, hidden))
    acts = jnp.zeros((steps, batch, 4 * hidden))
    args = (acts, seq, state, state, w_hh.astype(bf16), lengths, seq)
    with pytest.raises(Exception, match="bfloat16 w_hh needs bf16=1"):
        _ops._ffi(
            "jaxrnn_lstm_backward",
            [acts.shape, seq.shape, (batch, hidden), (batch, hidden)],
            *args,
            state,
            state,
            reverse=0,
            batch_major=0,
            bf16=0,
        )


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_training_step_keeps_no_cotangent_copy(name, dtype):
    """XLA's temporaries of a kernel training step (compiled, never run), in (T, B, H) float32
    arrays: the saved gates (4 or 3) and one array more (cell states, ``h W_hn + b_hn`` or
    outputs), the outputs or the GRU's ``r * h``, the loss's two arrays, and in bf16 the
    rounded inputs: at most 7.5. The cotangents are written over the saved values, and the
    GRU's two sides share one buffer (``_ops._after``); a (T, B, 3H) concatenation or column
    slice alive beside them makes 8 to 11 (as before ``_after``), and at the sweep's sizes
    pushes the step's temporaries past the 32 MiB glibc serves from its heap."""
    steps, batch, n_in, hidden = 64, 8, 16, 32
    cell = CELLS[name](n_in, hidden, dtype=dtype)
    params = cell.init(jax.random.key(0))
    xs = jax.ShapeDtypeStruct((batch, steps, n_in), jnp.float32)
    target = jax.ShapeDtypeStruct((batch, steps, hidden), jnp.float32)

    def loss(p, x, y):
        return jnp.mean((jr.scan(cell, p, x)[1].astype(jnp.float32) - y) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs, target).compile()
    arrays = compiled.memory_analysis().temp_size_in_bytes / (steps * batch * hidden * 4)
    assert arrays <= 7.5, f"{name}: temporaries of {arrays:.2f} (T, B, H) float32 arrays"


def test_after_leaves_its_value_unchanged():
    """``_ops._after(x, *deps)`` is ``x`` whatever the dependencies hold (NaN, infinities, no
    element at all), in float32 and bfloat16."""
    deps = (
        jnp.array([jnp.nan, 1.0]),
        jnp.array([-jnp.inf]),
        jnp.zeros((0, 3)),
        jnp.full((2, 2), jnp.inf, jnp.bfloat16),
    )
    for dtype in (jnp.float32, jnp.bfloat16):
        x = jnp.array([1.5, -2.0, 0.0, jnp.inf], dtype)
        out = jax.jit(_ops._after)(x, *deps)
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))


def test_backward_kernels_check_the_carries_result():
    """The carries h_{t-1} a backward handler returns take the shape of the array they are
    written over (the LSTM's cell states, the GRU's outputs), and the LSTM's h0 is (B, H)."""
    steps, batch, hidden = 3, 2, 5
    seq, state = jnp.zeros((steps, batch, hidden)), jnp.zeros((batch, hidden))
    lengths = jnp.full((batch,), steps, jnp.int32)
    w_hh = jnp.zeros((hidden, 4 * hidden))
    acts = jnp.zeros((steps, batch, 4 * hidden))
    opts = dict(reverse=0, batch_major=0, bf16=0)
    lstm = (acts, seq, state, state, w_hh, lengths, seq, state, state)
    with pytest.raises(Exception, match="hprev is not shaped as cs"):
        _ops._ffi(
            "jaxrnn_lstm_backward",
            [acts.shape, (steps, batch), state.shape, state.shape],
            *lstm,
            **opts,
        )
    wrong_h0 = (acts, seq, jnp.zeros((batch, hidden + 1)), *lstm[3:])
    with pytest.raises(Exception, match=r"a carry is not \(B, H\)"):
        _ops._ffi(
            "jaxrnn_lstm_backward",
            [acts.shape, seq.shape, state.shape, state.shape],
            *wrong_h0,
            **opts,
        )
    gru = (jnp.zeros((steps, batch, 3 * hidden)), seq, seq, state)
    gru += (jnp.zeros((hidden, 3 * hidden)), lengths, seq, state)
    with pytest.raises(Exception, match="hprev is not shaped as ys"):
        _ops._ffi(
            "jaxrnn_gru_backward",
            [gru[0].shape, seq.shape, (steps, batch), state.shape],
            *gru,
            reset_after=1,
            **opts,
        )


def test_higher_order_derivatives_say_what_to_do():
    cell = jr.gru(3, 4)
    params = cell.init(jax.random.key(30))
    xs = jnp.ones((2, 3, 3))
    f = lambda x: jr.scan(cell, params, x)[1].sum()
    with pytest.raises(TypeError, match=r"forward-mode.*kernel=False"):
        jax.jvp(f, (xs,), (xs,))
    with pytest.raises(ValueError, match=r"second-order.*kernel=False"):
        jax.grad(lambda x: jax.grad(f)(x).sum())(xs)
    g = lambda x: jr.scan(cell, params, x, kernel=False)[1].sum()
    jax.jvp(g, (xs,), (xs,))  # the XLA path has them


def test_without_the_library_everything_runs_on_xla(monkeypatch):
    monkeypatch.setattr(_library, "_load", lambda: (None, "the kernel library was not built: test"))
    assert not jr.kernels.available()
    assert "not built" in jr.kernels.status().reason
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(31))
    xs = jnp.ones((2, 3, 3))
    text = str(jax.make_jaxpr(lambda p: jr.scan(cell, p, xs)[1])(params))
    assert "jaxrnn_lstm_forward" not in text
    with pytest.raises(ValueError, match=r"kernel=True.*not built"):
        jr.scan(cell, params, xs, kernel=True)


def test_a_library_from_other_sources_is_refused():
    """A library whose calling convention differs from _ops.py's (an editable install not
    rebuilt) is not loaded: status says to rebuild, and everything runs on XLA."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        import jaxrnn as jr
        from jaxrnn.kernels import _library, _ops
        _library.ABI += 1
        status = jr.kernels.status()
        assert not status.available and "rebuild" in status.reason, status
        cell = jr.lstm(3, 4)
        params = cell.init(jax.random.key(0))
        text = str(jax.make_jaxpr(lambda p: jr.scan(cell, p, jnp.ones((2, 3, 3)))[1])(params))
        assert "jaxrnn_lstm_forward" not in text
        print("ok")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


def test_build_without_a_compiler_succeeds(tmp_path):
    """``setup.py build_ext`` with no working compiler: a warning, no library, exit code 0."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "jaxrnn" / "kernels" / "_src", src / "jaxrnn" / "kernels" / "_src")
    shutil.copy(ROOT / "setup.py", src / "setup.py")
    (src / "jaxrnn" / "__init__.py").write_text("")
    (src / "jaxrnn" / "kernels" / "__init__.py").write_text("")
    env = dict(os.environ, CC="/nonexistent/cc", CXX="/nonexistent/c++", LDSHARED="/nonexistent/ld")
    run = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert not list((src / "jaxrnn" / "kernels").glob("_rnn*.so"))
    assert 'building extension "jaxrnn.kernels._rnn" failed' in run.stderr


def test_under_a_sharded_batch(tmp_path):
    """Two virtual devices, the batch sharded by jr.train.data_mesh: the same result."""
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np, jaxrnn as jr
        from jax.sharding import NamedSharding, PartitionSpec as P
        mesh = jr.train.data_mesh()
        cell = jr.lstm(3, 8)
        params = cell.init(jax.random.key(0))
        xs = jax.random.normal(jax.random.key(1), (4, 5, 3))
        xs_sharded = jax.device_put(xs, NamedSharding(mesh, P(mesh.axis_names[0])))
        f = jax.jit(lambda p, x: jr.scan(cell, p, x)[1])
        g = jax.jit(jax.grad(lambda p, x: jr.scan(cell, p, x)[1].sum()))
        ref = jr.scan(cell, params, xs, kernel=False)[1]
        np.testing.assert_allclose(f(params, xs_sharded), ref, rtol=1e-5, atol=1e-6)
        ref_g = jax.grad(lambda p: jr.scan(cell, p, xs, kernel=False)[1].sum())(params)
        for a, b in zip(jax.tree.leaves(g(params, xs_sharded)), jax.tree.leaves(ref_g)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        print("ok")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_kernels_under_address_sanitizer(tmp_path):
    """The C++ kernels through every configuration under AddressSanitizer and UBSan."""
    src = ROOT / "jaxrnn" / "kernels" / "_src"
    exe = tmp_path / "asan_driver"
    sources = [ROOT / "tests" / "native" / "asan_driver.cc"]
    sources += [
        src / f for f in ("rnn_avx512.cc", "rnn_avx512bf16.cc", "rnn_amx.cc", "rnn_avx2.cc")
    ]
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    build = subprocess.run(
        ["g++", *flags, "-std=c++17", f"-I{src}", *map(str, sources), "-o", str(exe), "-lpthread"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(
        [str(exe)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"),
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    assert "no error" in run.stdout and "configurations" in run.stdout
