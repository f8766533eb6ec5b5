"""Small shared helpers with no numerical content.

Files:

* ``outputs.py``: output paths checked before work starts, atomic writes, strict JSON.
"""


from jaxode_diffusion.utils.outputs import (
    ensure_output_dir,
    ensure_output_file,
    os_error,
    write_json_atomic,
)

__all__ = [
    "ensure_output_dir",
    "ensure_output_file",
    "os_error",
    "write_json_atomic",
]
