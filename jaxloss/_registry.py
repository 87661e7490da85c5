"""The loss registry: one row per public loss, read by every consumer.

Each :class:`LossSpec` row says, for one function of the flat ``jaxloss``
namespace, which private module holds it, its signature as DESIGN.md fixes it,
a plain float64 reference formula (written from the PyTorch or optax
definition it cites), the optax and PyTorch/torchvision functions it matches,
input builders for the gradient checks and for the benchmarks, and whether it
is a per-example loss over a batch axis (and so can be sharded over a
data-parallel mesh axis).

Consumers: ``tests/test_registry.py`` (gradient checks over every row and
regime, the signature contract, reference agreement), ``tests/_multidevice.py``
(data parallelism for every batch loss), ``benchmarks/catalogue.py`` (each loss
against its optax peer or the reference formula) and ``jaxloss.demo`` (the list
of losses a demo run must cover). A new public loss gets a row here; the tests
fail until it has one.

Input regimes of :meth:`LossSpec.inputs`:

* ``"small"``: moderate values (logits of a few units), the loss's options on;
* ``"large"``: large magnitudes (logits around +-30, near-saturated
  probabilities);
* ``"masked"``: ``where`` masks, ``ignore_index`` rows, ``-inf`` logits or zero
  weights, where the loss has them (``None`` where it has none).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

REGIMES = ("small", "large", "masked")


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One call of a loss: ``fn(*args, **kwargs)``.

    ``argnums`` names the differentiable inputs: an int for a positional
    argument, a string for an array-valued keyword (``"bias"``). ``reference``
    says whether the row's reference formula models this call (masked and
    ignored entries it does not). ``order`` is the derivative order worth
    checking here. ``specs``, for the vocabulary-parallel losses, are the
    ``shard_map`` partition specs of the positional arguments followed by the
    array-valued keywords, in order.
    """

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    argnums: tuple[int | str, ...] = (0,)
    reference: bool = True
    order: int = 2
    specs: tuple[P, ...] | None = None


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def _flatten(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any], tuple[str, ...]]:
    """Positional arguments followed by the array-valued keywords; the other keywords."""
    arrays = tuple(k for k, v in inputs.kwargs.items() if _is_array(v))
    static = {k: v for k, v in inputs.kwargs.items() if k not in arrays}
    return inputs.args + tuple(inputs.kwargs[k] for k in arrays), static, arrays


def _caller(fn: Callable, n: int, static: Mapping[str, Any], arrays: Sequence[str]) -> Callable:
    def call(*flat):
        return fn(*flat[:n], **static, **dict(zip(arrays, flat[n:], strict=True)))

    return call


def _select(fn: Callable, index: int) -> Callable:
    def call(*args):
        return fn(*args)[index]

    return call


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """One public loss.

    Attributes:
      name: the public name, ``jaxloss.<name>``.
      family: the private module that defines it (``"_classification"``).
      signature: its parameters as DESIGN.md fixes them, in Python syntax
        without annotations (see :attr:`parameters`); parameters DESIGN.md
        lists but no version implements yet are left out.
      reference: plain formula in ``jax.numpy`` with the loss's signature (the
        options it models; ``reduction`` included), autodiff of which gives the
        true derivatives; the docstring names the definition it follows.
      build: ``build(regime, rng) -> Inputs | None``: small float32 inputs
        for a regime of :data:`REGIMES`, ``None`` where the regime does not
        apply.
      bench: ``bench(rows, cols, rng, dtype) -> tuple of numpy arrays``: the
        loss's positional inputs for a ``[rows, cols]`` problem (``cols``
        classes for the class-axis losses), differentiated w.r.t. the first;
        ``None`` where the loss needs a device mesh.
      optax: the ``optax.losses`` function with the same numbers, or ``None``.
      torch: the PyTorch/torchvision function with the same numbers, or ``None``.
      batch: a per-example loss over a leading batch axis, so sharding that
        axis over a data-parallel mesh gives the same values and gradients.
      batch_options: keyword options for the data-parallel check.
      signature_issue: why today's signature differs from :attr:`signature`,
        or ``None`` when it does not.
      output: for a function that returns a tuple, the index of the loss in it:
        :meth:`bind` calls return that output only; ``None`` for an array.
    """

    name: str
    family: str
    signature: str
    reference: Callable[..., jax.Array]
    build: Callable[[str, np.random.Generator], Inputs | None]
    bench: Callable[..., tuple[np.ndarray, ...]] | None
    optax: str | None = None
    torch: str | None = None
    batch: bool = True
    batch_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    signature_issue: str | None = None
    output: int | None = None

    @property
    def fn(self) -> Callable[..., jax.Array]:
        """The public function, looked up in its family module."""
        return getattr(importlib.import_module(f"jaxloss.{self.family}"), self.name)

    @property
    def parameters(self) -> inspect.Signature:
        """:attr:`signature` as an :class:`inspect.Signature` (names, kinds, defaults)."""
        return parse_signature(self.signature)

    @property
    def positional(self) -> tuple[str, ...]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return tuple(p.name for p in self.parameters.parameters.values() if p.kind is kind)

    @property
    def keywords(self) -> tuple[str, ...]:
        kind = inspect.Parameter.KEYWORD_ONLY
        return tuple(p.name for p in self.parameters.parameters.values() if p.kind is kind)

    def inputs(self, regime: str) -> Inputs | None:
        """The builder's inputs for ``regime``, from a seed fixed by name and regime."""
        if regime not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
        return self.build(
            regime, np.random.default_rng(zlib.crc32(f"{self.name}/{regime}".encode()))
        )

    def bind(
        self, inputs: Inputs
    ) -> tuple[Callable[..., jax.Array], tuple[Any, ...], tuple[int, ...]]:
        """``(f, flat, argnums)``: ``f(*flat)`` calls the loss on ``inputs``.

        Array-valued keywords become trailing positional arguments (so a
        gradient check can perturb or convert them) and ``argnums`` index
        ``flat``. Vocabulary-parallel calls run inside ``shard_map`` on a
        one-device mesh whose axis is the call's ``axis_name``.
        """
        flat, static, arrays = _flatten(inputs)
        call = _caller(self.fn, len(inputs.args), static, arrays)
        if self.output is not None:
            call = _select(call, self.output)
        if inputs.specs is not None:
            mesh = jax.make_mesh((1,), (static["axis_name"],), (jax.sharding.AxisType.Auto,))
            call = jax.shard_map(call, mesh=mesh, in_specs=inputs.specs, out_specs=P())
        index = {name: len(inputs.args) + i for i, name in enumerate(arrays)}
        return call, flat, tuple(index[a] if isinstance(a, str) else a for a in inputs.argnums)

    def bind_reference(self, inputs: Inputs) -> Callable[..., jax.Array]:
        """The reference formula called like :meth:`bind`'s ``f`` (no mesh, no ``axis_name``)."""
        _, static, arrays = _flatten(inputs)
        static = {k: v for k, v in static.items() if k != "axis_name"}
        return _caller(self.reference, len(inputs.args), static, arrays)


def _default(node: ast.expr) -> Any:
    """A literal, or a dotted name such as ``jax.numpy.mean`` (imported and looked up)."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        if not isinstance(node, ast.Attribute):
            raise
        return resolve(ast.unparse(node))


def parse_signature(text: str) -> inspect.Signature:
    """``"(x, y=None, *, reduction='none')"`` as an :class:`inspect.Signature`.

    Defaults are literals or dotted names of importable objects
    (``reduce_fn=jax.numpy.mean``).
    """
    node = ast.parse(f"def f{text}: pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    a = node.args
    param = inspect.Parameter
    pos_defaults = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
    pairs = [(x, d, param.POSITIONAL_OR_KEYWORD) for x, d in zip(a.args, pos_defaults, strict=True)]
    pairs += [(x, d, param.KEYWORD_ONLY) for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    return inspect.Signature(
        [
            param(x.arg, kind, default=param.empty if d is None else _default(d))
            for x, d, kind in pairs
        ]
    )


# optax functions that trace only under JAX's default promotion rules (they mix
# bool/int/float32 and broadcast ranks inside optax, which the test suite's strict
# settings reject): resolve() returns them wrapped to run under the default rules,
# with optax's signature.
DEFAULT_PROMOTION = frozenset(
    "optax.losses." + name
    for name in ("ntxent", "multiclass_generalized_dice_loss", "multiclass_sparsemax_loss",
                 "ctc_loss")
)  # fmt: skip


def _default_promotion(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # inspect.signature follows __wrapped__ to fn's signature
    def call(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            return fn(*args, **kwargs)

    return call


def resolve(path: str) -> Callable[..., Any]:
    """The object a dotted path such as ``"optax.losses.hinge_loss"`` names (imports it);
    a function of :data:`DEFAULT_PROMOTION` runs under JAX's default promotion rules."""
    top, *rest = path.split(".")
    obj = importlib.import_module(top)
    for i, part in enumerate(rest):
        if not hasattr(obj, part):  # a submodule that its package does not import
            importlib.import_module(".".join([top, *rest[: i + 1]]))
        obj = getattr(obj, part)
    return _default_promotion(obj) if path in DEFAULT_PROMOTION else obj


# Public functions of ``jaxloss`` that are not losses (no row).
NOT_LOSSES = {
    "smooth_labels": "a label transform (optax.smooth_labels)",
    "make_fenchel_young_loss": "a factory that returns a loss",
    "convex_kl_divergence": "optax's deprecated alias of generalized_kl_divergence (warns)",
}


def public_names() -> list[str]:
    """Every public loss function ``jaxloss`` exports today (all but :data:`NOT_LOSSES`)."""
    import jaxloss

    names = getattr(jaxloss, "__all__", None) or dir(jaxloss)
    return sorted(
        n
        for n in names
        if not n.startswith("_")
        and inspect.isfunction(getattr(jaxloss, n, None))
        and getattr(jaxloss, n).__module__.startswith("jaxloss.")
        and n not in NOT_LOSSES
    )


# --------------------------------------------------------------------------
# Reference formulas (float64 under the tests; plain autodiff)
# --------------------------------------------------------------------------


def _reduce(loss: jax.Array, reduction: str, divisor: Any = None) -> jax.Array:
    """PyTorch's reductions; ``"mean"`` divides by ``divisor`` (default: the count)."""
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (loss.size if divisor is None else divisor)
    if reduction == "batchmean":
        return total / loss.shape[0]
    raise ValueError(f"reduction {reduction!r}")


def _lead(a: Any, like: jax.Array) -> jax.Array:
    """``a`` with leading unit axes up to ``like``'s rank (PyTorch's broadcasting)."""
    a = jnp.asarray(a, like.dtype)
    return a.reshape((1,) * (like.ndim - a.ndim) + a.shape)


def _pick(a: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take_along_axis(a, y[..., None], axis=-1)[..., 0]


def _softplus(x: jax.Array) -> jax.Array:
    return jnp.logaddexp(x, 0.0)


def _err(predictions: jax.Array, targets: jax.Array | None) -> jax.Array:
    return predictions if targets is None else predictions - targets


def _ce_int_ref(
    logits,
    labels,
    *,
    where=None,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    logit_softcap=None,
    reduction="none",
):
    """``torch.nn.functional.cross_entropy`` (class indices: ``weight``,
    ``ignore_index``, ``label_smoothing``, weighted mean) on Gemma-2 soft-capped
    logits ``cap * tanh(x / cap)``, plus the PaLM z-loss ``z * w_y * lse**2``."""
    cap = logit_softcap
    s = logits if cap is None else cap * jnp.tanh(logits / cap)
    # where=None: every class counts (PyTorch); a mask also drops -inf logits
    valid = None if where is None else jnp.broadcast_to(where, s.shape) & (s != -jnp.inf)
    lse = jax.nn.logsumexp(s, axis=-1, where=valid)
    logp = s - lse[..., None]
    count = s.shape[-1]
    if valid is not None:
        logp = jnp.where(valid, logp, 0.0)
        count = jnp.sum(valid, axis=-1).astype(s.dtype)
    w = jnp.ones(s.shape[-1:], s.dtype) if weight is None else jnp.asarray(weight, s.dtype)
    active = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    ys = jnp.where(active, labels, 0)
    w_y = jnp.where(active, w[ys], 0.0)
    # torch: the smoothing term is sum_k w_k (-log p_k) / K, not scaled by w_y
    smooth = -jnp.sum(_lead(w, s) * logp, axis=-1) / count
    eps = label_smoothing
    loss = (1 - eps) * w_y * -_pick(logp, ys) + eps * smooth + z_loss * w_y * lse**2
    return _reduce(jnp.where(active, loss, 0.0), reduction, jnp.sum(w_y))


def _ce_prob_ref(logits, labels, *, label_smoothing=0.0, z_loss=0.0, reduction="none"):
    """``optax.losses.softmax_cross_entropy`` ``sum(-t * log_softmax(x))`` with
    PyTorch's label smoothing of probability targets ``(1 - eps) t + eps / K``
    and the PaLM z-loss ``z * lse**2``."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    t = (1 - label_smoothing) * labels + label_smoothing / logits.shape[-1]
    loss = jnp.sum(t * (lse[..., None] - logits), axis=-1) + z_loss * lse**2
    return _reduce(loss, reduction)


def _safe_ce_ref(logits, labels, *, reduction="none"):
    """``optax.losses.safe_softmax_cross_entropy``: ``-sum(t * log_softmax(x))`` with
    ``0 log 0 = 0`` (a zero target on a ``-inf`` logit adds nothing)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return _reduce(-jnp.sum(jnp.where(labels == 0, 0.0, labels * logp), axis=-1), reduction)


def _poly_ref(logits, labels, *, epsilon=2.0, reduction="none"):
    """``optax.losses.poly_loss_cross_entropy`` (Leng et al. 2022, Poly-1):
    ``CE + epsilon * sum(t * (1 - softmax(x)))``."""
    p = jax.nn.softmax(logits, axis=-1)
    poly = epsilon * jnp.sum(labels * (1 - p), axis=-1)
    return _reduce(_ce_prob_ref(logits, labels) + poly, reduction)


def _nll_ref(log_probs, labels, *, weight=None, reduction="none"):
    """``torch.nn.functional.nll_loss``: ``-w[y] * log_probs[y]``."""
    w = jnp.ones(log_probs.shape[-1:], log_probs.dtype) if weight is None else weight
    return _reduce(-w[labels] * _pick(log_probs, labels), reduction, jnp.sum(w[labels]))


def _softmax_focal_ref(logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    """Focal loss (Lin et al. 2017) over a softmax, the multi-class form of
    ``torchvision.ops.sigmoid_focal_loss``: ``-alpha_y (1 - p_y)**gamma log p_y``."""
    logp = _pick(jax.nn.log_softmax(logits, axis=-1), labels)
    a = 1.0 if alpha is None else (alpha[labels] if jnp.ndim(alpha) else alpha)
    return _reduce(-a * (1 - jnp.exp(logp)) ** gamma * logp, reduction)


def _multi_margin_ref(scores, labels, *, margin=1.0, p=1, weight=None, reduction="none"):
    """``torch.nn.functional.multi_margin_loss``:
    ``w[y] * sum_{j != y} max(0, margin - s_y + s_j)**p / C``."""
    c = scores.shape[-1]
    viol = jnp.maximum(0.0, margin - _pick(scores, labels)[..., None] + scores) ** p
    viol = jnp.where(jax.nn.one_hot(labels, c, dtype=bool), 0.0, viol)
    w = 1.0 if weight is None else weight[labels]
    return _reduce(w * jnp.sum(viol, axis=-1) / c, reduction)


def _crammer_singer_ref(scores, labels, *, reduction="none"):
    """``optax.losses.multiclass_hinge_loss`` (Crammer and Singer 2001):
    ``max_j (s_j + [j != y]) - s_y``."""
    one_hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    return _reduce(jnp.max(scores + 1.0 - one_hot, axis=-1) - _pick(scores, labels), reduction)


def _multiclass_perceptron_ref(scores, labels, *, reduction="none"):
    """``optax.losses.multiclass_perceptron_loss``: ``max_j s_j - s_y``."""
    return _reduce(jnp.max(scores, axis=-1) - _pick(scores, labels), reduction)


def _kl_ref(log_predictions, targets, *, log_target=False, reduction="none"):
    """``optax.losses.kl_divergence`` / ``torch.nn.functional.kl_div``:
    ``sum(t * (log t - log_predictions))`` over the last axis, ``0 log 0 = 0``."""
    if log_target:
        loss = jnp.exp(targets) * (targets - log_predictions)
    else:
        loss = jax.scipy.special.xlogy(targets, targets) - targets * log_predictions
    return _reduce(jnp.sum(loss, axis=-1), reduction)


def _sigmoid_bce_ref(
    logits, labels, *, weight=None, pos_weight=None, label_smoothing=0.0, reduction="none"
):
    """``torch.nn.functional.binary_cross_entropy_with_logits`` (``weight``,
    ``pos_weight``) on optax-smoothed labels ``(1 - eps) y + eps / 2``."""
    y = (1 - label_smoothing) * labels + label_smoothing / 2
    pw = 1.0 if pos_weight is None else _lead(pos_weight, logits)
    w = 1.0 if weight is None else _lead(weight, logits)
    loss = w * (pw * y * _softplus(-logits) + (1 - y) * _softplus(logits))
    return _reduce(loss, reduction)


def _bce_ref(probs, labels, *, weight=None, reduction="none"):
    """``torch.nn.functional.binary_cross_entropy``: logs clamped at -100."""
    log_p = jnp.maximum(jnp.log(probs), -100.0)
    log_q = jnp.maximum(jnp.log1p(-probs), -100.0)
    w = 1.0 if weight is None else _lead(weight, probs)
    return _reduce(-w * (labels * log_p + (1 - labels) * log_q), reduction)


def _sigmoid_focal_ref(logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    """``torchvision.ops.sigmoid_focal_loss`` (= ``optax.losses.sigmoid_focal_loss``)."""
    p = jax.nn.sigmoid(logits)
    ce = labels * _softplus(-logits) + (1 - labels) * _softplus(logits)
    p_t = p * labels + (1 - p) * (1 - labels)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * labels + (1 - alpha) * (1 - labels)) * loss
    return _reduce(loss, reduction)


def _hinge_ref(predictor_outputs, targets, *, margin=1.0, reduction="none", power=1):
    """``optax.losses.hinge_loss`` ``max(0, 1 - y s)`` with a margin; ``power=2``
    is Keras's ``squared_hinge``."""
    return _reduce(jnp.maximum(0.0, margin - targets * predictor_outputs) ** power, reduction)


def _perceptron_ref(predictor_outputs, targets, *, reduction="none"):
    """``optax.losses.perceptron_loss``: ``max(0, -y s)``."""
    return _reduce(jnp.maximum(0.0, -targets * predictor_outputs), reduction)


def _squared_error_ref(predictions, targets=None, *, reduction="none"):
    """``optax.losses.squared_error`` / ``torch.nn.functional.mse_loss``."""
    return _reduce(_err(predictions, targets) ** 2, reduction)


def _l2_ref(predictions, targets=None, *, reduction="none"):
    """``optax.losses.l2_loss``: half the squared error."""
    return _reduce(0.5 * _err(predictions, targets) ** 2, reduction)


def _absolute_error_ref(predictions, targets=None, *, reduction="none"):
    """``torch.nn.functional.l1_loss``."""
    return _reduce(jnp.abs(_err(predictions, targets)), reduction)


def _huber_ref(predictions, targets=None, *, delta=1.0, reduction="none"):
    """``optax.losses.huber_loss`` / ``torch.nn.functional.huber_loss``."""
    r = jnp.abs(_err(predictions, targets))
    return _reduce(jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)), reduction)


def _smooth_l1_ref(predictions, targets=None, *, beta=1.0, reduction="none"):
    """``torch.nn.functional.smooth_l1_loss``."""
    r = jnp.abs(_err(predictions, targets))
    return _reduce(jnp.where(r < beta, 0.5 * r**2 / beta, r - 0.5 * beta), reduction)


def _log_cosh_ref(predictions, targets=None, *, reduction="none"):
    """``optax.losses.log_cosh``: ``logaddexp(e, -e) - log 2``."""
    e = _err(predictions, targets)
    return _reduce(jnp.logaddexp(e, -e) - math.log(2.0), reduction)


def _poisson_nll_ref(input, targets, *, log_input=True, full=False, eps=1e-8, reduction="none"):
    """``torch.nn.functional.poisson_nll_loss`` (Stirling term for ``t > 1`` when ``full``)."""
    if log_input:
        loss = jnp.exp(input) - targets * input
    else:
        loss = input - targets * jnp.log(input + eps)
    if full:
        t = jnp.where(targets > 1, targets, 1.0)  # keeps log(0) out of the unused branch
        stirling = t * jnp.log(t) - t + 0.5 * jnp.log(2 * jnp.pi * t)
        loss = loss + jnp.where(targets > 1, stirling, 0.0)
    return _reduce(loss, reduction)


def _gaussian_nll_ref(input, targets, var, *, full=False, eps=1e-6, reduction="none"):
    """``torch.nn.functional.gaussian_nll_loss``: ``var`` clamped at ``eps`` with an
    identity gradient (PyTorch clamps under ``no_grad``)."""
    v = var + jax.lax.stop_gradient(jnp.maximum(var, eps) - var)
    loss = 0.5 * (jnp.log(v) + (input - targets) ** 2 / v)
    return _reduce(loss + 0.5 * math.log(2 * math.pi) if full else loss, reduction)


def _fused_ref(
    hidden,
    kernel,
    labels,
    *,
    bias=None,
    weight=None,
    sample_weight=None,
    normalizer=None,
    temperature=1.0,
    chunk_size=None,
    reduction="mean",
    **kw,
):
    """:func:`_ce_int_ref` (PyTorch's class ``weight`` included) on the
    materialised logits ``(hidden @ kernel + bias) / temperature``;
    ``chunk_size`` changes only the schedule. ``sample_weight`` multiplies each
    row's loss; the mean is ``sum(w loss) / sum(w w_y counted)``, or
    ``sum(w loss) / normalizer``."""
    del chunk_size
    logits = hidden @ kernel if bias is None else hidden @ kernel + bias[None, :]
    logits = logits / temperature
    kw["weight"] = weight
    if sample_weight is None and normalizer is None:
        return _ce_int_ref(logits, labels, reduction=reduction, **kw)
    rows = _ce_int_ref(logits, labels, reduction="none", **kw)
    sw = jnp.ones_like(rows) if sample_weight is None else sample_weight.astype(rows.dtype)
    if reduction == "none":
        return sw * rows
    total = jnp.sum(sw * rows)
    if normalizer is not None:
        return total / normalizer
    if reduction == "sum":
        return total
    ignore = kw.get("ignore_index")
    counted = jnp.ones(labels.shape, bool) if ignore is None else labels != ignore
    w_y = jnp.ones_like(sw) if weight is None else weight[jnp.where(counted, labels, 0)]
    return total / jnp.sum(jnp.where(counted, sw * w_y, 0.0))


def _vp_fused_ref(hidden, kernel_shard, labels, *, bias_shard=None, **kw):
    """:func:`_fused_ref` on the whole (one-shard) kernel."""
    return _fused_ref(hidden, kernel_shard, labels, bias=bias_shard, **kw)


# --------------------------------------------------------------------------
# Input builders for the gradient checks: float32, a few rows
# --------------------------------------------------------------------------

# A class mask with a fully masked row (row 2) and partly masked rows.
MASK = np.array(
    [
        [True, True, False, True, True],
        [True, False, True, True, False],
        [False, False, False, False, False],
        [True, True, True, True, True],
    ]
)


def _f32(a: Any) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.float32))


def _int(a: Any) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.int32))


def _np_softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_log_softmax(a: np.ndarray) -> np.ndarray:
    z = a - a.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _logits(rng: np.random.Generator, regime: str, shape=(4, 5)) -> np.ndarray:
    if regime == "large":
        return rng.uniform(-30.0, 30.0, shape)
    return rng.normal(0.0, 2.0, shape)


def _class_rows(rng, regime):
    """Logits ``[4, 5]``, integer labels and positive class weights."""
    x = _logits(rng, regime)
    return x, rng.integers(0, 5, size=4), rng.uniform(0.5, 2.0, 5)


def _build_softmax_ce(regime, rng):
    x = _logits(rng, regime)
    args = (_f32(x), _f32(_np_softmax(rng.normal(size=x.shape))))
    if regime == "small":
        return Inputs(args, {"label_smoothing": 0.1, "z_loss": 1e-3}, (0, 1))
    if regime == "large":
        return Inputs(args, {}, (0, 1))
    return Inputs(args, {"where": jnp.asarray(MASK), "reduction": "mean"}, (0, 1), False)


def _build_safe_ce(regime, rng):
    x = _logits(rng, regime)
    t = _np_softmax(rng.normal(size=x.shape))
    if regime != "masked":
        return Inputs((_f32(x), _f32(t)), {}, (0, 1))
    x[~MASK], t[~MASK] = -np.inf, 0.0  # zero targets on -inf logits; row 2 keeps its logits
    x[2], t[2] = rng.normal(size=5), _np_softmax(rng.normal(size=5))
    t /= t.sum(-1, keepdims=True)
    return Inputs((_f32(x), _f32(t)), {"reduction": "mean"}, reference=False)


def _build_poly(regime, rng):
    x = _logits(rng, regime)
    args = (_f32(x), _f32(_np_softmax(rng.normal(size=x.shape))))
    if regime == "small":
        return Inputs(args, {"epsilon": 1.5}, (0, 1))
    if regime == "large":
        return Inputs(args, {}, (0, 1))
    kw = {"epsilon": 1.5, "where": jnp.asarray(MASK), "reduction": "mean"}
    return Inputs(args, kw, (0, 1), reference=False)


def _build_ce_int(regime, rng):
    x, y, w = _class_rows(rng, regime)
    if regime == "small":
        kw = {"label_smoothing": 0.1, "z_loss": 1e-3, "logit_softcap": 5.0}
        return Inputs((_f32(x), _int(y)), kw)
    if regime == "large":
        return Inputs((_f32(x), _int(y)), {"weight": _f32(w), "reduction": "sum"})
    x[3, 2] = -np.inf  # a -inf logit in a row that counts; row 1 ignored, row 2 fully masked
    kw = {"weight": _f32(w), "where": jnp.asarray(MASK), "ignore_index": -100}
    kw |= {"label_smoothing": 0.2, "reduction": "mean"}
    return Inputs((_f32(x), _int([0, -100, 1, 4])), kw, reference=False)


def _build_nll(regime, rng):
    x, y, w = _class_rows(rng, regime)
    lp = _f32(_np_log_softmax(x))
    if regime != "masked":
        return Inputs((lp, _int(y)), {"weight": _f32(w)})
    kw = {"weight": _f32(w), "ignore_index": -1, "reduction": "mean"}
    return Inputs((lp, _int([0, -1, 3, -1])), kw, reference=False)


def _build_softmax_focal(regime, rng):
    x, y, _ = _class_rows(rng, regime)
    alpha = _f32(rng.uniform(0.2, 1.0, 5))
    if regime == "masked":
        kw = {"gamma": 0.5, "ignore_index": 7, "reduction": "mean"}
        return Inputs((_f32(x), _int([0, 7, 1, 4])), kw, reference=False)
    # at large logits (1 - p_y) cancels in float64 too: no reference there
    return Inputs((_f32(x), _int(y)), {"alpha": alpha, "gamma": 2.0}, reference=regime == "small")


def _build_scores_labels(regime, rng):
    """Class scores and integer labels, no options (Crammer-Singer, perceptron)."""
    if regime == "masked":
        return None
    x, y, _ = _class_rows(rng, regime)
    return Inputs((_f32(x), _int(y)))


def _build_multi_margin(regime, rng):
    if regime == "masked":
        return None
    x, y, w = _class_rows(rng, regime)
    return Inputs((_f32(x), _int(y)), {"p": 2 if regime == "small" else 1, "weight": _f32(w)})


def _build_kl(regime, rng):
    lp = _f32(_np_log_softmax(_logits(rng, regime)))
    t = _f32(_np_softmax(rng.normal(size=lp.shape)))
    if regime == "small":
        return Inputs((lp, t), {}, (0, 1))
    if regime == "large":
        lt = _f32(_np_log_softmax(_logits(rng, "large")))
        return Inputs((lp, lt), {"log_target": True}, (0, 1))
    return Inputs((lp, t), {"where": jnp.asarray(MASK), "reduction": "batchmean"}, (0, 1), False)


def _build_sigmoid_bce(regime, rng):
    x = _logits(rng, regime, (3, 4))
    if regime == "small":
        y = rng.uniform(0, 1, x.shape)
        w, pw = _f32(rng.uniform(0.5, 2, x.shape)), _f32(rng.uniform(0.5, 3, (4,)))
        kw = {"weight": w, "pos_weight": pw, "label_smoothing": 0.1}
        return Inputs((_f32(x), _f32(y)), kw, (0, 1))
    y = _f32(rng.integers(0, 2, x.shape))
    if regime == "large":  # hard labels: see the hard-label derivative test
        return Inputs((_f32(x), y))
    w = _f32(rng.integers(0, 2, x.shape))  # zero weights mask entries
    return Inputs((_f32(x), y), {"weight": w, "reduction": "mean"}, reference=False)


def _build_bce(regime, rng):
    # probabilities kept >= 3e-4 from 0 and 1, so that float64 finite differences
    # of log(p) stay accurate; "large" is the near-saturated end.
    x = rng.uniform(-8, 8, (3, 4)) if regime == "large" else rng.normal(0, 1.5, (3, 4))
    args = (_f32(1 / (1 + np.exp(-x))), _f32(rng.integers(0, 2, x.shape)))
    if regime != "masked":
        return Inputs(args, {}, (0, 1))
    kw = {"weight": _f32(rng.integers(0, 2, x.shape)), "reduction": "mean"}
    return Inputs(args, kw, (0, 1), reference=False)


def _build_sigmoid_focal(regime, rng):
    x = _f32(_logits(rng, regime, (3, 4)))
    kw = {"alpha": 0.25, "gamma": 2.0}
    if regime == "small":
        return Inputs((x, _f32(rng.uniform(0, 1, x.shape))), kw, (0, 1))
    if regime == "large":  # (1 - p_t) cancels: no reference
        return Inputs((x, _f32(rng.integers(0, 2, x.shape))), kw, reference=False)
    return None


def _hinge_builder(**kw):
    def build(regime, rng):
        if regime == "masked":
            return None
        s = _logits(rng, regime, (3, 4))
        return Inputs((_f32(s), _f32(rng.choice([-1.0, 1.0], s.shape))), kw)

    return build


def _regression_builder(**kw):
    def build(regime, rng):
        if regime == "masked":
            return None
        scale = 30.0 if regime == "large" else 2.0
        p, t = rng.uniform(-scale, scale, (2, 3, 4))
        return Inputs((_f32(p), _f32(t)), kw, (0, 1))

    return build


def _build_poisson(regime, rng):
    if regime == "masked":
        return None
    t = _f32(rng.poisson(3.0, (3, 4)))
    if regime == "small":  # rates, not log-rates
        return Inputs((_f32(rng.uniform(0.5, 4.0, (3, 4))), t), {"log_input": False})
    return Inputs((_f32(rng.uniform(-30, 30, (3, 4))), t), {"full": True}, (0, 1))


def _build_gaussian(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 2.0
    x, t = rng.uniform(-scale, scale, (2, 3, 4))
    var = rng.uniform(0.5, 2.0, (3, 4))
    return Inputs((_f32(x), _f32(t), _f32(var)), {"full": regime == "large"}, (0, 1, 2))


def _fused_rows(rng, regime):
    """hidden ``[4, 3]``, kernel ``[3, 6]``, bias, labels (logits up to ~+-30 when large)."""
    scale = 3.0 if regime == "large" else 1.0
    h, k = rng.normal(0, scale, (4, 3)), rng.normal(0, scale, (3, 6))
    return _f32(h), _f32(k), _f32(rng.normal(0, 1, (6,))), rng.integers(0, 6, size=4)


def _build_fused(regime, rng):
    h, k, b, y = _fused_rows(rng, regime)
    diff = (0, 1, "bias")
    sw = _f32(rng.uniform(0.5, 2.0, y.shape[0]))  # per-token weights
    if regime == "masked":
        y[1] = -100
        kw = {"bias": b, "ignore_index": -100, "reduction": "none", "chunk_size": 2}
        return Inputs((h, k, _int(y)), kw | {"sample_weight": sw}, diff, reference=False)
    kw = {"bias": b, "chunk_size": 2}
    if regime == "small":
        kw |= {"label_smoothing": 0.1, "z_loss": 1e-3, "sample_weight": sw, "temperature": 0.8}
        kw["weight"] = _f32(rng.uniform(0.5, 2.0, k.shape[1]))  # class weights
    else:  # a micro-batch's share of a larger batch's mean
        kw |= {"normalizer": 3.0 * y.shape[0]}
    # second order: small (the "fused" strategy) and masked ("recompute")
    return Inputs((h, k, _int(y)), kw, diff, order=1 if regime == "large" else 2)


def _build_vocab_parallel(regime, rng):
    x, y, _ = _class_rows(rng, regime)
    if regime == "masked":
        y[0] = -100
        kw = {"axis_name": "v", "where": jnp.asarray(MASK), "ignore_index": -100}
        kw |= {"reduction": "mean"}
        specs = (P(None, "v"), P(), P(None, "v"))
        return Inputs((_f32(x), _int(y)), kw, reference=False, specs=specs)
    kw = {"axis_name": "v", "z_loss": 1e-3}
    return Inputs((_f32(x), _int(y)), kw, specs=(P(None, "v"), P()))


def _build_vocab_parallel_fused(regime, rng):
    h, k, b, y = _fused_rows(rng, regime)
    kw = {"axis_name": "v", "bias_shard": b, "chunk_size": 2}
    if regime == "masked":
        y[2] = -100
        kw["ignore_index"] = -100
    specs = (P(), P(None, "v"), P(), P("v"))
    order = 1 if regime == "large" else 2
    return Inputs((h, k, _int(y)), kw, (0, 1, "bias_shard"), regime != "masked", order, specs)


# --------------------------------------------------------------------------
# Benchmark-size inputs: numpy, (rows, cols, rng, dtype) -> positional arrays
# --------------------------------------------------------------------------


def _normal(rng, rows, cols, dtype, scale=1.0):
    return (scale * rng.standard_normal((rows, cols))).astype(dtype)


def _labels(rng, rows, cols):
    return rng.integers(0, cols, rows).astype(np.int32)


def _bench_class(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), _labels(rng, rows, cols)


def _bench_log_probs(rows, cols, rng, dtype):
    return _np_log_softmax(_normal(rng, rows, cols, dtype, 2.0)), _labels(rng, rows, cols)


def _bench_probs(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), _np_softmax(_normal(rng, rows, cols, dtype))


def _bench_kl(rows, cols, rng, dtype):
    lp = _np_log_softmax(_normal(rng, rows, cols, dtype))
    return lp, _np_softmax(_normal(rng, rows, cols, dtype, 2.0))


def _bench_binary(rows, cols, rng, dtype):
    x = _normal(rng, rows, cols, dtype, 2.0)
    return x, (rng.uniform(size=(rows, cols)) < 0.3).astype(dtype)


def _bench_binary_probs(rows, cols, rng, dtype):
    x, y = _bench_binary(rows, cols, rng, dtype)
    return (1 / (1 + np.exp(-x))).astype(dtype), y


def _bench_pm1(rows, cols, rng, dtype):
    x, y = _bench_binary(rows, cols, rng, dtype)
    return x, (2 * y - 1).astype(dtype)


def _bench_regression(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), _normal(rng, rows, cols, dtype, 2.0)


def _bench_poisson(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype), rng.poisson(2.0, (rows, cols)).astype(dtype)


def _bench_gaussian(rows, cols, rng, dtype):
    x, t = _bench_regression(rows, cols, rng, dtype)
    return x, t, rng.uniform(0.1, 2.0, (rows, cols)).astype(dtype)


def _bench_fused(rows, cols, rng, dtype, hidden=64):
    """``hidden [rows, 64]``, ``kernel [64, cols]`` (logits of unit scale), labels."""
    h = _normal(rng, rows, hidden, dtype)
    k = _normal(rng, hidden, cols, dtype, 1 / math.sqrt(hidden))
    return h, k, _labels(rng, rows, cols)


# --------------------------------------------------------------------------
# Optax losses beyond the first catalogue, preference losses
# --------------------------------------------------------------------------

# Similarity, Dice and ranking losses

# --------------------------------------------------------------------------
# Reference formulas
# --------------------------------------------------------------------------


def _cos_ref(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """``optax.losses.cosine_similarity``: ``sum(a / |a|_eps * b / |b|_eps)`` with
    ``|x|_eps = sqrt(max(sum x**2, eps))``."""

    def unit(x):
        sq = jnp.sum(x * x, axis=axis, keepdims=True, where=where)
        return x / jnp.sqrt(jnp.maximum(sq, epsilon))

    return jnp.sum(unit(predictions) * unit(targets), axis=axis, where=where)


def _cosine_similarity_ref(predictions, targets, *, reduction="none", **kw):
    """``optax.losses.cosine_similarity`` / ``torch.nn.functional.cosine_similarity``."""
    return _reduce(_cos_ref(predictions, targets, **kw), reduction)


def _cosine_distance_ref(predictions, targets, *, reduction="none", **kw):
    """``optax.losses.cosine_distance``: ``1 - cosine_similarity``."""
    return _reduce(1.0 - _cos_ref(predictions, targets, **kw), reduction)


def _triplet_ref(
    anchors, positives, negatives, axis=-1, norm_degree=2, margin=1.0, eps=1e-6, *,
    reduction="none",
):  # fmt: skip
    """``optax.losses.triplet_margin_loss``: ``max(d(a, p) - d(a, n) + margin, 0)``
    with ``d(x, y) = (sum((x - y)**p) + eps)**(1/p)``."""

    def dist(x, y):
        return (jnp.sum(jnp.power(x - y, norm_degree), axis=axis) + eps) ** (1.0 / norm_degree)

    loss = jnp.maximum(dist(anchors, positives) - dist(anchors, negatives) + margin, 0.0)
    return _reduce(loss, reduction)


def _ntxent_ref(embeddings, labels, temperature=0.07, *, reduction="mean"):
    """``optax.losses.ntxent`` (Chen et al. 2020): ``s = cos(e_i, e_j) / tau`` (squared
    norms clipped at the dtype's eps); over the ordered positive pairs,
    ``-log(e^s_ij / (e^s_ij + sum_{k: y_k != y_i} e^s_ik))``; mean over the pairs."""
    eps = float(jnp.finfo(embeddings.dtype).eps)
    s = _cos_ref(embeddings[None, :, :], embeddings[:, None, :], epsilon=eps) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(labels.shape[0], dtype=bool)
    neg_lse = jax.nn.logsumexp(jnp.where(same, -jnp.inf, s), axis=1, keepdims=True)
    pair = jnp.where(pos, jnp.logaddexp(neg_lse, s) - s, 0.0)
    return _reduce(jnp.sum(pair, axis=1), reduction, jnp.sum(pos).astype(pair.dtype))


def _dice_per_class(predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, axis):
    """optax's per-class Tversky loss ``1 - (I + s) / (I + a FP + b FN + s)``."""
    x, t = predictions, targets
    if apply_softmax:
        x = jax.nn.sigmoid(x) if x.shape[-1] == 1 else jax.nn.softmax(x, axis=-1)
    axes = tuple(range(1, x.ndim - 1)) if axis is None else axis
    inter = jnp.sum(x * t, axis=axes)
    fp = jnp.sum(x, axis=axes) - inter
    fn = jnp.sum(t, axis=axes) - inter
    loss = 1.0 - (inter + smooth) / (inter + alpha * fp + beta * fn + smooth)
    return loss if class_weights is None else loss * _lead(class_weights, loss)


def _dice_ref(
    predictions, targets, *, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5,
    apply_softmax=True, reduction="mean", ignore_background=False, axis=None,
):  # fmt: skip
    """``optax.losses.dice_loss`` (Milletari et al. 2016; Tversky: Salehi et al. 2017),
    reduced over the class axis."""
    loss = _dice_per_class(
        predictions, targets, class_weights, smooth, alpha, beta, apply_softmax, axis
    )
    if ignore_background and loss.shape[-1] > 1:
        loss = loss[..., 1:]
    if reduction == "none":
        return loss
    return jnp.sum(loss, axis=-1) if reduction == "sum" else jnp.mean(loss, axis=-1)


def _binary_dice_ref(predictions, targets, *, smooth=1.0, apply_sigmoid=True, reduction="none"):
    """``optax.losses.binary_dice_loss``: :func:`_dice_ref` of one sigmoid channel."""
    x, t = predictions[..., None], targets[..., None]
    loss = jnp.mean(_dice_per_class(x, t, None, smooth, 0.5, 0.5, apply_sigmoid, None), axis=-1)
    return _reduce(loss, reduction)


def _generalized_dice_ref(
    predictions, targets, *, smooth=1.0, apply_softmax=True, ignore_background=False,
    reduction="mean",
):  # fmt: skip
    """``optax.losses.multiclass_generalized_dice_loss`` (Sudre et al. 2017): class
    weights ``C (1/(f_c**2 + 1e-7)) / sum_k 1/(f_k**2 + 1e-7)``, ``f`` the class
    frequencies of the targets; optax's value is the mean."""
    inv = 1.0 / (jnp.sum(targets, axis=tuple(range(targets.ndim - 1))) ** 2 + 1e-7)
    w = inv / jnp.sum(inv) * inv.shape[0]
    loss = _dice_ref(
        predictions, targets, class_weights=w, smooth=smooth, apply_softmax=apply_softmax,
        reduction="none", ignore_background=ignore_background,
    )  # fmt: skip
    return _reduce(loss, reduction)


def _ranking_softmax_ref(logits, labels, *, where=None, weights=None, reduction="mean"):
    """``optax.losses.ranking_softmax_loss`` (ListNet, Cao et al. 2007):
    ``-sum(w y log_softmax(s))`` per list; the mean is over the lists with a valid
    item (no masking modelled: ``where`` rows are the builders' non-reference calls)."""
    gain = labels if weights is None else labels * _lead(weights, labels)
    loss = -jnp.sum(gain * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------
# Builders for the gradient checks
# --------------------------------------------------------------------------


def _build_cosine(regime, rng):
    scale = 30.0 if regime == "large" else 2.0
    a, b = rng.normal(0.0, scale, (2, 4, 5))
    if regime == "small":
        return Inputs((_f32(a), _f32(b)), {"epsilon": 0.1}, (0, 1))
    if regime == "large":
        return Inputs((_f32(a), _f32(b)), {"reduction": "mean"}, (0, 1))
    kw = {"where": jnp.asarray(MASK | np.eye(4, 5, dtype=bool)), "reduction": "sum"}
    return Inputs((_f32(a), _f32(b)), kw, (0, 1), reference=False)


def _build_triplet(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 1.0
    a, p, n = rng.normal(0.0, scale, (3, 4, 5))
    kw = {"margin": 0.5} if regime == "small" else {"margin": 10.0, "reduction": "mean"}
    # eps keeps the root away from 0 (its derivative there is unbounded)
    return Inputs((_f32(a), _f32(p), _f32(n)), kw, (0, 1, 2))


def _build_ntxent(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 1.0
    e = rng.normal(0.0, scale, (6, 4))
    t = 0.5 if regime == "small" else 0.1
    return Inputs((_f32(e), _int([0, 0, 1, 1, 2, 2]), t), {"reduction": "mean"})


def _seg(rng, regime, classes=3):
    """Logits ``[2, 3, 2, classes]`` and one-hot targets."""
    x = _logits(rng, regime, (2, 3, 2, classes))
    return x, np.eye(classes)[rng.integers(0, classes, x.shape[:-1])]


def _build_dice(regime, rng):
    x, t = _seg(rng, regime)
    if regime == "small":
        kw = {"alpha": 0.3, "beta": 0.7, "smooth": 0.5, "class_weights": _f32([0.5, 1.0, 2.0])}
        return Inputs((_f32(x), _f32(t)), kw, (0, 1))
    if regime == "large":
        return Inputs((_f32(x), _f32(t)), {"reduction": "none", "ignore_background": True})
    # a class absent from prediction and target with smooth = 0 (0 / 0: loss 0)
    p = np.concatenate([_np_softmax(x[..., :2]), np.zeros((*x.shape[:-1], 1))], axis=-1)
    t = np.eye(3)[rng.integers(0, 2, x.shape[:-1])]
    kw = {"smooth": 0.0, "apply_softmax": False, "reduction": "none"}
    return Inputs((_f32(p), _f32(t)), kw, (1,), reference=False)


def _build_binary_dice(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (3, 4, 2))
    y = _f32(rng.integers(0, 2, x.shape))
    kw = {"smooth": 0.5} if regime == "small" else {"reduction": "mean"}
    return Inputs((_f32(x), y), kw)


def _build_generalized_dice(regime, rng):
    if regime == "masked":
        return None
    x, t = _seg(rng, regime)
    kw = {"smooth": 0.5} if regime == "small" else {"ignore_background": True}
    return Inputs((_f32(x), _f32(t)), kw, (0, 1))


def _build_ranking_softmax(regime, rng):
    x = _logits(rng, regime, (4, 5))
    y = rng.integers(0, 3, x.shape).astype(np.float64)
    if regime == "small":
        return Inputs((_f32(x), _f32(y)), {"weights": _f32(rng.uniform(0.5, 2, 5))}, (0, 1))
    if regime == "large":
        return Inputs((_f32(x), _f32(y)), {"reduction": "sum"})
    x[0, 1], y[0, 1] = -np.inf, 0.0  # a -inf score with label 0; row 2 fully masked
    return Inputs((_f32(x), _f32(y)), {"where": jnp.asarray(MASK)}, reference=False)


# --------------------------------------------------------------------------
# Benchmark-size inputs
# --------------------------------------------------------------------------


def _bench_triplet(rows, cols, rng, dtype):
    return tuple(_normal(rng, rows, cols, dtype) for _ in range(3))


def _bench_ntxent(rows, cols, rng, dtype):
    """``rows`` embeddings of at most 128 features (a projection head's width): optax
    forms the ``[rows, rows, features]`` products, 32 GiB at 1024 x 8192."""
    dim = min(cols, 128)
    return _normal(rng, rows, dim, dtype), (np.arange(rows) // 2).astype(np.int32)


def _bench_dice(rows, cols, rng, dtype):
    """logits ``[rows, 8, cols]`` (8 pixels per example) and one-hot targets."""
    x = (2.0 * rng.standard_normal((rows, 8, cols))).astype(dtype)
    return x, np.eye(cols, dtype=dtype)[rng.integers(0, cols, (rows, 8))]


def _bench_ranking(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), rng.integers(0, 3, (rows, cols)).astype(dtype)


# --------------------------------------------------------------------------
# Shared signatures
# --------------------------------------------------------------------------

_COSINE = "(predictions, targets, *, epsilon=0.0, axis=-1, where=None, reduction='none')"

# Sparsemax, CTC and the other KL divergences. make_fenchel_young_loss (a
# factory) and convex_kl_divergence (a deprecated alias) have no rows: see
# NOT_LOSSES; tests/test_sparsemax.py and tests/test_divergence_extra.py check them.


# ---- reference formulas (float64, plain autodiff) -------------------------


def _sparsemax_ref(logits, labels, *, reduction="none"):
    """``optax.losses.sparsemax_loss``: ``sparse_plus(-x if y else x)`` with
    ``sparse_plus(s) = 0 (s <= -1), (s + 1)**2 / 4 (|s| < 1), s (s >= 1)``."""
    s = jnp.where(labels != 0, -logits, logits)
    quad = (jnp.clip(s, -1.0, 1.0) + 1.0) ** 2 / 4
    return _reduce(jnp.where(s <= -1.0, 0.0, jnp.where(s >= 1.0, s, quad)), reduction)


def _simplex_ref(z):
    """Euclidean projection of each row onto the simplex (sort-based)."""
    k = z.shape[-1]
    u = -jnp.sort(-z, axis=-1)
    csum = jnp.cumsum(u, axis=-1)
    ind = jnp.broadcast_to(jnp.arange(1, k + 1, dtype=z.dtype), z.shape)
    size = jnp.sum(1 + ind * u > csum, axis=-1)
    top = jnp.take_along_axis(csum, size[..., None] - 1, axis=-1)
    tau = (top - 1) / size[..., None].astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def _multiclass_sparsemax_ref(scores, labels, *, reduction="none"):
    """``optax.losses.multiclass_sparsemax_loss`` (Martins and Astudillo 2016):
    ``<p, z> - z_y + (1 - |p|^2) / 2`` with ``p = sparsemax(z)``."""
    p = _simplex_ref(scores)
    loss = jnp.sum(p * scores, axis=-1) - _pick(scores, labels) + 0.5 * (1 - jnp.sum(p * p, -1))
    return _reduce(loss, reduction)


def _kl_log_targets_ref(log_predictions, log_targets, *, reduction="none"):
    """``optax.losses.kl_divergence_with_log_targets`` / ``torch.nn.functional.kl_div``
    with ``log_target=True``: ``sum(exp(lt) * (lt - lp))`` over the last axis."""
    loss = jnp.sum(jnp.exp(log_targets) * (log_targets - log_predictions), axis=-1)
    return _reduce(loss, reduction)


def _generalized_kl_ref(log_predictions, targets, *, reduction="none"):
    """``optax.losses.generalized_kl_divergence``:
    ``sum(t log t - t lp - t + exp(lp))`` over the last axis, ``0 log 0 = 0``."""
    t = targets
    loss = jax.scipy.special.xlogy(t, t) - t * log_predictions - t + jnp.exp(log_predictions)
    return _reduce(jnp.sum(loss, axis=-1), reduction)


def _ctc_extended(labels, label_paddings, blank_id):
    """Graves's extended labels ``[blank, y1, blank, ..., yN, blank]`` ``[B, 2N + 1]``
    and where a state may be entered from two states back (a label unlike the last)."""
    y = jnp.where(label_paddings != 0, blank_id, labels)
    ext = jnp.full((y.shape[0], 2 * y.shape[1] + 1), blank_id, y.dtype).at[:, 1::2].set(y)
    skip = jnp.concatenate([jnp.zeros_like(ext[:, :2], bool), ext[:, 2:] != ext[:, :-2]], axis=1)
    return ext, skip & (ext != blank_id)


def _ctc_ref(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    *,
    blank_id=0,
    log_epsilon=-1e5,
    reduction="none",
    zero_infinity=False,
):
    """``optax.losses.ctc_loss`` (Graves et al. 2006, eqs. 6-8): the forward recursion
    over the extended labels ``[blank, y1, blank, y2, ..., blank]``,
    ``alpha_t(s) = (alpha_{t-1}(s) + alpha_{t-1}(s-1) + [skip] alpha_{t-1}(s-2)) p_t(l_s)``
    in log space (``lax.scan`` over frames; padded frames carry alpha over, as optax),
    ``log_epsilon`` standing for ``log 0``; ``-log(alpha_T(2n) + alpha_T(2n-1))``.
    ``"mean"`` as ``torch.nn.functional.ctc_loss``: the mean of
    ``loss / max(target_length, 1)``. Models a finite ``log_epsilon`` only."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    ext, skip_ok = _ctc_extended(labels, label_paddings, blank_id)
    emit = jnp.take_along_axis(
        logp, jnp.broadcast_to(ext[:, None], logp.shape[:2] + ext.shape[1:]), -1
    )
    eps = jnp.asarray(log_epsilon, logp.dtype)
    # no predecessor: log 0 (-inf); each sum keeps its own finite term, so no NaN.
    # (An eps there would add an eps + emission path in every frame.)
    lo = jnp.full((ext.shape[0], 2), -jnp.inf, logp.dtype)
    init = jnp.concatenate(
        [jnp.zeros_like(lo[:, :1]), jnp.full_like(ext, eps, logp.dtype)[:, 1:]], 1
    )

    def frame(alpha, xs):
        emit_t, pad_t = xs
        step = jnp.concatenate([lo[:, :1], alpha[:, :-1]], axis=1)
        skip = jnp.where(skip_ok, jnp.concatenate([lo, alpha[:, :-2]], axis=1), -jnp.inf)
        new = jax.nn.logsumexp(jnp.stack([alpha, step, skip]), axis=0) + emit_t
        return jnp.where(pad_t[:, None] != 0, alpha, new), None

    alpha, _ = jax.lax.scan(frame, init, (jnp.swapaxes(emit, 0, 1), logit_paddings.T))
    n = labels.shape[1] - jnp.sum(label_paddings != 0, axis=1)
    last = _pick(alpha, 2 * n)
    before = _pick(alpha, jnp.maximum(2 * n - 1, 0))
    # an empty label sequence ends only in the first blank (optax: no log_epsilon term)
    loss = -jnp.where(n > 0, jnp.logaddexp(last, before), last)
    if zero_infinity:
        loss = jnp.where(jnp.isinf(loss), 0.0, loss)
    if reduction == "mean":
        return jnp.mean(loss / jnp.maximum(n, 1).astype(loss.dtype))
    return _reduce(loss, reduction)


def _ctc_forward_probs_ref(
    logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5
):
    """The loss part of ``optax.losses.ctc_loss_with_forward_probs`` (the forward
    tables are compared with optax directly in tests/test_ctc.py)."""
    return _ctc_ref(
        logits, logit_paddings, labels, label_paddings, blank_id=blank_id, log_epsilon=log_epsilon
    )


# ---- builders ---------------------------------------------------------------


def _build_sparsemax(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (3, 4))
    # keep |x| away from the kinks at +-1, where the second derivative jumps
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, x + 0.2, x)
    return Inputs((_f32(x), _int(rng.integers(0, 2, x.shape))))


def _build_multiclass_sparsemax(regime, rng):
    x, y, _ = _class_rows(rng, regime)
    if regime == "masked":  # -inf scores outside the label: never in the support
        x[0, (y[0] + 1) % 5] = -np.inf
        return Inputs((_f32(x), _int(y)), {"reduction": "mean"}, reference=False, order=1)
    # the sparsemax Jacobian is piecewise constant: its derivative is 0 off the kinks
    return Inputs((_f32(x), _int(y)), order=2)


def _build_kl_log_targets(regime, rng):
    lp = _f32(_np_log_softmax(_logits(rng, regime)))
    lt = _f32(_np_log_softmax(_logits(rng, regime)))
    if regime == "masked":
        kw = {"where": jnp.asarray(MASK), "reduction": "batchmean"}
        return Inputs((lp, lt), kw, (0, 1), reference=False)
    return Inputs((lp, lt), {}, (0, 1))


def _build_generalized_kl(regime, rng):
    lp = _f32(_np_log_softmax(_logits(rng, regime)) + rng.normal(0, 0.3, (4, 5)))
    t = _f32(rng.uniform(0.1, 2.0, (4, 5)))
    if regime == "masked":
        return Inputs((lp, t), {"where": jnp.asarray(MASK), "reduction": "mean"}, (0, 1), False)
    return Inputs((lp, t), {}, (0, 1))


def _ctc_rows(rng, regime):
    """logits [3, 6, 5], paddings, right-padded labels [3, 3] (all feasible)."""
    scale = 6.0 if regime == "large" else 1.5
    x = rng.normal(0.0, scale, (3, 6, 5))
    y = rng.integers(1, 5, (3, 3))
    xpad = (np.arange(6)[None] >= np.array([6, 5, 4])[:, None]).astype(np.float32)
    ypad = (np.arange(3)[None] >= np.array([3, 2, 1])[:, None]).astype(np.float32)
    return _f32(x), _f32(xpad), _int(y), _f32(ypad)


def _build_ctc(regime, rng):
    x, xpad, y, ypad = _ctc_rows(rng, regime)
    if regime == "masked":  # a class never allowed (-inf), an infeasible row zeroed
        x = x.at[:, :, 4].set(-jnp.inf)
        y = jnp.where(y == 4, 1, y)
        y = y.at[2, :2].set(3)
        ypad = ypad.at[2, 1].set(0.0)
        xpad = xpad.at[2, 1:].set(1.0)
        kw = {"log_epsilon": -jnp.inf, "reduction": "mean", "zero_infinity": True}
        return Inputs((x, xpad, y, ypad), kw, reference=False, order=1)
    kw = {"reduction": "mean"} if regime == "small" else {}
    return Inputs((x, xpad, y, ypad), kw, order=2 if regime == "small" else 1)


def _build_ctc_forward_probs(regime, rng):
    # a tuple-valued function: the gradient checks take its first output (the loss)
    if regime == "masked":
        return None
    return Inputs(_ctc_rows(rng, regime), {}, order=1)


# ---- benchmarks -------------------------------------------------------------


def _bench_sparsemax(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), rng.integers(0, 2, (rows, cols)).astype(np.int32)


def _bench_ctc(rows, cols, rng, dtype, frames=32, max_label=8):
    """``rows`` sequences of ``frames`` frames over ``cols`` classes."""
    x = (2.0 * rng.standard_normal((rows, frames, cols))).astype(dtype)
    y = rng.integers(1, cols, (rows, max_label)).astype(np.int32)
    xpad = np.zeros((rows, frames), dtype)
    ypad = np.arange(max_label)[None] >= rng.integers(1, max_label + 1, rows)[:, None]
    return x, xpad, y, ypad.astype(dtype)


# Preference losses and the Jensen-Shannon divergence

# ---- reference formulas (float64, plain autodiff) -------------------------


def _dpo_ref(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    *,
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
    reduction="mean",
):
    """TRL ``DPOTrainer.dpo_loss``: DPO (Rafailov et al. 2023, eq. 7) with
    conservative smoothing, hinge ``relu(1 - beta h)``, IPO ``(h - 1/(2 beta))**2``
    (Azar et al. 2024, eq. 17), robust DPO (Chowdhury et al. 2024, eq. 4)."""
    h = (policy_chosen_logps - policy_rejected_logps) - (
        reference_chosen_logps - reference_rejected_logps
    )
    eps = label_smoothing
    if loss_type == "hinge":
        loss = jnp.maximum(0.0, 1.0 - beta * h)
    elif loss_type == "ipo":
        loss = (h - 1.0 / (2.0 * beta)) ** 2
    elif loss_type == "robust":
        loss = -(1 - eps) * jax.nn.log_sigmoid(beta * h) + eps * jax.nn.log_sigmoid(-beta * h)
        loss = loss / (1 - 2 * eps)
    else:
        loss = -(1 - eps) * jax.nn.log_sigmoid(beta * h) - eps * jax.nn.log_sigmoid(-beta * h)
    return _reduce(loss, reduction)


def _simpo_ref(chosen_logps, rejected_logps, *, beta=2.0, gamma=0.5, reduction="mean"):
    """SimPO (Meng et al. 2024, eq. 6) = TRL ``CPOTrainer`` ``loss_type="simpo"``
    with ``simpo_gamma=gamma``: ``-log sigmoid(beta (c - r) - gamma)``."""
    return _reduce(-jax.nn.log_sigmoid(beta * (chosen_logps - rejected_logps) - gamma), reduction)


def _orpo_ref(chosen_logps, rejected_logps, *, beta=0.1, reduction="mean"):
    """``beta *`` TRL ``ORPOTrainer.odds_ratio_loss`` (Hong et al. 2024, eq. 7):
    ``-beta log sigmoid((c - r) - (log1p(-e^c) - log1p(-e^r)))``."""
    c, r = chosen_logps, rejected_logps
    log_odds = (c - r) - (jnp.log1p(-jnp.exp(c)) - jnp.log1p(-jnp.exp(r)))
    return _reduce(-beta * jax.nn.log_sigmoid(log_odds), reduction)


def _jsd_ref(log_predictions, log_targets, *, beta=0.5, reduction="none"):
    """TRL ``GKDTrainer.generalized_jsd_loss`` / Liger ``LigerJSD`` (student =
    predictions, teacher = targets): ``beta KL(t || m) + (1 - beta) KL(p || m)``,
    ``m = beta t + (1 - beta) p``; ``beta = 0``: KL(t || p), ``beta = 1``: KL(p || t)."""
    lp, lt = log_predictions, log_targets
    if beta == 0:
        loss = jnp.sum(jnp.exp(lt) * (lt - lp), axis=-1)
    elif beta == 1:
        loss = jnp.sum(jnp.exp(lp) * (lp - lt), axis=-1)
    else:
        lm = jnp.logaddexp(lt + math.log(beta), lp + math.log1p(-beta))
        loss = jnp.sum(
            beta * jnp.exp(lt) * (lt - lm) + (1 - beta) * jnp.exp(lp) * (lp - lm), axis=-1
        )
    return _reduce(loss, reduction)


# ---- builders ---------------------------------------------------------------


def _seq_logps(rng, regime, n=8):
    """Summed sequence log-probabilities; "large": long sequences, big margins."""
    if regime == "large":
        return _f32(rng.uniform(-400.0, -100.0, n))
    return _f32(rng.uniform(-30.0, -5.0, n))


def _build_dpo(regime, rng):
    if regime == "masked":
        return None
    args = tuple(_seq_logps(rng, regime) for _ in range(4))
    kw = (
        {"beta": 0.3, "loss_type": "sigmoid", "label_smoothing": 0.1}
        if regime == "small"
        else {"beta": 0.1, "loss_type": "robust", "label_smoothing": 0.2, "reduction": "sum"}
    )
    return Inputs(args, kw, (0, 1, 2, 3))


def _build_simpo(regime, rng):
    if regime == "masked":
        return None
    lo, hi = (-3.0, -0.2) if regime == "small" else (-40.0, -0.01)
    c, r = _f32(rng.uniform(lo, hi, 8)), _f32(rng.uniform(lo, hi, 8))
    return Inputs((c, r), {"beta": 2.5, "gamma": 1.0}, (0, 1))


def _build_orpo(regime, rng):
    if regime == "masked":
        return None
    # average log-probs: moderate, or near 0 and far below it ("large")
    if regime == "small":
        c, r = rng.uniform(-3.0, -0.2, 8), rng.uniform(-3.0, -0.2, 8)
    else:
        c, r = -np.exp(rng.uniform(-6.0, 3.0, 8)), -np.exp(rng.uniform(-6.0, 3.0, 8))
    return Inputs((_f32(c), _f32(r)), {"beta": 0.5}, (0, 1))


def _build_jsd(regime, rng):
    lp = _f32(_np_log_softmax(_logits(rng, regime)))
    lt = _f32(_np_log_softmax(_logits(rng, regime)))
    if regime == "small":
        return Inputs((lp, lt), {"beta": 0.3}, (0, 1))
    if regime == "large":
        return Inputs((lp, lt), {"beta": 0.5, "reduction": "batchmean"}, (0, 1))
    kw = {"beta": 0.7, "where": jnp.asarray(MASK), "reduction": "mean"}
    return Inputs((lp, lt), kw, (0, 1), reference=False)


# ---- benchmarks -------------------------------------------------------------


def _bench_dpo(rows, cols, rng, dtype):
    return tuple(rng.uniform(-300.0, -50.0, (rows, cols)).astype(dtype) for _ in range(4))


def _bench_pair_avg(rows, cols, rng, dtype):
    return tuple(rng.uniform(-3.0, -0.05, (rows, cols)).astype(dtype) for _ in range(2))


def _bench_jsd(rows, cols, rng, dtype):
    lp = _np_log_softmax(_normal(rng, rows, cols, dtype))
    return lp, _np_log_softmax(_normal(rng, rows, cols, dtype, 2.0))


# PyTorch margin and Keras losses

# Rows for jaxloss/_registry.py: PyTorch margin losses (_margin) and Keras losses (_keras).
# Paste the reference formulas next to the other references, the builders next to
# the other builders, the bench builders in the benchmark section, and the rows
# into REGISTRY. Uses the registry's own helpers: _reduce, _softplus, _f32, _int,
# _logits, _normal, _bench_pm1, _bench_regression, _bench_binary, _bench_triplet.


# ---- reference formulas (float64 under the tests; plain autodiff) ----------------


def _margin_ranking_ref(input1, input2, target, *, margin=0.0, reduction="none"):
    """``torch.nn.functional.margin_ranking_loss``: ``max(0, -y (x1 - x2) + margin)``."""
    return _reduce(jnp.maximum(0.0, -target * (input1 - input2) + margin), reduction)


def _cosine_embedding_ref(input1, input2, target, *, margin=0.0, reduction="none"):
    """``torch.nn.functional.cosine_embedding_loss`` (``EPSILON = 1e-12`` in both norms)."""
    m1 = jnp.sum(input1 * input1, axis=-1) + 1e-12
    m2 = jnp.sum(input2 * input2, axis=-1) + 1e-12
    cos = jnp.sum(input1 * input2, axis=-1) / jnp.sqrt(m1 * m2)
    loss = jnp.where(target == 1, 1.0 - cos, 0.0)
    return _reduce(loss + jnp.where(target == -1, jnp.maximum(cos - margin, 0.0), 0.0), reduction)


def _hinge_embedding_ref(input, target, *, margin=1.0, reduction="none"):
    """``torch.nn.functional.hinge_embedding_loss``."""
    loss = jnp.where(target != 1, jnp.maximum(0.0, margin - input), 0.0)
    return _reduce(loss + jnp.where(target != -1, input, 0.0), reduction)


def _soft_margin_ref(input, target, *, reduction="none"):
    """``torch.nn.functional.soft_margin_loss``: ``log(1 + exp(-y x))``."""
    return _reduce(_softplus(-target * input), reduction)


def _multilabel_soft_margin_ref(input, target, *, weight=None, reduction="none"):
    """``torch.nn.functional.multilabel_soft_margin_loss``: mean over classes first."""
    loss = -(target * jax.nn.log_sigmoid(input) + (1 - target) * jax.nn.log_sigmoid(-input))
    if weight is not None:
        loss = loss * _lead(weight, input)
    return _reduce(jnp.mean(loss, axis=-1), reduction)


def _multilabel_margin_ref(input, target, *, reduction="none"):
    """``torch.nn.functional.multilabel_margin_loss``: targets listed before the first -1."""
    c = input.shape[-1]
    valid = jnp.cumprod(target >= 0, axis=-1).astype(bool)
    safe = jnp.where(valid, target, 0)
    listed = jax.nn.one_hot(safe, c, dtype=bool) & valid[..., None]
    is_target = jnp.any(listed, axis=-2)
    x_t = jnp.take_along_axis(input, safe, axis=-1)
    z = jnp.maximum(0.0, 1.0 - x_t[..., :, None] + input[..., None, :])
    keep = valid[..., :, None] & ~is_target[..., None, :]
    return _reduce(jnp.sum(jnp.where(keep, z, 0.0), axis=(-2, -1)) / c, reduction)


def _triplet_distance_ref(
    anchor, positive, negative, *, distance_function=None, margin=1.0, swap=False,
    reduction="none",
):  # fmt: skip
    """``torch.nn.functional.triplet_margin_with_distance_loss``; the default
    distance is ``pairwise_distance``: ``||x1 - x2 + 1e-6||_2``."""

    def pairwise(x1, x2):
        return jnp.sqrt(jnp.sum((x1 - x2 + 1e-6) ** 2, axis=-1))

    dist = pairwise if distance_function is None else distance_function
    d_neg = dist(anchor, negative)
    if swap:
        d_neg = jnp.minimum(d_neg, dist(positive, negative))
    return _reduce(jnp.maximum(margin + dist(anchor, positive) - d_neg, 0.0), reduction)


def _mape_ref(predictions, targets, *, reduction="none"):
    """``keras.losses.mean_absolute_percentage_error(y_true=targets, y_pred=predictions)``."""
    diff = jnp.abs(targets - predictions) / jnp.maximum(jnp.abs(targets), 1e-7)
    return _reduce(100.0 * jnp.mean(diff, axis=-1), reduction)


def _msle_ref(predictions, targets, *, reduction="none"):
    """``keras.losses.mean_squared_logarithmic_error(y_true=targets, y_pred=predictions)``."""
    e = jnp.log(jnp.maximum(predictions, 1e-7) + 1.0) - jnp.log(jnp.maximum(targets, 1e-7) + 1.0)
    return _reduce(jnp.mean(e**2, axis=-1), reduction)


def _categorical_hinge_ref(predictions, targets, *, reduction="none"):
    """``keras.losses.categorical_hinge(y_true=targets, y_pred=predictions)``."""
    pos = jnp.sum(targets * predictions, axis=-1)
    neg = jnp.max((1.0 - targets) * predictions, axis=-1)
    return _reduce(jnp.maximum(neg - pos + 1.0, 0.0), reduction)


# ---- input builders ------------------------------------------------------------


def _pm1(rng, shape):
    return _f32(rng.choice([-1.0, 1.0], shape))


def _build_margin_ranking(regime, rng):
    if regime == "masked":
        return None
    a, b = _logits(rng, regime, (2, 6))
    kw = {"margin": 0.5} if regime == "small" else {"reduction": "mean"}
    return Inputs((_f32(a), _f32(b), _pm1(rng, (6,))), kw, (0, 1))


def _build_cosine_embedding(regime, rng):
    if regime == "masked":
        return None
    a, b = _logits(rng, regime, (2, 4, 3))
    kw = {"margin": 0.2} if regime == "small" else {"reduction": "sum"}
    return Inputs((_f32(a), _f32(b), _pm1(rng, (4,))), kw, (0, 1))


def _build_hinge_embedding(regime, rng):
    if regime == "masked":
        return None
    d = np.abs(_logits(rng, regime, (3, 4)))
    return Inputs((_f32(d), _pm1(rng, d.shape)), {"margin": 1.5 if regime == "small" else 1.0})


def _build_soft_margin(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (3, 4))
    return Inputs((_f32(x), _pm1(rng, x.shape)))


def _build_multilabel_soft_margin(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (3, 4))
    if regime == "small":
        kw = {"weight": _f32(rng.uniform(0.5, 2.0, 4))}
        return Inputs((_f32(x), _f32(rng.uniform(0, 1, x.shape))), kw, (0, 1))
    return Inputs((_f32(x), _f32(rng.integers(0, 2, x.shape))), {"reduction": "mean"})


def _build_multilabel_margin(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (4, 5))
    y = np.full((4, 5), -1)
    for i, k in enumerate([1, 2, 0, 3]):  # k target classes, then -1 padding
        y[i, :k] = rng.permutation(5)[:k]
    return Inputs((_f32(x), _int(y)))


def _l1_distance(x1, x2):
    return jnp.sum(jnp.abs(x1 - x2), axis=-1)


def _build_triplet_distance(regime, rng):
    if regime == "masked":
        return None
    a, p, n = (_f32(v) for v in _logits(rng, regime, (3, 4, 3)))
    if regime == "small":
        return Inputs((a, p, n), {"margin": 2.0, "swap": True}, (0, 1, 2))
    return Inputs((a, p, n), {"distance_function": _l1_distance, "swap": True}, (0, 1, 2))


def _build_mape(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 2.0
    p, t = rng.uniform(-scale, scale, (2, 3, 4))
    t = np.where(np.abs(t) < 0.1, 0.5, t)  # away from the eps clamp for finite differences
    return Inputs((_f32(p), _f32(t)), {}, (0, 1))


def _build_msle(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 2.0
    p, t = rng.uniform(0.05, scale, (2, 3, 4))
    return Inputs((_f32(p), _f32(t)), {}, (0, 1))


def _build_categorical_hinge(regime, rng):
    if regime == "masked":
        return None
    x = _logits(rng, regime, (4, 5))
    t = np.eye(5)[rng.integers(0, 5, 4)] if regime == "large" else rng.uniform(0, 0.5, (4, 5))
    return Inputs((_f32(x), _f32(t)), {}, (0, 1))


# ---- benchmark-size inputs -----------------------------------------------------


def _bench_pair_pm1(rows, cols, rng, dtype):
    """Scores ``[rows]`` twice and -1/1 targets (element-wise pair losses)."""
    a, b = _normal(rng, 2, rows, dtype, 2.0)
    return a, b, np.where(rng.uniform(size=rows) < 0.5, -1, 1).astype(dtype)


def _bench_embedding_pairs(rows, cols, rng, dtype):
    a, b = _normal(rng, rows, cols, dtype), _normal(rng, rows, cols, dtype)
    return a, b, np.where(rng.uniform(size=rows) < 0.5, -1, 1).astype(dtype)


def _bench_distances_pm1(rows, cols, rng, dtype):
    x, y = _bench_pm1(rows, cols, rng, dtype)
    return np.abs(x), y


def _bench_multilabel_indices(rows, cols, rng, dtype):
    """At most 256 classes: the reference formula forms ``[rows, C, C]`` pairs."""
    cols = min(cols, 256)
    x = _normal(rng, rows, cols, dtype, 2.0)
    y = np.full((rows, cols), -1, np.int32)
    y[:, :2] = rng.integers(0, cols, (rows, 2))  # two target classes per row
    return x, y


def _bench_positive_regression(rows, cols, rng, dtype):
    return tuple(np.abs(a) + 0.1 for a in _bench_regression(rows, cols, rng, dtype))


def _bench_one_hot(rows, cols, rng, dtype):
    return _normal(rng, rows, cols, dtype, 2.0), np.eye(cols, dtype=dtype)[_labels(rng, rows, cols)]


# ---- rows (into REGISTRY) ------------------------------------------------------

_PAIR = "(input1, input2, target, *, margin=0.0, reduction='none')"
_KERAS = "(predictions, targets, *, reduction='none')"


# torchvision box losses


def _box_terms(boxes1, boxes2, eps):
    """torchvision/ops/_utils.py ``_loss_inter_union`` and the IoU ``inter / (union + eps)``;
    also the sides of the smallest enclosing box and the boxes' sides."""
    x1, y1, x2, y2 = jnp.unstack(boxes1, axis=-1)
    x1g, y1g, x2g, y2g = jnp.unstack(boxes2, axis=-1)
    iw = jnp.minimum(x2, x2g) - jnp.maximum(x1, x1g)
    ih = jnp.minimum(y2, y2g) - jnp.maximum(y1, y1g)
    inter = jnp.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    cw = jnp.maximum(x2, x2g) - jnp.minimum(x1, x1g)
    ch = jnp.maximum(y2, y2g) - jnp.minimum(y1, y1g)
    dist = ((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2 + ((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2
    sides = (x2 - x1, y2 - y1, x2g - x1g, y2g - y1g)
    return inter / (union + eps), union, cw, ch, dist, sides


def _giou_ref(boxes1, boxes2, *, eps=1e-7, reduction="none"):
    """``torchvision.ops.generalized_box_iou_loss``:
    ``1 - (IoU - (|C| - |A u B|) / (|C| + eps))``."""
    iou, union, cw, ch, _, _ = _box_terms(boxes1, boxes2, eps)
    area_c = cw * ch
    return _reduce(1 - (iou - (area_c - union) / (area_c + eps)), reduction)


def _diou_ref(boxes1, boxes2, *, eps=1e-7, reduction="none"):
    """``torchvision.ops.distance_box_iou_loss``:
    ``1 - IoU + |c1 - c2|**2 / (diag_C**2 + eps)``."""
    iou, _, cw, ch, dist, _ = _box_terms(boxes1, boxes2, eps)
    return _reduce(1 - iou + dist / (cw**2 + ch**2 + eps), reduction)


def _ciou_ref(boxes1, boxes2, *, eps=1e-7, reduction="none"):
    """``torchvision.ops.complete_box_iou_loss``: the distance IoU loss plus
    ``alpha v``, ``v = 4 / pi**2 (atan(w2 / h2) - atan(w1 / h1))**2`` and
    ``alpha = v / (1 - IoU + v + eps)`` held constant (torchvision's ``no_grad``);
    the IoU and distance terms use torchvision's fixed ``1e-7``, ``eps`` only ``alpha``."""
    iou, _, cw, ch, dist, (w1, h1, w2, h2) = _box_terms(boxes1, boxes2, 1e-7)
    v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    alpha = jax.lax.stop_gradient(v / (1 - iou + v + eps))
    return _reduce(1 - iou + dist / (cw**2 + ch**2 + 1e-7) + alpha * v, reduction)


def _boxes(rng, n, scale, aspect=None):
    """``n`` boxes ``x1, y1, x2, y2`` with corners in ``[0, scale]`` and sides
    ``scale * [0.05, 0.6]`` (height ``aspect * width`` when given)."""
    xy = rng.uniform(0.0, scale, (n, 2))
    w = rng.uniform(0.05, 0.6, n) * scale
    h = rng.uniform(0.05, 0.6, n) * scale if aspect is None else aspect * w
    return np.concatenate([xy, xy + np.stack([w, h], axis=-1)], axis=-1)


def _box_builder(same_aspect=False):
    """Two sets of 6 boxes, 1 unit ("small") or 1000 pixels ("large") across, half of
    the pairs overlapping. ``same_aspect``: each pair shares its aspect ratio, for the
    complete IoU, whose ``alpha`` is held constant (torchvision's gradient, which is
    the derivative of the loss only where the aspect term ``v`` is 0)."""

    def build(regime, rng):
        if regime == "masked":
            return None
        scale = 1000.0 if regime == "large" else 1.0
        aspect = rng.uniform(0.3, 3.0, 6) if same_aspect else None
        b1 = _boxes(rng, 6, scale, aspect)
        b2 = _boxes(rng, 6, scale, aspect)
        shift = rng.uniform(-0.1, 0.1, (3, 2)) * scale
        zoom = rng.uniform(0.7, 1.3, (3, 1)) * (b1[:3, 2:] - b1[:3, :2])
        b2[:3] = np.concatenate([b1[:3, :2] + shift, b1[:3, :2] + shift + zoom], axis=-1)
        kw = {"eps": 1e-7} if regime == "small" else {"reduction": "mean"}
        return Inputs((_f32(b1), _f32(b2)), kw, (0, 1))

    return build


def _bench_boxes(rows, cols, rng, dtype):
    """Two sets of boxes ``[rows, cols // 4, 4]`` (``rows * cols`` coordinates each)."""
    n = max(cols // 4, 1)
    return tuple(_boxes(rng, rows * n, 100.0).reshape(rows, n, 4).astype(dtype) for _ in range(2))


# Per-token log-probabilities


def _log_probs_ref(
    hidden,
    kernel,
    labels,
    *,
    bias=None,
    temperature=1.0,
    logit_softcap=None,
    chunk_size=None,
    axis_name=None,
):
    """``log_softmax(cap tanh((h W + b) / (T cap)))[y]``, materialised (TRL's
    ``selective_log_softmax`` of the tempered, soft-capped logits); ``axis_name``
    (the vocabulary sharded) changes only where the columns live."""
    del chunk_size, axis_name
    x = hidden @ kernel if bias is None else hidden @ kernel + bias[None, :]
    x = x / temperature
    s = x if logit_softcap is None else logit_softcap * jnp.tanh(x / logit_softcap)
    lp = jax.nn.log_softmax(s, axis=-1)
    return jnp.take_along_axis(lp, labels[:, None], axis=-1)[:, 0]


def _build_log_probs(regime, rng):
    if regime == "masked":
        return None
    h, k, b, y = _fused_rows(rng, regime)
    kw = {"bias": b, "chunk_size": 2}
    if regime == "small":
        kw |= {"temperature": 0.7, "logit_softcap": 3.0}
    return Inputs((h, k, _int(y)), kw, (0, 1, "bias"), order=1 if regime == "large" else 2)


# Fused distillation


def _distill_ref(
    student_hidden, student_kernel, teacher_hidden, teacher_kernel, *, labels=None,
    ignore_index=None, divergence="forward_kl", beta=0.5, temperature=1.0, student_bias=None,
    teacher_bias=None, reduction="mean", chunk_size=None, axis_name=None,
):  # fmt: skip
    """TRL's ``GKDTrainer.generalized_jsd_loss`` on the materialised logits: both
    divided by ``temperature``; ``beta=0`` the forward ``KL(teacher || student)``,
    ``beta=1`` the reverse, else ``beta KL(t || m) + (1 - beta) KL(s || m)`` with
    ``m = beta t + (1 - beta) s``; tokens labelled ``ignore_index`` left out;
    ``"mean"`` divides by the counted tokens."""
    del chunk_size, axis_name  # the schedule and where the columns live

    def logits(h, w, b):
        return (h @ w if b is None else h @ w + b[None, :]) / temperature

    ls = jax.nn.log_softmax(logits(student_hidden, student_kernel, student_bias))
    lt = jax.nn.log_softmax(logits(teacher_hidden, teacher_kernel, teacher_bias))
    lt = jax.lax.stop_gradient(lt)
    b = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, beta)

    def kl(la, lb):  # KL(a || b), 0 log 0 = 0
        return jnp.sum(jnp.where(la == -jnp.inf, 0.0, jnp.exp(la) * (la - lb)), axis=-1)

    if b == 0.0:
        rows = kl(lt, ls)
    elif b == 1.0:
        rows = kl(ls, lt)
    else:
        lm = jnp.logaddexp(lt + jnp.log(b), ls + jnp.log1p(-b))
        rows = b * kl(lt, lm) + (1.0 - b) * kl(ls, lm)
    counted = jnp.ones(rows.shape, bool)
    if labels is not None and ignore_index is not None:
        counted = labels != ignore_index
    rows = jnp.where(counted, rows, 0.0)
    return _reduce(rows, reduction, jnp.sum(counted).astype(rows.dtype))


def _build_distill(regime, rng):
    h, k, b, y = _fused_rows(rng, regime)
    ht = _f32(rng.normal(0, 1, (4, 5)))
    kt = _f32(rng.normal(0, 3.0 if regime == "large" else 1.0, (5, 6)))
    diff = (0, 1, "student_bias")
    kw = {"student_bias": b, "teacher_bias": _f32(rng.normal(0, 1, (6,))), "chunk_size": 3}
    if regime == "masked":
        y[1] = -100
        kw |= {"labels": _int(y), "ignore_index": -100, "divergence": "reverse_kl"}
        return Inputs((h, k, ht, kt), kw | {"reduction": "none"}, diff, order=1)
    if regime == "small":
        kw |= {"divergence": "jsd", "beta": 0.3, "temperature": 1.5}
    return Inputs((h, k, ht, kt), kw, diff, order=1 if regime == "large" else 2)


def _bench_distill(rows, cols, rng, dtype, hidden=64):
    """A student and a teacher ``hidden [rows, 64]``, ``kernel [64, cols]``."""
    h, k, _ = _bench_fused(rows, cols, rng, dtype, hidden)
    ht, kt, _ = _bench_fused(rows, cols, rng, dtype, hidden)
    return h, k, ht, kt


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

_OPTAX = "optax.losses."
_TORCH = "torch.nn.functional."
_CE_OPTIONS = "label_smoothing=0.0, z_loss=0.0"
_INT_OPTIONS = f"ignore_index=None, {_CE_OPTIONS}, logit_softcap=None"
_REGRESSION = "(predictions, targets=None, *, {}reduction='none')"
_HINGE = "(predictor_outputs, targets, *, margin=1.0, reduction='none')"
_FUSED_OPTIONS = f"{_INT_OPTIONS}, reduction='mean', chunk_size=None"
_TOKEN_WEIGHTS = "sample_weight=None, normalizer=None"

# Columns: name, family, signature, reference, build, bench, optax, torch; then keywords.
_BOXES = "(boxes1, boxes2, *, eps=1e-07, reduction='none')"

REGISTRY: tuple[LossSpec, ...] = (
    # classification
    LossSpec("softmax_cross_entropy", "_classification",
             f"(logits, labels, axis=-1, where=None, *, weight=None, {_CE_OPTIONS},"
             " reduction='none')",
             _ce_prob_ref, _build_softmax_ce, _bench_probs,
             _OPTAX + "softmax_cross_entropy", _TORCH + "cross_entropy",
             batch_options={"label_smoothing": 0.1}),
    LossSpec("softmax_cross_entropy_with_integer_labels", "_classification",
             f"(logits, labels, axis=-1, where=None, *, weight=None, {_INT_OPTIONS},"
             " reduction='none')",
             _ce_int_ref, _build_ce_int, _bench_class,
             _OPTAX + "softmax_cross_entropy_with_integer_labels", _TORCH + "cross_entropy",
             batch_options={"label_smoothing": 0.1, "z_loss": 1e-3}),
    LossSpec("safe_softmax_cross_entropy", "_classification",
             "(logits, labels, *, reduction='none')",
             _safe_ce_ref, _build_safe_ce, _bench_probs, _OPTAX + "safe_softmax_cross_entropy"),
    LossSpec("poly_loss_cross_entropy", "_classification",
             "(logits, labels, *, epsilon=2.0, axis=-1, where=None, reduction='none')",
             _poly_ref, _build_poly, _bench_probs, _OPTAX + "poly_loss_cross_entropy"),
    LossSpec("nll_loss", "_classification",
             "(log_probs, labels, *, axis=-1, weight=None, ignore_index=None,"
             " reduction='none')",
             _nll_ref, _build_nll, _bench_log_probs, None, _TORCH + "nll_loss"),
    # binary
    LossSpec("sigmoid_binary_cross_entropy", "_binary",
             "(logits, labels, *, weight=None, pos_weight=None, label_smoothing=0.0,"
             " reduction='none')",
             _sigmoid_bce_ref, _build_sigmoid_bce, _bench_binary,
             _OPTAX + "sigmoid_binary_cross_entropy",
             _TORCH + "binary_cross_entropy_with_logits"),
    LossSpec("binary_cross_entropy", "_binary",
             "(probs, labels, *, weight=None, reduction='none')",
             _bce_ref, _build_bce, _bench_binary_probs, None, _TORCH + "binary_cross_entropy"),
    # focal and hinge
    LossSpec("sigmoid_focal_loss", "_focal",
             "(logits, labels, *, alpha=None, gamma=2.0, reduction='none')",
             _sigmoid_focal_ref, _build_sigmoid_focal, _bench_binary,
             _OPTAX + "sigmoid_focal_loss", "torchvision.ops.sigmoid_focal_loss"),
    LossSpec("softmax_focal_loss", "_focal",
             "(logits, labels, *, alpha=None, gamma=2.0, axis=-1, ignore_index=None,"
             " reduction='none')",
             _softmax_focal_ref, _build_softmax_focal, _bench_class),
    LossSpec("hinge_loss", "_hinge", _HINGE, _hinge_ref, _hinge_builder(margin=1.5), _bench_pm1,
             _OPTAX + "hinge_loss"),
    LossSpec("squared_hinge_loss", "_hinge", _HINGE, functools.partial(_hinge_ref, power=2),
             _hinge_builder(margin=1.5), _bench_pm1),
    LossSpec("perceptron_loss", "_hinge", "(predictor_outputs, targets, *, reduction='none')",
             _perceptron_ref, _hinge_builder(), _bench_pm1, _OPTAX + "perceptron_loss"),
    LossSpec("multiclass_hinge_loss", "_hinge", "(scores, labels, *, reduction='none')",
             _crammer_singer_ref, _build_scores_labels, _bench_class,
             _OPTAX + "multiclass_hinge_loss"),
    LossSpec("multiclass_perceptron_loss", "_hinge", "(scores, labels, *, reduction='none')",
             _multiclass_perceptron_ref, _build_scores_labels, _bench_class,
             _OPTAX + "multiclass_perceptron_loss"),
    LossSpec("multi_margin_loss", "_hinge",
             "(scores, labels, *, p=1, margin=1.0, weight=None, reduction='none')",
             _multi_margin_ref, _build_multi_margin, _bench_class,
             None, _TORCH + "multi_margin_loss"),
    # divergence and regression
    LossSpec("kl_divergence", "_divergence",
             "(log_predictions, targets, axis=-1, where=None, *, log_target=False,"
             " reduction='none')",
             _kl_ref, _build_kl, _bench_kl, _OPTAX + "kl_divergence", _TORCH + "kl_div",
             batch_options={"reduction": "batchmean"}),
    LossSpec("squared_error", "_regression", _REGRESSION.format(""), _squared_error_ref,
             _regression_builder(), _bench_regression,
             _OPTAX + "squared_error", _TORCH + "mse_loss"),
    LossSpec("l2_loss", "_regression", _REGRESSION.format(""), _l2_ref,
             _regression_builder(), _bench_regression, _OPTAX + "l2_loss"),
    LossSpec("absolute_error", "_regression", _REGRESSION.format(""), _absolute_error_ref,
             _regression_builder(), _bench_regression, None, _TORCH + "l1_loss"),
    LossSpec("huber_loss", "_regression", _REGRESSION.format("delta=1.0, "), _huber_ref,
             _regression_builder(delta=1.5), _bench_regression,
             _OPTAX + "huber_loss", _TORCH + "huber_loss"),
    LossSpec("smooth_l1_loss", "_regression", _REGRESSION.format("beta=1.0, "),
             _smooth_l1_ref, _regression_builder(beta=0.5), _bench_regression,
             None, _TORCH + "smooth_l1_loss"),
    LossSpec("log_cosh", "_regression", _REGRESSION.format(""), _log_cosh_ref,
             _regression_builder(), _bench_regression, _OPTAX + "log_cosh"),
    LossSpec("poisson_nll_loss", "_regression",
             "(input, targets, *, log_input=True, full=False, eps=1e-08, reduction='none')",
             _poisson_nll_ref, _build_poisson, _bench_poisson,
             None, _TORCH + "poisson_nll_loss"),
    LossSpec("gaussian_nll_loss", "_regression",
             "(input, targets, var, *, full=False, eps=1e-06, reduction='none')",
             _gaussian_nll_ref, _build_gaussian, _bench_gaussian,
             None, _TORCH + "gaussian_nll_loss"),
    # large vocabularies
    LossSpec("fused_linear_softmax_cross_entropy", "_large_vocab",
             f"(hidden, kernel, labels, *, bias=None, weight=None, {_TOKEN_WEIGHTS},"
             f" temperature=1.0, {_FUSED_OPTIONS}, return_aux=False)",
             _fused_ref, _build_fused, _bench_fused,
             batch_options={"ignore_index": 0, "label_smoothing": 0.1}),
    LossSpec("vocab_parallel_softmax_cross_entropy", "_large_vocab",
             f"(logits, labels, *, axis_name, axis=-1, where=None, weight=None, {_INT_OPTIONS},"
             " reduction='none')",
             _ce_int_ref, _build_vocab_parallel, None, batch=False),
    LossSpec("vocab_parallel_fused_linear_softmax_cross_entropy", "_large_vocab",
             "(hidden, kernel_shard, labels, *, axis_name, bias_shard=None, weight=None,"
             f" {_TOKEN_WEIGHTS}, temperature=1.0, {_FUSED_OPTIONS})",
             _vp_fused_ref, _build_vocab_parallel_fused, None, batch=False),
    # similarity and metric learning
    LossSpec("cosine_similarity", "_similarity", _COSINE,
             _cosine_similarity_ref, _build_cosine, _bench_regression,
             _OPTAX + "cosine_similarity", _TORCH + "cosine_similarity"),
    LossSpec("cosine_distance", "_similarity", _COSINE,
             _cosine_distance_ref, _build_cosine, _bench_regression,
             _OPTAX + "cosine_distance"),
    LossSpec("triplet_margin_loss", "_similarity",
             "(anchors, positives, negatives, axis=-1, norm_degree=2, margin=1.0, eps=1e-06,"
             " *, reduction='none')",
             _triplet_ref, _build_triplet, _bench_triplet,
             _OPTAX + "triplet_margin_loss", _TORCH + "triplet_margin_loss"),
    # pairs across the whole batch: not a per-example loss
    LossSpec("ntxent", "_similarity", "(embeddings, labels, temperature=0.07, *, reduction='mean')",
             _ntxent_ref, _build_ntxent, _bench_ntxent, _OPTAX + "ntxent", batch=False),
    # segmentation
    LossSpec("dice_loss", "_dice",
             "(predictions, targets, *, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5,"
             " apply_softmax=True, reduction='mean', ignore_background=False, axis=None)",
             # its `reduction` is optax's, over the classes: the output stays [N]
             _dice_ref, _build_dice, _bench_dice, _OPTAX + "dice_loss", batch=False),
    LossSpec("binary_dice_loss", "_dice",
             "(predictions, targets, *, smooth=1.0, apply_sigmoid=True, reduction='none')",
             _binary_dice_ref, _build_binary_dice, _bench_binary, _OPTAX + "binary_dice_loss"),
    # class weights from the whole batch's target frequencies: not per example
    LossSpec("multiclass_generalized_dice_loss", "_dice",
             "(predictions, targets, *, smooth=1.0, apply_softmax=True, ignore_background=False,"
             " reduction='mean')",
             _generalized_dice_ref, _build_generalized_dice, _bench_dice,
             _OPTAX + "multiclass_generalized_dice_loss", batch=False),
    # ranking
    LossSpec("ranking_softmax_loss", "_ranking",
             "(logits, labels, *, where=None, weights=None, reduce_fn=jax.numpy.mean,"
             " reduction=None)",
             _ranking_softmax_ref, _build_ranking_softmax, _bench_ranking,
             _OPTAX + "ranking_softmax_loss", batch_options={"reduction": "sum"}),
    LossSpec("sparsemax_loss", "_sparsemax", "(logits, labels, *, reduction='none')",
             _sparsemax_ref, _build_sparsemax, _bench_sparsemax, _OPTAX + "sparsemax_loss"),
    LossSpec("multiclass_sparsemax_loss", "_sparsemax", "(scores, labels, *, reduction='none')",
             _multiclass_sparsemax_ref, _build_multiclass_sparsemax, _bench_class,
             _OPTAX + "multiclass_sparsemax_loss"),
    LossSpec("kl_divergence_with_log_targets", "_divergence",
             "(log_predictions, log_targets, axis=-1, where=None, *, reduction='none')",
             _kl_log_targets_ref, _build_kl_log_targets, _bench_kl,
             _OPTAX + "kl_divergence_with_log_targets", _TORCH + "kl_div",
             batch_options={"reduction": "batchmean"}),
    LossSpec("generalized_kl_divergence", "_divergence",
             "(log_predictions, targets, axis=-1, where=None, *, reduction='none')",
             _generalized_kl_ref, _build_generalized_kl, _bench_kl,
             _OPTAX + "generalized_kl_divergence"),
    # sequences
    LossSpec("ctc_loss", "_ctc",
             "(logits, logit_paddings, labels, label_paddings, *, blank_id=0,"
             " log_epsilon=-100000.0, reduction='none', zero_infinity=False)",
             _ctc_ref, _build_ctc, _bench_ctc, _OPTAX + "ctc_loss", _TORCH + "ctc_loss",
             batch_options={"reduction": "sum"}),
    # (loss, logalpha_blank, logalpha_label): the checks take the loss; the tuple is
    # compared with optax.losses.ctc_loss_with_forward_probs in tests/test_ctc.py
    LossSpec("ctc_loss_with_forward_probs", "_ctc",
             "(logits, logit_paddings, labels, label_paddings, *, blank_id=0,"
             " log_epsilon=-100000.0)",
             _ctc_forward_probs_ref, _build_ctc_forward_probs, None, batch=False, output=0),
    # divergence
    LossSpec("jensen_shannon_divergence", "_divergence",
             "(log_predictions, log_targets, *, beta=0.5, axis=-1, where=None,"
             " reduction='none')",
             _jsd_ref, _build_jsd, _bench_jsd, None, None,
             batch_options={"beta": 0.3, "reduction": "batchmean"}),
    # preference
    LossSpec("dpo_loss", "_preference",
             "(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,"
             " reference_rejected_logps, *, beta=0.1, loss_type='sigmoid',"
             " label_smoothing=0.0, reduction='mean')",
             _dpo_ref, _build_dpo, _bench_dpo,
             batch_options={"beta": 0.2, "label_smoothing": 0.1}),
    LossSpec("simpo_loss", "_preference",
             "(chosen_logps, rejected_logps, *, beta=2.0, gamma=0.5, reduction='mean')",
             _simpo_ref, _build_simpo, _bench_pair_avg),
    LossSpec("orpo_odds_ratio_loss", "_preference",
             "(chosen_logps, rejected_logps, *, beta=0.1, reduction='mean')",
             _orpo_ref, _build_orpo, _bench_pair_avg),
    # PyTorch's margin and embedding losses
    LossSpec("margin_ranking_loss", "_margin", _PAIR, _margin_ranking_ref,
             _build_margin_ranking, _bench_pair_pm1, None, _TORCH + "margin_ranking_loss"),
    LossSpec("cosine_embedding_loss", "_margin", _PAIR, _cosine_embedding_ref,
             _build_cosine_embedding, _bench_embedding_pairs,
             None, _TORCH + "cosine_embedding_loss"),
    LossSpec("hinge_embedding_loss", "_margin",
             "(input, target, *, margin=1.0, reduction='none')",
             _hinge_embedding_ref, _build_hinge_embedding, _bench_distances_pm1,
             None, _TORCH + "hinge_embedding_loss"),
    LossSpec("soft_margin_loss", "_margin", "(input, target, *, reduction='none')",
             _soft_margin_ref, _build_soft_margin, _bench_pm1,
             None, _TORCH + "soft_margin_loss"),
    LossSpec("multilabel_soft_margin_loss", "_margin",
             "(input, target, *, weight=None, reduction='none')",
             _multilabel_soft_margin_ref, _build_multilabel_soft_margin, _bench_binary,
             None, _TORCH + "multilabel_soft_margin_loss"),
    LossSpec("multilabel_margin_loss", "_margin", "(input, target, *, reduction='none')",
             _multilabel_margin_ref, _build_multilabel_margin, _bench_multilabel_indices,
             None, _TORCH + "multilabel_margin_loss"),
    LossSpec("triplet_margin_with_distance_loss", "_margin",
             "(anchor, positive, negative, *, distance_function=None, margin=1.0, swap=False,"
             " reduction='none')",
             _triplet_distance_ref, _build_triplet_distance, _bench_triplet,
             None, _TORCH + "triplet_margin_with_distance_loss",
             batch_options={"swap": True}),
    # Keras's losses (predictions first; Keras's y_true is targets)
    LossSpec("mean_absolute_percentage_error", "_keras", _KERAS, _mape_ref,
             _build_mape, _bench_regression),
    LossSpec("mean_squared_logarithmic_error", "_keras", _KERAS, _msle_ref,
             _build_msle, _bench_positive_regression),
    LossSpec("categorical_hinge", "_keras", _KERAS, _categorical_hinge_ref,
             _build_categorical_hinge, _bench_one_hot),


    # bounding boxes (torchvision)
    LossSpec("generalized_box_iou_loss", "_boxes", _BOXES, _giou_ref, _box_builder(),
             _bench_boxes, None, "torchvision.ops.generalized_box_iou_loss"),
    LossSpec("distance_box_iou_loss", "_boxes", _BOXES, _diou_ref, _box_builder(),
             _bench_boxes, None, "torchvision.ops.distance_box_iou_loss"),
    LossSpec("complete_box_iou_loss", "_boxes", _BOXES, _ciou_ref,
             _box_builder(same_aspect=True), _bench_boxes,
             None, "torchvision.ops.complete_box_iou_loss"),
    LossSpec("fused_linear_log_probs", "_large_vocab",
             "(hidden, kernel, labels, *, bias=None, temperature=1.0, logit_softcap=None,"
             " return_entropy=False, chunk_size=None, axis_name=None)",
             # per-token outputs without a reduction: outside the generic data-parallel check
             _log_probs_ref, _build_log_probs, _bench_fused, batch=False),
    LossSpec("fused_linear_distillation_loss", "_large_vocab",
             "(student_hidden, student_kernel, teacher_hidden, teacher_kernel, *, labels=None,"
             " ignore_index=None, divergence='forward_kl', beta=0.5, temperature=1.0,"
             " student_bias=None, teacher_bias=None, reduction='mean', chunk_size=None,"
             " axis_name=None)",
             # tokens split across devices would need the data-parallel path of the CE
             _distill_ref, _build_distill, _bench_distill, batch=False),
)  # fmt: skip
"""Every public loss, one row each."""

BY_NAME: dict[str, LossSpec] = {row.name: row for row in REGISTRY}
