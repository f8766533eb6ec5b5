"""Small shared helpers with no numerical content.

Files:

* ``outputs.py``: output paths checked before work starts, atomic writes, strict JSON.
* ``checks.py``: argument checks shared by the sampling and analysis entry points (types, batches,
  integers, flags, per-sample outputs, time ranges, non-finite rows), one message per kind.
"""


from jaxode_diffusion.utils.checks import (
    check_batch,
    check_bool,
    check_callable,
    check_float_batch,
    check_instance,
    check_int,
    check_per_sample,
    check_times_in_range,
    nonfinite_rows,
)
from jaxode_diffusion.utils.outputs import (
    dumps_json,
    ensure_output_dir,
    ensure_output_file,
    jsonable,
    os_error,
    save_npy_atomic,
    write_json_atomic,
)

__all__ = [
    "check_batch",
    "check_bool",
    "check_callable",
    "check_float_batch",
    "check_instance",
    "check_int",
    "check_per_sample",
    "check_times_in_range",
    "dumps_json",
    "ensure_output_dir",
    "ensure_output_file",
    "jsonable",
    "nonfinite_rows",
    "os_error",
    "save_npy_atomic",
    "write_json_atomic",
]
