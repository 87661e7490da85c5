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
