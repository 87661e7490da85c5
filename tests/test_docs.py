"""The documentation site (Sphinx, warnings as errors): built from the code,
every public function on a page, every page reachable, no broken links."""

from __future__ import annotations

import html
import importlib.util
import inspect
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import jaxloss
import jaxloss.testing

ROOT = Path(__file__).resolve().parent.parent


def _load_build():
    spec = importlib.util.spec_from_file_location("jaxloss_docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    return build.build(tmp_path_factory.mktemp("site"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def broken_links(site: Path) -> list[str]:
    """``page -> target`` for every internal link whose file or anchor is missing."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    bad = []
    for page, parsed in pages.items():
        for link in parsed.links:
            if re.match(r"^[a-z]+:", link):
                continue
            target, _, fragment = link.partition("#")
            target = target.partition("?")[0]  # cache-busting query of static files
            path = (page.parent / target).resolve() if target else page.resolve()
            if not path.is_file():
                bad.append(f"{page.relative_to(site)} -> {link}")
            elif fragment and fragment not in pages.get(path, _parse(path)).ids:
                bad.append(f"{page.relative_to(site)} -> {link} (no anchor)")
    return bad


def _text(path: Path) -> str:
    raw = re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))
    return _plain(html.unescape(raw))


def _plain(text: str) -> str:
    """Drop reST/Markdown markup and collapse whitespace, for comparing prose."""
    text = re.sub(r":\w+:`", "", text)
    text = re.sub(r"[`$*]|\\\(|\\\)", "", text)
    return " ".join(text.split())


def _public():
    names = getattr(jaxloss, "__all__", None) or [n for n in dir(jaxloss) if n[:1] != "_"]
    found = {
        n: getattr(jaxloss, n)
        for n in names
        if callable(getattr(jaxloss, n))
        and getattr(getattr(jaxloss, n), "__module__", "").startswith("jaxloss")
    }
    found["testing.gradcheck"] = jaxloss.testing.gradcheck
    return found


def _signature(path: Path, name: str) -> str:
    """The text of the function's signature line (``<dt class="sig ...">``)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<dt class="sig[^"]*"[^>]*>(.*?)</dt>', text, re.S)
    assert match, f"no signature for {name} in {path.name}"
    sig = html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))
    return " ".join(sig.split()).replace('"', "'")


def test_public_api_is_large(site):
    assert len(_public()) >= 40


@pytest.mark.parametrize("name", sorted(_public()))
def test_every_function_has_a_page(site, name):
    fn = _public()[name]
    page = site / "api" / (name.replace(".", "_") + ".html")
    assert page.is_file(), f"no API page for {name}"
    sig = _signature(page, name)
    assert sig.startswith(f"jaxloss.{name}("), sig
    for param in inspect.signature(fn).parameters.values():
        assert re.search(r"\b" + re.escape(param.name) + r"\b", sig), (name, param.name)
        if param.default is not param.empty:
            expected = f"{param.name}={param.default!r}".replace('"', "'")
            assert expected in sig, (name, param.name, sig)
    first = (inspect.getdoc(fn) or "").splitlines()[0]
    assert first and _plain(first) in _text(page), (name, first)
    index = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert f'href="{page.name}"' in index


def test_math_and_sections_are_rendered(site):
    page = (site / "api" / "huber_loss.html").read_text(encoding="utf-8")
    assert 'class="math' in page and "\\delta" in page
    for field in ("Parameters", "Returns"):
        assert re.search(f">{field}<", page), field
    for section in ("Example", "References"):
        assert f'<p class="rubric">{section}</p>' in page, section
    assert '<p class="admonition-title">Note</p>' in page
    assert ".. math::" not in page and "``" not in page


def test_guides_and_notebooks_are_linked_from_the_index(site):
    index = _parse(site / "index.html").links
    for rel, _title in build.GUIDES:
        assert rel.replace(".md", ".html") in index, rel
        assert (site / rel.replace(".md", ".html")).is_file()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        target = f"notebooks/{nb.stem}.html"
        assert target in index, target
        code = next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        first_line = "".join(code["source"]).splitlines()[0]
        assert _plain(first_line) in _text(site / target), (target, first_line)
    assert "api/index.html" in index


def test_no_broken_internal_links(site):
    assert broken_links(site) == []


def test_broken_links_are_detected(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="x">a</h1><a href="b.html">b</a><a href="#x">x</a>')
    assert broken_links(tmp_path) == ["a.html -> b.html"]
    (tmp_path / "b.html").write_text('<a href="a.html#nope">a</a>')
    assert broken_links(tmp_path) == ["b.html -> a.html#nope (no anchor)"]


def test_a_warning_fails_the_build(tmp_path, monkeypatch, capfd):
    """Warnings are errors: a page whose autodoc target does not exist (Sphinx
    warns and would otherwise write the page without it) stops the build."""
    real = build.api_page

    def broken(name, fn):  # one page documents a function that does not exist
        page = real(name, fn)
        return page.replace("jaxloss.huber_loss\n```", "jaxloss.no_such_loss\n```")

    monkeypatch.setattr(build, "api_page", broken)
    with pytest.raises(RuntimeError, match="sphinx-build failed"):
        build.build(tmp_path / "site")
    assert "no_such_loss" in capfd.readouterr().err
