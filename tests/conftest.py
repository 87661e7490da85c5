"""Strict settings for the whole suite: sloppy promotion fails loudly.

float64 is enabled so references can be computed in double precision; tests
pass explicit dtypes wherever the precision under test matters.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
