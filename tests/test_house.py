"""House rules on the source of the package, the tests and the benchmarks (checked with ``ast`` and
text search, nothing imported):

* no function or class docstring over ``MAX_DOCSTRING_LINES`` lines (module docstrings may be long);
* no function over ``MAX_FUNCTION_LINES`` lines (``def`` line to last line) except those listed in
  ``LONG_FUNCTIONS`` with the reason; an entry that is no longer long must be removed;
* no reference to an issue tracker that is not in the repository ("issue" and a number), in the
  ``.py`` and ``.md`` files of those folders, except the files in ``ISSUE_REFERENCES``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = ("jaxode_diffusion", "tests", "benchmarks")
MAX_DOCSTRING_LINES = 40
MAX_FUNCTION_LINES = 80
ISSUE_REF = re.compile(r"issue\s*#?\s*[0-9]", re.IGNORECASE)

#: ``"path::qualified name"`` -> why it may be longer than MAX_FUNCTION_LINES (to be split).
LONG_FUNCTIONS: dict[str, str] = {}

#: Files that may still name an issue number, with the reason.
ISSUE_REFERENCES: dict[str, str] = {}


def _files(*suffixes: str) -> list[Path]:
    return sorted(p for tree in TREES for p in (REPO / tree).rglob("*")
                  if p.suffix in suffixes and p.is_file() and "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _functions(tree: ast.Module):
    """``(qualified name, node)`` for every function and class, nested ones included."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def long_docstrings(rel: str, source: str) -> list[str]:
    """``path::name (n lines)`` for each function or class docstring over the limit."""
    out = []
    for name, node in _functions(ast.parse(source)):
        doc = ast.get_docstring(node, clean=False)
        if doc and doc.count("\n") + 1 > MAX_DOCSTRING_LINES:
            out.append(f"{rel}::{name} ({doc.count(chr(10)) + 1} lines)")
    return out


def long_functions(rel: str, source: str) -> dict[str, int]:
    """``{path::name: lines}`` for each function over the limit."""
    return {f"{rel}::{name}": node.end_lineno - node.lineno + 1 for name, node in _functions(ast.parse(source))
            if not isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}


def issue_references(rel: str, text: str) -> list[str]:
    return [f"{rel}:{i}: {line.strip()[:90]}" for i, line in enumerate(text.splitlines(), 1) if ISSUE_REF.search(line)]


PY_FILES = _files(".py")


def test_no_long_docstrings():
    bad = [hit for path in PY_FILES for hit in long_docstrings(_rel(path), path.read_text())]
    assert not bad, f"docstrings over {MAX_DOCSTRING_LINES} lines (move the detail to the module docstring):\n" + "\n".join(bad)


def test_no_long_functions_beyond_the_listed_ones():
    found = {k: v for path in PY_FILES for k, v in long_functions(_rel(path), path.read_text()).items()}
    unlisted = sorted(f"{k} ({v} lines)" for k, v in found.items() if k not in LONG_FUNCTIONS)
    assert not unlisted, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n" + "\n".join(unlisted)
    stale = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not stale, f"LONG_FUNCTIONS lists functions that are no longer long (remove them): {stale}"
    assert all(reason.strip() for reason in LONG_FUNCTIONS.values()), "every LONG_FUNCTIONS entry gives a reason"


def test_no_issue_references():
    bad = [hit for path in _files(".py", ".md") if _rel(path) not in ISSUE_REFERENCES
           for hit in issue_references(_rel(path), path.read_text())]
    assert not bad, "references to an issue tracker outside the repository:\n" + "\n".join(bad)
    stale = sorted(f for f in ISSUE_REFERENCES if not issue_references(f, (REPO / f).read_text()))
    assert not stale, f"ISSUE_REFERENCES lists files without an issue reference (remove them): {stale}"


def test_checkers_flag_planted_breaches():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    doc = "\n".join(["Summary."] + ["more"] * MAX_DOCSTRING_LINES)
    source = (f'"""{doc}"""\n\n\nclass C:\n    def long(self):\n{body}\n\n    def short(self):\n'
              f'        """{doc}"""\n\n\ndef ok():\n    """One line."""\n')
    assert long_functions("m.py", source) == {"m.py::C.long": MAX_FUNCTION_LINES + 1}
    assert long_docstrings("m.py", source) == [f"m.py::C.short ({MAX_DOCSTRING_LINES + 1} lines)"]  # not the module's
    word = "is" + "sue"  # spelled apart, so this file passes its own check
    planted = f"see {word} 14 and {word.title()} #3;\nan {word} with 2 causes, {word}s\n"
    assert issue_references("m.md", planted) == [f"m.md:1: see {word} 14 and {word.title()} #3;"]
