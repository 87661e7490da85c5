"""Build the jaxloss documentation site (Sphinx) as static HTML.

Usage: ``python docs/build.py [--out DIR]`` (default ``docs/_site``; needs the
``docs`` extra: ``pip install -e ".[docs]"``).

The sources are staged in ``DIR/../_sources`` (replaced): ``docs/conf.py``,
``docs/index.md``, the guides under ``docs/guides`` (MyST Markdown), the
notebooks under ``notebooks/`` (rendered by myst-nb as stored, not executed)
and, generated from the installed package, one API page per public function
of the flat ``jaxloss`` namespace (and ``jaxloss.testing.gradcheck``): its
signature and docstring through ``sphinx.ext.autodoc`` and ``napoleon``,
grouped by family on ``api/index``. Then ``sphinx-build -W`` writes the HTML:
any warning (a broken reference, malformed reST in a docstring) fails the build.
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import warnings
from pathlib import Path

import jaxloss
import jaxloss.testing

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
NOTEBOOKS = ROOT / "notebooks"

GUIDES = [
    ("guides/optax.md", "Coming from optax"),
    ("guides/pytorch.md", "Coming from PyTorch"),
    ("guides/rules.md", "How the derivative rules work"),
    ("guides/large_vocab.md", "Large vocabularies"),
    ("guides/gradcheck.md", "Checking gradients"),
]

FAMILIES = {
    "jaxloss._classification": "Softmax cross-entropy and NLL",
    "jaxloss._binary": "Binary cross-entropy",
    "jaxloss._focal": "Focal losses",
    "jaxloss._hinge": "Hinge and perceptron losses",
    "jaxloss._sparsemax": "Sparsemax and Fenchel-Young losses",
    "jaxloss._divergence": "Divergences",
    "jaxloss._regression": "Regression losses",
    "jaxloss._similarity": "Similarity and contrastive losses",
    "jaxloss._dice": "Dice losses",
    "jaxloss._ctc": "CTC",
    "jaxloss._ranking": "Ranking",
    "jaxloss._preference": "Preference losses",
    "jaxloss._large_vocab": "Large vocabularies",
    "jaxloss.testing": "Gradient checking",
}


# --------------------------------------------------------------------------
# The public API
# --------------------------------------------------------------------------


def public_functions() -> dict[str, object]:
    """Public callables of the flat namespace (defined in jaxloss) plus gradcheck."""
    names = getattr(jaxloss, "__all__", None) or [n for n in dir(jaxloss) if not n[:1] == "_"]
    found = {}
    for name in sorted(names):
        obj = getattr(jaxloss, name)
        module = getattr(obj, "__module__", "") or ""
        if name == "__version__" or not callable(obj) or not module.startswith("jaxloss"):
            continue
        found[name] = obj
    found["testing.gradcheck"] = jaxloss.testing.gradcheck
    return found


def page_name(name: str) -> str:
    """The source file of a function's page, relative to ``api/``."""
    return name.replace(".", "_") + ".md"


def qualified(name: str) -> str:
    return "jaxloss." + name


def api_page(name: str, fn: object) -> str:
    family = FAMILIES.get(fn.__module__, fn.__module__)
    return (
        f"# `{qualified(name)}`\n\n"
        f"Family: [{family}](index.md) (`{fn.__module__}`)\n\n"
        f"```{{eval-rst}}\n.. autofunction:: {qualified(name)}\n```\n"
    )


def api_index(functions: dict[str, object]) -> str:
    groups: dict[str, list[str]] = {}
    for name, fn in functions.items():
        groups.setdefault(fn.__module__, []).append(name)
    order = [m for m in FAMILIES if m in groups] + sorted(set(groups) - set(FAMILIES))
    lines = ["# API reference", "", "Every public function, grouped by family.", ""]
    for module in order:
        lines += [f"## {FAMILIES.get(module, module)}", "", f"`{module}`", ""]
        for name in groups[module]:
            first = (inspect.getdoc(functions[name]) or "").split("\n", 1)[0]
            first = first.replace(":math:", "{math}")  # reST role -> MyST role
            lines.append(f"- [`{qualified(name)}`]({page_name(name)}): {first}")
        lines.append("")
    pages = [page_name(n).removesuffix(".md") for m in order for n in groups[m]]
    lines += ["```{toctree}", ":hidden:", "", *pages, "```", ""]
    return "\n".join(lines)


def index_page(notebooks: list[Path]) -> str:
    """``docs/index.md`` with the site's table of contents appended."""
    lines = [(DOCS / "index.md").read_text(encoding="utf-8"), "", "## Contents", ""]
    for caption, entries in (
        ("Guides", [(rel, title) for rel, title in GUIDES]),
        ("Notebooks", [(f"notebooks/{nb.name}", nb.stem) for nb in notebooks]),
        ("Reference", [("api/index.md", "API reference")]),
    ):
        targets = [rel.rsplit(".", 1)[0] for rel, _ in entries]
        lines += ["```{toctree}", f":caption: {caption}", ":maxdepth: 1", "", *targets, "```"]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Staging and building
# --------------------------------------------------------------------------


def stage(src: Path) -> Path:
    """Writes the Sphinx source tree into ``src`` (replaced); returns it."""
    if src.exists():
        shutil.rmtree(src)
    (src / "api").mkdir(parents=True)
    shutil.copy(DOCS / "conf.py", src / "conf.py")
    shutil.copytree(DOCS / "guides", src / "guides")
    shutil.copytree(NOTEBOOKS, src / "notebooks", ignore=shutil.ignore_patterns(".*"))
    notebooks = sorted((src / "notebooks").glob("*.ipynb"))
    (src / "index.md").write_text(index_page(notebooks), encoding="utf-8")
    functions = public_functions()
    (src / "api" / "index.md").write_text(api_index(functions), encoding="utf-8")
    for name, fn in functions.items():
        (src / "api" / page_name(name)).write_text(api_page(name, fn), encoding="utf-8")
    return src


def build(out: Path | str = DOCS / "_site") -> Path:
    """Stages the sources and builds the HTML site into ``out`` (replaced), with
    warnings as errors; returns ``out``. Raises ``RuntimeError`` if Sphinx fails."""
    from sphinx.cmd.build import build_main

    out = Path(out)
    src = stage(out.parent / "_sources")
    if out.exists():
        shutil.rmtree(out)
    doctrees = out.parent / "_doctrees"
    with warnings.catch_warnings():
        # The tools' own deprecations (Sphinx 9.0's napoleon and myst-parser 5.2 use
        # APIs Sphinx 9.0 deprecates) are not problems of these docs; under
        # `-W error` (the test suite) they would stop the build. Problems of
        # the docs are Sphinx warnings, errors here through its `-W`.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        status = build_main(["-b", "html", "-W", "--keep-going", "-q", "-d", str(doctrees),
                             str(src), str(out)])  # fmt: skip
    if status != 0:
        raise RuntimeError(f"sphinx-build failed (exit status {status}); see the warnings above")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default=str(DOCS / "_site"), help="output folder (replaced)")
    args = parser.parse_args(argv)
    out = build(args.out)
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    main()
