"""Attention, seq2seq (encode, teacher forcing, scheduled sampling), decoding (greedy,
sampling, beam search) and the losses with the batch split over 8 devices equal one device,
under Explicit axes (with and without ``jax.set_mesh``), Auto axes and a ("data", "model")
mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from one_device import (
    HOWS,
    assert_close,
    check_grads_placed,
    clone_keys,
    compare,
    context,
    mesh_of,
    place_params,
    spec_of,
    split_rows,
)

import jaxrnn as jr

B, S, T, Q, K = 8, 6, 4, 4, 6

ATTENTIONS = {
    "additive": lambda: jr.attention.additive(Q, K, 5, bias=True, normalize=True),
    "dot": lambda: jr.attention.dot(K, scaled=True),
    "general": lambda: jr.attention.general(Q, K),
}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_attention_sharded_equals_one_device(name, how):
    attn = ATTENTIONS[name]()
    params = attn.init(jax.random.key(0))
    q_size = K if name == "dot" else Q
    query = jax.random.normal(jax.random.key(1), (B, q_size))
    keys = jax.random.normal(jax.random.key(2), (B, S, K))
    mask = jr.attention.length_mask(jnp.array([6, 1, 3, 6, 2, 5, 6, 4]), S)

    def loss(params, query, keys, mask):
        context, weights = attn.apply(params, query, keys, mask=mask)
        return jnp.sum(context**2) + jnp.sum(weights[:, 0]), (context, weights)

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))
    _, ((_, (ctx, w)), (grads, _)), _, placed = compare(
        f, params, (query, keys, mask), how, label=f"attention.{name}"
    )
    if how != "auto":
        assert spec_of(ctx)[0] == "data" and spec_of(w)[0] == "data"
        check_grads_placed(grads, placed, how)


def _model():
    return jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 5, 4, bidirectional=True),
        jr.lstm(6 + 8, 8),
        src_vocab=11,
        tgt_vocab=13,
        attention=jr.attention.additive(query_size=8, key_size=8, hidden_size=6),
    )


def _batch():
    src = jax.random.randint(jax.random.key(1), (B, S), 0, 11)
    src_len = jnp.array([6, 1, 3, 6, 2, 5, 6, 4])
    tgt = jax.random.randint(jax.random.key(2), (B, T), 0, 13)
    tgt_len = jnp.array([4, 2, 1, 4, 3, 4, 2, 4])
    return src, src_len, jr.seq2seq.shift_right(tgt, bos_id=1), tgt, tgt_len


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("mode", ["teacher_forcing", "scheduled_sampling"])
def test_seq2seq_sharded_equals_one_device(mode, how):
    model = _model()
    params = model.init(jax.random.key(0))

    def loss(params, src, src_len, tgt_in, tgt, tgt_len, key):
        if mode == "teacher_forcing":
            out = model.apply(params, src, tgt_in, src_lengths=src_len, tgt_lengths=tgt_len)
        else:
            out = model.scheduled_sampling(
                params, src, tgt_in, key, rate=0.5, src_lengths=src_len, tgt_lengths=tgt_len
            )
        ce = jr.losses.softmax_cross_entropy(out.logits, tgt, lengths=tgt_len, reduction="mean")
        return ce, out

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    data = (*_batch(), jax.random.key(5))
    _, ((_, out), grads), _, placed = compare(f, params, data, how, label=f"seq2seq.{mode}")
    if how != "auto":
        assert spec_of(out.logits)[0] == "data" and spec_of(out.weights)[0] == "data"
        check_grads_placed(grads, placed, how)


@pytest.mark.parametrize("how", HOWS)
def test_decoding_sharded_equals_one_device(how):
    """Greedy, sampled and beam-search tokens equal exactly, scores within tolerance."""
    model = _model()
    params = model.init(jax.random.key(0))

    def run(params, src, src_len, key):
        state = model.encode(params, src, src_len)
        step = model.decode_step(params)
        ids = dict(bos_id=1, eos_id=2, max_len=5)
        greedy = jr.decode.greedy(step, state, **ids)
        sampled = jr.decode.sample(step, state, key, temperature=2.0, **ids)
        beams, scores = jr.decode.beam_search(step, state, beam_size=3, length_penalty=0.6, **ids)
        return greedy, sampled, beams, scores

    f = jax.jit(run)
    src, src_len = _batch()[:2]
    data = (src, src_len, jax.random.key(9))
    one = f(params, *clone_keys(data))
    mesh = mesh_of(how)
    with context(how, mesh):
        eight = f(place_params(params, how, mesh), *split_rows(data, mesh))
    for a, b in zip(eight[:3], one[:3], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert_close(eight[3], one[3], label=f"beam scores[{how}]")
    if how != "auto":
        for x in eight:
            assert spec_of(x)[0] == "data", x.sharding


@pytest.mark.parametrize("how", HOWS)
def test_losses_sharded_equal_one_device(how):
    logits = jax.random.normal(jax.random.key(0), (B, T, 7))
    labels = jax.random.randint(jax.random.key(1), (B, T), 0, 7)
    targets = jax.random.bernoulli(jax.random.key(2), 0.5, (B, T)).astype(jnp.float32)
    lengths = jnp.array([4, 0, 1, 4, 3, 2, 4, 4])

    def loss(logits, labels, targets, lengths):
        ce = jr.losses.softmax_cross_entropy(logits, labels, lengths=lengths)
        mean = jr.losses.softmax_cross_entropy(logits, labels, lengths=lengths, reduction="mean")
        bce = jr.losses.sigmoid_binary_cross_entropy(logits[..., 0], targets, lengths=lengths)
        return jnp.sum(ce) + mean + jnp.sum(bce), (ce, bce)

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    mesh = mesh_of(how)
    one = f(logits, labels, targets, lengths)
    with context(how, mesh):
        eight = f(*split_rows((logits, labels, targets, lengths), mesh))
    assert_close(eight, one, label=f"losses[{how}]")
    if how != "auto":
        (_, (ce, bce)), g = eight
        assert spec_of(bce)[0] == "data"
        assert spec_of(ce)[0] == "data" and spec_of(g)[0] == "data"
