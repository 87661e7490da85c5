"""``python -m jaxloss.demo``: every loss in jaxloss, trained on real data.

Small Flax NNX models are trained with optax on data that ships offline
(scikit-learn's digits, breast cancer and diabetes sets, and Python's own
``argparse`` source as text), one run per loss:

* digits (10 classes): softmax cross-entropy with integer labels and label
  smoothing, NLL on log-softmax outputs, softmax focal, multiclass hinge;
* breast cancer (binary): sigmoid BCE with ``pos_weight``, BCE on
  probabilities, sigmoid focal, hinge and squared hinge;
* diabetes (regression): squared error, L2, absolute error, Huber, smooth L1,
  log-cosh, Gaussian NLL with a predicted variance, Poisson NLL on a count
  target derived from it;
* knowledge distillation on digits: KL divergence and softmax cross-entropy
  against a trained teacher's probabilities;
* a character language model trained with the fused linear cross-entropy
  (tied embedding) and the vocabulary-parallel losses (classes sharded over the
  devices inside ``jax.shard_map``).

Training is data-parallel over every local device (the global batch sharded
over a ``Mesh`` axis ``"data"``, parameters replicated); every objective is a
global-batch mean, so one device and eight give the same losses up to float
rounding. Each run reports its final training loss, a held-out metric next to
a trivial baseline, steps per second and a :func:`jaxloss.testing.gradcheck`
verdict of the loss at the trained parameters; results go to a table on
stdout and to ``--out`` (``results.json``, ``loss_curves.png``,
``summary.png``). ``python -m jaxloss.demo --help`` lists the flags.
"""

from jaxloss.demo._cli import main as main

__all__ = ["main"]
