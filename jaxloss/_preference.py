"""Preference-optimisation losses on sequence log-probabilities: DPO (and its
conservative, hinge, IPO and robust variants), SimPO and ORPO's odds-ratio term.

Every loss here is per example: the inputs are one log-probability per
completion (summed, or averaged over tokens where the method says so), all of
one shape, and the loss has that shape before ``reduction``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")
_LN2 = math.log(2.0)


def _logps(arrays: dict[str, ArrayLike]) -> list[Array]:
    """The named log-probability arrays, validated, of one shape, in one compute dtype."""
    items = [(name, cm.as_float_array(a, name)) for name, a in arrays.items()]
    first_name, first = items[0]
    for name, a in items[1:]:
        cm.check_same_shape(first, a, first_name, name)
    dtype = cm.compute_dtype(*(a for _, a in items))
    return [a.astype(dtype) for _, a in items]


def _check_high(value, name: str, high: float, *, open_: bool = False) -> None:
    if isinstance(value, float) and (value > high or (open_ and value == high)):
        raise ValueError(f"{name} must be {'<' if open_ else '<='} {high}; got {value}.")


def dpo_loss(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    *,
    beta: float | ArrayLike = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float | ArrayLike = 0.0,
    reduction: str = "mean",
) -> Array:
    r"""Direct Preference Optimization loss and its hinge, IPO and robust variants.

    With the implicit reward margin
    :math:`h = (\log\pi_c - \log\pi_r) - (\log\pi^{\mathrm{ref}}_c - \log\pi^{\mathrm{ref}}_r)`
    and :math:`\varepsilon` = ``label_smoothing``:

    .. math::
        \ell^{\mathrm{sigmoid}} &= -(1 - \varepsilon) \log \sigma(\beta h)
            - \varepsilon \log \sigma(-\beta h) \\
        \ell^{\mathrm{hinge}} &= \max(0,\, 1 - \beta h) \\
        \ell^{\mathrm{ipo}} &= \left(h - \tfrac{1}{2\beta}\right)^2 \\
        \ell^{\mathrm{robust}} &= \frac{-(1 - \varepsilon) \log \sigma(\beta h)
            + \varepsilon \log \sigma(-\beta h)}{1 - 2\varepsilon}

    The same numbers as TRL's ``DPOTrainer.dpo_loss`` for these four
    ``loss_type`` values.

    Args:
      policy_chosen_logps: :math:`\log\pi_\theta(y_c \mid x)`, one sequence
        log-probability per example (any shape).
      policy_rejected_logps: :math:`\log\pi_\theta(y_r \mid x)`, same shape.
      reference_chosen_logps: :math:`\log\pi_{\mathrm{ref}}(y_c \mid x)`, same
        shape (differentiable like the others; pass it through
        ``jax.lax.stop_gradient`` for a frozen reference).
      reference_rejected_logps: :math:`\log\pi_{\mathrm{ref}}(y_r \mid x)`,
        same shape.
      beta: :math:`\beta > 0`, the inverse temperature (for ``"ipo"`` the
        regularisation :math:`\tau` of the IPO paper). May be traced.
      loss_type: ``"sigmoid"`` (DPO; conservative DPO with ``label_smoothing``),
        ``"hinge"`` (SLiC-style hinge), ``"ipo"`` or ``"robust"`` (robust DPO).
      label_smoothing: :math:`\varepsilon`, the assumed probability that a
        preference label is flipped: in :math:`[0, 1]` for ``"sigmoid"``, in
        :math:`[0, 1/2)` for ``"robust"``; must be 0 for ``"hinge"`` and
        ``"ipo"``. May be traced.
      reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
      Per-example losses (the inputs' shape) or their reduction; float32 for
      bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> pc = jnp.array([-10.0, -12.0], dtype=jnp.float32)
      >>> pr = jnp.array([-11.0, -11.0], dtype=jnp.float32)
      >>> rc = jnp.array([-10.5, -12.0], dtype=jnp.float32)
      >>> rr = jnp.array([-10.5, -11.5], dtype=jnp.float32)
      >>> jaxloss.dpo_loss(pc, pr, rc, rr, beta=1.0, reduction="none")
      Array([0.3132617, 0.974077 ], dtype=float32)

    Note:
      Computed with ``log_sigmoid`` (softplus), so reward margins of any size
      give finite losses and gradients. The robust loss is unbounded below
      (its second term rewards a large margin); it is an unbiased estimate of
      the clean-label DPO loss, not a bound. Unlike TRL, a nonzero
      ``label_smoothing`` with ``"hinge"`` or ``"ipo"`` is an error rather
      than silently ignored.

    References:
      Rafailov et al., *Direct Preference Optimization: Your Language Model is
      Secretly a Reward Model*, NeurIPS 2023 (eq. 7); Mitchell, *A note on DPO
      with noisy preferences and relationship to IPO* (2023, conservative
      DPO); Azar et al., *A General Theoretical Paradigm to Understand
      Learning from Human Preferences*, AISTATS 2024 (IPO, eq. 17); Zhao et
      al., *SLiC-HF* (2023, hinge); Chowdhury et al., *Provably Robust DPO:
      Aligning Language Models with Noisy Feedback*, ICML 2024 (eq. 4);
      TRL ``DPOTrainer.dpo_loss``.
    """
    if not isinstance(loss_type, str) or loss_type not in DPO_LOSS_TYPES:
        raise ValueError(
            f"loss_type must be one of {', '.join(map(repr, DPO_LOSS_TYPES))}; got {loss_type!r}."
        )
    red = cm.Reduction.of(reduction)
    pc, pr, rc, rr = _logps(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "reference_chosen_logps": reference_chosen_logps,
            "reference_rejected_logps": reference_rejected_logps,
        }
    )
    b = cm.hyperparameter(beta, "beta", low=0.0, low_open=True, dtype=pc.dtype)
    eps = cm.hyperparameter(label_smoothing, "label_smoothing", low=0.0, dtype=pc.dtype)
    _check_high(eps, "label_smoothing", 0.5 if loss_type == "robust" else 1.0,
                open_=loss_type == "robust")  # fmt: skip
    if loss_type in ("hinge", "ipo") and not (isinstance(eps, float) and eps == 0.0):
        raise ValueError(
            f"label_smoothing applies to loss_type 'sigmoid' and 'robust' only; got "
            f"label_smoothing={label_smoothing!r} with loss_type={loss_type!r}."
        )
    h = (pc - pr) - (rc - rr)
    if loss_type == "hinge":
        loss = jax.nn.relu(1.0 - b * h)
    elif loss_type == "ipo":
        loss = jnp.square(h - 1.0 / (2.0 * b))
    else:
        pos, neg = -jax.nn.log_sigmoid(b * h), -jax.nn.log_sigmoid(-b * h)
        if loss_type == "sigmoid":
            loss = (1.0 - eps) * pos + eps * neg
        else:
            loss = ((1.0 - eps) * pos - eps * neg) / (1.0 - 2.0 * eps)
    return red(loss)


def simpo_loss(
    chosen_logps: ArrayLike,
    rejected_logps: ArrayLike,
    *,
    beta: float | ArrayLike = 2.0,
    gamma: float | ArrayLike = 0.5,
    reduction: str = "mean",
) -> Array:
    r"""SimPO: reference-free preference loss on length-normalised log-probabilities.

    .. math::
        \ell = -\log \sigma\!\left(\beta\,(\bar c - \bar r) - \gamma\right),
        \qquad \bar c = \tfrac{1}{|y_c|} \log \pi_\theta(y_c \mid x),\quad
        \bar r = \tfrac{1}{|y_r|} \log \pi_\theta(y_r \mid x)

    ``gamma`` is the target reward margin :math:`\gamma` itself, as in the
    paper's eq. 6 and TRL's ``CPOTrainer`` (``loss_type="simpo"``, whose
    ``simpo_gamma`` is this ``gamma``). The authors' code and TRL's older
    ``SimPOConfig`` take ``gamma_beta_ratio`` instead: pass
    ``gamma = beta * gamma_beta_ratio``.

    Args:
      chosen_logps: :math:`\bar c`, the chosen completion's log-probability
        averaged over its tokens, one per example (any shape).
      rejected_logps: :math:`\bar r`, the same for the rejected completion,
        same shape.
      beta: :math:`\beta > 0`, the reward scale. May be traced.
      gamma: :math:`\gamma`, the target margin (in reward units). May be
        traced.
      reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
      Per-example losses or their reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> c = jnp.array([-0.5, -1.0], dtype=jnp.float32)
      >>> r = jnp.array([-1.0, -0.75], dtype=jnp.float32)
      >>> jaxloss.simpo_loss(c, r, reduction="none")
      Array([0.474077 , 1.3132617], dtype=float32)

    Note:
      Computed with ``log_sigmoid``: finite for any finite margin, and equal to
      :math:`-\beta(\bar c - \bar r) + \gamma` to rounding when the margin is
      very negative. Label smoothing (TRL's CPO option) is not offered.

    References:
      Meng, Xia and Chen, *SimPO: Simple Preference Optimization with a
      Reference-Free Reward*, NeurIPS 2024 (eq. 6); TRL ``CPOTrainer``
      (``loss_type="simpo"``).
    """
    red = cm.Reduction.of(reduction)
    c, r = _logps({"chosen_logps": chosen_logps, "rejected_logps": rejected_logps})
    b = cm.hyperparameter(beta, "beta", low=0.0, low_open=True, dtype=c.dtype)
    g = cm.hyperparameter(gamma, "gamma", dtype=c.dtype)
    return red(-jax.nn.log_sigmoid(b * (c - r) - g))


def _log1mexp(x: Array) -> Array:
    """``log(1 - e^x)`` for ``x <= 0``: ``log(-expm1(x))`` near 0, ``log1p(-e^x)``
    below ``-log 2`` (Maechler 2012); each branch sees only its own inputs."""
    near = x > -_LN2
    a = jnp.log(-jnp.expm1(jnp.where(near, x, -1.0)))
    b = jnp.log1p(-jnp.exp(jnp.where(near, -1.0, x)))
    return jnp.where(near, a, b)


def _odds_ratio_slopes(c: Array, r: Array) -> tuple[Array, Array]:
    # With D = e^c (1 - e^r) + e^r (1 - e^c):  dl/dc = -e^r / D  and
    # dl/dr = e^r (1 - e^c) / ((1 - e^r) D). In log space these stay finite at
    # c = 0 (probability 1), where autodiff of the primal meets 0 * inf.
    l1c, l1r = _log1mexp(c), _log1mexp(r)
    log_d = jnp.logaddexp(c + l1r, r + l1c)
    return -jnp.exp(r - log_d), jnp.exp(r + l1c - l1r - log_d)


# -log sigmoid(log_odds(c) - log_odds(r)),  log_odds(x) = x - log(1 - e^x)
_odds_ratio_nll = cm.linear_rule(
    lambda c, r: (jax.nn.softplus((r - _log1mexp(r)) - (c - _log1mexp(c))), None),
    {
        0: lambda _, args, dc: _odds_ratio_slopes(*args)[0] * dc,
        1: lambda _, args, dr: _odds_ratio_slopes(*args)[1] * dr,
    },
)


def orpo_odds_ratio_loss(
    chosen_logps: ArrayLike,
    rejected_logps: ArrayLike,
    *,
    beta: float | ArrayLike = 0.1,
    reduction: str = "mean",
) -> Array:
    r"""ORPO's odds-ratio term: :math:`-\beta \log\sigma` of the log odds ratio.

    .. math::
        \ell = -\beta \log \sigma\!\left(\log \frac{\mathrm{odds}(\bar c)}
        {\mathrm{odds}(\bar r)}\right), \qquad
        \log \mathrm{odds}(x) = x - \log\left(1 - e^{x}\right)

    on average (per-token) log-probabilities; the full ORPO objective adds the
    chosen completion's negative log-likelihood (the SFT term), which is left
    to the caller. The same numbers as ``beta *`` the ``odds_ratio_loss`` term
    of TRL's ``ORPOTrainer``.

    Args:
      chosen_logps: :math:`\bar c \le 0`, the chosen completion's
        log-probability averaged over its tokens (any shape).
      rejected_logps: :math:`\bar r \le 0`, the same for the rejected
        completion, same shape.
      beta: :math:`\beta > 0` (the paper's :math:`\lambda`), the weight of
        the odds-ratio term. May be traced.
      reduction: as in :func:`simpo_loss`.

    Returns:
      As :func:`simpo_loss`.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> c = jnp.array([-0.5, -1.0], dtype=jnp.float32)
      >>> r = jnp.array([-1.0, -0.5], dtype=jnp.float32)
      >>> jaxloss.orpo_odds_ratio_loss(c, r, beta=1.0, reduction="none")
      Array([0.3202998, 1.2943769], dtype=float32)

    Note:
      :math:`\log(1 - e^x)` is computed in the two-branch form (``expm1`` near
      0, ``log1p`` below :math:`-\log 2`), so log-probabilities near 0 and far
      below it stay accurate. At :math:`\bar c = 0` (probability 1) the loss
      is 0 and its derivatives are finite (their limits); at
      :math:`\bar r = 0` the loss is ``inf``, the true value. Positive
      log-probabilities give NaN.

    References:
      Hong, Lee and Thorne, *ORPO: Monolithic Preference Optimization without
      Reference Model*, EMNLP 2024 (eqs. 4, 6 and 7); TRL
      ``ORPOTrainer.odds_ratio_loss``.
    """
    red = cm.Reduction.of(reduction)
    c, r = _logps({"chosen_logps": chosen_logps, "rejected_logps": rejected_logps})
    b = cm.hyperparameter(beta, "beta", low=0.0, low_open=True, dtype=c.dtype)
    return red(b * _odds_ratio_nll(c, r))
