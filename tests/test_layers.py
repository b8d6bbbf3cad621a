"""The package's layers: no import circles, and no import that runs back up a layer.

Every module's imports of the package are parsed (``ast``), wherever they sit in the file, so a
lazy import inside a function counts too. Layers, lowest first::

    store  <  core  <  pipeline  <  features (02) < autointerp (03) < universality (04)
           <  splitting (05) < steering (06) < circuits (07)
           <  evaluation (issue 30: every dictionary and control, measured with every lesson's measures)
           <  top (cli, stages, apps, notebooks, ...)

A lesson package may use the lessons before it (as the notebooks build on each other), never
one after it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mono_utils"
LAYERS = ["store", "core", "pipeline", "features", "autointerp", "universality", "splitting", "steering", "circuits",
          "evaluation"]
TOP = len(LAYERS)   # modules straight under mono_utils/ and packages not listed (atlas, lessons)


def module_name(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if len(parts) == 2 and parts[1] in LAYERS:   # a subpackage's __init__
        return LAYERS.index(parts[1])
    return TOP


def package_imports(path: Path, modules: set[str], pkg: Path = PKG) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import in ``path``."""
    name = module_name(path, pkg)
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - (node.level - 1)]
                target = ".".join(root + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("mono_utils"):
                continue
            for alias in node.names:   # `from pkg import module` names a module
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in modules else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("mono_utils")]
    return out


def import_graph(pkg: Path = PKG) -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p, pkg): p for p in pkg.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        deps = []
        for target, line in package_imports(path, modules, pkg):
            while target not in modules and "." in target:   # `from .core.model import x` -> the module
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name and target != "mono_utils":
                deps.append((target, line))
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m, _ in graph.get(n, []):
            if m.endswith("__init__") or m not in graph:
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def upward_imports(graph) -> list[str]:
    bad = []
    for name, deps in graph.items():
        for target, line in deps:
            if layer_of(target) > layer_of(name):
                bad.append(f"{name}:{line} imports {target} (a higher layer)")
    return bad


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + ": move the shared code down a layer"


def test_no_import_runs_up_a_layer():
    bad = upward_imports(import_graph())
    assert not bad, "imports that run up a layer (move the code down, or the import up):\n" + "\n".join(bad)


def test_no_flat_modules_left():
    """The old flat names are gone: only the top layer's modules sit straight under mono_utils/."""
    flat = {p.stem for p in PKG.glob("*.py")}
    assert flat <= {"__init__", "__main__", "cli", "stages", "apps", "app_server", "notebooks", "html_export", "classroom",
                    "report", "runrecord"}, sorted(flat)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "mono_utils" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "mono_utils"


@pytest.mark.parametrize("files, problem", [
    # a circle inside core, through a lazy import in a function
    ({"__init__.py": "", "core/__init__.py": "", "core/a.py": "from .b import x\n",
      "core/b.py": "def f():\n    from .a import y\n"}, "cycle"),
    # core reaching up to pipeline
    ({"__init__.py": "", "core/__init__.py": "", "pipeline/__init__.py": "", "core/a.py": "from ..pipeline.m import g\n",
      "pipeline/m.py": "g = 1\n"}, "up"),
    # a lesson reaching a later lesson
    ({"__init__.py": "", "features/__init__.py": "", "steering/__init__.py": "",
      "features/d.py": "from ..steering import catalog\n", "steering/catalog.py": ""}, "up"),
])
def test_the_checks_catch_a_reintroduced_problem(tmp_path, files, problem):
    pkg = _write(tmp_path, files)
    graph = import_graph(pkg)
    if problem == "cycle":
        assert find_cycle(graph) is not None
    else:
        assert upward_imports(graph), graph


EXERCISES = "mono_utils.lessons"
# keyed by how a notebook's file name starts; the longest key wins, so the superposition intro (a notebook
# before 00 that needs no build) may use core only, while 00_model and 01 may use pipeline
NOTEBOOK_LESSON = {"00_intro": "core", "00": None, "01": None, "02": "features", "03": "autointerp", "04": "universality",
                   "05": "splitting", "06": "steering", "07": "circuits", "08": "evaluation"}


def notebook_imports(path: Path) -> list[str]:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mono_utils"):
                out += [node.module] if node.module != "mono_utils" else [f"mono_utils.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                out += [a.name for a in node.names if a.name.startswith("mono_utils")]
    return out


@pytest.mark.parametrize("path", sorted((PKG.parent / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_import_from_their_lesson_package(path):
    """Notebook NN calls into its own lesson package (and the lessons before it) above store, core and pipeline."""
    lesson = NOTEBOOK_LESSON[max((k for k in NOTEBOOK_LESSON if path.name.startswith(k)), key=len)]
    ceiling = LAYERS.index(lesson) if lesson else LAYERS.index("pipeline")
    # mono_utils.lessons (the exercises' checks, notebook 03's game) serves every notebook's exercise cells
    bad = [m for m in notebook_imports(path) if layer_of(m) > ceiling and not m.startswith(EXERCISES)]
    assert not bad, f"{path.name} imports {bad}: lesson {lesson or 'core/pipeline'} may use only its package and lower ones"
    if lesson:
        assert any(m.split(".")[1] == lesson for m in notebook_imports(path) if m.count(".") >= 1), \
            f"{path.name} calls nothing in mono_utils/{lesson}/"
