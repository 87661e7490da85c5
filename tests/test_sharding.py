"""Sharded losses on 8 simulated CPU devices.

The checks live in ``tests/_multidevice.py`` and run once, in a subprocess
started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag
only takes effect before JAX is imported). Each test below reports one check.

* vocabulary-parallel cross-entropy (``shard_map``, class axis sharded) equals
  the unsharded loss, gradient and jvp for every option, and compiles to one
  O(N) all-gather with nothing added by the backward pass;
* the vocabulary-parallel fused linear loss equals the materialised loss and
  its gradients w.r.t. hidden, kernel and bias, with one all-gather plus one
  ``[N, D]`` all-reduce for d hidden;
* every batch loss of the registry (``jaxloss._registry``) gives the same
  value and gradient with its batch sharded over a data-parallel
  ``NamedSharding`` as unsharded.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from _multidevice import collectives

SCRIPT = pathlib.Path(__file__).with_name("_multidevice.py")


@pytest.fixture(scope="session")
def results():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no results from {SCRIPT.name}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def _check(results, name):
    assert name in results, sorted(results)
    assert results[name] == "ok", results[name]


@pytest.mark.parametrize(
    "name",
    [
        "vocab_parallel_matches_unsharded",
        "vocab_parallel_batch_and_axis",
        "vocab_parallel_weight_gradient",
        "vocab_parallel_collectives",
        "vocab_parallel_check_vma_false",
        "vocab_parallel_fused_matches_unsharded",
        "vocab_parallel_fused_collectives",
        "vocab_parallel_log_probs",
        "data_parallel_llm_functions",
        "explicit_vocab_sharding_under_jit",
        "explicit_vocab_sharding_llm_functions",
        "auto_vocab_sharding_under_jit",
        "vocab_parallel_distillation",
        "data_parallel_every_loss",
    ],
)
def test_multidevice(results, name):
    _check(results, name)


def test_data_parallel_class_weight(results):
    """Class weights (``weight[labels]``) with labels sharded over a data-parallel mesh."""
    _check(results, "data_parallel_class_weight")


def test_collective_parser():
    """The HLO collective counter used above sees sync and async forms, once each."""
    text = "\n".join(
        [
            "  %ag = f32[8,3,16]{2,1,0} all-gather(f32[1,3,16]{2,1,0} %x), dimensions={0}",
            "  %ars = f32[32,16]{1,0} all-reduce-start(f32[32,16]{1,0} %y), to_apply=%add",
            "  %ard = f32[32,16]{1,0} all-reduce-done(f32[32,16]{1,0} %ars)",
            "  %d = f32[4,4]{1,0} dot(f32[4,4]{1,0} %a, f32[4,4]{1,0} %b)",
        ]
    )
    assert collectives(text) == [
        ("all-gather", "f32[8,3,16]{2,1,0}"),
        ("all-reduce", "f32[32,16]{1,0}"),
    ]
