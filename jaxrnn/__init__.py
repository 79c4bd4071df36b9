"""jaxrnn: recurrent neural networks as pure JAX functions.

A cell is one step, ``apply(params, carry, x) -> (carry, y)``; :func:`scan` runs it over a
sequence with ``jax.lax.scan``; layers stack and reverse cells. Everything is a pure function of
explicit parameters, so ``jit``, ``vmap``, ``grad`` and ``jvp`` apply directly.

The modules, in the order data flows through them::

    _core (the types) -> cells -> _scan (jr.scan) -> layers -> attention -> seq2seq / decode
    -> losses -> train -> models -> flax
    (beside them: regularizers (cell transformations), data (corpora and tasks), recipes
    (small architectures), interop (PyTorch, Flax, Equinox))
"""

# The imports follow the data flow, not the alphabet.
# ruff: noqa: I001, E402

# First: while the command-line tool starts, Ctrl-C and SIGTERM end it with one line.
from jaxrnn import _startup

_startup.guard()

# The core types; cells -> scan -> layers: one step, a sequence, stacks and directions.
from jaxrnn._core import Bidirectional, Cell, Layer, LinearRecurrence
from jaxrnn.cells import (
    ConvGRUParams,
    ConvLSTMParams,
    GRUParams,
    JordanParams,
    LayerNormGRUParams,
    LayerNormLSTMParams,
    LearnableCarry,
    LearnableCarryParams,
    LRUParams,
    LSTMCarry,
    LSTMParams,
    MGUParams,
    MinGRUParams,
    MinLSTMParams,
    RGLRUParams,
    SimpleRNNParams,
    SLSTMCarry,
    SLSTMParams,
    conv_gru,
    conv_lstm,
    gru,
    jordan_rnn,
    layer_norm_gru,
    layer_norm_lstm,
    learnable_carry,
    lru,
    lstm,
    mgu,
    min_gru,
    min_lstm,
    rg_lru,
    simple_rnn,
    slstm,
)
from jaxrnn.regularizers import (
    ZoneoutCarry,
    embedding_dropout,
    regularize,
    variational_dropout,
    weight_drop,
    zoneout,
)
from jaxrnn._scan.scan import scan
from jaxrnn._scan.sequential import save_nonlinear
from jaxrnn.newton import Newton  # jr.scan(method=jr.Newton(...)): all steps at once
from jaxrnn.layers import bidirectional, layer, rnn, stack
from jaxrnn import cells, cudnn, kernels, layers, newton, precision  # the public modules above

# -> attention -> seq2seq / decode -> losses; data and recipes beside them.
from jaxrnn import attention, seq2seq, decode, losses, data, recipes

# Weights to and from PyTorch and Flax (imports neither until a conversion is called).
from jaxrnn import interop

from jaxrnn._version import __version__ as __version__

__all__ = [
    "Bidirectional",
    "Cell",
    "ConvGRUParams",
    "ConvLSTMParams",
    "GRUParams",
    "JordanParams",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "LayerNormGRUParams",
    "LayerNormLSTMParams",
    "LearnableCarry",
    "LearnableCarryParams",
    "LinearRecurrence",
    "MGUParams",
    "MinGRUParams",
    "MinLSTMParams",
    "Newton",
    "RGLRUParams",
    "SLSTMCarry",
    "SLSTMParams",
    "SimpleRNNParams",
    "ZoneoutCarry",
    "attention",
    "bidirectional",
    "cells",
    "conv_gru",
    "conv_lstm",
    "cudnn",
    "data",
    "decode",
    "embedding_dropout",
    "gru",
    "interop",
    "jordan_rnn",
    "kernels",
    "layer",
    "layer_norm_gru",
    "layer_norm_lstm",
    "layers",
    "learnable_carry",
    "losses",
    "lru",
    "lstm",
    "mgu",
    "min_gru",
    "min_lstm",
    "models",
    "newton",
    "precision",
    "recipes",
    "regularize",
    "rg_lru",
    "rnn",
    "save_nonlinear",
    "scan",
    "seq2seq",
    "simple_rnn",
    "slstm",
    "stack",
    "train",
    "variational_dropout",
    "weight_drop",
    "zoneout",
]

# -> train -> models -> flax: imported on first attribute access (PEP 562). `jr.train` and
# `jr.models` need optax, orbax-checkpoint and tqdm, and `jr.flax` needs Flax, which
# `import jaxrnn` alone does not load.
_LAZY_SUBMODULES = ("train", "models", "flax")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"jaxrnn.{name}")
        globals()[name] = module  # later lookups skip __getattr__
        return module
    raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_SUBMODULES])
