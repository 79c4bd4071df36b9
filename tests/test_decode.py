"""Greedy decoding, sampling and beam search.

References: a float64 NumPy copy of a tiny recurrent language model, decoded greedily by a
Python loop and enumerated exhaustively (every sequence up to ``max_len``) for the exact best
hypotheses; hand-built probability tables whose best sequences are computed by hand.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import decode

# A tiny recurrent model: h' = tanh(h W + E[token]), logits = h' R.  EOS = 0, BOS = V - 1.
V, H = 4, 6
EOS, BOS = 0, V - 1
_rng = np.random.default_rng(0)
EMB, W, R = _rng.normal(size=(V, H)), 0.8 * _rng.normal(size=(H, H)), 1.5 * _rng.normal(size=(H, V))
H0 = 0.5 * _rng.normal(size=(5, H))  # five different initial states = five "sources"


def step(h, tokens):
    h = jnp.tanh(h @ jnp.asarray(W, jnp.float32) + jnp.asarray(EMB, jnp.float32)[tokens])
    return h, h @ jnp.asarray(R, jnp.float32)


def np_step(h, token):
    h = np.tanh(h @ W + EMB[token])
    logits = h @ R
    return h, logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()


def np_greedy(h, max_len, pad=EOS):
    out, tok, done = [], BOS, False
    for _ in range(max_len):
        if done:
            out.append(pad)
            continue
        h, logp = np_step(h, tok)
        tok = int(np.argmax(logp))
        out.append(tok)
        done = tok == EOS
    return out


def brute_force(h0, max_len, alpha):
    """Every hypothesis (EOS-terminated, or max_len long without EOS) with its exact score."""
    hyps = {}
    for seq in itertools.product(range(V), repeat=max_len):
        h, tok, total, hyp = h0, BOS, 0.0, []
        for y in seq:
            h, logp = np_step(h, tok)
            total += logp[y]
            hyp.append(y)
            tok = y
            if y == EOS:
                break
        hyps[tuple(hyp)] = total / ((5.0 + len(hyp)) / 6.0) ** alpha
    return sorted(hyps.items(), key=lambda kv: -kv[1])


def _jit(decoder, step_fn, carry, *args, **kwargs):
    """Run a decoder under jit (one compilation instead of many eager ops)."""
    return jax.jit(lambda c, *a: decoder(step_fn, c, *a, **kwargs))(carry, *args)


def _carry(n=None):
    return jnp.asarray(H0[:n], jnp.float32)


# --------------------------------------------------------------------------------------------
# Greedy.


def test_greedy_matches_python_loop():
    max_len = 6
    tokens = jax.jit(
        lambda c: decode.greedy(step, c, bos_id=BOS, eos_id=EOS, max_len=max_len, pad_id=2)
    )(_carry())
    assert tokens.shape == (len(H0), max_len) and tokens.dtype == jnp.int32
    for b in range(len(H0)):
        assert tokens[b].tolist() == np_greedy(H0[b], max_len, pad=2)


def _table_step(table):
    """A Markov 'model': logits depend only on the previous token (table[prev] = p(next))."""
    logits = jnp.log(jnp.asarray(table, jnp.float32))
    return lambda carry, tokens: (carry, logits[tokens])


# Tokens: 0 = EOS, 1 = a, 2 = b, 3 = BOS.
TABLE = [
    [1.0, 1e-9, 1e-9, 1e-9],  # after EOS (never used: finished sequences are frozen)
    [0.30, 0.36, 0.34, 1e-9],  # after a: a is likeliest, EOS only 0.3
    [0.90, 0.05, 0.05, 1e-9],  # after b: EOS likely
    [1e-9, 0.55, 0.45, 1e-9],  # after BOS: a is likeliest
]


def test_eos_handling_and_padding():
    table = [list(row) for row in TABLE]
    table[3] = [0.6, 0.2, 0.2, 1e-9]  # first token EOS for everyone
    out = _jit(decode.greedy, _table_step(table), jnp.zeros((2, 1)), bos_id=3, eos_id=0, max_len=4)
    assert out.tolist() == [[0, 0, 0, 0]] * 2  # EOS, then pad = eos_id
    out = _jit(
        decode.greedy,
        _table_step(table),
        jnp.zeros((2, 1)),
        bos_id=3,
        eos_id=0,
        max_len=4,
        pad_id=3,
    )
    assert out.tolist() == [[0, 3, 3, 3]] * 2  # the EOS is kept, pad_id fills the rest
    tokens, scores = _jit(
        decode.beam_search,
        _table_step(table),
        jnp.zeros((1, 1)),
        bos_id=3,
        eos_id=0,
        beam_size=3,
        max_len=4,
        pad_id=3,
    )
    # Finished hypotheses keep their slot and score; one that never emits EOS ends at max_len.
    np.testing.assert_allclose(np.exp(scores[0]), [0.6, 0.2 * 0.9, 0.2 * 0.36**3], rtol=1e-5)
    assert tokens[0].tolist() == [[0, 3, 3, 3], [2, 0, 3, 3], [1, 1, 1, 1]]


# --------------------------------------------------------------------------------------------
# Beam search.


def test_beam_finds_what_greedy_misses():
    step_fn = _table_step(TABLE)
    greedy = _jit(decode.greedy, step_fn, jnp.zeros((1, 1)), bos_id=3, eos_id=0, max_len=4)
    assert greedy.tolist() == [[1, 1, 1, 1]]  # a a a a: never finishes
    tokens, scores = _jit(
        decode.beam_search, step_fn, jnp.zeros((1, 1)), bos_id=3, eos_id=0, beam_size=2, max_len=4
    )
    assert tokens[0, 0].tolist() == [2, 0, 0, 0]  # b EOS: 0.45 * 0.9
    np.testing.assert_allclose(scores[0, 0], np.log(0.45 * 0.9), rtol=1e-6)
    assert scores[0, 0] >= scores[0, 1]


def test_length_penalty_changes_the_winner_by_the_gnmt_formula():
    # [EOS]: p = 0.5, length 1;  [a, EOS]: p = 0.5 * 0.9, length 2.
    table = [[1.0, 1e-9, 1e-9], [0.9, 0.05, 0.05], [0.5, 0.5, 1e-9]]  # 0 EOS, 1 a, 2 BOS
    step_fn = _table_step(table)
    run = lambda alpha: _jit(
        decode.beam_search,
        step_fn,
        jnp.zeros((1, 1)),
        bos_id=2,
        eos_id=0,
        beam_size=2,
        max_len=3,
        length_penalty=alpha,
    )
    tokens, scores = run(0.0)
    assert tokens[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(scores[0], [np.log(0.5), np.log(0.45)], rtol=1e-6)
    tokens, scores = run(1.0)
    assert tokens[0, 0].tolist() == [1, 0, 0]
    lp = lambda n: (5.0 + n) / 6.0
    np.testing.assert_allclose(scores[0], [np.log(0.45) / lp(2), np.log(0.5) / lp(1)], rtol=1e-6)
    np.testing.assert_allclose(decode.length_penalty(jnp.array([2]), 1.0), [lp(2)], rtol=1e-6)


def test_beam_one_equals_greedy():
    max_len = 7
    greedy = _jit(decode.greedy, step, _carry(), bos_id=BOS, eos_id=EOS, max_len=max_len)
    tokens, scores = jax.jit(
        lambda c: decode.beam_search(step, c, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=max_len)
    )(_carry())
    assert tokens.shape == (len(H0), 1, max_len) and scores.shape == (len(H0), 1)
    assert tokens[:, 0].tolist() == greedy.tolist()


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_is_exhaustive_search(alpha):
    max_len = 3
    beam = V**max_len  # more slots than hypotheses: nothing is ever pruned
    tokens, scores = jax.jit(
        lambda c: decode.beam_search(
            step, c, bos_id=BOS, eos_id=EOS, beam_size=beam, max_len=max_len, length_penalty=alpha
        )
    )(_carry(3))
    for b in range(3):
        exact = brute_force(H0[b], max_len, alpha)
        n = len(exact)
        got = [tuple(int(t) for t in row) for row in np.asarray(tokens[b, :n])]
        for (hyp, score), row, s in zip(exact, got, np.asarray(scores[b, :n]), strict=True):
            assert row[: len(hyp)] == hyp and all(t == EOS for t in row[len(hyp) :])
            np.testing.assert_allclose(s, score, rtol=1e-5)
        assert np.all(np.isneginf(np.asarray(scores[b, n:])))  # empty slots


def test_beam_scores_are_sorted_and_match_rescoring():
    max_len, beam = 5, 3
    tokens, scores = _jit(
        decode.beam_search,
        step,
        _carry(),
        bos_id=BOS,
        eos_id=EOS,
        beam_size=beam,
        max_len=max_len,
        length_penalty=0.6,
    )
    assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # best first
    for b, k in itertools.product(range(len(H0)), range(beam)):
        h, tok, total, n = H0[b], BOS, 0.0, 0
        for y in np.asarray(tokens[b, k]):
            h, logp = np_step(h, tok)
            total, n, tok = total + logp[y], n + 1, int(y)
            if y == EOS:
                break
        np.testing.assert_allclose(scores[b, k], total / ((5.0 + n) / 6.0) ** 0.6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Sampling.


def test_sample_top1_and_cold_temperature_are_greedy():
    @jax.jit
    def run(carry, key):
        kw = dict(bos_id=BOS, eos_id=EOS, max_len=6)
        k1, k2 = jax.random.split(key)
        greedy = decode.greedy(step, carry, **kw)
        top1 = decode.sample(step, carry, k1, top_k=1, **kw)
        return greedy, top1, decode.sample(step, carry, k2, temperature=1e-4, **kw)

    greedy, top1, cold = run(_carry(), jax.random.key(0))
    assert top1.tolist() == greedy.tolist() and cold.tolist() == greedy.tolist()


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 2)])
def test_sample_distribution_of_two_token_prefixes(temperature, top_k):
    n = 4000
    carry = jnp.broadcast_to(jnp.asarray(H0[0], jnp.float32), (n, H))
    out = jax.jit(
        lambda c, k: decode.sample(
            step, c, k, bos_id=BOS, eos_id=EOS, max_len=2, temperature=temperature, top_k=top_k
        )
    )(carry, jax.random.key(1))

    def dist(h, tok):
        _, logp = np_step(h, tok)
        z = logp / temperature
        if top_k is not None:
            z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
        p = np.exp(z - z.max())
        return p / p.sum()

    h1, _ = np_step(H0[0], BOS)
    p1 = dist(H0[0], BOS)
    expected = {}
    for a in range(V):
        if a == EOS:
            expected[(a, EOS)] = p1[a]  # finished: padded with EOS
            continue
        p2 = dist(h1, a)
        for c in range(V):
            expected[(a, c)] = p1[a] * p2[c]
    counts = {}
    for row in np.asarray(out):
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    for seq, p in expected.items():
        freq = counts.pop(seq, 0) / n
        assert abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-3, (seq, freq, p)
    assert not counts, f"impossible sequences drawn: {counts}"


# --------------------------------------------------------------------------------------------
# Errors.


def test_bad_arguments_raise_clear_errors():
    carry = _carry()
    kw = dict(bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match=r"step: expected logits of shape \(batch=5, vocab\)"):
        decode.greedy(lambda c, t: (c, jnp.zeros((5,))), carry, max_len=3, **kw)
    with pytest.raises(ValueError, match="carry: every leaf must have the same leading"):
        decode.greedy(step, (carry, jnp.zeros((4, 2))), max_len=3, **kw)
    with pytest.raises(ValueError, match="carry: expected a pytree with at least one"):
        decode.greedy(step, (), max_len=3, **kw)
    with pytest.raises(ValueError, match="max_len must be an int >= 1"):
        decode.greedy(step, carry, max_len=0, **kw)
    with pytest.raises(ValueError, match=r"eos_id: 9 is not a token id"):
        decode.greedy(step, carry, bos_id=BOS, eos_id=9, max_len=3)
    with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
        decode.beam_search(step, carry, beam_size=0, max_len=3, **kw)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        decode.beam_search(step, carry, beam_size=2, max_len=3, length_penalty=-1.0, **kw)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        decode.sample(step, carry, jax.random.key(0), max_len=3, temperature=0.0, **kw)
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        decode.sample(step, carry, jax.random.key(0), max_len=3, top_k=0, **kw)
