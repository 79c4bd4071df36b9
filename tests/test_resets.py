"""jr.scan(..., resets=...): segments that share nothing (Haiku's ResetCore).

Reference: each segment scanned on its own from the initial carry (forward and reverse), and a
Python loop that replaces the carry by hand; through layers and the Flax modules.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr

IN, H, T = 3, 4, 9
STARTS = [[0, 3, 4, 7], [0, 5], [0]]  # where each row's segments begin


def flags(starts, t=T):
    out = np.zeros((len(starts), t), bool)
    for b, row in enumerate(starts):
        out[b, row] = True
    return out


def segments(row):
    bounds = [*row, T]
    return list(itertools.pairwise(bounds))


@pytest.mark.parametrize("remat", [False, "sqrt"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("make", [jr.lstm, jr.gru], ids=["lstm", "gru"])
def test_equals_scanning_each_segment_alone(make, reverse, remat):
    cell = make(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (3, T, IN))
    carry0 = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(2), a.shape), cell.initial_carry((3,))
    )
    carry, ys = jr.scan(
        cell, params, xs, carry0, resets=jnp.asarray(flags(STARTS)), reverse=reverse, remat=remat
    )
    for b, row in enumerate(STARTS):
        c0 = jax.tree.map(lambda a, b=b: a[b], carry0)
        for k, (lo, hi) in enumerate(segments(row)):
            c, y = jr.scan(cell, params, xs[b, lo:hi], c0, reverse=reverse)
            np.testing.assert_allclose(ys[b, lo:hi], y, atol=1e-6)
            last = k == 0 if reverse else k == len(row) - 1
            if last:  # the final carry is that of the segment processed last
                for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(c), strict=True):
                    np.testing.assert_allclose(got[b], want, atol=1e-6)


def test_python_loop_reference_with_lengths_and_time_major():
    cell = jr.gru(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, 3, IN))
    resets = flags(STARTS).T  # time-major (T, batch)
    lengths = np.array([6, 9, 2])
    carry, ys = jr.scan(
        cell,
        params,
        xs,
        lengths=jnp.asarray(lengths),
        resets=jnp.asarray(resets),
        time_major=True,
    )
    h = np.zeros((3, H), np.float32)
    for t in range(T):
        h = np.where(resets[t][:, None], 0.0, h)
        h_new, y = cell.apply(params, jnp.asarray(h), xs[t])
        live = (t < lengths)[:, None]
        np.testing.assert_allclose(ys[t], np.where(live, y, 0.0), atol=1e-6)
        h = np.where(live, h_new, h)
    np.testing.assert_allclose(carry, h, atol=1e-6)


def test_all_false_changes_nothing_and_gradients_stop_at_boundaries():
    cell = jr.lstm(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    plain = jr.scan(cell, params, xs, kernel=False)[1]  # resets run on the XLA path: like with like
    np.testing.assert_array_equal(
        jr.scan(cell, params, xs, resets=jnp.zeros((2, T), bool))[1], plain
    )

    def last_output(xs):
        resets = jnp.asarray(flags([[0, 5], [0]]))
        return jr.scan(cell, params, xs, resets=resets)[1][:, -1].sum()

    g = jax.grad(last_output)(xs)
    np.testing.assert_array_equal(g[0, :5], 0.0)  # before the reset: no influence
    assert bool((g[0, 5:] != 0).any()) and bool((g[1, :5] != 0).any())


def test_bidirectional_layer_keeps_segments_apart_in_both_directions():
    bi = jr.bidirectional(jr.gru(IN, H))
    params = bi.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (3, T, IN))
    _, ys = bi.apply(params, xs, resets=jnp.asarray(flags(STARTS)))
    for b, row in enumerate(STARTS):
        for lo, hi in segments(row):
            _, y = bi.apply(params, xs[b, lo:hi])
            np.testing.assert_allclose(ys[b, lo:hi], y, atol=1e-6)
    net = jr.rnn(jr.lstm, IN, H, num_layers=2)
    p = net.init(jax.random.key(2))
    _, ys = net.apply(p, xs, resets=jnp.asarray(flags(STARTS)))
    _, y = net.apply(p, xs[0, 3:4])
    np.testing.assert_allclose(ys[0, 3:4], y, atol=1e-6)


def test_flax_modules_pass_resets():
    import jaxrnn.flax as jrf

    model = jrf.RNN(jr.gru(IN, H))
    xs = jax.random.normal(jax.random.key(1), (3, T, IN))
    resets = jnp.asarray(flags(STARTS))
    variables = model.init(jax.random.key(0), xs)
    expected = jr.scan(model.cell, variables["params"]["cell"], xs, resets=resets)[1]
    np.testing.assert_array_equal(model.apply(variables, xs, resets=resets), expected)


def test_bad_resets_are_named():
    cell = jr.gru(IN, H)
    params = cell.init(jax.random.key(0))
    xs = jnp.ones((3, T, IN))
    with pytest.raises(TypeError, match="resets: expected a bool array"):
        jr.scan(cell, params, xs, resets=jnp.zeros((3, T), jnp.int32))
    with pytest.raises(ValueError, match=r"resets: expected shape \(3, 9\)"):
        jr.scan(cell, params, xs, resets=jnp.zeros((T, 3), bool))
