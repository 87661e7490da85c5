"""jaxloss benchmark suite: ``python -m benchmarks [--quick] [--cases A,B] [--out DIR]``.

Modules:

- ``_harness``: timing (interleaved repeats, median and min-max), compile time
  apart, ``memory_analysis()`` scratch bytes, the streaming-bandwidth probe.
- ``cases``: the core cases, the vocabulary-scaling sweep and the targets.
- ``plot``: the PNG plots.
- ``_extra``: runs one of the optional scripts in a child interpreter.
- ``catalogue`` and ``large_vocab`` (optional, self-contained): called through
  their ``main`` in a child interpreter (so they may set ``XLA_FLAGS`` or JAX
  options first). The harness passes ``quick=`` (or ``argv=["--quick"]``; an
  argparse ``main`` without ``--quick`` is reported as not run in quick mode)
  and, if ``main`` takes one, an ``out``/``out_dir`` folder of their own.
  ``main`` may return a dict (or a list of row dicts); recognised keys are
  ``markdown`` (pasted into the report), ``rows`` (rendered as a table) and
  ``targets`` (a list of ``{"name", "criterion", "figure", "met"}`` merged into
  the targets table; ``met`` is ``True``, ``False`` or ``None`` for not run).
  A module-level ``render(results) -> str`` supplies the markdown otherwise,
  and a printed markdown report is pasted when ``main`` returns nothing.
  Whatever ``main`` returns is stored in the JSON.
"""
