"""Strict settings for the whole suite: sloppy promotion fails loudly.

float64 is enabled so references can be computed in double precision; tests
pass explicit dtypes wherever the precision under test matters.
"""

import os

# The suite checks values and derivatives, not speed: skip LLVM's optimisation
# passes (the HLO passes, fusion and buffer assignment, and so every
# memory_analysis() figure the tests pin, are unchanged). About a fifth less
# CPU for the suite. Set before JAX starts; subprocesses (the demo, the
# benchmark smoke run, the notebooks' kernels) inherit it.
_FLAG = "--xla_backend_optimization_level=0"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
