"""Datasets that ship offline: scikit-learn's bundled sets and Python's own source text.

Every loader returns host (NumPy) arrays split into a train and a held-out test
part, deterministically from the seed. Features are standardised with the
training split's statistics only.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays for one task: ``train``/``test`` map names (``x``, ``y``, ...) to arrays."""

    name: str
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def num_train(self) -> int:
        return int(self.info.get("num_train", len(next(iter(self.train.values())))))


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _split(n: int, test_fraction: float, seed: int, stratify: np.ndarray | None = None):
    from sklearn.model_selection import train_test_split

    return train_test_split(
        np.arange(n), test_size=test_fraction, random_state=seed, stratify=stratify
    )


@functools.cache
def digits(seed: int) -> Dataset:
    """8x8 handwritten digits, 10 classes (1797 images), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    tr, te = _split(len(y), 0.25, seed, stratify=y)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    counts = np.bincount(y[tr], minlength=10)
    return Dataset(
        "digits",
        {"x": x[tr], "y": y[tr]},
        {"x": x[te], "y": y[te]},
        {"num_classes": 10, "num_features": x.shape[1], "majority_class": int(counts.argmax())},
    )


@functools.cache
def breast_cancer(seed: int) -> Dataset:
    """Wisconsin breast cancer, binary (569 cases, 30 features), standardised."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    tr, te = _split(len(y), 0.25, seed, stratify=y)
    x_tr, x_te = _standardise(x[tr], x[te])
    y = y.astype(np.float32)
    n_pos = float(y[tr].sum())
    n_neg = float(len(tr) - n_pos)
    return Dataset(
        "breast_cancer",
        {"x": x_tr, "y": y[tr]},
        {"x": x_te, "y": y[te]},
        {
            "num_features": x.shape[1],
            "pos_weight": n_neg / n_pos,  # balances the two classes in the loss
            "majority_class": int(n_pos >= n_neg),
        },
    )


COUNT_UNIT = 25.0  # Poisson target: disease progression in units of 25, rounded


@functools.cache
def diabetes(seed: int) -> Dataset:
    """Diabetes progression regression (442 patients, 10 features).

    ``y`` is the standardised target (train mean 0, std 1); ``y_raw`` the
    original units; ``count`` a Poisson count derived from it,
    ``round(y_raw / 25)``.
    """
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    tr, te = _split(len(y), 0.2, seed)
    x_tr, x_te = _standardise(x[tr], x[te])
    mean, std = float(y[tr].mean()), float(y[tr].std())
    count = np.round(y / COUNT_UNIT).astype(np.float32)

    def part(idx, xs):
        return {
            "x": xs,
            "y": ((y[idx] - mean) / std).astype(np.float32),
            "y_raw": y[idx].astype(np.float32),
            "count": count[idx],
        }

    return Dataset(
        "diabetes",
        part(tr, x_tr),
        part(te, x_te),
        {"num_features": x.shape[1], "y_mean": mean, "y_std": std},
    )


def _python_text() -> tuple[str, str]:
    """Source text that ships with every CPython: ``argparse``'s own source.

    Falls back to the Zen of Python (``this``, rot13-decoded) where the stdlib
    ships without sources.
    """
    try:
        import argparse

        return inspect.getsource(argparse), "inspect.getsource(argparse)"
    except (OSError, TypeError):  # pragma: no cover - stdlib without .py sources
        import codecs
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            import this
        return codecs.decode(this.s, "rot13"), "the Zen of Python (this.s, rot13)"


@functools.cache
def python_text(context: int) -> Dataset:
    """Character-level language modelling on Python source.

    The first 90% of the text trains, the last 10% tests. ``train["tokens"]``
    holds the token ids; a training example is a start position ``i``: context
    ``tokens[i:i+context]`` predicts ``tokens[i+context]``. Characters unseen
    in training map to an ``<unk>`` id.
    """
    text, source = _python_text()
    cut = int(0.9 * len(text))
    train_text, test_text = text[:cut], text[cut:]
    chars = sorted(set(train_text))
    vocab = {c: i for i, c in enumerate(chars)}
    unk = len(chars)
    encode = np.vectorize(lambda c: vocab.get(c, unk), otypes=[np.int32])
    train_tokens = encode(np.array(list(train_text)))
    test_tokens = encode(np.array(list(test_text)))
    vocab_size = unk + 1
    # Unigram baseline: add-one smoothed character frequencies of the training text.
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    unigram = counts / counts.sum()
    targets = test_tokens[context:]
    unigram_ppl = float(np.exp(-np.mean(np.log(unigram[targets]))))
    return Dataset(
        "python_text",
        {"tokens": train_tokens},
        {"tokens": test_tokens},
        {
            "source": source,
            "num_chars": len(text),
            "vocab_size": vocab_size,
            "context": context,
            "num_train": len(train_tokens) - context,
            "num_test": len(test_tokens) - context,
            "unigram_perplexity": unigram_ppl,
        },
    )


def _partners(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each row, a random other row of its class and a random row of another class."""
    pos = np.empty(len(y), np.int64)
    neg = np.empty(len(y), np.int64)
    for c in np.unique(y):
        same = np.flatnonzero(y == c)
        other = np.flatnonzero(y != c)
        shift = rng.integers(1, len(same), size=len(same))  # never the row itself
        pos[same] = same[(np.arange(len(same)) + shift) % len(same)]
        neg[same] = rng.choice(other, size=len(same))
    return pos, neg


@functools.cache
def digit_pairs(seed: int) -> Dataset:
    """Digits with, per row, a same-class partner ``xp`` and an other-class one ``xn``.

    Partners are drawn within the same split (train rows pair with train rows).
    ``info["pixel_ncm_accuracy"]`` is the nearest-class-mean accuracy on raw pixels.
    """
    base = digits(seed)
    rng = np.random.default_rng([seed, 1])

    def part(rows):
        pos, neg = _partners(rows["y"], rng)
        return dict(rows, xp=rows["x"][pos], xn=rows["x"][neg])

    means = np.stack([base.train["x"][base.train["y"] == c].mean(0) for c in range(10)])
    dist = ((base.test["x"][:, None, :] - means[None]) ** 2).sum(-1)
    info = dict(base.info, pixel_ncm_accuracy=float(np.mean(dist.argmin(-1) == base.test["y"])))
    return Dataset("digit_pairs", part(base.train), part(base.test), info)


SEQ_FRAMES = 8  # frames per sequence
SEQ_MAX_LABELS = 3  # digits per sequence: 1 to 3


def _sequences(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` sequences of ``SEQ_FRAMES`` frames: 1-3 digit images, blank frames between."""
    frames = np.zeros((n, SEQ_FRAMES, x.shape[1]), np.float32)
    labels = np.zeros((n, SEQ_MAX_LABELS), np.int32)
    label_pad = np.ones((n, SEQ_MAX_LABELS), np.float32)
    for i in range(n):
        k = int(rng.integers(1, SEQ_MAX_LABELS + 1))
        # k frames out of SEQ_FRAMES, no two adjacent: a blank always separates two digits
        slots = np.sort(rng.choice(SEQ_FRAMES - k + 1, size=k, replace=False)) + np.arange(k)
        rows = rng.integers(0, len(y), size=k)
        frames[i, slots] = x[rows]
        labels[i, :k] = y[rows]
        label_pad[i, :k] = 0.0
    return {"x": frames, "labels": labels, "label_pad": label_pad}


def label_sequences(part: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    """The unpadded label sequence of each row of a ``digit_sequences`` split."""
    return [
        tuple(int(c) for c in r[p == 0])
        for r, p in zip(part["labels"], part["label_pad"], strict=True)
    ]


@functools.cache
def digit_sequences(seed: int) -> Dataset:
    """Sequences of digit images for CTC: the label is the digits in order, no alignment.

    Built from the digits split (train sequences from train images only); frames
    are standardised per pixel with the training frames' statistics;
    ``info["majority_sequence_accuracy"]``: how often the test label equals the
    most common training label sequence.
    """
    base = digits(seed)
    rng = np.random.default_rng([seed, 2])
    train = _sequences(base.train["x"], base.train["y"], 2048, rng)
    test = _sequences(base.test["x"], base.test["y"], 512, rng)
    # Standardise each pixel over all training frames, blank ones included. Blank
    # frames are then a fixed nonzero vector: as zeros, the freshly initialised
    # (zero-bias) hidden layer maps them to zero activations, and CTC settles on
    # emitting the digits on the blank frames, where no digit can be read.
    d = train["x"].shape[-1]
    x_tr, x_te = _standardise(train["x"].reshape(-1, d), test["x"].reshape(-1, d))
    train["x"] = x_tr.reshape(train["x"].shape)
    test["x"] = x_te.reshape(test["x"].shape)

    train_keys = label_sequences(train)
    top = max(set(train_keys), key=train_keys.count)
    info = {
        "num_features": base.info["num_features"],
        "num_classes": 10,
        "blank_id": 10,
        "majority_sequence_accuracy": float(np.mean([k == top for k in label_sequences(test)])),
    }
    return Dataset("digit_sequences", train, test, info)


PARITY_LABELS = (10, 11)  # multi-label digits: label 10 = even digit, 11 = odd digit


@functools.cache
def digits_multilabel(seed: int) -> Dataset:
    """Digits with two labels each: the class and its parity (10 = even, 11 = odd).

    ``labels`` is the ``[N, 12]`` multi-hot matrix; ``label_idx`` lists the
    target classes first, then ``-1`` (PyTorch's multi-label margin format).
    ``info["majority_set_accuracy"]``: how often the test label set equals the
    most common training set.
    """
    base = digits(seed)
    k = 10 + len(PARITY_LABELS)

    def part(rows):
        y = rows["y"]
        parity = PARITY_LABELS[0] + y % 2
        labels = np.zeros((len(y), k), np.float32)
        labels[np.arange(len(y)), y] = 1.0
        labels[np.arange(len(y)), parity] = 1.0
        idx = np.full((len(y), k), -1, np.int32)
        idx[:, 0], idx[:, 1] = y, parity
        return dict(rows, labels=labels, label_idx=idx)

    top = base.info["majority_class"]  # the set {class, parity} is fixed by the class
    info = dict(
        base.info,
        num_labels=k,
        majority_set_accuracy=float(np.mean(base.test["y"] == top)),
    )
    return Dataset("digits_multilabel", part(base.train), part(base.test), info)


BOX_CANVAS = 12  # digit boxes: each 8x8 digit is placed at a random offset on a 12x12 canvas
BOX_INK = 0.5  # pixels above this (of 1) are ink


def _ink_boxes(images: np.ndarray) -> np.ndarray:
    """``[N, 4]`` boxes ``x1, y1, x2, y2`` around the ink, as fractions of the image side."""
    ink = images > BOX_INK
    rows, cols = ink.any(2), ink.any(1)
    side = images.shape[-1]
    y1, x1 = rows.argmax(1), cols.argmax(1)
    y2, x2 = side - rows[:, ::-1].argmax(1), side - cols[:, ::-1].argmax(1)
    return (np.stack([x1, y1, x2, y2], 1) / side).astype(np.float32)


@functools.cache
def digit_boxes(seed: int) -> Dataset:
    """Box regression: where is the ink of a digit placed at random on a larger canvas?

    ``x`` holds the flattened ``BOX_CANVAS``-square images, ``box`` the box
    around the pixels above ``BOX_INK`` (``x1, y1, x2, y2`` in ``[0, 1]``).
    ``info["mean_box"]`` is the mean training box (the baseline predictor).
    """
    base = digits(seed)
    rng = np.random.default_rng([seed, 4])
    side = BOX_CANVAS

    def part(rows):
        n = len(rows["y"])
        canvas = np.zeros((n, side, side), np.float32)
        off = rng.integers(0, side - 8 + 1, size=(n, 2))
        for i, (r, c) in enumerate(off):
            canvas[i, r : r + 8, c : c + 8] = rows["x"][i].reshape(8, 8)
        return {"x": canvas.reshape(n, -1), "y": rows["y"], "box": _ink_boxes(canvas)}

    train, test = part(base.train), part(base.test)
    info = {"num_features": side * side, "mean_box": train["box"].mean(0)}
    return Dataset("digit_boxes", train, test, info)
