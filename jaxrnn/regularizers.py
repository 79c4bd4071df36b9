r"""Recurrent regularisers as cell transformations: a cell in, a regularised cell out.

Each transformation is a pure function ``transform(cell, key=None, **rates) -> Cell``. With a
``key`` it draws its masks from that key (training); without one it returns the deterministic
cell whose output is the expectation of the training cell's (evaluation), so the same code
serves both: ``jr.scan(transform(cell, key), params, xs)`` to train,
``jr.scan(transform(cell), params, xs)`` to evaluate. Give each sequence batch a fresh key:
one PRNG key (``jax.random.key``); a batch of keys, an int or a float array is refused by name
(split the batch, or ``jax.vmap`` over it).

* :func:`variational_dropout` (Gal & Ghahramani 2016): one dropout mask per sequence on the
  inputs and one on the recurrent state, the same at every step (Keras' ``dropout`` and
  ``recurrent_dropout``).
* :func:`zoneout` (Krueger et al. 2017): each unit of the state keeps its previous value with
  probability ``rate``, a new draw at every step; at evaluation the expectation, a fixed leaky
  average of the old and new state.
* :func:`weight_drop` (DropConnect on ``w_hh``, Merity et al. 2018's AWD-LSTM): one mask on the
  recurrent weight matrix per sequence batch, shared by every step and every sequence.
* :func:`embedding_dropout` (Merity et al. 2018, after Gal & Ghahramani 2016): drop whole rows of
  an embedding matrix, i.e. whole word types, for one batch.
* :func:`regularize`: weight drop, variational dropout and zoneout at once, as the AWD-LSTM
  combines them (a rate of 0 leaves its transformation out).

Under an explicit mesh (``jax.make_mesh``), a mask takes the sharding of the array it drops;
its values do not depend on the sharding, so one key draws the same masks on one device and on
many.

Dropout here is inverted dropout: kept values are scaled by ``1 / (1 - rate)`` so that the
expectation over masks is the undropped computation, and evaluation needs no rescaling.

How a mask that is constant over time stays constant: the transformed ``apply`` draws it from
the same key at every step (a pure function of the key and the shape), so every step sees the
same mask; XLA hoists such loop-invariant draws out of the scan loop. Zoneout needs a fresh draw
per step and so counts steps in its carry (:class:`ZoneoutCarry`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import check_cell, check_key, check_probability
from jaxrnn._core import Array, Carry, Cell, PRNGKey
from jaxrnn.cells import jordan_rnn

__all__ = [
    "ZoneoutCarry",
    "embedding_dropout",
    "regularize",
    "variational_dropout",
    "weight_drop",
    "zoneout",
]


class ZoneoutCarry(NamedTuple):
    """Carry of a :func:`zoneout` cell: the inner cell's ``carry`` and the ``step`` counter
    ``(*batch,)`` int32 that makes each step's masks a new draw."""

    carry: Any
    step: Array


def _check_rate(name: str, value, *, allow_one: bool = False) -> float:
    """A probability in [0, 1) (or [0, 1] with ``allow_one``), concrete: rates are static."""
    rate = check_probability(name, value, include_one=allow_one)
    if not isinstance(rate, float):
        raise TypeError(
            f"{name}: expected a concrete number, got a traced value (rates are static)"
        )
    return rate


def _keep_mask(key: PRNGKey, rate: float, shape, dtype, like: Any = None) -> Array:
    """Inverted-dropout multiplier: ``1 / (1 - rate)`` where kept, 0 where dropped.

    The same mask at every step is the point, so the key is deliberately reused: ``clone``
    tells JAX's key-reuse checker (``jax_debug_key_reuse``) so. Under an explicit mesh the
    mask takes the sharding of ``like`` (the array it multiplies); its values do not depend on
    the sharding (JAX's threefry random bits are partitionable).
    """
    keep = jax.random.bernoulli(jax.random.clone(key), 1.0 - rate, shape)
    keep = keep if like is None else _sharding.like(keep, like)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))


def _state_of(carry: Carry, name: str):
    """The hidden state ``h`` of a carry and a function putting a new one back."""
    if isinstance(carry, jax.Array | jnp.ndarray) or hasattr(carry, "shape"):
        return carry, lambda h: h
    if hasattr(carry, "h") and hasattr(carry, "_replace"):
        return carry.h, lambda h: carry._replace(h=h)
    raise TypeError(
        f"{name}: the cell's carry must be an array (the hidden state) or a NamedTuple with a "
        f"field h (like LSTMCarry), got {type(carry).__name__}"
    )


def _derived(cell: Cell, apply, factory, initial_carry=None, **config) -> Cell:
    """A cell with ``apply`` replaced (no project/step split: the mask sits before it)."""
    return Cell(
        init=cell.init,
        apply=apply,
        initial_carry=cell.initial_carry if initial_carry is None else initial_carry,
        input_size=cell.input_size,
        output_size=cell.output_size,
        config=(("factory", factory), ("cell", cell), *config.items()),
        spatial_dims=cell.spatial_dims,
    )


def variational_dropout(
    cell: Cell, key: PRNGKey | None = None, *, rate: float = 0.0, recurrent_rate: float = 0.0
) -> Cell:
    r"""Variational (recurrent) dropout: one mask per sequence, the same at every step.

    Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout in Recurrent
    Neural Networks": with masks :math:`m_x \in \{0, \tfrac{1}{1-p}\}^{I}` and
    :math:`m_h \in \{0, \tfrac{1}{1-p_h}\}^{H}` drawn once per sequence,

    .. math::

        (c_t, y_t) = \text{cell}\big(c_{t-1}[h \mapsto m_h \odot h_{t-1}],\;
        m_x \odot x_t\big)

    i.e. the input and the hidden state :math:`h_{t-1}` the step reads are dropped, the cell state
    of an LSTM is not. For the LSTM this is the paper's formulation (the hidden state enters only
    through the recurrent matmul); for a GRU or Elman cell the dropped :math:`h_{t-1}` is also the
    one the update interpolates (the paper's tied-weights GRU). Keras calls the rates
    ``dropout`` and ``recurrent_dropout``.

    Args:
        cell: any :class:`Cell` whose carry is its hidden state or has a field ``h``.
        key: draws the masks (each batch element gets its own); ``None`` returns ``cell``
            itself, the expectation of the dropped cell (inverted dropout).
        rate: dropout probability on the inputs ``x``, in ``[0, 1)``.
        recurrent_rate: dropout probability on the hidden state, in ``[0, 1)``.

    Returns:
        A :class:`Cell` with the same params and carry as ``cell``. It has no ``project``/``step``
        split, so :func:`jaxrnn.scan` does not hoist its input projection.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> train_cell = jr.variational_dropout(cell, jax.random.key(1), rate=0.2, recurrent_rate=0.2)
    >>> carry, ys = jr.scan(train_cell, params, jnp.ones((4, 10, 3)))
    >>> jr.variational_dropout(cell, None, rate=0.2) is cell  # evaluation: no dropout
    True
    """
    check_cell("cell", cell)
    rate = _check_rate("rate", rate)
    recurrent_rate = _check_rate("recurrent_rate", recurrent_rate)
    key = check_key("key", key, optional=True)
    if key is None or (rate == 0.0 and recurrent_rate == 0.0):
        return cell
    k_x, k_h = jax.random.split(key)

    def apply(params, carry, x):
        if rate > 0.0:
            x = x * _keep_mask(k_x, rate, jnp.shape(x), jnp.result_type(x), x)
        if recurrent_rate > 0.0:
            h, put = _state_of(carry, "variational_dropout")
            carry = put(h * _keep_mask(k_h, recurrent_rate, jnp.shape(h), jnp.result_type(h), h))
        return cell.apply(params, carry, x)

    return _derived(
        cell, apply, variational_dropout, rate=rate, recurrent_rate=recurrent_rate, keyed=True
    )


def zoneout(
    cell: Cell,
    key: PRNGKey | None = None,
    *,
    rate: float = 0.0,
    cell_rate: float | None = None,
) -> Cell:
    r"""Zoneout: each state unit keeps its previous value with probability ``rate``.

    Krueger et al. (2017), "Zoneout: Regularizing RNNs by Randomly Preserving Hidden
    Activations". With the inner step's new state :math:`\tilde h_t` and a mask
    :math:`d_t \sim \text{Bernoulli}(z)` drawn anew at every step and for every unit,

    .. math::

        h_t = d_t \odot h_{t-1} + (1 - d_t) \odot \tilde h_t

    and at evaluation (no key) its expectation :math:`h_t = z\,h_{t-1} + (1 - z)\,\tilde h_t`.
    For an LSTM the hidden state ``h`` uses ``rate`` (:math:`z_h`) and the cell state ``c``
    ``cell_rate`` (:math:`z_c`, default ``rate``; the paper's best character-level models use
    :math:`z_c = 0.5`, :math:`z_h = 0.05`). The output ``y`` is the zoned-out ``h``: the cell must
    output its hidden state, as every built-in cell but :func:`jaxrnn.jordan_rnn` does.

    Args:
        cell: a :class:`Cell` whose carry is its hidden state or an :class:`LSTMCarry`-like
            NamedTuple with fields ``h`` and ``c``.
        key: draws the masks; ``None`` gives the deterministic expectation.
        rate: probability that a unit of ``h`` keeps its previous value, in ``[0, 1]``.
        cell_rate: the same for the LSTM cell state ``c`` (default ``rate``).

    Returns:
        A :class:`Cell` with the same params; its carry is :class:`ZoneoutCarry` ``(carry,
        step)`` with and without a key, so carries pass between training and evaluation.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.gru(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> zoned = jr.zoneout(cell, jax.random.key(1), rate=0.1)
    >>> carry, ys = jr.scan(zoned, params, jnp.ones((2, 5, 3)))
    >>> carry.carry.shape, carry.step.tolist()
    ((2, 8), [5, 5])
    """
    check_cell("cell", cell)
    if dict(cell.config).get("factory") is jordan_rnn:
        raise ValueError("cell: zoneout needs a cell that outputs its hidden state, not jordan_rnn")
    rate = _check_rate("rate", rate, allow_one=True)
    cell_rate = rate if cell_rate is None else _check_rate("cell_rate", cell_rate, allow_one=True)
    key = check_key("key", key, optional=True)

    def initial_carry(batch_shape=(), dtype=None):
        inner = cell.initial_carry(batch_shape, dtype)
        batch = jnp.shape(_state_of(inner, "zoneout")[0])[:-1]
        return ZoneoutCarry(inner, jnp.zeros(batch, jnp.int32))

    def mix(k, z, old, new):
        if key is None:
            return (z * old + (1.0 - z) * new).astype(new.dtype)
        keep_old = _sharding.like(jax.random.bernoulli(k, z, jnp.shape(new)), new)
        return jnp.where(keep_old, old, new)

    def apply(params, carry, x):
        inner, step = carry
        new, y = cell.apply(params, inner, x)
        new = _sharding.like(new, inner)  # explicit meshes: the state keeps its sharding
        h_old = _state_of(inner, "zoneout")[0]
        h_new, put = _state_of(new, "zoneout")
        k_h = k_c = None
        if key is not None:
            # One draw per step: the counter is equal across the batch except where lengths
            # froze a row (its carry is then discarded), so the maximum is this step's index.
            step_key = jax.random.fold_in(jax.random.clone(key), jnp.max(step, initial=0))
            k_h, k_c = jax.random.split(step_key)
        h = mix(k_h, rate, h_old, h_new)
        if hasattr(new, "c") and hasattr(new, "_replace"):  # LSTMCarry and its likes
            new = new._replace(h=h, c=mix(k_c, cell_rate, inner.c, new.c))
        else:
            new = put(h)
        return ZoneoutCarry(new, step + 1), h.astype(jnp.result_type(y))

    return _derived(
        cell, apply, zoneout, initial_carry, rate=rate, cell_rate=cell_rate, keyed=key is not None
    )


def _drop_weights(names: tuple[str, ...], keys: dict, rate: float, params):
    """``params`` with the fields ``names`` multiplied by their DropConnect masks."""
    fields = getattr(params, "_fields", ())
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(
            f"names: {missing} are not fields of the cell's params "
            f"({type(params).__name__}{tuple(fields)})"
        )
    return params._replace(
        **{
            n: getattr(params, n)
            * _keep_mask(
                keys[n],
                rate,
                jnp.shape(getattr(params, n)),
                getattr(params, n).dtype,
                getattr(params, n),
            )
            for n in names
        }
    )


def _dropped_linear(lin, drop):
    """A cell's linear-recurrence form reading ``drop(params)`` (``None`` stays ``None``): the
    same mask in the parallel form (``jr.scan(method=...)``)."""
    if lin is None:
        return None
    return lin._replace(
        coefficients=lambda params, xp: lin.coefficients(drop(params), xp),
        readout=lambda params, h, xp: lin.readout(drop(params), h, xp),
        log_coefficients=lin.log_coefficients
        and (lambda params, xp: lin.log_coefficients(drop(params), xp)),
    )


def weight_drop(
    cell: Cell, key: PRNGKey | None = None, *, rate: float = 0.0, names: tuple[str, ...] = ("w_hh",)
) -> Cell:
    r"""Weight drop: DropConnect on the recurrent weights, one mask per sequence batch.

    Merity, Keskar & Socher (2018), "Regularizing and Optimizing LSTM Language Models"
    (AWD-LSTM), after Wan et al. (2013)'s DropConnect: the recurrent matrix is replaced by
    :math:`W_{hh} \odot M / (1 - p)` with :math:`M_{ij} \sim \text{Bernoulli}(1 - p)` drawn once
    per forward pass and shared by every step and every sequence of the batch, so the recurrence
    itself is regularised and the fused, per-step-constant matmul stays one matmul.

    Args:
        cell: a :class:`Cell` whose params are a NamedTuple with the fields in ``names``.
        key: draws the mask; ``None`` returns ``cell`` itself (the expectation).
        rate: probability of dropping a weight, in ``[0, 1)``.
        names: which parameter fields to drop (default the recurrent matrix ``w_hh``).

    Returns:
        A :class:`Cell` with the same params and carry; it keeps ``cell``'s ``project``/``step``
        split (the mask is per sequence, so hoisting stays exact) and its linear recurrence
        (``cell.linear``, with the same mask).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> dropped = jr.weight_drop(cell, jax.random.key(1), rate=0.5)
    >>> carry, ys = jr.scan(dropped, params, jnp.ones((2, 5, 3)))
    >>> ys.shape
    (2, 5, 8)
    """
    check_cell("cell", cell)
    rate = _check_rate("rate", rate)
    if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names: expected a non-empty tuple of parameter names, got {names!r}")
    names = tuple(names)
    key = check_key("key", key, optional=True)
    if key is None or rate == 0.0:
        return cell
    keys = dict(zip(names, jax.random.split(key, len(names)), strict=True))

    drop = functools.partial(_drop_weights, names, keys, rate)

    def apply(params, carry, x):
        return cell.apply(drop(params), carry, x)

    project = step = None
    if cell.project is not None and cell.step is not None:

        def project(params, xs):
            return cell.project(drop(params), xs)

        def step(params, carry, xp):
            return cell.step(drop(params), carry, xp)

    return cell._replace(
        apply=apply,
        project=project,
        step=step,
        linear=_dropped_linear(cell.linear, drop),
        config=(
            ("factory", weight_drop),
            ("cell", cell),
            ("rate", rate),
            ("names", names),
            ("keyed", True),
        ),
    )


def embedding_dropout(key: PRNGKey | None, embedding: Array, rate: float) -> Array:
    r"""Drop whole rows of an embedding matrix (Merity et al. 2018, Gal & Ghahramani 2016).

    Every occurrence of a dropped token type embeds to zeros for the whole batch; kept rows are
    scaled by :math:`1 / (1 - p)`:

    .. math::

        E' = \text{diag}(m) E / (1 - p), \qquad m_v \sim \text{Bernoulli}(1 - p)

    Args:
        key: draws the row mask; ``None`` returns ``embedding`` unchanged (evaluation).
        embedding: ``(V, D)`` floating-point matrix.
        rate: probability of dropping a row, in ``[0, 1)``.

    Returns:
        The ``(V, D)`` matrix to look tokens up in for this batch.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> emb = jnp.ones((5, 2))
    >>> dropped = jr.embedding_dropout(jax.random.key(0), emb, 0.5)
    >>> sorted(set(dropped[:, 0].tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    """
    key = check_key("key", key, optional=True)
    rate = _check_rate("rate", rate)
    embedding = jnp.asarray(embedding)
    if embedding.ndim != 2:
        raise ValueError(f"embedding: expected a (vocab, features) matrix, got {embedding.shape}")
    if not jnp.issubdtype(embedding.dtype, jnp.inexact):
        raise TypeError(
            f"embedding: expected a floating-point (vocab, features) matrix (dropping scales the "
            f"kept rows by 1 / (1 - rate)), got dtype {embedding.dtype}"
        )
    if key is None or rate == 0.0:
        return embedding
    mask = _keep_mask(key, rate, (embedding.shape[0], 1), embedding.dtype)
    return embedding * mask


_zoneout, _weight_drop = zoneout, weight_drop  # `regularize` has arguments of the same names


def regularize(
    cell: Cell,
    key: PRNGKey | None = None,
    *,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    weight_drop: float = 0.0,
) -> Cell:
    r"""Weight drop, variational dropout and zoneout on one cell, each with its own key.

    The cell regularisers of the AWD-LSTM (Merity et al. 2018) and their relatives composed, the
    weights dropped innermost and the zoneout mixing outermost (so it mixes the undropped old
    state with the new one):

    .. math::

        \text{zoneout}_{z}\big(\text{variational\_dropout}_{p_x, p_h}
        (\text{weight\_drop}_{p_w}(\text{cell}))\big)

    A rate of 0 leaves its transformation out, so with every rate 0 this is ``cell`` itself
    (same carry, same function). Without a ``key`` it is the deterministic cell whose output is
    the expectation (evaluation; a zoneout carry stays a :class:`ZoneoutCarry`).

    Args:
        cell: the cell (its params need a ``w_hh`` field for ``weight_drop > 0``).
        key: draws every mask (split three ways); ``None`` for evaluation.
        input_dropout: :func:`variational_dropout` ``rate`` on the inputs, in ``[0, 1)``.
        recurrent_dropout: its ``recurrent_rate`` on the hidden state, in ``[0, 1)``.
        zoneout: :func:`zoneout` ``rate`` (and ``cell_rate``) in ``[0, 1)``.
        weight_drop: :func:`weight_drop` ``rate`` on ``w_hh``, in ``[0, 1)``.

    Returns:
        The regularised :class:`Cell`.

    >>> import functools, jax, jax.numpy as jnp, jaxrnn as jr
    >>> awd = functools.partial(jr.regularize, input_dropout=0.2, weight_drop=0.5)
    >>> net = jr.rnn(jr.lstm, 3, 8, transform=awd)  # each layer draws from its own key
    >>> params = net.init(jax.random.key(0))
    >>> carry, ys = net.apply(params, jnp.ones((2, 5, 3)), key=jax.random.key(1))  # training
    >>> carry, ys = net.apply(params, jnp.ones((2, 5, 3)))  # evaluation: the expectation
    >>> cell = jr.gru(3, 8)
    >>> jr.regularize(cell, jax.random.key(2)) is cell  # every rate 0: the cell itself
    True
    """
    check_cell("cell", cell)
    input_dropout = _check_rate("input_dropout", input_dropout)
    recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
    zoneout = _check_rate("zoneout", zoneout)
    weight_drop = _check_rate("weight_drop", weight_drop)
    key = check_key("key", key, optional=True)
    k_w = k_v = k_z = None
    if key is not None:
        k_w, k_v, k_z = jax.random.split(key, 3)
    if weight_drop > 0.0:
        cell = _weight_drop(cell, k_w, rate=weight_drop)
    if input_dropout > 0.0 or recurrent_dropout > 0.0:
        cell = variational_dropout(cell, k_v, rate=input_dropout, recurrent_rate=recurrent_dropout)
    if zoneout > 0.0:
        cell = _zoneout(cell, k_z, rate=zoneout)
    return cell
