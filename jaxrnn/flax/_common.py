"""Pieces shared by the Linen and NNX wrappers (no Flax import here)."""

from __future__ import annotations

from jaxrnn.layers import Layer, bidirectional, layer, rnn, stack


def uses_key(lay: Layer) -> bool:
    """Whether ``lay.apply`` can make use of a ``key`` (i.e. has dropout somewhere).

    Decided from ``lay.config``: :func:`jaxrnn.layer` and :func:`jaxrnn.bidirectional` layers
    never use one; :func:`jaxrnn.rnn` and :func:`jaxrnn.stack` layers do when their dropout is
    positive (or, for a stack, when one of its layers does). A layer built some other way is
    assumed to use its key, so the wrappers always hand it one outside deterministic mode.
    """
    cfg = dict(lay.config)
    factory = cfg.get("factory")
    if factory is layer or factory is bidirectional:
        return False
    if factory is rnn:
        return cfg["dropout"] > 0.0
    if factory is stack:
        return cfg["dropout"] > 0.0 or any(uses_key(sub) for sub in cfg["layers"])
    return True
