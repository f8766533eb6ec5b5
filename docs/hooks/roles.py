"""Griffe extension for the API pages: the package's docstring dialect, read as Google style.

The package's docstrings name objects with Sphinx roles (``:func:`solve```,
``:class:`~jaxode_diffusion.solvers.ButcherTableau```). Markdown would show the role as text, so
before mkdocstrings parses a docstring this extension rewrites every role:

* to a cross-reference ``[`text`][path]`` when the name resolves to a documented public object of
  the package (looked up from the docstring's own scope outwards, then by a unique dotted suffix
  anywhere in the package), so the API pages link to each other and a rename breaks the build;
* to inline code ``` `text` ``` otherwise (``jax.jit``, ``diffrax.ButcherTableau``, private names).

``~`` keeps only the last component as the text, as in Sphinx.

Other habits of the docstrings are read as meant: the singular heading ``Example:`` is the
examples section (griffe would make it an admonition, and its ``>>>`` lines quotes); a
paragraph ending in ``::`` introduces the indented block after it (Markdown shows that block as
code once the second colon goes); a reStructuredText simple table (rows between ``=====``
borders) is shown as preformatted text; and an argument (or attribute) entry that describes several
arguments (``t_start, t_end: ...``) becomes one entry per name with the same description, so each name
gets its type and default from the signature and griffe checks each against it.

Loaded by ``mkdocs.yml`` (``extensions: [docs/hooks/roles.py:SphinxRoles]``).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

import griffe

# The name may be broken over two lines of the docstring (``jaxode_diffusion.tuning.\n    tuner``).
ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc|const):`(~?)(\.?[A-Za-z_][\w.]*(?:\s*\n\s*[\w.]+)?)(?:\(\))?`")
EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
LITERAL = re.compile(r"(\S)::$", re.MULTILINE)
BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")
ARGS = re.compile(r"^(\s*)(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Attributes):\s*$")
COMBINED = re.compile(r"^\s+(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)\s*(?:\([^)]*\))?:")
_logger = logging.getLogger("mkdocs.plugins.griffe")


def _fence_tables(text: str) -> str:
    """Wrap each reStructuredText simple table (three ``=== ===`` borders) in a text code fence."""
    out, borders = [], 0
    for line in text.splitlines():
        if BORDER.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            if borders == 0:
                out.append(f"{indent}```text")
            borders += 1
            out.append(line)
            if borders == 3:
                out.append(f"{indent}```")
                borders = 0
        else:
            out.append(line)
    return "\n".join(out)


def _split_combined(text: str) -> str:
    """One argument (or attribute) entry per name: ``a, b (T): text`` becomes ``a (T): text``, ``b (T): text``."""
    lines, out, i = text.splitlines(), [], 0
    in_args, indent = False, None
    while i < len(lines):
        line = lines[i]
        i += 1
        if ARGS.match(line):
            in_args, indent = True, None
        elif in_args and line.strip():
            width = len(line) - len(line.lstrip())
            indent = width if indent is None else indent
            if width < indent:
                in_args = False
            elif width == indent and (m := COMBINED.match(line)):
                more = []
                while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent:
                    more.append(lines[i])
                    i += 1
                for name in m.group(1).split(","):
                    out += [line[:width] + name.strip() + line[m.end(1):], *more]
                continue
        out.append(line)
    return "\n".join(out)


def _documented(obj) -> bool:
    """Whether mkdocstrings renders ``obj`` (public, canonical, with a docstring)."""
    if obj.is_alias or not obj.docstring:
        return False
    return not any(part.startswith("_") for part in obj.path.split("."))


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`name``` in every docstring of the package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        objects = list(_walk(pkg))
        self.suffixes = defaultdict(set)
        for obj in objects:
            if _documented(obj):
                parts = obj.path.split(".")
                for i in range(len(parts)):
                    self.suffixes[".".join(parts[i:])].add(obj.path)
        self.root = pkg
        for obj in objects:
            if obj.docstring:
                text = ROLE.sub(lambda m, o=obj: self._replace(m, o), obj.docstring.value)
                text = LITERAL.sub(r"\1:", EXAMPLE.sub(r"\1Examples:", text))
                obj.docstring.value = _split_combined(_fence_tables(text))

    def _lookup(self, path: str):
        try:
            target = self.root.modules_collection[path]
            return target.final_target if target.is_alias else target
        except Exception:
            return None

    def _resolve(self, name: str, obj) -> str | None:
        absolute = name.startswith("jaxode_diffusion.")
        candidates = [name] if absolute else []
        scope = obj
        while scope is not None:
            candidates.append(f"{scope.path}.{name}")
            scope = scope.parent
        for path in candidates:
            target = self._lookup(path)
            if target is not None and _documented(target):
                return target.path
        found = self.suffixes.get(name.removeprefix("jaxode_diffusion."), ())
        if len(found) == 1:
            return next(iter(found))
        if absolute and self._lookup(name) is None:  # a full path to nothing: a broken reference
            _logger.warning(f"{obj.relative_filepath}: the docstring of {obj.path} names {name}, "
                            "which is no object of the package")
        return None

    def _replace(self, match: re.Match, obj) -> str:
        tilde, name = match.groups()
        name = re.sub(r"\s+", "", name).lstrip(".")  # a leading dot: relative to the scope
        text = name.rsplit(".", 1)[-1] if tilde else name
        path = self._resolve(name, obj)
        return f"[`{text}`][{path}]" if path else f"`{text}`"
