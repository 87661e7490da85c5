"""Data-parallel training, held-out evaluation and the per-loss gradient check.

The batch is sharded over a one-axis ``Mesh(devices, ("data",))``; parameters,
optimizer state and the (small) training arrays are replicated. Each step
gathers its global batch from the replicated arrays with indices sharded over
``"data"``, so every device touches only its own rows, and the compiler
inserts the gradient all-reduce. Batches are drawn on the host from the seed
(epochs of random permutations), so the same global batches are used whatever
the number of devices.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxloss.demo import _data
from jaxloss.demo._runs import TASKS, Env, Metric, Spec, Task

CHUNK_STEPS = 200  # batch indices are uploaded this many steps at a time
REPORT_EVERY = 25  # steps between progress-bar updates
GRADCHECK_ROWS = 4  # test rows the gradient check looks at


class Placement:
    """The device mesh and the two shardings the demo uses."""

    def __init__(self, devices: list[jax.Device]):
        self.devices = list(devices)
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.rows = NamedSharding(self.mesh, P("data"))  # leading axis split over devices
        self.step_rows = NamedSharding(self.mesh, P(None, "data"))  # [steps, batch] indices
        self.replicated = NamedSharding(self.mesh, P())

    @property
    def size(self) -> int:
        return len(self.devices)

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated)

    def replicate_node(self, node: Any) -> None:
        """Places an NNX object's state (model, optimizer) on every device."""
        nnx.update(node, self.replicate(nnx.state(node)))

    def shard_rows(self, rows: dict[str, np.ndarray]) -> tuple[dict[str, jax.Array], int]:
        """Pads rows (repeating the last) to a multiple of the device count and shards them."""
        n = len(next(iter(rows.values())))
        pad = -n % self.size
        padded = {
            k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1), mode="edge") if pad else v
            for k, v in rows.items()
        }
        return jax.device_put(padded, self.rows), n


@dataclasses.dataclass
class Trained:
    model: nnx.Module
    curve: np.ndarray
    compile_s: float
    train_s: float
    steps_per_sec: float


def batch_indices(
    n: int, batch_size: int, steps: int, rng: np.random.Generator, chunk: int
) -> Iterator[np.ndarray]:
    """``[chunk, batch_size]`` blocks of row indices, epoch after epoch of permutations.

    The last block is padded to ``chunk`` rows (unused) so that every block has
    one shape and the step compiles once.
    """
    buf = np.empty(0, np.int32)
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        while len(buf) < k * batch_size:
            buf = np.concatenate([buf, rng.permutation(n).astype(np.int32)])
        block = buf[: k * batch_size].reshape(k, batch_size)
        buf = buf[k * batch_size :]
        if k < chunk:
            block = np.concatenate([block, np.zeros((chunk - k, batch_size), np.int32)])
        yield block
        done += k


def make_step(task: Task, spec: Spec, env: Env, rows: NamedSharding) -> Callable:
    """The jitted train step: gather the global batch, mean loss, one optimizer update."""

    def objective(model, batch):
        outputs = spec.head(task.forward(model, batch))
        return spec.loss(outputs, batch, spec.params(model), env)

    @nnx.jit
    def step(model, optimizer, data, idx_block, i):
        idx = jax.lax.with_sharding_constraint(idx_block[i], rows)
        batch = task.batch(data, idx)
        loss, grads = nnx.value_and_grad(objective)(model, batch)
        optimizer.update(model, grads)
        return loss

    return step


class Runner:
    """Trains and evaluates runs on one set of devices with one configuration."""

    def __init__(
        self,
        devices: list[jax.Device],
        *,
        seed: int,
        steps: int | None,
        batch_size: int,
        progress: bool = True,
        gradcheck: bool = True,
    ):
        self.placement = Placement(devices)
        self.seed = seed
        self.steps = steps
        self.batch_size = batch_size
        self.progress = progress
        self.check_gradients = gradcheck
        self._datasets: dict[str, _data.Dataset] = {}
        self._trained: dict[str, nnx.Module] = {}
        self._creators: dict[tuple, Callable] = {}

    # -- data ---------------------------------------------------------------

    def dataset(self, task: Task) -> _data.Dataset:
        if task.name not in self._datasets:
            self._datasets[task.name] = task.load(self.seed, self)
        return self._datasets[task.name]

    def env(self, ds: _data.Dataset) -> Env:
        return Env(ds.info, self.placement.mesh)

    def steps_for(self, task: Task) -> int:
        return self.steps if self.steps is not None else task.default_steps

    # -- training -------------------------------------------------------------

    def train(self, spec: Spec, desc: str | None = None) -> Trained:
        from tqdm import tqdm

        task = TASKS[spec.task]
        ds = self.dataset(task)
        env = self.env(ds)
        steps = self.steps_for(task)
        pl = self.placement

        model, optimizer = self._creator(task, spec, ds, env)()
        pl.replicate_node(model)
        pl.replicate_node(optimizer)
        data = pl.replicate(task.train_arrays(ds))
        step = nnx.cached_partial(make_step(task, spec, env, pl.rows), model, optimizer)

        # Same batches for every run of a task (and any device count): seeded by task.
        rng = np.random.default_rng([self.seed, zlib.crc32(task.name.encode())])
        chunk = min(CHUNK_STEPS, steps)
        losses: list[jax.Array] = []
        bar = tqdm(
            total=steps,
            desc=desc or spec.name,
            file=sys.stderr,
            leave=False,
            disable=not self.progress,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        compile_s = 0.0
        t0 = time.perf_counter()
        t_start = t0
        for block in batch_indices(ds.num_train, self.batch_size, steps, rng, chunk):
            idx_block = jax.device_put(block, pl.step_rows)
            k = min(chunk, steps - len(losses))
            for i in range(k):
                losses.append(step(data, idx_block, i))
                if len(losses) == 1:  # the first call compiles: time it apart
                    losses[0].block_until_ready()
                    t_start = time.perf_counter()
                    compile_s = t_start - t0
                if (i + 1) % REPORT_EVERY == 0 or i + 1 == k:
                    value = float(losses[-1])  # also keeps the host from running far ahead
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                    bar.update(len(losses) - bar.n)
        jax.block_until_ready(losses[-1])
        train_s = time.perf_counter() - t_start
        bar.close()
        curve = np.asarray(jax.device_get(losses), dtype=np.float64)
        sps = (steps - 1) / train_s if steps > 1 and train_s > 0 else float("nan")
        self._trained[spec.name] = model
        return Trained(model, curve, compile_s, train_s, sps)

    def _creator(self, task: Task, spec: Spec, ds: _data.Dataset, env: Env) -> Callable:
        """A jitted constructor of a fresh model and its optimizer.

        One compiled program instead of an eager op per initializer, shared by
        every run with the same architecture (the same seed gives the same
        initial parameters), so each architecture compiles its initialisation once.
        """
        key = (task.name, spec.out_dim, tuple(sorted(spec.lm.items())))
        if key not in self._creators:
            tx = optax.adamw(task.learning_rate, weight_decay=task.weight_decay)

            @nnx.jit
            def create():
                model = task.make_model(ds, spec, env, nnx.Rngs(self.seed))
                return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

            self._creators[key] = create
        return self._creators[key]

    def trained_model(self, spec: Spec) -> nnx.Module:
        """The model of an earlier run (e.g. a teacher), training it now if needed."""
        if spec.name not in self._trained:
            self.train(spec, desc=f"teacher: {spec.name}")
        return self._trained[spec.name]

    # -- evaluation -------------------------------------------------------------

    def predict(self, fn: Callable, model: nnx.Module, rows: dict[str, np.ndarray]) -> Any:
        """``fn(model, rows)`` with the rows sharded over the devices, as host arrays."""
        batch, n = self.placement.shard_rows(rows)
        out = nnx.jit(fn)(model, batch)
        return jax.tree.map(lambda a: np.asarray(a)[:n], out)

    def gradcheck(self, spec: Spec, model: nnx.Module, outputs: np.ndarray) -> dict[str, Any]:
        """``jaxloss.testing.gradcheck`` of the loss at the trained parameters.

        On the first few rows of the test batch, with respect to the loss's
        input (the model's outputs after ``spec.head``, given as ``outputs``);
        arrays the loss takes from the model (an output kernel) are held fixed.
        """
        try:
            from jaxloss.testing import gradcheck
        except ImportError:  # pragma: no cover - testing module not installed
            return {"ok": None, "note": "jaxloss.testing.gradcheck is not available"}
        task = TASKS[spec.task]
        ds = self.dataset(task)
        env = self.env(ds)
        rows = {k: v[:GRADCHECK_ROWS] for k, v in task.test_rows(ds).items()}
        outputs = outputs[:GRADCHECK_ROWS]
        params = tuple(np.asarray(p) for p in spec.params(model))

        def loss_of_outputs(outputs, *params):
            return spec.loss(outputs, rows, params, env)

        options: dict[str, Any] = {"argnums": 0, "order": 2}
        if "jax_check_grads" in inspect.signature(gradcheck).parameters:
            # jax.test_util.check_grads repeats the float64 finite-difference checks
            # at about the cost of all the others; the demo keeps the check quick.
            options["jax_check_grads"] = False
        t0 = time.perf_counter()
        with jax.default_device(self.placement.devices[0]):
            report = gradcheck(loss_of_outputs, outputs, *params, **options)
        result: dict[str, Any] = {
            "ok": bool(report.ok),
            "checks": len(report.checks),
            "passed": int(sum(c.ok for c in report.checks)),
            "worst_rel_error": max(
                (float(c.rel_error) for c in report.checks if math.isfinite(c.rel_error)),
                default=0.0,
            ),
            "seconds": time.perf_counter() - t0,
            "shape": list(outputs.shape),
        }
        if not report.ok:
            result["report"] = str(report)
        return result

    def run(self, spec: Spec, desc: str | None = None) -> dict[str, Any]:
        """Trains one run, evaluates it on the test split and checks the loss's gradients."""
        task = TASKS[spec.task]
        trained = self.train(spec, desc)
        ds = self.dataset(task)
        pred = task.predict_test(spec, trained.model, ds, self)
        metric: Metric = task.evaluate(spec, pred, ds)
        if self.check_gradients:
            check = self.gradcheck(spec, trained.model, pred["outputs"])
        else:
            check = {"ok": None, "note": "skipped (--no-gradcheck)"}
        tail = max(1, len(trained.curve) // 10)
        return {
            "name": spec.name,
            "losses": list(spec.losses),
            "task": task.name,
            "data": task.data_label,
            "setting": spec.setting,
            "steps": len(trained.curve),
            "batch_size": self.batch_size,
            "train_loss": float(np.mean(trained.curve[-tail:])),
            "final_step_loss": float(trained.curve[-1]),
            "metric": metric.name,
            "test_metric": metric.value,
            "baseline": metric.baseline,
            "baseline_name": metric.baseline_name,
            "higher_is_better": metric.higher_is_better,
            "beats_baseline": metric.beats_baseline,
            "extras": metric.extras,
            "steps_per_sec": trained.steps_per_sec,
            "compile_s": trained.compile_s,
            "train_s": trained.train_s,
            "gradcheck": check,
            "loss_curve": trained.curve.tolist(),
        }


__all__ = ["Placement", "Runner", "batch_indices", "make_step"]
