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

import warnings

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


def _kl_prelude(log_predictions, targets, axis, where, targets_name, reduction, batchmean):
    """Validated ``(lp, t, mask, red)`` with the class axes moved last and flattened."""
    lp = cm.as_float_array(log_predictions, "log_predictions")
    t = cm.as_float_array(targets, targets_name)
    cm.check_same_shape(lp, t, "log_predictions", targets_name)
    red = cm.Reduction.of(reduction, batchmean=batchmean)
    lp, mask, axes = cm.prepare_logits(lp, axis, where, "log_predictions")
    return lp, cm.classes_last(t, axes), mask, red


def _row_share(mask, loss):
    # with ``where``, a row counts in the mean when some class is allowed
    return None if mask is None else jnp.any(mask, axis=-1).astype(loss.dtype)


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
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target must be a bool; got {log_target!r}.")
    lp, t, mask, red = _kl_prelude(
        log_predictions, targets, axis, where, "targets", reduction, True
    )
    loss = _kl(lp, t, mask, log_target)
    return red(loss, _row_share(mask, loss), batch_size=jnp.shape(log_predictions)[0])


def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Kullback-Leibler divergence :math:`\mathrm{KL}(t \,\|\, p)` with targets in log space.

    .. math::
        \ell_i = \sum_c e^{\log t_{i,c}} \left(\log t_{i,c} - \log p_{i,c}\right)

    The same divergence as :func:`kl_divergence` with ``log_target=True``.

    Args:
      log_predictions: :math:`\log p`, e.g. ``jax.nn.log_softmax(logits)``.
      log_targets: :math:`\log t`, the shape of ``log_predictions``.
        Differentiable.
      axis: the class axis (an int, a tuple of ints or ``None``) summed over.
      where: boolean mask broadcastable to ``log_predictions`` (or shaped like
        the batch); ``False`` elements are left out of the sum.
      reduction: ``"none"`` (one value per example, optax's result),
        ``"sum"``, ``"mean"`` (over examples) or ``"batchmean"`` (the sum
        divided by ``log_predictions.shape[0]``, PyTorch's).

    Returns:
      Per-example divergence or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> lt = jnp.log(jnp.array([[0.5, 0.5]], dtype=jnp.float32))
      >>> lp = jnp.log(jnp.array([[0.25, 0.75]], dtype=jnp.float32))
      >>> jaxloss.kl_divergence_with_log_targets(lp, lt)
      Array([0.14384104], dtype=float32)

    Note:
      A ``-inf`` log-target contributes 0 with finite derivatives, even
      against a ``-inf`` log-prediction (optax gives NaN there).

    References:
      ``optax.losses.kl_divergence_with_log_targets``;
      ``torch.nn.functional.kl_div(..., log_target=True)``.
    """
    lp, lt, mask, red = _kl_prelude(
        log_predictions, log_targets, axis, where, "log_targets", reduction, True
    )
    loss = _kl(lp, lt, mask, True)
    return red(loss, _row_share(mask, loss), batch_size=jnp.shape(log_predictions)[0])


def _generalized(lp, t, mask):
    lp, t = _upcast(lp, t)
    # exp of the masked log-prediction: an infinite masked-out entry gives no NaN cotangent
    return _kl(lp, t, mask, False) + jnp.sum(_masked(jnp.exp(_masked(lp, mask)) - t, mask), axis=-1)


def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Generalized Kullback-Leibler divergence, for unnormalized distributions.

    .. math::
        \ell_i = \sum_c \left[t_{i,c} \left(\log t_{i,c} - \log p_{i,c}\right)
        - t_{i,c} + p_{i,c}\right]

    with :math:`0 \log 0 = 0`: the Bregman divergence of
    :math:`x \log x - x`; equal to :func:`kl_divergence` when :math:`t` and
    :math:`p` both sum to 1.

    Args:
      log_predictions: :math:`\log p` (``p`` need not sum to 1).
      targets: nonnegative :math:`t`, the shape of ``log_predictions``.
        Differentiable.
      axis: the class axis (an int, a tuple of ints or ``None``) summed over.
      where: boolean mask broadcastable to ``log_predictions`` (or shaped like
        the batch); ``False`` elements are left out of the sum.
      reduction: ``"none"`` (one value per example, optax's result), ``"sum"``
        or ``"mean"`` (over examples; rows with nothing allowed do not count).

    Returns:
      Per-example divergence or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> t = jnp.array([[1.0, 2.0]], dtype=jnp.float32)
      >>> lp = jnp.log(jnp.array([[1.0, 1.0]], dtype=jnp.float32))
      >>> jaxloss.generalized_kl_divergence(lp, t)
      Array([0.38629436], dtype=float32)

    Note:
      A zero target contributes :math:`p` with finite derivatives, also at a
      ``-inf`` log-prediction (optax gives NaN there). The derivative with
      respect to a zero target is -1: the :math:`t \log t` term contributes 0
      there, as in :func:`kl_divergence` (its one-sided limit is
      :math:`-\infty`).

    References:
      ``optax.losses.generalized_kl_divergence``; Boyd and Vandenberghe,
      *Convex Optimization*, p. 90.
    """
    lp, t, mask, red = _kl_prelude(
        log_predictions, targets, axis, where, "targets", reduction, False
    )
    loss = _generalized(lp, t, mask)
    return red(loss, _row_share(mask, loss))


def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Deprecated alias of :func:`generalized_kl_divergence` (optax's old name).

    .. math::
        \ell_i = \sum_c \left[t_{i,c} \left(\log t_{i,c} - \log p_{i,c}\right)
        - t_{i,c} + p_{i,c}\right]

    Args:
      log_predictions: :math:`\log p`.
      targets: nonnegative :math:`t`, the shape of ``log_predictions``.
      axis: the class axis (an int, a tuple of ints or ``None``) summed over.
      where: boolean mask; ``False`` elements are left out of the sum.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      The numbers of :func:`generalized_kl_divergence`.

    Example:
      >>> import warnings, jax.numpy as jnp, jaxloss
      >>> t = jnp.array([[1.0, 2.0]], dtype=jnp.float32)
      >>> lp = jnp.zeros((1, 2), dtype=jnp.float32)
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore", DeprecationWarning)
      ...     jaxloss.convex_kl_divergence(lp, t)
      Array([0.38629436], dtype=float32)

    Note:
      Emits a ``DeprecationWarning`` on each call (at trace time under
      ``jit``), as optax does; Python shows it by default only in
      ``__main__``, so programs keep running with the same numbers.

    References:
      ``optax.losses.convex_kl_divergence`` (deprecated in optax).
    """
    warnings.warn(
        "convex_kl_divergence is deprecated (as in optax); use generalized_kl_divergence.",
        DeprecationWarning,
        stacklevel=2,
    )
    return generalized_kl_divergence(log_predictions, targets, axis, where, reduction=reduction)


def _jsd_term(w, la, lm, keep):
    """``w e^la (la - lm)`` where ``keep``, else 0, with safe inputs in both branches."""
    la_s, lm_s = jnp.where(keep, la, 0.0), jnp.where(keep, lm, 0.0)
    return jnp.where(keep, w * jnp.exp(la_s) * (la_s - lm_s), 0.0)


def _jsd_mixed(lp, lt, mask, beta):
    """``beta KL(t || m) + (1 - beta) KL(p || m)``, ``m = beta t + (1 - beta) p``, for
    ``0 < beta < 1`` (traced or not), in log space."""
    keep_t, keep_p = lt != -jnp.inf, lp != -jnp.inf
    # where both are -inf, logaddexp's derivative is NaN: feed it zeros there
    some = keep_t | keep_p
    lt_s, lp_s = jnp.where(some, lt, 0.0), jnp.where(some, lp, 0.0)
    lm = jnp.logaddexp(lt_s + jnp.log(beta), lp_s + jnp.log1p(-beta))
    if mask is not None:
        keep_t, keep_p = keep_t & mask, keep_p & mask
    elem = _jsd_term(beta, lt, lm, keep_t) + _jsd_term(1.0 - beta, lp, lm, keep_p)
    return jnp.sum(elem, axis=-1)


def _jsd(lp, lt, mask, beta):
    if isinstance(beta, float):  # concrete: one branch
        if beta == 0.0:
            return _kl(lp, lt, mask, True)
        if beta == 1.0:
            return _kl(lt, lp, mask, True)
        return _jsd_mixed(lp, lt, mask, beta)
    # traced: every branch on inputs that keep the unselected ones finite
    lo, hi = beta == 0.0, beta == 1.0
    mid = jnp.where(lo | hi, jnp.asarray(0.5, lp.dtype), beta)
    forward = _kl(jnp.where(lo, lp, lt), lt, mask, True)  # KL(t || p)
    reverse = _kl(jnp.where(hi, lt, lp), lp, mask, True)  # KL(p || t)
    return jnp.where(lo, forward, jnp.where(hi, reverse, _jsd_mixed(lp, lt, mask, mid)))


def jensen_shannon_divergence(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    *,
    beta: float | ArrayLike = 0.5,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""Generalised Jensen-Shannon divergence between predictions and targets.

    With :math:`p` the predictions (the student), :math:`t` the targets (the
    teacher) and the mixture :math:`m = \beta t + (1 - \beta) p`:

    .. math::
        \mathrm{JSD}_\beta(t \,\|\, p) = \beta\, \mathrm{KL}(t \,\|\, m)
        + (1 - \beta)\, \mathrm{KL}(p \,\|\, m)

    ``beta`` weights the targets, exactly as Liger-Kernel's ``LigerJSD``
    (``log_q`` = ``log_predictions``, ``log_p`` = ``log_targets``) and TRL's
    ``GKDTrainer.generalized_jsd_loss`` (student, teacher). ``beta=0.5`` is the
    symmetric Jensen-Shannon divergence. As in TRL and Liger, the endpoints
    are the KL directions rather than the formula's limit 0:
    ``beta=0`` gives the forward :math:`\mathrm{KL}(t \,\|\, p)` and
    ``beta=1`` the reverse :math:`\mathrm{KL}(p \,\|\, t)`.

    Args:
      log_predictions: :math:`\log p`, e.g. ``jax.nn.log_softmax(logits)``.
        ``-inf`` entries are allowed.
      log_targets: :math:`\log t`, the shape of ``log_predictions``.
        Differentiable; ``-inf`` entries are allowed.
      beta: :math:`\beta \in [0, 1]`. May be traced (then the endpoints are
        selected by value).
      axis: the class axis (an int, a tuple of ints or ``None``) summed over.
      where: boolean mask broadcastable to ``log_predictions`` (or shaped like
        the batch); ``False`` elements are left out of the sum.
      reduction: ``"none"`` (one value per example), ``"sum"``, ``"mean"``
        (over examples; rows with nothing allowed do not count) or
        ``"batchmean"`` (the sum divided by ``log_predictions.shape[0]``,
        TRL's default without labels).

    Returns:
      Per-example divergence (``log_predictions.shape`` minus ``axis``) or its
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> lp = jnp.log(jnp.array([[0.25, 0.75]], dtype=jnp.float32))
      >>> lt = jnp.log(jnp.array([[0.5, 0.5]], dtype=jnp.float32))
      >>> jaxloss.jensen_shannon_divergence(lp, lt, beta=0.5)
      Array([0.03382204], dtype=float32)

    Note:
      :math:`\log m` is a ``logaddexp`` of the two log-probabilities, so no
      probability is ever formed from a tiny log-probability. For
      :math:`0 < \beta < 1` the divergence is at most
      :math:`-\beta \log\beta - (1-\beta)\log(1-\beta)` and finite, with
      finite derivatives, also where either side is ``-inf`` or masked.
      At ``beta=0`` or ``1`` a class that one side gives positive probability
      and the other ``-inf`` makes the divergence ``inf``, the true value.

    References:
      Lin, *Divergence measures based on the Shannon entropy*, IEEE Trans.
      Inf. Theory 1991; Agarwal et al., *On-Policy Distillation of Language
      Models: Learning from Self-Generated Mistakes* (GKD), ICLR 2024, eq. 1;
      Liger-Kernel ``LigerJSD``; TRL ``GKDTrainer.generalized_jsd_loss``.
    """
    lp, lt, mask, red = _kl_prelude(
        log_predictions, log_targets, axis, where, "log_targets", reduction, True
    )
    lp, lt = _upcast(lp, lt)
    b = cm.hyperparameter(beta, "beta", low=0.0, dtype=lp.dtype)
    if isinstance(b, float) and b > 1.0:
        raise ValueError(f"beta must be <= 1.0; got {b}.")
    loss = _jsd(lp, lt, mask, b)
    return red(loss, _row_share(mask, loss), batch_size=jnp.shape(log_predictions)[0])
