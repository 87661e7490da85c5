"""The core benchmark cases, the vocabulary-scaling sweep and the targets.

Every case compares, on the same inputs and with ``reduction="mean"`` (a
scalar, differentiated with respect to the logits):

- ``jaxloss``: the library function;
- ``optax``: optax's function, then ``jnp.mean``;
- ``optax (composed)``: where the loss needs options optax lacks, the way an
  optax user writes it (``optax.smooth_labels`` on a one-hot,
  ``optax.softmax_cross_entropy``, the z-loss added, a masked mean for
  ``ignore_index``);
- ``naive``: the textbook formula under ``jax.grad`` (``log_softmax`` + gather;
  two ``log_sigmoid``);
- ``torch``: ``torch.nn.functional`` forward + backward on the CPU, as a
  cross-framework reference.

``bytes_fwd`` / ``bytes_vag`` are the bytes any implementation must move: each
``[N, C]`` input read once for the forward; for value-and-grad the logits are
read twice (the gradient needs the finished logsumexp) and the gradient written
once, i.e. ``3 * N * C * itemsize`` for integer labels.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxloss
from benchmarks import _harness as h

# --------------------------------------------------------------------------
# Case description
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    title: str
    shape: tuple[int, int]
    dtype: str
    bytes_fwd: int
    bytes_vag: int
    # Makes the inputs and returns {peer name: thunk building the Peer}.
    build: Callable[[], dict[str, Callable[[], h.Peer]]]
    reference: str = "optax"  # the peer the headline ratio is taken against
    requires: tuple[str, ...] = ()  # jaxloss names the case needs
    options: str = ""


FULL_SHAPE = (8192, 32768)
QUICK_SHAPE = (64, 512)
# The sigmoid focal loss compiles to ~9-10 GiB of scratch at FULL_SHAPE (jaxloss
# and optax alike on XLA:CPU); a quarter of the rows keeps the run inside memory.
FULL_FOCAL_SHAPE = (2048, 32768)
IGNORE_INDEX = -100
SMOOTHING = 0.1
Z_LOSS = 1e-4
FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25


def _torch():
    import torch
    import torch.nn.functional as F

    return torch, F


def _labels(rng, n, c, ignore_frac=0.0):
    y = rng.integers(0, c, size=(n,), dtype=np.int32)
    if ignore_frac:
        y[rng.random(n) < ignore_frac] = IGNORE_INDEX
    return y


def _logits(rng, shape, dtype):
    x = rng.standard_normal(shape, dtype=np.float32)
    xj = jnp.asarray(x)
    if dtype != "float32":
        xj = xj.astype(dtype)
    del x
    return h.block(xj)


# --------------------------------------------------------------------------
# Softmax cross-entropy, integer labels
# --------------------------------------------------------------------------


def _naive_ce_int(x, y):
    logp = jax.nn.log_softmax(x, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def _ce_int_build(shape, dtype, seed=0):
    def build():
        rng = np.random.default_rng(seed)
        x = _logits(rng, shape, dtype)
        y = jnp.asarray(_labels(rng, *shape))
        _, F = _torch()
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, y: jaxloss.softmax_cross_entropy_with_integer_labels(
                    x, y, reduction="mean"
                ),
                (x, y),
            ),
            "optax": lambda: h.jax_peer(
                "optax",
                lambda x, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)),
                (x, y),
            ),
            "naive": lambda: h.jax_peer("naive", _naive_ce_int, (x, y)),
            "torch": lambda: h.torch_peer(
                "torch", F.cross_entropy, h.to_torch(x), (h.to_torch(y).long(),)
            ),
        }

    return build


# --------------------------------------------------------------------------
# Options: ignore_index + label_smoothing + z_loss
# --------------------------------------------------------------------------


def _masked_mean(loss, valid):
    count = jnp.sum(valid)
    return jnp.sum(jnp.where(valid, loss, 0.0)) / jnp.maximum(count, 1).astype(loss.dtype)


def _composed_optax_options(x, y):
    valid = y != IGNORE_INDEX
    safe = jnp.where(valid, y, 0)
    targets = optax.smooth_labels(jax.nn.one_hot(safe, x.shape[-1], dtype=x.dtype), SMOOTHING)
    loss = optax.softmax_cross_entropy(x, targets)
    lse = jax.nn.logsumexp(x, axis=-1)
    loss = loss + Z_LOSS * lse**2
    return _masked_mean(loss, valid)


def _naive_options(x, y):
    valid = y != IGNORE_INDEX
    safe = jnp.where(valid, y, 0)
    logp = jax.nn.log_softmax(x, axis=-1)
    nll = -jnp.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]
    smooth = -jnp.mean(logp, axis=-1)
    lse = jax.nn.logsumexp(x, axis=-1)
    loss = (1.0 - SMOOTHING) * nll + SMOOTHING * smooth + Z_LOSS * lse**2
    return _masked_mean(loss, valid)


def _torch_options(x, y):
    torch, F = _torch()
    ce = F.cross_entropy(x, y, ignore_index=IGNORE_INDEX, label_smoothing=SMOOTHING)
    valid = y != IGNORE_INDEX
    lse = torch.logsumexp(x, dim=-1)
    return ce + Z_LOSS * (lse.square() * valid).sum() / valid.sum().clamp(min=1)


def _options_build(shape, seed=1):
    def build():
        rng = np.random.default_rng(seed)
        x = _logits(rng, shape, "float32")
        y = jnp.asarray(_labels(rng, *shape, ignore_frac=0.05))
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, y: jaxloss.softmax_cross_entropy_with_integer_labels(
                    x,
                    y,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=SMOOTHING,
                    z_loss=Z_LOSS,
                    reduction="mean",
                ),
                (x, y),
            ),
            "optax (composed)": lambda: h.jax_peer(
                "optax (composed)", _composed_optax_options, (x, y)
            ),
            "naive": lambda: h.jax_peer("naive", _naive_options, (x, y)),
            "torch": lambda: h.torch_peer(
                "torch", _torch_options, h.to_torch(x), (h.to_torch(y).long(),)
            ),
        }

    return build


# --------------------------------------------------------------------------
# Probability labels
# --------------------------------------------------------------------------


def _prob_build(shape, seed=2):
    def build():
        rng = np.random.default_rng(seed)
        x = _logits(rng, shape, "float32")
        t = rng.random(shape, dtype=np.float32)
        t /= t.sum(axis=-1, keepdims=True)
        tj = h.block(jnp.asarray(t))
        torch, F = _torch()
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, t: jaxloss.softmax_cross_entropy(x, t, reduction="mean"),
                (x, tj),
            ),
            "optax": lambda: h.jax_peer(
                "optax", lambda x, t: jnp.mean(optax.softmax_cross_entropy(x, t)), (x, tj)
            ),
            "naive": lambda: h.jax_peer(
                "naive",
                lambda x, t: -jnp.mean(jnp.sum(t * jax.nn.log_softmax(x, axis=-1), axis=-1)),
                (x, tj),
            ),
            "torch": lambda: h.torch_peer(
                "torch", F.cross_entropy, h.to_torch(x), (torch.from_numpy(t),)
            ),
        }

    return build


# --------------------------------------------------------------------------
# Sigmoid binary cross-entropy and focal losses
# --------------------------------------------------------------------------


def _naive_bce(x, y):
    # -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], log(1 - sigmoid(x)) = log_sigmoid(-x)
    return -jnp.mean(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))


def _naive_sigmoid_focal(x, y):
    p = jax.nn.sigmoid(x)
    ce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    p_t = p * y + (1.0 - p) * (1.0 - y)
    alpha_t = FOCAL_ALPHA * y + (1.0 - FOCAL_ALPHA) * (1.0 - y)
    return jnp.mean(alpha_t * ce * (1.0 - p_t) ** FOCAL_GAMMA)


def _torch_sigmoid_focal(x, y):
    # torchvision.ops.sigmoid_focal_loss
    torch, F = _torch()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean()


def _binary_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    x = _logits(rng, shape, "float32")
    y = (rng.random(shape, dtype=np.float32) < 0.01).astype(np.float32)  # 1% positives
    return x, y, h.block(jnp.asarray(y))


def _bce_build(shape, seed=3):
    def build():
        x, y, yj = _binary_inputs(shape, seed)
        torch, F = _torch()
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, y: jaxloss.sigmoid_binary_cross_entropy(x, y, reduction="mean"),
                (x, yj),
            ),
            "optax": lambda: h.jax_peer(
                "optax", lambda x, y: jnp.mean(optax.sigmoid_binary_cross_entropy(x, y)), (x, yj)
            ),
            "naive": lambda: h.jax_peer("naive", _naive_bce, (x, yj)),
            "torch": lambda: h.torch_peer(
                "torch", F.binary_cross_entropy_with_logits, h.to_torch(x), (torch.from_numpy(y),)
            ),
        }

    return build


def _sigmoid_focal_build(shape, seed=4):
    def build():
        x, y, yj = _binary_inputs(shape, seed)
        torch, _ = _torch()
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, y: jaxloss.sigmoid_focal_loss(
                    x, y, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="mean"
                ),
                (x, yj),
            ),
            "optax": lambda: h.jax_peer(
                "optax",
                lambda x, y: jnp.mean(
                    optax.sigmoid_focal_loss(x, y, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA)
                ),
                (x, yj),
            ),
            "naive": lambda: h.jax_peer("naive", _naive_sigmoid_focal, (x, yj)),
            "torch": lambda: h.torch_peer(
                "torch", _torch_sigmoid_focal, h.to_torch(x), (torch.from_numpy(y),)
            ),
        }

    return build


def _naive_softmax_focal(x, y):
    logp = jax.nn.log_softmax(x, axis=-1)
    logp_y = jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return -jnp.mean((1.0 - jnp.exp(logp_y)) ** FOCAL_GAMMA * logp_y)


def _torch_softmax_focal(x, y):
    _, F = _torch()
    logp_y = F.log_softmax(x, dim=-1).gather(-1, y[:, None])[:, 0]
    return -((1 - logp_y.exp()) ** FOCAL_GAMMA * logp_y).mean()


def _softmax_focal_build(shape, seed=5):
    def build():
        rng = np.random.default_rng(seed)
        x = _logits(rng, shape, "float32")
        y = jnp.asarray(_labels(rng, *shape))
        return {
            "jaxloss": lambda: h.jax_peer(
                "jaxloss",
                lambda x, y: jaxloss.softmax_focal_loss(x, y, gamma=FOCAL_GAMMA, reduction="mean"),
                (x, y),
            ),
            "naive": lambda: h.jax_peer("naive", _naive_softmax_focal, (x, y)),
            "torch": lambda: h.torch_peer(
                "torch", _torch_softmax_focal, h.to_torch(x), (h.to_torch(y).long(),)
            ),
        }

    return build


# --------------------------------------------------------------------------
# The case list
# --------------------------------------------------------------------------


def core_cases(quick: bool) -> list[Case]:
    n, c = QUICK_SHAPE if quick else FULL_SHAPE
    nc = n * c
    fn, fc = QUICK_SHAPE if quick else FULL_FOCAL_SHAPE
    return [
        Case("ce_int_f32", "softmax CE, integer labels, f32", (n, c), "float32",
             4 * nc, 3 * 4 * nc, _ce_int_build((n, c), "float32")),
        Case("ce_int_bf16", "softmax CE, integer labels, bf16", (n, c), "bfloat16",
             2 * nc, 3 * 2 * nc, _ce_int_build((n, c), "bfloat16")),
        Case("ce_int_options", "softmax CE, ignore_index + label_smoothing + z_loss, f32", (n, c),
             "float32", 4 * nc, 3 * 4 * nc, _options_build((n, c)), reference="optax (composed)",
             options=f"ignore_index={IGNORE_INDEX} (5% of rows), label_smoothing={SMOOTHING}, "
             f"z_loss={Z_LOSS}"),
        # probabilities: logits and labels read in each of the two passes, gradient written
        Case("ce_prob_f32", "softmax CE, probability labels, f32", (n, c), "float32",
             2 * 4 * nc, 5 * 4 * nc, _prob_build((n, c))),
        # elementwise: logits and labels read, gradient written, in one pass
        Case("bce_f32", "sigmoid BCE, 1% positives, f32", (n, c), "float32",
             2 * 4 * nc, 3 * 4 * nc, _bce_build((n, c))),
        Case("focal_sigmoid_f32", "sigmoid focal loss, 1% positives, f32", (fn, fc), "float32",
             2 * 4 * fn * fc, 3 * 4 * fn * fc, _sigmoid_focal_build((fn, fc)),
             requires=("sigmoid_focal_loss",),
             options=f"alpha={FOCAL_ALPHA}, gamma={FOCAL_GAMMA}"),
        Case("focal_softmax_f32", "softmax focal loss, integer labels, f32", (n, c), "float32",
             4 * nc, 3 * 4 * nc, _softmax_focal_build((n, c)), reference="naive",
             requires=("softmax_focal_loss",), options=f"gamma={FOCAL_GAMMA}"),
    ]  # fmt: skip


CORE_CASE_NAMES = tuple(c.name for c in core_cases(quick=True))
SCALING = "scaling_vocab"


# --------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip().splitlines()[-1][:500]


def run_case(case: Case, *, repeats: int, warmup: int, stream_gbps: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "title": case.title,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "options": case.options,
        "reference": case.reference,
        "bytes_fwd": case.bytes_fwd,
        "bytes_vag": case.bytes_vag,
        "repeats": repeats,
        "warmup": warmup,
        "run_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "stream_GBps": stream_gbps,
    }
    missing = [name for name in case.requires if not hasattr(jaxloss, name)]
    if missing:
        result.update(status="skipped", reason=f"not run: jaxloss.{missing[0]} missing")
        return result
    t0 = time.perf_counter()
    try:
        thunks = case.build()
    except Exception as exc:
        result.update(status="failed", reason=f"inputs failed: {_error(exc)}")
        return result
    peers: list[h.Peer] = []
    failed: dict[str, str] = {}
    for name, thunk in thunks.items():
        try:
            peers.append(thunk())
        except Exception as exc:
            failed[name] = _error(exc)
    floors = h.floor_peers(case.shape, case.dtype) if peers else []
    timings = h.run_peers([*peers, *floors], repeats, warmup) if peers else {"fwd": {}, "vag": {}}
    # the floors are timed in the same interleaved rounds; one pass is both modes
    result["floors"] = {f.name: timings["vag"][f.name].to_json() for f in floors}
    out: dict[str, Any] = {}
    for p in peers:
        fwd, vag = timings["fwd"][p.name], timings["vag"][p.name]
        bw_fwd = case.bytes_fwd / fwd.median / 1e9
        bw_vag = case.bytes_vag / vag.median / 1e9
        out[p.name] = {
            "status": "ok",
            "framework": p.framework,
            "fwd": fwd.to_json(),
            "vag": vag.to_json(),
            "compile_fwd_s": p.compile_fwd_s,
            "compile_vag_s": p.compile_vag_s,
            "scratch_fwd_bytes": p.scratch_fwd_bytes,
            "scratch_vag_bytes": p.scratch_vag_bytes,
            "eff_GBps_fwd": bw_fwd,
            "eff_GBps_vag": bw_vag,
            "bw_fraction_fwd": bw_fwd / stream_gbps,
            "bw_fraction_vag": bw_vag / stream_gbps,
            **p.extra,
        }
    for name, err in failed.items():
        out[name] = {"status": "failed", "error": err}
    result["peers"] = out
    result["ratios"] = {
        mode: h.ratios({p.name: timings[mode][p.name].median for p in peers})
        for mode in ("fwd", "vag")
    }
    result["status"] = "ok" if "jaxloss" in out and out["jaxloss"]["status"] == "ok" else "failed"
    if result["status"] == "failed":
        result["reason"] = f"jaxloss peer failed: {failed.get('jaxloss', 'not built')}"
    result["wall_s"] = time.perf_counter() - t0
    del thunks, peers, timings
    h.free_memory()
    return result


# --------------------------------------------------------------------------
# Scaling with the vocabulary size
# --------------------------------------------------------------------------


def scaling_config(quick: bool) -> list[tuple[int, list[int]]]:
    """``(N, [V, ...])`` sweeps. N=8192 stops at V=65536: at 262144 optax's
    value_and_grad needs more than this machine's 24 GiB."""
    if quick:
        return [(64, [256, 1024, 4096])]
    vocab = [1024, 4096, 16384, 65536, 262144]
    return [(1024, vocab), (8192, vocab[:-1])]


def _scaling_point(n: int, v: int, repeats: int, warmup: int) -> dict[str, Any]:
    rng = np.random.default_rng(10 + v)
    x = _logits(rng, (n, v), "float32")
    y = jnp.asarray(_labels(rng, n, v))
    peers = [
        h.jax_peer(
            "jaxloss",
            lambda x, y: jaxloss.softmax_cross_entropy_with_integer_labels(x, y, reduction="mean"),
            (x, y),
            forward=False,
        ),
        h.jax_peer(
            "optax",
            lambda x, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)),
            (x, y),
            forward=False,
        ),
        *h.floor_peers((n, v), "float32"),
    ]
    timing = h.interleaved(peers, "vag", repeats, warmup)
    point = {
        p.name: {"vag": timing[p.name].to_json(), "vag_scratch_bytes": p.scratch_vag_bytes,
                 "compile_vag_s": p.compile_vag_s}
        for p in peers
    }  # fmt: skip
    del x, y, peers, timing
    h.free_memory()
    return point


def run_scaling(quick: bool, *, repeats: int, warmup: int) -> dict[str, Any]:
    """Softmax CE (integer labels, f32) at fixed N over V: jaxloss vs optax,
    value-and-grad time and scratch bytes, with the floors of each shape (one
    exp pass, one read-and-write pass) timed beside them."""
    t0 = time.perf_counter()
    sweeps = []
    for n, vocab in scaling_config(quick):
        points = [_scaling_point(n, v, repeats, warmup) for v in vocab]
        sweeps.append({
            "N": n,
            "V": vocab,
            "run_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "peers": {name: {key: [pt[name][key] for pt in points] for key in points[0][name]}
                      for name in points[0]},
        })  # fmt: skip
    return {
        "status": "ok",
        "title": "softmax CE (integer labels, f32) value_and_grad against the vocabulary size",
        "dtype": "float32",
        "repeats": repeats,
        "warmup": warmup,
        "sweeps": sweeps,
        "wall_s": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


def _peer(results, case, peer):
    c = results.get("cases", {}).get(case)
    if not c:
        return None, f"case {case} not selected"
    if c.get("status") != "ok":
        return None, c.get("reason", c.get("status", ""))
    p = c["peers"].get(peer)
    if not p or p.get("status") != "ok":
        return None, f"peer {peer!r} not available"
    return p, None


def _ratio_target(results, case, peer, limit, scratch_limit=None, f32_loss=False):
    ours, why = _peer(results, case, "jaxloss")
    theirs, why2 = _peer(results, case, peer)
    if ours is None or theirs is None:
        return None, why or why2
    ratio = ours["vag"]["median_s"] / theirs["vag"]["median_s"]
    parts = [f"{ratio:.3f}x {peer}"]
    met = ratio <= limit
    if scratch_limit is not None:
        scratch = ours["scratch_vag_bytes"]
        parts.append(f"scratch {h.fmt_bytes(scratch)}")
        met = met and scratch is not None and scratch <= scratch_limit
    if f32_loss:
        parts.append(f"loss {ours['loss_dtype']}")
        met = met and ours["loss_dtype"] == "float32"
    return met, ", ".join(parts)


TARGETS: list[dict[str, Any]] = [
    {"name": "softmax CE f32", "case": "ce_int_f32",
     "criterion": "<= 0.9x optax, scratch <= 1 MiB",
     "check": lambda r: _ratio_target(r, "ce_int_f32", "optax", 0.9, 1 * h.MiB)},
    {"name": "options (ignore_index + smoothing + z-loss)", "case": "ce_int_options",
     "criterion": "<= 0.6x composed optax",
     "check": lambda r: _ratio_target(r, "ce_int_options", "optax (composed)", 0.6)},
    {"name": "softmax CE bf16", "case": "ce_int_bf16",
     "criterion": "<= 0.67x optax, scratch <= 64 MiB, float32 loss",
     "check": lambda r: _ratio_target(r, "ce_int_bf16", "optax", 0.67, 64 * h.MiB, True)},
    {"name": "sigmoid BCE", "case": "bce_f32",
     "criterion": "<= 0.34x optax, scratch <= 1 MiB",
     "check": lambda r: _ratio_target(r, "bce_f32", "optax", 0.34, 1 * h.MiB)},
    {"name": "softmax CE f32, long rows (N=1024, V=65536 and 262144)", "case": SCALING,
     "criterion": "<= 0.9x optax at each",
     "check": lambda r: _scaling_target(r, "optax", 0.9, lambda n, v: n == 1024 and v >= 65536)},
    {"name": "softmax CE f32, scaling sweep (every N, V)", "case": SCALING,
     "criterion": "<= 2x (two exp passes + one write) at each",
     "check": lambda r: _scaling_target(r, "floor", 2.0, lambda n, v: True)},
]  # fmt: skip


def _scaling_target(results, against, limit, which):
    """The worst ratio over the sweep's points selected by ``which(N, V)``:
    jaxloss over optax, or (``against="floor"``) over two exp passes + one write."""
    s = results.get("scaling")
    if not s:
        return None, f"{SCALING} not selected"
    if s.get("status") != "ok":
        return None, s.get("reason", s.get("status", ""))
    worst = None
    for sweep in s.get("sweeps", []):
        med = {k: [t["median_s"] for t in p["vag"]] for k, p in sweep["peers"].items()}
        for i, v in enumerate(sweep["V"]):
            if not which(sweep["N"], v):
                continue
            if against == "floor":
                r = h.floor_ratio(med["jaxloss"][i], med["floor_exp"][i], med["floor_write"][i])
            else:
                r = med["jaxloss"][i] / med[against][i]
            if worst is None or r > worst[0]:
                worst = (r, sweep["N"], v)
    if worst is None:
        return None, "not run: no such point in the sweep"
    r, n, v = worst
    return r <= limit, f"worst {r:.3f}x at N={n}, V={v}"


def _not_run(why: str) -> str:
    return why if why.startswith("not run") else f"not run: {why}"


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's figure and verdict: met, not met, or not run (with why)."""
    rows = []
    for t in TARGETS:
        met, figure = t["check"](results)
        rows.append({
            "name": t["name"],
            "case": t["case"],
            "criterion": t["criterion"],
            "figure": figure if met is not None else "",
            "met": met,
            "verdict": "met" if met else ("not met" if met is not None else _not_run(figure)),
        })  # fmt: skip
    return rows
