"""Architecture rules of the package, checked on its source with ``ast`` (and, for the public names,
on the imported package).

* Layers: ``MAY_IMPORT`` is the one table of which layer (subpackage) may import which. Every
  import counts: module level, inside functions and under ``TYPE_CHECKING``. The table follows
  the order of ``LAYERS`` (a layer imports only layers below it) and is minimal (each entry is
  used). No layer imports the top-level package or ``_moved`` (the lazy API and the shims of old
  paths sit above every layer); the top level imports ``TOP_MAY_IMPORT`` eagerly.
* No module imports an underscore name from another module of the package (``from .x import
  _helper``, or ``x._helper`` on an imported package module): a helper used across modules gets
  a public name in its module.
* No import cycle among the package's modules (module-level imports only: a function-level import
  runs after every module has loaded, which is how lazy imports break cycles).
* ``__all__``: every name exists; the package's and each subpackage's are sorted
  case-insensitively; no subpackage attribute named like one of its submodules is anything but
  that submodule; the top level exports at most ``MAX_TOP_LEVEL_NAMES`` names besides the layers.
* ``import jaxode_diffusion`` loads none of the heavy optional stacks (``LAZY_DEPENDENCIES``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

PKG = "jaxode_diffusion"
ROOT = Path(__file__).resolve().parents[1] / PKG

#: The layers, bottom up: a layer may import only layers before it here.
LAYERS = ("utils", "processes", "solvers", "sampling", "models", "training", "analysis", "tuning",
          "study", "cli")

#: Which layers each layer imports (all of its imports; the table is exactly what the code needs).
MAY_IMPORT = {
    "utils": set(),
    "processes": set(),
    "solvers": {"processes"},
    "sampling": {"processes", "solvers", "utils"},
    "models": {"processes"},
    "training": {"models", "processes", "sampling", "utils"},
    "analysis": {"models", "processes", "sampling", "solvers", "utils"},
    "tuning": {"analysis", "processes", "sampling", "solvers", "utils"},
    "study": {"analysis", "models", "processes", "sampling", "solvers", "training", "utils"},
    "cli": {"analysis", "models", "processes", "sampling", "study", "training", "tuning", "utils"},
}

#: The top level (``jaxode_diffusion/__init__.py``) imports these eagerly; the other layers load on
#: first use through its ``__getattr__``. ``_moved`` imports nothing of the package by statement.
TOP = "<top level>"
MOVED = "_moved"
TOP_MAY_IMPORT = {MOVED, "processes", "sampling", "solvers"}

MAX_TOP_LEVEL_NAMES = 35
LAZY_DEPENDENCIES = ("matplotlib", "orbax", "optax", "flax", "diffrax")


def _modules() -> dict[str, Path]:
    """``{dotted module name: path}`` for every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
PACKAGES = sorted(m for m, p in MODULES.items() if p.name == "__init__.py")


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name a ``from ... import`` refers to, from inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # A package's own ``from . import x`` is relative to the package itself.
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_package(name: str) -> bool:
    return name == PKG or name.startswith(PKG + ".")


def _targets(module: str, node: ast.AST):
    """``(target module, imported names or None)`` of one import statement, package imports only.

    ``from a import b`` where ``a.b`` is a module yields the target ``a.b`` (names ``None``);
    otherwise the target ``a`` with the names. ``import a.b`` yields ``a.b``.
    """
    if isinstance(node, ast.ImportFrom):
        target = _resolve(module, node)
        if _in_package(target):
            names = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None
                else:
                    names.append(alias.name)
            if names:
                yield target, names
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if _in_package(alias.name):
                yield alias.name, None


def _imports(module: str, tree: ast.Module, *, module_level_only: bool):
    """``(lineno, target module, imported names or None)`` for the imports of package modules.

    ``module_level_only`` skips function and class bodies and ``if TYPE_CHECKING:`` blocks (what
    runs when the module is imported); otherwise every import statement counts.
    """

    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                if not module_level_only:
                    yield from walk(ast.iter_child_nodes(node))
                continue
            if isinstance(node, ast.If) and module_level_only and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for target, names in _targets(module, node):
                yield node.lineno, target, names
            yield from walk(ast.iter_child_nodes(node))

    yield from walk(tree.body)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------


def _layer(module: str) -> str:
    """The layer of a package module: its subpackage, or ``TOP`` / ``MOVED``."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    return MOVED if parts[1] == MOVED else parts[1]


def _allowed(layer: str) -> set[str]:
    return TOP_MAY_IMPORT if layer == TOP else set() if layer == MOVED else MAY_IMPORT[layer]


def _layer_edges(module: str, tree: ast.Module):
    """``(lineno, target module, target layer)`` for each import of another layer (every import)."""
    for lineno, target, _ in _imports(module, tree, module_level_only=False):
        if _layer(target) != _layer(module):
            yield lineno, target, _layer(target)


def _layer_violations(module: str, tree: ast.Module) -> list[str]:
    """``line: what`` for each import of ``module`` that the table does not allow."""
    allowed = _allowed(_layer(module))
    return [f"{lineno}: {module} ({_layer(module)}) imports {target} ({layer})"
            for lineno, target, layer in _layer_edges(module, tree) if layer not in allowed]


def test_every_module_is_in_a_known_layer():
    unknown = sorted(m for m in MODULES if _layer(m) not in (*LAYERS, TOP, MOVED))
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown} (add the layer to LAYERS and MAY_IMPORT)"


def test_imports_follow_the_layer_table():
    bad = [f"{path.relative_to(ROOT.parent)}:{v}" for module, path in MODULES.items()
           for v in _layer_violations(module, _tree(path))]
    assert not bad, "imports the layer table (MAY_IMPORT) does not allow:\n" + "\n".join(bad)


def test_layer_table_follows_the_layer_order():
    assert set(MAY_IMPORT) == set(LAYERS)
    upward = {(a, b) for a, targets in MAY_IMPORT.items() for b in targets if LAYERS.index(b) >= LAYERS.index(a)}
    assert not upward, f"MAY_IMPORT lets a layer import itself or a layer above it: {sorted(upward)}"
    assert TOP_MAY_IMPORT <= {MOVED, *LAYERS}


def test_layer_table_is_minimal():
    used = {(_layer(m), layer) for m, path in MODULES.items() for _, _, layer in _layer_edges(m, _tree(path))}
    unused = sorted((a, b) for a in (*LAYERS, TOP) for b in _allowed(a) if (a, b) not in used)
    assert not unused, f"entries of the layer table no import uses (remove them): {unused}"


def test_layer_checker_flags_planted_imports():
    # The checker itself, on source strings that break the table at module level, inside a
    # function and under TYPE_CHECKING, and that import the top level from a layer.
    planted = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from jaxode_diffusion.processes import VPLinear\n"
        "from ..training import trainer\n"
        "if TYPE_CHECKING:\n"
        "    from jaxode_diffusion.analysis.regularity import profile\n"
        "def f():\n"
        "    import jaxode_diffusion.sampling.core\n"
        "    from jaxode_diffusion import VPLinear\n"
        "    return jaxode_diffusion.sampling.core\n"
    )
    bad = _layer_violations(f"{PKG}.models.planted", planted)
    assert bad == [
        f"3: {PKG}.models.planted (models) imports {PKG}.training.trainer (training)",
        f"5: {PKG}.models.planted (models) imports {PKG}.analysis.regularity (analysis)",
        f"7: {PKG}.models.planted (models) imports {PKG}.sampling.core (sampling)",
        f"8: {PKG}.models.planted (models) imports {PKG} ({TOP})",
    ], bad
    assert _layer_violations(f"{PKG}.cli.planted", ast.parse("from ..tuning import tuner\n")) == []


# ------------------------------------------------------------------------------------------------
# Underscore names, cycles
# ------------------------------------------------------------------------------------------------


def _module_aliases(module: str, tree: ast.Module) -> dict[str, str]:
    """Local names bound to package modules (``from . import sampling``, ``import jaxode_diffusion.x as y``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    out[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    out[alias.asname] = alias.name
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _underscore_uses(module: str, tree: ast.Module) -> list[str]:
    """``line: what`` for each underscore name ``module`` takes from another package module."""
    bad = []
    for lineno, target, names in _imports(module, tree, module_level_only=False):
        if target == module:
            continue
        bad += [f"{lineno}: from {target} import {name}" for name in names or () if _private(name)]
    aliases = _module_aliases(module, tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _private(node.attr)):
            bad.append(f"{node.lineno}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    return bad


def test_no_underscore_names_imported_across_modules():
    bad = [f"{path.relative_to(ROOT.parent)}:{use}" for module, path in MODULES.items()
           for use in _underscore_uses(module, _tree(path))]
    assert not bad, "underscore names used across modules (give them a public name):\n" + "\n".join(bad)


def test_underscore_checker_flags_planted_uses():
    # The checker itself, on code that breaks the rule in each way it knows (and code that does not).
    planted = ast.parse(
        "from .grid_optimization import _process_spec, optimize_grid\n"
        "from .. import sampling\n"
        "from importlib.metadata import version as _version\n"
        "def f():\n"
        "    from jaxode_diffusion.processes.parameterizations import _alpha_sigma\n"
        "    return sampling._run, sampling.solve, __name__\n"
    )
    uses = _underscore_uses(f"{PKG}.tuning.tuner", planted)
    assert uses == [f"1: from {PKG}.tuning.grid_optimization import _process_spec",
                    f"5: from {PKG}.processes.parameterizations import _alpha_sigma",
                    f"6: sampling._run ({PKG}.sampling)"], uses


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, target, _ in _imports(module, _tree(path), module_level_only=True):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    # The checker itself: a planted cycle is found, a DAG passes.
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


# ------------------------------------------------------------------------------------------------
# Public names
# ------------------------------------------------------------------------------------------------


def _declares_all(path: Path) -> bool:
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
               for n in _tree(path).body)


@pytest.mark.parametrize("module", [m for m, p in MODULES.items() if _declares_all(p)])
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names missing attributes: {missing}"
    assert len(set(mod.__all__)) == len(mod.__all__), f"{module}.__all__ has duplicates"


@pytest.mark.parametrize("package", PACKAGES)
def test_all_of_each_package_is_sorted_case_insensitively(package):
    names = list(importlib.import_module(package).__all__)
    want = sorted(names, key=str.lower)
    assert names == want, f"{package}.__all__ is not sorted case-insensitively; sorted it reads:\n{want}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_attribute_shadows_a_submodule(package):
    # ``pkg.name`` must be the submodule ``pkg/name.py`` itself, never a function or class of the
    # same name (``from pkg.name import name`` would hide the module behind its attribute).
    mod = importlib.import_module(package)
    shadowed = []
    for info in pkgutil.iter_modules(mod.__path__):
        value = getattr(mod, info.name, None)
        if value is not None and not (isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{info.name}"):
            shadowed.append(f"{package}.{info.name} is {type(value).__name__} {value!r}")
    assert not shadowed, "attributes shadowing submodules:\n" + "\n".join(shadowed)


def test_top_level_api_is_short():
    jd = importlib.import_module(PKG)
    names = [n for n in jd.__all__ if not isinstance(getattr(jd, n), types.ModuleType)]
    assert len(names) <= MAX_TOP_LEVEL_NAMES, f"{len(names)} top-level names (at most {MAX_TOP_LEVEL_NAMES}): {names}"
    layers = {n for n in jd.__all__ if isinstance(getattr(jd, n), types.ModuleType)}
    assert layers == set(LAYERS), f"the top level's subpackages {sorted(layers)} are not the layers {LAYERS}"


def test_import_loads_no_lazy_dependency():
    # A fresh interpreter: what `import jaxode_diffusion` loads, not what this test session has loaded.
    code = (f"import sys, {PKG}\n"
            f"print(sorted(m for m in {LAZY_DEPENDENCIES!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", f"import {PKG} loaded {proc.stdout.strip()}"
