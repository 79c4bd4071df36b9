r"""Native CPU kernels for LSTM and GRU layers, called from XLA through its FFI.

:func:`jaxrnn.scan` (and so :func:`jaxrnn.layer`, :func:`jaxrnn.bidirectional`,
:func:`jaxrnn.stack`, :func:`jaxrnn.rnn`, the Flax modules and :mod:`jaxrnn.train`) runs a
:func:`jaxrnn.lstm` or :func:`jaxrnn.gru` layer on these kernels on the CPU whenever they
compute exactly what the XLA path computes; nothing in user code changes. One kernel call runs
one direction of one layer over the whole sequence:

* each step's :math:`h_{t-1} W_{hh}` runs on a weight matrix packed once per call so that one
  register tile holds every gate of the same hidden units, and the gate nonlinearities and the
  state update run on that tile while it is in registers;
* the input projection :math:`x_t W_{ih}` joins the same tile, except for an LSTM over a
  single sequence (in bf16 on AMX tiles, a GRU too) or, in float32, with weights far larger
  than the cores' caches: there it is one matmul over all steps before the loop;
* the threads (one per CPU this process may use) each own a slice of the hidden units, and with
  it a slice of :math:`W_{hh}` that stays in that core's cache for all steps; they meet once
  per step;
* with ``dtype=jnp.bfloat16`` (:mod:`jaxrnn.precision`) the step's matmul takes bfloat16
  operands with float32 sums, on AMX tiles or AVX512-BF16 dot-product instructions where the
  CPU has them (:func:`status` says which);
* the backward kernel runs the recurrence in reverse for the gate cotangents, written over the
  saved activations, and the carries :math:`h_{t-1}` entering each step, written over the
  saved cell states (LSTM) or outputs (GRU); the weight gradients are then single matmuls
  over all steps. In bfloat16 on a CPU with bf16 units, the
  backward pass's matmuls take the gate cotangents rounded to bf16 too, and run on those
  units (with AMX, on the library's own GEMMs on the tiles).

When it is used (``kernel=None``, the default of every function above): an unmodified
``jr.lstm`` without ``peephole``, ``coupled`` or ``proj_size``, or a ``jr.gru`` (either
``reset_after``), with float32 or bfloat16 ``param_dtype`` and ``dtype``; ``method=
"sequential"``, ``remat=False`` and no ``resets``; the computation on the CPU; and the kernel
library built and loadable (:func:`available`). Everything else (peepholes, other cells,
regulariser transforms, float64, the parallel methods, remat, resets, GPUs) runs on the XLA
path. ``kernel=True`` requires the kernel and raises ``ValueError`` naming the reason where it
cannot run; ``kernel=False`` never uses it.

The two paths agree to float32 rounding (the kernels' exponential and tanh are accurate to a
few ulp, as XLA's), in values and gradients, with ``lengths`` (the carry frozen and outputs zero
past each sequence's end), ``reverse``, an initial carry and any batch shape. Differences from
the XLA path: derivatives are reverse-mode only (``jax.grad``, ``jax.vjp``); forward-mode
(``jax.jvp``, ``jax.jacfwd``) and second derivatives raise an error that says to pass
``kernel=False`` (where the ``jvp`` is itself inside ``jax.jit``, JAX's own ``TypeError``:
"can't apply forward-mode autodiff (jvp) to a custom_vjp function"). Under ``jax.vmap`` the
kernel runs once per mapped element (fold the mapped axis into the batch where possible).
With the batch split over an explicit mesh (:func:`jaxrnn.train.data_mesh`), each device runs
the kernels on its own rows (``jax.shard_map``, the weights replicated and their gradients
summed); weights split over a mesh axis keep the XLA path. ``unroll`` does not apply.

Building. ``pip install`` compiles the C++ in ``jaxrnn/kernels/_src`` for the machine it runs
on (``setup.py``): one library holding an AVX2 and an AVX-512 version of each kernel, the one
this CPU supports picked when it loads, so a wheel or environment moved to another x86-64 CPU
still works. Where no compiler is found or the build fails, the install still succeeds and
everything runs on XLA; :func:`status` says why the kernels are not available. To build them
in a source checkout: ``python setup.py build_ext --inplace``.

>>> import jaxrnn as jr
>>> isinstance(jr.kernels.available(), bool)
True
>>> jr.kernels.supports(jr.gru(3, 8))
(True, '')
"""

from __future__ import annotations

from jaxrnn.kernels._dispatch import supports
from jaxrnn.kernels._library import Status, status

__all__ = ["Status", "available", "status", "supports"]


def available() -> bool:
    """Whether the native kernels are built and load on this machine (then :func:`jaxrnn.scan`
    uses them for the layers :func:`supports` accepts, on the CPU). :func:`status` says why
    not when they do not.

    >>> import jaxrnn as jr
    >>> jr.kernels.available() == jr.kernels.status().available
    True
    """
    return status().available
