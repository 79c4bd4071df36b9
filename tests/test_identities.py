"""The identities behind the cells' equations, each checked by an independent computation.

The equations are those of the public sources named in ``docs/notation.md``:

* the activations' derivatives sigma' = sigma (1 - sigma), tanh' = 1 - tanh^2, and the softmax
  Jacobian;
* Ng's *Sequence Models* course: the block-matrix identity behind ``W_a [a; x]``, and the vanilla
  RNN's gradient by backpropagation through time, derived by hand here;
* the two GRU notations, Ng's (``Gamma_u`` gating the candidate) and d2l's (``z`` gating the old
  state, as in ``jr.gru``), are one function under ``z = 1 - Gamma_u``;
* the column-vector LSTM of Graves (2013) (with peepholes, and coupled gates) and Ng's stacked
  LSTM equal ``jr.lstm``.

Everything runs in float64; the NumPy side is written from the sources' equations, in their
column-vector notation, and never calls jaxrnn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn as jr

I, H, K, T = 3, 5, 2, 7  # noqa: E741  (input, hidden, output sizes and sequence length)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def rand(rng, *shape, scale=0.5):
    return scale * rng.standard_normal(shape)


# --------------------------------------------------------------------------------------------
# Derivatives of the activations.

POINTS = np.concatenate([np.linspace(-15.0, 15.0, 601), [0.0, 1e-8, -1e-8, 0.5, -3.25]])


def test_sigmoid_matches_its_definition():
    np.testing.assert_allclose(jax.nn.sigmoid(POINTS), sigmoid(POINTS), rtol=1e-14, atol=0)


def test_sigmoid_derivative_identity():
    s = sigmoid(POINTS)
    identity = s * (1.0 - s)
    autodiff = jax.vmap(jax.grad(jax.nn.sigmoid))(jnp.asarray(POINTS))
    # 1 - s loses relative precision where s is near 1 (about 1e-16 / (1 - s) <= 4e-10 here).
    np.testing.assert_allclose(autodiff, identity, rtol=1e-9, atol=1e-300)
    # And the identity against a central difference of the definition: truncation error
    # about h^2 / 6 * max|sigma'''| < 2e-12, rounding about eps / h = 2e-11 (absolute).
    h = 1e-5
    central = (sigmoid(POINTS + h) - sigmoid(POINTS - h)) / (2 * h)
    np.testing.assert_allclose(identity, central, rtol=1e-7, atol=1e-10)


def test_tanh_matches_its_definition_and_derivative_identity():
    x = POINTS[np.abs(POINTS) <= 10]
    definition = (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))
    np.testing.assert_allclose(jnp.tanh(jnp.asarray(x)), definition, rtol=1e-13, atol=1e-15)
    t = np.tanh(POINTS)
    autodiff = jax.vmap(jax.grad(jnp.tanh))(jnp.asarray(POINTS))
    # 1 - t^2 cancels where |t| is near 1: about 2e-16 absolute error there.
    np.testing.assert_allclose(autodiff, 1.0 - t**2, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_softmax_jacobian(seed, scale):
    x = scale * np.random.default_rng(seed).standard_normal(6)
    e = np.exp(x - x.max())
    y = e / e.sum()
    # Entry by entry: -y_i y_j off the diagonal, y_i (1 - y_i) on it.
    n = len(y)
    by_entry = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            by_entry[i, j] = y[i] * (1.0 - y[i]) if i == j else -y[i] * y[j]
    matrix_form = np.diag(y) - np.outer(y, y)
    np.testing.assert_allclose(matrix_form, by_entry, rtol=1e-13, atol=1e-16)
    x = jnp.asarray(x)
    np.testing.assert_allclose(jax.nn.softmax(x), y, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(jax.jacfwd(jax.nn.softmax)(x), matrix_form, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jacrev(jax.nn.softmax)(x), matrix_form, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Ng's stacked form: block matrices, W_a [a; x].


@pytest.mark.parametrize("cols", [None, 4])
def test_block_matrix_identity(cols):
    """[A | B] [C; D] = A C + B D, for column vectors and for matrices."""
    rng = np.random.default_rng(0)
    m, k, l = 4, 5, 3  # noqa: E741
    A, B = rng.standard_normal((m, k)), rng.standard_normal((m, l))
    extra = () if cols is None else (cols,)
    C, D = rng.standard_normal((k, *extra)), rng.standard_normal((l, *extra))
    lhs = np.concatenate([A, B], axis=1) @ np.concatenate([C, D], axis=0)
    np.testing.assert_allclose(lhs, A @ C + B @ D, rtol=1e-13, atol=1e-13)
    # The same with jnp, the operations jaxrnn uses.
    jlhs = jnp.concatenate([jnp.asarray(A), jnp.asarray(B)], axis=1) @ jnp.concatenate(
        [jnp.asarray(C), jnp.asarray(D)], axis=0
    )
    np.testing.assert_allclose(jlhs, A @ C + B @ D, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_simple_rnn_step_is_f_of_stacked_weights(act):
    """a_t = f(W_a [a_{t-1}; x_t] + b_a) with W_a = [W_aa | W_ax] = [w_hh^T | w_ih^T]."""
    rng = np.random.default_rng(1)
    w_ih, w_hh, b = rand(rng, I, H), rand(rng, H, H), rand(rng, H)
    W_a = np.concatenate([w_hh.T, w_ih.T], axis=1)  # (H, H + I)
    assert W_a.shape == (H, H + I)
    f = np.tanh if act == "tanh" else (lambda z: np.maximum(z, 0.0))
    cell = jr.simple_rnn(  # float64 params: apply checks them against param_dtype, as scan does
        I, H, activation=jnp.tanh if act == "tanh" else jax.nn.relu, param_dtype=jnp.float64
    )
    params = jr.SimpleRNNParams(jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(b))
    a_prev, x = rand(rng, 4, H, scale=1.0), rand(rng, 4, I, scale=1.0)
    a_new, y = cell.apply(params, jnp.asarray(a_prev), jnp.asarray(x))
    for n in range(4):
        want = f(W_a @ np.concatenate([a_prev[n], x[n]]) + b)
        np.testing.assert_allclose(a_new[n], want, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(a_new, y)


# --------------------------------------------------------------------------------------------
# Ng's vanilla RNN: its loss and its gradient by backpropagation through time.


def rnn_loss_numpy(W_aa, W_ax, b_a, W_y, b_y, a0, xs, ys):
    """J = sum_t L^(t), binary cross-entropy of yhat_t = sigma(W_y a_t + b_y); one sequence."""
    a, J = a0, 0.0
    for x, y in zip(xs, ys, strict=True):
        a = np.tanh(W_aa @ a + W_ax @ x + b_a)
        yhat = sigmoid(W_y @ a + b_y)
        J += np.sum(-y * np.log(yhat) - (1.0 - y) * np.log(1.0 - yhat))
    return J


def rnn_bptt_numpy(W_aa, W_ax, b_a, W_y, b_y, a0, xs, ys):
    """dJ/d(W_aa, W_ax, b_a, W_y, b_y, a0) by hand, for one sequence.

    Forward: z_t = W_aa a_{t-1} + W_ax x_t + b_a, a_t = tanh(z_t), yhat_t = sigma(W_y a_t + b_y).
    Backward: for sigmoid + cross-entropy, dL_t/d(W_y a_t + b_y) = yhat_t - y_t =: e_t. The
    state a_t feeds the output at t and z_{t+1}, so with delta_t := dJ/dz_t,

        dJ/da_t = W_y^T e_t + W_aa^T delta_{t+1}    (delta_{T+1} = 0),
        delta_t = dJ/da_t * (1 - a_t^2)             (tanh' = 1 - tanh^2),

    and the parameter gradients are sums over time of outer products:
    dW_y = sum e_t a_t^T, db_y = sum e_t, dW_aa = sum delta_t a_{t-1}^T,
    dW_ax = sum delta_t x_t^T, db_a = sum delta_t, and dJ/da_0 = W_aa^T delta_1.
    """
    a = [a0]
    yhat = []
    for x in xs:
        a.append(np.tanh(W_aa @ a[-1] + W_ax @ x + b_a))
        yhat.append(sigmoid(W_y @ a[-1] + b_y))
    dW_aa, dW_ax, db_a = np.zeros_like(W_aa), np.zeros_like(W_ax), np.zeros_like(b_a)
    dW_y, db_y = np.zeros_like(W_y), np.zeros_like(b_y)
    from_future = np.zeros_like(a0)  # W_aa^T delta_{t+1}
    for t in reversed(range(len(xs))):
        e = yhat[t] - ys[t]
        dW_y += np.outer(e, a[t + 1])
        db_y += e
        delta = (W_y.T @ e + from_future) * (1.0 - a[t + 1] ** 2)
        dW_aa += np.outer(delta, a[t])
        dW_ax += np.outer(delta, xs[t])
        db_a += delta
        from_future = W_aa.T @ delta
    return dW_aa, dW_ax, db_a, dW_y, db_y, from_future


def _rnn_problem(batch_shape, seed=0):
    rng = np.random.default_rng(seed)
    weights = {
        "W_aa": rand(rng, H, H),
        "W_ax": rand(rng, H, I),
        "b_a": rand(rng, H),
        "W_y": rand(rng, K, H),
        "b_y": rand(rng, K),
    }
    a0 = rand(rng, *batch_shape, H)
    xs = rng.standard_normal((*batch_shape, T, I))
    ys = rng.integers(0, 2, size=(*batch_shape, T, K)).astype(np.float64)
    return weights, a0, xs, ys


def test_bptt_by_hand_matches_finite_differences():
    """The hand-derived recursion is right on its own terms (before comparing it with JAX)."""
    w, a0, xs, ys = _rnn_problem(())
    names = ["W_aa", "W_ax", "b_a", "W_y", "b_y"]
    args = [w[n] for n in names] + [a0]
    grads = rnn_bptt_numpy(*args, xs, ys)
    h = 1e-6
    for k, (arg, grad) in enumerate(zip(args, grads, strict=True)):
        numeric = np.zeros_like(arg)
        for idx in np.ndindex(arg.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][idx] += h
            minus[k][idx] -= h
            numeric[idx] = (rnn_loss_numpy(*plus, xs, ys) - rnn_loss_numpy(*minus, xs, ys)) / (
                2 * h
            )
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=f"argument {k}")


@pytest.mark.parametrize("batch_shape", [(), (2,)], ids=str)
def test_bptt_by_hand_equals_jax_grad_of_scan(batch_shape):
    w, a0, xs, ys = _rnn_problem(batch_shape)
    cell = jr.simple_rnn(I, H, param_dtype=jnp.float64)
    # Ng's column-vector weights -> input-major storage: w_ih = W_ax^T, w_hh = W_aa^T.
    params = jr.SimpleRNNParams(
        w_ih=jnp.asarray(w["W_ax"].T), w_hh=jnp.asarray(w["W_aa"].T), b=jnp.asarray(w["b_a"])
    )

    def loss(params, W_y, b_y, a0):
        _, a_seq = jr.scan(cell, params, jnp.asarray(xs), a0)  # (*batch, T, H)
        yhat = jax.nn.sigmoid(a_seq @ W_y.T + b_y)
        return jnp.sum(-ys * jnp.log(yhat) - (1.0 - ys) * jnp.log(1.0 - yhat))

    jax_args = (params, jnp.asarray(w["W_y"]), jnp.asarray(w["b_y"]), jnp.asarray(a0))
    value, (g_params, g_W_y, g_b_y, g_a0) = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(
        *jax_args
    )

    # The hand-written BPTT, one sequence at a time; J sums over the batch.
    want = {n: np.zeros_like(v) for n, v in w.items()}
    want_a0 = np.zeros_like(a0)
    want_value = 0.0
    for idx in np.ndindex(*batch_shape):
        args = (w["W_aa"], w["W_ax"], w["b_a"], w["W_y"], w["b_y"], a0[idx], xs[idx], ys[idx])
        want_value += rnn_loss_numpy(*args)
        dW_aa, dW_ax, db_a, dW_y, db_y, da0 = rnn_bptt_numpy(*args)
        for name, g in zip(
            ["W_aa", "W_ax", "b_a", "W_y", "b_y"], [dW_aa, dW_ax, db_a, dW_y, db_y], strict=True
        ):
            want[name] += g
        want_a0[idx] = da0

    tol = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(value, want_value, **tol)
    assert_trees_close(
        {
            "W_ax": g_params.w_ih.T,
            "W_aa": g_params.w_hh.T,
            "b_a": g_params.b,
            "W_y": g_W_y,
            "b_y": g_b_y,
            "a0": g_a0,
        },
        {**want, "a0": want_a0},
        **tol,
    )


# --------------------------------------------------------------------------------------------
# GRU: Ng's form (Gamma_u gates the candidate) vs d2l's, transposed, and jr.gru (z gates h).


def gru_ng_step(W_u, b_u, W_r, b_r, W_c, b_c, c_prev, x):
    """Ng's GRU, column vectors, weights acting on the stack [c_{t-1}; x_t]."""
    cx = np.concatenate([c_prev, x])
    gamma_u = sigmoid(W_u @ cx + b_u)
    gamma_r = sigmoid(W_r @ cx + b_r)
    c_tilde = np.tanh(W_c @ np.concatenate([gamma_r * c_prev, x]) + b_c)
    return gamma_u * c_tilde + (1.0 - gamma_u) * c_prev


def _run_numpy(step, c0, xs):
    """Applies ``step(c, x)`` over the time axis of ``xs`` for every batch element."""
    batch_shape = xs.shape[:-2]
    out = np.zeros((*batch_shape, xs.shape[-2], c0.shape[-1]))
    for idx in np.ndindex(*batch_shape):
        c = c0[idx]
        for t in range(xs.shape[-2]):
            c = step(c, xs[idx][t])
            out[idx][t] = c
    return out


@pytest.mark.parametrize("split_bias", [False, True], ids=["b_hh=0", "b_hh=random"])
def test_gru_gamma_u_notation_equals_jr_gru_with_z_one_minus_gamma_u(split_bias):
    rng = np.random.default_rng(3)
    W_u, W_r, W_c = (rand(rng, H, H + I, scale=0.8) for _ in range(3))
    b_u, b_r, b_c = (rand(rng, H) for _ in range(3))
    c0 = rand(rng, 2, H, scale=1.0)
    xs = rng.standard_normal((2, T, I))

    def h_part(W):  # columns acting on c_{t-1}, transposed to input-major
        return W[:, :H].T

    def x_part(W):  # columns acting on x_t
        return W[:, H:].T

    # Blocks r, z, n. z = 1 - Gamma_u = sigma(-(W_u [c; x] + b_u)): negate the update gate.
    w_ih = np.concatenate([x_part(W_r), -x_part(W_u), x_part(W_c)], axis=1)
    w_hh = np.concatenate([h_part(W_r), -h_part(W_u), h_part(W_c)], axis=1)
    b_total = np.concatenate([b_r, -b_u, b_c])
    # With reset_after=False only b_ih + b_hh matters (b_hn sits outside the reset gate).
    b_hh = rand(rng, 3 * H) if split_bias else np.zeros(3 * H)
    params = jr.GRUParams(*map(jnp.asarray, (w_ih, w_hh, b_total - b_hh, b_hh)))
    cell = jr.gru(I, H, reset_after=False, param_dtype=jnp.float64)

    def step(c, x):
        return gru_ng_step(W_u, b_u, W_r, b_r, W_c, b_c, c, x)

    want = _run_numpy(step, c0, xs)
    _, got = jr.scan(cell, params, jnp.asarray(xs), jnp.asarray(c0))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    # Not vacuous: reading Gamma_u as z (no negation) is a different function.
    naive = params._replace(
        w_ih=jnp.asarray(np.concatenate([x_part(W_r), x_part(W_u), x_part(W_c)], axis=1)),
        w_hh=jnp.asarray(np.concatenate([h_part(W_r), h_part(W_u), h_part(W_c)], axis=1)),
        b_ih=jnp.asarray(np.concatenate([b_r, b_u, b_c]) - b_hh),
    )
    _, got_naive = jr.scan(cell, naive, jnp.asarray(xs), jnp.asarray(c0))
    assert np.abs(np.asarray(got_naive) - want).max() > 1e-2


def test_sigma_of_minus_u_is_one_minus_sigma_of_u():
    """The identity that the correspondence above rests on."""
    u = jnp.asarray(POINTS)
    np.testing.assert_allclose(jax.nn.sigmoid(-u), 1.0 - sigmoid(POINTS), rtol=1e-9, atol=1e-16)


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_column_form_equals_jr_gru(reset_after):
    """d2l's GRU, transposed: z gates h_{t-1}, r acts before W_hh (reset_after=False).

    For reset_after=True the reference moves r outside: W_hh (r * h) -> r * (W_hh h + b_hh).
    """
    rng = np.random.default_rng(4)
    W_x = {g: rand(rng, H, I, scale=0.8) for g in "rzh"}
    W_h = {g: rand(rng, H, H, scale=0.8) for g in "rzh"}
    b_x = {g: rand(rng, H) for g in "rzh"}
    b_h = {g: rand(rng, H) for g in "rzh"}
    h0 = rand(rng, 2, H, scale=1.0)
    xs = rng.standard_normal((2, T, I))

    def step(h, x):
        z = sigmoid(W_x["z"] @ x + W_h["z"] @ h + b_x["z"] + b_h["z"])
        r = sigmoid(W_x["r"] @ x + W_h["r"] @ h + b_x["r"] + b_h["r"])
        if reset_after:
            h_tilde = np.tanh(W_x["h"] @ x + b_x["h"] + r * (W_h["h"] @ h + b_h["h"]))
        else:
            h_tilde = np.tanh(W_x["h"] @ x + W_h["h"] @ (r * h) + b_x["h"] + b_h["h"])
        return (1.0 - z) * h_tilde + z * h

    params = jr.GRUParams(
        w_ih=jnp.asarray(np.concatenate([W_x[g].T for g in "rzh"], axis=1)),
        w_hh=jnp.asarray(np.concatenate([W_h[g].T for g in "rzh"], axis=1)),
        b_ih=jnp.asarray(np.concatenate([b_x[g] for g in "rzh"])),
        b_hh=jnp.asarray(np.concatenate([b_h[g] for g in "rzh"])),
    )
    cell = jr.gru(I, H, reset_after=reset_after, param_dtype=jnp.float64)
    _, got = jr.scan(cell, params, jnp.asarray(xs), jnp.asarray(h0))
    np.testing.assert_allclose(got, _run_numpy(step, h0, xs), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# LSTM: Graves' (2013) column-vector form, with the peephole and coupled variants.


def lstm_graves_step(w, h, c, x, peephole, coupled):
    """One step in Graves' notation; peepholes W_c* are diagonal matrices on the cell state."""
    f = sigmoid(w["W_xf"] @ x + w["W_hf"] @ h + (w["W_cf"] @ c if peephole else 0.0) + w["b_f"])
    if coupled:
        i = 1.0 - f
    else:
        i = sigmoid(w["W_xi"] @ x + w["W_hi"] @ h + (w["W_ci"] @ c if peephole else 0.0) + w["b_i"])
    c_tilde = np.tanh(w["W_xc"] @ x + w["W_hc"] @ h + w["b_c"])
    c = f * c + i * c_tilde
    o = sigmoid(w["W_xo"] @ x + w["W_ho"] @ h + (w["W_co"] @ c if peephole else 0.0) + w["b_o"])
    return o * np.tanh(c), c


@pytest.mark.parametrize(
    ("peephole", "coupled"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["plain", "peephole", "coupled", "peephole-coupled"],
)
def test_lstm_graves_column_form_equals_jr_lstm(peephole, coupled):
    rng = np.random.default_rng(5)
    w = {}
    for g in "ifco":
        w[f"W_x{g}"], w[f"W_h{g}"], w[f"b_{g}"] = rand(rng, H, I), rand(rng, H, H), rand(rng, H)
        w[f"W_c{g}"] = np.diag(rand(rng, H))  # peepholes are diagonal
    h0, c0 = rand(rng, 2, H, scale=1.0), rand(rng, 2, H, scale=1.0)
    xs = rng.standard_normal((2, T, I))

    # Fused layout: blocks i, f, g(= c tilde), o; the coupled cell has no i block.
    gates = "fco" if coupled else "ifco"
    peeps = "fo" if coupled else "ifo"
    params = jr.LSTMParams(
        w_ih=jnp.asarray(np.concatenate([w[f"W_x{g}"].T for g in gates], axis=1)),
        w_hh=jnp.asarray(np.concatenate([w[f"W_h{g}"].T for g in gates], axis=1)),
        b=jnp.asarray(np.concatenate([w[f"b_{g}"] for g in gates])),
        w_peep=jnp.asarray(np.stack([np.diag(w[f"W_c{g}"]) for g in peeps])) if peephole else None,
    )
    cell = jr.lstm(I, H, peephole=peephole, coupled=coupled, param_dtype=jnp.float64)
    carry0 = jr.LSTMCarry(jnp.asarray(h0), jnp.asarray(c0))
    carry, got = jr.scan(cell, params, jnp.asarray(xs), carry0)

    want_h = np.zeros((2, T, H))
    want_c = np.zeros((2, H))
    for n in range(2):
        h, c = h0[n], c0[n]
        for t in range(T):
            h, c = lstm_graves_step(w, h, c, xs[n, t], peephole, coupled)
            want_h[n, t] = h
        want_c[n] = c
    np.testing.assert_allclose(got, want_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(carry.c, want_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(carry.h, want_h[:, -1], rtol=1e-12, atol=1e-12)


def test_lstm_ng_stacked_form_equals_jr_lstm():
    """Ng's LSTM: Gamma_{u,f,o} = sigma(W [a; x] + b), c = Gamma_u c~ + Gamma_f c."""
    rng = np.random.default_rng(6)
    W = {g: rand(rng, H, H + I) for g in ("u", "f", "c", "o")}  # each acts on [a_{t-1}; x_t]
    b = {g: rand(rng, H) for g in ("u", "f", "c", "o")}
    a0, c0 = rand(rng, H, scale=1.0), rand(rng, H, scale=1.0)
    xs = rng.standard_normal((T, I))

    order = ("u", "f", "c", "o")  # = PyTorch's i, f, g, o
    params = jr.LSTMParams(
        w_ih=jnp.asarray(np.concatenate([W[g][:, H:].T for g in order], axis=1)),
        w_hh=jnp.asarray(np.concatenate([W[g][:, :H].T for g in order], axis=1)),
        b=jnp.asarray(np.concatenate([b[g] for g in order])),
    )
    cell = jr.lstm(I, H, param_dtype=jnp.float64)
    _, got = jr.scan(cell, params, jnp.asarray(xs), jr.LSTMCarry(jnp.asarray(a0), jnp.asarray(c0)))

    a, c = a0, c0
    for t in range(T):
        ax = np.concatenate([a, xs[t]])
        c_tilde = np.tanh(W["c"] @ ax + b["c"])
        gamma_u, gamma_f, gamma_o = (sigmoid(W[g] @ ax + b[g]) for g in ("u", "f", "o"))
        c = gamma_u * c_tilde + gamma_f * c
        a = gamma_o * np.tanh(c)
        np.testing.assert_allclose(got[t], a, rtol=1e-12, atol=1e-12, err_msg=f"t={t}")
