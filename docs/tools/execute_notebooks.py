"""Execute the notebooks in place so that they are committed with their outputs (figures included).

    python docs/tools/execute_notebooks.py                      # every notebook, one at a time
    python docs/tools/execute_notebooks.py notebooks/01_sampling.ipynb

Runs each notebook as the test suite does (``JAXODE_NOTEBOOK_QUICK=1``, unless the environment
sets it), then keeps the files small and free of machine details: PNG figures are re-encoded
with a 256-colour palette (plots have few colours; the figures look the same at about a third of
the size), warnings printed to stderr by imports are dropped, and nbconvert's per-cell timing
metadata is removed. The documentation site shows these outputs; it never executes a notebook.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _small_png(data: str) -> str:
    raw = base64.b64decode(data)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True)
    small = out.getvalue()
    return base64.b64encode(small).decode() + "\n" if len(small) < len(raw) else data


def _tidy(nb) -> None:
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        for output in cell.outputs:
            if "image/png" in output.get("data", {}):
                output.data["image/png"] = _small_png(output.data["image/png"])


def execute(path: Path) -> float:
    """Execute ``path`` in place (its own directory as the working directory); return the seconds taken."""
    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=3000, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    _tidy(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    os.environ.setdefault("JAXODE_NOTEBOOK_QUICK", "1")
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"{path.relative_to(ROOT)}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
