"""Regularisers as cell transformations (jaxrnn.regularizers).

References: float64 NumPy LSTM/GRU loops applying the papers' equations with masks read out of
the transformed cells by probe cells (a probe computes nothing but reveals the mask it is given,
so the reference uses exactly the masks the library drew, and checks everything else:
where each mask is applied, scaling, constancy over time, the recurrence); finite differences for
gradients; Monte-Carlo means over keys for the test-time expectations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr

B, T, IN, H = 6, 7, 3, 5


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_lstm_step(p, h, c, x):
    """PyTorch-order (i, f, g, o) LSTM step in float64, input-major weights."""
    z = x @ p.w_ih + h @ p.w_hh + p.b
    i, f, g, o = (z[..., k * H : (k + 1) * H] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def np_params(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def probe(size, reveal):
    """A cell with an array carry of ``size`` features; ``reveal(carry, x) -> (carry, y)``."""
    return jr.Cell(
        init=lambda key: (),
        apply=lambda p, carry, x: reveal(carry, x),
        initial_carry=lambda batch_shape=(), dtype=None: jnp.ones(
            (*batch_shape, size), jnp.float32 if dtype is None else dtype
        ),
    )


def input_mask(key, rate, recurrent_rate, shape):
    """The input mask a variational-dropout cell draws for inputs of ``shape``."""
    cell = jr.variational_dropout(
        probe(1, lambda c, x: (c, x)),
        jax.random.clone(key),
        rate=rate,
        recurrent_rate=recurrent_rate,
    )
    return np.asarray(jr.scan(cell, (), jnp.ones((shape[0], 2, shape[1])))[1][:, 0])


def state_mask(key, rate, recurrent_rate, shape):
    """The recurrent mask: a probe whose output is the (dropped) state it reads, state ones."""
    cell = jr.variational_dropout(
        probe(shape[1], lambda c, x: (jnp.ones_like(c), c)),
        jax.random.clone(key),
        rate=rate,
        recurrent_rate=recurrent_rate,
    )
    return np.asarray(jr.scan(cell, (), jnp.ones((shape[0], 2, 1)))[1][:, 0])


# --------------------------------------------------------------------------------------------
# Variational dropout.


def test_variational_masks_are_constant_over_time_and_differ_across_sequences():
    key = jax.random.key(3)
    cell = jr.variational_dropout(probe(1, lambda c, x: (c, x)), jax.random.clone(key), rate=0.3)
    ys = np.asarray(jr.scan(cell, (), jnp.ones((64, T, 32)))[1])  # y_t = m_x * 1
    assert (ys == ys[:, :1]).all()  # the same mask at every step
    assert set(np.unique(ys)) == {0.0, np.float32(1 / 0.7)}  # inverted dropout
    assert abs((ys[:, 0] == 0).mean() - 0.3) < 0.05
    assert len({row.tobytes() for row in ys[:, 0]}) == 64  # one mask per sequence

    rec = jr.variational_dropout(
        probe(32, lambda c, x: (jnp.ones_like(c), c)), key, recurrent_rate=0.4
    )
    ys = np.asarray(jr.scan(rec, (), jnp.ones((64, T, 1)))[1])  # y_t = m_h * h_{t-1} = m_h
    assert (ys == ys[:, :1]).all()
    assert abs((ys[:, 0] == 0).mean() - 0.4) < 0.05


@pytest.mark.parametrize("lengths", [None, [7, 3, 0, 1, 7, 5]])
@pytest.mark.parametrize(("rate", "recurrent_rate"), [(0.25, 0.0), (0.0, 0.5), (0.3, 0.4)])
def test_variational_lstm_matches_float64_reference(rate, recurrent_rate, lengths):
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, IN))
    key = jax.random.key(2)
    dropped = jr.variational_dropout(
        cell, jax.random.clone(key), rate=rate, recurrent_rate=recurrent_rate
    )
    kw = {} if lengths is None else {"lengths": jnp.array(lengths)}
    carry, ys = jr.scan(dropped, params, xs, **kw)

    m_x = input_mask(key, rate, recurrent_rate, (B, IN)) if rate else np.ones((B, IN))
    m_h = state_mask(key, rate, recurrent_rate, (B, H)) if recurrent_rate else np.ones((B, H))
    p, x = np_params(params), np.asarray(xs, np.float64)
    steps = np.full(B, T) if lengths is None else np.array(lengths)
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ref = np.zeros((B, T, H))
    for t in range(T):
        h_new, c_new = np_lstm_step(p, h * m_h, c, x[:, t] * m_x)  # Gal & Ghahramani
        live = (t < steps)[:, None]
        h, c = np.where(live, h_new, h), np.where(live, c_new, c)
        ref[:, t] = np.where(live, h_new, 0.0)
    np.testing.assert_allclose(ys, ref, atol=2e-5)
    np.testing.assert_allclose(carry.h, h, atol=2e-5)
    np.testing.assert_allclose(carry.c, c, atol=2e-5)
    assert not np.allclose(ys, jr.scan(cell, params, xs, **kw)[1], atol=1e-3)  # it did drop


def test_variational_without_key_is_the_cell_itself():
    cell = jr.gru(IN, H)
    assert jr.variational_dropout(cell, rate=0.5, recurrent_rate=0.5) is cell
    assert jr.variational_dropout(cell, jax.random.key(0)) is cell  # rates 0


def test_variational_expectation_is_the_undropped_cell():
    """A linear cell with input dropout: the mean over masks is the undropped output."""
    cell = jr.simple_rnn(IN, H, activation=lambda z: z)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 4, IN))
    keys = jax.random.split(jax.random.key(2), 4000)

    def run(key):
        return jr.scan(jr.variational_dropout(cell, key, rate=0.3), params, xs)[1]

    mean = jax.vmap(run)(keys).mean(0)
    exact = jr.scan(cell, params, xs)[1]
    np.testing.assert_allclose(mean, exact, atol=0.1 * float(jnp.abs(exact).max()))


def test_variational_is_reproducible_per_key():
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jnp.ones((B, T, IN))

    def run(key):
        return jr.scan(jr.variational_dropout(cell, key, rate=0.3, recurrent_rate=0.3), params, xs)

    a, b, c = run(jax.random.key(5)), run(jax.random.key(5)), run(jax.random.key(6))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


@pytest.mark.parametrize(
    "transform",
    [
        lambda cell, key: jr.variational_dropout(cell, key, rate=0.2, recurrent_rate=0.3),
        lambda cell, key: jr.zoneout(cell, key, rate=0.2, cell_rate=0.4),
        lambda cell, key: jr.weight_drop(cell, key, rate=0.3),
    ],
    ids=["variational", "zoneout", "weight_drop"],
)
def test_gradients_flow_and_match_finite_differences(transform):
    with jax.enable_x64(True):
        cell = jr.lstm(IN, H, param_dtype=jnp.float64)
        params = cell.init(jax.random.key(0))
        xs = jax.random.normal(jax.random.key(1), (2, 4, IN), jnp.float64)
        dropped = transform(cell, jax.random.key(2))

        def loss(params, xs):
            return (jr.scan(dropped, params, xs)[1] ** 2).sum()

        grads = jax.grad(loss)(params, xs)
        assert all(bool(jnp.isfinite(g).all()) and bool((g != 0).any()) for g in grads[:3])
        check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], eps=1e-6)


# --------------------------------------------------------------------------------------------
# Zoneout.


def zoneout_masks(key, rate, cell_rate, shape, steps):
    """Per-step keep-old masks of h and c, read out with a probe whose new state is old + 1."""

    def reveal(carry, x):
        new = jr.LSTMCarry(carry.h + 1.0, carry.c + 1.0)
        return new, new.h

    probe_cell = jr.Cell(
        init=lambda key: (),
        apply=lambda p, carry, x: reveal(carry, x),
        initial_carry=lambda batch_shape=(), dtype=None: jr.LSTMCarry(
            jnp.zeros((*batch_shape, shape[1])), jnp.zeros((*batch_shape, shape[1]))
        ),
    )
    cell = jr.zoneout(probe_cell, jax.random.clone(key), rate=rate, cell_rate=cell_rate)
    carry = cell.initial_carry((shape[0],))
    keep_h, keep_c = [], []
    for _ in range(steps):  # the test's own loop, to read each step's masks
        new, _ = cell.apply((), carry, jnp.zeros((shape[0], 1)))
        keep_h.append(np.asarray(new.carry.h == carry.carry.h))
        keep_c.append(np.asarray(new.carry.c == carry.carry.c))
        carry = new
    return np.stack(keep_h, 1), np.stack(keep_c, 1)


def test_zoneout_masks_are_new_every_step_with_the_given_rates():
    keep_h, keep_c = zoneout_masks(jax.random.key(4), 0.2, 0.6, (64, 32), 6)
    assert abs(keep_h.mean() - 0.2) < 0.03 and abs(keep_c.mean() - 0.6) < 0.03
    assert not (keep_h == keep_h[:, :1]).all()  # a fresh draw per step
    assert not (keep_h == keep_c).all()  # h and c draw separately


@pytest.mark.parametrize("keyed", [True, False])
def test_zoneout_lstm_matches_float64_reference(keyed):
    z_h, z_c = 0.3, 0.5
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, IN))
    key = jax.random.key(2) if keyed else None
    zoned = jr.zoneout(
        cell, None if key is None else jax.random.clone(key), rate=z_h, cell_rate=z_c
    )
    carry, ys = jr.scan(zoned, params, xs)

    if keyed:
        d_h, d_c = (m.astype(np.float64) for m in zoneout_masks(key, z_h, z_c, (B, H), T))
    else:  # the expectation: a fixed leaky average
        d_h, d_c = np.full((B, T, H), z_h), np.full((B, T, H), z_c)
    p, x = np_params(params), np.asarray(xs, np.float64)
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ref = np.zeros((B, T, H))
    for t in range(T):  # Krueger et al. 2017, eq. for the LSTM
        h_tilde, c_tilde = np_lstm_step(p, h, c, x[:, t])
        c = d_c[:, t] * c + (1 - d_c[:, t]) * c_tilde
        h = d_h[:, t] * h + (1 - d_h[:, t]) * h_tilde
        ref[:, t] = h
    np.testing.assert_allclose(ys, ref, atol=2e-5)
    np.testing.assert_allclose(carry.carry.h, h, atol=2e-5)
    np.testing.assert_allclose(carry.carry.c, c, atol=2e-5)
    np.testing.assert_array_equal(carry.step, np.full(B, T))


def test_zoneout_expectation_of_one_step_is_the_leaky_average():
    cell = jr.gru(IN, H)
    params = cell.init(jax.random.key(0))
    h0 = jax.random.normal(jax.random.key(1), (2, H))
    x = jax.random.normal(jax.random.key(2), (2, IN))
    carry = jr.ZoneoutCarry(h0, jnp.zeros((2,), jnp.int32))

    def one(key):
        return jr.zoneout(cell, key, rate=0.3).apply(params, carry, x)[1]

    mean = jax.vmap(one)(jax.random.split(jax.random.key(3), 4000)).mean(0)
    expected = jr.zoneout(cell, rate=0.3).apply(params, carry, x)[1]
    np.testing.assert_allclose(mean, expected, atol=0.05)


def test_zoneout_gru_with_lengths_freezes_rows_and_counts_steps():
    cell = jr.gru(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (3, T, IN))
    lengths = jnp.array([T, 2, 0])
    carry, ys = jr.scan(jr.zoneout(cell, jax.random.key(2), rate=0.5), params, xs, lengths=lengths)
    np.testing.assert_array_equal(carry.step, [T, 2, 0])
    np.testing.assert_array_equal(ys[1, 2:], 0.0)
    np.testing.assert_array_equal(carry.carry[2], 0.0)
    np.testing.assert_array_equal(carry.carry[1], ys[1, 1])


def test_zoneout_refuses_a_cell_that_does_not_output_its_state():
    with pytest.raises(ValueError, match="cell: zoneout needs"):
        jr.zoneout(jr.jordan_rnn(IN, H, 2), rate=0.1)


# --------------------------------------------------------------------------------------------
# Weight drop and embedding dropout.


def weight_mask(key, rate, shape):
    """The DropConnect mask of ``w_hh``: a probe whose output is the weight it is given."""

    probe_cell = jr.Cell(
        init=lambda key: None,
        apply=lambda p, carry, x: (carry, p.w_hh),
        initial_carry=lambda batch_shape=(), dtype=None: jnp.zeros((*batch_shape, 1)),
    )
    params = jr.SimpleRNNParams(jnp.zeros((1, 1)), jnp.ones(shape), jnp.zeros((1,)))
    cell = jr.weight_drop(probe_cell, jax.random.clone(key), rate=rate)
    return np.asarray(jr.scan(cell, params, jnp.ones((3, 1)))[1])  # (T, *shape)


@pytest.mark.parametrize("hoist", [False, True])
def test_weight_drop_lstm_matches_float64_reference(hoist):
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, IN))
    key = jax.random.key(2)
    dropped = jr.weight_drop(cell, jax.random.clone(key), rate=0.4)
    _, ys = jr.scan(dropped, params, xs, hoist=hoist)

    masks = weight_mask(key, 0.4, (H, 4 * H))
    assert (masks == masks[:1]).all()  # the same matrix at every step
    assert set(np.unique(masks)) == {0.0, np.float32(1 / 0.6)}
    p, x = np_params(params), np.asarray(xs, np.float64)
    p = p._replace(w_hh=p.w_hh * masks[0])  # one mask shared by every sequence
    h, c = np.zeros((B, H)), np.zeros((B, H))
    for t in range(T):
        h, c = np_lstm_step(p, h, c, x[:, t])
        np.testing.assert_allclose(ys[:, t], h, atol=2e-5)
    assert jr.weight_drop(cell, rate=0.4) is cell


def test_embedding_dropout_drops_whole_rows_and_keeps_the_expectation():
    emb = jax.random.normal(jax.random.key(0), (50, 4))
    dropped = np.asarray(jr.embedding_dropout(jax.random.key(1), emb, 0.4))
    zero = (dropped == 0).all(1)
    np.testing.assert_allclose(dropped[~zero], np.asarray(emb)[~zero] / 0.6, rtol=1e-6)
    assert 0 < zero.sum() < 50
    means = jax.vmap(lambda k: jr.embedding_dropout(k, emb, 0.4))(
        jax.random.split(jax.random.key(2), 4000)
    ).mean(0)
    np.testing.assert_allclose(means, emb, atol=0.12)
    assert jr.embedding_dropout(None, emb, 0.4) is emb


# --------------------------------------------------------------------------------------------
# regularize: the composition, each transformation with its own key.


@pytest.mark.parametrize("keyed", [True, False], ids=["train", "eval"])
def test_regularize_is_the_composition_with_split_keys(keyed):
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, IN))
    key = jax.random.key(2) if keyed else None
    rates = dict(input_dropout=0.2, recurrent_dropout=0.3, zoneout=0.1, weight_drop=0.4)
    _, ys = jr.scan(jr.regularize(cell, key, **rates), params, xs)

    k_w = k_v = k_z = None
    if keyed:
        k_w, k_v, k_z = jax.random.split(jax.random.key(2), 3)
    manual = jr.zoneout(
        jr.variational_dropout(
            jr.weight_drop(cell, k_w, rate=0.4), k_v, rate=0.2, recurrent_rate=0.3
        ),
        k_z,
        rate=0.1,
    )
    _, ref = jr.scan(manual, params, xs)
    np.testing.assert_array_equal(ys, ref)
    plain = np.asarray(jr.scan(cell, params, xs)[1])
    assert not np.allclose(ys, plain, atol=1e-3)  # zoneout's expectation is not the cell


def test_regularize_leaves_out_zero_rates_and_checks_them():
    cell = jr.gru(IN, H)
    assert jr.regularize(cell, jax.random.key(0)) is cell
    assert jr.regularize(cell, None, input_dropout=0.5, weight_drop=0.5) is cell  # expectation
    zoned = jr.regularize(cell, None, zoneout=0.1)
    assert dict(zoned.config)["factory"] is jr.zoneout and dict(zoned.config)["cell"] is cell
    for name in ("input_dropout", "recurrent_dropout", "zoneout", "weight_drop"):
        with pytest.raises(ValueError, match=rf"{name}: expected a probability in \[0, 1\)"):
            jr.regularize(cell, None, **{name: 1.0})


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), float("inf"), True, "0.1", None])
@pytest.mark.parametrize(
    "call",
    [
        lambda r: jr.variational_dropout(jr.gru(IN, H), rate=r),
        lambda r: jr.variational_dropout(jr.gru(IN, H), recurrent_rate=r),
        lambda r: jr.weight_drop(jr.gru(IN, H), rate=r),
        lambda r: jr.embedding_dropout(None, jnp.ones((2, 2)), r),
    ],
)
def test_rates_are_checked(bad, call):
    with pytest.raises((ValueError, TypeError), match="rate"):
        call(bad)


def test_zoneout_rate_one_is_allowed_and_above_is_not():
    jr.zoneout(jr.gru(IN, H), rate=1.0)
    with pytest.raises(ValueError, match="cell_rate"):
        jr.zoneout(jr.lstm(IN, H), rate=0.1, cell_rate=1.5)


def test_not_a_cell_and_unknown_weight_names():
    with pytest.raises(TypeError, match=r"cell: expected a jr\.Cell"):
        jr.zoneout(jr.layer(jr.gru(IN, H)), rate=0.1)
    cell = jr.weight_drop(jr.gru(IN, H), jax.random.key(0), rate=0.5, names=("w_peep",))
    with pytest.raises(ValueError, match=r"names: \['w_peep'\] are not fields"):
        jr.scan(cell, cell.init(jax.random.key(1)), jnp.ones((2, 3, IN)))


# --------------------------------------------------------------------------------------------
# Through the Flax modules: the "dropout" rng stream.


def recording(transform):
    """``transform`` that also records the keys it is given."""
    keys = []

    def wrapped(cell, key):
        keys.append(key)
        return transform(cell, None if key is None else jax.random.clone(key))

    return wrapped, keys


def test_linen_rnn_takes_the_transform_key_from_the_dropout_stream():
    import jaxrnn.flax as jrf

    cell = jr.lstm(IN, H)
    transform, keys = recording(
        lambda c, k: jr.variational_dropout(c, k, rate=0.3, recurrent_rate=0.3)
    )
    model = jrf.RNN(cell, transform=transform)
    xs = jax.random.normal(jax.random.key(0), (2, 5, IN))
    variables = model.init(jax.random.key(1), xs, deterministic=True)
    params = variables["params"]["cell"]
    np.testing.assert_array_equal(
        model.apply(variables, xs, deterministic=True), jr.scan(cell, params, xs)[1]
    )
    ys = model.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(2)})
    key = keys[-1]
    expected = jr.scan(jr.variational_dropout(cell, key, rate=0.3, recurrent_rate=0.3), params, xs)
    np.testing.assert_array_equal(ys, expected[1])
    other = model.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(ys, other)
    with pytest.raises(ValueError, match="deterministic"):
        model.apply(variables, xs)  # neither the module nor the call says


def test_nnx_rnn_takes_the_transform_key_from_the_dropout_stream():
    from flax import nnx

    import jaxrnn.flax.nnx as jrnnx

    cell = jr.gru(IN, H)
    transform, keys = recording(lambda c, k: jr.zoneout(c, k, rate=0.4))
    model = jrnnx.RNN(cell, transform=transform, rngs=nnx.Rngs(0, dropout=1))
    xs = jax.random.normal(jax.random.key(0), (2, 5, IN))
    ys = model(xs)  # training mode by default: a key from the dropout stream
    expected = jr.scan(jr.zoneout(cell, keys[-1], rate=0.4), model.get_params(), xs)[1]
    np.testing.assert_array_equal(ys, expected)
    assert not np.allclose(model(xs), ys)  # the stream moves on
    model.eval()
    np.testing.assert_array_equal(
        model(xs), jr.scan(jr.zoneout(cell, rate=0.4), model.get_params(), xs)[1]
    )
