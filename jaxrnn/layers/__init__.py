"""Recurrent layers: unidirectional, bidirectional and stacked, as pure init/apply pairs.

A :class:`Layer` maps a whole sequence to a sequence,
``apply(params, xs, carry=None, *, lengths=None, key=None) -> (carry, ys)``, like
:func:`jaxrnn.scan` does for one cell. :func:`rnn` builds what ``torch.nn.RNN/GRU/LSTM`` build
(``num_layers``, ``bidirectional``, ``dropout``):

.. math::

    a_l^{(t)} = \\text{cell}_l(a_l^{(t-1)}, y_{l-1}^{(t)}), \\qquad
    y_0^{(t)} = x^{(t)}

and a bidirectional layer runs one cell forward and one backward over the same inputs,
:math:`y^{(t)} = [\\overrightarrow{a}^{(t)}; \\overleftarrow{a}^{(t)}]` (forward features first).

Implemented in ``jaxrnn.layers._layers``; the cuDNN dispatch of :func:`rnn` sits below the
layers in ``jaxrnn.layers._cudnn`` (public as :mod:`jaxrnn.cudnn`).
"""

from jaxrnn._core import Bidirectional, Layer
from jaxrnn.layers._layers import bidirectional, layer, rnn, stack

__all__ = ["Bidirectional", "Layer", "bidirectional", "layer", "rnn", "stack"]
