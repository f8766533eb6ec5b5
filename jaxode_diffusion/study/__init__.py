"""The end-to-end study behind ``jaxode-diffusion study``: both terms of the bound, measured.

Files:

* ``run.py``: the configuration (:class:`StudyConfig`, presets) and the sections (discretisation,
  score floor, dimension, bound, learned model, regularity), run by :func:`run_study`;
* ``report.py``: ``report.md`` and its figures from the sections' results.
"""


from jaxode_diffusion.study.run import (
    PRESETS,
    run_study,
    SECTIONS,
    StudyConfig,
)
from jaxode_diffusion.study.report import (
    write_report,
)

__all__ = [
    "PRESETS",
    "run_study",
    "SECTIONS",
    "StudyConfig",
    "write_report",
]
