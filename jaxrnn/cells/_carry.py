r"""A learnable initial carry: the state a sequence starts from, trained with the weights.

By default a recurrence starts from zeros. Making the initial state a parameter
:math:`h_0 = \theta_{h_0}` (one vector shared by every sequence) lets training choose it, which
helps when sequences are short or the first steps matter (Flax issue #868; Graves 2013 learns
LSTM initial states too). :func:`learnable_carry` turns any cell into one whose params carry
:math:`\theta_{h_0}` next to the cell's own, so ``jr.scan(cell, params, xs)`` starts from it
with no other change, and ``resets`` return to it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import (
    check_batch_shape,
    check_callable,
    check_cell,
    check_key,
    check_params,
)
from jaxrnn._core import Array, Cell

__all__ = ["LearnableCarry", "LearnableCarryParams", "learnable_carry"]


class LearnableCarryParams(NamedTuple):
    """Params of a :func:`learnable_carry` cell: the inner ``cell`` params and ``carry``, the
    initial carry without batch dimensions (a pytree like ``cell.initial_carry()``)."""

    cell: Any
    carry: Any


class LearnableCarry(NamedTuple):
    """Carry of a :func:`learnable_carry` cell: the inner ``carry`` and ``started``
    ``(*batch,)`` bool, False until a sequence's first step (where ``carry`` is replaced by the
    learned one)."""

    carry: Any
    started: Array


def learnable_carry(cell: Cell, init=jax.nn.initializers.zeros) -> Cell:
    r"""``cell`` with its initial carry as a trainable parameter.

    The first step of every sequence (and every step after a ``resets`` flag, see
    :func:`jaxrnn.scan`) reads the learned :math:`\theta_{h_0}`, broadcast over the batch,
    instead of the carry it is given:

    .. math::

        \text{carry}_1, y_1 = \text{cell}(\theta_{\text{cell}}, \theta_{h_0}, x_1)

    Gradients reach :math:`\theta_{h_0}` through that step. A carry passed to
    :func:`jaxrnn.scan` explicitly is used as is where ``started`` is True and replaced by the
    learned one where it is False (``cell.initial_carry`` returns ``started = False``).

    Args:
        cell: any :class:`~jaxrnn.Cell`.
        init: initialiser of each leaf of :math:`\theta_{h_0}`, with the
            ``jax.nn.initializers`` signature ``init(key, shape, dtype)`` (default zeros: the
            cell starts out computing what ``cell`` computes).

    Raises:
        TypeError: ``cell`` not a :class:`~jaxrnn.Cell`, ``init`` not callable; at
            :func:`jaxrnn.scan` (or ``apply``), params that are not
            :class:`LearnableCarryParams` (e.g. the inner cell's own params).

    Returns:
        A :class:`~jaxrnn.Cell` with :class:`LearnableCarryParams` and :class:`LearnableCarry`.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.learnable_carry(jr.lstm(3, 8))
    >>> params = cell.init(jax.random.key(0))
    >>> params.carry.h.shape, params.carry.c.shape
    ((8,), (8,))
    >>> grads = jax.grad(lambda p: jr.scan(cell, p, jnp.ones((2, 5, 3)))[1].sum())(params)
    >>> bool((grads.carry.h != 0).any())
    True
    """
    check_cell("cell", cell)
    check_callable("init", init)

    def init_params(key):
        k_cell, k_carry = jax.random.split(check_key("key", key))
        template = cell.initial_carry(())
        leaves, treedef = jax.tree.flatten(template)
        keys = jax.random.split(k_carry, max(len(leaves), 1))
        carry = jax.tree.unflatten(
            treedef,
            [init(k, jnp.shape(a), jnp.result_type(a)) for a, k in zip(leaves, keys, strict=False)],
        )
        return LearnableCarryParams(cell.init(k_cell), carry)

    def initial_carry(batch_shape=(), dtype=None):
        inner = cell.initial_carry(batch_shape, dtype)
        return LearnableCarry(inner, jnp.zeros(check_batch_shape(batch_shape), bool))

    def apply(params, carry, x):
        check_params(wrapped, params)
        inner, started = carry
        learned = jax.tree.map(
            lambda c, c0: jnp.where(
                started.reshape(started.shape + (1,) * (c.ndim - started.ndim)),
                c,
                jnp.broadcast_to(c0.astype(c.dtype), c.shape),
            ),
            inner,
            params.carry,
        )
        new, y = cell.apply(params.cell, learned, x)
        return LearnableCarry(new, jnp.ones_like(started)), y

    wrapped = Cell(
        init=init_params,
        apply=apply,
        initial_carry=initial_carry,
        input_size=cell.input_size,
        output_size=cell.output_size,
        config=(("factory", learnable_carry), ("cell", cell), ("init", init)),
        spatial_dims=cell.spatial_dims,
    )
    return wrapped
