"""Small Flax NNX models for the demo."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
    """One hidden layer: ``Linear -> gelu -> Linear``."""

    def __init__(self, din: int, dhidden: int, dout: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, dhidden, rngs=rngs)
        self.out = nnx.Linear(dhidden, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.gelu(self.hidden(x)))


class CharLM(nnx.Module):
    """A fixed-context character model (Bengio et al., 2003).

    ``__call__`` returns the last hidden state ``[N, dim]``; the output layer is
    ``kernel`` ``[dim, vocab]`` (the Flax ``Dense`` layout) plus ``output_bias``,
    and the ``[N, vocab]`` logits are left to the loss. With ``tied=True`` the
    kernel is the transposed input embedding.
    """

    def __init__(
        self, vocab: int, context: int, dim: int, dhidden: int, *, tied: bool, rngs: nnx.Rngs
    ):
        self.tied = tied
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.hidden = nnx.Linear(context * dim, dhidden, rngs=rngs)
        self.proj = nnx.Linear(dhidden, dim, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        if not tied:
            init = nnx.initializers.normal(dim**-0.5)
            self.out_kernel = nnx.Param(init(rngs.params(), (dim, vocab), jnp.float32))
        self.out_bias = nnx.Param(jnp.zeros((vocab,), jnp.float32))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        e = self.embed(tokens)  # [N, context, dim]
        h = jax.nn.gelu(self.hidden(e.reshape(e.shape[0], -1)))
        return self.norm(self.proj(h))

    @property
    def kernel(self) -> jax.Array:
        """The output layer's ``[dim, vocab]`` kernel."""
        return self.embed.embedding[...].T if self.tied else self.out_kernel[...]

    @property
    def output_bias(self) -> jax.Array:
        return self.out_bias[...]
