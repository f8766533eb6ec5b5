"""mkdocs hook: the API reference covers every public module and every top-level name.

The pages under ``docs/api/`` list their modules explicitly (``::: jaxode_diffusion.sampling.core``)
so that each page reads in the package's order. This hook warns (and ``mkdocs build --strict``
fails) when a public module of the package has no such line, or when a name of the top-level
``__all__`` is missing from the table in ``docs/api/index.md``: a new module or name cannot be
left out of the reference by accident.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.api_coverage")


def _public_modules(package: Path) -> list[str]:
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    return names


def _top_level_names(init: Path) -> list[str]:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    return []


def on_pre_build(config):
    root = Path(config.config_file_path).parent
    package = root / "jaxode_diffusion"
    api = Path(config.docs_dir) / "api"
    pages = {p.name: p.read_text() for p in api.glob("*.md")}
    rendered = set(re.findall(r"^::: ([\w.]+)", "\n".join(pages.values()), re.MULTILINE))
    for module in _public_modules(package):
        if module != "jaxode_diffusion" and module not in rendered:
            log.warning(f"API reference: module {module} is on no page of docs/api/ (add '::: {module}').")
    table = pages.get("index.md", "")
    subpackages = {m.split(".")[1] for m in _public_modules(package) if m.count(".") >= 1}
    for name in _top_level_names(package / "__init__.py"):
        if name not in subpackages and f"`jd.{name}`" not in table:
            log.warning(f"API reference: top-level name jd.{name} is missing from docs/api/index.md.")
