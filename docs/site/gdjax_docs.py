"""Sphinx extension that writes gdjax's documentation sources at build time.

One source of truth: the guide pages are the README's ``## `` sections (and the
Markdown pages kept in ``docs/``), and the API pages list what the package
exports, read from ``gdjax.__all__`` and each public module's ``__all__`` when
the build starts. A module that moves, appears or disappears changes the pages
with it; nothing here names a symbol.

Strictness (with ``sphinx-build -W -n``): a public function, class, method or
module without a docstring, a reference to a gdjax name that is not documented,
and a README link to a file that is not part of the site each fail the build.

A name can be reached under several paths (``gd.sgd`` is
``gdjax.transforms.sgd``). Each object is documented once, under its canonical
name (the public module that lists it in ``__all__``, else ``gdjax.<name>``),
and a reference to any other path of the same object resolves to it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import shutil
import types
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger("gdjax_docs")

REPO = Path(__file__).resolve().parents[2]

# API pages in the README's order: (slug, title, defining-module stems). A public
# module, or a top-level object defined in a module, goes to the page whose
# stems hold the module's last name (leading underscore ignored); anything new
# lands on "More".
API_PAGES: list[tuple[str, str, tuple[str, ...]]] = [
    ("init", "Initialization", ("init",)),
    ("models", "Models", ("models",)),
    ("losses", "Losses and metrics", ("losses",)),
    ("gradients", "Gradients", ("gradients",)),
    ("transforms", "Update transforms", ("transforms",)),
    ("batching", "Batching regimes", ("batching",)),
    ("stopping", "Stopping criteria", ("stopping",)),
    ("fit", "Training runs: fit", ("loop", "runs", "results", "spec", "steps")),
    ("sweep", "Sweeps", ("sweep", "members")),
    ("devices", "Sharding over devices", ("sharding", "distributed")),
    ("streaming", "Streaming runs", ("streaming",)),
    (
        "diagnostics",
        "Diagnostics and theory",
        ("diagnostics", "theory", "curvature", "tuning", "monitors"),
    ),
    ("reliability", "Reliability: checkpoints and errors", ("checkpoint", "errors")),
    ("plot", "Plotting", ("plot", "plot_diagnostics", "figures")),
    ("datasets", "Datasets", ("datasets",)),
    ("more", "More", ()),
]

# Markdown pages of docs/ that become guide pages when they exist, after the
# README's sections; other engineers own them.
EXTRA_PAGES = [
    "docs/architecture.md",
    "docs/stateful.md",
    "docs/own_loop.md",
    "docs/checkpoints.md",
    "docs/multiprocess.md",
    "docs/reproducing.md",
    "docs/optax_conformance.md",
    "docs/bad_inputs.md",
    "benchmarks/README.md",
]


# ----------------------------------------------------------------------- helpers


def _stem(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1].lstrip("_")


def _page_for(module_name: str) -> str:
    stem = _stem(module_name)
    for slug, _, stems in API_PAGES:
        if stem in stems:
            return slug
    return "more"


def _is_own(obj: Any) -> bool:
    if isinstance(obj, types.ModuleType):
        return obj.__name__.split(".")[0] == "gdjax"
    if not (inspect.isclass(obj) or callable(obj)):
        return True  # a constant of the module that lists it
    return (getattr(obj, "__module__", "") or "").split(".")[0] == "gdjax"


def _kind(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _slugify(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "section"


class Catalogue:
    """Every public gdjax object, its canonical documented name and its page."""

    def __init__(self) -> None:
        import gdjax

        self.gdjax = gdjax
        self.modules: dict[str, types.ModuleType] = {}
        for name in gdjax.__all__:
            obj = getattr(gdjax, name)
            if isinstance(obj, types.ModuleType):
                self.modules[f"gdjax.{name}"] = obj
        # id(obj) -> canonical dotted name; objects shared by two modules keep
        # the first public home met in page order.
        self.canonical: dict[int, str] = {}
        self.pages: dict[str, list[tuple[str, Any]]] = {s: [] for s, *_ in API_PAGES}
        self.page_modules: dict[str, list[str]] = {s: [] for s, *_ in API_PAGES}
        for modname in sorted(self.modules, key=lambda m: _page_index(_page_for(m))):
            self.page_modules[_page_for(modname)].append(modname)
            module = self.modules[modname]
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                if isinstance(obj, types.ModuleType) or not _is_own(obj):
                    continue
                self.canonical.setdefault(id(obj), f"{modname}.{name}")
        self.toplevel: list[tuple[str, Any]] = []
        for name in gdjax.__all__:
            obj = getattr(gdjax, name)
            if isinstance(obj, types.ModuleType):
                continue
            self.toplevel.append((name, obj))
            if id(obj) not in self.canonical:
                full = f"gdjax.{name}"
                self.canonical[id(obj)] = full
                self.pages[_page_for(getattr(obj, "__module__", ""))].append(
                    (full, obj)
                )

    def resolve(self, target: str, context_module: str | None) -> str | None:
        """The documented name of the gdjax object a reference names, if any."""
        candidates = [target]
        if context_module:
            candidates.insert(0, f"{context_module}.{target}")
        if not target.startswith("gdjax"):
            candidates.append(f"gdjax.{target}")
        for dotted in candidates:
            obj = _import_dotted(dotted)
            if obj is not _MISSING:
                if not _is_own(obj):
                    return FOREIGN
                if isinstance(obj, types.ModuleType):
                    if obj.__name__ in self.modules:
                        return obj.__name__
                    continue
                found = self.canonical.get(id(obj))
                if found:
                    return found
        return None


_MISSING = object()
FOREIGN = "<another library>"


def _import_dotted(dotted: str) -> Any:
    parts = dotted.split(".")
    if parts[0] != "gdjax":
        return _MISSING
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


def _page_index(slug: str) -> int:
    return [s for s, *_ in API_PAGES].index(slug)


# ---------------------------------------------------------------- API pages


def _fields(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return list(getattr(cls, "_fields", ()))


def _documented_attributes(doc: str) -> set[str]:
    """Names listed in the ``Attributes:`` section of a Google-style docstring."""
    names: set[str] = set()
    inside, indent = False, None
    for line in doc.splitlines():
        if re.match(r"^(Attributes|Fields):\s*$", line):
            inside, indent = True, None
            continue
        if not inside or not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:
            inside = False
            continue
        indent = width if indent is None else indent
        match = re.match(r"^\s*\**(\w+)\s*(\(.*\))?\s*:", line)
        if width == indent and match:
            names.add(match.group(1))
    return names


def _directive(full: str, obj: Any) -> list[str]:
    kind = _kind(obj)
    if kind not in ("class", "exception"):
        return [f".. auto{kind}:: {full}", ""]
    fields = _fields(obj)
    # Record fields are documented by the class's Attributes section, or by a
    # docstring under the field; a field's own __doc__ ("Alias for field number
    # 0") says nothing. Fields the section covers are left out of the members,
    # which would document them a second time.
    in_section = _documented_attributes(inspect.getdoc(obj) or "")
    in_source = _field_docs(obj)
    missing = [f for f in fields if f not in in_section and f not in in_source]
    if missing:
        logger.warning(
            f"gdjax_docs: {full}: fields {', '.join(missing)} are documented "
            "neither in the docstring's Attributes section nor under the field"
        )
    hidden = [f for f in fields if f not in in_source]
    exclude = ", ".join(["count", "index", *hidden])
    return [
        f".. auto{kind}:: {full}",
        "   :members:",
        f"   :exclude-members: {exclude}",
        "",
    ]


def _field_docs(cls: type) -> set[str]:
    """Fields of ``cls`` with a docstring (or ``#:`` comment) in the source."""
    try:
        docs = ModuleAnalyzer.for_module(cls.__module__).find_attr_docs()
    except PycodeError:
        return set()
    return {
        name
        for (scope, name), lines in docs.items()
        if scope == cls.__qualname__ and "".join(lines).strip()
    }


def _has_doc_comment(full: str) -> bool:
    """Whether a module constant has a ``#:`` comment or a docstring after it."""
    modname, _, name = full.rpartition(".")
    try:
        docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    except PycodeError:
        return False
    return any("".join(lines).strip() for lines in [docs.get(("", name), [])])


def _check_docstring(full: str, obj: Any) -> bool:
    """Warn (an error in the strict build) when a public object has no docstring."""
    if _kind(obj) == "data":
        if not _has_doc_comment(full):
            logger.warning(
                f"gdjax_docs: public constant {full} has no docstring (write one "
                "on the line after it, or a #: comment above it)"
            )
            return False  # autodoc would show the docstring of its type
        return True
    if not (inspect.getdoc(obj) or "").strip():
        logger.warning(f"gdjax_docs: public {_kind(obj)} {full} has no docstring")
    return True


def _api_page(cat: Catalogue, slug: str, title: str) -> str | None:
    lines = [title, "=" * len(title), ""]
    body = False
    aliases = {id(obj): f"gdjax.{name}" for name, obj in cat.toplevel}
    for full, obj in cat.pages[slug]:
        body = True
        _check_docstring(full, obj)
        lines += _directive(full, obj)
    for modname in cat.page_modules[slug]:
        body = True
        module = cat.modules[modname]
        _check_docstring(modname, module)
        lines += [
            f"``{modname}``",
            "-" * (len(modname) + 4),
            "",
            f".. automodule:: {modname}",
            "   :no-members:",
            "",
        ]
        foreign: list[str] = []
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            full = f"{modname}.{name}"
            if isinstance(obj, types.ModuleType):
                continue
            if not _is_own(obj):
                origin = getattr(obj, "__module__", None) or type(obj).__module__
                foreign.append(f"- ``{name}``: re-exported from ``{origin}``")
                continue
            if cat.canonical.get(id(obj)) != full:
                lines += [f"- ``{name}``: see :py:obj:`{cat.canonical[id(obj)]}`", ""]
                continue
            if not _check_docstring(full, obj):
                continue
            lines += _directive(full, obj)
            if id(obj) in aliases:
                lines += [f"   Also available as ``{aliases[id(obj)]}``.", ""]
        if foreign:
            lines += [
                ".. rubric:: Re-exported from other libraries",
                "",
                *foreign,
                "",
            ]
    return "\n".join(lines) + "\n" if body else None


def _attr_doc(full: str) -> str:
    """The docstring under a module constant (``""`` if none)."""
    modname, _, name = full.rpartition(".")
    try:
        docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    except PycodeError:
        return ""
    return "\n".join(docs.get(("", name), []))


def _summary(obj: Any, full: str = "") -> str:
    """The first sentence of the docstring's first paragraph (a constant's:
    the docstring under it, not its type's)."""
    doc = _attr_doc(full) if _kind(obj) == "data" else inspect.getdoc(obj)
    paragraph = (doc or "").strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    match = re.search(r"(?<=[.!?])\s(?=[A-Z`(])", text)
    return text[: match.start()] if match else text


def _api_index(cat: Catalogue, slugs: list[str]) -> str:
    title = "API reference"
    lines = [
        title,
        "=" * len(title),
        "",
        "Everything ``import gdjax as gd`` exports. Each object is documented "
        "once, under the module that holds it; ``gd.<name>`` is the same object.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 70",
        "",
        "   * - name",
        "     - what it is",
    ]
    for name in cat.gdjax.__all__:
        obj = getattr(cat.gdjax, name)
        if isinstance(obj, types.ModuleType):
            target = obj.__name__
            role = "mod"
        else:
            target = cat.canonical[id(obj)]
            role = "obj"
        first = _summary(obj, target)
        lines += [f"   * - :py:{role}:`gd.{name} <{target}>`", f"     - {first}"]
    lines += ["", "Pages: " + ", ".join(f":doc:`{slug}`" for slug in slugs) + "."]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- guide pages


_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def split_markdown(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split Markdown at top-level ``## `` headings, outside code fences.

    Returns the text before the first such heading and a list of
    ``(title, body)``; each body has its headings raised one level.
    """
    intro: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), []))
            continue
        if not fenced and sections and re.match(r"^#{3,6} ", line):
            line = line[1:]
        (sections[-1][1] if sections else intro).append(line)
    return "\n".join(intro), [(t, "\n".join(b)) for t, b in sections]


def _top_heading_h1(text: str, fallback_title: str) -> str:
    """Raise every heading so the page starts at ``#`` (a page of its own)."""
    levels: list[int] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        match = re.match(r"^(#{1,6}) ", line)
        if not fenced and match:
            levels.append(len(match.group(1)))
    if not levels:
        return f"# {fallback_title}\n\n{text}"
    shift = min(levels) - 1
    if shift == 0:
        return text
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        if not fenced and re.match(r"^#{1,6} ", line):
            line = line[shift:]
        out.append(line)
    return "\n".join(out) + "\n"


class Pages:
    """Where each repository Markdown file and figure lands in the site."""

    def __init__(self, srcdir: Path) -> None:
        self.srcdir = srcdir
        self.doc_of: dict[str, str] = {}  # repo-relative .md path -> docname

    def rewrite_links(self, text: str, origin: str) -> str:
        base = (REPO / origin).parent

        def fix(match: re.Match[str]) -> str:
            bang, label, target = match.groups()
            if re.match(r"^[a-z]+://|^#|^mailto:", target):
                return match.group(0)
            path, _, anchor = target.partition("#")
            rel = (base / path).resolve().relative_to(REPO).as_posix()
            if bang:
                dest = self.srcdir / "_repo" / rel
                if not (REPO / rel).is_file():
                    logger.warning(f"gdjax_docs: {origin} shows a missing image {rel}")
                    return match.group(0)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest)
                return f"{bang}[{label}](/_repo/{rel})"
            if rel in self.doc_of:
                suffix = f"#{anchor}" if anchor else ""
                return f"[{label}](/{self.doc_of[rel]}.md{suffix})"
            # A file of the repository that is not a page: name it, don't link.
            return f"{label} (`{rel}`)" if label.strip("`") != rel else f"`{rel}`"

        out: list[str] = []
        fenced = False
        for line in text.splitlines():
            if _FENCE.match(line.lstrip()):
                fenced = not fenced
            out.append(line if fenced else _LINK.sub(fix, line))
        return "\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(srcdir: Path) -> None:
    """Write every page of the site into ``srcdir``."""
    readme = (REPO / "README.md").read_text()
    intro, sections = split_markdown(readme)
    pages = Pages(srcdir)
    guide: list[tuple[str, str, str]] = []  # docname, origin, text
    for title, body in sections:
        docname = f"guide/{_slugify(title)}"
        guide.append((docname, "README.md", f"# {title}\n{body}"))
    for rel in EXTRA_PAGES:
        if (REPO / rel).is_file():
            name = Path(rel).stem if rel.startswith("docs/") else Path(rel).parent.name
            docname = f"guide/{_slugify(name)}"
            if any(doc == docname for doc, _, _ in guide):  # a README section too
                docname += "-details"
            pages.doc_of[rel] = docname
            text = _top_heading_h1((REPO / rel).read_text(), Path(rel).stem)
            guide.append((docname, rel, text))
    _write(
        srcdir / "CHANGELOG.md",
        pages.rewrite_links((REPO / "CHANGELOG.md").read_text(), "CHANGELOG.md"),
    )

    for docname, origin, text in guide:
        _write(srcdir / f"{docname}.md", pages.rewrite_links(text, origin))
    example = Path(__file__).parent / "examples" / "typed_usage.py"
    if example.is_file():
        _write(srcdir / "guide" / "typed_usage.py", example.read_text())
        guide.append(("guide/typed-usage", "", ""))
        _write(
            srcdir / "guide" / "typed-usage.md",
            "# Typed usage\n\n"
            "gdjax ships `py.typed` and annotates its public API, so a type checker "
            "reads a user's code against gdjax's own signatures. This example (a "
            "`fit`, a `sweep` and their results) is checked by basedpyright in CI "
            "(`basedpyright` from the repository root, configuration in "
            "`pyrightconfig.json`) and runs as a script.\n\n"
            "```{literalinclude} typed_usage.py\n:language: python\n```\n",
        )
    figures = sorted(
        p.relative_to(REPO).as_posix()
        for pattern in ("docs/*.png", "docs/figures/*.png", "docs/figures/*.svg")
        for p in REPO.glob(pattern)
    )
    if figures:
        gallery = ["# Figures", "", "Every figure kept in `docs/`, as committed.", ""]
        for rel in figures:
            gallery += [
                f"## {Path(rel).stem.replace('_', ' ')}",
                "",
                f"![{rel}]({rel})",
                "",
            ]
        guide.append(("guide/figures", "", ""))
        _write(
            srcdir / "guide/figures.md",
            pages.rewrite_links("\n".join(gallery), "README.md"),
        )

    cat = Catalogue()
    slugs = []
    for slug, title, _ in API_PAGES:
        page = _api_page(cat, slug, title)
        if page is not None:
            slugs.append(slug)
            _write(srcdir / "api" / f"{slug}.rst", page)
    _write(srcdir / "api" / "index.rst", _api_index(cat, slugs))

    index = pages.rewrite_links(intro, "README.md")
    toc = [
        "",
        "```{toctree}",
        ":caption: Guide",
        ":maxdepth: 2",
        "",
        *[d for d, _, _ in guide],
        "```",
        "",
        "```{toctree}",
        ":caption: Reference",
        ":maxdepth: 2",
        "",
        "api/index",
        *[f"api/{s}" for s in slugs],
        "CHANGELOG",
        "```",
        "",
    ]
    _write(srcdir / "index.md", index + "\n".join(toc))
    app_state["catalogue"] = cat


app_state: dict[str, Any] = {}


# --------------------------------------------------------------- Sphinx hooks


def _on_config_inited(app: Sphinx, config: Any) -> None:
    generate(Path(app.srcdir))


def _on_missing_reference(
    app: Sphinx, env: Any, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    cat: Catalogue | None = app_state.get("catalogue")
    if cat is None:
        return None
    target = node.get("reftarget", "")
    found = cat.resolve(target.lstrip("~."), node.get("py:module"))
    if found == FOREIGN:
        return contnode  # a name gdjax re-exports from optax or jax: no page here
    if found is None or found == target:
        return None
    domain = env.get_domain("py")
    builder = app.builder
    for role in ("obj", "mod"):
        ref = domain.resolve_xref(
            env, node["refdoc"], builder, role, found, node, contnode
        )
        if ref is not None:
            return ref
    return None


_PROSE = re.compile(r"^[A-Z]?[a-z]+(\s+[a-z]+){2,}$")


def _on_process_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Undo napoleon's reading of a property's first clause as its type.

    Google style lets an attribute docstring start with ``type: text``; a
    property that starts with a sentence holding a colon ("Epochs the loop ran:
    ...") would otherwise get that sentence as a type, an unresolved reference.
    """
    if what not in ("attribute", "property", "data"):
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: ") and _PROSE.match(line[7:].strip()):
            clause = line[7:].strip()
            del lines[i]
            first = next((j for j, text in enumerate(lines) if text.strip()), None)
            if first is not None:
                lines[first] = f"{clause}: {lines[first].lstrip()}"
            while lines and not lines[-1].strip():
                lines.pop()
            return


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _on_config_inited)
    app.connect("autodoc-process-docstring", _on_process_docstring, priority=600)
    app.connect("missing-reference", _on_missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
