"""Kullback-Leibler divergence with a closed-form derivative rule.

Per element, with ``t`` the target probability and ``lp`` the log-prediction:

    kl   = t log t - t lp                 (0 where t == 0, whatever lp is)
    dkl  = -t dlp + (log t + 1 - lp) dt   (the dt coefficient is 0 where t == 0)

and with ``log_target`` (``lt = log t``):

    kl   = e^lt (lt - lp)                 (0 where lt == -inf)
    dkl  = -e^lt dlp + e^lt (lt - lp + 1) dlt

The rule is a ``custom_jvp`` whose tangent is linear in ``(dlp, dt)`` with
coefficients recomputed under ``jax.checkpoint``: reverse mode keeps only the
inputs, and a zero target never meets ``log 0`` or ``0 * inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _masked(v, mask):
    return v if mask is None else jnp.where(mask, v, jnp.zeros_like(v))


def _upcast(lp, t):
    dtype = cm.compute_dtype(lp, t)
    return lp.astype(dtype), t.astype(dtype)


def _kl_elements(lp, t, mask, log_target):
    lp, t = _upcast(lp, t)
    if log_target:
        # KL = e^lt (lt - lp), 0 where lt = -inf
        keep = t != -jnp.inf
        diff = t - lp
        # e^lt underflows to 0 (lt < -104 in float32) where lt - lp = inf: the
        # true term is +inf, not 0 * inf
        elem = jnp.where(diff == jnp.inf, jnp.inf, jnp.exp(t) * diff)
    else:
        # KL = t (log t - lp), 0 where t = 0 (NaN for t < 0, as in PyTorch and optax)
        keep = t != 0
        elem = t * (jnp.log(t) - lp)
    if mask is not None:
        keep = keep & mask
    # One select at the end: 0 * inf never happens, and XLA:CPU (jax 0.10.2) keeps
    # one [N, C] temporary before the row sum where selects on t and lp keep two;
    # pinned by tests/test_workarounds.py::test_kl_single_select.
    return jnp.where(keep, elem, 0.0)


def _kl_tangent_lp(res, args, dlp):
    lp, t, mask, log_target = args
    lp, t = _upcast(lp, t)
    prob = _masked(jnp.exp(t) if log_target else t, mask)
    return jnp.sum(-(prob * dlp.astype(lp.dtype)), axis=-1)


def _kl_tangent_t(res, args, dt):
    lp, t, mask, log_target = args
    lp, t = _upcast(lp, t)
    if log_target:
        coef = cm.safe_mul(jnp.exp(t), t - lp + 1.0)
    else:
        nz = t != 0
        log_t = jnp.log(jnp.where(nz, t, jnp.ones_like(t)))
        coef = jnp.where(nz, log_t + 1.0 - jnp.where(nz, lp, 0.0), 0.0)
    # masked before the product: its transpose never meets 0 * inf
    return jnp.sum(_masked(coef, mask) * dt.astype(lp.dtype), axis=-1)


def _kl_forward(lp, t, mask, log_target):
    return jnp.sum(_kl_elements(lp, t, mask, log_target), axis=-1), None


_kl = cm.linear_rule(_kl_forward, {0: _kl_tangent_lp, 1: _kl_tangent_t}, static_argnums=(3,))


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    log_target: bool = False,
    reduction: str = "none",
) -> Array:
    r"""Kullback-Leibler divergence :math:`\mathrm{KL}(t \,\|\, p)` over the class axis.

    .. math::
        \ell_i = \sum_c t_{i,c} \left(\log t_{i,c} - \log p_{i,c}\right)

    with :math:`0 \log 0 = 0`; with ``log_target=True`` the targets are given
    as :math:`\log t`.

    Args:
      log_predictions: :math:`\log p`, e.g. ``jax.nn.log_softmax(logits)``.
      targets: target probabilities :math:`t` (or :math:`\log t` with
        ``log_target``), the shape of ``log_predictions``. Differentiable.
      axis: the class axis that is summed over.
      where: boolean mask broadcastable to ``log_predictions``; ``False``
        elements are left out of the sum (optax's ``where``).
      log_target: whether ``targets`` are log-probabilities.
      reduction: ``"none"`` (one value per example, optax's result),
        ``"sum"``, ``"mean"`` (over examples; examples with no allowed class
        do not count) or ``"batchmean"`` (PyTorch's: the sum divided by
        ``log_predictions.shape[0]``).

    Returns:
      Per-example divergence (``log_predictions.shape`` minus ``axis``) or its
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> t = jnp.array([[0.5, 0.5, 0.0]], dtype=jnp.float32)
      >>> lp = jnp.log(jnp.array([[0.25, 0.5, 0.25]], dtype=jnp.float32))
      >>> jaxloss.kl_divergence(lp, t)
      Array([0.3465736], dtype=float32)

    Note:
      A zero target contributes 0 with finite derivatives, even against a
      ``-inf`` log-prediction (PyTorch gives NaN there). The derivative with
      respect to a zero target is taken as 0 (the one-sided limit is
      :math:`-\infty`). A positive target on a ``-inf`` log-prediction gives
      ``inf``, the true value. ``reduction="mean"`` is the mean over
      examples, not PyTorch's mean over all elements.

    References:
      ``optax.kl_divergence``, ``optax.kl_divergence_with_log_targets``;
      ``torch.nn.functional.kl_div`` (``reduction="sum"``, ``"batchmean"``).
    """
    lp = cm.as_float_array(log_predictions, "log_predictions")
    t = cm.as_float_array(targets, "targets")
    cm.check_same_shape(lp, t, "log_predictions", "targets")
    red = cm.Reduction.of(reduction, batchmean=True)
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target must be a bool; got {log_target!r}.")
    lp, mask, axes = cm.prepare_logits(lp, axis, where, "log_predictions")
    t = cm.classes_last(t, axes)
    loss = _kl(lp, t, mask, log_target)
    # with ``where``, a row counts in the mean when some class is allowed
    share = None if mask is None else jnp.any(mask, axis=-1).astype(loss.dtype)
    return red(loss, share, batch_size=jnp.shape(log_predictions)[0])
