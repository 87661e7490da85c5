"""What the demo trains: eleven tasks and one run per loss.

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

    @staticmethod
    def trained_logits(runner: Any, name: str, base: _data.Dataset) -> np.ndarray:
        """The logits of the trained run ``name`` on ``base``'s train rows, then its test rows."""
        spec = SPECS_BY_NAME[name]
        task = TASKS[spec.task]
        model = runner.trained_model(spec)
        both = {k: np.concatenate([base.train[k], base.test[k]]) for k in ("x", "y")}
        return runner.predict(lambda m, b: task.forward(m, b), model, both)


class Distillation(Digits):
    """Digits again, but the student learns only from a trained teacher's probabilities."""

    name = "distillation"
    data_label = "digits, teacher probs"
    temperature = 2.0
    teacher = "softmax_cross_entropy_with_integer_labels"

    def load(self, seed, runner):
        base = _data.digits(seed)
        logits = self.trained_logits(runner, self.teacher, base)
        n = len(base.train["y"])
        z = logits / self.temperature
        soft = np.exp(z - z.max(-1, keepdims=True))
        soft = (soft / soft.sum(-1, keepdims=True)).astype(np.float32)
        log_soft = (z - z.max(-1, keepdims=True)).astype(np.float64)
        log_soft = (log_soft - np.log(np.exp(log_soft).sum(-1, keepdims=True))).astype(np.float32)
        info = dict(base.info, temperature=self.temperature)
        info["teacher_accuracy"] = float(np.mean(logits[n:].argmax(-1) == base.test["y"]))
        train = dict(base.train, soft=soft[:n], log_soft=log_soft[:n])
        test = dict(base.test, soft=soft[n:], log_soft=log_soft[n:])
        return _data.Dataset("distillation", train, test, info)

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


def _best_constant_mape(y_train: np.ndarray) -> float:
    """The constant with the least training MAPE: the median of ``y`` weighted by ``1 / y``."""
    order = np.argsort(y_train)
    w = 1.0 / np.abs(y_train[order])
    return float(y_train[order][np.searchsorted(np.cumsum(w), 0.5 * w.sum())])


class DiabetesPercent(Diabetes):
    """Diabetes again, scored by the mean absolute percentage error (raw target).

    A MAPE fit predicts low (the relative error weighs small targets up), so
    RMSE is the wrong yardstick; the baseline is the best constant for MAPE.
    """

    name = "diabetes_percent"
    data_label = "diabetes (MAPE)"

    def load(self, seed, runner):
        return _data.diabetes(seed)

    def evaluate(self, spec, pred, ds):
        y_hat = spec.score(pred["outputs"], ds.info)
        target = ds.test["y_raw"]
        mape = float(100 * np.mean(np.abs(y_hat - target) / np.abs(target)))
        c = _best_constant_mape(ds.train["y_raw"])
        base = float(100 * np.mean(np.abs(c - target) / np.abs(target)))
        rmse = float(np.sqrt(np.mean((y_hat - target) ** 2)))
        return Metric("MAPE (%)", mape, base, "best constant", False, {"rmse": rmse})


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


class TextDistillation(PythonText):
    """The character LM again, but a smaller student learns only from the trained
    language model's next-character distribution (both ``hidden @ kernel`` products
    are left to the fused distillation loss; neither logits matrix is formed)."""

    name = "text_distillation"
    data_label = "Python source, teacher LM"
    teacher = "fused_linear_softmax_cross_entropy"
    dim = 16  # a smaller student: half the width, half the hidden layer
    dhidden = 64

    def load(self, seed, runner):
        ds = _data.python_text(self.context)
        spec = SPECS_BY_NAME[self.teacher]
        teacher, task = runner.trained_model(spec), TASKS[spec.task]

        def hidden(tokens):  # the teacher's last hidden state at every window
            return runner.predict(lambda m, b: task.forward(m, b), teacher, self._windows(tokens))

        test = task.predict_test(spec, teacher, ds, runner)
        info = dict(
            ds.info,
            teacher_kernel=np.asarray(teacher.kernel),
            teacher_bias=np.asarray(teacher.output_bias),
            teacher_perplexity=float(np.exp(np.mean(test["nll"]))),
        )
        train = dict(ds.train, teacher_h=hidden(ds.train["tokens"]))
        test = dict(ds.test, teacher_h=hidden(ds.test["tokens"]))
        return _data.Dataset(self.name, train, test, info)

    def batch(self, data, idx):
        return super().batch(data, idx) | {"teacher_h": data["teacher_h"][idx]}

    def test_rows(self, ds):
        return super().test_rows(ds) | {"teacher_h": ds.test["teacher_h"]}

    def evaluate(self, spec, pred, ds):
        m = super().evaluate(spec, pred, ds)
        return dataclasses.replace(m, extras={"teacher_perplexity": ds.info["teacher_perplexity"]})


class Preference(Digits):
    """Digits as preference pairs: chosen = the true class, rejected = a random other class.

    The policy is the classifier's log-probabilities; the frozen reference (for
    losses that take one) is the trained cross-entropy classifier, as a
    supervised fine-tuned model is for preference tuning.
    """

    name = "preference"
    data_label = "digits, preference pairs"
    reference = "softmax_cross_entropy_with_integer_labels"

    def load(self, seed, runner):
        base = _data.digits(seed)
        logits = self.trained_logits(runner, self.reference, base)
        n = len(base.train["y"])
        z = logits - logits.max(-1, keepdims=True)
        ref = (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)
        rng = np.random.default_rng([seed, 3])
        y = np.concatenate([base.train["y"], base.test["y"]])
        rejected = ((y + rng.integers(1, 10, size=len(y))) % 10).astype(np.int32)
        train = dict(base.train, rejected=rejected[:n], ref_logp=ref[:n])
        test = dict(base.test, rejected=rejected[n:], ref_logp=ref[n:])
        return _data.Dataset("preference", train, test, base.info)

    def evaluate(self, spec, pred, ds):
        m = super().evaluate(spec, pred, ds)
        logp = pred["outputs"]
        rows = np.arange(len(logp))
        margin = logp[rows, ds.test["y"]] - logp[rows, ds.test["rejected"]]
        return dataclasses.replace(m, extras={"preference_accuracy": float(np.mean(margin > 0))})


class Embedding(Task):
    """Learn a digit embedding from pairs and triplets; classify by the nearest class mean.

    Each row carries a same-class partner ``xp`` and an other-class one ``xn``;
    the network embeds all three (``[N, 3, dim]``). The metric embeds train and
    test digits (``spec.score`` maps embeddings to the space the metric reads),
    and assigns each test digit the class whose mean training embedding is nearest.
    """

    name = "digit_pairs"
    data_label = "digits, pairs/triplets"
    default_steps = 400

    def forward(self, model, batch):
        return model(jnp.stack([batch["x"], batch["xp"], batch["xn"]], axis=1))

    def predict_test(self, spec, model, ds, runner):
        n = len(ds.train["y"])
        rows = {k: np.concatenate([ds.train[k], ds.test[k]]) for k in ds.test}
        out = runner.predict(lambda m, b: spec.head(self.forward(m, b)), model, rows)
        return {"outputs": out[n:], "train": out[:n]}

    def evaluate(self, spec, pred, ds):
        train = spec.score(pred["train"][:, 0], ds.info)
        test = spec.score(pred["outputs"][:, 0], ds.info)
        means = np.stack([train[ds.train["y"] == c].mean(0) for c in range(10)])
        dist = ((test[:, None, :] - means[None]) ** 2).sum(-1)
        acc = float(np.mean(dist.argmin(-1) == ds.test["y"]))
        base = float(np.mean(ds.test["y"] == ds.info["majority_class"]))
        extras = {"pixel_ncm_accuracy": ds.info["pixel_ncm_accuracy"]}
        return Metric("NCM accuracy", acc, base, "majority class", True, extras)


def greedy_decode(logits: np.ndarray, blank_id: int) -> list[tuple[int, ...]]:
    """Best-path CTC decoding: per-frame argmax, repeats merged, blanks dropped."""
    best = logits.argmax(-1)
    out = []
    for path in best:
        keep = np.concatenate([[True], path[1:] != path[:-1]]) & (path != blank_id)
        out.append(tuple(int(c) for c in path[keep]))
    return out


class Sequences(Task):
    """Read 1-3 digits from a strip of frames (a per-frame MLP), trained without alignments."""

    name = "digit_sequences"
    data_label = "digit strips (CTC)"
    default_steps = 400
    learning_rate = 1e-2  # CTC on 8-frame strips: reads most strips within the quick run's steps

    def make_model(self, ds, spec, env, rngs):
        return MLP(ds.info["num_features"], 64, ds.info["num_classes"] + 1, rngs=rngs)

    def evaluate(self, spec, pred, ds):
        decoded = greedy_decode(pred["outputs"], ds.info["blank_id"])
        truth = _data.label_sequences(ds.test)
        acc = float(np.mean([d == t for d, t in zip(decoded, truth, strict=True)]))
        base = ds.info["majority_sequence_accuracy"]
        return Metric("sequence accuracy", acc, base, "majority sequence", True)


class MultiLabelDigits(Digits):
    """Digits as a multi-label task: each image has its class and its parity (10/11)."""

    name = "digits_multilabel"
    data_label = "digits, class + parity"

    def evaluate(self, spec, pred, ds):
        out = pred["outputs"]
        y = ds.test["y"]
        cls = out[:, :10].argmax(-1)
        parity = _data.PARITY_LABELS[0] + out[:, 10:].argmax(-1)
        exact = float(np.mean((cls == y) & (parity == _data.PARITY_LABELS[0] + y % 2)))
        extras = {
            "class_accuracy": float(np.mean(cls == y)),
            "parity_accuracy": float(np.mean(parity == _data.PARITY_LABELS[0] + y % 2)),
        }
        base = ds.info["majority_set_accuracy"]
        return Metric("exact match", exact, base, "majority label set", True, extras)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two ``[N, 4]`` arrays of ``x1, y1, x2, y2`` boxes."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area - inter, 1e-12)


class Boxes(Task):
    """Regress the box around a digit's ink on a larger canvas; metric: mean IoU."""

    name = "digit_boxes"
    data_label = "digits on a canvas, ink boxes"
    default_steps = 400

    def evaluate(self, spec, pred, ds):
        truth = ds.test["box"]
        iou = float(np.mean(box_iou(pred["outputs"], truth)))
        mean_box = np.broadcast_to(ds.info["mean_box"], truth.shape)
        base = float(np.mean(box_iou(mean_box, truth)))
        return Metric("mean IoU", iou, base, "mean box", True)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Digits(),
        BreastCancer(),
        Diabetes(),
        DiabetesPercent(),
        Distillation(),
        PythonText(),
        TextDistillation(),
        Embedding(),
        Sequences(),
        Preference(),
        MultiLabelDigits(),
        Boxes(),
    )
}


# ---------------------------------------------------------------------------
# Losses on each task
# ---------------------------------------------------------------------------

_T = Distillation.temperature
_EMBED_DIM = 16  # width of the learned digit embedding
_COS_MARGIN = 0.5  # other-class pairs: cosine distance at least this


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


def _two_micro_batches(h, b, p, e):
    """The batch's mean loss as two accumulated micro-batches: each half's summed
    loss over ``normalizer`` = the whole batch's token count (a per-half mean would
    weight the halves wrongly once padding makes their counts differ)."""
    fused, half = _lib("fused_linear_softmax_cross_entropy"), h.shape[0] // 2
    parts = (slice(0, half), slice(half, None))
    count = jnp.asarray(h.shape[0], jnp.float32)  # every token of this task counts
    return sum(
        fused(h[s], p[0], b["y"][s], bias=p[1], normalizer=count, reduction="mean") for s in parts
    )


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


def _one_hot_spec(name: str, setting: str) -> Spec:
    """A digits run of a loss on the ten class scores and the one-hot labels."""
    return Spec(
        name,
        "digits",
        setting,
        lambda x, b, p, e: _lib(name)(x, _one_hot(b, x), reduction="mean"),
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


def _unit(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _one_hot(b: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jax.nn.one_hot(b["y"], x.shape[-1], dtype=x.dtype)


def _batch_dice(name: str, setting: str, one_hot: bool) -> Spec:
    """A Dice run with the global batch as one image whose pixels are the examples.

    Digits: ``[1, N, 10]`` class scores against one-hot labels (segmentation as
    classification); breast cancer: ``[1, N]`` logits of the positive class.
    The Dice statistics sum over the whole global batch.
    """
    if one_hot:
        return Spec(
            name,
            "digits",
            setting,
            lambda x, b, p, e: jnp.mean(
                _lib(name)(x[None], _one_hot(b, x)[None], reduction="mean")
            ),
            out_dim=10,
        )
    return Spec(
        name,
        "breast_cancer",
        setting,
        lambda x, b, p, e: jnp.mean(_lib(name)(x[None], b["y"][None], reduction="mean")),
        score=_logits_score,
    )


def _cosine_pairs(x: jax.Array, b: dict[str, jax.Array], p: Any, e: Env) -> jax.Array:
    """Cosine embedding loss: distance of same-class pairs, hinge on other-class ones."""
    dist = _lib("cosine_distance")
    pos = dist(x[:, 0], x[:, 1], reduction="mean")
    neg = jnp.mean(jax.nn.relu(_COS_MARGIN - dist(x[:, 0], x[:, 2], reduction="none")))
    return pos + neg


def _ntxent(x: jax.Array, b: dict[str, jax.Array], p: Any, e: Env) -> jax.Array:
    """NT-Xent over anchors and their same-class partners (every row has a positive)."""
    emb = jnp.concatenate([x[:, 0], x[:, 1]])
    labels = jnp.concatenate([b["y"], b["y"]])
    return _lib("ntxent")(emb, labels, temperature=0.1, reduction="mean")


def _embedding_spec(name: str, setting: str, loss: Callable, score=_unit) -> Spec:
    return Spec(name, "digit_pairs", setting, loss, out_dim=_EMBED_DIM, score=score)


def _ctc(with_forward_probs: bool):
    """Mean CTC loss of the label sequences under the per-frame scores (blank = 10)."""

    def loss(x, b, p, e):
        pad = jnp.zeros(x.shape[:2], x.dtype)
        blank = e.info["blank_id"]
        if with_forward_probs:
            per_seq, _, _ = _lib("ctc_loss_with_forward_probs")(
                x, pad, b["labels"], b["label_pad"], blank_id=blank
            )
            return jnp.mean(per_seq)
        return _lib("ctc_loss")(
            x, pad, b["labels"], b["label_pad"], blank_id=blank, reduction="mean"
        )

    return loss


def _pair_logps(x: jax.Array, b: dict[str, jax.Array], key: str = "y") -> tuple[jax.Array, ...]:
    """Log-probabilities of the chosen (true) and the rejected class, from ``[N, 10]``."""
    chosen = jnp.take_along_axis(x, b[key][:, None], axis=-1)[:, 0]
    rejected = jnp.take_along_axis(x, b["rejected"][:, None], axis=-1)[:, 0]
    return chosen, rejected


def _dpo(x, b, p, e):
    pc, pr = _pair_logps(x, b)
    rc, rr = _pair_logps(b["ref_logp"], b)
    return _lib("dpo_loss")(pc, pr, rc, rr, beta=0.1, reduction="mean")


def _simpo(x, b, p, e):
    pc, pr = _pair_logps(x, b)
    return _lib("simpo_loss")(pc, pr, beta=2.0, gamma=0.5, reduction="mean")


def _orpo(x, b, p, e):
    pc, pr = _pair_logps(x, b)
    return -jnp.mean(pc) + _lib("orpo_odds_ratio_loss")(pc, pr, beta=0.1, reduction="mean")


def _preference_spec(name: str, setting: str, loss: Callable) -> Spec:
    return Spec(name, "preference", setting, loss, head=jax.nn.log_softmax, out_dim=10)


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


def _similarities(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cosine similarity of each anchor to its same-class and to its other-class partner."""
    cos = _lib("cosine_similarity")
    return cos(x[:, 0], x[:, 1], reduction="none"), cos(x[:, 0], x[:, 2], reduction="none")


def _margin_ranking(x, b, p, e):
    """Both orders of (partner, other) similarity: target +1, then -1 for the swapped pair."""
    pos, neg = _similarities(x)
    target = jnp.concatenate([jnp.ones_like(pos), -jnp.ones_like(pos)])
    first, second = jnp.concatenate([pos, neg]), jnp.concatenate([neg, pos])
    return _lib("margin_ranking_loss")(first, second, target, margin=0.5, reduction="mean")


def _anchor_pairs(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Anchors twice, against partners then others; targets +1 then -1."""
    n = x.shape[0]
    target = jnp.concatenate([jnp.ones(n, jnp.int32), -jnp.ones(n, jnp.int32)])
    return jnp.concatenate([x[:, 0], x[:, 0]]), jnp.concatenate([x[:, 1], x[:, 2]]), target


def _cosine_embedding(x, b, p, e):
    a, other, target = _anchor_pairs(x)
    return _lib("cosine_embedding_loss")(a, other, target, margin=0.0, reduction="mean")


def _hinge_embedding(x, b, p, e):
    """Euclidean distances of the pairs: small for partners, at least 2 for others."""
    a, other, target = _anchor_pairs(x)
    dist = jnp.sqrt(jnp.sum((a - other) ** 2, axis=-1) + 1e-6)
    return _lib("hinge_embedding_loss")(dist, target, margin=2.0, reduction="mean")


def _cos_dist(x1: jax.Array, x2: jax.Array) -> jax.Array:
    return _lib("cosine_distance")(x1, x2, reduction="none")


def _triplet_with_distance(x, b, p, e):
    """Default (Euclidean) triplets plus cosine-distance triplets with the distance swap."""
    fn = _lib("triplet_margin_with_distance_loss")
    a, pos, neg = x[:, 0], x[:, 1], x[:, 2]
    euclid = fn(a, pos, neg, margin=1.0, reduction="mean")
    cosine = fn(a, pos, neg, distance_function=_cos_dist, margin=0.5, swap=True, reduction="mean")
    return euclid + cosine


def _multilabel_spec(name: str, setting: str, target: str) -> Spec:
    """A multi-label digits run: 12 scores (10 classes, even, odd) against ``b[target]``."""
    return Spec(
        name,
        "digits_multilabel",
        setting,
        lambda x, b, p, e: _lib(name)(x, b[target], reduction="mean"),
        out_dim=10 + len(_data.PARITY_LABELS),
    )


def _raw_units(x: jax.Array, e: Env) -> jax.Array:
    """``[N, 1]`` predictions in the target's units (progression is positive)."""
    return x[:, :1] * e.info["y_std"] + e.info["y_mean"]


def _keras_regression_spec(name: str, setting: str, task: str = "diabetes") -> Spec:
    """A diabetes run of a Keras regression loss on the raw (positive) target."""
    return Spec(
        name,
        task,
        setting,
        lambda x, b, p, e: _lib(name)(_raw_units(x, e), b["y_raw"][:, None], reduction="mean"),
        score=_regression,
        target="y_raw",
    )


def _boxes_head(x: jax.Array) -> jax.Array:
    """``x1, y1, x2, y2`` from a sigmoid centre and size: always a valid box."""
    c, size = jax.nn.sigmoid(x[:, :2]), jax.nn.sigmoid(x[:, 2:])
    return jnp.concatenate([c - size / 2, c + size / 2], axis=-1)


def _box_spec(name: str, setting: str, loss: Callable | None = None) -> Spec:
    return Spec(
        name,
        "digit_boxes",
        setting,
        loss or (lambda x, b, p, e: _lib(name)(x, b["box"], reduction="mean")),
        head=_boxes_head,
        out_dim=4,
    )


def _ciou_alpha_term(x: jax.Array, t: jax.Array) -> jax.Array:
    """``(alpha - stop_gradient(alpha)) * v``: zero, but adds the derivative of ``alpha``.

    The complete IoU holds ``alpha`` constant (torchvision's gradient, the
    derivative of the loss only where the aspect term ``v`` is 0). With this
    term the objective's gradient is the derivative of its value, so the
    finite-difference gradient check applies.
    """
    wh_x, wh_t = x[:, 2:] - x[:, :2], t[:, 2:] - t[:, :2]
    iw = jnp.clip(jnp.minimum(x[:, 2], t[:, 2]) - jnp.maximum(x[:, 0], t[:, 0]), 0)
    ih = jnp.clip(jnp.minimum(x[:, 3], t[:, 3]) - jnp.maximum(x[:, 1], t[:, 1]), 0)
    inter = iw * ih
    union = wh_x[:, 0] * wh_x[:, 1] + wh_t[:, 0] * wh_t[:, 1] - inter
    iou = inter / (union + 1e-7)
    angle = jnp.arctan(wh_t[:, 0] / wh_t[:, 1]) - jnp.arctan(wh_x[:, 0] / wh_x[:, 1])
    v = 4 / math.pi**2 * angle**2
    alpha = v / (1 - iou + v + 1e-7)
    return jnp.mean((alpha - jax.lax.stop_gradient(alpha)) * v)


def _ciou(x, b, p, e):
    loss = _lib("complete_box_iou_loss")(x, b["box"], reduction="mean")
    return loss + _ciou_alpha_term(x, b["box"])


_ENTROPY_BONUS = 0.01


def _lm_log_probs(h, b, p, e):
    """Negative mean log-probability of the next character, minus a small entropy bonus."""
    logp, entropy = _lib("fused_linear_log_probs")(h, p[0], b["y"], bias=p[1], return_entropy=True)
    return -jnp.mean(logp) - _ENTROPY_BONUS * jnp.mean(entropy)


_TEXT_T = 2.0  # temperature of the text distillation


def _text_distillation_spec(divergence: str) -> Spec:
    """The student's and the teacher's next-character distributions compared by
    ``divergence``, from both models' hidden states and output kernels. The JSD
    run carries the loss's name; the two KL directions are named after it with
    the divergence in brackets."""

    def loss(h, b, p, e):
        return _lib("fused_linear_distillation_loss")(
            h, p[0], b["teacher_h"], jnp.asarray(e.info["teacher_kernel"]),
            student_bias=p[1], teacher_bias=jnp.asarray(e.info["teacher_bias"]),
            divergence=divergence, beta=0.5, temperature=_TEXT_T,  # beta: the JSD's only
        )  # fmt: skip

    name = "fused_linear_distillation_loss"
    setting = f"smaller student, {divergence}" + (" beta=0.5" if divergence == "jsd" else "")
    return Spec(
        name if divergence == "jsd" else f"{name}[{divergence}]",
        "text_distillation",
        f"{setting}, T={_TEXT_T:g}",
        loss,
        params=_lm_params,
        lm={"tied": True},
        uses=(name,),
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
    _digits_spec("multiclass_sparsemax_loss", "sparsemax"),
    _one_hot_spec("ranking_softmax_loss", "10 classes as a list, relevance = one-hot"),
    _batch_dice("dice_loss", "batch as one image, one-hot", one_hot=True),
    _batch_dice("multiclass_generalized_dice_loss", "batch as one image, one-hot", one_hot=True),
    _one_hot_spec("categorical_hinge", "Keras, one-hot targets"),
    # --- digits as a multi-label task: class and parity ----------------------
    _multilabel_spec("multilabel_soft_margin_loss", "multi-hot {class, parity}", "labels"),
    _multilabel_spec("multilabel_margin_loss", "targets {class, parity}, -1 padded", "label_idx"),
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
    _binary_spec("soft_margin_loss", "labels in {-1, +1}", labels=_pm1),
    _binary_spec("sparsemax_loss", "sparse sigmoid"),
    _batch_dice("binary_dice_loss", "batch as one mask", one_hot=False),
    # --- diabetes: regression on the standardised target -------------------
    _regression_spec("squared_error", "mean = MSE"),
    _regression_spec("l2_loss", "half squared error"),
    _regression_spec("absolute_error", "mean = L1"),
    _regression_spec("huber_loss", "delta=1", delta=1.0),
    _regression_spec("smooth_l1_loss", "beta=1", beta=1.0),
    _regression_spec("log_cosh", ""),
    _keras_regression_spec(
        "mean_absolute_percentage_error", "Keras, raw target", task="diabetes_percent"
    ),
    _keras_regression_spec("mean_squared_logarithmic_error", "Keras, raw target"),
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
    Spec(
        "kl_divergence_with_log_targets",
        "distillation",
        f"T={_T:g}, log teacher probs, x T^2",
        lambda x, b, p, e: (
            _lib("kl_divergence_with_log_targets")(
                jax.nn.log_softmax(x / _T), b["log_soft"], reduction="mean"
            )
            * _T**2
        ),
        out_dim=10,
    ),
    Spec(
        "generalized_kl_divergence",
        "distillation",
        f"unnormalised student exp(out/T), T={_T:g}",
        lambda x, b, p, e: (
            _lib("generalized_kl_divergence")(x / _T, b["soft"], reduction="mean") * _T**2
        ),
        out_dim=10,
    ),
    Spec(
        "jensen_shannon_divergence",
        "distillation",
        f"beta=0.5, T={_T:g}, x T^2",
        lambda x, b, p, e: (
            _lib("jensen_shannon_divergence")(
                jax.nn.log_softmax(x / _T), b["log_soft"], beta=0.5, reduction="mean"
            )
            * _T**2
        ),
        out_dim=10,
    ),
    # --- digit embeddings from pairs and triplets ---------------------------
    _embedding_spec(
        "cosine_similarity",
        "1 - cos(embedding, class code)",
        lambda x, b, p, e: (
            1.0 - _lib("cosine_similarity")(x[:, 0], _one_hot(b, x[:, 0]), reduction="mean")
        ),
    ),
    _embedding_spec("cosine_distance", f"pairs, other-class margin {_COS_MARGIN:g}", _cosine_pairs),
    _embedding_spec(
        "triplet_margin_loss",
        "margin=1, Euclidean",
        lambda x, b, p, e: _lib("triplet_margin_loss")(
            x[:, 0], x[:, 1], x[:, 2], margin=1.0, reduction="mean"
        ),
        score=_logits_score,
    ),
    _embedding_spec("ntxent", "temperature=0.1, anchors + partners", _ntxent),
    _embedding_spec(
        "margin_ranking_loss", "cos to partner above cos to other, margin=0.5", _margin_ranking
    ),
    _embedding_spec("cosine_embedding_loss", "partner +1, other -1, margin=0", _cosine_embedding),
    _embedding_spec(
        "hinge_embedding_loss",
        "pair distances, margin=2",
        _hinge_embedding,
        score=_logits_score,
    ),
    _embedding_spec(
        "triplet_margin_with_distance_loss",
        "Euclidean (default) + cosine with swap",
        _triplet_with_distance,
        score=_logits_score,
    ),
    # --- reading digit strips without alignments -----------------------------
    Spec("ctc_loss", "digit_sequences", "blank=10, mean", _ctc(False), out_dim=11),
    Spec(
        "ctc_loss_with_forward_probs",
        "digit_sequences",
        "per-sequence loss, blank=10",
        _ctc(True),
        out_dim=11,
    ),
    # --- preference pairs on digits -----------------------------------------
    _preference_spec("dpo_loss", "beta=0.1, reference = CE classifier", _dpo),
    _preference_spec("simpo_loss", "beta=2, gamma=0.5, no reference", _simpo),
    _preference_spec("orpo_odds_ratio_loss", "NLL + odds-ratio term, beta=0.1", _orpo),
    # --- character language model -------------------------------------------
    Spec(
        "fused_linear_softmax_cross_entropy",
        "python_text",
        "tied embedding, 2 micro-batches",
        _two_micro_batches,
        params=_lm_params,
        lm={"tied": True},
    ),
    _vocab_parallel_spec("vocab_parallel_softmax_cross_entropy", fused=False),
    _vocab_parallel_spec("vocab_parallel_fused_linear_softmax_cross_entropy", fused=True),
    Spec(
        "fused_linear_log_probs",
        "python_text",
        f"-mean log p(next), entropy bonus {_ENTROPY_BONUS:g}",
        _lm_log_probs,
        params=_lm_params,
        lm={"tied": True},
    ),
    *(_text_distillation_spec(d) for d in ("jsd", "forward_kl", "reverse_kl")),
    # --- box regression: the ink of a digit on a canvas ----------------------
    _box_spec("generalized_box_iou_loss", "sigmoid centre + size"),
    _box_spec("distance_box_iou_loss", "sigmoid centre + size"),
    _box_spec("complete_box_iou_loss", "sigmoid centre + size, alpha differentiated", _ciou),
)

# Runs keyed by their name: the registry name of the loss they train with, or for
# a second setting of the same loss that name with the setting in brackets
# (tests/test_registry.py checks that every run's losses are registry rows and
# every row has a run).
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
