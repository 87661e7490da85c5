"""The results table, the JSON file and the plots."""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

COLUMNS = (
    ("loss", "name", "<"),
    ("data", "data", "<"),
    ("train loss", "train_loss", ">"),
    ("metric", "metric", "<"),
    ("test", "test_metric", ">"),
    ("baseline", "baseline", ">"),
    ("steps/s", "steps_per_sec", ">"),
    ("gradcheck", "gradcheck", "<"),
)


def _cell(key: str, row: dict[str, Any]) -> str:
    v = row[key]
    if key == "gradcheck":
        if v.get("ok") is None:
            return "skipped"
        verdict = "ok" if v["ok"] else "FAILED"
        return f"{verdict} ({v['passed']}/{v['checks']})"
    if key == "test_metric":
        mark = "" if row["beats_baseline"] else " !"
        return f"{_num(v, row['metric'])}{mark}"
    if key == "baseline":
        return _num(v, row["metric"])
    if key == "steps_per_sec":
        return "-" if not math.isfinite(v) else f"{v:,.0f}"
    if key == "train_loss":
        return f"{v:.4f}"
    return str(v)


def _num(v: float, metric: str) -> str:
    if metric in ("accuracy", "auc"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table, one row per run."""
    cells = [[_cell(key, r) for _, key, _ in COLUMNS] for r in rows]
    heads = [h for h, _, _ in COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]

    def line(items):
        return "  ".join(
            f"{x:{a}{w}}" for x, w, (_, _, a) in zip(items, widths, COLUMNS, strict=True)
        ).rstrip()

    out = [line(heads), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _plain(x: Any) -> Any:
    """JSON-ready: non-finite floats become ``null``."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def write_json(path: pathlib.Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(_plain(payload), indent=1, allow_nan=False) + "\n")


def _smooth(y, span: int):
    import numpy as np

    if len(y) < 3:
        return np.asarray(y)
    alpha = 2.0 / (span + 1.0)
    out = np.empty(len(y))
    acc = y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1.0 - alpha) * acc
        out[i] = acc
    return out


def plot_curves(path: pathlib.Path, rows: Sequence[dict[str, Any]], dpi: int = 80) -> None:
    """One panel per run: the loss at every step and its moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = 4
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.4 * nrows), squeeze=False)
    fig.subplots_adjust(
        left=0.05, right=0.99, bottom=0.2 / nrows, top=1 - 0.3 / nrows, hspace=0.6, wspace=0.25
    )
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        y = np.asarray(r["loss_curve"], dtype=float)
        x = np.arange(1, len(y) + 1)
        keep = slice(None, None, max(1, len(y) // 400))  # a few hundred points suffice
        ax.plot(x[keep], y[keep], color="tab:blue", alpha=0.3, lw=0.8)
        ax.plot(x[keep], _smooth(y, max(5, len(y) // 30))[keep], color="tab:blue", lw=1.5)
        if np.all(y > 0) and y.max() / max(y.min(), 1e-12) > 20:
            ax.set_yscale("log")
        ax.set_title(r["name"], fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("training loss (global-batch mean) per step", fontsize=10)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_summary(path: pathlib.Path, rows: Sequence[dict[str, Any]], dpi: int = 80) -> None:
    """Held-out metric against its trivial baseline, one panel per kind of metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    counts = [sum(r["metric"] == m for r in rows) for m in metrics]
    height = 0.6 + 0.3 * sum(counts) + 0.7 * len(metrics)
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(9, height),
        gridspec_kw={"height_ratios": counts},
        squeeze=False,
        layout="constrained",
    )
    for ax, m in zip(axes[:, 0], metrics, strict=True):
        sel = [r for r in rows if r["metric"] == m]
        y = np.arange(len(sel))
        model = [r["test_metric"] for r in sel]
        base = [r["baseline"] for r in sel]
        ax.barh(y - 0.2, model, height=0.4, label="model (test)", color="tab:blue")
        ax.barh(y + 0.2, base, height=0.4, label=sel[0]["baseline_name"], color="tab:gray")
        for yi, v in zip(y, model, strict=True):
            ax.text(v, yi - 0.2, f" {_num(v, m)}", va="center", fontsize=6)
        ax.set_xlim(0, 1.25 * max(*model, *base))
        ax.set_yticks(y, [r["name"] for r in sel], fontsize=7)
        ax.invert_yaxis()
        better = "higher" if sel[0]["higher_is_better"] else "lower"
        ax.set_title(f"{m} on the test split ({better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
