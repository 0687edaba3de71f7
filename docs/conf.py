"""Sphinx configuration of the tempattn documentation (``make docs``).

The API reference is generated from the package's docstrings (autodoc + napoleon, Google style:
``Args:`` / ``Returns:``), so the docstrings stay the single source. The narrative pages are
Markdown (MyST). The build must pass with warnings as errors:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Nothing here reaches the network (no intersphinx, no remote images): the docs build offline.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # document the checkout (an installed tempattn of another version would be wrong)

import tempattn  # noqa: E402  (after the path: the version and the docstrings come from this checkout)

project = "tempattn"
author = "the tempattn maintainers"
copyright = "2026, the tempattn maintainers"
release = tempattn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: `#` anchors for headings down to level 3, so pages can link to sections; ::: fences for notes.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: members in source order, signatures as written; the layers' forward() is documented.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "special-members": "", "show-inheritance": False}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autoclass_content = "class"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"tempattn {release}"
html_static_path = []
html_show_sourcelink = False
html_copy_source = False
