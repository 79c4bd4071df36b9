# The public path of the cuDNN dispatch of jr.rnn; the implementation lives below the layers, in
# jaxrnn.layers._cudnn, whose docstring this module shows.
from jaxrnn.layers import _cudnn as _impl
from jaxrnn.layers._cudnn import apply_cudnn, pack_lstm_weights, supports, unpack_lstm_weights

__doc__ = _impl.__doc__
__all__ = ["apply_cudnn", "pack_lstm_weights", "supports", "unpack_lstm_weights"]
