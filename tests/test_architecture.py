"""Architecture rules of the package, checked on its source with ``ast`` (no imports needed, except (d)).

(a) No module imports an underscore name from another module of the package (``from .x import
    _helper``, or ``x._helper`` on an imported package module): a helper used across modules
    gets a public name in its module.
(b) No import cycle among the package's modules (module-level imports only: a function-level
    import runs after every module has loaded, which is how lazy imports break cycles).
(c) ``solvers/`` imports nothing from the package outside ``solvers/`` except the lower layers
    in ``SOLVER_MAY_IMPORT``, and those lower layers import only each other: solvers sit below
    ``sampling``, ``convergence`` and everything else.
(d) Every name in the ``__all__`` of the package and of each of its modules exists.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = "jaxode_diffusion"
ROOT = Path(__file__).resolve().parents[1] / PKG

#: The lower layers solvers/ may import (each imports nothing of the package but ``processes``
#: and each other): the forward process, the Butcher tableaux, the ODE forms and the prediction
#: conversions (Tweedie's formula, ``parameterizations.tweedie_x0``).
SOLVER_MAY_IMPORT = frozenset({f"{PKG}.processes", f"{PKG}.tableaux", f"{PKG}.forms",
                               f"{PKG}.parameterizations"})


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


def _imports(module: str, tree: ast.Module, *, module_level_only: bool):
    """``(lineno, target module, imported names or None)`` for imports of package modules.

    ``from a import b`` where ``a.b`` is a module yields the target ``a.b`` (names ``None``);
    otherwise the target ``a`` with the names. ``import a.b`` yields ``a.b``.
    """

    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                if not module_level_only:
                    yield from walk(ast.iter_child_nodes(node))
                continue
            if isinstance(node, ast.If) and module_level_only and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                if target == PKG or target.startswith(PKG + "."):
                    names = []
                    for alias in node.names:
                        sub = f"{target}.{alias.name}"
                        if sub in MODULES:
                            yield node.lineno, sub, None
                        else:
                            names.append(alias.name)
                    if names:
                        yield node.lineno, target, names
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PKG or alias.name.startswith(PKG + "."):
                        yield node.lineno, alias.name, None
            yield from walk(ast.iter_child_nodes(node))

    yield from walk(tree.body)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


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
        "from . import sampling\n"
        "from importlib.metadata import version as _version\n"
        "def f():\n"
        "    from jaxode_diffusion.processes.parameterizations import _alpha_sigma\n"
        "    return sampling._run, sampling.solve, __name__\n"
    )
    uses = _underscore_uses(f"{PKG}.tune", planted)
    assert uses == [f"1: from {PKG}.grid_optimization import _process_spec",
                    f"5: from {PKG}.parameterizations import _alpha_sigma",
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


def _outside_imports(prefix: str, allowed: frozenset[str]) -> list[str]:
    bad = []
    for module, path in MODULES.items():
        if not (module == prefix or module.startswith(prefix + ".")):
            continue
        for lineno, target, _ in _imports(module, _tree(path), module_level_only=False):
            inside = target == prefix or target.startswith(prefix + ".")
            if not inside and target not in allowed:
                bad.append(f"{path.relative_to(ROOT.parent)}:{lineno}: imports {target}")
    return bad


def test_solvers_import_only_lower_layers():
    bad = _outside_imports(f"{PKG}.solvers", SOLVER_MAY_IMPORT)
    assert not bad, f"solvers/ may import only {sorted(SOLVER_MAY_IMPORT)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(SOLVER_MAY_IMPORT))
def test_lower_layers_import_only_each_other(module):
    bad = _outside_imports(module, SOLVER_MAY_IMPORT)
    assert not bad, f"{module} is below solvers/ and may import only {sorted(SOLVER_MAY_IMPORT)}:\n" + "\n".join(bad)


def _declares_all(path: Path) -> bool:
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
               for n in _tree(path).body)


@pytest.mark.parametrize("module", [m for m, p in MODULES.items() if _declares_all(p)])
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names missing attributes: {missing}"
    assert len(set(mod.__all__)) == len(mod.__all__), f"{module}.__all__ has duplicates"
