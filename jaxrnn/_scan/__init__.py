"""The scan machinery behind :func:`jaxrnn.scan`: ``scan`` (validate, choose the method, run),
``sequential`` (``jax.lax.scan`` with masks, ``remat`` and ``remat="sqrt"``), ``associative``
(parallel prefix scans of linear recurrences) and ``newton`` (Newton/DEER iterations, public as
:mod:`jaxrnn.newton`)."""
