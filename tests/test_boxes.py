"""Generalized, distance and complete IoU losses (torchvision's definitions).

References: torchvision's formulas written out in float64 torch, line by line
from ``torchvision/ops/_utils.py`` (``_loss_inter_union``,
``_upcast_non_float``), ``giou_loss.py``, ``diou_loss.py``
(``_diou_iou_loss``) and ``ciou_loss.py``, with torch autograd for the
gradients. Where torchvision's complete IoU has a NaN gradient (a box of zero
height: ``atan(w / h)`` at ``h = 0``) or a NaN value (a point box), the
reference is the same formula with ``atan2(s w, s h)``, ``s`` the sign of
``h`` (equal to ``atan(w / h)`` for ``h != 0``; its derivative at ``h = 0`` is
the limit) and no aspect term for a
point box. Each group of checks is one jitted program.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _helpers import all_finite, close, tt

import jaxloss

NAMES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
REDUCTIONS = ("none", "mean", "sum")


def _random_boxes(rng, n):
    """``n`` valid boxes ``x1 < x2``, ``y1 < y2`` in a 10 x 10 field (many overlaps)."""
    xy = rng.uniform(0.0, 10.0, (n, 2))
    wh = rng.uniform(0.2, 6.0, (n, 2))
    return np.concatenate([xy, xy + wh], axis=-1)


RNG = np.random.default_rng(0)
B1, B2 = _random_boxes(RNG, 48), _random_boxes(RNG, 48)
B2[:8] = B1[:8] + RNG.uniform(-0.5, 0.5, (8, 4))  # close pairs: large overlaps
B2[:8, 2:] = np.maximum(B2[:8, 2:], B2[:8, :2] + 0.1)

# (boxes1, boxes2): degenerate pairs
DEGENERATE = np.array(
    [
        ([0, 0, 2, 2], [0, 0, 2, 2]),  # identical
        ([0, 0, 1, 1], [1, 0, 2, 1]),  # touching along an edge
        ([0, 0, 1, 1], [1, 1, 2, 2]),  # touching at a corner
        ([0, 0, 3, 3], [1, 1, 2, 2]),  # nested
        ([0, 0, 3, 3], [0, 0, 2, 2]),  # nested, sharing two edges
        ([0, 0, 1, 1], [3, 3, 4, 5]),  # disjoint
        ([0, 0, 0, 2], [0, 0, 1, 1]),  # zero width
        ([0, 0, 0, 2], [0, 0, 0, 2]),  # identical, zero width
        ([0, 0, 2, 0], [0, 0, 2, 1]),  # zero height
        ([0, 0, 2, 0], [0, 0, 2, 0]),  # identical, zero height
        ([1, 0, 3, 0], [0, 0, 1, 2]),  # zero height touching a box
        ([1, 1, 1, 1], [0, 0, 2, 2]),  # point inside a box
        ([1, 1, 1, 1], [1, 1, 1, 1]),  # the same point twice
        ([0, 0, 0, 0], [1, 2, 1, 2]),  # two points
        ([0, 0, 0, 0], [0, 0, 3, 0]),  # point at the end of a zero-height box
        ([0, 3, 1, 1], [0, 0, 2, 2]),  # inverted (y2 < y1): torchvision computes it as given
        ([2, 0, 1, 1], [0, 1, 1, 3]),  # inverted (x2 < x1)
    ],
    dtype=np.float64,
)
D1, D2 = DEGENERATE[:, 0], DEGENERATE[:, 1]
POINT_ROWS = np.all(D1[:, 2:] == D1[:, :2], axis=-1) | np.all(D2[:, 2:] == D2[:, :2], axis=-1)


# --------------------------------------------------------------------------
# torchvision's formulas in float64 torch
# --------------------------------------------------------------------------


def _t_inter_union(boxes1, boxes2):
    """torchvision/ops/_utils.py ``_loss_inter_union``."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    return intsctk, unionk


def _t_giou(boxes1, boxes2, eps):
    """torchvision/ops/giou_loss.py ``generalized_box_iou_loss`` (reduction 'none')."""
    intsctk, unionk = _t_inter_union(boxes1, boxes2)
    iouk = intsctk / (unionk + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))
    return 1 - miouk


def _t_diou_iou(boxes1, boxes2, eps=1e-7):
    """torchvision/ops/diou_loss.py ``_diou_iou_loss`` (its default ``eps=1e-7``)."""
    intsct, union = _t_inter_union(boxes1, boxes2)
    iou = intsct / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
    x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    loss = 1 - iou + (centers_distance_squared / diagonal_distance_squared)
    return loss, iou


def _t_diou(boxes1, boxes2, eps):
    return _t_diou_iou(boxes1, boxes2, eps)[0]


def _t_ciou(boxes1, boxes2, eps, limit=False):
    """torchvision/ops/ciou_loss.py ``complete_box_iou_loss``; ``limit=True``:
    ``atan2(w, h)`` for ``atan(w / h)`` and no aspect term for point boxes.

    torchvision calls ``_diou_iou_loss(boxes1, boxes2)`` without ``eps``: the
    IoU and the distance term keep its default 1e-7, and ``eps`` enters only
    ``alpha``."""
    diou_loss, iou = _t_diou_iou(boxes1, boxes2)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    w_pred, h_pred = x2 - x1, y2 - y1
    w_gt, h_gt = x2g - x1g, y2g - y1g
    if limit:
        point = ((w_pred == 0) & (h_pred == 0)) | ((w_gt == 0) & (h_gt == 0))
        one = torch.ones_like(w_pred)
        # atan(w / h) = atan2(s w, s h), s the sign of h (inverted boxes have h < 0)
        s_gt, s_pred = torch.where(h_gt < 0, -one, one), torch.where(h_pred < 0, -one, one)
        sides = (s_gt * w_gt, s_gt * h_gt, s_pred * w_pred, s_pred * h_pred)
        safe = [torch.where(point, one, s) for s in sides]
        diff = torch.atan2(safe[0], safe[1]) - torch.atan2(safe[2], safe[3])
        v = torch.where(point, 0 * one, (4 / (torch.pi**2)) * torch.pow(diff, 2))
    else:
        diff = torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)
        v = (4 / (torch.pi**2)) * torch.pow(diff, 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou_loss + alpha * v


TORCH = {
    "generalized_box_iou_loss": _t_giou,
    "distance_box_iou_loss": _t_diou,
    "complete_box_iou_loss": _t_ciou,
}


def _t_reduce(loss, reduction):
    """torchvision's reductions (mean of no boxes: ``0.0 * loss.sum()``)."""
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss.sum() if reduction == "sum" else loss


def _torch_value_and_grads(fn, b1, b2, reduction="none", **kw):
    t1, t2 = tt(b1, grad=True), tt(b2, grad=True)
    a1, a2 = torch.broadcast_tensors(t1, t2)
    out = _t_reduce(fn(a1, a2, **kw), reduction)
    g1, g2 = torch.autograd.grad(out.sum(), (t1, t2), allow_unused=True)
    return out.detach().numpy(), g1.numpy(), g2.numpy()


def _ours_value_and_grads(calls, b1, b2):
    """``[(value, grad1, grad2)]`` of every ``f(b1, b2)`` in ``calls``, one jitted program."""

    def run(a1, a2):
        out = []
        for f in calls:
            g = jax.grad(lambda x, y, f=f: jnp.sum(f(x, y)), argnums=(0, 1))(a1, a2)
            out.append((f(a1, a2), *g))
        return out

    return jax.jit(run)(jnp.asarray(b1), jnp.asarray(b2))


# --------------------------------------------------------------------------
# Parity with torchvision
# --------------------------------------------------------------------------


def test_random_boxes_match_torchvision_every_reduction():
    keys = [(n, r, 1e-7) for n in NAMES for r in REDUCTIONS] + [(n, "none", 0.3) for n in NAMES]
    calls = [
        lambda a, b, n=n, r=r, e=e: getattr(jaxloss, n)(a, b, eps=e, reduction=r)
        for n, r, e in keys
    ]
    ours = _ours_value_and_grads(calls, B1, B2)
    for (n, r, e), got in zip(keys, ours, strict=True):
        want = _torch_value_and_grads(TORCH[n], B1, B2, r, eps=e)
        for g, w, what in zip(got, want, ("value", "grad boxes1", "grad boxes2"), strict=True):
            close(g, w, rtol=1e-12, atol=1e-13, err_msg=f"{n} {r} eps={e} {what}")
    # the pairs are not a trivial regime: a range of IoUs and aspect terms
    _, iou = _t_diou_iou(tt(B1), tt(B2), 1e-7)
    assert (iou == 0).sum() > 5 and (iou > 0.3).sum() > 5


@pytest.mark.parametrize("jit", [False, True])
def test_complete_eps_enters_only_alpha_as_torchvision(jit):
    """torchvision/ops/ciou_loss.py calls ``_diou_iou_loss(boxes1, boxes2)``
    (torchvision/ops/diou_loss.py) without ``eps``: the IoU and the distance
    term use that function's default 1e-7 whatever ``eps`` is, and ``eps``
    enters only ``alpha = v / (1 - iou + v + eps)``. Values and gradients match
    that float64 transcription (:func:`_t_ciou`) at every ``eps``."""
    b1, b2 = B1[:16], B2[:16]
    for eps in (0.0, 1e-3, 0.3, 1.0):

        def run(a1, a2, eps=eps):
            f = lambda x, y: jaxloss.complete_box_iou_loss(x, y, eps=eps)
            return f(a1, a2), *jax.grad(lambda x, y: jnp.sum(f(x, y)), argnums=(0, 1))(a1, a2)

        got = (jax.jit(run) if jit else run)(jnp.asarray(b1), jnp.asarray(b2))
        want = _torch_value_and_grads(_t_ciou, b1, b2, eps=eps)
        for g, w, what in zip(got, want, ("value", "grad boxes1", "grad boxes2"), strict=True):
            close(g, w, rtol=1e-12, atol=1e-13, err_msg=f"eps={eps} {what}")
    # the distance term with eps passed through would differ: the check discriminates
    t1, t2 = tt(b1), tt(b2)
    assert (_t_diou(t1, t2, 0.3) - _t_diou(t1, t2, 1e-7)).abs().max() > 1e-3


def test_broadcast_leading_dims_match_torchvision():
    b1, b2 = B1[:3, None, :], B2[:5]  # [3, 1, 4] with [5, 4]: 3 x 5 pairs
    calls = [getattr(jaxloss, n) for n in NAMES]
    ours = _ours_value_and_grads(calls, b1, b2)
    for n, got in zip(NAMES, ours, strict=True):
        assert got[0].shape == (3, 5)
        want = _torch_value_and_grads(TORCH[n], b1, b2, eps=1e-7)
        assert got[1].shape == b1.shape and got[2].shape == b2.shape
        for g, w in zip(got, want, strict=True):
            close(g, w, err_msg=n)


def test_degenerate_boxes_finite_and_match_torchvision():
    calls = [getattr(jaxloss, n) for n in NAMES]
    ours = _ours_value_and_grads(calls, D1, D2)
    assert all_finite(ours)
    for n, got in zip(NAMES[:2], ours[:2], strict=True):  # torchvision finite throughout
        want = _torch_value_and_grads(TORCH[n], D1, D2, eps=1e-7)
        assert np.isfinite(np.stack(want[1:])).all()
        for g, w, what in zip(got, want, ("value", "grad boxes1", "grad boxes2"), strict=True):
            close(g, w, err_msg=f"{n} {what}")
    got = ours[2]
    tv = _torch_value_and_grads(_t_ciou, D1, D2, eps=1e-7)
    lim = _torch_value_and_grads(lambda a, b, eps: _t_ciou(a, b, eps, limit=True), D1, D2, eps=1e-7)
    # torchvision: NaN value exactly at the point boxes, NaN gradients there and at h = 0
    np.testing.assert_array_equal(np.isnan(tv[0]), POINT_ROWS)
    assert np.isnan(tv[1]).any(axis=-1).sum() > POINT_ROWS.sum()
    for g, t, w, what in zip(got, tv, lim, ("value", "grad boxes1", "grad boxes2"), strict=True):
        finite = np.isfinite(t)
        close(w[finite], t[finite], err_msg=f"the limit reference is torchvision's: {what}")
        close(g, w, err_msg=f"complete_box_iou_loss {what}")
    # a point box: no aspect term, the distance IoU loss
    close(got[0][POINT_ROWS], ours[1][0][POINT_ROWS])


def test_zero_height_gradient_is_the_limit():
    """At ``h = 0`` the angle's derivative is the one-sided limit ``h -> 0+``."""
    b2 = np.array([0.0, 0.0, 2.0, 1.0])
    f = lambda y2: jaxloss.complete_box_iou_loss(jnp.stack([0.0, 0.5, 2.0, y2]), b2)
    # the overlap is a kink at h = 0 too; keep the zero-height box outside the other
    b2o = np.array([3.0, 0.0, 5.0, 1.0])
    g = lambda y2: jaxloss.complete_box_iou_loss(jnp.stack([0.0, 0.5, 2.0, y2]), b2o)
    run = jax.jit(lambda y: [jax.grad(g)(y), jax.grad(g)(y + 1e-9), jax.grad(f)(y)])
    at0, near0, inner = run(jnp.float64(0.5))
    assert np.isfinite(float(inner))
    close(at0, near0, rtol=1e-6, atol=1e-8)


def test_eps_zero_has_no_nan():
    calls = [lambda a, b, n=n: getattr(jaxloss, n)(a, b, eps=0.0) for n in NAMES]
    ours = _ours_value_and_grads(calls, D1, D2)
    assert all_finite(ours)
    # identical boxes: the generalized and distance IoU losses are 0; the complete
    # one keeps torchvision's fixed 1e-7 in its IoU (1 - IoU = 1e-7 / (4 + 1e-7)),
    # so alpha = 0 / (1 - IoU) = 0 and there is no 0 / 0; the values agree throughout
    close(ours[0][0][0], 0.0)
    close(ours[1][0][0], 0.0)
    close(ours[2][0][0], 1e-7 / (4 + 1e-7), rtol=0.0, atol=1e-15)
    rows = slice(0, 6)
    for n, got in zip(NAMES, ours, strict=True):
        want = _torch_value_and_grads(TORCH[n], D1[rows], D2[rows], eps=0.0)
        close(got[0][rows], want[0], err_msg=n)


# --------------------------------------------------------------------------
# Transforms, dtypes, hyperparameters
# --------------------------------------------------------------------------


def test_traced_eps_jit_vmap_and_grad():
    b1, b2 = jnp.asarray(B1[:6]), jnp.asarray(B2[:6])

    def run(e):
        out = []
        for n in NAMES:
            f = lambda e, n=n: getattr(jaxloss, n)(b1, b2, eps=e, reduction="sum")
            out.append(
                (f(e), getattr(jaxloss, n)(b1, b2, eps=0.25, reduction="sum"), jax.grad(f)(e))
            )
            out.append(jax.vmap(f)(jnp.stack([e, 2 * e])))
        return out

    res = jax.jit(run)(jnp.float64(0.25))
    for i, n in enumerate(NAMES):
        (traced, fixed, d_eps), pair = res[2 * i], res[2 * i + 1]
        close(traced, fixed, err_msg=n)
        close(pair[0], fixed, err_msg=n)
        if n == "complete_box_iou_loss":  # eps enters only alpha, a constant (torchvision)
            assert float(d_eps) == 0.0, n
            continue
        f = lambda e, n=n: float(getattr(jaxloss, n)(b1, b2, eps=e, reduction="sum"))
        close(d_eps, (f(0.25 + 1e-6) - f(0.25 - 1e-6)) / 2e-6, rtol=1e-6, err_msg=n)


def test_vmap_jvp_hessian():
    b1, b2 = jnp.asarray(np.concatenate([B1[:4], D1])), jnp.asarray(np.concatenate([B2[:4], D2]))
    t1, t2 = (jnp.asarray(np.random.default_rng(s).normal(size=b1.shape)) for s in (1, 2))

    def run(a1, a2):
        out = []
        for n in NAMES:
            f = getattr(jaxloss, n)
            s = lambda x, y, f=f: jnp.sum(f(x, y))
            g1, g2 = jax.grad(s, argnums=(0, 1))(a1, a2)
            _, tan = jax.jvp(f, (a1, a2), (t1, t2))
            hess = jax.hessian(s)(a1, a2)
            out.append((f(a1, a2), jax.vmap(f)(a1, a2), g1, g2, tan, hess))
        return out

    for n, (v, vv, g1, g2, tan, hess) in zip(NAMES, jax.jit(run)(b1, b2), strict=True):
        close(vv, v, err_msg=n)
        close(tan, jnp.sum(g1 * t1, -1) + jnp.sum(g2 * t2, -1), err_msg=n)
        assert all_finite(hess), n


def test_hvp_matches_torch_double_backward():
    b1, b2 = B1[:16], B2[:16]
    direction = np.random.default_rng(3).normal(size=b1.shape)

    def run(a1, a2):
        out = []
        for n in NAMES:
            s = lambda x, n=n: jnp.sum(getattr(jaxloss, n)(x, a2))
            out.append(jax.jvp(jax.grad(s), (a1,), (jnp.asarray(direction),))[1])
        return out

    for n, got in zip(NAMES, jax.jit(run)(jnp.asarray(b1), jnp.asarray(b2)), strict=True):
        t1, t2 = tt(b1, grad=True), tt(b2)
        (g,) = torch.autograd.grad(TORCH[n](t1, t2, 1e-7).sum(), t1, create_graph=True)
        (h,) = torch.autograd.grad((g * tt(direction)).sum(), t1)
        close(got, h.numpy(), rtol=1e-10, atol=1e-11, err_msg=n)


def test_low_precision_float32_and_integer_boxes():
    b1 = (B1[:8] * 4).round() / 4  # exact in bf16
    b2 = (B2[:8] * 4).round() / 4

    def run(a1, a2, i1, i2):
        out = []
        for n in NAMES:
            f = getattr(jaxloss, n)
            g = jax.grad(lambda x, f=f: jnp.sum(f(x, a2)))(a1)
            out.append((f(a1, a2), g, f(i1, i2), f(a1.astype(jnp.float32), a2)))
        return out

    args = (jnp.asarray(b1, jnp.bfloat16), jnp.asarray(b2, jnp.bfloat16))
    ints = (jnp.asarray(np.round(B1[:8]), jnp.int32), jnp.asarray(np.round(B2[:8]), jnp.int32))
    for n, (v, g, vi, mixed) in zip(NAMES, jax.jit(run)(*args, *ints), strict=True):
        assert v.dtype == jnp.float32 and g.dtype == jnp.bfloat16 and vi.dtype == jnp.float32
        assert mixed.dtype == jnp.float32
        want = _torch_value_and_grads(TORCH[n], b1, b2, eps=1e-7)
        close(v, want[0], rtol=2e-6, atol=2e-6, err_msg=n)
        close(g.astype(jnp.float64), want[1], rtol=2e-2, atol=2e-2, err_msg=n)
        wi = _torch_value_and_grads(TORCH[n], np.round(B1[:8]), np.round(B2[:8]), eps=1e-7)
        close(vi, wi[0], rtol=2e-6, atol=2e-6, err_msg=n)


def test_float32_and_huge_coordinates():
    """float32 agrees with float64; boxes scaled by 2**80 (squared areas overflow
    float32) give the same loss and scaled gradients."""
    scale = 2.0**80

    def run(a1, a2):
        out = []
        for n in NAMES:
            f = lambda x, y, n=n: jnp.sum(getattr(jaxloss, n)(x, y, eps=0.0))
            out.append(
                (
                    f(a1, a2),
                    jax.grad(f)(a1, a2),
                    f(a1 * scale, a2 * scale),
                    jax.grad(f)(a1 * scale, a2 * scale),
                )
            )
        return out

    a1, a2 = jnp.asarray(B1, jnp.float32), jnp.asarray(B2, jnp.float32)
    for n, (v, g, vs, gs) in zip(NAMES, jax.jit(run)(a1, a2), strict=True):
        want = _torch_value_and_grads(TORCH[n], B1, B2, "sum", eps=0.0)
        close(v, want[0], rtol=1e-5, atol=1e-5, err_msg=n)
        close(g, want[1], rtol=1e-3, atol=1e-4, err_msg=n)
        assert np.isfinite(float(vs)) and all_finite(gs), n
        close(vs, v, rtol=1e-6, err_msg=n)
        close(gs * scale, g, rtol=1e-5, atol=1e-6, err_msg=n)


def test_empty_batch_symmetry_identical_boxes():
    e = jnp.zeros((0, 4))

    def run(a1, a2):
        out = []
        for n in NAMES:
            f = getattr(jaxloss, n)
            reduced = [
                jax.value_and_grad(lambda x, r=r: f(x, e, reduction=r))(e) for r in REDUCTIONS[1:]
            ]
            out.append((f(e, e), reduced, f(a1, a2), f(a2, a1), f(a1, a1, eps=0.0)))
        return out

    for n, (none, reduced, v12, v21, same) in zip(NAMES, jax.jit(run)(B1, B2), strict=True):
        assert none.shape == (0,), n
        for v, g in reduced:
            assert float(v) == 0.0 and g.shape == (0, 4), n
        close(v12, v21, err_msg=n)  # symmetric
        # identical boxes give 0; the complete IoU keeps torchvision's fixed 1e-7
        # in its IoU whatever eps is: 1 - IoU = 1e-7 / (area + 1e-7)
        area = (B1[:, 2] - B1[:, 0]) * (B1[:, 3] - B1[:, 1])
        want = 1e-7 / (area + 1e-7) if n == "complete_box_iou_loss" else 0.0
        close(same, want, rtol=1e-9, atol=1e-15, err_msg=n)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    f = getattr(jaxloss, name)
    box = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\].*\(3, 3\)"):
        f(jnp.ones((3, 3)), box)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\].*\(\)"):
        f(box, jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"must broadcast.*\(3, 4\).*\(2, 4\)"):
        f(box, jnp.ones((2, 4)))
    with pytest.raises(TypeError, match=r"boxes2.*bool"):
        f(box, jnp.ones((3, 4), bool))
    with pytest.raises(TypeError, match="boxes1 must be numeric"):
        f("abcd", box)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        f(box, box, eps=-1e-7)
    with pytest.raises(ValueError, match="eps must not be NaN"):
        f(box, box, eps=math.nan)
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(box, box, reduction="batchmean")
    with pytest.raises(TypeError):
        f(box, box, 1e-7)  # eps is keyword-only
    with pytest.raises(ValueError, match=r"eps must be a scalar"):
        jax.jit(lambda e: f(box, box, eps=e))(jnp.ones(2))
