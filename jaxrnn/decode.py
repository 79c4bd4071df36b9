r"""Autoregressive decoding: greedy, sampling and beam search, with fixed-size buffers.

A decoding step is any function

``step(carry, tokens) -> (carry, logits)``

with ``tokens`` an ``int[batch]`` array (the previous token of every sequence), ``logits`` a
``[batch, vocab]`` array (unnormalised scores of the next token), and ``carry`` any pytree
whose leaves have a leading ``batch`` axis (e.g. an RNN state, plus an encoder memory to attend
to). Decoding starts by feeding ``bos_id``; a sequence ends with the first ``eos_id`` it emits.

Sharding: under an explicit mesh (``jax.make_mesh``), the tokens, scores and flags the loop
holds are split over the batch as the rows of ``carry`` are, and keep that sharding through
the loop; the results come out split by rows.

All decoders run inside ``jit`` as one ``jax.lax.while_loop`` over at most ``max_len`` steps
(stopping early once every sequence has finished), writing into preallocated
``[..., max_len]`` token buffers. The returned tokens exclude the BOS; a finished sequence
ends with its EOS, and every position after it holds ``pad_id`` (default: ``eos_id``). ``step``
may be called with ``pad_id`` for finished sequences (its outputs are then ignored), so
``pad_id`` must be a valid token id.

Arguments are checked before decoding: ``bos_id``, ``eos_id``, ``pad_id``, ``max_len``,
``beam_size`` and ``top_k`` are Python or NumPy ints (``bos_id``/``eos_id``/``pad_id`` in
``[0, vocab)``, the vocabulary size read from the logits' shape), ``temperature`` and
``length_penalty`` finite numbers in range (Python, NumPy or 0-d JAX scalars), ``key`` one PRNG
key. A traced ``temperature`` or ``length_penalty`` (under ``jax.jit``) is not range-checked.

NaN logits: no token can be chosen from a row of logits that holds a NaN (``argmax`` and
sampling would return an arbitrary one), so such a sequence (or beam hypothesis) ends at that
step with the token :data:`NAN_TOKEN` (``-1``, never a token id), followed by ``pad_id``; in
:func:`beam_search` its score is NaN and it ranks after every other hypothesis. ``step`` is fed
``pad_id`` after it, as after an EOS. To have it reported as an error instead, run the decoder
under ``jax.experimental.checkify.checkify(f, errors=checkify.user_checks)``: the error names
the step and how many sequences produced NaN logits (outside ``checkify`` this costs nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from jaxrnn import _sharding
from jaxrnn._checks import check_int, check_key, check_scalar
from jaxrnn._core import Array, PRNGKey

__all__ = ["NAN_TOKEN", "beam_search", "greedy", "length_penalty", "sample"]

Step = Callable[[Any, Array], tuple[Any, Array]]

#: The token written where a sequence's logits held a NaN (see the module docstring): not a
#: token id of any vocabulary, so it cannot pass for a decoded token.
NAN_TOKEN = -1


def _report_nan(nan: Array, t: Array) -> None:
    """Under ``checkify``, an error for the live sequences ``nan`` whose logits hold a NaN."""
    checkify.debug_check(
        ~jnp.any(nan),
        "step: the logits of {count} sequence(s) hold NaN at decoding step {t}; those "
        f"sequences end with NAN_TOKEN ({NAN_TOKEN}) outside checkify",
        count=jnp.sum(nan),
        t=t,
    )


def _batch_size(carry) -> int:
    leaves = jax.tree.leaves(carry)
    if not leaves:
        raise ValueError("carry: expected a pytree with at least one array leaf (batch axis 0)")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = [jnp.shape(leaf) for leaf in leaves]
        raise ValueError(
            f"carry: every leaf must have the same leading (batch) axis, got shapes {shapes}"
        )
    return sizes.pop()


def _rows_like_carry(state, carry):
    """``state`` with its arrays' leading (batch) axes sharded as the rows of ``carry``.

    Under an explicit mesh a loop carry must keep its type: the tokens, flags and outputs a
    decoding loop builds from scratch get the batch sharding of the decoder's carry.
    """
    mesh = _sharding.explicit_mesh(carry)
    if mesh is None:
        return state
    specs = [_sharding.batch_spec(leaf, (0,)) for leaf in jax.tree.leaves(carry) if jnp.ndim(leaf)]
    spec = next((s for s in specs if s is not None and s != (None,)), None)
    return _sharding.shard_like_batch(state, mesh, spec)


def _call_step(step: Step, carry, tokens: Array, batch: int):
    """Call ``step`` and check its logits at trace time; returns float32 log-probabilities."""
    new_carry, logits = step(carry, tokens)
    shape = jnp.shape(logits)
    if len(shape) != 2 or shape[0] != batch:
        raise ValueError(f"step: expected logits of shape (batch={batch}, vocab), got {shape}")
    log_probs = jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
    return new_carry, logits, log_probs


def _check_ids(vocab: int, **ids) -> None:
    for name, value in ids.items():
        if not 0 <= value < vocab:
            raise ValueError(f"{name}: {value} is not a token id of the vocabulary [0, {vocab})")


def _common(carry, bos_id, eos_id, max_len, pad_id):
    """``(batch, bos_id, eos_id, max_len, pad_id)``, the ints checked and made Python ints."""
    max_len = check_int("max_len", max_len, low=1)
    bos_id = check_int("bos_id", bos_id, low=0)
    eos_id = check_int("eos_id", eos_id, low=0)
    pad_id = eos_id if pad_id is None else check_int("pad_id", pad_id, low=0)
    return _batch_size(carry), bos_id, eos_id, max_len, pad_id


def _run_sequential(step, carry, pick, key, *, bos_id, eos_id, max_len, pad_id):
    """Shared loop of greedy decoding and sampling: ``pick(key, logits) -> tokens``.

    ``key`` (``None`` for greedy) is split at every step and the new half is passed to ``pick``.
    """
    batch, bos_id, eos_id, max_len, pad_id = _common(carry, bos_id, eos_id, max_len, pad_id)

    def body(state):
        t, key, carry, last, finished, out = state
        carry, logits, _ = _call_step(step, carry, last, batch)
        _check_ids(logits.shape[-1], bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
        sub = None
        if key is not None:
            key, sub = jax.random.split(key)
        tok = pick(sub, logits).astype(jnp.int32)
        nan = jnp.isnan(logits).any(axis=-1) & ~finished
        _report_nan(nan, t)
        tok = jnp.where(finished, pad_id, jnp.where(nan, NAN_TOKEN, tok))
        out = out.at[:, t].set(tok)
        finished = finished | nan | (tok == eos_id)
        new = t + 1, key, carry, jnp.where(nan, pad_id, tok), finished, out
        return _sharding.like(new, state)  # explicit meshes: the loop state keeps its type

    def cond(state):
        t, _, _, _, finished, _ = state
        return (t < max_len) & ~jnp.all(finished)

    state = (
        jnp.int32(0),
        key,
        carry,
        jnp.full((batch,), bos_id, jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.full((batch, max_len), pad_id, jnp.int32),
    )
    return jax.lax.while_loop(cond, body, _rows_like_carry(state, carry))[-1]


def greedy(
    step: Step,
    carry: Any,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    pad_id: int | None = None,
) -> Array:
    r"""Greedy decoding: :math:`y_t = \arg\max_v p(v \mid y_{<t})`.

    Args:
        step: ``step(carry, tokens) -> (carry, logits)`` (see the module docstring).
        carry: the initial carry, leaves with a leading batch axis.
        bos_id: token fed at the first step.
        eos_id: token that ends a sequence.
        max_len: number of tokens to generate at most.
        pad_id: token written after a sequence's EOS (default ``eos_id``).

    Returns:
        ``int32 [batch, max_len]``, without the BOS.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> table = jnp.log(jnp.array([[.1, .6, .3], [.7, .1, .2], [.2, .2, .6]]))  # p(next | last)
    >>> step = lambda carry, tokens: (carry, table[tokens])
    >>> jr.decode.greedy(step, jnp.zeros((1, 1)), bos_id=2, eos_id=0, max_len=4).tolist()
    [[2, 2, 2, 2]]
    >>> jr.decode.greedy(step, jnp.zeros((1, 1)), bos_id=0, eos_id=0, max_len=4).tolist()
    [[1, 0, 0, 0]]
    """

    def pick(key, logits):
        del key
        return jnp.argmax(logits, axis=-1)

    return _run_sequential(
        step, carry, pick, None, bos_id=bos_id, eos_id=eos_id, max_len=max_len, pad_id=pad_id
    )


def sample(
    step: Step,
    carry: Any,
    key: PRNGKey,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    pad_id: int | None = None,
) -> Array:
    r"""Ancestral sampling: :math:`y_t \sim \operatorname{softmax}(z_t / \tau)`.

    With ``top_k=k``, only the ``k`` most likely tokens of each step can be drawn (their
    probabilities renormalised); ties at the ``k``-th logit are all kept.

    Args:
        step: ``step(carry, tokens) -> (carry, logits)``.
        carry: the initial carry.
        key: one PRNG key, split once per step (``key, sub = jax.random.split(key)``).
        bos_id: token fed at the first step.
        eos_id: token that ends a sequence.
        max_len: number of tokens to generate at most.
        temperature: :math:`\tau > 0`, finite; lower is greedier.
        top_k: restrict each draw to the ``top_k`` largest logits (``None``: no restriction).
        pad_id: token written after a sequence's EOS (default ``eos_id``).

    Returns:
        ``int32 [batch, max_len]``, without the BOS.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> table = jnp.log(jnp.array([[.1, .6, .3], [.7, .1, .2], [.2, .2, .6]]))
    >>> step = lambda carry, tokens: (carry, table[tokens])
    >>> out = jr.decode.sample(step, jnp.zeros((5, 1)), jax.random.key(0), bos_id=2, eos_id=0,
    ...                        max_len=6, top_k=1)  # top_k=1 is greedy
    >>> out[0].tolist()
    [2, 2, 2, 2, 2, 2]
    """
    key = check_key("key", key)
    temperature = check_scalar("temperature", temperature, low=0.0, low_open=True)
    if top_k is not None:
        top_k = check_int("top_k", top_k, low=1)

    def pick(key, logits):
        z = logits.astype(jnp.float32) / temperature
        if top_k is not None and top_k < z.shape[-1]:
            kth = jax.lax.top_k(z, top_k)[0][..., -1:]
            z = jnp.where(z >= kth, z, -jnp.inf)
        return jax.random.categorical(key, z, axis=-1)

    return _run_sequential(
        step, carry, pick, key, bos_id=bos_id, eos_id=eos_id, max_len=max_len, pad_id=pad_id
    )


def length_penalty(length: Array, alpha: float) -> Array:
    r"""GNMT length penalty (Wu et al. 2016), :math:`lp(|Y|) = ((5 + |Y|) / 6)^\alpha`.

    ``alpha = 0`` gives 1 (no penalty). :func:`beam_search` divides a hypothesis' summed
    log-probability by it.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> jr.decode.length_penalty(jnp.array([1, 7]), 1.0).tolist()
    [1.0, 2.0]
    """
    alpha = check_scalar("alpha", alpha, low=0.0)
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


_length_penalty = length_penalty  # beam_search has an argument of the same name


def beam_search(
    step: Step,
    carry: Any,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int,
    max_len: int,
    length_penalty: float = 0.0,
    pad_id: int | None = None,
) -> tuple[Array, Array]:
    r"""Beam search for the most likely sequences, with an optional GNMT length penalty.

    A hypothesis :math:`Y = (y_1, \dots, y_n)` scores

    .. math::

        \text{score}(Y) = \frac{\sum_{t=1}^n \log p(y_t \mid y_{<t})}{lp(n)}, \qquad
        lp(n) = \left(\frac{5 + n}{6}\right)^\alpha

    (Wu et al. 2016, :math:`\alpha` = ``length_penalty``; :math:`\alpha = 0` is the plain sum of
    log-probabilities), where :math:`n` counts the generated tokens including the EOS, or is
    ``max_len`` for a hypothesis that never emitted one.

    The beam holds the ``beam_size`` best hypotheses, finished or not. At each step, every
    unfinished hypothesis is extended by every token, every finished hypothesis is kept as it
    is (it stops growing and keeps its score), and the ``beam_size`` best of all these
    candidates by score form the next beam. The search stops when every hypothesis in the beam
    has finished or after ``max_len`` steps. With ``beam_size=1`` and ``length_penalty=0`` this
    is :func:`greedy`; with a beam wider than the number of possible hypotheses it is an
    exhaustive search.

    Args:
        step: ``step(carry, tokens) -> (carry, logits)``; called with ``batch * beam_size``
            rows (each carry leaf repeated ``beam_size`` times along axis 0, beam-minor).
        carry: the initial carry, leaves with a leading batch axis.
        bos_id: token fed at the first step.
        eos_id: token that ends a hypothesis.
        beam_size: number of hypotheses kept.
        max_len: number of tokens to generate at most.
        length_penalty: :math:`\alpha \ge 0`, finite (GNMT uses :math:`\alpha \in [0.6, 1]`;
            a negative :math:`\alpha` would favour long hypotheses without bound).
        pad_id: token written after a hypothesis' EOS (default ``eos_id``).

    Returns:
        ``(tokens, scores)``: ``int32 [batch, beam_size, max_len]`` without the BOS and
        ``float32 [batch, beam_size]``, best first. A score of ``-inf`` marks an empty slot
        (fewer possible hypotheses than ``beam_size``); its tokens are meaningless. A score of
        NaN marks a hypothesis ended by NaN logits (its last token is :data:`NAN_TOKEN`),
        ranked last.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> table = jnp.log(jnp.array([[1., 1e-9, 1e-9], [.4, .25, .35], [.1, .1, .8]]))
    >>> step = lambda carry, tokens: (carry, table[tokens])  # p(next | last), EOS = 0
    >>> tokens, scores = jr.decode.beam_search(step, jnp.zeros((1, 1)), bos_id=1, eos_id=0,
    ...                                        beam_size=2, max_len=3)
    >>> tokens[0].tolist(), [round(float(p), 3) for p in jnp.exp(scores[0])]
    ([[0, 0, 0], [2, 2, 2]], [0.4, 0.224])
    """
    batch, bos_id, eos_id, max_len, pad_id = _common(carry, bos_id, eos_id, max_len, pad_id)
    K = check_int("beam_size", beam_size, low=1)
    alpha = check_scalar("length_penalty", length_penalty, low=0.0)
    neg_inf = jnp.float32(-jnp.inf)
    body = functools.partial(_beam_step, step, batch, K, alpha, (bos_id, eos_id, pad_id))
    cond = functools.partial(_beam_running, max_len)
    state = (
        jnp.int32(0),
        jax.tree.map(lambda leaf: _repeat_rows(leaf, K), carry),
        jnp.full((batch, K), bos_id, jnp.int32),
        jnp.full((batch, K), neg_inf).at[:, 0].set(0.0),
        jnp.zeros((batch, K), bool),
        jnp.zeros((batch, K), jnp.int32),
        jnp.full((batch, K, max_len), pad_id, jnp.int32),
    )
    state = _rows_like_carry(state, carry)
    _, _, _, raw, _, length, out = jax.lax.while_loop(cond, body, state)
    # an unfinished hypothesis has length max_len here
    scores = raw / _length_penalty(length, alpha)
    order = jnp.argsort(-scores, axis=1, stable=True)
    scores = jnp.take_along_axis(scores, order, axis=1)
    return jnp.take_along_axis(out, order[..., None], axis=1), scores


def _repeat_rows(leaf: Array, K: int) -> Array:
    """Each row of ``leaf`` ``K`` times (beam-minor), ``jnp.repeat(leaf, K, axis=0)``; built
    by broadcasting so that rows split over an explicit mesh stay split as ``leaf``'s."""
    leaf = jnp.asarray(leaf)
    tiled = jnp.broadcast_to(leaf[:, None], (leaf.shape[0], K, *leaf.shape[1:]))
    return tiled.reshape(leaf.shape[0] * K, *leaf.shape[1:])


def _gather_beams(tree, parent: Array, batch: int, K: int):
    """Each leaf's rows ``(batch * K, ...)`` reordered to the beams' ``parent`` hypotheses."""

    def one(leaf):
        leaf = leaf.reshape(batch, K, *leaf.shape[1:])
        idx = parent.reshape(batch, K, *(1,) * (leaf.ndim - 2))
        return jnp.take_along_axis(leaf, idx, axis=1).reshape(batch * K, *leaf.shape[2:])

    return jax.tree.map(one, tree)


def _beam_step(step: Step, batch: int, K: int, alpha: float, ids: tuple, state):
    """One step of :func:`beam_search`: extend, rank and keep the ``K`` best candidates."""
    bos_id, eos_id, pad_id = ids
    neg_inf = jnp.float32(-jnp.inf)
    t, carry, last, raw, finished, length, out = state
    carry, logits, log_probs = _call_step(step, carry, last.reshape(batch * K), batch * K)
    vocab = logits.shape[-1]
    _check_ids(vocab, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    log_probs = log_probs.reshape(batch, K, vocab)
    # A live hypothesis whose logits hold a NaN cannot be extended: it ends (NAN_TOKEN, a
    # NaN score), ranked below every other hypothesis but above an empty slot.
    nan_row = jnp.isnan(log_probs).any(axis=-1)
    bad = nan_row & ~finished & (raw > neg_inf)
    _report_nan(bad, t)
    # Candidates (batch, K, vocab): extend unfinished hypotheses by every token; a finished
    # (or NaN-ended) one has a single candidate (column 0) that keeps it unchanged.
    grow = jnp.where(nan_row[..., None], neg_inf, raw[..., None] + log_probs)
    keep = jnp.where(
        jnp.arange(vocab) == 0, jnp.where(bad, jnp.float32(jnp.nan), raw)[..., None], neg_inf
    )
    cand = jnp.where((finished | bad)[..., None], keep, grow)
    cand_len = jnp.where(finished, length, length + 1)[..., None]
    rank = (cand / _length_penalty(cand_len, alpha)).reshape(batch, K * vocab)
    rank = jnp.where(jnp.isnan(rank), -jnp.finfo(jnp.float32).max, rank)
    _, idx = jax.lax.top_k(rank, K)  # (batch, K)
    parent, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
    raw = jnp.take_along_axis(cand.reshape(batch, K * vocab), idx, axis=1)
    was_finished = jnp.take_along_axis(finished, parent, axis=1)
    was_bad = jnp.take_along_axis(bad, parent, axis=1)
    length = jnp.take_along_axis(length, parent, axis=1) + (~was_finished).astype(jnp.int32)
    tok = jnp.where(was_finished, pad_id, jnp.where(was_bad, NAN_TOKEN, tok))
    finished = was_finished | was_bad | (tok == eos_id)
    out = jnp.take_along_axis(out, parent[..., None], axis=1).at[:, :, t].set(tok)
    carry = _gather_beams(carry, parent, batch, K)
    new = t + 1, carry, jnp.where(was_bad, pad_id, tok), raw, finished, length, out
    return _sharding.like(new, state)  # explicit meshes: the loop state keeps its type


def _beam_running(max_len: int, state):
    """Whether :func:`beam_search` goes on: steps left and a live hypothesis in some beam."""
    t, _, _, raw, finished, _, _ = state
    done = finished | (raw == jnp.float32(-jnp.inf))  # an empty slot never becomes a hypothesis
    return (t < max_len) & ~jnp.all(done)
