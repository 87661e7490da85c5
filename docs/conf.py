"""Sphinx configuration of the jaxloss documentation site.

Built by ``python docs/build.py``, which stages the sources (the guides, the
notebooks and one generated API page per public function) next to this file's
copy and runs ``sphinx-build -W`` (warnings are errors).
"""

import jaxloss

project = "jaxloss"
author = "the jaxloss authors"
release = version = jaxloss.__version__

extensions = [
    "sphinx.ext.autodoc",  # the API pages: signatures and docstrings from the code
    "sphinx.ext.napoleon",  # Google-style Args/Returns/Example/Note sections
    "sphinx.ext.mathjax",  # :math: roles and .. math:: blocks
    "myst_nb",  # Markdown guides (MyST) and the notebooks, as stored (not executed)
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_site"]
nb_execution_mode = "off"  # the test suite executes the notebooks; the site shows them
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# Signatures without annotations: the docstrings give each argument's shape and
# dtype (Sphinx 9 renders the ArrayLike alias inside a union as a forward ref).
autodoc_typehints = "none"
autodoc_preserve_defaults = True  # defaults as written: "none", -1, None
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("References", "notes_style")]

add_function_parentheses = False  # :func:`name` reads as written
smartquotes = False  # quotes in signatures and prose stay as typed
html_theme = "alabaster"
html_title = f"jaxloss {release}"
html_show_sourcelink = False
