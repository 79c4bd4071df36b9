"""jaxrnn: recurrent neural networks as pure JAX functions.

A cell is one step, ``apply(params, carry, x) -> (carry, y)``; :func:`scan` runs it over a
sequence with ``jax.lax.scan``; layers stack and reverse cells. Everything is a pure function of
explicit parameters, so ``jit``, ``vmap``, ``grad`` and ``jvp`` apply directly.
"""

from jaxrnn import attention, data, decode, interop, losses, recipes, seq2seq
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
from jaxrnn.scan import save_nonlinear, scan

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
    "attention",
    "bidirectional",
    "data",
    "decode",
    "gru",
    "interop",
    "jordan_rnn",
    "layer",
    "losses",
    "lstm",
    "recipes",
    "rnn",
    "save_nonlinear",
    "scan",
    "seq2seq",
    "simple_rnn",
    "stack",
    "train",
]

# Submodules imported on first attribute access (PEP 562): `jr.train` needs optax,
# orbax-checkpoint and tqdm and `jr.flax` needs Flax, which `import jaxrnn` alone does not load.
_LAZY_SUBMODULES = ("flax", "train")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"jaxrnn.{name}")
        globals()[name] = module  # later lookups skip __getattr__
        return module
    raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_SUBMODULES])
