"""Test configuration shared by tests/, the doctests in jaxrnn/ and README.md."""

import jax

# Strict dtype promotion: mixing float32 with float64 (or int with float) is an error, never a
# silent upcast, so a dtype slip in the library fails the tests.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Using a PRNG key twice is an error (the initialisers promise one key per parameter).
jax.config.update("jax_debug_key_reuse", True)
