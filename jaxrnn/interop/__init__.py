"""Interoperability with PyTorch, Flax and Equinox: the same weights in, the same function out.

Each backend converts parameters between a jaxrnn cell or layer and the other library's modules,
and the converted model computes the same function as the original:

- :mod:`jaxrnn.interop.torch`: ``torch.nn.RNN``/``GRU``/``LSTM`` modules and :func:`jaxrnn.rnn`
  layers (:func:`from_torch`, :func:`to_torch`, :func:`torch_state_dict`), and torch's stacked
  states ``h_n``/``c_n`` (:func:`torch_state`, :func:`carry_from_torch`);
- :mod:`jaxrnn.interop.flax`: Flax Linen and NNX RNN cells (:func:`from_flax_linen`,
  :func:`to_flax_linen`, :func:`from_flax_nnx`, :func:`to_flax_nnx`), Linen's ``MGUCell`` and
  ``ConvLSTMCell`` included (NNX has neither), and Flax's LSTM carry order
  (:func:`carry_from_flax`, :func:`carry_to_flax`);
- :mod:`jaxrnn.interop.equinox`: Equinox's ``GRUCell`` and ``LSTMCell`` modules
  (:func:`from_equinox`, :func:`to_equinox`);
- :mod:`jaxrnn.interop._common`: what the backends share (cell-kind detection, fused gate
  blocks, building a jaxrnn cell from them); ``_flax_conv`` holds the convolutional LSTM's
  mapping (gate order, Flax's forget offset, convolution options).

Conversions are exact or refused: where the target cannot hold the source's function (a GRU
with ``reset_after=False``, peepholes, coupled gates, custom activations, a Jordan cell, a
nonzero ``b_hn`` for NNX, nonzero biases for ``bias=False``, a strided convolution), a
``ValueError`` names what blocks it. Importing this package imports neither ``torch``,
``flax`` nor ``equinox``: the functions that need them import them when called.
"""

from jaxrnn.interop.equinox import from_equinox, to_equinox
from jaxrnn.interop.flax import (
    carry_from_flax,
    carry_to_flax,
    from_flax_linen,
    from_flax_nnx,
    to_flax_linen,
    to_flax_nnx,
)
from jaxrnn.interop.torch import (
    carry_from_torch,
    from_torch,
    to_torch,
    torch_state,
    torch_state_dict,
)

__all__ = [
    "carry_from_flax",
    "carry_from_torch",
    "carry_to_flax",
    "from_equinox",
    "from_flax_linen",
    "from_flax_nnx",
    "from_torch",
    "to_equinox",
    "to_flax_linen",
    "to_flax_nnx",
    "to_torch",
    "torch_state",
    "torch_state_dict",
]
