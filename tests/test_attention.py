"""Attention scores, masking and the attention decoder cell.

References: float64 NumPy implementations of the score equations, written per example and per
memory position; the decoder cell against a Python loop of the wrapped cell's ``apply`` fed
``[x; c]`` with ``c`` from the NumPy attention reference.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn import attention

B, T, Q, K, A = 3, 5, 4, 6, 7  # batch, memory length, query, key and score-hidden sizes
LENGTHS = np.array([5, 2, 0])  # the last row is fully masked


def _rand(seed, shape, dtype=jnp.float32):
    """Test inputs from NumPy's generator (cheap: no per-shape XLA compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _mask(lengths=LENGTHS, t=T):
    return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


def _np_softmax_masked(e, m):
    """Masked softmax of one row in float64; zeros for a fully masked row."""
    if not m.any():
        return np.zeros_like(e)
    z = np.where(m, np.exp(e - e[m].max()), 0.0)
    return z / z.sum()


def _np_scores(kind, p, s, h, opts):
    """Scores e_t = a(s, h_t) for one query s (Q,) and keys h (T, K), from the equations."""
    if kind == "additive":
        W_s, W_h, v = np.asarray(p.w_q).T, np.asarray(p.w_k).T, np.asarray(p.v)
        if opts.get("normalize"):
            v = float(p.g) * v / np.linalg.norm(v)
        b = np.asarray(p.b) if p.b is not None else 0.0
        return np.array([v @ np.tanh(W_s @ s + W_h @ h_t + b) for h_t in h])
    if kind == "dot":
        e = np.array([s @ h_t for h_t in h])
    else:  # general
        W_a = np.asarray(p.w)
        e = np.array([s @ W_a @ h_t for h_t in h])
    return e / np.sqrt(h.shape[-1]) if opts.get("scaled") else e


def _np_attention(kind, p, s, h, vals, m, opts):
    e = _np_scores(kind, p, s, h, opts)
    alpha = _np_softmax_masked(e, m)
    return alpha @ vals, alpha


# (id, kind, factory(dtype) -> Attention, options)
SCORES = [
    ("additive", "additive", lambda dt: attention.additive(Q, K, A, param_dtype=dt), {}),
    (
        "additive-bias",
        "additive",
        lambda dt: attention.additive(Q, K, A, bias=True, param_dtype=dt),
        {},
    ),
    (
        "additive-normalize",
        "additive",
        lambda dt: attention.additive(Q, K, A, normalize=True, param_dtype=dt),
        {"normalize": True},
    ),
    ("dot", "dot", lambda dt: attention.dot(K, dtype=dt), {}),
    ("dot-scaled", "dot", lambda dt: attention.dot(K, scaled=True, dtype=dt), {"scaled": True}),
    ("general", "general", lambda dt: attention.general(Q, K, param_dtype=dt), {}),
    (
        "general-scaled",
        "general",
        lambda dt: attention.general(Q, K, scaled=True, param_dtype=dt),
        {"scaled": True},
    ),
]
SCORE_IDS = [s[0] for s in SCORES]


def _random_params(model, dtype=jnp.float32):
    """Random N(0, 1) values for every leaf of ``model.init``'s params (nonzero biases too)."""
    shapes = jax.eval_shape(model.init, jax.random.key(1))
    leaves, tree = jax.tree.flatten(shapes)
    return jax.tree.unflatten(tree, [_rand(i, x.shape, dtype) for i, x in enumerate(leaves)])


def _inputs(kind, dtype, values_size=None):
    q_size = K if kind == "dot" else Q
    query = _rand(10, (B, q_size), dtype)
    keys = _rand(11, (B, T, K), dtype)
    values = None if values_size is None else _rand(12, (B, T, values_size), dtype)
    return query, keys, values


@pytest.mark.parametrize(("name", "kind", "factory", "opts"), SCORES, ids=SCORE_IDS)
def test_matches_numpy_reference(name, kind, factory, opts):
    # Keys are values for the additive scores; separate values for the multiplicative ones.
    values_size = None if kind == "additive" else 3
    with jax.enable_x64(True):
        attn = factory(jnp.float64)
        params = _random_params(attn, jnp.float64)
        query, keys, values = _inputs(kind, jnp.float64, values_size)
        mask = _mask()
        context, weights = jax.jit(attn.apply)(params, query, keys, values, jnp.asarray(mask))
        vals = keys if values is None else values
        for b in range(B):
            ctx_ref, w_ref = _np_attention(
                kind,
                params,
                np.asarray(query[b]),
                np.asarray(keys[b]),
                np.asarray(vals[b]),
                mask[b],
                opts,
            )
            np.testing.assert_allclose(np.asarray(weights[b]), w_ref, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(np.asarray(context[b]), ctx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "kind", "factory", "opts"), SCORES, ids=SCORE_IDS)
def test_mask_semantics_and_finite_gradients(name, kind, factory, opts):
    attn = factory(jnp.float32)
    params = _random_params(attn)
    query, keys, _ = _inputs(kind, jnp.float32)
    mask = jnp.asarray(_mask())
    # Padding holds NaN: it must not be read, in values or in gradients.
    keys = jnp.where(mask[..., None], keys, jnp.nan)

    def loss(params, query, keys):
        c, a = attn.apply(params, query, keys, mask=mask)
        return jnp.sum(jnp.sin(c)) + jnp.sum(a * jnp.arange(T, dtype=a.dtype)), (c, a)

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    grads, (context, weights) = grad_fn(params, query, keys)
    w = np.asarray(weights)
    assert np.all(w[~np.asarray(mask)] == 0.0)  # exactly zero at padded keys
    np.testing.assert_allclose(w[:2].sum(-1), 1.0, rtol=1e-6)  # rows with valid keys
    assert np.all(w[2] == 0.0) and np.all(np.asarray(context[2]) == 0.0)  # fully masked row
    assert np.all(np.isfinite(np.asarray(context)))
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    g_query, g_keys = np.asarray(grads[1]), np.asarray(grads[2])
    assert np.all(g_query[2] == 0.0)  # the fully masked row depends on nothing
    assert np.all(g_keys[~np.asarray(mask)] == 0.0)  # padding gets no gradient


@pytest.mark.parametrize(
    ("name", "kind", "factory", "opts"), [SCORES[2], SCORES[6]], ids=[SCORE_IDS[2], SCORE_IDS[6]]
)
def test_gradients_match_finite_differences(name, kind, factory, opts):
    with jax.enable_x64(True):
        attn = factory(jnp.float64)
        params = _random_params(attn, jnp.float64)
        query, keys, values = _inputs(kind, jnp.float64, values_size=2)
        mask = jnp.asarray(_mask([5, 3, 0]))
        f = jax.jit(lambda p, q, k, v: attn.apply(p, q, k, v, mask))
        check_grads(f, (params, query, keys, values), order=1, modes=["rev"], eps=1e-6)


def test_apply_equals_precompute_then_attend():
    attn = attention.additive(Q, K, A, normalize=True)
    params = _random_params(attn)
    query, keys, values = _inputs("additive", jnp.float32, values_size=2)
    mask = jnp.asarray(_mask())
    memory = jax.jit(attn.precompute)(params, keys, values, mask)
    assert isinstance(memory, attention.Memory) and memory.keys.shape == (B, T, A)
    assert_trees_close(
        jax.jit(attn.apply)(params, query, keys, values, mask),
        jax.jit(attn.attend)(params, memory, query),
    )


def test_any_number_of_batch_dims():
    attn = attention.general(Q, K)
    params = _random_params(attn)
    query, keys = _rand(0, (2, 3, Q)), _rand(1, (2, 3, T, K))
    mask = jnp.arange(T) < jnp.array([[5, 1, 0], [2, 3, 4]])[..., None]
    apply = jax.jit(attn.apply)
    context, weights = apply(params, query, keys, mask=mask)
    assert context.shape == (2, 3, K) and weights.shape == (2, 3, T)
    single_c, single_w = apply(params, query[1, 2], keys[1, 2], mask=mask[1, 2])
    np.testing.assert_allclose(context[1, 2], single_c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weights[1, 2], single_w, rtol=1e-6, atol=1e-6)


def test_masked_softmax_and_length_mask():
    e = jnp.array([[3.0, -1.0, 2.0], [1e30, 0.0, 0.0], [5.0, 5.0, 5.0]])
    m = jnp.array([[True, False, True], [False, True, True], [False, False, False]])
    w = np.asarray(attention.masked_softmax(e, m))
    np.testing.assert_allclose(w[0], [1 / (1 + np.exp(-1)), 0.0, 1 / (1 + np.exp(1))], rtol=1e-6)
    np.testing.assert_allclose(w[1], [0.0, 0.5, 0.5])  # a huge masked score is ignored
    assert np.all(w[2] == 0.0)
    assert attention.length_mask(jnp.array([0, 2]), 3).tolist() == [
        [False, False, False],
        [True, True, False],
    ]


# --------------------------------------------------------------------------------------------
# The attention decoder cell.

E, S = 3, 4  # decoder input features, memory length for the decoder tests

DECODER_CELLS = [
    ("gru", lambda h: jr.gru(E + K, h)),
    ("lstm-proj", lambda h: jr.lstm(E + K, 8, proj_size=h)),
    ("simple_rnn", lambda h: jr.simple_rnn(E + K, h)),
]


def _decoder_case(make_cell, kind="additive"):
    H = 5
    cell = make_cell(H)
    attn = {
        "additive": attention.additive(H, K, A, bias=True),
        "general": attention.general(H, K, scaled=True),
    }[kind]
    dec = attention.decoder(cell, attn)
    params = _random_params(dec)
    memory_in = _rand(20, (B, S, K))
    mask = jnp.arange(S) < jnp.array([4, 1, 3])[:, None]
    xs = _rand(21, (B, 6, E))
    return cell, attn, dec, params, memory_in, mask, xs


@pytest.mark.parametrize(("name", "make_cell"), DECODER_CELLS, ids=[c[0] for c in DECODER_CELLS])
def test_decoder_cell_matches_loop_reference(name, make_cell):
    cell, _, dec, params, memory_in, mask, xs = _decoder_case(make_cell)
    bound = dec.bind(dec.precompute(params, memory_in, mask=mask))
    lengths = jnp.array([6, 3, 0])
    carry, ys = jax.jit(lambda p, x, n: jr.scan(bound, p, x, lengths=n))(params, xs, lengths)
    assert isinstance(ys, attention.DecoderOutput)
    assert ys.output.shape == (B, 6, cell.output_size + K) and ys.weights.shape == (B, 6, S)

    cell_apply = jax.jit(cell.apply)
    # Reference: per example, a Python loop; the query is h of the previous state, the context
    # comes from the NumPy attention reference, the cell step from cell.apply on [x; c].
    for b in range(B):
        c_b = jax.tree.map(lambda leaf, b=b: leaf[b], cell.initial_carry((B,)))
        for t in range(int(lengths[b])):
            s_prev = c_b.h if hasattr(c_b, "h") else c_b
            ctx, alpha = _np_attention(
                "additive",
                params.attention,
                np.asarray(s_prev, np.float64),
                np.asarray(memory_in[b], np.float64),
                np.asarray(memory_in[b], np.float64),
                np.asarray(mask[b]),
                {},
            )
            x = jnp.concatenate([xs[b, t], jnp.asarray(ctx, jnp.float32)])
            c_b, h = cell_apply(params.cell, c_b, x)
            np.testing.assert_allclose(ys.weights[b, t], alpha, rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose(ys.output[b, t, : h.shape[-1]], h, rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose(ys.output[b, t, h.shape[-1] :], ctx, rtol=2e-5, atol=2e-6)
        assert_trees_close(jax.tree.map(lambda leaf, b=b: leaf[b], carry), c_b, 2e-5, 2e-6)
        assert np.all(np.asarray(ys.weights[b, int(lengths[b]) :]) == 0.0)  # past the end


def test_decoder_alignment_history_and_gradients():
    _, _, dec, params, memory_in, mask, xs = _decoder_case(DECODER_CELLS[1][1], "general")

    def loss(params, memory_in):
        bound = dec.bind(dec.precompute(params, memory_in, mask=mask))
        _, ys = jr.scan(bound, params, xs)
        return jnp.sum(ys.output**2), ys.weights

    (_, weights), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, memory_in
    )
    w = np.asarray(weights)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)  # every step, every example
    assert np.all(w[~np.broadcast_to(np.asarray(mask)[:, None, :], w.shape)] == 0.0)
    assert np.all(np.asarray(grads[1])[~np.asarray(mask)] == 0.0)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.any(np.asarray(grads[0].attention.w) != 0.0)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _all_eqns(jaxpr, skip_scans):
    for eqn in jaxpr.eqns:
        yield eqn
        if not (skip_scans and eqn.primitive.name == "scan"):
            for sub in _sub_jaxprs(eqn):
                yield from _all_eqns(sub, skip_scans)


def _scan_bodies(jaxpr):
    """Yield the body jaxprs of every scan in ``jaxpr``, recursively."""
    for eqn in jaxpr.eqns:
        for sub in _sub_jaxprs(eqn):
            if eqn.primitive.name == "scan":
                yield sub
            yield from _scan_bodies(sub)


def test_memory_projection_is_computed_once_not_per_step():
    # Key size 11 and score size 13 appear nowhere else: a per-step W_h h would be a
    # dot_general of a (.., 11) operand with the (11, 13) matrix inside the loop.
    cell = jr.gru(E + 11, 5)
    dec = attention.decoder(cell, attention.additive(5, 11, 13))
    params = _random_params(dec)
    memory_in = _rand(3, (2, S, 11))

    def run(params, memory_in, xs):
        return jr.scan(dec.bind(dec.precompute(params, memory_in)), params, xs)[1].output

    jaxpr = jax.make_jaxpr(run)(params, memory_in, _rand(4, (2, 6, E))).jaxpr
    bodies = list(_scan_bodies(jaxpr))
    assert bodies, "expected a scan"
    for body in bodies:
        for eqn in body.eqns:
            if eqn.primitive.name == "dot_general":
                shapes = [tuple(v.aval.shape) for v in eqn.invars]
                assert (11, 13) not in shapes, f"keys projected inside the loop: {shapes}"
    outside = [
        tuple(v.aval.shape)
        for eqn in _all_eqns(jaxpr, skip_scans=True)
        if eqn.primitive.name == "dot_general"
        for v in eqn.invars
    ]
    assert outside.count((11, 13)) == 1  # ...but once, outside it


def test_bad_inputs_raise_clear_errors():
    attn = attention.additive(Q, K, A)
    params = _random_params(attn)
    query, keys = _rand(0, (B, Q)), _rand(1, (B, T, K))
    with pytest.raises(ValueError, match="keys: expected feature size"):
        attn.apply(params, query, keys[..., :2])
    with pytest.raises(ValueError, match="query: expected feature size"):
        attn.apply(params, query[:, :2], keys)
    with pytest.raises(ValueError, match="query: expected batch shape"):
        attn.apply(params, query[:2], keys)
    with pytest.raises(ValueError, match="values: expected shape"):
        attn.apply(params, query, keys, _rand(2, (B, T + 1, 3)))
    with pytest.raises(TypeError, match="mask: expected a bool array"):
        attn.apply(params, query, keys, mask=jnp.ones((B, T), jnp.int32))
    with pytest.raises(ValueError, match="mask: expected shape"):
        attn.apply(params, query, keys, mask=jnp.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="keys: expected at least 2 dims"):
        attn.apply(params, query, keys[0, 0])
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        attention.additive(Q, K, 0)
    with pytest.raises(ValueError, match=r"input_size .* context size"):
        attention.decoder(jr.gru(K, 5), attention.additive(5, K, A))
    with pytest.raises(ValueError, match="query_size 4 must be the size of the decoder state"):
        attention.decoder(jr.gru(E + K, 5), attention.additive(4, K, A))
    with pytest.raises(TypeError, match="cannot find the hidden state"):
        weird = jr.gru(E + K, 5)._replace(initial_carry=lambda b=(), dtype=jnp.float32: {"x": 1})
        attention.decoder(weird, attention.additive(5, K, A))
    dec = attention.decoder(jr.gru(E + K, 5), attention.additive(5, K, A))
    p = _random_params(dec)
    with pytest.raises(ValueError, match="values: expected feature size 6"):
        dec.precompute(p, keys, _rand(2, (B, T, 3)))
    bound = dec.bind(dec.precompute(p, keys))
    with pytest.raises(ValueError, match="query: expected batch shape"):
        jr.scan(bound, p, _rand(3, (B + 1, 2, E)))
