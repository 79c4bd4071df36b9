r"""Masked sequence losses.

A sequence loss sums per-step losses over the valid steps of each sequence, as in Ng's *Sequence
Models* course,

.. math::

    J = \sum_{t=1}^{n} L^{(t)}(\hat y^{(t)}, y^{(t)})

with ``reduction="sum"`` (one :math:`J` per sequence, shape ``(*batch,)``), or averages them
over all valid steps of the batch with ``reduction="mean"`` (the mean per token, a scalar);
``reduction="none"`` returns the per-step losses ``(*batch, T)``. ``mask[..., t]`` is ``True``
for valid steps; padded steps contribute exactly 0 and are never read, so padding logits or
labels may hold anything (NaN included) without touching the loss or its gradient. Every loss
takes the valid steps either as ``mask=`` or as ``lengths=`` (``(*batch,)`` integers, step ``t``
valid when ``t < lengths[...]``, as :func:`jaxrnn.scan` takes them), not both.

Concrete labels are checked (class ids in ``[0, V)``, binary targets in ``[0, 1]``, at valid
steps only), and concrete lengths must lie in ``[0, T]``; under ``jax.jit`` traced labels and
lengths have only their dtype and shape checked, and traced lengths are clipped to ``[0, T]``
as :func:`jaxrnn.scan` clips them (wrap the function in
``jax.experimental.checkify.checkify(f, errors=checkify.user_checks)`` to have them reported as
an error instead).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_ids, check_lengths, is_concrete
from jaxrnn._core import Array
from jaxrnn._masks import length_mask

__all__ = [
    "length_mask",
    "reduce_sequence",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]

_REDUCTIONS = ("none", "sum", "mean")


def _check_mask(mask, shape: tuple[int, ...], lengths=None):
    """The mask of valid steps ``(*batch, T)`` from ``mask`` or ``lengths`` (``None``: all)."""
    if lengths is not None:
        if mask is not None:
            raise ValueError("lengths: give the valid steps as mask= or as lengths=, not both")
        lengths = check_lengths(lengths, shape[:-1], shape[-1])
        return length_mask(lengths, shape[-1])
    if mask is None:
        return None
    if not isinstance(mask, jax.Array):
        mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask: expected a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask: expected shape {shape} (*batch, T), got {mask.shape}")
    return jnp.asarray(mask)


def reduce_sequence(
    losses: Array, mask: Array | None = None, reduction: str = "sum", *, lengths=None
) -> Array:
    """Reduce per-step losses ``(*batch, T)`` over valid steps.

    Args:
        losses: per-step losses, time on the last axis.
        mask: ``(*batch, T)`` bool, ``True`` at valid steps (``None``: all valid).
        lengths: ``(*batch,)`` integer lengths in ``[0, T]``, instead of ``mask``.
        reduction: ``"sum"``: :math:`J = \\sum_t L^{(t)}` per sequence, ``(*batch,)``;
            ``"mean"``: the sum over all valid steps divided by their number (0 if there are
            none), a scalar; ``"none"``: the masked per-step losses.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> losses = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    >>> mask = jr.losses.length_mask(jnp.array([3, 1]), 3)
    >>> jr.losses.reduce_sequence(losses, mask, "sum").tolist()
    [6.0, 4.0]
    >>> float(jr.losses.reduce_sequence(losses, mask, "mean"))  # (1 + 2 + 3 + 4) / 4
    2.5
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    losses = jnp.asarray(losses)
    if losses.ndim < 1:
        raise ValueError(f"losses: expected at least 1 dim (*batch, T), got shape {losses.shape}")
    mask = _check_mask(mask, losses.shape, lengths)
    if mask is not None:
        losses = jnp.where(mask, losses, jnp.zeros((), losses.dtype))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return jnp.sum(losses, axis=-1)
    count = losses.size if mask is None else jnp.sum(mask)
    return jnp.sum(losses) / jnp.maximum(count, 1).astype(losses.dtype)


def softmax_cross_entropy(
    logits: Array,
    labels: Array,
    mask: Array | None = None,
    *,
    lengths: Array | None = None,
    reduction: str = "sum",
) -> Array:
    r"""Softmax cross-entropy with integer labels, summed or averaged over valid steps.

    .. math::

        L^{(t)} = -\log \operatorname{softmax}(z^{(t)})_{y^{(t)}}
                = \log \textstyle\sum_v e^{z^{(t)}_v} - z^{(t)}_{y^{(t)}}

    Args:
        logits: ``(*batch, T, V)``, unnormalised scores :math:`z`.
        labels: ``(*batch, T)`` integer class ids in ``[0, V)`` (anything at padded steps).
        mask: ``(*batch, T)`` bool, ``True`` at valid steps (``None``: all valid).
        lengths: ``(*batch,)`` integer lengths in ``[0, T]``, instead of ``mask``.
        reduction: ``"sum"`` (per sequence), ``"mean"`` (per valid token) or ``"none"``; see
            :func:`reduce_sequence`.

    Raises:
        ValueError: if a concrete label at a valid step lies outside ``[0, V)`` (under ``jit``
            traced labels are not range-checked: an id out of range then reads a clamped
            class), on shape mismatches, or with both ``mask`` and ``lengths``.
        TypeError: if ``labels`` are not integers or ``mask`` not bool.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> logits = jnp.zeros((2, 3, 4))  # uniform over 4 classes: log 4 per step
    >>> labels = jnp.array([[0, 1, 2], [3, -1, -1]])  # -1: padding, never read
    >>> mask = jr.losses.length_mask(jnp.array([3, 1]), 3)
    >>> [round(float(x), 4) for x in jr.losses.softmax_cross_entropy(logits, labels, mask)]
    [4.1589, 1.3863]
    >>> loss = jr.losses.softmax_cross_entropy(logits, labels, lengths=jnp.array([3, 1]))
    >>> [round(float(x), 4) for x in loss]  # the same valid steps as mask
    [4.1589, 1.3863]
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels: expected integer class ids, got dtype {labels.dtype}")
    if labels.ndim < 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits: expected shape (*batch, T, V) with (*batch, T) = labels.shape "
            f"{labels.shape}, got {logits.shape}"
        )
    mask = _check_mask(mask, labels.shape, lengths)
    check_ids("labels", labels, logits.shape[-1], valid=mask, what="the logits' class axis")
    if mask is not None:  # sanitise padding before any arithmetic (no NaN in the gradient)
        logits = jnp.where(mask[..., None], logits, jnp.zeros((), logits.dtype))
        labels = jnp.where(mask, labels, jnp.zeros((), labels.dtype))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    losses = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return reduce_sequence(losses, mask, reduction)


def sigmoid_binary_cross_entropy(
    logits: Array,
    labels: Array,
    mask: Array | None = None,
    *,
    lengths: Array | None = None,
    reduction: str = "sum",
) -> Array:
    r"""Binary cross-entropy of one sigmoid output per step, summed or averaged over valid steps.

    The per-step loss of Ng's *Sequence Models* course, with :math:`\hat y = \sigma(z)`:

    .. math::

        L^{(t)} = -y^{(t)} \log \hat y^{(t)} - (1 - y^{(t)}) \log (1 - \hat y^{(t)})

    computed stably from the logit as :math:`-y \log\sigma(z) - (1-y)\log\sigma(-z)`.

    Args:
        logits: ``(*batch, T)`` logits :math:`z`. For several binary outputs per step, use
            ``reduction="none"`` on ``(*batch, T, F)`` arrays, sum the last axis and reduce with
            :func:`reduce_sequence`.
        labels: targets in ``[0, 1]`` (probabilities allowed), of the shape of ``logits``.
        mask: ``(*batch, T)`` bool (``None``: all valid).
        lengths: ``(*batch,)`` integer lengths in ``[0, T]``, instead of ``mask``.
        reduction: ``"sum"``, ``"mean"`` or ``"none"``; see :func:`reduce_sequence`.

    Raises:
        ValueError: if concrete labels at valid steps lie outside ``[0, 1]`` or are NaN (traced
            labels are not checked), on shape mismatches, or with both ``mask`` and
            ``lengths``.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> logits = jnp.array([[0.0, 0.0, 100.0]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0]])
    >>> mask = jnp.array([[True, True, False]])
    >>> round(float(jr.losses.sigmoid_binary_cross_entropy(logits, labels, mask)[0]), 4)  # 2 log 2
    1.3863
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape:
        raise ValueError(f"labels: expected shape {logits.shape} (as logits), got {labels.shape}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits: expected a float array, got dtype {logits.dtype}")
    mask = _check_mask(mask, logits.shape, lengths)
    if is_concrete(labels) and (mask is None or is_concrete(mask)):
        values = np.asarray(labels, np.float64)
        bad = ~((values >= 0) & (values <= 1))
        if mask is not None:
            bad &= np.asarray(mask)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"labels: binary targets must lie in [0, 1], got {values[index]} at index {index}"
            )
    labels = labels.astype(logits.dtype)
    if mask is not None:
        zero = jnp.zeros((), logits.dtype)
        logits, labels = jnp.where(mask, logits, zero), jnp.where(mask, labels, zero)
    losses = -(labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))
    return reduce_sequence(losses, mask, reduction)
