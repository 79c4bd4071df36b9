"""The sLSTM cell (jaxrnn.slstm).

References: float64 NumPy loops of the paper's equations, once with the stabiliser and once
without (exact exponentials); they agree, and the cell agrees with both, so the stabiliser
changes nothing but the range of the stored numbers, which the long, large-gate test shows.
The recurrent matrices of the references are built as dense block-diagonal matrices, so they
also check the layout of ``w_hh``. When the official ``xlstm`` package is importable, the cell
is compared with its vanilla PyTorch sLSTM on the same weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr

IN, H, K, T = 3, 8, 2, 6
D = H // K


def log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def dense_recurrent(w_hh):
    """``(K, d, 4, d)`` -> the four ``(H, H)`` block-diagonal recurrent matrices."""
    k_heads, d, gates, _ = w_hh.shape
    R = np.zeros((gates, k_heads * d, k_heads * d))
    for k in range(k_heads):
        for g in range(gates):
            R[g, k * d : (k + 1) * d, k * d : (k + 1) * d] = w_hh[k, :, g, :]
    return R


def preactivations(p, h, x):
    """``i~, f~, z~, o~`` of the paper: ``x W_g + h R_g + b_g``."""
    R = dense_recurrent(np.asarray(p.w_hh, np.float64))
    W = np.split(np.asarray(p.w_ih, np.float64), 4, axis=-1)
    b = np.split(np.asarray(p.b, np.float64), 4)
    return [x @ W[g] + h @ R[g] + b[g] for g in range(4)]


def ref_unstabilised(p, xs, forget_gate):
    """Paper eqs. (8)-(14) with exact exponentials; state (h, c, n) from zeros. xs: (T, B, I)."""
    h = c = n = np.zeros((xs.shape[1], p.w_ih.shape[1] // 4))
    ys = []
    for x in xs:
        i_raw, f_raw, z_raw, o_raw = preactivations(p, h, x)
        i = np.exp(i_raw)
        f = np.exp(f_raw) if forget_gate == "exp" else np.exp(log_sigmoid(f_raw))
        c = f * c + i * np.tanh(z_raw)
        n = f * n + i
        h = 1 / (1 + np.exp(-o_raw)) * c / n
        ys.append(h)
    return np.stack(ys), (h, c, n)


def ref_stabilised(p, xs, forget_gate):
    """Paper eqs. (15)-(17) on top; m starts where n = 0 (the official rule). xs: (T, B, I)."""
    h = c = n = m = np.zeros((xs.shape[1], p.w_ih.shape[1] // 4))
    ys = []
    for x in xs:
        i_raw, f_raw, z_raw, o_raw = preactivations(p, h, x)
        log_f = f_raw if forget_gate == "exp" else log_sigmoid(f_raw)
        log_fm = np.where(n == 0, -np.inf, log_f + m)
        m = np.maximum(log_fm, i_raw)
        i, f = np.exp(i_raw - m), np.exp(log_fm - m)
        c = f * c + i * np.tanh(z_raw)
        n = f * n + i
        h = 1 / (1 + np.exp(-o_raw)) * c / n
        ys.append(h)
    return np.stack(ys), (h, c, n, m)


def random_params(seed, hidden=H, heads=K, dtype=np.float32, input_size=IN):
    """Random weights of every scale the cell meets (drawn in NumPy: no ``init`` to compile)."""
    rng = np.random.default_rng(seed)
    d = hidden // heads
    return jr.SLSTMParams(
        w_ih=jnp.asarray(rng.normal(size=(input_size, 4 * hidden)) / np.sqrt(input_size), dtype),
        w_hh=jnp.asarray(rng.normal(size=(heads, d, 4, d)) / np.sqrt(d), dtype),
        b=jnp.asarray(rng.normal(size=4 * hidden), dtype),
    )


@pytest.mark.parametrize(
    "forget_gate, batch_shape", [("sigmoid", (2,)), ("exp", (2,)), ("sigmoid", ())]
)
def test_scan_matches_stabilised_and_unstabilised_references(forget_gate, batch_shape):
    with jax.enable_x64(True):
        cell = jr.slstm(IN, H, num_heads=K, forget_gate=forget_gate, param_dtype=jnp.float64)
        params = random_params(1, dtype=np.float64)
        xs = jax.random.normal(jax.random.key(2), (*batch_shape, T, IN), jnp.float64)
        carry, ys = jr.scan(cell, params, xs)
    x = np.asarray(xs).reshape(-1, T, IN).transpose(1, 0, 2)  # (T, B, I)
    ys_u, (_, c_u, n_u) = ref_unstabilised(params, x, forget_gate)
    ys_s, (h_s, c_s, n_s, m_s) = ref_stabilised(params, x, forget_gate)
    # The stabiliser changes no output: the two references agree ...
    np.testing.assert_allclose(ys_s, ys_u, rtol=1e-12, atol=1e-13)
    # ... and stores c and n scaled by e^{-m}.
    np.testing.assert_allclose(c_s, c_u * np.exp(-m_s), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(n_s, n_u * np.exp(-m_s), rtol=1e-12)
    ys = np.asarray(ys).reshape(-1, T, H).transpose(1, 0, 2)
    np.testing.assert_allclose(ys, ys_u, rtol=1e-10, atol=1e-12)
    for got, want in zip(carry, (h_s, c_s, n_s, m_s), strict=True):
        np.testing.assert_allclose(np.asarray(got).reshape(-1, H), want, rtol=1e-10, atol=1e-12)


def test_long_sequence_with_large_gates_stays_finite_and_exact():
    """Exponential forget gates with log f ~ 4 for 64 steps: the unstabilised state grows like
    e^256 and overflows float32 (and the input gates reach e^40 and more); the stabilised
    float32 cell stays finite and equals the unstabilised float64 reference."""
    steps = 64
    cell = jr.slstm(IN, H, num_heads=K, forget_gate="exp")
    params = random_params(0)
    w_ih = (20.0 * params.w_ih).at[:, H : 2 * H].set(0.0)  # large i~, z~, o~; f~ = 4 + R h
    params = jr.SLSTMParams(w_ih, 0.25 * params.w_hh, params.b.at[H : 2 * H].set(4.0))
    xs = jax.random.normal(jax.random.key(1), (2, steps, IN))
    carry, ys = jr.scan(cell, params, xs)
    assert np.isfinite(np.asarray(ys)).all() and np.isfinite(np.asarray(carry.n)).all()

    x = np.asarray(xs, np.float64).transpose(1, 0, 2)
    ys_u, (_, c_u, n_u) = ref_unstabilised(params, x, "exp")
    assert np.abs(c_u).max() > 1e100 and n_u.max() > 1e100  # far beyond float32's 3e38
    np.testing.assert_allclose(np.asarray(ys).transpose(1, 0, 2), ys_u, atol=2e-5)
    assert np.asarray(carry.m).min() > 150  # the stabiliser holds the scale instead


def test_first_step_from_zeros_and_the_normaliser_bound():
    """From the zero carry m_1 = i~_1, n_1 = 1, c_1 = z_1 (per unit: a unit with n = 0 starts
    afresh, the others go on), and n_t >= 1 afterwards, so h = o c / n needs no epsilon."""
    cell = jr.slstm(IN, H, num_heads=K, forget_gate="exp")
    params = random_params(1)
    params = params._replace(w_ih=3 * params.w_ih)
    x = jax.random.normal(jax.random.key(2), (2, IN))
    carry, y = cell.apply(params, cell.initial_carry((2,)), x)
    raw = x @ params.w_ih + params.b
    i_raw, _, z_raw, o_raw = jnp.split(raw, 4, axis=-1)
    np.testing.assert_allclose(carry.m, i_raw, rtol=1e-6)
    np.testing.assert_array_equal(carry.n, 1.0)
    np.testing.assert_allclose(carry.c, jnp.tanh(z_raw), rtol=1e-6)
    np.testing.assert_allclose(y, jax.nn.sigmoid(o_raw) * jnp.tanh(z_raw), rtol=1e-6)
    # An empty unit among non-empty ones restarts alone.
    mixed = carry._replace(n=carry.n.at[:, 0].set(0.0), c=carry.c.at[:, 0].set(0.0))
    carry2, _ = cell.apply(params, mixed, x)
    np.testing.assert_array_equal(carry2.n[:, 0], 1.0)
    assert (carry2.n[:, 1:] > 1.0).all()
    # n >= 1 along a sequence with random, large gates.
    carry, _ = jr.scan(cell, params, 5.0 * jax.random.normal(jax.random.key(3), (2, T, IN)))
    assert (carry.n >= 1.0).all()


def test_gradients_finite_through_the_first_step():
    # exp(f~ + m - m_new) with f~ = 200 would overflow; the empty-memory branch is a constant.
    cell = jr.slstm(IN, H, num_heads=K, forget_gate="exp")
    params = random_params(0)
    params = params._replace(b=params.b.at[H : 2 * H].set(200.0))
    x = jax.random.normal(jax.random.key(1), (2, IN))

    def loss(params, carry):
        carry, y = cell.apply(params, carry, x)
        return jnp.sum(y**2) + jnp.sum(cell.apply(params, carry, x)[1] ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(params, cell.initial_carry((2,)))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_heads_are_block_diagonal():
    """A unit's new state reads only its own head's units: perturbing h_{t-1}[j] leaves every
    other head exactly unchanged (and changes its own).

    Like is compared with like: the unperturbed carry is row 0 of the same batched call as the
    H perturbed ones, so every row goes through the same kernels. (An unbatched call is a
    different matmul, which an AVX-512 CPU rounds differently in the last bit.)
    """
    x = jax.random.normal(jax.random.key(3), (IN,))
    for heads in (K, 1):
        cell = jr.slstm(IN, H, num_heads=heads)
        params = random_params(1, heads=heads)
        assert params.w_hh.shape == (heads, H // heads, 4, H // heads)
        carry, _ = cell.apply(params, cell.initial_carry(), x)
        # a batch of 1 + H carries: row 0 as it is, row 1 + j with h[j] moved by 1
        moved = jax.tree.map(lambda a: jnp.broadcast_to(a, (1 + H, H)), carry)
        moved = moved._replace(h=moved.h + jnp.eye(1 + H, H, k=-1))
        new, _ = cell.apply(params, moved, jnp.broadcast_to(x, (1 + H, IN)))
        base, new_c = np.asarray(new.c[0]), np.asarray(new.c[1:])
        changed = new_c != base  # changed[j, u]: unit u reacts to h[j]
        same_head = np.kron(np.eye(heads), np.ones((H // heads, H // heads))).astype(bool)
        np.testing.assert_array_equal(changed, same_head)


def test_scan_equals_python_loop_and_step_split():
    cell = jr.slstm(IN, H, num_heads=K)
    params = random_params(1)
    xs = jax.random.normal(jax.random.key(2), (2, T, IN))
    carry, ys = jr.scan(cell, params, xs)
    c, outs = cell.initial_carry((2,)), []
    for t in range(T):
        split = cell.step(params, c, cell.project(params, xs[:, t]))
        c, y = cell.apply(params, c, xs[:, t])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), split, (c, y))
        outs.append(y)
    np.testing.assert_allclose(ys, jnp.stack(outs, 1), rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), carry, c)
    assert isinstance(carry, jr.SLSTMCarry)


def test_lengths_and_reverse():
    cell = jr.slstm(IN, H, num_heads=K)
    params = random_params(1)
    xs = jax.random.normal(jax.random.key(2), (2, T, IN))
    lengths = [T, 3]
    carry, ys = jr.scan(cell, params, xs, lengths=jnp.array(lengths))
    rcarry, rys = jr.scan(cell, params, xs, lengths=jnp.array(lengths), reverse=True)
    x = np.asarray(xs, np.float64)
    for b, n in enumerate(lengths):
        y_b, c_b = ref_stabilised(params, x[b, :n, None], "sigmoid")
        np.testing.assert_allclose(ys[b, :n], y_b[:, 0], atol=2e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        for got, want in zip(carry, c_b, strict=True):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=2e-6)
        # reverse: the valid part read from its last element back to its first
        ry_b, rc_b = ref_stabilised(params, x[b, :n][::-1, None], "sigmoid")
        np.testing.assert_allclose(rys[b, :n], ry_b[::-1, 0], atol=2e-6)
        np.testing.assert_array_equal(rys[b, n:], 0.0)
        for got, want in zip(rcarry, rc_b, strict=True):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_gradients_match_finite_differences(forget_gate):
    with jax.enable_x64(True):
        cell = jr.slstm(IN, 4, num_heads=2, forget_gate=forget_gate, param_dtype=jnp.float64)
        params = random_params(1, hidden=4, heads=2, dtype=np.float64)
        xs = jax.random.normal(jax.random.key(2), (2, 3, IN), jnp.float64)

        def loss(params, xs):
            return jnp.sum(jr.scan(cell, params, xs)[1] ** 2)

        check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], eps=1e-6)
        # The step's Jacobian in the whole carry (what a Newton solve linearises), away from
        # the empty memory.
        carry, _ = jr.scan(cell, params, xs)
        step = jax.jit(lambda c: cell.apply(params, c, xs[:, 0]))
        check_grads(step, (carry,), 1, modes=["fwd"], eps=1e-6)


def test_bfloat16_policy():
    cell32 = jr.slstm(IN, H, num_heads=K)
    params = random_params(0)
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    _, ys32 = jr.scan(cell32, params, xs)
    cell = jr.slstm(IN, H, num_heads=K, dtype=jnp.bfloat16)
    carry, ys = jr.scan(cell, params, xs)
    assert all(a.dtype == jnp.float32 for a in carry) and ys.dtype == jnp.bfloat16
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=0.05)
    params16 = jr.slstm(IN, H, num_heads=K, param_dtype=jnp.bfloat16).init(jax.random.key(0))
    assert all(a.dtype == jnp.bfloat16 for a in params16)


def test_default_init():
    params = jr.slstm(IN, H, num_heads=K).init(jax.random.key(0))
    assert params.w_ih.shape == (IN, 4 * H) and params.b.shape == (4 * H,)
    head = 5.0 - 12.0 * (np.arange(D) / (D - 1)) ** 0.3  # the official powerlaw profile
    np.testing.assert_allclose(params.b[H : 2 * H], np.tile(head, K), rtol=1e-6)
    np.testing.assert_array_equal(params.b[:H], 0.0)
    np.testing.assert_array_equal(params.b[2 * H :], 0.0)
    for k in range(K):
        for g in range(4):
            block = params.w_hh[k, :, g, :]
            np.testing.assert_allclose(block.T @ block, np.eye(D), atol=1e-5)
    one_unit = jr.slstm(IN, 2, num_heads=2).init(jax.random.key(0))
    np.testing.assert_array_equal(one_unit.b[2:4], 5.0)


def test_initialisers_are_called_per_block():
    calls = []

    def recording(value):
        def init(key, shape, dtype):
            calls.append((value, shape))
            return jnp.full(shape, value, dtype)

        return init

    params = jr.slstm(
        IN,
        H,
        num_heads=K,
        kernel_init=recording(1.0),
        recurrent_kernel_init=recording(2.0),
        bias_init=recording(3.0),
        forget_bias=None,
    ).init(jax.random.key(0))
    assert sorted(calls) == sorted(
        [(1.0, (IN, H))] * 4 + [(2.0, (D, D))] * (4 * K) + [(3.0, (H,))] * 4
    )
    np.testing.assert_array_equal(params.w_ih, 1.0)
    np.testing.assert_array_equal(params.w_hh, 2.0)
    np.testing.assert_array_equal(params.b, 3.0)
    # a number sets the forget block over bias_init; the official zero recurrent init
    params = jr.slstm(
        IN,
        H,
        num_heads=K,
        forget_bias=1.5,
        bias_init=recording(3.0),
        recurrent_kernel_init=jax.nn.initializers.zeros,
    ).init(jax.random.key(0))
    np.testing.assert_array_equal(params.b[H : 2 * H], 1.5)
    np.testing.assert_array_equal(params.b[2 * H :], 3.0)
    np.testing.assert_array_equal(params.w_hh, 0.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(hidden_size=6, num_heads=4), ValueError, r"hidden_size \(6\) must be a multiple"),
        (dict(num_heads=0), ValueError, "num_heads must be a positive int"),
        (dict(forget_gate="tanh"), ValueError, "forget_gate must be 'sigmoid' or 'exp'"),
        (dict(forget_bias="ones"), ValueError, "forget_bias must be 'powerlaw'"),
        (dict(forget_bias=float("nan")), ValueError, "forget_bias must be a finite"),
        (dict(kernel_init="lecun"), TypeError, "kernel_init must be callable"),
    ],
)
def test_errors(kwargs, error, match):
    kwargs = {"hidden_size": H, **kwargs}
    with pytest.raises(error, match=match):
        jr.slstm(IN, **kwargs)


def test_wrong_input_size():
    cell = jr.slstm(IN, H, num_heads=K)
    with pytest.raises(ValueError, match="expected feature size"):
        cell.apply(random_params(0), cell.initial_carry(), jnp.ones(IN + 1))


def test_matches_official_xlstm_vanilla_cell():
    """The official PyTorch sLSTM (vanilla backend) on the same weights, if installed (e.g.
    ``pip install --no-deps xlstm -t DIR`` and ``PYTHONPATH=DIR``; it needs torch only)."""
    torch = pytest.importorskip("torch")
    cell_mod = pytest.importorskip("xlstm.blocks.slstm.cell")
    rng = np.random.default_rng(0)
    config = cell_mod.sLSTMCellConfig(
        hidden_size=H,
        num_heads=K,
        backend="vanilla",
        dtype="float32",
        dtype_b="float32",
        output_shape="BSH",
        enable_automatic_mixed_precision=False,
    )
    official = cell_mod.sLSTMCell(config)
    R = rng.normal(size=(K, D, 4, D)).astype(np.float32)
    bias = rng.normal(size=(K, 4, D)).astype(np.float32)
    official.recurrent_kernel[...] = torch.tensor(R)
    official.bias[...] = torch.tensor(bias)
    wx = (10 * rng.normal(size=(2, T, 4 * H))).astype(np.float32)  # pre-projected inputs
    out, state = official(torch.tensor(wx))
    cell = jr.slstm(4 * H, H, num_heads=K)
    params = jr.SLSTMParams(
        w_ih=jnp.eye(4 * H), w_hh=jnp.asarray(R), b=jnp.asarray(bias.transpose(1, 0, 2).ravel())
    )
    carry, ys = jr.scan(cell, params, jnp.asarray(wx))
    np.testing.assert_allclose(ys, out.detach().numpy(), atol=1e-5)
    for got, want in zip(carry, state.detach().numpy(), strict=True):  # states y, c, n, m
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
