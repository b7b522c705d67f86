"""The package's layers and their direction: no module imports one above it, and no two modules import each other.

caffeport is built in layers (described in `caffeport`'s own docstring): the
protobuf codec and the schema at the bottom, then file access, the IR,
streaming, the layer types, the readers, the reference forward, the
transforms, the exporters and the application on top. A module may import
its own layer or any below, never one above, and the import graph has no
cycle: an upward import is how a low layer ends up needing the whole
package, and a cycle (often hidden by a function-local import) is how an
import order bug ends up in one user's traceback. As h5py keeps ``_hl``
above its low level, this test enforces it on the source:

- every ``import x`` and ``from x import y`` in every module under
  ``caffeport/``, at module level, inside functions and classes and under
  ``if TYPE_CHECKING:``, relative ones resolved, is an edge;
- importing ``caffeport.a.b`` also runs ``caffeport/a/__init__.py`` (unless the
  importer is inside ``caffeport.a`` already): that is an edge to ``caffeport.a``
  too. The cycle review found (``readers/blob_proto.py`` -> ``mapped.py`` ->
  ``readers/files.py``) closed only through ``readers/__init__.py``;
- the root package is lazy: its body defines ``__version__`` and resolves the
  public names (``_HOMES``) on first use. ``from caffeport import NAME`` is an
  edge to NAME's home module, or to the root body (the lowest layer) for
  ``__version__``; the root's ``TYPE_CHECKING`` imports only restate
  ``_HOMES`` for type checkers and are not edges of its body
  (`test_the_package_root_imports_nothing_when_imported` holds it to that);
- imports of anything outside ``caffeport`` (numpy, and the optional
  frameworks imported inside functions) are not edges.

Expected layers come from the table `LAYERS` below, not from the code under
test; `test_every_module_has_a_layer` makes a new module be placed in it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "caffeport"

#: the layers, lowest first: a module may import its own layer or one below
LAYER_NAMES = (
    "base",
    "codec",
    "file access",
    "IR",
    "streaming",
    "layer types",
    "readers",
    "reference forward",
    "transforms",
    "exporters",
    "application",
)
_RANK = {name: rank for rank, name in enumerate(LAYER_NAMES)}

#: module or package -> its layer. A package entry covers the package and every module under it unless a longer
#: entry names the module; the root entry ``caffeport`` covers only the root package's own body.
LAYERS: dict[str, str] = {
    # base: what every layer may use
    "caffeport": "base",  # __version__ and the lazy public names (_HOMES), nothing imported when loaded
    "caffeport.errors": "base",
    # the protobuf codec (both directions) and the schema tables
    "caffeport.codec": "codec",
    # file access: maps, preads, atomic output
    "caffeport.io": "file access",
    # the IR: Net, Layer, the lazy blob type Reshaped, the IR file's reader and writer (caffeport.ir.file)
    "caffeport.ir": "IR",
    # streaming: chunks, placement, strip transpose, gather, writer loop, threads
    "caffeport.streaming": "streaming",
    # layer types: each type's shape rule, forward and weight layout, and the shape inference walk over them
    "caffeport.layers": "layer types",
    # readers: opening and sniffing input files, the caffemodel, prototxt and HDF5 readers, images to inputs
    "caffeport.readers": "readers",
    # the reference forward every export is checked against
    "caffeport.forward": "reference forward",
    # transforms: backend layouts and passes over the IR
    "caffeport.transforms": "transforms",
    # exporters, with the ONNX graph, the code generators, the verifiers and Keras weight placing they use
    "caffeport.exporters": "exporters",
    "caffeport.onnx": "exporters",
    "caffeport.codegen": "exporters",
    "caffeport.verify": "exporters",
    "caffeport.keras_model": "exporters",  # used by exporters.keras3 and verify.keras_target
    # the application
    "caffeport.conversion": "application",
    "caffeport.compat": "application",
    "caffeport.describe": "application",
    "caffeport.progress": "application",
    "caffeport.cli": "application",
    "caffeport.__main__": "application",
}

#: modules of one layer that must still not import each other: each format reader builds on the shared parts
#: (files, blob_proto, messages, net_common, v0_layers, ...) and on no other format reader
PEERS: tuple[frozenset[str], ...] = (
    frozenset({"caffeport.readers.caffemodel", "caffeport.readers.prototxt", "caffeport.readers.hdf5_snapshot"}),
)


@dataclass(frozen=True)
class Import:
    """One edge of the import graph: ``source`` needs ``target`` loaded, because of line ``line``."""

    source: str
    target: str
    line: int
    local: bool  #: inside a function (or lambda): runs only when called, still a dependency
    via: str = ""  #: the import statement's own target when this edge is the package __init__ it runs


def discover(package_dir: Path) -> dict[str, Path]:
    """Every module under ``package_dir`` by dotted name (a package by its own name, for its __init__.py)."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(module: str, modules: dict[str, Path]) -> bool:
    return modules[module].name == "__init__.py"


def _lazy_homes(root: str, modules: dict[str, Path]) -> dict[str, str]:
    """The root package's ``_HOMES`` table (public name -> module it is loaded from), read from its source."""
    tree = ast.parse(modules[root].read_text(), str(modules[root]))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == "_HOMES":
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return {str(k): str(v) for k, v in value.items()}
    return {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.Module, skip_type_checking: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in ``tree``, with whether it sits inside a function.

    Those under ``if TYPE_CHECKING:`` count too, unless ``skip_type_checking``.
    """

    def walk(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if skip_type_checking and isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from walk(other, local)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, local
            else:
                yield from walk(child, local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def imports_of(module: str, modules: dict[str, Path], root: str, homes: dict[str, str]) -> list[Import]:
    """The edges out of ``module``: its own imports resolved to modules, and the package inits they run."""
    tree = ast.parse(modules[module].read_text(), str(modules[module]))
    own_package = module if _is_package(module, modules) else module.rpartition(".")[0]
    direct: list[Import] = []
    for statement, local in _statements(tree, skip_type_checking=module == root):
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                anchor = own_package.split(".")
                anchor = anchor[: len(anchor) - (statement.level - 1)]
                base = ".".join([*anchor, *([statement.module] if statement.module else [])])
            names = []
            for alias in statement.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    names.append(submodule)
                elif base == root and alias.name in homes:
                    names.append(homes[alias.name])
                else:
                    names.append(base)
        for name in names:
            if name == root or name.startswith(root + "."):
                direct.append(Import(module, _owning_module(name, modules), statement.lineno, local))
    edges: list[Import] = []
    loaded = _ancestors(module, root) | {module}  # these inits have run (or are running) already
    for edge in direct:
        edges.append(edge)
        for package in sorted(_ancestors(edge.target, root) - loaded):
            edges.append(Import(module, package, edge.line, edge.local, via=edge.target))
    return [edge for edge in edges if edge.target != module]


def _owning_module(name: str, modules: dict[str, Path]) -> str:
    """The module ``name`` is, or the one it is an attribute of (``import caffeport.x.CONST`` is not valid Python)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def _ancestors(module: str, root: str) -> set[str]:
    """The packages above ``module`` whose __init__ an import of it runs first (the lazy root excepted)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} - {root}


def layer_of(module: str, table: dict[str, str], root: str) -> str | None:
    """The layer of the longest table entry naming ``module`` or a package above it (the root entry: itself only)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in table and (key != root or module == root):
            return table[key]
    return None


def graph(package_dir: Path) -> tuple[dict[str, Path], list[Import]]:
    """The modules of the package at ``package_dir`` and every import edge between them."""
    modules = discover(package_dir)
    root = package_dir.name
    homes = _lazy_homes(root, modules)
    return modules, [edge for module in modules for edge in imports_of(module, modules, root, homes)]


def cycles(modules: dict[str, Path], edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    successors: dict[str, list[str]] = {module: [] for module in modules}
    for edge in edges:
        successors[edge.source].append(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(modules):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(successors[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(successors[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _describe(edge: Import, table: dict[str, str], root: str) -> str:
    how = " (function-local)" if edge.local else ""
    via = f" (the package __init__ that importing {edge.via} runs)" if edge.via else ""
    return (f"{edge.source} [{layer_of(edge.source, table, root)}] line {edge.line}{how} imports "
            f"{edge.target} [{layer_of(edge.target, table, root)}]{via}")


def upward_imports(edges: list[Import], table: dict[str, str], root: str) -> list[str]:
    """Every edge from a module to one of a higher layer, described for the failure message."""
    found = []
    for edge in edges:
        source, target = layer_of(edge.source, table, root), layer_of(edge.target, table, root)
        if source is not None and target is not None and _RANK[target] > _RANK[source]:
            found.append(_describe(edge, table, root))
    return found


def cycle_report(modules: dict[str, Path], edges: list[Import], table: dict[str, str], root: str) -> list[str]:
    """Each import cycle with the edges that close it."""
    reports = []
    for component in cycles(modules, edges):
        members = set(component)
        inside = sorted({_describe(e, table, root) for e in edges if e.source in members and e.target in members})
        reports.append("cycle between " + ", ".join(component) + ":\n      " + "\n      ".join(inside))
    return reports


def test_no_module_imports_a_higher_layer() -> None:
    _, edges = graph(PACKAGE)
    found = upward_imports(edges, LAYERS, "caffeport")
    assert not found, "imports against the layer direction (see caffeport's docstring):\n  " + "\n  ".join(found)


def test_no_import_cycles() -> None:
    modules, edges = graph(PACKAGE)
    found = cycle_report(modules, edges, LAYERS, "caffeport")
    assert not found, "import cycles:\n  " + "\n  ".join(found)


def test_format_readers_do_not_import_each_other() -> None:
    _, edges = graph(PACKAGE)
    found = [_describe(edge, LAYERS, "caffeport") for edge in edges
             if any(edge.source in group and edge.target in group for group in PEERS)]
    assert not found, "format readers importing each other (share code through a module below them):\n  " + \
        "\n  ".join(found)


def test_every_module_has_a_layer() -> None:
    modules = discover(PACKAGE)
    unplaced = sorted(m for m in modules if layer_of(m, LAYERS, "caffeport") is None)
    assert not unplaced, f"modules with no layer: add them to LAYERS in {__file__} and to caffeport's docstring: " \
        f"{unplaced}"


def test_the_table_names_only_modules_that_exist() -> None:
    modules = discover(PACKAGE)
    stale = sorted(key for key in [*LAYERS, *(m for group in PEERS for m in group)] if key not in modules)
    assert not stale, f"LAYERS or PEERS name modules that do not exist: {stale}"
    assert set(LAYERS.values()) <= set(LAYER_NAMES)


def test_the_package_docstring_places_every_table_entry() -> None:
    """The layers are documented where a contributor reads first: ``caffeport``'s docstring names every entry."""
    import caffeport

    doc = " ".join((caffeport.__doc__ or "").split())
    sections: dict[str, str] = {}
    for rank, name in enumerate(LAYER_NAMES):
        start = doc.find(f" {rank}. {name}: ")
        assert start >= 0, f"caffeport's docstring does not list layer {rank} ({name})"
        end = doc.find(f" {rank + 1}. ", start)
        sections[name] = doc[start:end if end >= 0 else len(doc)]
    misplaced = [f"{key} (expected under {layer})" for key, layer in LAYERS.items()
                 if key != "caffeport" and f"``{key.removeprefix('caffeport.')}``" not in sections[layer]]
    assert not misplaced, f"caffeport's docstring does not place {misplaced}"


def test_the_package_root_imports_nothing_when_imported() -> None:
    """The root's body may import only the standard library: importing any module runs it first."""
    modules = discover(PACKAGE)
    tree = ast.parse(modules["caffeport"].read_text())
    runtime = [statement.lineno for statement, _ in _statements(tree, skip_type_checking=True)
               if any(name.startswith("caffeport") for name in _names(statement))]
    assert not runtime, f"caffeport/__init__.py imports caffeport modules when loaded, at lines {runtime}"
    homes = _lazy_homes("caffeport", modules)
    assert homes, "caffeport/__init__.py has no _HOMES table"
    assert all(home in modules for home in homes.values()), homes


def _names(statement: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names]
    return ["." * statement.level + (statement.module or "")]


# The checker itself, on small packages written for the purpose: it must see what it claims to see.

def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path / "pkg"


def test_the_checker_finds_a_cycle_closed_through_a_package_init(tmp_path: Path) -> None:
    """The review's cycle, in miniature: low -> sub.files (runs sub/__init__) -> sub.blob -> low, one import local."""
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.sub.files import g\n    return g\n",
        "pkg/sub/__init__.py": "from pkg.sub.blob import h\n",
        "pkg/sub/blob.py": "from pkg.low import f\nh = f\n",
        "pkg/sub/files.py": "import os\ng = os\n",
    })
    modules, edges = graph(package)
    assert cycles(modules, edges) == [["pkg.low", "pkg.sub", "pkg.sub.blob"]]
    local = [e for e in edges if e.source == "pkg.low"]
    assert {(e.target, e.local, e.via) for e in local} == {("pkg.sub.files", True, ""),
                                                           ("pkg.sub", True, "pkg.sub.files")}


def test_the_checker_resolves_relative_imports_and_reports_upward_ones(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.top import t\n",
        "pkg/base.py": "from . import top\n",
        "pkg/top.py": "import numpy\nfrom .base import x\nt = 1\n",
        "pkg/inner/__init__.py": "",
        "pkg/inner/leaf.py": "from ..base import y\nfrom . import other\n",
        "pkg/inner/other.py": "",
    })
    modules, edges = graph(package)
    pairs = {(e.source, e.target) for e in edges}
    assert pairs == {("pkg.base", "pkg.top"), ("pkg.top", "pkg.base"), ("pkg.inner.leaf", "pkg.base"),
                     ("pkg.inner.leaf", "pkg.inner.other")}  # numpy is external, the root's TYPE_CHECKING is not
    table = {"pkg": "base", "pkg.base": "codec", "pkg.top": "IR", "pkg.inner": "readers"}
    assert [line.split(" imports ")[0] for line in upward_imports(edges, table, "pkg")] == ["pkg.base [codec] line 1"]
    assert layer_of("pkg.inner.leaf", table, "pkg") == "readers"
    assert layer_of("pkg.elsewhere", table, "pkg") is None  # the root entry covers the root alone
    assert cycles(modules, edges) == [["pkg.base", "pkg.top"]]
