"""Hooks into jaxrnn's cuDNN dispatch for the GPU check (``device_check.py``).

:func:`cudnn_backend` is the real backend, or in a dry run a fake CUDA GPU whose kernel is
``jax.experimental.rnn.lstm_ref`` (``tests/test_cudnn.py``'s ``fake_gpu`` fixture, as a
context); :func:`count_kernel_calls` counts the traces of the cuDNN path.
"""

from __future__ import annotations

import contextlib

import jax
from jax.experimental import rnn as jrnn

from jaxrnn.layers import _cudnn  # the dispatch; its backend is swapped in dry runs


def _lstm_ref(x, h0, c0, weights, lengths, sizes):
    input_size, hidden_size, num_layers, bidirectional = sizes
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    return jrnn.lstm_ref(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size, num_layers, 0.0,
        bidirectional,
    )  # fmt: skip


def _ref_forward(x, h0, c0, w, lengths, sizes):
    return _lstm_ref(x, h0, c0, w, lengths, sizes), (x, h0, c0, w, lengths)


def _ref_backward(sizes, residuals, cotangents):
    x, h0, c0, w, lengths = residuals
    run = lambda x, h0, c0, w: _lstm_ref(x, h0, c0, w, lengths, sizes)
    return jax.vjp(run, x, h0, c0, w)[1](cotangents)


@contextlib.contextmanager
def cudnn_backend(dry_run: bool):
    """The real backend; in a dry run, a fake CUDA GPU whose kernel is ``lstm_ref``."""
    if not dry_run:
        yield
        return
    fake = {
        "_backend_reason": lambda: None,
        "_backend_forward": _ref_forward,
        "_backend_backward": _ref_backward,
    }
    saved = {name: getattr(_cudnn, name) for name in fake}
    for name, value in fake.items():
        setattr(_cudnn, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_cudnn, name, value)


@contextlib.contextmanager
def count_kernel_calls():
    """Count the traces of the cuDNN path (``apply_cudnn``) inside the block: ``[n]``."""
    count, original = [0], _cudnn.apply_cudnn

    def counted(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    _cudnn.apply_cudnn = counted
    try:
        yield count
    finally:
        _cudnn.apply_cudnn = original
