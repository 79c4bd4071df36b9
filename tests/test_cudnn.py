"""Tests of :mod:`jaxrnn.cudnn` on the CPU, against ``jax.experimental.rnn.lstm_ref``.

The cuDNN kernel needs a GPU, so the proofs go in two steps. First, the packing: a flat vector
from :func:`pack_lstm_weights`, read back by ``jax.experimental.rnn.unpack_lstm_weights`` and
run by ``jax.experimental.rnn.lstm_ref`` (the pure-JAX reference JAX's own GPU tests check the
kernel against), computes what ``jr.rnn(jr.lstm, ...).apply`` computes. Second, everything
around the kernel: :func:`apply_cudnn` with the kernel's forward and backward passes replaced
by ``lstm_ref`` and its VJP (the ``ref_kernel`` fixture) returns what ``layer.apply`` returns,
values and gradients, including zero lengths, extra batch dims, ``time_major`` and ``vmap``.
What is left to a GPU run: that the kernel equals ``lstm_ref`` (JAX's test) and its speed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close
from jax.experimental import rnn as jrnn

import jaxrnn as jr
from jaxrnn.layers import _cudnn as cudnn  # the implementation: its backend is patched

I, H, T, B = 3, 5, 6, 4  # noqa: E741  (I != H: the layer-0 and upper-layer shapes differ)
LENGTHS = np.array([T, 0, 3, 1], np.int32)  # full, empty, partial, one step
TOL = dict(rtol=2e-5, atol=2e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)
SHAPES = [(n, bi) for n in (1, 2, 3) for bi in (False, True)]
SHAPE_IDS = [f"{n}-layer{'-bidirectional' if bi else ''}" for n, bi in SHAPES]


def random_like(shapes, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes
    )


def random_params(net, seed):
    return random_like(jax.eval_shape(net.init, jax.random.key(0)), seed)


def random_carry(net, batch_shape, seed):
    return random_like(jax.eval_shape(lambda: net.initial_carry(batch_shape)), seed)


def random_xs(seed, shape=(B, T, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def pseudo_layers(carry):
    """``(h0, c0)`` of shape ``(L * D, batch, H)`` from a jr.rnn carry (cuDNN's order)."""
    cells = [
        c for entry in carry for c in (entry if isinstance(entry, jr.Bidirectional) else [entry])
    ]
    return jnp.stack([c.h for c in cells]), jnp.stack([c.c for c in cells])


def lstm_ref(x, h0, c0, weights, lengths, sizes):
    """``jax.experimental.rnn.lstm_ref`` on a flat vector, read by JAX's own unpacking."""
    input_size, hidden_size, num_layers, bidirectional = sizes
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    return jrnn.lstm_ref(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size, num_layers, 0.0,
        bidirectional,
    )  # fmt: skip


KERNEL_LENGTHS: list[np.ndarray] = []  # lengths the reference kernel ran with


@pytest.fixture
def ref_kernel(monkeypatch):
    """Replace the kernel by ``lstm_ref`` (forward) and its VJP (backward); count the calls."""
    calls = []

    def forward(x, h0, c0, w, lengths, sizes):
        calls.append("forward")
        jax.debug.callback(lambda n: KERNEL_LENGTHS.append(np.asarray(n)), lengths)
        return lstm_ref(x, h0, c0, w, lengths, sizes), (x, h0, c0, w, lengths)

    def backward(sizes, residuals, cotangents):
        calls.append("backward")
        x, h0, c0, w, lengths = residuals
        run = lambda x, h0, c0, w: lstm_ref(x, h0, c0, w, lengths, sizes)
        return jax.vjp(run, x, h0, c0, w)[1](cotangents)

    monkeypatch.setattr(cudnn, "_backend_forward", forward)
    monkeypatch.setattr(cudnn, "_backend_backward", backward)
    return calls


@pytest.fixture
def fake_gpu(monkeypatch, ref_kernel):
    """Make the dispatch believe it runs on a CUDA GPU, with the reference kernel."""
    monkeypatch.setattr(cudnn, "_backend_reason", lambda: None)
    return ref_kernel


def both_paths(net, params, xs, carry, lengths):
    """``(apply_cudnn(...), net.apply(...))``, compiled together."""

    @jax.jit
    def run(params, xs, carry, lengths):
        got = cudnn.apply_cudnn(net, params, xs, carry, lengths)
        return got, net.apply(params, xs, carry, lengths=lengths)

    return run(params, xs, carry, lengths)


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))


# --------------------------------------------------------------------------------------------
# Packing.


@pytest.mark.parametrize(("num_layers", "bidirectional"), SHAPES, ids=SHAPE_IDS)
def test_pack_round_trip_is_exact(num_layers, bidirectional):
    net = jr.rnn(jr.lstm, I, H, num_layers=num_layers, bidirectional=bidirectional)
    params = random_params(net, 0)
    flat = cudnn.pack_lstm_weights(params)
    assert flat.shape == (jrnn.get_num_params_in_lstm(I, H, num_layers, bidirectional),)
    assert flat.dtype == jnp.float32
    back = cudnn.unpack_lstm_weights(flat, I, H, num_layers, bidirectional)
    assert_bitwise_equal(back, params)
    # And a vector round-trips through params when its b_hh is zero.
    assert_bitwise_equal(cudnn.pack_lstm_weights(back), flat)


def test_pack_layout_by_hand():
    """Layer 0 of a 2-layer bidirectional stack: the pieces sit where JAX's unpacking reads."""
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    params = random_params(net, 1)
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        cudnn.pack_lstm_weights(params), I, H, 2, True
    )
    for layer in range(2):
        for d, p in enumerate(params[layer]):
            k = 2 * layer + d  # pseudo-layer: forward, backward of each layer in turn
            np.testing.assert_array_equal(w_ih[k], p.w_ih.T)
            np.testing.assert_array_equal(w_hh[k], p.w_hh.T)
            np.testing.assert_array_equal(b_ih[k], p.b)
            np.testing.assert_array_equal(b_hh[k], np.zeros(4 * H, np.float32))
            # Gate block i, f, g, o of jaxrnn is row block i, f, g, o of cuDNN's W_ih.
            np.testing.assert_array_equal(w_ih[k][H : 2 * H], p.w_ih[:, H : 2 * H].T)


def test_unpack_adds_both_biases():
    flat = jrnn.init_lstm_weight(jax.random.key(2), I, H, 2, True)  # b_hh != 0
    params = cudnn.unpack_lstm_weights(flat, I, H, 2, True)
    _, _, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, I, H, 2, True)
    np.testing.assert_allclose(params[1].backward.b, b_ih[3] + b_hh[3], rtol=1e-7)


def test_pack_and_unpack_errors():
    with pytest.raises(ValueError, match="expected shape"):
        cudnn.unpack_lstm_weights(jnp.zeros(7), I, H, 1, False)
    with pytest.raises(TypeError, match="LSTMParams"):
        cudnn.pack_lstm_weights((random_params(jr.gru(I, H), 0),))
    with pytest.raises(ValueError, match="peephole or projection"):
        cudnn.pack_lstm_weights((random_params(jr.lstm(I, H, peephole=True), 0),))
    p0, p1 = random_params(jr.rnn(jr.lstm, I, H, num_layers=2), 0)
    with pytest.raises(ValueError, match=r"params\[1\].w_ih: expected shape"):
        cudnn.pack_lstm_weights((p0, p1._replace(w_ih=p1.w_ih[:2])))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), SHAPES, ids=SHAPE_IDS)
def test_packed_weights_run_by_lstm_ref_match_rnn(num_layers, bidirectional, with_lengths):
    net = jr.rnn(jr.lstm, I, H, num_layers=num_layers, bidirectional=bidirectional)
    params, carry, xs = random_params(net, 3), random_carry(net, (B,), 4), random_xs(5)
    lengths = LENGTHS if with_lengths else None
    expected_carry, expected_ys = jax.jit(net.apply)(params, xs, carry, lengths=lengths)

    h0, c0 = pseudo_layers(carry)
    run_lengths = jnp.asarray(LENGTHS if with_lengths else np.full(B, T, np.int32))
    sizes = (I, H, num_layers, bidirectional)
    ys, h_n, c_n = lstm_ref(xs, h0, c0, cudnn.pack_lstm_weights(params), run_lengths, sizes)

    assert_trees_close(ys, expected_ys, **TOL)
    # lstm_ref's final state of a zero-length row is undefined (it indexes step -1), which is
    # why apply_cudnn never hands the kernel a zero length; compare the other rows.
    rows = np.asarray(run_lengths) > 0
    h_exp, c_exp = pseudo_layers(expected_carry)
    assert_trees_close((h_n[:, rows], c_n[:, rows]), (h_exp[:, rows], c_exp[:, rows]), **TOL)


# --------------------------------------------------------------------------------------------
# apply_cudnn around the (reference) kernel.


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), SHAPES, ids=SHAPE_IDS)
def test_apply_cudnn_matches_apply(ref_kernel, num_layers, bidirectional, with_lengths):
    net = jr.rnn(jr.lstm, I, H, num_layers=num_layers, bidirectional=bidirectional)
    params, carry, xs = random_params(net, 6), random_carry(net, (B,), 7), random_xs(8)
    lengths = LENGTHS if with_lengths else None
    for initial in (carry, None):
        got, expected = both_paths(net, params, xs, initial, lengths)
        assert_trees_close(got, expected, **TOL)
    assert "forward" in ref_kernel


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)], ids=str)
def test_apply_cudnn_gradients_match(ref_kernel, num_layers, bidirectional):
    """Gradients w.r.t. params, inputs and initial carry, zero lengths included."""
    net = jr.rnn(jr.lstm, I, H, num_layers=num_layers, bidirectional=bidirectional)
    params, carry, xs = random_params(net, 9), random_carry(net, (B,), 10), random_xs(11)
    cotangent = random_xs(12, (B, T, net.output_size))

    def loss(apply, params, xs, carry):
        (final, ys) = apply(params, xs, carry)
        h, c = pseudo_layers(final)
        return jnp.sum(ys * cotangent) + jnp.sum(jnp.sin(h)) + jnp.sum(c * c)

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    on_cudnn = functools.partial(cudnn.apply_cudnn, net, lengths=LENGTHS)
    on_scan = functools.partial(net.apply, lengths=LENGTHS)
    got, expected = grad(on_cudnn, params, xs, carry), grad(on_scan, params, xs, carry)
    assert_trees_close(got, expected, **GRAD_TOL)
    assert "backward" in ref_kernel
    # The zero-length row: no gradient reaches its inputs; its carry passes straight through.
    assert not np.any(np.asarray(got[1])[1])


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("batch_shape", [(), (B,), (2, B)], ids=str)
def test_apply_cudnn_batch_shapes_and_time_major(ref_kernel, batch_shape, time_major):
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, time_major=time_major)
    params = random_params(net, 13)
    carry = random_carry(net, batch_shape, 14)
    xs = random_xs(15, (*batch_shape, T, I))
    lengths = np.resize(LENGTHS, batch_shape).astype(np.int32)
    if time_major:
        xs = np.moveaxis(xs, -2, 0)
    for initial, lens in ((carry, lengths), (None, None)):
        got, expected = both_paths(net, params, xs, initial, lens)
        assert got[1].shape == expected[1].shape
        assert_trees_close(got, expected, **TOL)


def test_apply_cudnn_zero_length_only_and_nan_padding(ref_kernel):
    """Padding is never read: NaN there changes neither values nor gradients."""
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    params, carry, xs = random_params(net, 16), random_carry(net, (B,), 17), random_xs(18)
    steps = np.arange(T)[None, :, None]
    xs_nan = np.where(steps < LENGTHS[:, None, None], xs, np.nan).astype(np.float32)

    def loss(apply, params):
        final, ys = apply(params, xs_nan, carry)
        return jnp.sum(ys) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

    on_cudnn = functools.partial(cudnn.apply_cudnn, net, lengths=LENGTHS)
    on_scan = functools.partial(net.apply, lengths=LENGTHS)
    KERNEL_LENGTHS.clear()
    got, expected = both_paths(net, params, xs_nan, carry, LENGTHS)
    assert KERNEL_LENGTHS and min(n.min() for n in KERNEL_LENGTHS) >= 1  # cuDNN rejects 0
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(got))
    assert_trees_close(got, expected, **TOL)
    grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)
    grads = grad(on_cudnn, params)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))
    assert_trees_close(grads, grad(on_scan, params), **GRAD_TOL)

    # Every row empty: the carry comes back unchanged and the outputs are zeros.
    zeros = np.zeros(B, np.int32)
    final, ys = jax.jit(cudnn.apply_cudnn, static_argnums=0)(net, params, xs, carry, zeros)
    assert_trees_close(final, carry, rtol=0, atol=0)
    assert not np.any(np.asarray(ys))


def test_apply_cudnn_empty_batch_and_time(ref_kernel):
    net = jr.rnn(jr.lstm, I, H, num_layers=2)
    params = random_params(net, 19)
    for shape in [(0, T, I), (B, 0, I)]:
        got = cudnn.apply_cudnn(net, params, np.zeros(shape, np.float32))
        assert_trees_close(got, net.apply(params, np.zeros(shape, np.float32)), rtol=0, atol=0)


def test_apply_cudnn_under_vmap(ref_kernel):
    """No batching rule for the kernel: vmap runs it per mapped element, values and grads."""
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    params = random_params(net, 20)
    xs = random_xs(21, (2, B, T, I))
    lengths = np.stack([LENGTHS, LENGTHS[::-1]])

    def loss(apply, params, xs, lengths):
        return jnp.sum(apply(params, xs, None, lengths)[1] ** 2)

    on_cudnn = functools.partial(cudnn.apply_cudnn, net)
    on_scan = lambda params, xs, carry, lengths: net.apply(params, xs, carry, lengths=lengths)
    run = jax.jit(
        jax.vmap(lambda f, p, x, n: f(p, x, None, n), in_axes=(None, None, 0, 0)),
        static_argnums=0,
    )
    assert_trees_close(run(on_cudnn, params, xs, lengths), run(on_scan, params, xs, lengths), **TOL)
    per_example = jax.jit(
        jax.vmap(jax.grad(loss, argnums=1), in_axes=(None, None, 0, 0)), static_argnums=0
    )
    assert_trees_close(
        per_example(on_cudnn, params, xs, lengths),
        per_example(on_scan, params, xs, lengths),
        **GRAD_TOL,
    )
    # vmap over params too (an ensemble), under jit.
    ensemble = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    both = jax.jit(jax.vmap(lambda p, x, n: on_cudnn(p, x, None, n)))(ensemble, xs, lengths)
    expected = jax.jit(jax.vmap(lambda p, x, n: on_scan(p, x, None, n)))(ensemble, xs, lengths)
    assert_trees_close(both, expected, **TOL)


def test_apply_cudnn_input_errors(ref_kernel):
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    params, xs = random_params(net, 22), random_xs(23)
    with pytest.raises(ValueError, match="feature size"):
        cudnn.apply_cudnn(net, params, xs[..., :2])
    with pytest.raises(ValueError, match="at least 2 dims"):
        cudnn.apply_cudnn(net, params, xs[0, 0])
    with pytest.raises(TypeError, match="float32"):
        cudnn.apply_cudnn(net, params, xs.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="layer entries"):
        cudnn.apply_cudnn(net, params, xs, (None,))
    with pytest.raises(TypeError, match="Bidirectional"):
        cudnn.apply_cudnn(net, params, xs, (None, jr.LSTMCarry(xs[:, 0], xs[:, 0])))
    with pytest.raises(ValueError, match=r"lengths: expected shape"):
        cudnn.apply_cudnn(net, params, xs, None, LENGTHS[:2])
    with pytest.raises(ValueError, match="lie in"):
        cudnn.apply_cudnn(net, params, xs, None, LENGTHS + T)
    with pytest.raises(ValueError, match="sizes differ"):
        cudnn.apply_cudnn(net, params[:1], xs)
    with pytest.raises(ValueError, match="peephole"):
        cudnn.apply_cudnn(jr.rnn(jr.lstm, I, H, peephole=True), params, xs)


def test_real_kernel_call_traces(monkeypatch):
    """The calls of jax.experimental.rnn's forward and backward passes are well formed.

    Only traced (``eval_shape``): the kernel lowers on CUDA only, and its abstract evaluation
    asks jaxlib's CUDA plugin for the reserve-space size, stubbed here.
    """
    if jrnn.gpu_rnn is None:
        pytest.skip("jaxlib has no gpu_rnn module")
    monkeypatch.setattr(
        jrnn.gpu_rnn,
        "compute_rnn_workspace_reserve_space_sizes",
        lambda *args: (1024, 2048),
        raising=False,
    )
    net = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True)
    params, xs = random_params(net, 24), random_xs(25, (2, B, T, I))

    def loss(params, xs):
        final, ys = cudnn.apply_cudnn(net, params, xs, None, np.resize(LENGTHS, (2, B)))
        return jnp.sum(ys) + jnp.sum(final[1].backward.c)

    out = jax.eval_shape(lambda p, x: cudnn.apply_cudnn(net, p, x), params, xs)
    expected = jax.eval_shape(lambda p, x: net.apply(p, x), params, xs)
    assert jax.tree.structure(out) == jax.tree.structure(expected)
    assert [a.shape for a in jax.tree.leaves(out)] == [a.shape for a in jax.tree.leaves(expected)]
    grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1)), params, xs)
    assert jax.tree.map(lambda a: a.shape, grads) == jax.tree.map(jnp.shape, (params, xs))
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params, xs))
    assert "rnn_fwd" in jaxpr and "rnn_bwd" in jaxpr


# --------------------------------------------------------------------------------------------
# supports and the dispatch in jr.rnn.


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: jr.rnn(jr.lstm, I, H, peephole=True), "peephole"),
        (lambda: jr.rnn(jr.lstm, I, H, coupled=True), "coupled"),
        (lambda: jr.rnn(jr.lstm, I, H, proj_size=2), "proj_size"),
        (lambda: jr.rnn(jr.gru, I, H, reset_after=True), "gru"),
        (lambda: jr.rnn(jr.simple_rnn, I, H), "simple_rnn"),
        (lambda: jr.rnn(jr.lstm, I, H, dtype=jnp.bfloat16), "bfloat16"),
        (lambda: jr.stack([jr.layer(jr.lstm(I, H))]), "jr.rnn"),
        (lambda: jr.layer(jr.lstm(I, H)), "jr.rnn"),
    ],
    ids=["peephole", "coupled", "proj_size", "gru", "simple_rnn", "bf16", "stack", "layer"],
)
def test_supports_says_no(build, reason):
    ok, why = cudnn.supports(build())
    assert not ok
    assert reason in why


def test_supports_dropout_only_without_key():
    net = jr.rnn(jr.lstm, I, H, num_layers=2, dropout=0.3)
    assert cudnn.supports(net) == (True, "")
    ok, why = cudnn.supports(net, key=jax.random.key(0))
    assert not ok and "dropout" in why and "key" in why
    no_dropout = jr.rnn(jr.lstm, I, H, num_layers=2)
    assert cudnn.supports(no_dropout, key=jax.random.key(1)) == (True, "")


def test_supports_any_stack_shape():
    for num_layers, bidirectional in SHAPES:
        for time_major in (False, True):
            net = jr.rnn(
                jr.lstm, I, H, num_layers=num_layers, bidirectional=bidirectional,
                time_major=time_major, unroll=2, remat=True, forget_bias=0.0,
            )  # fmt: skip
            assert cudnn.supports(net) == (True, "")


def test_cudnn_true_on_cpu_raises():
    with pytest.raises(ValueError, match=r"cudnn=True.*not on a CUDA GPU"):
        jr.rnn(jr.lstm, I, H, cudnn=True)
    with pytest.raises(ValueError, match=r"cudnn=True.*gru"):
        jr.rnn(jr.gru, I, H, cudnn=True)
    for value in ("yes", 1, 0):  # 1 and 0 are not read as True and False (as kernel=)
        with pytest.raises(TypeError, match="cudnn: expected None, True or False"):
            jr.rnn(jr.lstm, I, H, cudnn=value)


def test_cudnn_none_on_cpu_takes_scan_path(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the cuDNN kernel was called on the CPU")

    monkeypatch.setattr(cudnn, "_backend_forward", boom)
    monkeypatch.setattr(cudnn, "_backend_backward", boom)
    # kernel=False: the native CPU kernels, which cudnn=None would otherwise reach here, have
    # no forward-mode rule either; this test is about the scan path.
    auto = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, kernel=False)
    never = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, cudnn=False, kernel=False)
    assert dict(auto.config)["cudnn"] is None and dict(never.config)["cudnn"] is False
    params, xs = random_params(auto, 26), random_xs(27)

    @functools.partial(jax.jit, static_argnums=0)
    def run(apply, params, xs):
        ys = lambda x: apply(params, x, lengths=LENGTHS)[1]
        return ys(xs), jax.jvp(ys, (xs,), (xs,))[1]  # forward mode works on the scan path

    assert_trees_close(run(auto.apply, params, xs), run(never.apply, params, xs), rtol=0, atol=0)


def test_dispatch_on_a_gpu(fake_gpu):
    """With the backend check passing, cudnn=None dispatches exactly when it should."""
    auto = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, dropout=0.3)
    never = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, dropout=0.3, cudnn=False)
    params, carry, xs = random_params(auto, 28), random_carry(auto, (B,), 29), random_xs(30)

    @functools.partial(jax.jit, static_argnums=0)
    def run(apply, params, key):
        def loss(params):
            out = apply(params, xs, carry, lengths=LENGTHS, key=key)
            return jnp.sum(jnp.tanh(out[1])), out

        return jax.value_and_grad(loss, has_aux=True)(params)  # (loss, (carry, ys)), grads

    got = run(auto.apply, params, None)
    assert fake_gpu == ["forward", "backward"]
    assert_trees_close(got, run(never.apply, params, None), **GRAD_TOL)

    # Dropout with a key: the scan path, with jaxrnn's dropout.
    fake_gpu.clear()
    got = run(auto.apply, params, jax.random.key(31))
    assert fake_gpu == []
    assert_trees_close(got, run(never.apply, params, jax.random.key(31)), rtol=0, atol=0)

    # Not float32 (a bf16 policy): the scan path.
    auto16 = jr.rnn(
        jr.lstm, I, H, num_layers=2, bidirectional=True, dropout=0.3, param_dtype=jnp.bfloat16
    )
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    jax.eval_shape(auto16.apply, bf16, xs.astype(jnp.bfloat16))
    assert fake_gpu == []

    # cudnn=True: dispatched, and an error where it cannot be.
    required = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, dropout=0.3, cudnn=True)
    jax.eval_shape(required.apply, params, xs)
    assert fake_gpu == ["forward"]
    with pytest.raises(ValueError, match=r"cudnn=True.*dropout"):
        jax.eval_shape(functools.partial(required.apply, key=jax.random.key(32)), params, xs)
    with pytest.raises(ValueError, match=r"cudnn=True.*float32"):
        required16 = jr.rnn(
            jr.lstm, I, H, num_layers=2, bidirectional=True, param_dtype=jnp.bfloat16, cudnn=True
        )
        jax.eval_shape(required16.apply, bf16, xs.astype(jnp.bfloat16))


def test_unsupported_layers_keep_the_plain_stack():
    """Layers cuDNN never runs are returned without the dispatching wrapper."""
    gru = jr.rnn(jr.gru, I, H, num_layers=2)
    plain = jr.rnn(jr.gru, I, H, num_layers=2, cudnn=False)
    assert gru.apply.__qualname__ == plain.apply.__qualname__
    lstm = jr.rnn(jr.lstm, I, H, num_layers=2)
    assert lstm.apply.__qualname__ != plain.apply.__qualname__
