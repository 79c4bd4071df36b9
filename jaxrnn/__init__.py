"""jaxrnn: recurrent neural networks as pure JAX functions.

A cell is one step, ``apply(params, carry, x) -> (carry, y)``; :func:`scan` runs it over a
sequence with ``jax.lax.scan``; layers stack and reverse cells. Everything is a pure function of
explicit parameters, so ``jit``, ``vmap``, ``grad`` and ``jvp`` apply directly.
"""

from jaxrnn.cells import (
    Cell,
    GRUParams,
    JordanParams,
    LSTMCarry,
    LSTMParams,
    SimpleRNNParams,
    gru,
    jordan_rnn,
    lstm,
    simple_rnn,
)
from jaxrnn.layers import Bidirectional, Layer, bidirectional, layer, rnn, stack
from jaxrnn.scan import scan

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "Cell",
    "GRUParams",
    "JordanParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "SimpleRNNParams",
    "bidirectional",
    "gru",
    "jordan_rnn",
    "layer",
    "lstm",
    "rnn",
    "scan",
    "simple_rnn",
    "stack",
]
