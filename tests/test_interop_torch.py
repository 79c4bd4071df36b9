"""jaxrnn.interop against PyTorch: torch.nn.RNN/GRU/LSTM are the reference.

Every check runs the torch module itself (outputs, final states, packed sequences, autograd
gradients) and compares with the converted jaxrnn layer; round trips compare weights exactly.
"""

from __future__ import annotations

import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import interop

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# torch warns that oneDNN lacks projected LSTMs and falls back to its own kernel: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

I, H, P, B, T = 3, 4, 2, 3, 5  # noqa: E741 (input, hidden, projection, batch, time)
LENGTHS = np.array([5, 2, 4])
RTOL, ATOL = 1e-4, 1e-5
KINDS = ["rnn_tanh", "rnn_relu", "gru", "lstm", "lstm_proj"]

# Every torch constructor option: kind (with proj_size for LSTM) x num_layers x bidirectional
# x bias x batch_first.
GRID = list(itertools.product(KINDS, (1, 2), (False, True), (True, False), (True, False)))


def _ids(config):
    kind, layers, bidir, bias, batch_first = config
    return (
        f"{kind}-L{layers}-{'bi' if bidir else 'uni'}-{'bias' if bias else 'nobias'}"
        f"-{'bf' if batch_first else 'tf'}"
    )


def make_torch(kind, num_layers=1, bidirectional=False, bias=True, batch_first=True, **kw):
    """A torch module with non-default random weights (every bias nonzero)."""
    opts = dict(
        input_size=I,
        hidden_size=H,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        **kw,
    )
    if kind.startswith("rnn"):
        module = torch.nn.RNN(nonlinearity=kind[4:], **opts)
    elif kind == "gru":
        module = torch.nn.GRU(**opts)
    else:
        module = torch.nn.LSTM(proj_size=P if kind == "lstm_proj" else 0, **opts)
    seed = zlib.crc32(f"{kind}-{num_layers}-{bidirectional}-{bias}".encode())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def initial_state(module, rng, batch=(B,)):
    rows = module.num_layers * (2 if module.bidirectional else 1)
    h0 = rng.normal(size=(rows, *batch, module.proj_size or H)).astype(np.float32)
    if module.mode != "LSTM":
        return (h0,)
    return h0, rng.normal(size=(rows, *batch, H)).astype(np.float32)


def inputs(module, rng, lengths=None):
    shape = (B, T, I) if module.batch_first else (T, B, I)
    xs = rng.normal(size=shape).astype(np.float32)
    if lengths is not None:  # NaN padding: neither side may read it
        pad = np.arange(T)[None, :] >= lengths[:, None]  # (B, T)
        xs[pad if module.batch_first else pad.T] = np.nan
    return xs


def run_torch(module, xs, state=None, lengths=None):
    """``output`` (zero-padded when packed) and ``h_n`` or ``(h_n, c_n)`` as torch tensors."""
    x = xs if isinstance(xs, torch.Tensor) else torch.from_numpy(np.array(xs))
    hx = None
    if state is not None:
        state = tuple(torch.as_tensor(s) for s in state)
        hx = state[0] if len(state) == 1 else state
    if lengths is not None:
        x = pack_padded_sequence(
            x, torch.from_numpy(lengths), batch_first=module.batch_first, enforce_sorted=False
        )
    out, state_n = module(x, hx)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    return out, state_n


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def assert_close(jax_value, torch_value, rtol=RTOL, atol=ATOL, what=""):
    expected = (
        torch_value.detach().numpy() if isinstance(torch_value, torch.Tensor) else torch_value
    )
    np.testing.assert_allclose(np.asarray(jax_value), expected, rtol=rtol, atol=atol, err_msg=what)


# XLA compilation dominates these tests' runtime: compile each distinct layer function once
# (layers from modules that differ only in `bias` are the same function, so share it), with
# cheap XLA optimisation settings (the numerics stay float32 throughout).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_COMPILED = {}


def _compiled(what, lay, make):
    key = (what, lay.config)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(make(lay), compiler_options=FAST_COMPILE)
    return _COMPILED[key]


def _make_run(lay):
    def run(params, xs, carry, lengths):
        carry, ys = lay.apply(params, xs, carry, lengths=lengths)
        return ys, as_tuple(interop.torch_state(carry))

    return run


def jax_run(lay, params, xs, state=None, lengths=None):
    """``(ys, (h_n[, c_n]))`` of the jaxrnn layer, with a torch-style initial state."""
    carry = None if state is None else interop.carry_from_torch(lay, *state)
    lengths = None if lengths is None else jnp.asarray(lengths)
    return _compiled("run", lay, _make_run)(params, jnp.asarray(xs), carry, lengths)


# --------------------------------------------------------------------------------------------
# Forward parity.


@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_forward_parity(config):
    module = make_torch(*config)
    lay, params = interop.from_torch(module)
    rng = np.random.default_rng(0)
    xs = inputs(module, rng)
    state = initial_state(module, rng)
    with torch.no_grad():
        out, st_n = run_torch(module, xs, state)
    ys, mine = jax_run(lay, params, xs, state)
    assert ys.shape == tuple(out.shape)
    assert_close(ys, out, what="output")
    assert len(mine) == len(as_tuple(st_n))
    for a, b, name in zip(mine, as_tuple(st_n), ("h_n", "c_n"), strict=False):
        assert a.shape == tuple(b.shape)
        assert_close(a, b, what=name)


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_default_initial_state_is_torch_zeros(kind):
    module = make_torch(kind, 2, True, True, False)
    lay, params = interop.from_torch(module)
    xs = inputs(module, np.random.default_rng(9))
    with torch.no_grad():
        out, st_n = run_torch(module, xs)  # hx=None
    ys, st = jax_run(lay, params, xs)  # carry=None
    assert_close(ys, out)
    for a, b in zip(st, as_tuple(st_n), strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_lengths_parity(kind, batch_first):
    """lengths= equals pack_padded_sequence(enforce_sorted=False) + zero padding, in both
    directions of a two-layer bidirectional module."""
    module = make_torch(kind, 2, True, True, batch_first)
    lay, params = interop.from_torch(module)
    rng = np.random.default_rng(1)
    xs = inputs(module, rng, LENGTHS)
    state = initial_state(module, rng)
    with torch.no_grad():
        out, st_n = run_torch(module, xs, state, LENGTHS)
    ys, mine = jax_run(lay, params, xs, state, LENGTHS)
    assert_close(ys, out, what="output")
    for a, b in zip(mine, as_tuple(st_n), strict=True):
        assert_close(a, b, what="state")
    # Sanity of the comparison itself: padding is zero, not NaN.
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    assert not np.isnan(np.asarray(ys)).any()
    assert (np.asarray(ys)[pad if batch_first else pad.T] == 0).all()


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_unbatched_input_parity(kind):
    """A 2-D (time, features) input is unbatched in torch, and in jaxrnn (batch shape ())."""
    module = make_torch(kind, 2, True, True, True)
    lay, params = interop.from_torch(module)
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(T, I)).astype(np.float32)
    state = initial_state(module, rng, batch=())
    with torch.no_grad():
        out, st_n = run_torch(module, xs, state)
    ys, mine = jax_run(lay, params, xs, state)
    assert_close(ys, out)
    for a, b in zip(mine, as_tuple(st_n), strict=True):
        assert_close(a, b)


def test_float64_parity():
    module = make_torch("lstm_proj", 2, True, True, False).double()
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(T, B, I))
    with jax.enable_x64(True):
        lay, params = interop.from_torch(module)
        assert params[0].forward.w_ih.dtype == jnp.float64
        with torch.no_grad():
            out, (h_n, c_n) = run_torch(module, xs)
        ys, (h, c) = jax_run(lay, params, xs)
        assert ys.dtype == jnp.float64
        assert_close(ys, out, rtol=1e-12, atol=1e-12)
        assert_close(h, h_n, rtol=1e-12, atol=1e-12)
        assert_close(c, c_n, rtol=1e-12, atol=1e-12)
        assert interop.to_torch(lay, params).weight_ih_l0.dtype == torch.float64


# --------------------------------------------------------------------------------------------
# Gradients: jax.grad through the imported layer vs torch autograd, in torch's layout.


def jax_grads_in_torch_layout(module, grads):
    """Map jaxrnn gradients to torch parameter names (the chain rule through b = b_ih + b_hh
    gives both torch biases the gradient of b)."""
    out = {}
    D = 2 if module.bidirectional else 1
    for k in range(module.num_layers):
        for d in range(D):
            g = grads[k] if D == 1 else (grads[k].forward, grads[k].backward)[d]
            sfx = f"_l{k}" + ("_reverse" if d else "")
            out["weight_ih" + sfx] = np.asarray(g.w_ih).T
            out["weight_hh" + sfx] = np.asarray(g.w_hh).T
            if module.mode == "GRU":
                out["bias_ih" + sfx], out["bias_hh" + sfx] = np.asarray(g.b_ih), np.asarray(g.b_hh)
            else:
                out["bias_ih" + sfx] = out["bias_hh" + sfx] = np.asarray(g.b)
            if module.proj_size:
                out["weight_hr" + sfx] = np.asarray(g.w_proj).T
    return out


def _make_loss_grad(lay):
    def loss(params, xs, state, lengths):
        carry = interop.carry_from_torch(lay, *state)
        carry, ys = lay.apply(params, xs, carry, lengths=lengths)
        st = as_tuple(interop.torch_state(carry))
        return jnp.sum(ys**2) + sum(jnp.sum(s**2) for s in st)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))


def assert_grad_close(jax_value, torch_value, what):
    """rtol on each element, atol relative to the gradient's largest entry (float32 sums of
    terms of that size cannot be more exact)."""
    expected = np.asarray(torch_value)
    scale = max(1.0, float(np.abs(expected).max()))
    assert_close(jax_value, expected, atol=ATOL * scale, what=what)


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first,packed",
    [(2, True, True, True), (1, False, False, False)],
    ids=["L2-bi-bf-packed", "L1-uni-tf-full"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_torch_autograd(kind, layers, bidirectional, batch_first, packed):
    """d(sum of squares of output and final states) w.r.t. weights, inputs, initial state."""
    module = make_torch(kind, layers, bidirectional, True, batch_first)
    lay, params = interop.from_torch(module)
    rng = np.random.default_rng(4)
    lengths = LENGTHS if packed else None
    xs = inputs(module, rng, lengths)
    state = initial_state(module, rng)

    x_t = torch.from_numpy(xs).requires_grad_(True)
    st_t = tuple(torch.from_numpy(s).requires_grad_(True) for s in state)
    out, st_n = run_torch(module, x_t, st_t, lengths)
    loss = (out**2).sum() + sum((s**2).sum() for s in as_tuple(st_n))
    loss.backward()

    value, (g_params, g_xs, g_state) = _compiled("grad", lay, _make_loss_grad)(
        params,
        jnp.asarray(xs),
        tuple(jnp.asarray(s) for s in state),
        None if lengths is None else jnp.asarray(lengths),
    )
    assert_close(value, loss.detach().numpy(), what="loss")
    mine = jax_grads_in_torch_layout(module, g_params)
    theirs = dict(module.named_parameters())
    assert set(mine) == set(theirs)
    for name, g in mine.items():
        assert_grad_close(g, theirs[name].grad, what=name)
    torch_g_xs = np.nan_to_num(x_t.grad.numpy())  # torch never touches the NaN padding
    assert_grad_close(g_xs, torch_g_xs, what="d loss / d xs")
    for g, s in zip(g_state, st_t, strict=True):
        assert_grad_close(g, s.grad, what="d loss / d initial state")


# --------------------------------------------------------------------------------------------
# Round trips and export.


def _torch_out(module, xs):
    module.eval()
    with torch.no_grad():
        return run_torch(module, xs)


@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_round_trips(config):
    module = make_torch(*config)
    bias = config[3]
    lay, params = interop.from_torch(module)
    back = interop.to_torch(lay, params, bias=bias)

    # torch -> jaxrnn -> torch: same module options, same tensors; where jaxrnn keeps one
    # bias, bias_ih holds the (float32) sum and bias_hh zeros.
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first"):
        assert getattr(back, attr) == getattr(module, attr)
    assert (back.bidirectional, back.proj_size, back.dropout) == (
        module.bidirectional,
        module.proj_size,
        module.dropout,
    )
    original = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    returned = {k: v.detach().numpy() for k, v in back.state_dict().items()}
    assert set(original) == set(returned)
    for name, value in original.items():
        if name.startswith("bias") and module.mode != "GRU":
            other = name.replace("_ih", "_hh") if "_ih" in name else name.replace("_hh", "_ih")
            summed = value + original[other]
            expect = summed if name.startswith("bias_ih") else np.zeros_like(value)
            np.testing.assert_array_equal(returned[name], expect, err_msg=name)
        else:
            np.testing.assert_array_equal(returned[name], value, err_msg=name)

    rng = np.random.default_rng(5)
    xs = inputs(module, rng)
    (out, st), (out2, st2) = _torch_out(module, xs), _torch_out(back, xs)
    np.testing.assert_allclose(out2.numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(as_tuple(st2), as_tuple(st), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)

    # jaxrnn -> torch -> jaxrnn: bit for bit, same layer configuration.
    lay2, params2 = interop.from_torch(back)
    assert lay2.config == lay.config
    leaves, tree = jax.tree.flatten(params)
    leaves2, tree2 = jax.tree.flatten(params2)
    assert tree == tree2
    for a, b in zip(leaves, leaves2, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _random_params(lay, seed):
    """Random params of ``lay``'s structure (every bias nonzero), drawn without compiling."""
    shapes = jax.eval_shape(lay.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape), dtype=s.dtype), shapes
    )


NATIVE = {
    "rnn-lstm-proj-bi-timemajor": lambda: jr.rnn(
        jr.lstm, I, H, num_layers=2, bidirectional=True, time_major=True, proj_size=P
    ),
    "rnn-relu": lambda: jr.rnn(jr.simple_rnn, I, H, num_layers=2, activation=jax.nn.relu),
    "stack-gru": lambda: jr.stack(
        [jr.layer(jr.gru(I, H, reset_after=True)), jr.layer(jr.gru(H, H, reset_after=True))]
    ),
    "bidirectional-tanh": lambda: jr.bidirectional(jr.simple_rnn(I, H)),
    "layer-lstm": lambda: jr.layer(jr.lstm(I, H)),
    "cell-gru": lambda: jr.gru(I, H, reset_after=True),
}


@pytest.mark.parametrize("name", list(NATIVE))
def test_to_torch_from_native_layers(name):
    """Layers built in jaxrnn (every supported wrapper, and a bare cell) export exactly."""
    lay = NATIVE[name]()
    params = _random_params(lay, 1)
    module = interop.to_torch(lay, params)
    rng = np.random.default_rng(6)
    xs = inputs(module, rng)
    out, st_n = _torch_out(module, xs)
    if isinstance(lay, jr.Cell):
        scan = jax.jit(lambda p, xs: jr.scan(lay, p, xs), compiler_options=FAST_COMPILE)
        carry, ys = scan(params, jnp.asarray(xs))
        mine = as_tuple(interop.torch_state(carry))
    else:
        ys, mine = jax_run(lay, params, xs)
        # the carry converter reads torch's state back into the layer's own structure
        carry = interop.carry_from_torch(lay, *[s.numpy() for s in as_tuple(st_n)])
        assert jax.tree.structure(carry) == jax.tree.structure(lay.initial_carry((B,)))
    assert_close(ys, out, what="output")
    for a, b in zip(mine, as_tuple(st_n), strict=True):
        assert_close(a, b, what="state")


def test_dropout_is_carried_over():
    module = make_torch("lstm", 2, False, True, True, dropout=0.25)
    lay, params = interop.from_torch(module)
    assert dict(lay.config)["dropout"] == 0.25
    xs = inputs(module, np.random.default_rng(7))
    out, _ = _torch_out(module, xs)  # eval mode: no dropout
    ys, _ = jax_run(lay, params, xs)  # no key: no dropout
    assert_close(ys, out)
    apply = jax.jit(lambda p, xs, key: lay.apply(p, xs, key=key)[1], compiler_options=FAST_COMPILE)
    ys_drop = apply(params, jnp.asarray(xs), jax.random.key(0))
    assert not np.allclose(np.asarray(ys_drop), np.asarray(ys))
    assert interop.to_torch(lay, params).dropout == 0.25


def test_carry_converters_invert_each_other():
    lay = jr.rnn(jr.lstm, I, H, num_layers=2, bidirectional=True, proj_size=P)
    rng = np.random.default_rng(8)
    h_0 = rng.normal(size=(4, B, P)).astype(np.float32)
    c_0 = rng.normal(size=(4, B, H)).astype(np.float32)
    carry = interop.carry_from_torch(lay, torch.from_numpy(h_0), torch.from_numpy(c_0))
    assert isinstance(carry[1], jr.Bidirectional)
    np.testing.assert_array_equal(np.asarray(carry[1].backward.h), h_0[3])  # row 2k + d
    np.testing.assert_array_equal(np.asarray(carry[0].backward.c), c_0[1])
    h, c = interop.torch_state(carry)
    np.testing.assert_array_equal(np.asarray(h), h_0)
    np.testing.assert_array_equal(np.asarray(c), c_0)


# --------------------------------------------------------------------------------------------
# What torch cannot represent, and bad input.


def _custom_cell():
    return jr.Cell(
        init=lambda key: jnp.zeros(()),
        apply=lambda p, h, x: (h, h),
        initial_carry=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros((*batch_shape, H)),
        input_size=I,
        output_size=H,
    )


UNREPRESENTABLE = {
    "gru-reset-before": (lambda: jr.rnn(jr.gru, I, H), "reset_after=False"),
    "peephole": (lambda: jr.rnn(jr.lstm, I, H, peephole=True), "peephole"),
    "coupled": (lambda: jr.rnn(jr.lstm, I, H, coupled=True), "coupled"),
    "sigmoid-rnn": (
        lambda: jr.rnn(jr.simple_rnn, I, H, activation=jax.nn.sigmoid),
        "sigmoid.*tanh.*relu",
    ),
    "jordan": (lambda: jr.layer(jr.jordan_rnn(I, H, 2)), "jordan_rnn"),
    "reverse-only": (lambda: jr.layer(jr.gru(I, H, reset_after=True), reverse=True), "reverse"),
    "mixed-directions": (
        lambda: jr.stack(
            [
                jr.layer(jr.gru(I, H, reset_after=True)),
                jr.bidirectional(jr.gru(H, H, reset_after=True)),
            ]
        ),
        "mixes unidirectional and bidirectional",
    ),
    "mixed-kinds": (
        lambda: jr.stack([jr.layer(jr.gru(I, H, reset_after=True)), jr.layer(jr.lstm(H, H))]),
        "kind differs",
    ),
    "mixed-hidden": (
        lambda: jr.stack([jr.layer(jr.lstm(I, H)), jr.layer(jr.lstm(H, H + 1))]),
        "hidden_size",
    ),
    "custom-cell": (lambda: jr.layer(_custom_cell()), "custom cell"),
}


@pytest.mark.parametrize("name", list(UNREPRESENTABLE))
def test_to_torch_refuses_what_torch_cannot_represent(name):
    build, match = UNREPRESENTABLE[name]
    lay = build()
    with pytest.raises(ValueError, match=match):
        interop.to_torch(lay, _random_params(lay, 0))


def test_bias_false_needs_zero_biases():
    lay = jr.rnn(jr.lstm, I, H)
    params = _random_params(lay, 0)
    with pytest.raises(ValueError, match=r"bias=False.*params\[0\]\.b is nonzero"):
        interop.to_torch(lay, params, bias=False)
    zero = (params[0]._replace(b=jnp.zeros_like(params[0].b)),)
    module = interop.to_torch(lay, zero, bias=False)
    assert not module.bias and not hasattr(module, "bias_ih_l0")
    w = module.weight_ih_l0.detach().numpy()
    np.testing.assert_array_equal(w, np.asarray(params[0].w_ih).T)


def test_bad_params_and_states_are_reported():
    lay = jr.rnn(jr.gru, I, H, num_layers=2, bidirectional=True, reset_after=True)
    params = _random_params(lay, 0)
    with pytest.raises(TypeError, match="one entry per layer"):
        interop.to_torch(lay, params[:1])
    with pytest.raises(TypeError, match=r"params\[1\]: expected a jr.Bidirectional"):
        interop.to_torch(lay, (params[0], params[1].forward))
    bad = (params[0], params[1]._replace(forward=params[1].forward._replace(w_hh=jnp.ones((3, 3)))))
    with pytest.raises(ValueError, match=r"params\[1\]\.forward\.w_hh: expected shape \(4, 12\)"):
        interop.to_torch(lay, bad)
    with pytest.raises(ValueError, match=r"h_0: expected shape \(4, \*batch, 4\)"):
        interop.carry_from_torch(lay, np.zeros((2, B, H), np.float32))
    with pytest.raises(ValueError, match="only an LSTM"):
        interop.carry_from_torch(lay, np.zeros((4, B, H), np.float32), np.zeros((4, B, H)))
    lstm_lay = jr.rnn(jr.lstm, I, H)
    with pytest.raises(ValueError, match="needs both h_0 and c_0"):
        interop.carry_from_torch(lstm_lay, np.zeros((1, B, H), np.float32))
    with pytest.raises(TypeError, match=r"expected torch\.nn\.RNN, GRU or LSTM"):
        interop.from_torch(torch.nn.Linear(3, 4))
