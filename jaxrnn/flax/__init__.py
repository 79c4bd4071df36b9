"""Flax wrappers: jaxrnn cells and layers as Linen and NNX modules.

``import jaxrnn`` never imports Flax; this subpackage does. The Linen modules are
:class:`RNN` (one cell over a sequence, via :func:`jaxrnn.scan`) and :class:`Layer` (any
:class:`jaxrnn.Layer`: bidirectional, stacked, with dropout) and :class:`Seq2Seq` (an
encoder–decoder of :mod:`jaxrnn.seq2seq`), defined in
:mod:`jaxrnn.flax.linen`; their NNX counterparts live in :mod:`jaxrnn.flax.nnx`. The modules
hold parameters and call the pure functions; they contain no recurrence math of their own.

>>> import jax, jax.numpy as jnp, jaxrnn as jr, jaxrnn.flax as jrf
>>> from flax import nnx
>>> linen_rnn = jrf.RNN(jr.lstm(3, 8))
>>> nnx_rnn = jrf.nnx.RNN(jr.lstm(3, 8), rngs=nnx.Rngs(0))
>>> xs = jnp.ones((2, 5, 3))
>>> variables = linen_rnn.init(jax.random.key(0), xs)
>>> nnx_rnn.set_params(variables["params"]["cell"])  # same params, same outputs
>>> bool((nnx_rnn(xs) == linen_rnn.apply(variables, xs)).all())
True
"""

from jaxrnn.flax import linen, nnx
from jaxrnn.flax.linen import RNN, Layer, Seq2Seq

__all__ = ["RNN", "Layer", "Seq2Seq", "linen", "nnx"]
