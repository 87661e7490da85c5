"""Connectionist temporal classification (CTC) loss.

The forward (alpha) recursion of Graves et al. (2006) in log space, laid out
as optax lays it out: per label position ``n`` a blank state ``phi[n]`` (the
prefix ``y_1..y_n`` has been emitted and the last frame was a blank or the
prefix is empty) and an emit state ``emit[n]`` (the last frame emitted
``y_{n+1}``). Impossible transitions get ``log_epsilon`` (optax's finite
stand-in for ``log 0``; ``-inf`` gives exact zeros). Every combination is a
select or a log-add-exp with finite derivatives at ``-inf``, never a product
with a 0/1 indicator, so ``-inf`` log-probabilities and ``log_epsilon=-inf``
give ``inf`` losses, not NaN, and derivatives stay finite. Derivatives come
from autodiff of the ``lax.scan``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _check_shape(a: Array, shape: tuple[int, ...], name: str, why: str) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({why}); got {name}.shape={a.shape}.")


def _prepare(logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
    x = cm.as_float_array(logits, "logits")
    if x.ndim != 3:
        raise ValueError(f"logits must have shape [B, T, K]; got logits.shape={x.shape}.")
    b, t, k = x.shape
    if t == 0 or k == 0:
        raise ValueError(f"logits needs at least one frame and one class; got {x.shape}.")
    y = cm.as_int_array(labels, "labels")
    if y.ndim != 2 or y.shape[0] != b:
        raise ValueError(f"labels must have shape [B={b}, N]; got labels.shape={y.shape}.")
    lpad = cm.as_numeric_array(logit_paddings, "logit_paddings")
    _check_shape(lpad, (b, t), "logit_paddings", "logits.shape[:2]")
    ypad = cm.as_numeric_array(label_paddings, "label_paddings")
    _check_shape(ypad, y.shape, "label_paddings", "labels.shape")
    blank = cm.static_int(blank_id, "blank_id", allow_none=False)
    if not 0 <= blank < k:
        raise ValueError(f"blank_id must lie in [0, {k}) for {k} classes; got {blank}.")
    eps = cm.as_numeric_array(log_epsilon, "log_epsilon")
    if eps.ndim != 0:
        raise ValueError(f"log_epsilon must be a scalar; got shape {eps.shape}.")
    dtype = cm.compute_dtype(x)
    ypad, lpad = ypad != 0, lpad != 0
    if cm.is_concrete(y) and cm.is_concrete(ypad):
        bad = ~np.asarray(ypad) & ((np.asarray(y) < 0) | (np.asarray(y) >= k))
        if bad.any():
            raise ValueError(
                f"labels must lie in [0, {k}) where not padded; found {np.asarray(y)[bad][0]}."
            )
    return x.astype(dtype), lpad, y, ypad, blank, eps.astype(dtype)


@jax.custom_jvp
def _logaddexp(a: Array, b: Array) -> Array:
    """``log(e^a + e^b)`` whose derivatives are finite (0) where both are ``-inf``
    (``jnp.logaddexp``'s are NaN there)."""
    both = (a == -jnp.inf) & (b == -jnp.inf)
    a = jnp.where(both, jnp.zeros_like(a), a)
    b = jnp.where(both, jnp.zeros_like(b), b)
    out = jnp.maximum(a, b) + jnp.log1p(jnp.exp(-jnp.abs(a - b)))
    return jnp.where(both, jnp.full_like(out, -jnp.inf), out)


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    # d out = e^(a - out) da + e^(b - out) db (the two softmax weights), 0 where both
    # are -inf: one multiply-add per operand in the scan's backward, where autodiff
    # of the guarded formula above costs its selects and the |a - b| branch twice
    # (ctc_loss value_and_grad 66 ms -> 44 ms at B=32, T=400, N=80, K=64).
    a, b = primals
    da, db = tangents
    out = _logaddexp(a, b)
    finite = out != -jnp.inf
    safe = jnp.where(finite, out, jnp.zeros_like(out))
    wa = jnp.where(finite, jnp.exp(a - safe), jnp.zeros_like(out))
    wb = jnp.where(finite, jnp.exp(b - safe), jnp.zeros_like(out))
    return out, wa * da + wb * db


def _add_to_blank(phi: Array, score: Array) -> Array:
    """``phi[:, 1:]`` log-added with ``score`` (the empty prefix ``phi[:, 0]`` kept)."""
    return jnp.concatenate([phi[:, :1], _logaddexp(phi[:, 1:], score)], axis=-1)


def _alphas(x, lpad, y, blank, eps, tables: bool):
    """Per-sequence ``-log p(y | x)`` at every label length, and (with ``tables``)
    the forward tables, else ``None`` for them."""
    b, _, k = x.shape
    n = y.shape[1]
    # a padded frame's logits are never read: zero them before the softmax, so an
    # infinite entry there gives no NaN derivative
    logp = jax.nn.log_softmax(jnp.where(lpad[:, :, None], jnp.zeros_like(x), x), axis=-1)
    ok = (y >= 0) & (y < k)  # an out-of-range (padded) label emits log-prob 0, as in optax
    idx = jnp.broadcast_to(jnp.where(ok, y, 0)[:, None, :], (b, x.shape[1], n))
    emit_lp = jnp.where(ok[:, None, :], jnp.take_along_axis(logp, idx, axis=-1), 0.0)
    blank_lp = logp[:, :, blank : blank + 1]
    same = jnp.concatenate([y[:, :-1] == y[:, 1:], jnp.zeros((b, 1), bool)], axis=1)[:, :n]
    zero = jnp.zeros((), x.dtype)
    to_blank_eps = jnp.where(same, eps, zero)  # emit -> blank without a frame: not for a repeat
    to_blank_frame = jnp.where(same, zero, eps)  # emit -> blank by a blank frame: only for one
    phi0 = jnp.full((b, n + 1), eps, x.dtype).at[:, 0].set(0.0)
    emit0 = jnp.full((b, n), eps, x.dtype)

    def step(carry, xs):
        prev_phi, prev_emit = carry
        lp_emit, lp_blank, pad = xs
        phi = _add_to_blank(prev_phi, prev_emit + to_blank_eps)
        emit = _logaddexp(phi[:, :-1] + lp_emit, prev_emit + lp_emit)
        nxt = _add_to_blank(phi + lp_blank, prev_emit + lp_blank + to_blank_frame)
        pad = pad[:, None]
        emit = jnp.where(pad, prev_emit, emit)
        nxt = jnp.where(pad, prev_phi, nxt)
        return (nxt, emit), ((nxt, emit) if tables else None)

    xs = (jnp.swapaxes(emit_lp, 0, 1), jnp.swapaxes(blank_lp, 0, 1), lpad.T)
    (phi_t, emit_t), stacked = jax.lax.scan(step, (phi0, emit0), xs)
    last = _add_to_blank(phi_t, emit_t)
    if not tables:
        return -last, None, None
    phi, emit = stacked
    return -last, phi.at[-1].set(last), emit


# One compiled program per shape, also eagerly. The forward tables are formed only
# when asked for: inside an outer jit, XLA (jax 0.10.2) does not drop a nested
# jit's unused scan outputs, and writing the [T, B, N] tables tripled the time
# of ctc_loss's forward (B=32, T=400, N=80: 31 ms -> 10 ms without them).
@partial(jax.jit, static_argnums=(4, 6))
def _per_sequence(x, lpad, y, ypad, blank, eps, tables=False):
    neg, phi, emit = _alphas(x, lpad, y, blank, eps, tables)
    length = y.shape[1] - jnp.sum(ypad, axis=1)
    loss = jnp.take_along_axis(neg, length[:, None], axis=1)[:, 0]
    # under jit, an unpadded label out of range makes its sequence's loss NaN
    bad = jnp.any(~ypad & ((y < 0) | (y >= x.shape[-1])), axis=1)
    return jnp.where(bad, jnp.nan, loss), phi, emit, length


def ctc_loss_with_forward_probs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> tuple[Array, Array, Array]:
    r"""CTC loss and the log forward probabilities of the CTC alignment lattice.

    .. math::
        \ell_b = -\log \sum_{\pi \in \mathcal{B}^{-1}(y_b)} \prod_t p(\pi_t \mid x_{b,t}),
        \qquad p = \mathrm{softmax}(x_{b,t})

    where :math:`\mathcal{B}` removes repeats and then blanks. The forward
    variables are :math:`\log\alpha_{\mathrm{BLANK}}(t, n)`, the log
    probability of having emitted :math:`y_{1:n}` by frame :math:`t` with a
    blank (or nothing) last, and :math:`\log\alpha_{\mathrm{LABEL}}(t, n)`,
    the same with :math:`y_{n+1}` emitted last.

    Args:
      logits: ``[B, T, K]`` unnormalized scores, blank included.
      logit_paddings: ``[B, T]``, 1 on padded frames, 0 on real ones.
      labels: ``[B, N]`` integer labels, right-padded.
      label_paddings: ``[B, N]``, 1 on padded labels (each row zeros then
        ones), 0 on real ones.
      blank_id: the blank's class index (a Python int).
      log_epsilon: the stand-in for :math:`\log 0` on impossible
        transitions (may be traced; ``-jnp.inf`` is exact).

    Returns:
      ``(loss, logalpha_blank, logalpha_label)``: ``loss`` ``[B]``, and the
      forward tables ``[T, B, N + 1]`` and ``[T, B, N]``; float32 for
      bf16/f16 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.zeros((1, 2, 2), dtype=jnp.float32)
      >>> y = jnp.array([[1]], dtype=jnp.int32)
      >>> pad_x = jnp.zeros((1, 2), dtype=jnp.float32)
      >>> pad_y = jnp.zeros((1, 1), dtype=jnp.float32)
      >>> loss, a_blank, a_label = jaxloss.ctc_loss_with_forward_probs(x, pad_x, y, pad_y)
      >>> loss, a_blank.shape, a_label.shape
      (Array([0.2876821], dtype=float32), (2, 1, 2), (2, 1, 1))

    Note:
      With the default ``log_epsilon=-1e5`` a target too long for its
      frames gives a large finite loss (optax's number); with
      ``log_epsilon=-jnp.inf`` it gives ``inf``. ``-inf`` logits (masked
      classes) give no NaN (optax's one-hot product gives NaN there).
      Unpadded labels out of range raise a ``ValueError`` when concrete;
      under ``jit`` their sequence's loss is NaN with zero gradient.
      Padded frames and labels get zero gradient.

    References:
      ``optax.losses.ctc_loss_with_forward_probs``; Graves et al.,
      *Connectionist temporal classification*, ICML 2006.
    """
    x, lpad, y, ypad, blank, eps = _prepare(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon
    )
    loss, phi, emit, _ = _per_sequence(x, lpad, y, ypad, blank, eps, True)
    return loss, phi, emit


def _feasible(lpad: Array, y: Array, ypad: Array, length: Array) -> Array:
    """Whether each target fits its frames: ``T_b >= L_b + repeats_b``."""
    frames = jnp.sum(~lpad, axis=1)
    rep = (y[:, 1:] == y[:, :-1]) & ~ypad[:, 1:]
    return frames >= length + jnp.sum(rep, axis=1)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
    reduction: str = "none",
    zero_infinity: bool = False,
) -> Array:
    r"""CTC loss: the negative log probability of the labels over all alignments.

    .. math::
        \ell_b = -\log \sum_{\pi \in \mathcal{B}^{-1}(y_b)} \prod_t p(\pi_t \mid x_{b,t}),
        \qquad p = \mathrm{softmax}(x_{b,t})

    where :math:`\mathcal{B}` removes repeats and then blanks.

    From ``torch.nn.functional.ctc_loss(log_probs, targets, input_lengths,
    target_lengths, blank, reduction, zero_infinity)`` (``log_probs``
    ``[T, N, C]``, padded ``targets`` ``[N, S]``):

    - ``logits = jnp.swapaxes(log_probs, 0, 1)`` (``[N, T, C]``; the log-softmax
      applied here leaves normalized log-probabilities unchanged);
    - ``logit_paddings = jnp.arange(T) >= input_lengths[:, None]``;
    - ``labels = targets``, ``label_paddings = jnp.arange(S) >= target_lengths[:, None]``;
    - ``blank_id = blank``, same ``reduction`` and ``zero_infinity``;
    - ``log_epsilon=-jnp.inf`` to get PyTorch's ``inf`` for targets too long
      for their frames (the default ``-1e5`` gives optax's large finite value;
      feasible targets get the same numbers either way).

    Args:
      logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon:
        as in :func:`ctc_loss_with_forward_probs`.
      reduction: ``"none"`` (``[B]``, optax's result), ``"sum"``, or
        ``"mean"``: PyTorch's, the batch mean of each loss divided by its
        target length (at least 1), not the plain batch mean.
      zero_infinity: replace by 0 (with zero gradient) the loss of every
        sequence whose target cannot be aligned to its frames
        (:math:`T_b < L_b + \text{repeats}_b`) or whose loss is infinite,
        as PyTorch's ``zero_infinity=True``.

    Returns:
      Per-sequence loss ``[B]`` or its reduction; float32 for bf16/f16 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.zeros((2, 3, 3), dtype=jnp.float32)
      >>> y = jnp.array([[1, 2], [1, 1]], dtype=jnp.int32)
      >>> pad_x = jnp.array([[0, 0, 0], [0, 0, 1]], dtype=jnp.float32)
      >>> pad_y = jnp.zeros((2, 2), dtype=jnp.float32)
      >>> jaxloss.ctc_loss(x, pad_x, y, pad_y, log_epsilon=-jnp.inf)
      Array([1.686399,      inf], dtype=float32)
      >>> jaxloss.ctc_loss(x, pad_x, y, pad_y, reduction="mean", zero_infinity=True)
      Array(0.42159975, dtype=float32)

    Note:
      ``-inf`` logits and ``log_epsilon=-inf`` give ``inf`` (never NaN) for
      impossible alignments, with finite gradients. ``zero_infinity`` also
      zeroes infeasible targets under the default finite ``log_epsilon``, so
      its numbers match PyTorch's either way. Unpadded labels out of range
      raise a ``ValueError`` when concrete; under ``jit`` their loss is NaN.

    References:
      ``optax.losses.ctc_loss``; ``torch.nn.functional.ctc_loss``.
    """
    x, lpad, y, ypad, blank, eps = _prepare(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon
    )
    red = cm.Reduction.of(reduction)
    if not isinstance(zero_infinity, bool):
        raise TypeError(f"zero_infinity must be a bool; got {zero_infinity!r}.")
    loss, _, _, length = _per_sequence(x, lpad, y, ypad, blank, eps)
    if zero_infinity:
        drop = ~_feasible(lpad, y, ypad, length) | (loss == jnp.inf)
        loss = jnp.where(drop, jnp.zeros_like(loss), loss)
    if red.kind == "mean":
        loss = loss / jnp.maximum(length, 1).astype(loss.dtype)
    return red(loss)
