"""What the demo trains: five tasks and one run per loss.

A *task* owns a dataset, a model family, how a batch is gathered, and the
held-out metric with its trivial baseline. A *run* (:class:`Spec`) pairs a task
with one loss from the library: the head that turns the network's output into
the loss's input, and the global-batch-mean objective. Every objective is a
mean over the whole global batch, so sharding the batch over devices changes
only the order of float additions, never the math.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

import jaxloss
from jaxloss._registry import REGISTRY
from jaxloss.demo import _data
from jaxloss.demo._models import MLP, CharLM


def _lib(name: str) -> Callable[..., jax.Array]:
    """The public loss ``name``, looked up when called."""
    return getattr(jaxloss, name)


def _identity(x: jax.Array) -> jax.Array:
    return x


@dataclasses.dataclass(frozen=True)
class Env:
    """What a loss may need besides arrays: dataset facts and the device mesh."""

    info: dict[str, Any]
    mesh: jax.sharding.Mesh


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    value: float
    baseline: float
    baseline_name: str
    higher_is_better: bool
    extras: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def beats_baseline(self) -> bool:
        if not (math.isfinite(self.value) and math.isfinite(self.baseline)):
            return False
        return self.value > self.baseline if self.higher_is_better else self.value < self.baseline


@dataclasses.dataclass(frozen=True)
class Spec:
    """One row of the results table: a task trained with one public loss.

    ``head`` maps the network's output to the loss's input (the array the
    gradient check differentiates); ``loss(outputs, batch, params, env)`` is
    the global-batch mean objective; ``params(model)`` are model arrays the
    loss takes directly (an output layer's kernel and bias); ``score`` maps the
    loss input to what the task's metric reads (decision score, prediction).
    """

    name: str
    task: str
    setting: str
    loss: Callable[..., jax.Array]
    head: Callable[[jax.Array], jax.Array] = _identity
    out_dim: int = 1
    params: Callable[[nnx.Module], tuple[jax.Array, ...]] = lambda model: ()
    score: Callable[[np.ndarray, dict[str, Any]], np.ndarray] | None = None
    target: str = "y"
    uses: tuple[str, ...] = ()
    lm: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def losses(self) -> tuple[str, ...]:
        return self.uses or (self.name,)


# ---------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------


class Task:
    """A dataset, a model family and a held-out metric."""

    name: str = ""
    data_label: str = ""
    default_steps: int = 300
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4

    def load(self, seed: int, runner: Any) -> _data.Dataset:
        """The task's dataset: ``_data.<name>(seed)`` unless a task loads its own."""
        return getattr(_data, self.name)(seed)

    def make_model(self, ds: _data.Dataset, spec: Spec, env: Env, rngs: nnx.Rngs) -> nnx.Module:
        return MLP(ds.info["num_features"], 64, spec.out_dim, rngs=rngs)

    def train_arrays(self, ds: _data.Dataset) -> dict[str, np.ndarray]:
        return ds.train

    def test_rows(self, ds: _data.Dataset) -> dict[str, np.ndarray]:
        return ds.test

    def batch(self, data: dict[str, jax.Array], idx: jax.Array) -> dict[str, jax.Array]:
        return {k: v[idx] for k, v in data.items()}

    def forward(self, model: nnx.Module, batch: dict[str, jax.Array]) -> jax.Array:
        return model(batch["x"])

    def predict_test(
        self, spec: Spec, model: nnx.Module, ds: _data.Dataset, runner: Any
    ) -> dict[str, np.ndarray]:
        """``{"outputs": the loss input on every test row}``, as host arrays."""
        return runner.predict(
            lambda m, b: {"outputs": spec.head(self.forward(m, b))}, model, self.test_rows(ds)
        )

    def evaluate(self, spec: Spec, pred: dict[str, np.ndarray], ds: _data.Dataset) -> Metric:
        raise NotImplementedError


class Digits(Task):
    name = "digits"
    data_label = "digits (10 classes)"
    default_steps = 400

    def evaluate(self, spec, pred, ds):
        out = pred["outputs"]
        y = ds.test["y"]
        acc = float(np.mean(out.argmax(-1) == y))
        base = float(np.mean(y == ds.info["majority_class"]))
        return Metric("accuracy", acc, base, "majority class", True)


class Distillation(Digits):
    """Digits again, but the student learns only from a trained teacher's probabilities."""

    name = "distillation"
    data_label = "digits, teacher probs"
    temperature = 2.0
    teacher = "softmax_cross_entropy_with_integer_labels"

    def load(self, seed, runner):
        base = _data.digits(seed)
        teacher_spec = SPECS_BY_NAME[self.teacher]
        teacher_task = TASKS[teacher_spec.task]
        model = runner.trained_model(teacher_spec)
        n = len(base.train["y"])
        both = {k: np.concatenate([base.train[k], base.test[k]]) for k in ("x", "y")}
        logits = runner.predict(lambda m, b: teacher_task.forward(m, b), model, both)
        z = logits / self.temperature
        soft = np.exp(z - z.max(-1, keepdims=True))
        soft = (soft / soft.sum(-1, keepdims=True)).astype(np.float32)
        info = dict(base.info, temperature=self.temperature)
        info["teacher_accuracy"] = float(np.mean(logits[n:].argmax(-1) == base.test["y"]))
        return _data.Dataset(
            "distillation", dict(base.train, soft=soft[:n]), dict(base.test, soft=soft[n:]), info
        )

    def make_model(self, ds, spec, env, rngs):
        return MLP(ds.info["num_features"], 32, spec.out_dim, rngs=rngs)  # a smaller student

    def evaluate(self, spec, pred, ds):
        m = super().evaluate(spec, pred, ds)
        return dataclasses.replace(m, extras={"teacher_accuracy": ds.info["teacher_accuracy"]})


class BreastCancer(Task):
    name = "breast_cancer"
    data_label = "breast cancer (binary)"
    default_steps = 250

    def make_model(self, ds, spec, env, rngs):
        return MLP(ds.info["num_features"], 32, 1, rngs=rngs)

    def forward(self, model, batch):
        return model(batch["x"])[:, 0]

    def evaluate(self, spec, pred, ds):
        from sklearn.metrics import roc_auc_score

        score = spec.score(pred["outputs"], ds.info)
        y = ds.test["y"]
        acc = float(np.mean((score > 0) == (y > 0.5)))
        base = float(np.mean(y == ds.info["majority_class"]))
        auc = float(roc_auc_score(y, score))
        return Metric("accuracy", acc, base, "majority class", True, {"auc": auc})


class Diabetes(Task):
    name = "diabetes"
    data_label = "diabetes (regression)"
    default_steps = 300
    weight_decay = 1e-2

    def make_model(self, ds, spec, env, rngs):
        return MLP(ds.info["num_features"], 32, spec.out_dim, rngs=rngs)

    def evaluate(self, spec, pred, ds):
        y_hat = spec.score(pred["outputs"], ds.info)
        target = ds.test[spec.target]
        rmse = float(np.sqrt(np.mean((y_hat - target) ** 2)))
        mean = float(ds.train[spec.target].mean())
        base = float(np.sqrt(np.mean((mean - target) ** 2)))
        name = "RMSE" if spec.target == "y_raw" else f"RMSE ({spec.target})"
        return Metric(name, rmse, base, "mean predictor", False)


class PythonText(Task):
    """Character-level language model on ``argparse``'s source text."""

    name = "python_text"
    data_label = "Python source (chars)"
    default_steps = 1000
    context = 12
    dim = 32
    dhidden = 128

    def load(self, seed, runner):
        return _data.python_text(self.context)

    def vocab(self, ds: _data.Dataset, spec: Spec, num_devices: int) -> int:
        """The output layer's width: vocabulary-parallel runs shard the classes over
        the devices, so they pad the vocabulary with never-seen classes to a multiple
        of ``pad_vocab_to`` (8: the same model on 1, 2, 4 or 8 devices)."""
        v = ds.info["vocab_size"]
        pad = spec.lm.get("pad_vocab_to")
        if pad:
            pad = math.lcm(pad, num_devices)
            v = -(-v // pad) * pad
        return v

    def make_model(self, ds, spec, env, rngs):
        return CharLM(
            self.vocab(ds, spec, env.mesh.size),
            self.context,
            self.dim,
            self.dhidden,
            tied=spec.lm.get("tied", True),
            rngs=rngs,
        )

    def train_arrays(self, ds):
        return ds.train

    def _windows(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        k = self.context
        ctx = np.lib.stride_tricks.sliding_window_view(tokens[:-1], k)
        return {"ctx": np.ascontiguousarray(ctx), "y": tokens[k:]}

    def test_rows(self, ds):
        return self._windows(ds.test["tokens"])

    def batch(self, data, idx):
        tokens = data["tokens"]
        offsets = jnp.arange(self.context, dtype=idx.dtype)
        return {"ctx": tokens[idx[:, None] + offsets], "y": tokens[idx + self.context]}

    def forward(self, model, batch):
        return model(batch["ctx"])

    def predict_test(self, spec, model, ds, runner):
        fused = _lib("fused_linear_softmax_cross_entropy")

        def fn(m, b):  # per-token loss with the full kernel: the same math for every run
            h = self.forward(m, b)
            nll = fused(h, m.kernel, b["y"], bias=m.output_bias, reduction="none")
            return {"outputs": spec.head(h), "nll": nll}

        return runner.predict(fn, model, self.test_rows(ds))

    def evaluate(self, spec, pred, ds):
        ppl = float(np.exp(np.mean(pred["nll"])))
        return Metric("perplexity", ppl, ds.info["unigram_perplexity"], "unigram", False)


TASKS: dict[str, Task] = {
    t.name: t for t in (Digits(), BreastCancer(), Diabetes(), Distillation(), PythonText())
}


# ---------------------------------------------------------------------------
# Losses on each task
# ---------------------------------------------------------------------------

_T = Distillation.temperature


def _prob_score(p: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    return p - 0.5  # probabilities: decide at 1/2


def _logits_score(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    return x


def _regression(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    return x[:, 0] * info["y_std"] + info["y_mean"]  # back to the target's units


def _counts(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    return np.exp(x[:, 0])  # the Poisson rate from the predicted log-rate


def _pm1(y: jax.Array) -> jax.Array:
    return 2.0 * y - 1.0  # {0, 1} -> {-1, +1}


def _vocab_parallel(fused: bool):
    """Loss over the "data" mesh axis with the vocabulary sharded over it.

    The rows are gathered (in_specs ``P()``), each device holds a contiguous
    slice of the classes of the output layer, and the library's
    vocabulary-parallel loss combines the shards' statistics.
    """

    def loss(h, batch, params, env):
        kernel, bias = params

        def local(h, w, b, y):
            if fused:
                return _lib("vocab_parallel_fused_linear_softmax_cross_entropy")(
                    h, w, y, axis_name="data", bias_shard=b, reduction="mean"
                )
            logits = h @ w + b  # this device's [N, V / devices] slice
            return _lib("vocab_parallel_softmax_cross_entropy")(
                logits, y, axis_name="data", reduction="mean"
            )

        fn = jax.shard_map(
            local, mesh=env.mesh, in_specs=(P(), P(None, "data"), P("data"), P()), out_specs=P()
        )
        return fn(h, kernel, bias, batch["y"])

    return loss


def _digits_spec(name: str, setting: str, head=_identity, **options: Any) -> Spec:
    """A digits run of a loss on the ten class scores (after ``head``) and integer labels."""
    return Spec(
        name,
        "digits",
        setting,
        lambda x, b, p, e: _lib(name)(x, b["y"], reduction="mean", **options),
        head=head,
        out_dim=10,
    )


def _binary_spec(name: str, setting: str, labels=_identity, **options: Any) -> Spec:
    """A breast-cancer run of a loss on the decision score and the (mapped) 0/1 labels."""
    return Spec(
        name,
        "breast_cancer",
        setting,
        lambda x, b, p, e: _lib(name)(x, labels(b["y"]), reduction="mean", **options),
        score=_logits_score,
    )


def _distillation_spec(name: str) -> Spec:
    """A student run of a probability-target cross-entropy on the teacher's probabilities."""
    return Spec(
        name,
        "distillation",
        f"teacher probabilities, T={_T:g}",
        lambda x, b, p, e: _lib(name)(x / _T, b["soft"], reduction="mean") * _T**2,
        out_dim=10,
    )


def _regression_spec(name: str, setting: str, **options: Any) -> Spec:
    """A diabetes run of an elementwise regression loss on the first output."""
    return Spec(
        name,
        "diabetes",
        setting,
        lambda x, b, p, e: _lib(name)(x[:, 0], b["y"], reduction="mean", **options),
        score=_regression,
        target="y_raw",
    )


def _lm_params(model: nnx.Module) -> tuple[jax.Array, jax.Array]:
    return model.kernel, model.output_bias


def _vocab_parallel_spec(name: str, fused: bool) -> Spec:
    """A language-model run with the vocabulary sharded over the devices (padded to 8)."""
    return Spec(
        name,
        "python_text",
        "vocab sharded over 'data'",
        _vocab_parallel(fused),
        params=_lm_params,
        lm={"tied": False, "pad_vocab_to": 8},
    )


SPECS: tuple[Spec, ...] = (
    # --- digits: multiclass, integer labels -------------------------------
    _digits_spec(
        "softmax_cross_entropy_with_integer_labels", "label_smoothing=0.1", label_smoothing=0.1
    ),
    _digits_spec("nll_loss", "on log_softmax outputs", head=jax.nn.log_softmax),
    Spec(
        "poly_loss_cross_entropy",
        "digits",
        "epsilon=2, one-hot labels",
        lambda x, b, p, e: _lib("poly_loss_cross_entropy")(
            x, jax.nn.one_hot(b["y"], 10, dtype=x.dtype), reduction="mean"
        ),
        out_dim=10,
    ),
    _digits_spec("softmax_focal_loss", "gamma=2", gamma=2.0),
    _digits_spec("multiclass_hinge_loss", "Crammer-Singer"),
    _digits_spec("multiclass_perceptron_loss", ""),
    _digits_spec("multi_margin_loss", "margin=1", margin=1.0),
    # --- breast cancer: binary ---------------------------------------------
    Spec(
        "sigmoid_binary_cross_entropy",
        "breast_cancer",
        "pos_weight=n_neg/n_pos",
        lambda x, b, p, e: _lib("sigmoid_binary_cross_entropy")(
            x, b["y"], pos_weight=e.info["pos_weight"], reduction="mean"
        ),
        score=_logits_score,
    ),
    Spec(
        "binary_cross_entropy",
        "breast_cancer",
        "on sigmoid probabilities",
        lambda x, b, p, e: _lib("binary_cross_entropy")(x, b["y"], reduction="mean"),
        head=jax.nn.sigmoid,
        score=_prob_score,
    ),
    _binary_spec("sigmoid_focal_loss", "alpha=0.25, gamma=2", alpha=0.25, gamma=2.0),
    _binary_spec("hinge_loss", "labels in {-1, +1}", labels=_pm1),
    _binary_spec("squared_hinge_loss", "labels in {-1, +1}", labels=_pm1),
    _binary_spec("perceptron_loss", "labels in {-1, +1}", labels=_pm1),
    # --- diabetes: regression on the standardised target -------------------
    _regression_spec("squared_error", "mean = MSE"),
    _regression_spec("l2_loss", "half squared error"),
    _regression_spec("absolute_error", "mean = L1"),
    _regression_spec("huber_loss", "delta=1", delta=1.0),
    _regression_spec("smooth_l1_loss", "beta=1", beta=1.0),
    _regression_spec("log_cosh", ""),
    Spec(
        "gaussian_nll_loss",
        "diabetes",
        "predicted variance softplus(out[1])",
        lambda x, b, p, e: _lib("gaussian_nll_loss")(
            x[:, 0], b["y"], jax.nn.softplus(x[:, 1]), reduction="mean"
        ),
        out_dim=2,
        score=_regression,
        target="y_raw",
    ),
    Spec(
        "poisson_nll_loss",
        "diabetes",
        f"count = round(y / {_data.COUNT_UNIT:g}), log rate",
        lambda x, b, p, e: _lib("poisson_nll_loss")(
            x[:, 0], b["count"], log_input=True, reduction="mean"
        ),
        score=_counts,
        target="count",
    ),
    # --- knowledge distillation on digits -----------------------------------
    Spec(
        "kl_divergence",
        "distillation",
        f"T={_T:g}, batchmean, x T^2",
        lambda x, b, p, e: (
            _lib("kl_divergence")(jax.nn.log_softmax(x / _T), b["soft"], reduction="batchmean")
            * _T**2
        ),
        out_dim=10,
    ),
    _distillation_spec("softmax_cross_entropy"),
    _distillation_spec("safe_softmax_cross_entropy"),
    # --- character language model -------------------------------------------
    Spec(
        "fused_linear_softmax_cross_entropy",
        "python_text",
        "tied embedding",
        lambda h, b, p, e: _lib("fused_linear_softmax_cross_entropy")(
            h, p[0], b["y"], bias=p[1], reduction="mean"
        ),
        params=_lm_params,
        lm={"tied": True},
    ),
    _vocab_parallel_spec("vocab_parallel_softmax_cross_entropy", fused=False),
    _vocab_parallel_spec("vocab_parallel_fused_linear_softmax_cross_entropy", fused=True),
)

# Runs keyed by the registry name of the loss they train with (tests/test_registry.py
# checks that every key is a registry row and every row has a run).
SPECS_BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}


def public_losses() -> list[str]:
    """Every public loss, from the loss registry (``jaxloss._registry``)."""
    return sorted(row.name for row in REGISTRY)


def missing_specs() -> list[str]:
    """Registry rows that no demo run uses (``python -m jaxloss.demo`` warns about each)."""
    covered = {n for s in SPECS for n in s.losses}
    return [row.name for row in REGISTRY if row.name not in covered]


def available_specs() -> list[Spec]:
    """Runs whose losses the installed ``jaxloss`` provides, in table order."""
    return [s for s in SPECS if all(hasattr(jaxloss, n) for n in s.losses)]
