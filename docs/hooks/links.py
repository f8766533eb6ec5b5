"""mkdocs hook: repository files outside ``docs/`` join the site, and links between files work in both.

The notebooks, the benchmark results and the changelog live outside ``docs/`` (the tests run the
notebooks where they are), so :func:`on_files` adds them to the site at their repository paths
(``notebooks/01_sampling.ipynb``, ``benchmarks/results/defaults.md``, ``CHANGELOG.md``).

Pages link to each other with paths relative to their own place *in the repository*, so the links
also work when the Markdown is read on a forge or in an editor; :func:`on_page_markdown` maps each
such link to the site (``docs/X`` is the site's ``X``; an added file keeps its path). A link to a
file that is neither in ``docs/`` nor added is left alone, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

#: Repository files (globs relative to the repository root) served by the site at the same path.
EXTRA = ("CHANGELOG.md", "notebooks/*.ipynb", "benchmarks/README.md", "benchmarks/results/*.md",
         "benchmarks/results/*.png")

LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\s+\"[^\"]*\")?(\))")
FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _root(config) -> Path:
    return Path(config.config_file_path).parent


@event_priority(50)  # before mkdocs-jupyter's on_files, which turns the notebooks into pages
def on_files(files, config):
    root = _root(config)
    for pattern in EXTRA:
        for path in sorted(root.glob(pattern)):
            src_uri = path.relative_to(root).as_posix()
            if files.get_file_from_path(src_uri) is None:
                files.append(File(src_uri, src_dir=str(root), dest_dir=config.site_dir,
                                  use_directory_urls=config.use_directory_urls))
    return files


def _site_path(repo_target: Path, root: Path, docs: Path, files) -> str | None:
    """The site path of a repository file, or None if the site does not have it."""
    try:
        inside_docs = repo_target.relative_to(docs).as_posix()
    except ValueError:
        inside_docs = None
    if inside_docs is not None:
        return inside_docs
    try:
        rel = repo_target.relative_to(root).as_posix()
    except ValueError:
        return None
    return rel if files.get_file_from_path(rel) is not None else None


def _map_links(text: str, page, config, files) -> str:
    root, docs = _root(config), Path(config.docs_dir).resolve()
    here = Path(page.file.abs_src_path).resolve().parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)  # a URL or an absolute path: not a repository link
        site = _site_path((here / target).resolve(), root.resolve(), docs, files)
        if site is None:
            return m.group(0)
        new = posixpath.relpath(site, page_dir or ".")
        return m.group(1) + new + (m.group(3) or "") + (m.group(4) or "") + m.group(5)

    # Only outside fenced code blocks (every other piece of the split text).
    parts = FENCE.split(text)
    out, in_code, i = [], False, 0
    while i < len(parts):
        piece = parts[i]
        if piece in ("```", "~~~"):
            in_code = not in_code
            out.append(piece)
        else:
            out.append(piece if in_code else LINK.sub(fix, piece))
        i += 1
    return "".join(out)


def on_page_markdown(markdown, page, config, files):
    if page.file.abs_src_path is None or page.file.abs_src_path.endswith(".ipynb"):
        return markdown
    return _map_links(markdown, page, config, files)
