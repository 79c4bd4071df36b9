"""Property tests of :func:`jaxrnn.scan` (hypothesis): invariances that must hold for any input.

* garbage (huge values, inf, NaN) beyond ``lengths`` changes nothing;
* a reversed scan with ``lengths`` equals flipping each unpadded sequence in time, scanning it
  forward and flipping the outputs back;
* scanning a sequence in two pieces, threading the carry from one into the other, equals one
  scan over the whole sequence (also with lengths and in reverse).

Shapes are fixed per property so that each jitted function compiles once per cell; hypothesis
varies the data, the lengths, the direction and the split point.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from helpers import assert_trees_close
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxrnn as jr

# Input, hidden, LSTM projection sizes; time steps; batch.
I, H, P, T, B = 3, 4, 2, 6, 3  # noqa: E741
CELLS = {
    "simple_rnn": jr.simple_rnn(I, H),
    "gru": jr.gru(I, H),
    "lstm-peephole-proj": jr.lstm(I, H, peephole=True, proj_size=P),
    "jordan_rnn": jr.jordan_rnn(I, H, 2),
}
PROPERTY = settings(max_examples=25, deadline=None, database=None)

seeds = st.integers(0, 2**32 - 1)
lengths_st = st.lists(st.integers(0, T), min_size=B, max_size=B).map(
    lambda v: np.array(v, np.int32)
)


@functools.cache
def params_of(name):
    shapes = jax.eval_shape(CELLS[name].init, jax.random.key(0))
    rng = np.random.default_rng(len(name))
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


def random_inputs(name, seed, num_steps=T):
    """Random ``(xs, carry)`` for batch ``B``."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((B, num_steps, I)).astype(np.float32)
    shapes = jax.eval_shape(lambda: CELLS[name].initial_carry((B,)))
    carry = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    return xs, carry


@functools.cache
def scan_fn(name, reverse):
    """Jitted ``(params, xs, carry, lengths) -> scan(...)``; ``lengths`` is traced."""
    cell = CELLS[name]
    return jax.jit(
        lambda params, xs, carry, lengths: jr.scan(
            cell, params, xs, carry, lengths=lengths, reverse=reverse
        )
    )


def padding_mask(lengths, num_steps=T):
    """``(B, T)`` boolean, True at the padded steps ``t >= length``."""
    return np.arange(num_steps)[None, :] >= lengths[:, None]


@PROPERTY
@given(
    name=st.sampled_from(sorted(CELLS)),
    reverse=st.booleans(),
    lengths=lengths_st,
    seed=seeds,
    fill=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, "random"]),
)
def test_padding_is_never_read(name, reverse, lengths, seed, fill):
    xs, carry = random_inputs(name, seed)
    pad = padding_mask(lengths)[..., None]
    if fill == "random":
        garbage = 1e3 * np.random.default_rng(seed + 1).standard_normal(xs.shape)
    else:
        garbage = np.full(xs.shape, fill)
    clean = np.where(pad, np.float32(0), xs)
    dirty = np.where(pad, garbage.astype(np.float32), xs)
    fn = scan_fn(name, reverse)
    c_clean, y_clean = fn(params_of(name), clean, carry, lengths)
    c_dirty, y_dirty = fn(params_of(name), dirty, carry, lengths)
    assert_trees_close((c_dirty, y_dirty), (c_clean, y_clean), rtol=0, atol=0)
    assert np.all(np.asarray(y_dirty)[np.broadcast_to(pad, y_dirty.shape)] == 0)


def flip_valid(a, lengths):
    """Reverse the first ``length`` steps of each sequence of ``a (B, T, ...)`` in time."""
    t = np.arange(a.shape[1])[None, :]
    index = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return np.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)


@PROPERTY
@given(name=st.sampled_from(sorted(CELLS)), lengths=lengths_st, seed=seeds)
def test_reverse_equals_forward_on_flipped_sequences(name, lengths, seed):
    xs, carry = random_inputs(name, seed)
    params = params_of(name)
    got = scan_fn(name, True)(params, xs, carry, lengths)
    c_fwd, y_fwd = scan_fn(name, False)(params, flip_valid(xs, lengths), carry, lengths)
    assert_trees_close(got, (c_fwd, flip_valid(np.asarray(y_fwd), lengths)), rtol=1e-5, atol=1e-5)


@PROPERTY
@given(
    name=st.sampled_from(["gru", "lstm-peephole-proj"]),
    reverse=st.booleans(),
    use_lengths=st.booleans(),
    lengths=lengths_st,
    split=st.integers(0, T),
    seed=seeds,
)
def test_split_sequence_threads_carry(name, reverse, use_lengths, lengths, split, seed):
    xs, carry = random_inputs(name, seed)
    params, fn = params_of(name), scan_fn(name, reverse)
    if not use_lengths:
        lengths = np.full(B, T, np.int32)
    head_lengths = np.minimum(lengths, split)
    tail_lengths = np.clip(lengths - split, 0, T - split)
    head, tail = xs[:, :split], xs[:, split:]

    if reverse:  # the tail runs first, from each sequence's last valid step
        c, y_tail = fn(params, tail, carry, tail_lengths)
        c, y_head = fn(params, head, c, head_lengths)
    else:
        c, y_head = fn(params, head, carry, head_lengths)
        c, y_tail = fn(params, tail, c, tail_lengths)

    expected = fn(params, xs, carry, lengths)
    assert_trees_close((c, jnp.concatenate([y_head, y_tail], axis=1)), expected, 1e-5, 1e-5)
