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
import test_scan as scan_test
from helpers import assert_trees_close
from hypothesis import HealthCheck, Phase, given, settings
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


# --------------------------------------------------------------------------------------------
# Fuzz: random, often invalid, calls of jr.scan and the seq2seq/decoding entry points. Every
# call either raises a ValueError/TypeError whose message starts with an argument's name, or
# returns finite results equal to the Python-loop reference.

# No shrinking: a failure prints its (small) example as drawn; shrinking recompiles for minutes.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_T = (0, 1, 3)
FUZZ_CELLS = {
    "simple_rnn": CELLS["simple_rnn"],
    "gru": jr.gru(I, H, reset_after=True),
    "lstm-peephole-proj": CELLS["lstm-peephole-proj"],
    "jordan_rnn": CELLS["jordan_rnn"],
    "custom": scan_test.custom_cell(),
}
SCAN_ARGS = ("cell", "params", "xs", "carry", "lengths")


def named_error(excinfo, names) -> bool:
    """Whether an exception is a ValueError/TypeError whose message starts with one of
    ``names`` (as ``"name:"``, ``"name."``, ``"name["`` or ``"name must"``)."""
    if not isinstance(excinfo, ValueError | TypeError):
        return False
    message = str(excinfo)
    return any(message.startswith(n + sep) for n in names for sep in (":", ".", "[", " must"))


@functools.cache
def fuzz_params(name):
    if name == "custom":
        return FUZZ_CELLS[name].init(jax.random.key(1))
    shapes = jax.eval_shape(FUZZ_CELLS[name].init, jax.random.key(0))
    rng = np.random.default_rng(len(name))
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


@st.composite
def scan_calls(draw):
    name = draw(st.sampled_from(sorted(FUZZ_CELLS)))
    cell = FUZZ_CELLS[name]
    batch_shape = draw(st.sampled_from([(), (2,)]))
    num_steps = draw(st.sampled_from(FUZZ_T))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    dtypes = ["float32", "int32", "bool"] + ([] if name == "custom" else ["bfloat16"])
    xs_dtype = draw(st.sampled_from(dtypes))
    xs = rng.standard_normal((*batch_shape, num_steps, I)).astype(np.float32)
    xs = xs.astype(xs_dtype) if xs_dtype != "bfloat16" else jnp.asarray(xs, jnp.bfloat16)
    valid = xs_dtype in ("float32", "bfloat16")

    lengths_kind = draw(st.sampled_from(["none", "ok", "too-long", "negative", "float", "shape"]))
    lengths = None
    if lengths_kind == "ok":
        lengths = rng.integers(0, num_steps + 1, size=batch_shape).astype(np.int32)
    elif lengths_kind == "too-long":
        lengths = np.full(batch_shape, num_steps + 1, np.int32)
    elif lengths_kind == "negative":
        lengths = np.full(batch_shape, -1, np.int32)
    elif lengths_kind == "float":
        lengths = np.full(batch_shape, 1.0, np.float32)
    elif lengths_kind == "shape":
        lengths = np.zeros((*batch_shape, 3), np.int32)
    valid &= lengths_kind in ("none", "ok")

    carry_kind = draw(st.sampled_from(["none", "ok", "shape", "dtype"]))
    carry = None
    if carry_kind != "none":
        shapes = jax.eval_shape(lambda: cell.initial_carry(batch_shape))
        shape_of = (lambda s: (*s.shape, 2)) if carry_kind == "shape" else (lambda s: s.shape)
        dtype = np.int32 if carry_kind == "dtype" else np.float32
        carry = jax.tree.map(lambda s: (rng.standard_normal(shape_of(s))).astype(dtype), shapes)
    valid &= carry_kind in ("none", "ok")

    params_kind = draw(st.sampled_from(["ok", "ok", "other", "none"]))
    params = fuzz_params(name)
    if params_kind == "other":
        other = {"gru": "simple_rnn"}.get(name, "gru")
        params = fuzz_params(other)
        valid &= name == "custom"  # a custom cell takes any params... and then fails its way
    elif params_kind == "none":
        params = None
        valid &= False
    options = dict(
        reverse=draw(st.booleans()),
        time_major=draw(st.booleans()),
        remat=draw(st.sampled_from([False, True, "sqrt"])),
        hoist=draw(st.booleans()),
    )
    return name, params, xs, carry, lengths, options, valid


@FUZZ
@given(call=scan_calls())
def test_fuzz_scan(call):
    name, params, xs, carry, lengths, options, valid = call
    cell = FUZZ_CELLS[name]
    if name == "custom" and params is not fuzz_params(name):
        return  # a custom cell's params are its own business: nothing jaxrnn can check
    xs_in = jnp.moveaxis(jnp.asarray(xs), -2, 0) if options["time_major"] else xs
    try:
        got_carry, got_ys = jr.scan(cell, params, xs_in, carry, lengths=lengths, **options)
    except (ValueError, TypeError) as err:
        assert not valid, f"a valid call raised {err!r}"
        assert named_error(err, SCAN_ARGS), f"error does not name an argument: {err!r}"
        return
    assert valid, "an invalid call returned"
    if options["time_major"]:
        got_ys = jnp.moveaxis(got_ys, 0, -2)
    xs32 = jnp.asarray(xs, jnp.float32)
    ref = scan_test.loop_scan(
        cell,
        params,
        xs32,
        carry if carry is not None else cell.initial_carry(xs32.shape[:-2]),
        lengths,
        options["reverse"],
    )
    tol = 2e-2 if jnp.asarray(xs).dtype == jnp.bfloat16 else 1e-5
    for leaf in jax.tree.leaves((got_carry, got_ys)):
        assert np.isfinite(np.asarray(leaf, np.float32)).all()
    assert_trees_close(
        jax.tree.map(lambda a: np.asarray(a, np.float32), (got_carry, got_ys)),
        jax.tree.map(lambda a: np.asarray(a, np.float32), ref),
        rtol=tol,
        atol=tol,
    )


S2S_V = 7  # source and target vocabulary
S2S = jr.seq2seq.encoder_decoder(
    jr.rnn(jr.gru, 3, 4),
    jr.gru(3 + 4, 4),
    src_vocab=S2S_V,
    tgt_vocab=S2S_V,
    attention=jr.attention.dot(4),
)
S2S_ARGS = (
    "src",
    "tgt_in",
    "src_lengths",
    "lengths",
    "bos_id",
    "eos_id",
    "max_len",
    "beam_size",
    "length_penalty",
    "temperature",
    "top_k",
    "rate",
)


@functools.cache
def s2s_params():
    return S2S.init(jax.random.key(0))


def loop_teacher_forcing(params, src, tgt_in, src_lengths, tgt_lengths):
    """Reference logits: ``decode_step`` called step by step, zero past ``tgt_lengths``."""
    state = S2S.encode(params, src, src_lengths)
    step = S2S.decode_step(params)
    logits = []
    for t in range(tgt_in.shape[1]):
        state, z = step(state, jnp.asarray(tgt_in[:, t]))
        logits.append(z)
    logits = jnp.stack(logits, axis=1)
    if tgt_lengths is not None:
        valid = np.arange(tgt_in.shape[1])[None, :] < np.asarray(tgt_lengths)[:, None]
        logits = jnp.where(valid[..., None], logits, 0.0)
    return logits


def loop_greedy(params, src, src_lengths, bos_id, eos_id, max_len):
    state = S2S.encode(params, src, src_lengths)
    step = S2S.decode_step(params)
    batch = src.shape[0]
    last, finished = np.full(batch, bos_id, np.int32), np.zeros(batch, bool)
    out = np.full((batch, max_len), eos_id, np.int32)
    for t in range(max_len):
        if finished.all():
            break
        state, z = step(state, jnp.asarray(last))
        tok = np.where(finished, eos_id, np.asarray(jnp.argmax(z, axis=-1))).astype(np.int32)
        out[:, t] = tok
        finished |= tok == eos_id
        last = tok
    return out


ids_st = st.sampled_from(["ok", "high", "negative", "padding-high", "float"])
scalar_st = st.sampled_from(
    [0.0, 0.5, 1.0, 1.5, -0.5, float("nan"), float("inf"), np.float32(0.7), "x", True]
)


def random_ids(rng, kind, shape, lengths):
    ids = rng.integers(0, S2S_V, size=shape).astype(np.int32)
    if kind == "high":
        ids[0, 0] = S2S_V
    elif kind == "negative":
        ids[-1, 0] = -1
    elif kind == "padding-high":  # past the lengths: padding, must be accepted
        pad = np.arange(shape[1])[None, :] >= lengths[:, None]
        ids = np.where(pad, S2S_V + 3, ids).astype(np.int32)
    elif kind == "float":
        ids = ids.astype(np.float32)
    return ids


@settings(FUZZ, max_examples=25)
@given(
    seed=seeds,
    src_kind=ids_st,
    tgt_kind=ids_st,
    entry=st.sampled_from(["apply", "encode", "scheduled", "greedy", "beam", "sample"]),
    scalar=scalar_st,
    token=st.sampled_from([0, 2, S2S_V - 1, S2S_V, -1]),
    use_lengths=st.booleans(),
)
def test_fuzz_seq2seq_and_decoding(seed, src_kind, tgt_kind, entry, scalar, token, use_lengths):
    rng = np.random.default_rng(seed)
    params = s2s_params()
    B, S, U = 2, 4, 3
    src_lengths = np.array([S, 2], np.int32) if use_lengths else None
    tgt_lengths = np.array([U, 1], np.int32) if use_lengths else None
    lens_src = src_lengths if use_lengths else np.full(B, S)
    lens_tgt = tgt_lengths if use_lengths else np.full(B, U)
    src = random_ids(rng, src_kind, (B, S), lens_src)
    tgt = random_ids(rng, tgt_kind, (B, U), lens_tgt)
    src_ok = src_kind in ("ok", "padding-high")  # ids past the lengths are padding
    tgt_ok = tgt_kind in ("ok", "padding-high")
    is_number = isinstance(scalar, float | np.floating) and not isinstance(scalar, bool)
    finite = is_number and np.isfinite(scalar)
    token_ok = 0 <= token < S2S_V
    if entry == "apply":
        valid = src_ok and tgt_ok
        call = lambda: S2S.apply(params, src, tgt, src_lengths=src_lengths, tgt_lengths=tgt_lengths)
    elif entry == "encode":
        valid = src_ok
        call = lambda: S2S.encode(params, src, src_lengths)
    elif entry == "scheduled":
        valid = src_ok and tgt_ok and finite and 0 <= scalar <= 1
        call = lambda: S2S.scheduled_sampling(
            params, src, tgt, jax.random.key(seed % 7), rate=scalar, src_lengths=src_lengths,
            tgt_lengths=tgt_lengths,
        )  # fmt: skip
    elif entry == "greedy":
        valid = src_ok and token_ok
        call = lambda: jr.seq2seq.generate(
            S2S, params, src, src_lengths, bos_id=1, eos_id=token, max_len=3
        )
    elif entry == "beam":
        valid = src_ok and token_ok and finite and scalar >= 0
        call = lambda: jr.seq2seq.generate(
            S2S, params, src, src_lengths, bos_id=token, eos_id=2, max_len=3, beam_size=2,
            length_penalty=scalar,
        )  # fmt: skip
    else:
        valid = src_ok and token_ok and finite and scalar > 0
        call = lambda: jr.decode.sample(
            S2S.decode_step(params), S2S.encode(params, src, src_lengths) if src_ok else None,
            jax.random.key(seed % 7), bos_id=token, eos_id=2, max_len=3, temperature=scalar,
        )  # fmt: skip
        if not src_ok:  # encode's own error is what this call must raise
            call = lambda: S2S.encode(params, src, src_lengths)

    try:
        out = call()
    except (ValueError, TypeError) as err:
        assert not valid, f"a valid call raised {err!r}"
        assert named_error(err, S2S_ARGS), f"error does not name an argument: {err!r}"
        return
    assert valid, f"an invalid call returned ({entry})"
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)) | (np.asarray(leaf) == -np.inf))
    if entry == "apply":
        clean_src = np.where(np.arange(S)[None] < lens_src[:, None], src, 0)
        clean_tgt = np.where(np.arange(U)[None] < lens_tgt[:, None], tgt, 0)
        ref = loop_teacher_forcing(params, clean_src, clean_tgt, src_lengths, tgt_lengths)
        np.testing.assert_allclose(out.logits, ref, rtol=1e-5, atol=1e-5)
    elif entry == "greedy":
        clean_src = np.where(np.arange(S)[None] < lens_src[:, None], src, 0)
        ref = loop_greedy(params, clean_src, src_lengths, 1, token, 3)
        np.testing.assert_array_equal(out, ref)
