"""Build the jaxloss documentation site as static HTML.

Usage: ``python docs/build.py [--out DIR]`` (default ``docs/_site``).

The API reference is generated from the installed package: every public
function of the flat ``jaxloss`` namespace (and ``jaxloss.testing.gradcheck``)
gets a page with its signature and its docstring, grouped by the module it is
defined in. The guides are the Markdown files under ``docs/guides``; the
notebooks under ``notebooks/`` are rendered with their Markdown and code cells.
Standard library only; the optional ``markdown`` package is not needed.
"""

from __future__ import annotations

import argparse
import html
import inspect
import json
import re
import shutil
from dataclasses import dataclass
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

SECTIONS = ("Args", "Arguments", "Returns", "Raises", "Example", "Examples", "Note", "Notes")
SECTIONS += ("References", "Warning", "Yields", "See Also")


@dataclass
class Page:
    """One output page: its path in the site, its title and its Markdown body."""

    path: str
    title: str
    markdown: str


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
    """The file name of a function's page, relative to ``api/``."""
    return name.replace(".", "_") + ".html"


def qualified(name: str) -> str:
    return "jaxloss." + name


def _annotation(ann: object) -> str:
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def _param(p: inspect.Parameter) -> str:
    text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
    if p.annotation is not p.empty:
        text += ": " + _annotation(p.annotation)
    if p.default is not p.empty:
        text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
    return text


def format_signature(name: str, fn: object) -> str:
    """``name(params) -> ret``, one parameter per line when it is long."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    parts = []
    for i, p in enumerate(params):
        before = params[i - 1].kind if i else None
        if p.kind is p.KEYWORD_ONLY and before not in (p.KEYWORD_ONLY, p.VAR_POSITIONAL):
            parts.append("*")
        parts.append(_param(p))
        after = params[i + 1].kind if i + 1 < len(params) else None
        if p.kind is p.POSITIONAL_ONLY and after is not p.POSITIONAL_ONLY:
            parts.append("/")
    ret = "" if sig.return_annotation is sig.empty else " -> " + _annotation(sig.return_annotation)
    one_line = f"{name}({', '.join(parts)}){ret}"
    if len(one_line) <= 88:
        return one_line
    return name + "(\n" + "".join(f"    {x},\n" for x in parts) + ")" + ret


# --------------------------------------------------------------------------
# Docstrings (Google style with reST roles) to Markdown
# --------------------------------------------------------------------------


def rst_inline(text: str) -> str:
    """reST inline markup to Markdown: ``code``, :math:`x`, :func:`f`."""
    text = re.sub(r":math:`([^`]+)`", r"$\1$", text)
    text = re.sub(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def split_sections(doc: str) -> list[tuple[str, list[str]]]:
    """``[(section, lines)]``; the text before the first header has section ``""``."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in doc.splitlines():
        head = line.rstrip()
        if head.endswith(":") and head[:-1] in SECTIONS:
            out.append((head[:-1], []))
        else:
            out[-1][1].append(line)
    return out


def dedent(lines: list[str]) -> list[str]:
    width = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return [x[width:] for x in lines]


def body_markdown(lines: list[str]) -> str:
    """Free text: paragraphs, ``.. math::`` blocks and indented literal blocks."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        block_start = line.strip() == ".. math::" or (
            line.rstrip().endswith("::") and not line.strip().startswith("..")
        )
        if not block_start:
            out.append(rst_inline(line))
            i += 1
            continue
        is_math = line.strip() == ".. math::"
        if not is_math:
            out.append(rst_inline(line.rstrip()[:-1]))
        i += 1
        block = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        code = "\n".join(dedent(block)).strip("\n")
        out += ["", "$$", code, "$$", ""] if is_math else ["", "```", code, "```", ""]
    return "\n".join(out)


def args_markdown(lines: list[str]) -> str:
    """``name: description`` items (continuations indented) to a bullet list."""
    items: list[list[str]] = []
    for line in dedent(lines):
        match = re.match(r"^(\*{0,2}[\w, .*]+?)(?: \(([^)]*)\))?: ?(.*)$", line)
        if match and not line.startswith((" ", "\t")):
            name, kind, rest = match.groups()
            head = f"- **`{name}`**" + (f" ({kind})" if kind else "") + ": "
            items.append([head + rst_inline(rest)])
        elif items:
            items[-1].append("  " + rst_inline(line.strip()))
        elif line.strip():
            items.append([rst_inline(line.strip())])
    return "\n".join("\n".join(x) for x in items)


def example_markdown(lines: list[str]) -> str:
    code = "\n".join(dedent(lines)).strip("\n")
    return f"```python\n{code}\n```" if code else ""


def docstring_markdown(doc: str) -> str:
    """A Google-style docstring as Markdown, one ``###`` heading per section."""
    parts = []
    for section, lines in split_sections(doc):
        if section in ("Args", "Arguments", "Raises"):
            text = args_markdown(lines)
        elif section in ("Example", "Examples"):
            text = example_markdown(lines)
        else:
            text = body_markdown(dedent(lines) if section else lines)
        if section:
            parts.append(f"### {section}")
        parts.append(text.strip("\n"))
    return "\n\n".join(p for p in parts if p) + "\n"


def api_pages(functions: dict[str, object]) -> list[Page]:
    pages = []
    for name, fn in functions.items():
        doc = inspect.getdoc(fn) or ""
        family = FAMILIES.get(fn.__module__, fn.__module__)
        md = (
            f"# `{qualified(name)}`\n\n"
            f"Family: [{family}](index.md#{anchor(fn.__module__)}) (`{fn.__module__}`)\n\n"
            f"```python\n{format_signature(qualified(name), fn)}\n```\n\n" + docstring_markdown(doc)
        )
        pages.append(Page("api/" + page_name(name).replace(".html", ".md"), name, md))
    return pages


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def api_index(functions: dict[str, object]) -> Page:
    groups: dict[str, list[str]] = {}
    for name, fn in functions.items():
        groups.setdefault(fn.__module__, []).append(name)
    order = [m for m in FAMILIES if m in groups] + sorted(set(groups) - set(FAMILIES))
    lines = ["# API reference", "", "Every public function, grouped by family.", ""]
    for module in order:
        lines += [f"## {FAMILIES.get(module, module)} {{#{anchor(module)}}}", "", f"`{module}`", ""]
        for name in groups[module]:
            first = (inspect.getdoc(functions[name]) or "").split("\n", 1)[0]
            link = page_name(name).replace(".html", ".md")
            lines.append(f"- [`{qualified(name)}`]({link}): {rst_inline(first)}")
        lines.append("")
    return Page("api/index.md", "API reference", "\n".join(lines))


# --------------------------------------------------------------------------
# Markdown to HTML (headings, paragraphs, fenced code, lists, tables, math)
# --------------------------------------------------------------------------


LINK = re.compile(r"\[((?:[^\]`]|`[^`]*`)+)\]\(([^)\s]+)\)")


def inline_html(text: str) -> str:
    """Inline Markdown: [links](x.md), `code`, $math$, **bold**, *em*."""
    out, pos = [], 0
    for match in LINK.finditer(text):
        out.append(_spans(text[pos : match.start()]))
        label, target = match.groups()
        if not re.match(r"^[a-z]+:", target):
            target = re.sub(r"\.(md|ipynb)(#|$)", r".html\2", target)
        out.append(f'<a href="{html.escape(target)}">{_spans(label)}</a>')
        pos = match.end()
    return "".join([*out, _spans(text[pos:])])


def _spans(text: str) -> str:
    out = []
    for piece in re.split(r"(`[^`]+`|\$[^$\n]+\$)", text):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            out.append(f"<code>{html.escape(piece[1:-1])}</code>")
        elif piece.startswith("$") and piece.endswith("$") and len(piece) > 1:
            out.append(f'<span class="math">\\({html.escape(piece[1:-1])}\\)</span>')
        else:
            out.append(_emphasis(html.escape(piece, quote=False)))
    return "".join(out)


def _emphasis(text: str) -> str:
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", text)


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    head, body = cells[0], [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
    out = ["<table><thead><tr>", *(f"<th>{inline_html(c)}</th>" for c in head), "</tr></thead>"]
    for row in body:
        out += ["<tr>", *(f"<td>{inline_html(c)}</td>" for c in row), "</tr>"]
    return "".join([*out, "</table>"])


def _list(items: list[str], ordered: bool) -> str:
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{inline_html(x)}</li>" for x in items) + f"</{tag}>"


def _heading(line: str) -> str:
    level = len(line) - len(line.lstrip("#"))
    text = line[level:].strip()
    match = re.match(r"^(.*?)\s*\{#([\w-]+)\}$", text)
    text, ident = (match.group(1), match.group(2)) if match else (text, None)
    ident = ident or anchor(re.sub(r"[`*$]", "", text))
    return f'<h{level} id="{ident}">{inline_html(text)}</h{level}>'


def _block(lines: list[str], i: int, out: list[str]) -> int:
    """Convert the block starting at ``lines[i]``; returns the next index."""
    line = lines[i]
    if line.startswith("```"):
        lang, j = line[3:].strip(), i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        cls = f' class="language-{lang}"' if lang else ""
        out.append(f"<pre><code{cls}>{html.escape(chr(10).join(lines[i + 1 : j]))}</code></pre>")
        return j + 1
    if line.strip() == "$$":
        j = i + 1
        while j < len(lines) and lines[j].strip() != "$$":
            j += 1
        out.append(f'<div class="math">\\[{html.escape(chr(10).join(lines[i + 1 : j]))}\\]</div>')
        return j + 1
    if re.match(r"^#{1,6} ", line):
        out.append(_heading(line))
        return i + 1
    if line.lstrip().startswith("|"):
        j = i
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        out.append(_table(lines[i:j]))
        return j
    bullet = re.compile(r"^\s{0,3}([-*+]|\d+[.)]) ")
    if bullet.match(line):
        ordered, items, j = line.lstrip()[0].isdigit(), [], i
        while j < len(lines) and lines[j].strip():
            if bullet.match(lines[j]):
                items.append(bullet.sub("", lines[j]))
            else:
                items[-1] += " " + lines[j].strip()
            j += 1
        out.append(_list(items, ordered))
        return j
    j = i
    while j < len(lines) and lines[j].strip() and not _starts_block(lines[j]):
        j += 1
    j = max(j, i + 1)
    out.append("<p>" + inline_html(" ".join(x.strip() for x in lines[i:j])) + "</p>")
    return j


def _starts_block(line: str) -> bool:
    return bool(re.match(r"^(```|#{1,6} |\s*\||\$\$\s*$|\s{0,3}([-*+]|\d+[.)]) )", line))


def markdown_to_html(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        i = _block(lines, i, out)
    return "\n".join(out)


# --------------------------------------------------------------------------
# Guides, notebooks, the index and the template
# --------------------------------------------------------------------------


def notebook_markdown(path: Path) -> str:
    """A notebook's Markdown and code cells (outputs are not stored)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        source = "".join(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            parts.append(source)
        elif cell["cell_type"] == "code" and source.strip():
            parts.append(f"```python\n{source}\n```")
    return "\n\n".join(parts) + "\n"


def notebook_pages() -> list[Page]:
    pages = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        md = notebook_markdown(path)
        title = next((x[2:].strip() for x in md.splitlines() if x.startswith("# ")), path.stem)
        note = f"*Notebook `notebooks/{path.name}`; run it with `jupyter lab notebooks/`.*\n\n"
        pages.append(Page(f"notebooks/{path.stem}.md", title, note + md))
    return pages


def guide_pages() -> list[Page]:
    pages = [Page("index.md", "jaxloss", (DOCS / "index.md").read_text(encoding="utf-8"))]
    for rel, title in GUIDES:
        pages.append(Page(rel, title, (DOCS / rel).read_text(encoding="utf-8")))
    return pages


def contents_markdown(notebooks: list[Page]) -> str:
    """The site map appended to the front page."""
    lines = ["## Contents", "", "Guides:", ""]
    lines += [f"- [{title}]({rel})" for rel, title in GUIDES]
    lines += ["", "Notebooks:", ""]
    lines += [f"- [{p.title}]({p.path})" for p in notebooks]
    lines += ["", "Reference:", "", "- [API reference](api/index.md)", ""]
    return "\n".join(lines)


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - jaxloss</title>
<link rel="stylesheet" href="{root}style.css">
<script>window.MathJax = {{tex: {{inlineMath: [["\\\\(", "\\\\)"]]}}}};</script>
<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>
</head><body>
<nav class="sidebar">{nav}</nav>
<main>{body}</main>
</body></html>
"""

STYLE = """body{margin:0;font:16px/1.55 system-ui,sans-serif;color:#222;display:flex}
.sidebar{width:16rem;flex:none;padding:1rem;background:#f4f5f7;height:100vh;overflow-y:auto;
position:sticky;top:0;box-sizing:border-box;font-size:14px}
.sidebar h3{margin:1rem 0 .3rem;font-size:13px;text-transform:uppercase;color:#666}
.sidebar ul{list-style:none;padding:0;margin:0}.sidebar li{margin:.15rem 0}
main{max-width:52rem;padding:1rem 2rem 4rem;min-width:0}
pre{background:#f6f8fa;overflow-x:auto;border-radius:4px}
pre{padding:.8rem}code{font-size:90%}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
"""


def nav_html(root: str, notebooks: list[Page]) -> str:
    def link(path: str, title: str) -> str:
        href = root + re.sub(r"\.md$", ".html", path)
        return f'<li><a href="{href}">{html.escape(title)}</a></li>'

    parts = ["<h3>jaxloss</h3><ul>", link("index.md", "Home"), "</ul><h3>Guides</h3><ul>"]
    parts += [link(rel, title) for rel, title in GUIDES]
    parts.append("</ul><h3>Notebooks</h3><ul>")
    parts += [link(p.path, p.title) for p in notebooks]
    parts.append("</ul><h3>API reference</h3><ul>")
    parts.append(link("api/index.md", "All functions"))
    for module, title in FAMILIES.items():
        parts.append(link(f"api/index.md#{anchor(module)}", title).replace(".md#", ".html#"))
    return "".join([*parts, "</ul>"])


def write_site(out: Path, pages: list[Page], notebooks: list[Page]) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "style.css").write_text(STYLE, encoding="utf-8")
    for page in pages:
        target = out / re.sub(r"\.md$", ".html", page.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        root = "../" * page.path.count("/")
        text = TEMPLATE.format(
            title=html.escape(page.title),
            root=root,
            nav=nav_html(root, notebooks),
            body=markdown_to_html(page.markdown),
        )
        target.write_text(text, encoding="utf-8")


def build(out: Path | str = DOCS / "_site") -> Path:
    """Build the whole site into ``out`` (replaced); returns its path."""
    out = Path(out)
    functions = public_functions()
    notebooks = notebook_pages()
    guides = guide_pages()
    guides[0].markdown += "\n" + contents_markdown(notebooks)
    pages = guides + notebooks + [api_index(functions), *api_pages(functions)]
    write_site(out, pages, notebooks)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default=str(DOCS / "_site"), help="output folder (replaced)")
    args = parser.parse_args(argv)
    out = build(args.out)
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    main()
