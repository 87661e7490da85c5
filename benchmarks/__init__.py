"""jaxloss benchmark suite: ``python -m benchmarks [--quick] [--cases A,B] [--out DIR]``.

Modules:

- ``_harness``: timing (interleaved repeats, median and min-max), compile time
  apart, ``memory_analysis()`` scratch bytes, the streaming-bandwidth probe.
- ``cases``: the core cases, the vocabulary-scaling sweep and the targets.
- ``plot``: the PNG plots.
- ``catalogue`` and ``large_vocab`` (optional, self-contained): called through
  their ``main``. The harness passes ``quick=`` (or ``argv=["--quick"]``) and,
  if ``main`` takes one, an ``out``/``out_dir`` folder of their own. ``main``
  may return a dict (or a list of row dicts); recognised keys are ``markdown``
  (pasted into the report), ``rows`` (rendered as a table) and ``targets`` (a
  list of ``{"name", "criterion", "figure", "met"}`` merged into the targets
  table; ``met`` is ``True``, ``False`` or ``None`` for not run). Whatever it
  returns is stored in the JSON; its printed output is kept when it returns
  nothing.
"""
