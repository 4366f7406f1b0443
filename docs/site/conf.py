"""Sphinx configuration for gdjax's documentation site.

Build with ``bash scripts/build_docs.sh`` (strict: every warning is an error).
The sources are generated at build time from the README, ``docs/*.md`` and the
package's ``__all__`` (see ``gdjax_docs.py``); this folder holds only the
configuration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gdjax  # noqa: E402

project = "gdjax"
author = "the gdjax authors"
copyright = "the gdjax authors, Apache-2.0"
release = gdjax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "gdjax_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Docstrings: optax's template (Args / Returns / Examples / References).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False  # the Attributes section says what a field is
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
add_module_names = False
python_use_unqualified_type_names = True
autodoc_default_options = {"exclude-members": "count, index, __new__"}

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 4

# Strict mode: nitpicky catches every unresolved reference. Without network
# there is no intersphinx inventory for Python, NumPy, JAX or optax, so names
# of those libraries are accepted unresolved; references to gdjax names must
# resolve (gdjax_docs maps every path of an object to its documented name).
nitpicky = True
_OTHER_LIBRARIES = r"(jax|jaxlib|jnp|np|numpy|optax|chex|matplotlib|plt|pandas|xarray)"
nitpick_ignore_regex = [
    (r"py:.*", r"(builtins\.)?(int|float|bool|str|bytes|complex|object|None|type)"),
    (r"py:.*", r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal|NamedTuple)"),
    (r"py:.*", r"(typing|collections|collections\.abc|types|os|pathlib|enum)\..*"),
    (r"py:.*", rf"{_OTHER_LIBRARIES}(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|DTypeLike|Axes|Figure|Path|Enum|IntEnum|Mesh)"),
    (r"py:.*", r"(PyTree|Params|Batch|Key|LossFn|Schedule|Metric|Initializer|Rule)"),
    (r"py:.*", r"gdjax\._typing\..*"),
    (r"py:.*", r"(Exception|ValueError|TypeError|RuntimeError|Warning|UserWarning)"),
]

# The site must open from the file system without network: scripts/build_docs.sh
# puts MathJax in a static folder and names it in GDJAX_DOCS_STATIC. Without it
# the pages load MathJax from its CDN.
_static = os.environ.get("GDJAX_DOCS_STATIC")
if _static and (Path(_static) / "mathjax" / "tex-chtml.js").is_file():
    html_static_path = [str(Path(_static).resolve())]
    mathjax_path = "mathjax/tex-chtml.js"
else:
    mathjax_path = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"
html_theme = "furo"
html_title = f"gdjax {release}"
html_show_sourcelink = False
html_copy_source = False
