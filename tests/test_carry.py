"""A learnable initial carry (jaxrnn.carry)."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn as jr

IN, H, T = 3, 4, 6


def test_first_step_reads_the_learned_carry_and_the_rest_is_the_cell():
    inner = jr.lstm(IN, H)
    cell = jr.learnable_carry(inner)
    params = cell.init(jax.random.key(0))
    h0 = jr.LSTMCarry(jnp.full(H, 0.5), jnp.linspace(-1.0, 1.0, H))
    params = params._replace(carry=h0)
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    carry, ys = jr.scan(cell, params, xs)
    start = jax.tree.map(lambda a: jnp.broadcast_to(a, (2, H)), h0)
    ref_carry, ref_ys = jr.scan(inner, params.cell, xs, start)  # the reference: explicit carry
    np.testing.assert_allclose(ys, ref_ys, atol=1e-6)
    np.testing.assert_allclose(carry.carry.c, ref_carry.c, atol=1e-6)
    assert bool(carry.started.all())


def test_zero_init_computes_the_plain_cell_and_gradients_reach_the_carry():
    inner = jr.gru(IN, H)
    cell = jr.learnable_carry(inner)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, T, IN))
    np.testing.assert_allclose(
        jr.scan(cell, params, xs)[1], jr.scan(inner, params.cell, xs)[1], atol=1e-6
    )

    def loss(p):
        return jnp.sum(jr.scan(cell, p, xs)[1] ** 2)

    g = jax.grad(loss)(params)
    eps = 1e-3
    e0 = jnp.zeros(H).at[0].set(eps)
    fd = (loss(params._replace(carry=e0)) - loss(params._replace(carry=-e0))) / (2 * eps)
    np.testing.assert_allclose(g.carry[0], fd, rtol=2e-2)


def test_resets_and_lengths_return_to_the_learned_carry():
    cell = jr.learnable_carry(jr.gru(IN, H), init=jax.nn.initializers.normal(1.0))
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (1, T, IN))
    resets = jnp.zeros((1, T), bool).at[0, 3].set(True)
    _, ys = jr.scan(cell, params, xs, resets=resets)
    _, second = jr.scan(cell, params, xs[:, 3:])
    np.testing.assert_allclose(ys[:, 3:], second, atol=1e-6)
    carry, _ = jr.scan(cell, params, xs, lengths=jnp.array([0]))
    assert not bool(carry.started.any())  # nothing ran
