"""jaxrnn: recurrent neural networks as pure JAX functions.

A cell is one step, ``apply(params, carry, x) -> (carry, y)``; :func:`scan` runs it over a
sequence with ``jax.lax.scan``; layers stack and reverse cells. Everything is a pure function of
explicit parameters, so ``jit``, ``vmap``, ``grad`` and ``jvp`` apply directly.

The modules, in the order data flows through them::

    cells -> scan -> layers -> attention -> seq2seq / decode -> losses -> train -> models -> flax
    (beside them: regularizers (cell transformations), data (corpora and tasks), recipes
    (small architectures), interop (PyTorch, Flax))
"""

# The imports follow the data flow, not the alphabet.
# ruff: noqa: I001

# cells -> scan -> layers: one step, a sequence, stacks and directions.
from jaxrnn.cells import (
    Cell,
    GRUParams,
    JordanParams,
    LinearRecurrence,
    LSTMCarry,
    LSTMParams,
    SimpleRNNParams,
    gru,
    jordan_rnn,
    lstm,
    simple_rnn,
)
from jaxrnn.mgu import MGUParams, mgu
from jaxrnn.slstm import SLSTMCarry, SLSTMParams, slstm
from jaxrnn.linear import LRUParams, MinGRUParams, MinLSTMParams, RGLRUParams
from jaxrnn.linear import lru, min_gru, min_lstm, rg_lru
from jaxrnn.conv import ConvGRUParams, ConvLSTMParams, conv_gru, conv_lstm
from jaxrnn.layernorm import (
    LayerNormGRUParams,
    LayerNormLSTMParams,
    layer_norm_gru,
    layer_norm_lstm,
)
from jaxrnn.carry import LearnableCarry, LearnableCarryParams, learnable_carry
from jaxrnn.regularizers import (
    ZoneoutCarry,
    embedding_dropout,
    regularize,
    variational_dropout,
    weight_drop,
    zoneout,
)
from jaxrnn.scan import save_nonlinear, scan
from jaxrnn.newton import Newton  # jr.scan(method=jr.Newton(...)): all steps at once
from jaxrnn.layers import Bidirectional, Layer, bidirectional, layer, rnn, stack
from jaxrnn import cudnn, precision  # jr.rnn's cuDNN dispatch on GPU; the dtype policy

# -> attention -> seq2seq / decode -> losses; data and recipes beside them.
from jaxrnn import attention, seq2seq, decode, losses, data, recipes

# Weights to and from PyTorch and Flax (imports neither until a conversion is called).
from jaxrnn import interop

__version__ = "0.1.0"

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
    "conv_gru",
    "conv_lstm",
    "cudnn",
    "data",
    "decode",
    "embedding_dropout",
    "gru",
    "interop",
    "jordan_rnn",
    "layer",
    "layer_norm_gru",
    "layer_norm_lstm",
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
